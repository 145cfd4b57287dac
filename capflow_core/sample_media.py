"""A small, deterministic sample source: one image per common domain and two short videos.

Every image is drawn with PIL (the chart with matplotlib) from fixed content and seeds, with
the fonts bundled in matplotlib, so two runs write byte-identical image files. Images pass
the paper's filters (short edge > 512 px, aspect ratio < 2); videos are above 480p.
"""

from __future__ import annotations

import importlib.util
import io
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from capflow_core import sample_drawings as drawings


def font(size: int, name: str = "DejaVuSans.ttf") -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A TrueType font of ``size`` px: matplotlib's bundled DejaVu, else Pillow's default."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf" / name
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def write_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    crf: int = 23,
    options: dict[str, str] | None = None,
) -> Path:
    """Write RGB ``uint8`` frames (H, W, 3; even sides) as an H.264 MP4 with PyAV.

    Args:
        path: the output file.
        frames: a sequence or generator of frames, all of one size.
        fps: the frame rate of the file.
        crf: x264 constant rate factor.
        options: more encoder options, e.g. ``{"g": "12"}`` for a keyframe every 12 frames.

    Returns:
        The path written.
    """
    import av

    out = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(out), mode="w") as container:
        stream = None
        for i, frame in enumerate(frames):
            if stream is None:
                stream = container.add_stream("libx264", rate=rate)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": "veryfast", **(options or {})}
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = i
            vf.time_base = 1 / rate
            container.mux(stream.encode(vf))
        if stream is None:
            raise ValueError("write_video needs at least one frame")
        container.mux(stream.encode(None))
    return out


def _save_png(image: Image.Image, path: Path) -> Path:
    image.save(path, format="PNG", optimize=False)
    return path


def _chart(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug"]
    revenue = [12.4, 14.1, 13.2, 16.8, 18.3, 17.9, 21.2, 23.5]
    costs = [9.8, 10.2, 10.9, 11.4, 12.8, 12.5, 13.9, 14.6]
    fig = Figure(figsize=(10.24, 7.68), dpi=100)
    ax = fig.subplots()
    ax.bar(months, revenue, color="#4C72B0", label="Revenue (M$)")
    ax.plot(months, costs, color="#DD8452", marker="o", linewidth=2.5, label="Costs (M$)")
    for x, y in zip(months, revenue, strict=True):
        ax.annotate(f"{y:.1f}", (x, y), ha="center", va="bottom", fontsize=10)
    ax.set_title("Monthly revenue and operating costs, 2025", fontsize=16)
    ax.set_xlabel("Month")
    ax.set_ylabel("Million USD")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    buf.seek(0)
    with Image.open(buf) as im:  # re-saved with PIL: no matplotlib metadata in the file
        return _save_png(im.convert("RGB"), path)


def _photo(path: Path) -> Path:
    w, h = 1024, 683
    rng = np.random.default_rng(7)
    y = np.linspace(0.0, 1.0, h)[:, None, None]
    sky = (1 - y) * np.array([70, 130, 210]) + y * np.array([250, 200, 160])
    img = np.broadcast_to(sky, (h, w, 3)).copy()
    xs = np.arange(w)
    for base, amp, freq, phase, color in (
        (430, 60, 0.006, 0.5, (80, 120, 80)),
        (500, 45, 0.011, 2.0, (55, 95, 50)),
        (580, 30, 0.017, 4.0, (40, 70, 35)),
    ):
        ridge = base + amp * np.sin(xs * freq + phase) + 12 * np.sin(xs * freq * 5.3)
        mask = np.arange(h)[:, None] > ridge[None, :]
        img[mask] = color
    yy, xx = np.mgrid[0:h, 0:w]
    dist = np.hypot(xx - 760, yy - 170)
    glow = np.clip(1 - dist / 140, 0, 1)[..., None]
    img = img * (1 - glow) + np.array([255, 236, 170]) * glow
    img[dist < 48] = (255, 248, 220)
    img += rng.normal(0, 6, img.shape)
    image = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.SMOOTH)
    image.save(path, format="JPEG", quality=90)
    return path


def _frame(i: int, n: int, width: int, height: int) -> np.ndarray:
    t = i / max(n - 1, 1)
    image = Image.new("RGB", (width, height), (int(30 + 60 * t), 40, int(90 - 40 * t)))
    draw = ImageDraw.Draw(image)
    s = height // 8
    cx, cy = int(s + t * (width - 2 * s)), int(height / 2 + height / 4 * np.sin(6.28 * t))
    draw.ellipse((cx - s, cy - s, cx + s, cy + s), fill=(240, 200, 40))
    rx = int(width - s - t * (width - 3 * s))
    draw.rectangle((rx - s, s, rx + s // 2, 2 * s), fill=(60, 200, 220))
    draw.text((20, height - 60), f"frame {i:03d}", fill=(255, 255, 255), font=font(36))
    return np.asarray(image)


def _video(path: Path, width: int, height: int, fps: float, seconds: float, gop: int = 250) -> Path:
    n = round(fps * seconds)
    frames = (_frame(i, n, width, height) for i in range(n))
    return write_video(path, frames, fps, options={"g": str(gop)})


def generate_samples(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the sample set into ``out_dir`` (created if missing).

    Returns:
        The files: ``chart.png``, ``document.png``, ``screenshot.png``, ``code.png``,
        ``photo.jpg``, ``diagram.png``, ``clip_720p.mp4`` (1280x720, 25 fps, 2 s, a keyframe
        each second) and ``clip_540p.mp4`` (960x540, 30 fps, 1 s).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [
        _chart(out / "chart.png"),
        _save_png(drawings.document(font), out / "document.png"),
        _save_png(drawings.screenshot(font), out / "screenshot.png"),
        _save_png(drawings.code_editor(font), out / "code.png"),
        _photo(out / "photo.jpg"),
        _save_png(drawings.diagram(font), out / "diagram.png"),
        _video(out / "clip_720p.mp4", 1280, 720, 25, 2.0, gop=25),
        _video(out / "clip_540p.mp4", 960, 540, 30, 1.0),
    ]


def make_corrupt_samples(out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write broken inputs for failure-isolation tests, keyed by the load error they cause.

    Returns:
        ``{"truncated": truncated.jpg, "corrupt": random_bytes.png, "empty": empty.jpg,
        "truncated_video": truncated.mp4}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(_frame(0, 1, 640, 480)).save(buf, format="JPEG", quality=90)
    jpeg = out / "truncated.jpg"
    jpeg.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    junk = out / "random_bytes.png"
    junk.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    empty = out / "empty.jpg"
    empty.write_bytes(b"")
    full = _video(out / "_full.mp4", 640, 480, 25, 1.0)
    video = out / "truncated.mp4"
    video.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    return {"truncated": jpeg, "corrupt": junk, "empty": empty, "truncated_video": video}
