"""The soak run's setup and one measured refresh: config, instant model, peak RSS and FDs.

The model is a CapFlow engine on ``bench._orchestration_runs.InstantBackend`` (answers every
call at once, keeps no per-request state), registered for the config in this process with
``tasks.caption.use_engine`` the way the orchestration benchmark does, so the
``capflow-refresh`` flow runs every stage for real (listing, Delta diff, Dask preprocessing,
plan, caption shards under the `gpu` limit, GX gate, MERGE, report) with no model cost.

The source images are 32x32 seeded random noise PNGs: distinct bytes and random
low-frequency content, so perceptual hashes of 20,000 of them stay far apart (the closest
pair measured ~12 bits; the near-duplicate distance is 4), at ~3 KB and ~0.25 ms each.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.reliability.soak_probe import PhasePeak, open_fds

REPO = Path(__file__).resolve().parents[2]
SHARD_SIZE = 1000
SIDE = 32  # image side in pixels


def write_images(folder: Path, start: int, count: int) -> list[Path]:
    """Write images ``start .. start+count-1`` as ``folder/img-NNNNNN.png``.

    Args:
        folder: created if missing.
        start: the first image's number (it seeds the pixels); use disjoint ranges.
        count: how many images.

    Returns:
        The paths written, in order.
    """
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(start).integers(0, 256, (count, SIDE, SIDE, 3), np.uint8)
    paths = []
    for i, grid in enumerate(pixels, start):
        path = folder / f"img-{i:06d}.png"
        Image.fromarray(grid).save(path, compress_level=1)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class RunStats:
    """One measured refresh: its outcome and what its processes used."""

    summary: dict[str, Any]
    wall_s: float
    tasks_s: dict[str, float]
    peak_mib: float  # this process
    worker_peak_mib: float  # the largest Dask worker
    fds: int  # this process, after the run
    worker_fds: int  # all Dask workers together, after the run
    exact: bool  # peaks from the kernel's high-water mark (not sampled)


def write_config(path: Path, model: Path, root: Path, source: Path, dask: str) -> Path:
    """``configs/tiny.yaml`` for the soak: tiny images pass the filters, shards of 1,000."""
    data = yaml.safe_load((REPO / "configs/tiny.yaml").read_text())
    spec = {"backend": "transformers", "model": str(model), "device": "cpu"}
    data["models"] = {"vlm": spec, "llm": spec, "judge": spec}
    data |= {
        "storage": {"root": str(root)},
        "sources": [{"uri": str(source), "license": "cc0-1.0"}],
        "dask": {"address": dask},
        "ingest": {"shard_size": SHARD_SIZE},
        "preprocess": {"min_short_edge": 16, "items_per_task": 250},
        "orchestration": {"shard_retries": 0, "retry_delay_s": 0},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def install_instant_engine(config: Path) -> Any:
    """Register a CapFlow engine on an instant backend for ``config`` in this process."""
    from bench._orchestration_runs import InstantBackend
    from capflow_core.config import load_config
    from capflow_core.engine import CapFlow
    from tasks.caption import use_engine

    backend = InstantBackend()
    cfg = load_config(str(config))
    use_engine(cfg, CapFlow(cfg, backends={"vlm": backend, "llm": backend, "judge": backend}))
    return backend


def worker_pids(dask_address: str) -> list[int]:
    """The process ids of the Dask workers behind ``dask_address``."""
    from distributed import Client

    with Client(dask_address, timeout=30) as client:
        return sorted(client.run(os.getpid).values())


def measured_refresh(config: Path, workers: list[int]) -> RunStats:
    """One ``capflow-refresh`` flow run in this process, with its peak RSS and FDs after.

    Raises:
        AssertionError: the flow did not complete.
    """
    from bench._orchestration_runs import task_seconds
    from flows.refresh import capflow_refresh

    gc.collect()
    started = time.perf_counter()
    with PhasePeak([os.getpid(), *workers]) as peak:
        state = capflow_refresh(config=str(config), return_state=True)
    wall = time.perf_counter() - started
    assert state.is_completed(), state.message
    gc.collect()
    return RunStats(
        summary=state.result(),
        wall_s=wall,
        tasks_s=task_seconds(state.state_details.flow_run_id),
        peak_mib=peak.peak_mib[os.getpid()],
        worker_peak_mib=max((peak.peak_mib[p] for p in workers), default=0.0),
        fds=open_fds(os.getpid()),
        worker_fds=sum(open_fds(p) for p in workers),
        exact=peak.exact,
    )
