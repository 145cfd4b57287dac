"""Running the engine for the command line: preflight, progress bar, JSON lines out."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from capflow_core.config import Config, OpenAIModel
from capflow_core.cost import CostSummary
from capflow_core.engine import CapFlow, Sample
from capflow_core.errors import ConfigError
from capflow_core.records import CaptionRecord


def preflight(cfg: Config) -> None:
    """Fail before any work when no endpoint of a served model answers."""
    from capflow_core.backends.endpoint_check import check_endpoints

    for role in ("vlm", "llm", "judge"):
        spec = cfg.role(role)
        if not isinstance(spec, OpenAIModel):
            continue
        status = asyncio.run(check_endpoints(spec))
        if not any(s.ok for s in status):
            detail = "; ".join(f"{s.url}: {s.detail}" for s in status)
            raise ConfigError(
                f"models.{role}: no endpoint of {spec.model!r} is reachable ({detail}); start the "
                "server (see infra/vllm/) or fix the endpoint url, then run `capflow doctor`"
            )


def caption_files(
    cfg: Config,
    paths: list[str],
    *,
    domain: str | None = None,
    mode: str | None = None,
    out: Path | None = None,
) -> tuple[list[CaptionRecord], CostSummary | None]:
    """Caption ``paths`` with a progress bar on stderr; write one JSON record per line."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    preflight(cfg)
    flow = CapFlow.from_config(cfg)
    if domain:
        flow.registry.domain(domain)  # unknown keys fail before any work
    samples = [Sample(p, domain=domain) for p in paths]
    progress = Progress(
        TextColumn("[bold]captioning"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        task = progress.add_task("caption", total=len(samples))
        records = flow.caption(samples, mode=mode, on_record=lambda _r: progress.advance(task))
    lines = "".join(r.to_json() + "\n" for r in records)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(lines)
    else:
        sys.stdout.write(lines)
    return records, flow.last_cost
