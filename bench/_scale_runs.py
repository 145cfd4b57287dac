"""One configuration's refresh: the ``capflow-refresh`` flow on a fresh root, timed end to
end and per stage (from the flow's Prefect task runs), with each endpoint's request count.

Stages are the flow's tasks: ``listing`` is the ingest task (list the sources, diff against
the known assets, write manifests), ``MERGE`` the version task (the Delta MERGE of the
staged captions and the asset rows). ``other`` is the wall time outside every task: the
flow's ``runs`` bookkeeping, artifacts, the promoted event and Prefect's own work.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

# the benchmark's stage name -> the flow's task name
STAGES: dict[str, str] = {
    "listing": "ingest",
    "preprocessing": "preprocess",
    "plan": "plan-captions",
    "captioning": "caption-shard",
    "gate": "gate",
    "MERGE": "version",
    "report": "report",
}


def run_configuration(
    name: str,
    workers: int,
    endpoints: int,
    config: Path,
    judge: Any | None = None,
    instant: Any | None = None,
) -> dict[str, Any]:
    """Refresh with ``config`` once (its root must be fresh) and return the figures.

    Args:
        name: the configuration's label, e.g. ``2w x 1e``.
        workers: Dask workers behind the config's scheduler (reported).
        endpoints: model endpoints in the config (reported).
        config: the configuration's YAML (root, sources, Dask address, models).
        judge: a backend for the judge role instead of the configured one, or None.
        instant: a backend for every role, or None.

    Raises:
        RuntimeError: the flow did not complete.
    """
    from bench._orchestration_runs import run_flow
    from bench._scale_setup import close_engine, endpoint_stats, install_engine

    load = round(os.getloadavg()[0], 2)
    engine = install_engine(config, judge, instant)
    try:
        out = run_flow(config, {})
        served = endpoint_stats(engine)
    finally:
        close_engine(engine)
    recon = out["reconciliation"]
    stages = {stage: out["tasks_s"].get(task, 0.0) for stage, task in STAGES.items()}
    stages["other"] = max(out["wall_s"] - sum(stages.values()), 0.0)
    return {
        "name": name,
        "workers": workers,
        "endpoints": endpoints,
        "wall_s": out["wall_s"],
        "load_1m_at_start": load,
        "status": out["status"],
        "version": out["version"],
        "items": recon["listed"],
        "to_caption": recon["to_caption"],
        "captioned": recon["captioned"],
        "caption_failed": recon["caption_failed"],
        "accepted": recon["accepted"],
        "stages_s": stages,
        "requests_per_endpoint": {url: s["served"] for url, s in served.items()},
        "endpoint_failures": sum(s["failures"] for s in served.values()),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over one configuration's repeats: wall and stage seconds, items/s (requests
    per endpoint: the first run's; every run is in ``runs``)."""
    first = runs[0]
    wall = statistics.median(r["wall_s"] for r in runs)
    stages = {s: statistics.median(r["stages_s"][s] for r in runs) for s in first["stages_s"]}
    items = first["items"]
    return {key: first[key] for key in ("name", "workers", "endpoints", "items", "captioned")} | {
        "wall_s": wall,
        "items_per_s": items / wall,
        "load_1m_at_start": statistics.median(r["load_1m_at_start"] for r in runs),
        "stages_s": stages,
        "stage_items_per_s": {s: items / v if v > 0 else None for s, v in stages.items()},
        "stage_share": {s: v / wall for s, v in stages.items()},
        "requests_per_endpoint": first["requests_per_endpoint"],
        "runs": runs,
    }


def ratios(summary: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Throughput of ``summary`` over ``baseline`` (>1: faster), overall and per stage."""
    per_stage = {
        s: (baseline["stages_s"][s] / v if v > 0 else None) for s, v in summary["stages_s"].items()
    }
    return {"overall": summary["items_per_s"] / baseline["items_per_s"], "stages": per_stage}
