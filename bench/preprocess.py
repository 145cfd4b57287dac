"""Preprocessing throughput: the per-item path, the frame samplers and Dask scaling.

Generates deterministic photo-like inputs in a temp folder (1080p and 12 MP JPEGs; 10 s
1080p H.264 videos with a 2 s and a 10 s keyframe interval) and reports, each against a
baseline measured in the same run:

1. images per core-second through ``prepare_batch`` (one process, one thread) vs a bare
   PIL decode + resize loop over the same files (target ratio >= 0.8);
2. core-seconds per 10 s of 1080p video for each sampler at the default ``VideoConfig`` vs
   a bare PyAV decode of the wanted frames' span (target <= 1.2 with 2 s keyframes), and the
   peak RSS of each measurement's own child process;
3. items/s of the same images through a LocalCluster of 1 then 2 single-threaded workers.

Targets are printed, never asserted.

Usage:
    python bench/preprocess.py
    python bench/preprocess.py --images-1080p 8 --images-12mp 2 --repeats 1 --gops 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/preprocess.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import write_json

REPO = Path(__file__).resolve().parents[1]
IMAGE_TARGET = 0.8  # prepare/bare images per core-second; stated, never asserted
VIDEO_TARGET = 1.2  # sampler/bare core-seconds with 2 s keyframes; stated, never asserted
SAMPLERS = ("pyav", "decord")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="bench/preprocess.py",
        description="Measure preprocessing: prepare_batch vs bare decode+resize, frame "
        "samplers vs bare PyAV decode (CPU time, peak RSS), Dask 1 vs 2 workers. Prints a "
        "table and writes JSON.",
    )
    p.add_argument("--images-1080p", type=int, default=16, help="1920x1080 JPEGs (default: 16)")
    p.add_argument("--images-12mp", type=int, default=4, help="4000x3000 JPEGs (default: 4)")
    p.add_argument(
        "--repeats", type=int, default=3, help="timed runs per measurement; medians (default: 3)"
    )
    p.add_argument(
        "--gops",
        type=float,
        nargs="*",
        default=[2.0, 10.0],
        help="keyframe intervals in seconds, one video each; none: skip videos (default: 2 10)",
    )
    p.add_argument("--video-seconds", type=float, default=10.0, help="video length (default: 10)")
    p.add_argument("--dask-batch", type=int, default=2, help="items per Dask task (default: 2)")
    p.add_argument("--no-dask", action="store_true", help="skip the Dask scaling part")
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "results" / "preprocess.json",
        help="the JSON file (default: bench/results/preprocess.json)",
    )
    return p.parse_args(argv)


def config() -> Any:
    """The packaged default config with the model defaults of ``preprocess`` and ``video``."""
    from capflow_core.config import DEFAULT_CONFIG, VideoConfig, load_config
    from capflow_core.config_preprocess import PreprocessConfig

    cfg = load_config(DEFAULT_CONFIG)
    return cfg.model_copy(update={"preprocess": PreprocessConfig(), "video": VideoConfig()})


def summarize_images(timed: dict[str, Any]) -> dict[str, Any]:
    """Medians, images/s and images per core-second, and the prepare/bare ratios."""
    out: dict[str, Any] = {"items": timed["items"], "prepared": timed["prepared"]}
    for kind, runs in timed["runs"].items():
        cpu = statistics.median(r["cpu_s"] for r in runs)
        wall = statistics.median(r["wall_s"] for r in runs)
        out[kind] = {
            "cpu_s": cpu,
            "wall_s": wall,
            "images_per_core_s": timed["items"] / cpu,
            "images_per_s": timed["items"] / wall,
            "runs": runs,
        }
    prep, bare = out["prepare"], out["bare"]
    out["ratio"] = prep["images_per_core_s"] / bare["images_per_core_s"]
    out["ratio_wall"] = prep["images_per_s"] / bare["images_per_s"]
    out["target_ratio"] = IMAGE_TARGET
    return out


def summarize_video(gop: float, path: Path, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One video's samplers and bare baseline, with each sampler's ratio to the bare decode."""
    from bench._preprocess_inputs import keyframes

    bare = runs["bare"]["core_s_per_10s"]
    for name in SAMPLERS:
        runs[name]["ratio"] = runs[name]["core_s_per_10s"] / bare
    return {"gop_s": gop, "keyframes": keyframes(path), "size_bytes": path.stat().st_size, **runs}


def table(payload: dict[str, Any]) -> str:
    """The printed table: images, then sampling per video, then Dask."""
    img = payload["images"]
    lines = [f"{'images':<28} {'cpu s':>8} {'wall s':>8} {'img/core-s':>11} {'img/s':>8}"]
    lines.append("-" * len(lines[0]))
    for kind, label in (("prepare", "prepare_batch"), ("bare", "bare decode+resize")):
        r = img[kind]
        lines.append(
            f"{label:<28} {r['cpu_s']:>8.2f} {r['wall_s']:>8.2f} "
            f"{r['images_per_core_s']:>11.2f} {r['images_per_s']:>8.2f}"
        )
    verdict = "met" if img["ratio"] >= IMAGE_TARGET else "missed"
    lines.append(
        f"ratio prepare/bare (per core-s): {img['ratio']:.3f} (wall {img['ratio_wall']:.3f}; "
        f"target >= {IMAGE_TARGET}: {verdict}); {img['prepared']}/{img['items']} prepared"
    )
    if payload["videos"]:
        head = (
            f"\n{'video sampling':<23} {'core-s/10s':>11} {'wall s':>8} {'peak RSS MiB':>13} "
            f"{'ratio':>7}"
        )
        lines += [head, "-" * (len(head) - 1)]
    for video in payload["videos"]:
        gop = f"gop {video['gop_s']:g}s ({video['keyframes']} keys)"
        for name in (*SAMPLERS, "bare"):
            r = video[name]
            ratio = "-" if name == "bare" else f"{r['ratio']:.3f}"
            lines.append(
                f"{gop:<16} {name:<6} {r['core_s_per_10s']:>11.3f} {r['wall_s_median']:>8.2f} "
                f"{r['peak_rss_mib']:>13.1f} {ratio:>7}"
            )
    if payload["videos"]:
        lines.append(
            f"ratio: sampler/bare core-seconds (target <= {VIDEO_TARGET} with 2 s keyframes); "
            f"RSS before sampling ~{payload['videos'][0]['bare']['rss_before_mib']:.0f} MiB"
        )
    dask = payload.get("dask")
    if dask:
        lines += [f"\n{'dask':<12} {'tasks':>6} {'wall s':>8} {'items/s':>8}", "-" * 37]
        for r in dask["runs"]:
            lines.append(
                f"{r['workers']} worker(s)  {r['tasks']:>6} {r['wall_s']:>8.2f} "
                f"{r['items_per_s']:>8.2f}"
            )
        lines.append(f"speed-up 2 vs 1 workers: {dask['speedup']:.2f}x")
    return "\n".join(lines)


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Generate the inputs and take every measurement; returns the JSON payload."""
    from bench._preprocess_inputs import write_images, write_videos
    from bench._preprocess_measure import time_dask, time_images, time_sampler

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # one thread per process, child processes included
    load_before = round(os.getloadavg()[0], 2)
    started = time.perf_counter()
    cfg = config()
    counts = {"1080p": args.images_1080p, "12mp": args.images_12mp}
    images = write_images(tmp / "images", counts)
    videos = write_videos(tmp / "videos", list(args.gops), args.video_seconds)
    print(f"inputs: {len(images)} images, {len(videos)} videos", flush=True)
    payload: dict[str, Any] = {
        "benchmark": "preprocess",
        "settings": {
            "images": counts,
            "repeats": args.repeats,
            "gops_s": list(args.gops),
            "video_seconds": args.video_seconds,
            "video_config": cfg.video.model_dump(),
            "max_pixels": cfg.preprocess.max_pixels,
            "dask_batch": args.dask_batch,
        },
        "environment": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_avg_1m_at_start": load_before,
        },
        "images": summarize_images(time_images(images, cfg, args.repeats)),
        "videos": [],
    }
    print("images done", flush=True)
    for gop, path in videos.items():
        runs = {s: time_sampler(s, path, args.repeats) for s in (*SAMPLERS, "bare")}
        payload["videos"].append(summarize_video(gop, path, runs))
        print(f"video gop {gop:g}s done", flush=True)
    if not args.no_dask:
        dask_runs = [time_dask(images, cfg, n, args.dask_batch) for n in (1, 2)]
        payload["dask"] = {
            "runs": dask_runs,
            "speedup": dask_runs[1]["items_per_s"] / dask_runs[0]["items_per_s"],
        }
    payload["environment"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    payload["total_s"] = time.perf_counter() - started
    return payload


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and write the JSON; returns what was written."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="capflow-bench-pre-") as tmp:
        payload = run(args, Path(tmp))
    env = payload["environment"]
    print(
        f"\nCapFlow preprocessing on {env['cpu_count']} CPUs (load {env['load_avg_1m_at_start']} "
        f"-> {env['load_avg_1m_at_end']}), median of {args.repeats}, "
        f"{payload['total_s']:.0f} s in all"
    )
    print(table(payload))
    print(f"wrote {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
