"""The scale benchmark's inputs and settings: Prefect's environment, media, one config per
configuration, Dask clusters and the caption engine each configuration's flow run uses.

Images are photo-like 1080p JPEGs (decoded, hashed and shrunk by preprocessing, so the Dask
stage has real work); videos are short 480p H.264 clips with a moving object. Images come
from a source that names their domain (``natural``: routing is skipped, since a
random-weight model over HTTP has no constrained decoding and could never answer the
router's multiple choice); videos always go to the video domain.
"""

from __future__ import annotations

import importlib
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VIDEO_SIZE = (854, 480)  # the paper's video filter keeps a short side of 480 and up
VIDEO_SECONDS, VIDEO_FPS = 3, 12


def prefect_env(api: str | None, tmp: Path) -> str:
    """Set Prefect's and GX's environment before either is imported; returns the API used.

    ``api`` (else ``$PREFECT_API_URL``) is used when given; otherwise runs start an
    ephemeral server with its own ``PREFECT_HOME`` under ``tmp``.
    """
    os.environ.update({
        "TQDM_DISABLE": "1",
        "HF_HUB_OFFLINE": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "GX_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_ROOT_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    })  # fmt: skip
    api = api or os.environ.get("PREFECT_API_URL")
    if api:
        os.environ["PREFECT_API_URL"] = api
        return api
    os.environ["PREFECT_HOME"] = str(tmp / "prefect-home")
    return "ephemeral"


def write_videos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` distinct 480p clips: a coloured ground with a disc crossing it, plus grain."""
    from PIL import Image, ImageDraw

    from capflow_core.sample_media import write_video

    folder.mkdir(parents=True, exist_ok=True)
    w, h = VIDEO_SIZE
    out = []
    for k in range(n):
        rng = np.random.default_rng(seed + 100 + k)
        ground = tuple(int(c) for c in rng.integers(0, 256, 3))
        disc = tuple(int(c) for c in rng.integers(0, 256, 3))
        frames = []
        count = VIDEO_SECONDS * VIDEO_FPS
        for i in range(count):
            img = Image.new("RGB", (w, h), ground)
            x = int(i / (count - 1) * (w - h // 3))
            ImageDraw.Draw(img).ellipse((x, h // 3, x + h // 3, 2 * h // 3), fill=disc)
            grain = rng.normal(0, 5, (h, w, 1)).astype(np.int16)
            frames.append((np.asarray(img, np.int16) + grain).clip(0, 255).astype(np.uint8))
        out.append(write_video(folder / f"clip_{k:03d}.mp4", frames, VIDEO_FPS))
    return out


def write_inputs(folder: Path, images: int, videos: int, seed: int = 0) -> list[dict[str, Any]]:
    """Write the media and return the config's ``sources`` (images: domain ``natural``)."""
    from bench._preprocess_inputs import write_images

    sources: list[dict[str, Any]] = []
    if images:
        write_images(folder / "images", {"1080p": images}, seed=seed)
        img_src = {"uri": str(folder / "images"), "domain": "natural", "license": "cc-by-4.0"}
        sources.append(img_src)
    if videos:
        write_videos(folder / "videos", videos, seed=seed)
        sources.append({"uri": str(folder / "videos"), "license": "cc-by-4.0"})
    return sources


def model_spec(model: str, urls: list[str], flags: dict[str, Any]) -> dict[str, Any]:
    """An ``openai`` backend spec over ``urls``, each endpoint with ``flags``."""
    return {
        "backend": "openai",
        "model": model,
        "timeout_s": 300,
        "endpoints": [{"url": u, **flags} for u in urls],
    }


def write_config(
    path: Path,
    root: Path,
    sources: list[dict[str, Any]],
    dask_address: str,
    models: dict[str, Any],
    items_per_task: int,
) -> Path:
    """configs/tiny.yaml with this configuration's models, root, sources and Dask scheduler."""
    import yaml

    data = yaml.safe_load((REPO / "configs/tiny.yaml").read_text())
    data["models"] = models
    data["storage"] = {"root": str(root)}
    data["sources"] = sources
    data["dask"] = {"address": dask_address}
    data["preprocess"] = {"items_per_task": items_per_task}
    data["ingest"] = {"shard_size": 1000}
    path.write_text(yaml.safe_dump(data))
    return path


class Clusters:
    """One Dask LocalCluster per worker count, started once and warmed (imports done)."""

    def __init__(self, worker_counts: list[int]) -> None:
        self.counts = sorted(set(worker_counts))
        self.address: dict[int, str] = {}
        self._stack = ExitStack()

    def __enter__(self) -> Clusters:
        from distributed import Client, LocalCluster

        for n in self.counts:
            cluster = self._stack.enter_context(
                LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
                )
            )
            with Client(cluster) as client:
                client.run(importlib.import_module, "capflow_core.prepare")
            self.address[n] = cluster.scheduler_address
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()


def install_engine(config: Path, judge: Any | None, instant: Any | None) -> Any:
    """Make a CapFlow engine the flow's engine for ``config``; returns it.

    Args:
        config: the configuration's YAML.
        judge: a backend for the ``judge`` role instead of the configured one (or None).
        instant: a backend for every role (``--model instant``), or None.
    """
    from capflow_core.backends import backends_for
    from capflow_core.config import load_config
    from capflow_core.engine import CapFlow
    from tasks.caption import use_engine

    cfg = load_config(str(config))
    if instant is not None:
        backends = dict.fromkeys(("vlm", "llm", "judge"), instant)
    else:
        backends = backends_for(cfg)
        if judge is not None:
            backends["judge"] = judge
    engine = CapFlow(cfg, backends=backends)
    use_engine(cfg, engine)
    return engine


def endpoint_stats(engine: Any) -> dict[str, dict[str, int]]:
    """Requests served and failed attempts per endpoint URL across the engine's backends."""
    out: dict[str, dict[str, int]] = {}
    for backend in {id(b): b for b in engine.backends.values()}.values():
        if not hasattr(backend, "stats"):
            continue
        for url, s in backend.stats()["endpoints"].items():
            mine = out.setdefault(url, {"served": 0, "failures": 0})
            mine["served"] += s["served"]
            mine["failures"] += s["failures"]
    return out


def close_engine(engine: Any) -> None:
    """Close the engine's HTTP clients where they can still be closed.

    The caption task ran the engine in its own event loop, now closed; connections opened
    there cannot be closed from another loop and are released when collected instead.
    """
    import asyncio
    from contextlib import suppress

    with suppress(RuntimeError):  # "Event loop is closed"
        asyncio.run(engine.aclose())
