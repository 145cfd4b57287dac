"""Orchestration overhead: the ``capflow-refresh`` Prefect flow vs its steps as plain calls.

1. ``overhead``: ``--images`` generated 600x560 JPEGs (distinct, all pass the filters) are
   refreshed twice on fresh roots in this process with an instant in-process model (a
   CapFlow engine on a backend that answers at once, installed with
   ``tasks.caption.use_engine``): once as plain function calls (ingest, preprocess, plan,
   caption per shard, gate, version, report, and the flow's own ``runs`` bookkeeping), once
   as the flow. Reports both times, the overhead per item ((flow - plain) / N; target
   < 5 ms) and the flow/plain ratio. A warm-up of both paths on a few other images comes
   first (imports, the `gpu` concurrency limit); the Prefect API server (ephemeral, or
   ``--prefect-api``) is started by a trivial warm-up flow, outside the timed runs.
2. ``noop``: a refresh over ``--noop-assets`` known assets: a source of that many few-byte
   ``.jpg`` files is refreshed once by the flow (setup: listed, then all rejected as
   undecodable, so every asset is known) and then again (timed: nothing new; target < 30 s).

Dask: without ``--dask-address`` each preprocess starts its own 2-worker LocalCluster (both
paths alike: its start-up is in both times); with it, both join that scheduler.

Usage:
    python bench/orchestration.py
    python bench/orchestration.py --images 20 --noop-assets 200 --out /tmp/orchestration.json
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/orchestration.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import write_json

REPO = Path(__file__).resolve().parents[1]
TARGET_MS_PER_ITEM = 5.0  # flow - plain, per item; stated, never asserted
TARGET_NOOP_S = 30.0
WARM_UP_IMAGES = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="bench/orchestration.py",
        description="Time the capflow-refresh Prefect flow against the same steps called as "
        "plain functions (instant model), and a no-op refresh over many known assets. Prints "
        "a table and writes JSON.",
    )
    p.add_argument("--images", type=int, default=2000, help="images refreshed (default: 2000)")
    p.add_argument(
        "--noop-assets", type=int, default=100_000, help="known assets (default: 100000)"
    )
    p.add_argument("--dask-address", help="join this Dask scheduler (default: a LocalCluster)")
    p.add_argument("--prefect-api", help="this Prefect API URL (default: an ephemeral server)")
    p.add_argument("--max-pixels", type=int, default=256 * 256, help="default: 65536")
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "results" / "orchestration.json",
        help="the JSON file (default: bench/results/orchestration.json)",
    )
    return p.parse_args(argv)


def prefect_env(args: argparse.Namespace, tmp: Path) -> dict[str, str]:
    """Environment for Prefect and GX, set before either is imported."""
    env = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "GX_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_ROOT_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    }
    if args.prefect_api:
        env["PREFECT_API_URL"] = args.prefect_api
    else:
        env["PREFECT_HOME"] = str(tmp / "prefect-home")
        os.environ.pop("PREFECT_API_URL", None)
    os.environ.update(env)
    return env


def overhead(args: argparse.Namespace, tmp: Path, config: Path, backend: Any) -> dict[str, Any]:
    """Warm up both paths, then one plain and one flow refresh of ``--images`` images."""
    from bench import _orchestration_runs as runs

    warm_src = runs.image_source(tmp / "warm-src", WARM_UP_IMAGES, offset=10**6)
    src = runs.image_source(tmp / "src", args.images)
    out: dict[str, Any] = {}
    for name, fn in (("plain", runs.run_plain), ("flow", runs.run_flow)):
        for tag, source in ((f"warm-{name}", warm_src), (name, src)):
            ov = runs.overrides_for(tmp / f"root-{tag}", source)
            runs.install_engine(config, ov, backend)
            out[tag] = fn(config, ov)
            print(f"{tag}: {out[tag]['wall_s']:.1f} s ({out[tag]['status']})", flush=True)
    flow_s, plain_s = out["flow"]["wall_s"], out["plain"]["wall_s"]
    out["per_item_ms"] = (flow_s - plain_s) / args.images * 1000
    out["ratio_flow_over_plain"] = flow_s / plain_s
    return out


def noop(args: argparse.Namespace, tmp: Path, config: Path, backend: Any) -> dict[str, Any]:
    """A setup refresh that makes ``--noop-assets`` assets known, then the timed no-op."""
    from bench import _orchestration_runs as runs

    t0 = time.perf_counter()
    src = runs.tiny_file_source(tmp / "noop-src", args.noop_assets)
    made_s = time.perf_counter() - t0
    ov = runs.overrides_for(tmp / "root-noop", src, shard_size=5000)
    runs.install_engine(config, ov, backend)
    setup = runs.run_flow(config, ov)
    print(f"no-op setup: {setup['wall_s']:.1f} s", flush=True)
    again = runs.run_flow(config, ov)
    print(f"no-op refresh: {again['wall_s']:.1f} s ({again['status']})", flush=True)
    return {"assets": args.noop_assets, "source_s": made_s, "setup": setup, "noop": again}


def table(payload: dict[str, Any]) -> str:
    """The printed table: both paths' seconds, the overhead per item, the no-op refresh."""
    ov, nf = payload["overhead"], payload["noop"]
    n = payload["settings"]["images"]
    head = f"{'run':<28} {'items':>7} {'wall s':>8} {'items/s':>8}  outcome"
    lines = [head, "-" * len(head)]
    for name in ("plain", "flow"):
        r = ov[name]
        lines.append(
            f"{name + ' refresh':<28} {n:>7} {r['wall_s']:>8.2f} {n / r['wall_s']:>8.1f}  "
            f"{r['status']} v{r['version']}, {r['reconciliation']['accepted']} accepted"
        )
    for name, label in (("setup", "setup (first) refresh"), ("noop", "no-op refresh")):
        r = nf[name]
        lines.append(
            f"{label:<28} {nf['assets']:>7} {r['wall_s']:>8.2f} "
            f"{nf['assets'] / r['wall_s']:>8.0f}  {r['status']}, "
            f"{r['reconciliation']['listed']} listed, {r['reconciliation']['pending']} pending"
        )
    met = "met" if ov["per_item_ms"] < TARGET_MS_PER_ITEM else "missed"
    lines.append(
        f"orchestration overhead per item: {ov['per_item_ms']:.2f} ms (target < "
        f"{TARGET_MS_PER_ITEM:g} ms: {met}); ratio flow/plain: {ov['ratio_flow_over_plain']:.3f}"
    )
    met = "met" if nf["noop"]["wall_s"] < TARGET_NOOP_S else "missed"
    lines.append(
        f"no-op refresh over {nf['assets']} known assets: {nf['noop']['wall_s']:.1f} s "
        f"(target < {TARGET_NOOP_S:g} s: {met})"
    )
    steps = ", ".join(f"{k} {v:.2f}" for k, v in ov["plain"]["steps_s"].items())
    lines.append(f"plain steps (s): {steps}")
    tasks = ", ".join(f"{k} {v:.2f}" for k, v in ov["flow"]["tasks_s"].items())
    lines.append(f"flow task runs (s, start to end in the API): {tasks}")
    return "\n".join(lines)


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Build the inputs and take the measurements; returns the JSON payload."""
    load_before = round(os.getloadavg()[0], 2)
    started = time.perf_counter()
    prefect_env(args, tmp)
    from bench import _orchestration_runs as runs
    from capflow_core.tiny_model import build_tiny_model

    logging.getLogger("distributed").setLevel(logging.WARNING)  # a LocalCluster per preprocess
    model = build_tiny_model(tmp / "tiny-model")
    config = runs.write_config(tmp / "bench.yaml", model, args.dask_address, args.max_pixels)
    server_s = runs.warm_up_prefect()
    print(f"Prefect API ready after {server_s:.1f} s (not in any timed run)", flush=True)
    backend = runs.InstantBackend()
    try:
        over = overhead(args, tmp, config, backend)
        empty = noop(args, tmp, config, backend)
    finally:
        runs.drain_prefect_logs()
    return {
        "benchmark": "orchestration",
        "settings": {
            "images": args.images,
            "noop_assets": args.noop_assets,
            "image_size": "600x560",
            "max_pixels": args.max_pixels,
            "shard_size": 500,
            "noop_shard_size": 5000,
            "dask": args.dask_address or "LocalCluster(n_workers=2) started by each preprocess",
            "prefect_api": args.prefect_api or "ephemeral",
            "warm_up_images": WARM_UP_IMAGES,
        },
        "environment": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_avg_1m_at_start": load_before,
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "prefect_start_s": server_s,
        "model_calls": backend.calls,
        "overhead": over,
        "noop": empty,
        "target_ms_per_item": TARGET_MS_PER_ITEM,
        "target_noop_s": TARGET_NOOP_S,
        "total_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and write the JSON; returns what was written."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="capflow-bench-orchestration-") as tmp:
        payload = run(args, Path(tmp))
    env = payload["environment"]
    print(
        f"\nCapFlow orchestration: {args.images} images, {args.noop_assets} known assets on "
        f"{env['cpu_count']} CPUs (load {env['load_avg_1m_at_start']} -> "
        f"{env['load_avg_1m_at_end']}), Dask: {payload['settings']['dask']}, Prefect API: "
        f"{payload['settings']['prefect_api']}, {payload['total_s']:.0f} s"
    )
    print(table(payload))
    print(f"wrote {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
