"""Scale-out: the ``capflow-refresh`` flow with 1 vs 2 Dask workers and 1 vs 2 model endpoints.

One input set (``--images`` photo-like 1080p JPEGs and ``--videos`` 3 s 480p clips) is
refreshed on a fresh storage root per configuration ``(Dask workers, model endpoints)`` in
``{(1, 1), (2, 1), (1, 2), (2, 2)}``, in one run, so every ratio is against the 1 x 1
baseline measured alongside. Reported: items/s end to end and per stage (listing,
preprocessing, captioning, gate, MERGE, from the flow's Prefect task runs) and each
configuration's ratio to the baseline (ideal: 2x on the doubled dimension).

Models (``--model``):

- ``tiny`` (default): ``transformers serve`` processes of the tiny random-weight model, one
  core each (``OMP_NUM_THREADS=1``), behind the ``openai`` backend (``structured_outputs:
  none``, ``video: frames``). The judge role answers from an instant in-process fake: a
  random-weight model without constrained decoding never writes a parseable judgement, and
  every sample would fail. The router is skipped (the image source names its domain).
- ``instant``: every role answers at once in-process: the Dask dimension alone.
- ``--endpoint-url URL`` (repeatable; e.g. ``vllm serve`` on GPUs) with ``--served-model``:
  every role on those endpoints; 1 endpoint vs all of them.

Dask: one LocalCluster per worker count (single-threaded worker processes), started and
warmed before the timed runs, joined through ``dask.address``. Prefect: ``--prefect-api`` or
``PREFECT_API_URL``, else an ephemeral server. A trivial flow and a refresh of 2 other images
(on the largest configuration) run first, untimed.

Usage:
    python bench/scale.py
    python bench/scale.py --model instant --images 200 --out /tmp/scale.json
    python bench/scale.py --endpoint-url http://gpu0:8000/v1 --endpoint-url http://gpu1:8000/v1 \
        --served-model Qwen/Qwen2.5-VL-7B-Instruct
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/scale.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import write_json

REPO = Path(__file__).resolve().parents[1]
WARM_UP_IMAGES = 2
UNUSED_URL = "http://127.0.0.1:9/v1"  # --model instant: the config names it, nothing calls it


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="bench/scale.py",
        description="Refresh one input set with 1 vs 2 Dask workers and 1 vs 2 model "
        "endpoints; print items/s per stage and ratios vs 1 x 1, and write JSON.",
    )
    p.add_argument("--images", type=int, default=40, help="1080p JPEGs (default: 40)")
    p.add_argument("--videos", type=int, default=2, help="3 s 480p clips (default: 2)")
    p.add_argument("--model", choices=("tiny", "instant"), default="tiny", help="default: tiny")
    p.add_argument(
        "--endpoint-url", action="append", default=[], help="an OpenAI-compatible server (repeat)"
    )
    p.add_argument("--served-model", help="the model name the --endpoint-url servers serve")
    p.add_argument(
        "--structured-outputs",
        choices=("vllm", "json_schema", "none"),
        default="vllm",
        help="--endpoint-url capability (default: vllm)",
    )
    p.add_argument(
        "--video-input",
        choices=("video_url", "frames", "none"),
        default="video_url",
        help="--endpoint-url video capability (default: video_url)",
    )
    p.add_argument("--max-inflight", type=int, default=4, help="per endpoint (default: 4)")
    p.add_argument("--items-per-task", type=int, default=4, help="per Dask task (default: 4)")
    p.add_argument("--repeats", type=int, default=2, help="runs per configuration (default: 2)")
    p.add_argument("--prefect-api", help="this Prefect API URL (default: $PREFECT_API_URL, else "
                   "an ephemeral server)")  # fmt: skip
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "results" / "scale.json",
        help="the JSON file (default: bench/results/scale.json)",
    )
    args = p.parse_args(argv)
    if args.endpoint_url and not args.served_model:
        p.error("--endpoint-url needs --served-model")
    if args.endpoint_url and args.model == "instant":
        p.error("--model instant uses no endpoints: drop --endpoint-url")
    return args


def configurations(model: str, endpoints: int) -> list[tuple[int, int]]:
    """(workers, endpoints) pairs, the baseline first (0 endpoints: the instant model)."""
    if model == "instant":
        return [(1, 0), (2, 0)]
    if endpoints < 2:
        return [(1, 1), (2, 1)]
    return [(1, 1), (2, 1), (1, 2), (2, 2)]


def label(workers: int, endpoints: int) -> str:
    """``2w x 1e``; ``2w x instant`` without endpoints."""
    return f"{workers}w x {f'{endpoints}e' if endpoints else 'instant'}"


def measure(
    args: argparse.Namespace,
    tmp: Path,
    urls: list[str],
    model: str,
    ready: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """Warm up, then every configuration ``--repeats`` times (interleaved); the figures.

    ``ready`` (launched endpoints: wait for them) is called once the inputs and the Dask
    clusters are up, so the servers load meanwhile.
    """
    from bench import _scale_runs as runs
    from bench import _scale_setup as setup
    from bench._orchestration_runs import InstantBackend, drain_prefect_logs, warm_up_prefect

    instant = InstantBackend()
    if args.model == "instant":
        flags: dict[str, Any] = {}
    elif args.endpoint_url:
        flags = {"structured_outputs": args.structured_outputs, "video": args.video_input}
    else:
        flags = {"structured_outputs": "none", "video": "frames"}
    flags["max_inflight"] = args.max_inflight
    judge = instant if args.model == "tiny" and not args.endpoint_url else None
    every = instant if args.model == "instant" else None
    sources = setup.write_inputs(tmp / "src", args.images, args.videos)
    warm_sources = setup.write_inputs(tmp / "warm-src", WARM_UP_IMAGES, 0, seed=10**6)
    pairs = configurations(args.model, len(urls))
    with setup.Clusters([w for w, _ in pairs]) as clusters:

        def config(tag: str, workers: int, n_endpoints: int, srcs: list[dict]) -> Path:
            spec = setup.model_spec(model, urls[:n_endpoints] or [UNUSED_URL], flags)
            models = dict.fromkeys(("vlm", "llm", "judge"), spec)
            address = clusters.address[workers]
            return setup.write_config(
                tmp / f"{tag}.yaml", tmp / f"root-{tag}", srcs, address, models, args.items_per_task
            )

        if ready is not None:
            print(f"endpoints ready after another {ready():.1f} s (untimed)", flush=True)
        prefect_s = warm_up_prefect()
        print(f"Prefect API ready after {prefect_s:.1f} s (untimed)", flush=True)
        top = pairs[-1]
        runs.run_configuration("warm-up", *top, config("warm", *top, warm_sources), judge, every)
        found: dict[str, list[dict[str, Any]]] = {}
        try:
            for r in range(args.repeats):  # alternate the order: drifting load evens out
                for w, e in pairs if r % 2 == 0 else pairs[::-1]:
                    name = label(w, e)
                    path = config(f"{w}w{e}e-{r}", w, e, sources)
                    one = runs.run_configuration(name, w, e, path, judge, every)
                    found.setdefault(name, []).append(one)
                    print(f"{name} #{r + 1}: {one['wall_s']:.1f} s, {one['status']}", flush=True)
        finally:
            drain_prefect_logs()
    summaries = [runs.summarize(found[label(w, e)]) for w, e in pairs]
    base = summaries[0]
    for s in summaries:
        s["ratio_vs_baseline"] = runs.ratios(s, base)
    return {"configurations": summaries, "baseline": base["name"], "prefect_start_s": prefect_s,
            "instant_calls": instant.calls}  # fmt: skip


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Start the endpoints (tiny model), measure, and assemble the JSON payload."""
    from bench._scale_runs import STAGES
    from bench._scale_setup import prefect_env

    load_before = round(os.getloadavg()[0], 2)
    started = time.perf_counter()
    api = prefect_env(args.prefect_api, tmp)
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if args.endpoint_url:
        urls, model = list(args.endpoint_url), args.served_model
        note = f"{len(urls)} given endpoint(s) serving {model}, every role on them"
        measured = measure(args, tmp, urls, model)
    elif args.model == "instant":
        note = "instant in-process fake for every role (no endpoints)"
        measured = measure(args, tmp, [], "bench-instant")
    else:
        from bench._scale_serve import ServeFleet
        from capflow_core.tiny_model import build_tiny_model

        model_dir = build_tiny_model(tmp / "tiny-model")
        note = ("tiny random-weight model, one `transformers serve` (OMP_NUM_THREADS=1) per "
                "endpoint for the agents and summary; judge: instant in-process fake")  # fmt: skip
        with ServeFleet(model_dir, 2, tmp / "serve-logs") as fleet:
            measured = measure(args, tmp, fleet.urls, str(model_dir), fleet.ready)
    return {
        "benchmark": "scale",
        "settings": {
            "images": args.images,
            "videos": args.videos,
            "image_size": "1920x1080",
            "video": "854x480, 3 s, 12 fps",
            "model": "endpoints" if args.endpoint_url else args.model,
            "model_note": note,
            "items_per_task": args.items_per_task,
            "max_inflight": args.max_inflight,
            "repeats": args.repeats,
            "warm_up_images": WARM_UP_IMAGES,
            "prefect_api": api,
            "stage_tasks": STAGES,
        },
        "environment": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_avg_1m_at_start": load_before,
            "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        },
        **measured,
        "total_s": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and write the JSON; returns what was written."""
    from bench._scale_report import table

    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="capflow-bench-scale-") as tmp:
        payload = run(args, Path(tmp))
    items = payload["configurations"][0]["items"]
    print(
        f"\nCapFlow scale: {args.images} images + {args.videos} videos ({items} items listed), "
        f"{len(payload['configurations'])} configurations x {args.repeats} run(s), Prefect API: "
        f"{payload['settings']['prefect_api']}, {payload['total_s']:.0f} s in all"
    )
    print(table(payload))
    print(f"wrote {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
