"""The soak's flow runner: a fresh process that refreshes a growing source and measures itself.

Run by ``test_soak.py`` as ``python -m tests.reliability.soak_child ARGS`` so the measured
process holds only what a flow runner holds (not pytest, the Dask scheduler or what earlier
tests imported). It writes one JSON line per refresh to ``--out``: the warm-up refresh on
its own root, then ``--steps`` refreshes of one root, each after ``--step`` new images.
Prefect settings come from the environment (``PREFECT_API_URL``, ``PREFECT_HOME``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="folder for sources and roots")
    p.add_argument("--model", type=Path, required=True, help="the tiny model's folder")
    p.add_argument("--dask", required=True, help="the Dask scheduler's address")
    p.add_argument("--out", type=Path, required=True, help="JSON lines, one per refresh")
    p.add_argument("--warm-up", type=int, default=200, help="images of the warm-up refresh")
    p.add_argument("--step", type=int, default=5000, help="new images per refresh")
    p.add_argument("--steps", type=int, default=4, help="refreshes after the warm-up")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Warm up, then ``--steps`` measured refreshes of a source growing by ``--step``."""
    from tests.reliability.soak_run import (
        install_instant_engine,
        measured_refresh,
        worker_pids,
        write_config,
        write_images,
    )

    args = parse_args(argv)
    workers = worker_pids(args.dask)
    work = args.work
    warm = write_config(
        work / "warm.yaml", args.model, work / "warm-root", work / "warm-src", args.dask
    )
    write_images(work / "warm-src", 10**6, args.warm_up)
    install_instant_engine(warm)
    runs = [("warm-up", measured_refresh(warm, workers))]
    config = write_config(work / "soak.yaml", args.model, work / "root", work / "src", args.dask)
    backend = install_instant_engine(config)
    with args.out.open("w") as out:
        out.write(json.dumps({"name": "warm-up", **asdict(runs[0][1])}) + "\n")
        for step in range(args.steps):
            write_images(work / "src" / f"part-{step}", step * args.step, args.step)
            stats = measured_refresh(config, workers)
            line = {"name": f"{(step + 1) * args.step} items", **asdict(stats)}
            out.write(json.dumps(line | {"model_calls": backend.calls}) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
