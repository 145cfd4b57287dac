"""What `capflow demo` prints: the run's reconciliation, gate, version, cost and captions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capflow_core.config import Config
from capflow_core.records import CaptionRecord

MAX_ROWS = 20
RECONCILIATION = (
    ("listed", "listed"),
    ("unchanged", "unchanged"),
    ("prepared", "prepared"),
    ("rejected", "rejected"),
    ("captioned", "captioned"),
    ("accepted", "accepted"),
    ("failed", "caption_failed"),
    ("removed", "removed"),
)


def console_for() -> Any:  # -> rich Console
    """A console on stdout; logs and CI get 120 columns instead of 80."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=120)


def print_outcome(cfg: Config, root: str, console: Any, prefect_home: Path | None) -> bool:
    """Print the latest run under ``root``; returns True when its quality gate failed."""
    from capflow_core.captions_store import latest_version
    from capflow_core.runs_store import read_runs

    runs = read_runs(root, cfg.s3)
    run = runs[-1] if runs else {}
    recon = run.get("reconciliation") or {}
    counts = "  ".join(f"{label} {recon.get(key, 0)}" for label, key in RECONCILIATION)
    console.print(f"\nrun {run.get('run_id')}: [bold]{run.get('status')}[/bold]")
    console.print(f"  {counts}")
    if not recon.get("reconciled", True):
        console.print("  [red]NOT reconciled: see the report[/red]")
    _print_cost(cfg, run, recon.get("captioned", 0), console)
    gate_failed = run.get("status") == "gate_failed"
    current = latest_version(root, cfg.s3)
    if gate_failed:
        console.print("[red]quality gate failed: no version added[/red]")
        for item in run.get("failing") or []:
            console.print(f"  FAILED {item.get('expectation')} {item.get('column') or ''}")
        console.print(
            f"Review the report, then `capflow dataset promote {run.get('run_id')}` "
            "to promote anyway."
        )
    elif run.get("dataset_version") is None:
        console.print(
            f"gate {run.get('gate')}; nothing changed: dataset version {current} is current"
        )
    else:
        console.print(f"gate {run.get('gate')}; dataset version [bold]{current}[/bold]")
    if current is not None:
        records = _records(root, cfg, current)
        print_captions(records, console, title=f"dataset version {current}")
        if _tiny(cfg):
            console.print(
                "The tiny model has random weights: its text is noise; routing, scores, "
                "accounting and the pipeline are real."
            )
    console.print(f"report -> {run.get('report_uri')}")
    if prefect_home is not None:
        console.print(
            f"this run's history in the Prefect UI: "
            f"PREFECT_HOME={prefect_home} prefect server start\n"
            f"schedule refreshes in the Prefect UI: capflow serve --root {root}"
        )
    return gate_failed


def _print_cost(cfg: Config, run: dict[str, Any], captioned: int, console: Any) -> None:
    if not captioned:
        return
    per = 100 / captioned
    usd = (run.get("cost_usd") or 0) * per
    ours = f"${usd:.4f} at ${cfg.cost.usd_per_gpu_hour}/GPU-hour" if usd else "no GPU time"
    console.print(
        f"  cost per 100 captions: {ours}; the same tokens at {cfg.cost.api.name} prices "
        f"${(run.get('api_usd') or 0) * per:.4f}"
    )


def _records(root: str, cfg: Config, version: int) -> list[CaptionRecord]:
    from capflow_core.captions_store import read_version
    from capflow_core.records import from_arrow

    return from_arrow(read_version(root, cfg.s3, version))


def _preview(text: str | None, n: int = 32) -> str:
    text = (text or "").replace("\n", " ")
    clean = "".join(c if c.isprintable() and c != "\ufffd" else "?" for c in text)
    return clean if len(clean) <= n else clean[: n - 1] + "…"


def _route(r: CaptionRecord) -> str:
    if r.route is None:
        return "-"
    return "given" if r.route.skipped else f"{r.route.confidence:.1f}"


def _verdict(r: CaptionRecord) -> str:
    if r.errors:
        return "[red]error: " + ", ".join(r.errors) + "[/red]"
    if r.judge:
        scores = "".join(str(v) for v in r.judge.scores.values())
        return f"{'accepted' if r.accepted else 'rejected'} {scores}"
    return "-"


def print_captions(records: list[CaptionRecord], console: Any, title: str) -> None:
    """One row per caption: file, domain, route confidence, judge scores, caption preview."""
    from rich.table import Table

    records = sorted(records, key=lambda r: r.source_uri)
    table = Table(title=title)
    for col in ("file", "domain", "route", "judge", "tokens"):
        table.add_column(col, no_wrap=True)
    table.add_column("caption (preview)", no_wrap=True, overflow="ellipsis", max_width=34)
    for r in records[:MAX_ROWS]:
        table.add_row(
            Path(r.source_uri).name,
            r.domain or "-",
            _route(r),
            _verdict(r),
            str(r.tokens.prompt + r.tokens.completion),
            _preview(r.caption),
        )
    console.print(table)
    more = f" (first {MAX_ROWS} shown)" if len(records) > MAX_ROWS else ""
    console.print(f"{len(records)} captions{more}, {sum(r.accepted for r in records)} accepted.")


def _tiny(cfg: Config) -> bool:
    spec = cfg.role("vlm")
    return bool(getattr(spec, "build_tiny", False)) or "tiny" in str(getattr(spec, "model", ""))
