"""Deterministic, photo-like inputs for the preprocessing benchmark: JPEGs and H.264 videos."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

SIZES = {"1080p": (1920, 1080), "12mp": (4000, 3000)}


def _canvas(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth gradients, soft shapes and sensor-like grain: compresses like a photo."""
    from PIL import Image, ImageDraw, ImageFilter

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.empty((height, width, 3), np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.3)
        base[..., c] = 128 + 90 * np.sin(fx * x / width * 6.3 + fy * y / height * 6.3 + ph)
    image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(24):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = (
            int(rng.integers(width // 20, width // 4)),
            int(rng.integers(height // 20, height // 4)),
        )
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x0 + w, y0 + h), fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(2))
    out = np.asarray(image, dtype=np.int16)
    grain = rng.normal(0, 6, (height, width, 1)).astype(np.int16)  # luma-like grain
    return (out + grain).clip(0, 255).astype(np.uint8)


def write_images(folder: Path, counts: dict[str, int], seed: int = 0) -> list[Path]:
    """``counts[size]`` JPEGs (quality 90) per size in :data:`SIZES`, interleaved by size."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for size, n in counts.items():
        width, height = SIZES[size]
        for i in range(n):
            path = folder / f"{size}_{i:03d}.jpg"
            Image.fromarray(_canvas(rng, width, height)).save(path, format="JPEG", quality=90)
            paths.append(path)
    return sorted(paths, key=lambda p: (p.stem.split("_")[1], p.stem))


def _frames(seconds: float, fps: int, seed: int) -> Iterator[np.ndarray]:
    """A slow camera pan over a textured scene with a moving object and fresh grain."""
    rng = np.random.default_rng(seed)
    scene = _canvas(rng, 2400, 1300)
    grain = [rng.normal(0, 3, (1080, 1920, 1)).astype(np.int16) for _ in range(4)]
    n = round(seconds * fps)
    for i in range(n):
        ox, oy = int(i * 400 / n), int(100 + 80 * np.sin(i / fps))
        frame = scene[oy : oy + 1080, ox : ox + 1920].astype(np.int16)
        cx = 200 + int(i * 1400 / n)
        frame[500:700, cx : cx + 200] = (230, 60, 40)
        yield (frame + grain[i % 4]).clip(0, 255).astype(np.uint8)


def write_videos(
    folder: Path, gops_s: list[float], seconds: float = 10.0, fps: int = 30
) -> dict[float, Path]:
    """One 1080p H.264 MP4 per keyframe interval (seconds), fixed GOP, no scene-cut keys."""
    from capflow_core.sample_media import write_video

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[float, Path] = {}
    for gop in gops_s:
        keyint = max(1, round(gop * fps))
        params = f"keyint={keyint}:min-keyint={keyint}:scenecut=0"
        path = folder / f"video_gop{gop:g}s.mp4"
        write_video(path, _frames(seconds, fps, seed=7), fps, options={"x264-params": params})
        out[gop] = path
    return out


def keyframes(path: Path) -> int:
    """How many keyframe packets the file's video stream has."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size and p.is_keyframe)
