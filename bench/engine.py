"""Engine overhead: ``CapFlow.acaption`` against the bare backend calls it issues.

Every engine run goes through a recording wrapper that files each request under its sample
(``CURRENT_SAMPLE``); the bare run that follows replays exactly those requests through the
same backend with the engine's stage structure (route -> agents concurrently -> summary ->
judge, re-asks where they happened) and the same ``samples_in_flight`` limit, and nothing
else. Engine and bare runs alternate in each repeat; the medians of the repeats are compared.

Usage:
    python bench/engine.py                                    # tiny model on the CPU
    python bench/engine.py --samples 20 --repeats 2 --mode capflow
    python bench/engine.py --device cuda --size 7b            # random-weight 7B shape on a GPU
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/engine.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import ENGINE_INCLUDES, table, write_json

REPO = Path(__file__).resolve().parents[1]
# Per-size defaults. 7b: a random-weight model never stops early, so every reply runs to its
# token budget; at these settings one H200 ran the whole benchmark in 5.4 minutes (each
# further repeat adds ~4.5; the registry's budgets, --max-tokens 0, take several times longer).
# fmt: off
SIZE_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {"samples": 200, "repeats": 5, "image_size": "256x192", "video_every": 25,
             "max_tokens": None, "in_flight": None, "max_batch_size": 16, "warmup": None,
             "warmup_max_tokens": None},
    "7b": {"samples": 64, "repeats": 1, "image_size": "1024x768", "video_every": 0,
           "max_tokens": 128, "in_flight": 64, "max_batch_size": 256, "warmup": 8,
           "warmup_max_tokens": 8},
}
# fmt: on


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; size-dependent defaults are filled in after parsing."""
    p = argparse.ArgumentParser(
        prog="bench/engine.py",
        description="Measure the CapFlow engine's overhead: CapFlow.acaption on N generated "
        "samples against a bare replay of the same backend calls (same requests, backend, "
        "stage structure and concurrency). Prints a table and writes JSON.",
    )
    p.add_argument("--samples", type=int, help="inputs per run (default: 200 tiny, 64 7b)")
    p.add_argument(
        "--repeats", type=int, help="engine+bare pairs; medians reported (default: 5 tiny, 1 7b)"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default: cpu")
    p.add_argument(
        "--size",
        choices=["tiny", "7b"],
        default="tiny",
        help="default: tiny. tiny: the offline test model (configs/tiny.yaml); 7b: Qwen2.5-VL-7B's "
        "shape with random bf16 weights built on the GPU (implies --in-memory)",
    )
    p.add_argument(
        "--mode", choices=["capflow", "single", "both"], default="both", help="default: both"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "results" / "engine.json",
        help="the JSON file (default: bench/results/engine.json)",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        help="cap on agent/summary/single budgets; 0 = the registry's budgets "
        "(default: tiny.yaml's cap for tiny, 128 for 7b)",
    )
    p.add_argument(
        "--in-flight", type=int, help="concurrency.samples_in_flight (default: config's; 64 for 7b)"
    )
    p.add_argument(
        "--max-batch-size", type=int, help="backend micro-batch size (default: 16 tiny, 256 7b)"
    )
    p.add_argument(
        "--image-size", help="WxH of the generated images (default: 256x192 tiny, 1024x768 7b)"
    )
    p.add_argument(
        "--video-every",
        type=int,
        help="every k-th input is a short clip; 0 = none (default: 25 tiny, 0 7b; needs PyAV)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        help="samples in the untimed warm-up run per mode (default: all for tiny, 8 for 7b)",
    )
    p.add_argument(
        "--warmup-max-tokens",
        type=int,
        help="token cap of the warm-up run (default: the run's for tiny, 8 for 7b)",
    )
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        help="backend micro-batch wait: how long a batch waits to fill (default: the config's, 5)",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        help="torch CPU threads (default: 1 on --device cpu, where more threads only add "
        "noise on a shared machine; torch's own choice on cuda)",
    )
    p.add_argument(
        "--model",
        type=Path,
        help="a tiny model folder to use (default: configs/tiny.yaml's, built on first use)",
    )
    p.add_argument(
        "--in-memory",
        action="store_true",
        help="build the model in memory with the real pixel budget (as --size 7b does)",
    )
    p.add_argument(
        "--ocr",
        action="store_true",
        help="include Tesseract OCR grounding (off: the "
        "OCR agents run ungrounded, so a tool's run time is not counted as overhead)",
    )
    args = p.parse_args(argv)
    for key, value in SIZE_DEFAULTS[args.size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.in_memory = args.in_memory or args.size == "7b"
    if args.torch_threads is None and args.device == "cpu":
        args.torch_threads = 1
    if args.size == "7b" and args.device != "cuda":
        p.error("--size 7b needs --device cuda (an 8B-parameter model on the CPU would take hours)")
    return args


def overrides_for(args: argparse.Namespace) -> dict[str, Any]:
    """Config keys the benchmark sets on top of the model's config."""
    out: dict[str, Any] = {"ocr": {"enabled": args.ocr}}
    if args.max_tokens is not None:
        out["generation"] = {"max_tokens_cap": args.max_tokens or None}
    if args.in_flight:
        out["concurrency"] = {"samples_in_flight": args.in_flight}
    if not args.in_memory:
        role: dict[str, Any] = {"device": args.device, "max_batch_size": args.max_batch_size}
        if args.batch_wait_ms is not None:
            role["batch_wait_ms"] = args.batch_wait_ms
        if args.model:
            role.update(model=str(args.model.resolve()), build_tiny=False)
        out["models"] = {r: dict(role) for r in ("vlm", "llm", "judge")}
    return out


async def _run(args: argparse.Namespace, media_dir: Path) -> dict[str, Any]:
    from bench._inputs import write_inputs
    from bench._measure import measure
    from bench._models import device_info, memory_setup, tiny_setup
    from bench._replay import Recorder
    from capflow_core.engine import CapFlow, Sample

    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    load_before = round(os.getloadavg()[0], 2)
    width, height = (int(v) for v in args.image_size.lower().split("x"))
    paths = write_inputs(media_dir, args.samples, (width, height), args.video_every)
    samples = [Sample(str(p)) for p in paths]
    if args.in_memory:
        batching = {
            "max_batch_size": args.max_batch_size,
            "batch_wait_ms": 5.0 if args.batch_wait_ms is None else args.batch_wait_ms,
        }
        config, backends = memory_setup(args.size, args.device, overrides_for(args), batching)
    else:
        config, backends = tiny_setup(overrides_for(args))
    recorder = Recorder(backends)
    flow = CapFlow(config, backends=recorder.wrapped)
    warm_cap = args.warmup_max_tokens
    warm_config = (
        config
        if warm_cap is None
        else config.model_copy(
            update={"generation": config.generation.model_copy(update={"max_tokens_cap": warm_cap})}
        )
    )
    warm_flow = CapFlow(warm_config, flow.registry, backends=recorder.wrapped)
    modes = ["capflow", "single"] if args.mode == "both" else [args.mode]
    results = {}
    try:
        for mode in modes:
            print(f"{mode}: {len(samples)} samples x {args.repeats} repeats", flush=True)
            results[mode] = await measure(
                flow, warm_flow, recorder, samples, mode, args.repeats, args.warmup or len(samples)
            )
    finally:
        await flow.aclose()
    role = config.role("vlm")
    settings = {
        "size": args.size,
        "device": args.device,
        "in_memory": args.in_memory,
        "samples": len(samples),
        "videos": sum(p.suffix == ".mp4" for p in paths),
        "image_size": args.image_size,
        "repeats": args.repeats,
        "samples_in_flight": config.concurrency.samples_in_flight,
        "max_batch_size": getattr(role, "max_batch_size", None),
        "batch_wait_ms": getattr(role, "batch_wait_ms", None),
        "max_tokens_cap": config.generation.max_tokens_cap,
        "warmup_samples": args.warmup or len(samples),
        "warmup_max_tokens": warm_cap,
        "ocr": args.ocr,
        "torch_threads": args.torch_threads,
        "load_avg_1m_at_start": load_before,
    }
    return {
        "benchmark": "engine_overhead",
        "settings": settings,
        "environment": device_info(args.device),
        "engine_time_includes": ENGINE_INCLUDES,
        "modes": results,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and write the JSON; returns what was written."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="capflow-bench-") as tmp:
        payload = asyncio.run(_run(args, Path(tmp)))
    env = payload["environment"]
    where = (
        f"CPU ({env['cpu_threads']} threads, load {payload['settings']['load_avg_1m_at_start']})"
    )
    if "gpu" in env:
        where = f"{env['gpu']} ({env['gpu_memory_gib']} GiB, peak {env['gpu_memory_peak_gib']} GiB)"
    print(
        f"\nCapFlow engine overhead: {args.size} model on {where}, "
        f"{payload['settings']['samples']} samples, median of {args.repeats}"
    )
    print(table(payload["modes"]))
    print(f"note: {ENGINE_INCLUDES}.")
    print(f"wrote {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
