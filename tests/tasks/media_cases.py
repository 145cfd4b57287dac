"""Real media for preprocessing tests: good, filtered, broken and duplicate inputs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from capflow_core.sample_media import make_corrupt_samples, write_video


def scene(seed: int, width: int, height: int) -> Image.Image:
    """A picture of random shapes: distinct seeds give distinct perceptual hashes."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(min(width, height) // 10, min(width, height) // 3))
        fill = tuple(int(v) for v in rng.integers(0, 255, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x - r, y - r, x + r, y + r), fill=fill)
    return image


def huge_png(path: Path) -> Path:
    """A tiny PNG whose header declares 100000 x 100000 pixels."""
    data = bytearray(_png_bytes(Image.new("RGB", (8, 8))))
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of header
    ihdr[4:12] = struct.pack(">II", 100_000, 100_000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))
    return path


def _png_bytes(image: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def audio_only_mp4(path: Path) -> Path:
    """An MP4 with one AAC audio stream and no video stream."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _video(path: Path, width: int, height: int) -> Path:
    frames = (np.asarray(scene(i, width, height)) for i in range(6))
    return write_video(path, frames, 6)


def write_cases(folder: Path) -> dict[str, str | None]:
    """Write the case set into ``folder``; file name -> expected reason code (None: kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    a = scene(1, 1200, 800)
    a.save(folder / "a.jpg", quality=92)
    scene(2, 800, 800).save(folder / "b.png")
    scene(3, 700, 600).convert("CMYK").save(folder / "cmyk.jpg")
    grey = np.asarray(scene(4, 640, 600).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey).save(folder / "grey16.png")
    _video(folder / "clip.mp4", 640, 480)
    (folder / "z_copy_of_a.jpg").write_bytes((folder / "a.jpg").read_bytes())
    a.resize((960, 640), Image.Resampling.LANCZOS).save(folder / "near_a.jpg", quality=80)
    scene(5, 400, 300).save(folder / "small.png")
    scene(6, 1600, 600).save(folder / "wide.png")
    huge_png(folder / "huge.png")
    (folder / "noise.jpg").write_bytes(np.random.default_rng(9).bytes(5000))
    audio_only_mp4(folder / "audio_only.mp4")
    (folder / "text.mp4").write_text("not a video")
    _video(folder / "lowres.mp4", 320, 240)
    broken = make_corrupt_samples(folder / "broken")
    return {
        **dict.fromkeys(["a.jpg", "b.png", "cmyk.jpg", "grey16.png", "clip.mp4"]),
        "z_copy_of_a.jpg": "duplicate",
        "near_a.jpg": "near_duplicate",
        "small.png": "too_small",
        "wide.png": "aspect_ratio",
        "huge.png": "decompression_bomb",
        "noise.jpg": "corrupt",
        "audio_only.mp4": "no_video_stream",
        "text.mp4": "corrupt",
        "lowres.mp4": "low_resolution",
        f"broken/{broken['truncated'].name}": "truncated",
        f"broken/{broken['corrupt'].name}": "corrupt",
        f"broken/{broken['empty'].name}": "corrupt",
        f"broken/{broken['truncated_video'].name}": "truncated",
    }
