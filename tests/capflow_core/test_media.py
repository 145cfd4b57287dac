"""load_media: image modes, EXIF, bomb guard, reason codes, asset ids, fsspec URIs."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from capflow_core.config import load_config
from capflow_core.errors import ItemError
from capflow_core.media import load_media
from capflow_core.sample_media import make_corrupt_samples, write_video


@pytest.fixture(scope="module")
def cfg():
    return load_config(overrides={"video": {"sampler": "pyav", "num_frames": 4, "max_frames": 8}})


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _palette_with_transparency() -> Image.Image:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 4, 8, 8))  # bottom half blue, top half transparent red
    image.info["transparency"] = 0
    return image


def _bilevel() -> Image.Image:
    image = Image.new("1", (8, 8), 1)
    image.paste(0, (4, 4, 8, 8))
    return image


# (image, file format, expected RGB at the top-left pixel, expected RGB at the bottom-right)
MODE_CASES = {
    "1": (_bilevel(), "PNG", (255, 255, 255), (0, 0, 0)),
    "L": (Image.new("L", (8, 8), 100), "PNG", (100, 100, 100), (100, 100, 100)),
    "P+transparency": (_palette_with_transparency(), "PNG", (255, 255, 255), (0, 0, 255)),
    "LA": (Image.new("LA", (8, 8), (0, 0)), "PNG", (255, 255, 255), (255, 255, 255)),
    "RGBA": (Image.new("RGBA", (8, 8), (255, 0, 0, 128)), "PNG", (255, 127, 127), (255, 127, 127)),
    "CMYK": (Image.new("CMYK", (8, 8), (255, 0, 0, 0)), "TIFF", (0, 255, 255), (0, 255, 255)),
    "I;16": (Image.fromarray(np.full((8, 8), 257 * 100, np.uint16)), "PNG", (100,) * 3, (100,) * 3),
    "I": (Image.fromarray(np.full((8, 8), 65535, np.int32)), "TIFF", (255,) * 3, (255,) * 3),
    "F": (Image.fromarray(np.full((8, 8), 0.5, np.float32)), "TIFF", (128,) * 3, (128,) * 3),
}


@pytest.mark.parametrize("mode", list(MODE_CASES))
def test_every_mode_becomes_rgb(cfg, mode):
    image, fmt, top_left, bottom_right = MODE_CASES[mode]
    loaded = load_media(_encode(image, fmt), cfg)
    rgb = loaded.part.image
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == pytest.approx(top_left, abs=1)
    assert rgb.getpixel((7, 7)) == pytest.approx(bottom_right, abs=1)


def test_exif_orientation_is_applied(cfg):
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    image.paste((0, 0, 255), (100, 0, 200, 100))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    loaded = load_media(_encode(image, "PNG", exif=exif), cfg)
    upright = loaded.part.image
    assert (loaded.width, loaded.height) == upright.size == (100, 200)
    assert upright.getpixel((50, 10)) == (255, 0, 0)  # the left edge is now the top
    assert upright.getpixel((50, 190)) == (0, 0, 255)


def test_bomb_guard_checks_the_header_before_decoding(tmp_path):
    small = load_config(overrides={"image": {"max_pixels": 1000}})
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), "JPEG")
    with pytest.raises(ItemError) as err:
        load_media(data, small)
    assert (err.value.stage, err.value.code) == ("load", "too_large")
    assert "200x200 = 40000 pixels" in str(err.value)
    # A truncated file still reports too_large: nothing was decoded before the check.
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ItemError, match="too_large"):
        load_media(path, small)
    assert load_media(data, load_config()).width == 200


def test_corrupt_samples_get_their_reason_codes(cfg, tmp_path):
    for code, path in make_corrupt_samples(tmp_path).items():
        with pytest.raises(ItemError) as err:
            load_media(path, cfg)
        expected = "truncated" if code == "truncated_video" else code
        assert (err.value.stage, err.value.code) == ("load", expected), path
        assert path.name in str(err.value)


def test_other_failures_get_their_reason_codes(cfg, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("just some text, no pixels here\n")
    pdf = tmp_path / "paper.bin"
    pdf.write_bytes(b"%PDF-1.7\n" + b"0" * 100)
    png = bytearray(
        _encode(Image.fromarray(np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)), "PNG")
    )
    start = png.index(b"IDAT") + 20
    png[start : start + 40] = b"\x00" * 40  # damaged compressed data, file length intact
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(bytes(png))
    cases = {
        text: "unsupported_format",
        pdf: "unsupported_format",
        damaged: "corrupt",
        tmp_path / "missing.jpg": "not_found",
        tmp_path: "not_found",
        "nosuchprotocol://bucket/x.png": "not_found",
    }
    for source, code in cases.items():
        with pytest.raises(ItemError) as err:
            load_media(source, cfg)
        assert err.value.code == code, (source, str(err.value))


def test_modality_mismatch_is_rejected(cfg, tmp_path):
    png = _encode(Image.new("RGB", (16, 16)), "PNG")
    with pytest.raises(ItemError, match="expected video, but the bytes are a png image"):
        load_media(png, cfg, modality="video")
    assert load_media(png, cfg, modality="image").modality == "image"


def _clip(path: Path) -> Path:
    frames = (np.full((64, 96, 3), 8 * i, np.uint8) for i in range(10))
    return write_video(path, frames, fps=10)


def test_asset_id_is_the_sha256_of_the_bytes_whatever_the_source(cfg, tmp_path):
    import fsspec

    data = _encode(Image.new("RGB", (32, 24), (10, 200, 30)), "PNG")
    path = tmp_path / "green.png"
    path.write_bytes(data)
    fsspec.filesystem("memory").pipe("/capflow-test/green.bin", data)  # no extension needed
    sources = [path, str(path), path.as_uri(), data, "memory://capflow-test/green.bin"]
    loaded = [load_media(s, cfg) for s in sources]
    assert {m.asset_id for m in loaded} == {hashlib.sha256(data).hexdigest()}
    assert loaded[2].source_uri == path.as_uri()
    assert loaded[3].source_uri == "<bytes>"
    assert all(m.part.image.getpixel((0, 0)) == (10, 200, 30) for m in loaded)


def test_video_loads_from_a_path_bytes_and_a_remote_uri(cfg, tmp_path):
    import fsspec

    path = _clip(tmp_path / "clip.mp4")
    data = path.read_bytes()
    fsspec.filesystem("memory").pipe("/capflow-test/clip.mp4", data)
    for source in (path, data, "memory://capflow-test/clip.mp4"):
        loaded = load_media(source, cfg)
        assert loaded.modality == "video"
        assert loaded.asset_id == hashlib.sha256(data).hexdigest()
        assert (loaded.width, loaded.height, loaded.fps) == (96, 64, 10.0)
        assert loaded.duration_s == pytest.approx(1.0)
        assert loaded.part.frames.shape == (4, 64, 96, 3)
        assert loaded.part.fps == pytest.approx(4.0)  # 4 frames over 1 s
    with pytest.raises(ItemError, match="truncated"):
        load_media(data[: len(data) // 2], cfg)
