"""Timed runs of the preprocessing benchmark: images in-process, samplers in child processes.

Run as ``python -m bench._preprocess_measure SAMPLER PATH REPEATS`` it is the child of one
sampling measurement: it prints one JSON line with CPU seconds (all threads) and wall seconds
per repeat and its own RSS high-water mark (VmHWM), so memory figures are per sampler.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def entries_for(paths: list[Path]) -> list[dict[str, Any]]:
    """Manifest-like rows for local files."""
    return [{"source_uri": str(p), "size": p.stat().st_size} for p in paths]


def bare_images(paths: list[Path], max_pixels: int) -> None:
    """The baseline: PIL decode and bicubic resize to the pixel budget, nothing else."""
    from PIL import Image

    for path in paths:
        with Image.open(path) as image:
            image = image.convert("RGB")
            w, h = image.size
            if w * h > max_pixels:
                scale = (max_pixels / (w * h)) ** 0.5
                image.resize((int(w * scale), int(h * scale)), Image.Resampling.BICUBIC)


def time_images(paths: list[Path], cfg: Any, repeats: int) -> dict[str, Any]:
    """prepare_batch and the bare loop, alternating, one warm-up each; per-run timings."""
    from capflow_core.prepare import PreparedItem, prepare_batch

    entries = entries_for(paths)
    prepare_batch(entries[:1], cfg)  # warm-up: imports, first-use setup
    bare_images(paths[:1], cfg.preprocess.max_pixels)
    runs: dict[str, list[dict[str, float]]] = {"prepare": [], "bare": []}
    prepared = 0
    for _ in range(repeats):
        for kind in ("prepare", "bare"):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            if kind == "prepare":
                out = prepare_batch(entries, cfg)
                prepared = sum(isinstance(o, PreparedItem) for o in out)
            else:
                bare_images(paths, cfg.preprocess.max_pixels)
            runs[kind].append(
                {"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0}
            )
    return {"runs": runs, "prepared": prepared, "items": len(paths)}


def bare_video(path: str, cfg: Any, info: Any) -> int:
    """The baseline: PyAV decode from the start to the last wanted frame, RGB of wanted ones."""
    import av

    from capflow_core.video import frame_indices

    indices = frame_indices(info.frames, info.fps, cfg)
    wanted, kept, decoded = set(indices), 0, 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # as sample_pyav decodes
        for frame in container.decode(stream):
            if decoded in wanted:
                frame.to_ndarray(format="rgb24")
                kept += 1
            decoded += 1
            if decoded > indices[-1]:
                break
    return kept


def _child(sampler: str, path: str, repeats: int) -> dict[str, Any]:
    from capflow_core.config import VideoConfig
    from capflow_core.video import probe, sample_decord, sample_pyav

    cfg = VideoConfig()
    info = probe(path)
    run = {
        "pyav": lambda: len(sample_pyav(path, cfg, info).frames),
        "decord": lambda: len(sample_decord(path, cfg, info).frames),
        "bare": lambda: bare_video(path, cfg, info),
    }[sampler]
    if sampler == "decord":
        import decord  # noqa: F401
    import av  # noqa: F401

    rss_idle = _hwm_kib()
    frames = run()  # warm-up
    cpu, wall = [], []
    for _ in range(repeats):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        run()
        cpu.append(time.process_time() - cpu0)
        wall.append(time.perf_counter() - wall0)
    return {
        "sampler": sampler,
        "frames": frames,
        "duration_s": info.duration_s,
        "cpu_s": cpu,
        "wall_s": wall,
        "rss_before_kib": rss_idle,
        "peak_rss_kib": _hwm_kib(),
    }


def _hwm_kib() -> int:
    """This process's RSS high-water mark (VmHWM): unlike ``ru_maxrss``, it starts afresh at
    exec, so a large parent's footprint never counts."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def time_sampler(sampler: str, path: Path, repeats: int) -> dict[str, Any]:
    """One sampling measurement in a fresh child process; medians and per-10 s figures."""
    cmd = [sys.executable, "-m", "bench._preprocess_measure", sampler, str(path), str(repeats)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{sampler} on {path.name} failed:\n{proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    cpu = statistics.median(res["cpu_s"])
    res["cpu_s_median"] = cpu
    res["wall_s_median"] = statistics.median(res["wall_s"])
    res["core_s_per_10s"] = cpu / res["duration_s"] * 10
    res["peak_rss_mib"] = res["peak_rss_kib"] / 1024
    res["rss_before_mib"] = res["rss_before_kib"] / 1024
    return res


def time_dask(paths: list[Path], cfg: Any, workers: int, batch: int) -> dict[str, Any]:
    """The image batch through a LocalCluster of ``workers`` single-threaded processes."""
    from distributed import Client, LocalCluster

    from capflow_core.prepare import PreparedItem, prepare_batch

    entries = entries_for(paths)
    batches = [entries[i : i + batch] for i in range(0, len(entries), batch)]
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(_warm_worker, entries[0], cfg)  # imports and first-use setup, untimed
        wall0 = time.perf_counter()
        futures = client.map(prepare_batch, batches, cfg=cfg, pure=False)
        out = [o for part in client.gather(futures) for o in part]
        wall = time.perf_counter() - wall0
    return {
        "workers": workers,
        "tasks": len(batches),
        "items": len(out),
        "prepared": sum(isinstance(o, PreparedItem) for o in out),
        "wall_s": wall,
        "items_per_s": len(out) / wall,
    }


def _warm_worker(entry: dict[str, Any], cfg: Any) -> None:
    from capflow_core.prepare import prepare_batch

    prepare_batch([entry], cfg)


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
