"""Benchmark inputs: small generated images of varied content (and a few short videos).

Each image is drawn from its index (a seeded mix of scenes, bar charts, text pages, UI
boxes and noise textures), so two runs write the same files. Videos are written only when
PyAV is installed and ``video_every`` asks for them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_WORDS = (
    "revenue", "quarter", "growth", "river", "mountain", "sensor", "network", "patient",
    "scan", "button", "menu", "login", "function", "return", "import", "window", "chart",
    "axis", "legend", "sample", "report", "cell", "tissue", "cloud",
)  # fmt: skip


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _scene(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    y = np.linspace(0.0, 1.0, h)[:, None, None]
    img = Image.fromarray(((1 - y) * top + y * bottom).repeat(w, axis=1).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        x1, y1 = x0 + int(rng.integers(8, w // 2)), y0 + int(rng.integers(8, h // 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    return img


def _chart(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    bars = int(rng.integers(4, 10))
    pad, step = w // 10, (w - 2 * (w // 10)) // bars
    draw.line((pad, h - pad, w - pad, h - pad), fill="black", width=2)
    draw.line((pad, pad, pad, h - pad), fill="black", width=2)
    for i, v in enumerate(rng.uniform(0.1, 1.0, bars)):
        x = pad + i * step + step // 4
        draw.rectangle(
            (x, h - pad - int(v * (h - 2 * pad)), x + step // 2, h - pad), fill="#4C72B0"
        )
    draw.text(
        (pad, pad // 3), rng.choice(_WORDS).title() + " by month", fill="black", font=_font(h // 16)
    )
    return img


def _page(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    img = Image.new("RGB", (w, h), (250, 248, 240))
    draw = ImageDraw.Draw(img)
    size = max(h // 24, 8)
    for line in range(1, h // (size + 4)):
        words = " ".join(rng.choice(_WORDS, int(rng.integers(3, 9))))
        draw.text((w // 16, line * (size + 4)), words, fill=(20, 20, 20), font=_font(size))
    return img


def _ui(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    img = Image.new("RGB", (w, h), (236, 239, 244))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, w, h // 10), fill=(40, 60, 110))
    for i in range(int(rng.integers(2, 6))):
        y = h // 6 + i * h // 7
        draw.rounded_rectangle(
            (w // 8, y, w - w // 8, y + h // 10), radius=6, fill="white", outline=(150, 160, 180)
        )
        draw.text((w // 8 + 6, y + 4), rng.choice(_WORDS), fill=(30, 30, 30), font=_font(h // 20))
    return img


def _texture(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    base = rng.integers(0, 256, 3)
    noise = rng.normal(0, 40, (h // 4 + 1, w // 4 + 1, 3))
    small = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    return small.resize((w, h), Image.Resampling.BICUBIC)


KINDS: tuple[Callable[[np.random.Generator, int, int], Image.Image], ...] = (
    _scene,
    _chart,
    _page,
    _ui,
    _texture,
)


def _frames(rng: np.random.Generator, n: int, w: int, h: int) -> list[np.ndarray]:
    color = rng.integers(0, 256, 3)
    out = []
    for i in range(n):
        img = Image.new("RGB", (w, h), tuple(int(c) for c in color))
        x = int(i / max(n - 1, 1) * (w - h // 3))
        ImageDraw.Draw(img).ellipse((x, h // 3, x + h // 3, 2 * h // 3), fill=(240, 200, 40))
        out.append(np.asarray(img))
    return out


def write_inputs(out_dir: Path, n: int, size: tuple[int, int], video_every: int = 0) -> list[Path]:
    """Write ``n`` media files into ``out_dir`` and return them in order.

    Args:
        out_dir: an existing folder.
        n: how many files.
        size: ``(width, height)`` of every image.
        video_every: every k-th file is a 1 s, 8 fps clip at ``size``/2 (0: none; skipped
            when PyAV is missing).
    """
    has_av = importlib.util.find_spec("av") is not None
    paths = []
    for i in range(n):
        rng = np.random.default_rng(1000 + i)
        w, h = size
        if video_every and has_av and i % video_every == video_every - 1:
            from capflow_core.sample_media import write_video

            frames = _frames(rng, 8, w // 4 * 2, h // 4 * 2)  # half size, even sides
            paths.append(write_video(out_dir / f"clip_{i:04d}.mp4", frames, 8))
            continue
        kind = KINDS[i % len(KINDS)]
        image = kind(rng, w, h)
        if kind is _texture or kind is _scene:
            path = out_dir / f"img_{i:04d}.jpg"
            image.save(path, format="JPEG", quality=90)
        else:
            path = out_dir / f"img_{i:04d}.png"
            image.save(path, format="PNG")
        paths.append(path)
    return paths
