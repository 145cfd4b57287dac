"""Load one image or video from a path, an fsspec URI or bytes, into a backend media part.

The type comes from the bytes, never the extension. Every problem with the input is an
:class:`~capflow_core.errors.ItemError` with stage ``load`` and one of the codes
``not_found``, ``empty``, ``unsupported_format``, ``corrupt``, ``truncated``, ``too_large``,
``decode_error``, ``file_too_large`` (over ``image.max_bytes`` / ``video.max_bytes``, found
from the size before the bytes are read), ``too_long`` and ``frame_too_large`` (videos, see
:func:`~capflow_core.video.check_video_bounds`); the caller records it and moves on.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from capflow_core.errors import ConfigError, ItemError
from capflow_core.media_format import (
    IMAGE_EXTENSIONS,
    SNIFF_BYTES,
    VIDEO_EXTENSIONS,
    extension,
    sniff,
)

if TYPE_CHECKING:
    from capflow_core.backends.base import ImagePart, VideoPart
    from capflow_core.config import Config

_CHUNK = 1 << 20


@dataclass
class LoadedMedia:
    """A decoded sample. ``width``/``height`` are the source's (after EXIF rotation)."""

    asset_id: str  # sha256 hex of the media bytes
    source_uri: str
    modality: str  # "image" | "video"
    part: ImagePart | VideoPart
    width: int
    height: int
    duration_s: float | None = None
    fps: float | None = None  # the source's frame rate (the part's fps is the sampling rate)


def load_media(
    source: str | os.PathLike[str] | bytes,
    cfg: Config,
    *,
    modality: str | None = None,
) -> LoadedMedia:
    """Read, identify and decode one media item.

    Args:
        source: a local path, any fsspec URI (``s3://``, ``memory://``, ``file://``, ...) or
            the media bytes themselves.
        cfg: the config (``image.max_pixels``, ``video.*``).
        modality: ``"image"`` or ``"video"`` when the caller knows it; bytes of the other
            kind are then rejected as ``unsupported_format``.

    Returns:
        The LoadedMedia, an ImagePart (RGB) or a VideoPart (sampled frames) inside.

    Raises:
        ItemError: stage ``load``, see the module docstring for the codes.
        ConfigError: the URI's fsspec filesystem is not installed (e.g. s3fs).

    Other errors of a remote filesystem (timeouts, 5xx) propagate: they are infrastructure
    errors for the caller to retry, not properties of the item.
    """
    if modality not in (None, "image", "video"):
        raise ValueError(f"modality must be 'image', 'video' or None, got {modality!r}")
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        kind = _identify(data[:SNIFF_BYTES], len(data), "<bytes>", modality)
        check_size(len(data), kind[0], cfg, "<bytes>")
        if kind[0] == "image":
            return _load_image(data, "<bytes>", kind[1], cfg)
        with tempfile.TemporaryDirectory(prefix="capflow-video-") as tmp:
            path = Path(tmp) / "video"
            path.write_bytes(data)
            return _load_video(path, hashlib.sha256(data).hexdigest(), "<bytes>", cfg)

    uri = os.fspath(source)
    fs, path = _filesystem(uri)
    try:
        info = fs.info(path)
        if info.get("type") == "directory":
            raise ItemError("load", "not_found", f"{uri}: is a directory, not a file")
        with fs.open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        raise ItemError("load", "not_found", f"{uri}: no such file") from None
    except PermissionError:
        raise ItemError("load", "not_found", f"{uri}: permission denied") from None
    kind = _identify(head, len(head), uri, modality)
    check_size(info.get("size"), kind[0], cfg, uri)
    if kind[0] == "image":
        return _load_image(fs.cat_file(path), uri, kind[1], cfg)
    if _is_local(fs):
        return _load_video(Path(path), _sha256_file(fs, path), uri, cfg)
    with tempfile.TemporaryDirectory(prefix="capflow-video-") as tmp:
        local = Path(tmp) / "video"
        digest = _sha256_file(fs, path, copy_to=local)  # spooled to disk, never held in memory
        return _load_video(local, digest, uri, cfg)


def check_size(size: int | None, modality: str, cfg: Config, uri: str) -> None:
    """Reject a file over its modality's byte limit before its bytes are read.

    Raises:
        ItemError: stage ``load``, code ``file_too_large``.
    """
    limit, key = (
        (cfg.image.max_bytes, "image.max_bytes")
        if modality == "image"
        else (cfg.video.max_bytes, "video.max_bytes")
    )
    if size is not None and size > limit:
        raise ItemError(
            "load", "file_too_large", f"{uri}: {size} bytes exceeds {key}={limit} ({modality})"
        )


def _filesystem(uri: str) -> tuple[Any, str]:
    import fsspec

    try:
        return fsspec.core.url_to_fs(uri)
    except ImportError as err:  # e.g. s3fs missing: every item of this source would fail
        raise ConfigError(f"{uri}: the filesystem for this URI is not installed ({err})") from None
    except ValueError as err:
        raise ItemError("load", "not_found", f"{uri}: cannot open this URI ({err})") from None


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _sha256_file(fs: Any, path: str, copy_to: Path | None = None) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as src, open(copy_to or os.devnull, "wb") as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            if copy_to is not None:
                dst.write(chunk)
    return digest.hexdigest()


def _identify(head: bytes, size: int, uri: str, modality: str | None) -> tuple[str, str]:
    if size == 0:
        raise ItemError("load", "empty", f"{uri}: the file is empty (0 bytes)")
    kind = sniff(head)
    if kind is None:
        ext = extension(uri)
        if ext in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS:
            raise ItemError("load", "corrupt", f"{uri}: named .{ext} but the bytes are not {ext}")
        raise ItemError(
            "load",
            "unsupported_format",
            f"{uri}: not a recognised image or video (starts with {head[:8].hex()})",
        )
    if modality is not None and kind[0] != modality:
        raise ItemError(
            "load",
            "unsupported_format",
            f"{uri}: expected {modality}, but the bytes are a {kind[1]} {kind[0]}",
        )
    return kind


def _load_image(data: bytes, uri: str, fmt: str, cfg: Config) -> LoadedMedia:
    from capflow_core.backends.base import ImagePart
    from capflow_core.image_decode import decode_image

    image = decode_image(data, uri, fmt, cfg.image.max_pixels)
    return LoadedMedia(
        asset_id=hashlib.sha256(data).hexdigest(),
        source_uri=uri,
        modality="image",
        part=ImagePart(image),
        width=image.width,
        height=image.height,
    )


def _load_video(path: Path, asset_id: str, uri: str, cfg: Config) -> LoadedMedia:
    from capflow_core.video import probe, sample_frames

    try:
        info = probe(path)
        part = sample_frames(path, cfg, info)
    except ItemError as err:
        message = str(err).split(": ", 1)[1].replace(str(path), uri)
        raise ItemError("load", err.code, message) from None
    return LoadedMedia(
        asset_id=asset_id,
        source_uri=uri,
        modality="video",
        part=part,
        width=info.width,
        height=info.height,
        duration_s=info.duration_s,
        fps=info.fps,
    )
