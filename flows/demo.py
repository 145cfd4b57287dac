"""`capflow demo`: sample media -> CapFlow engine -> a readable summary of the records.

Later issues grow this into the whole refresh pipeline (ingest, Dask, gate, Delta, Prefect).
"""

from __future__ import annotations

from pathlib import Path

from capflow_core.config import Config
from capflow_core.records import CaptionRecord


def run_demo(cfg: Config, source: Path | None = None) -> int:
    """Caption the demo source and print the summary; return the exit status."""
    from rich.console import Console

    from capflow_core.sample_media import generate_samples
    from flows.runner import caption_files

    console = Console(stderr=True)
    if not console.is_terminal:  # logs and CI: don't squeeze the table into 80 columns
        console = Console(stderr=True, width=120)
    if "://" in cfg.storage.root:
        console.print("[red]the demo writes to a local folder: pass --root DIR[/red]")
        return 2
    root = Path(cfg.storage.root)
    if source is None:
        source = root / "demo-source"
        if not any(source.glob("*")):
            generate_samples(source)
            console.print(f"generated sample media in {source}")
    paths = sorted(str(p) for p in source.iterdir() if p.is_file())
    if not paths:
        console.print(f"[red]no files in {source}[/red]")
        return 2
    out = root / "demo" / "records.jsonl"
    records, cost = caption_files(cfg, paths, out=out)
    print_summary(records, console)
    if cost:
        console.print(
            f"wall {cost.wall_s:.1f} s on {cost.gpus} GPU(s): "
            f"${cost.per_100(cost.usd):.4f} per 100 captions at "
            f"${cfg.cost.usd_per_gpu_hour}/GPU-hour; the same calls at "
            f"{cfg.cost.api.name} prices: ${cost.per_100(cost.api_usd):.2f} per 100"
        )
    console.print(f"\nrecords (one JSON per line): {out}")
    return 0 if all(r.ok for r in records) else 1


def _preview(text: str | None, n: int = 32) -> str:
    text = (text or "").replace("\n", " ")
    clean = "".join(c if c.isprintable() and c != "\ufffd" else "?" for c in text)
    return clean if len(clean) <= n else clean[: n - 1] + "…"


def print_summary(records: list[CaptionRecord], console) -> None:  # console: rich Console
    from rich.table import Table

    table = Table(title="CapFlow demo")
    for col in ("file", "domain", "route", "agents", "judge", "tokens"):
        table.add_column(col, no_wrap=True)
    table.add_column("caption (preview)", no_wrap=True, overflow="ellipsis", max_width=34)
    for r in records:
        if r.route is None:
            route = "-"
        else:
            route = "given" if r.route.skipped else f"{r.route.confidence:.1f}"
        if r.errors:
            verdict = "[red]error: " + ", ".join(r.errors) + "[/red]"
        elif r.judge:
            scores = "".join(str(v) for v in r.judge.scores.values())
            verdict = f"{'accepted' if r.accepted else 'rejected'} {scores}"
        else:
            verdict = "-"
        table.add_row(
            Path(r.source_uri).name,
            r.domain or "-",
            route,
            str(len(r.agents)),
            verdict,
            str(r.tokens.prompt + r.tokens.completion),
            _preview(r.caption),
        )
    console.print(table)
    accepted = sum(r.accepted for r in records)
    console.print(
        f"{len(records)} inputs: {sum(r.ok for r in records)} captioned, {accepted} accepted, "
        f"{sum(bool(r.errors) for r in records)} with errors.\n"
        "The tiny model has random weights: its text is noise; routing, agents, scores, "
        "accounting and errors are real."
    )
