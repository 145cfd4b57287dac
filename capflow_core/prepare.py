"""Prepare one manifest row: read, identify, filter, hash, resize and re-encode.

Pure per-item functions (no executor): :func:`prepare_item` turns every manifest row into
exactly one :class:`PreparedItem` or :class:`Rejection` with a reason code from the issue's
vocabulary (``corrupt``, ``truncated``, ``unsupported_format``, ``decompression_bomb``,
``no_video_stream``, ``too_small``, ``aspect_ratio``, ``low_resolution``, ``read_error``;
``duplicate`` / ``near_duplicate`` come later from :mod:`capflow_core.dedup`). Only
infrastructure errors (see :mod:`capflow_core.object_read`) raise.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from capflow_core.errors import ItemError
from capflow_core.media_format import SNIFF_BYTES, sniff
from capflow_core.object_read import fetch_object

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image

    from capflow_core.config import Config

_CODES = {  # media.py / video.py ItemError codes -> rejection reason codes
    "too_large": "decompression_bomb",
    "decode_error": "corrupt",
    "empty": "corrupt",
    "not_found": "read_error",
}


@dataclass
class PreparedItem:
    """One item ready for captioning (a row of a prepared shard).

    ``image`` holds the re-encoded JPEG of an image; ``frames`` the sampled JPEG frames of a
    video. ``width``/``height`` are the source's (after EXIF rotation).
    """

    asset_id: str
    source_uri: str
    modality: str
    width: int
    height: int
    duration_s: float | None = None
    fps: float | None = None
    phash: str | None = None
    image: bytes | None = None
    frames: list[bytes] = field(default_factory=list)
    domain: str | None = None
    license: str | None = None
    provenance: str | None = None
    size: int | None = None


@dataclass
class Rejection:
    """One item that will not be captioned, and why (``asset_id`` when it was read)."""

    source_uri: str
    reason_code: str
    detail: str
    asset_id: str | None = None
    stage: str = "preprocess"


def prepare_batch(entries: list[dict[str, Any]], cfg: Config) -> list[PreparedItem | Rejection]:
    """:func:`prepare_item` over a batch, in order (the unit of work of one executor task).

    The batch shares one spool folder (creating and removing a folder per item cost more
    than preparing a small image).
    """
    with tempfile.TemporaryDirectory(prefix="capflow-prep-") as spool:
        return [prepare_item(e, cfg, spool) for e in entries]


def prepare_item(
    entry: dict[str, Any], cfg: Config, spool: str | None = None
) -> PreparedItem | Rejection:
    """Prepare one manifest row (``source_uri``, ``domain``, ``license``, ``provenance``, ...).

    ``spool`` is an empty folder for a remote object's local copy, emptied again before
    returning (default: a temporary folder of its own).

    Raises:
        InfrastructureError: reading failed transiently more times than allowed.
    """
    if spool is None:
        with tempfile.TemporaryDirectory(prefix="capflow-prep-") as own:
            return prepare_item(entry, cfg, own)
    uri = entry["source_uri"]
    asset_id: str | None = None
    try:
        path, asset_id = fetch_object(uri, cfg.s3, spool, attempts=cfg.preprocess.read_attempts)
        with open(path, "rb") as f:
            kind = sniff(f.read(SNIFF_BYTES))
        if kind is not None and kind[0] == "video":
            item = _prepare_video(path, uri, cfg)
        else:
            item = _prepare_image(path, uri, cfg)
    except ItemError as err:
        code = _reason(err)
        return Rejection(uri, code, _message(err).replace(spool + "/", ""), asset_id)
    finally:
        _empty(spool)
    item.asset_id = asset_id
    item.domain, item.license = entry.get("domain"), entry.get("license")
    item.provenance, item.size = entry.get("provenance"), entry.get("size")
    return item


def _empty(folder: str) -> None:
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _message(err: ItemError) -> str:
    return str(err)[len(err.code) + 2 :]


def _relabel(err: ItemError, path: Path, uri: str) -> ItemError:
    return ItemError(err.stage, err.code, _message(err).replace(str(path), uri))


def _reason(err: ItemError) -> str:
    if err.code == "unsupported_format" and "no video stream" in str(err):
        return "no_video_stream"
    return _CODES.get(err.code, err.code)


def _shape_filter(width: int, height: int, cfg: Config, uri: str) -> None:
    pre = cfg.preprocess
    short, long = min(width, height), max(width, height)
    if short < pre.min_short_edge:
        raise ItemError(
            "filter", "too_small", f"{uri}: short edge {short}px < {pre.min_short_edge}px"
        )
    if long / short > pre.max_aspect_ratio:
        raise ItemError(
            "filter",
            "aspect_ratio",
            f"{uri}: aspect ratio {long / short:.2f} > {pre.max_aspect_ratio:g}",
        )


def _prepare_image(path: Path, uri: str, cfg: Config) -> PreparedItem:
    import imagehash

    from capflow_core.media import load_media

    try:
        loaded = load_media(path, cfg, modality="image")
    except ItemError as err:
        raise _relabel(err, path, uri) from None
    _shape_filter(loaded.width, loaded.height, cfg, uri)
    # hash the fitted copy: phash shrinks to 32x32 anyway, and on a 12 MP original the
    # grey conversion and shrink cost as much as the whole resize
    fitted = _fit(loaded.part.image, cfg.preprocess.max_pixels)
    return PreparedItem(
        asset_id="",
        source_uri=uri,
        modality="image",
        width=loaded.width,
        height=loaded.height,
        phash=str(imagehash.phash(fitted)),
        image=_jpeg(fitted, cfg.preprocess.jpeg_quality),
    )


def _prepare_video(path: Path, uri: str, cfg: Config) -> PreparedItem:
    from PIL import Image

    from capflow_core.video import probe, sample_frames

    try:
        info = probe(path)
        if min(info.width, info.height) < cfg.preprocess.min_video_height:
            raise ItemError(
                "filter",
                "low_resolution",
                f"{uri}: {info.width}x{info.height} is below {cfg.preprocess.min_video_height}p",
            )
        part = sample_frames(path, cfg, info)
    except ItemError as err:
        raise _relabel(err, path, uri) from None
    quality = cfg.preprocess.jpeg_quality
    return PreparedItem(
        asset_id="",
        source_uri=uri,
        modality="video",
        width=info.width,
        height=info.height,
        duration_s=info.duration_s,
        fps=info.fps,
        frames=[_jpeg(Image.fromarray(f), quality) for f in part.frames],
    )


def _fit(image: Image.Image, max_pixels: int) -> Image.Image:
    """Shrink (never enlarge) to at most ``max_pixels``, keeping the aspect ratio."""
    from PIL import Image

    w, h = image.size
    if w * h <= max_pixels:
        return image
    scale = (max_pixels / (w * h)) ** 0.5
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
