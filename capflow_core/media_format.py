"""Recognise media types from their leading bytes, and tell truncated files from corrupt ones.

File extensions are never trusted for the type; they only sharpen an error message (bytes
that match nothing in a file named ``.png`` are ``corrupt``, not ``unsupported_format``).
"""

from __future__ import annotations

import os
import struct
from pathlib import PurePosixPath

SNIFF_BYTES = 512

IMAGE_EXTENSIONS = frozenset(
    {"jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp", "avif", "heic", "heif", "jp2"}
)
VIDEO_EXTENSIONS = frozenset({"mp4", "m4v", "mov", "mkv", "webm", "avi", "ts", "flv", "mpg"})

_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")
_AVIF_BRANDS = (b"avif", b"avis")


def sniff(head: bytes) -> tuple[str, str] | None:
    """``(modality, format)`` from a file's first bytes, e.g. ``("image", "png")``, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image", "gif"
    if head.startswith(b"BM") and len(head) >= 14:
        return "image", "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image", "tiff"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xff\x4f\xff\x51"):
        return "image", "jpeg2000"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", "avi"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _AVIF_BRANDS:
            return "image", "avif"
        if brand in _HEIF_BRANDS:
            return "image", "heif"
        return "video", "mp4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "video", "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "matroska"
    if head.startswith(b"FLV\x01"):
        return "video", "flv"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "video", "mpeg"
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return "video", "mpegts"  # 188-byte transport packets, each starting with 0x47
    return None


def extension(name: str) -> str:
    """The lower-case extension of a path or URI (``""`` if none)."""
    return PurePosixPath(name.split("?", 1)[0]).suffix.lstrip(".").lower()


def image_truncated(data: bytes, fmt: str) -> bool:
    """Whether an image's bytes stop before its format's end marker (JPEG, PNG, GIF)."""
    tail = data[-64:]
    if fmt == "jpeg":
        return b"\xff\xd9" not in tail
    if fmt == "png":
        return b"IEND" not in tail
    if fmt == "gif":
        return not data.rstrip(b"\x00").endswith(b";")
    return False


def container_truncated(path: str | os.PathLike[str]) -> bool:
    """Whether an ISO-BMFF (MP4/MOV) file's top-level boxes run past its end or lack moov.

    Other containers return False: their damage is reported as corrupt or undecodable.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 8 or head[4:8] not in (b"ftyp", b"moov", b"mdat", b"wide", b"free"):
                return False
            offset, seen_moov = 0, False
            while offset + 8 <= size:
                f.seek(offset)
                box_size, box_type = struct.unpack(">I4s", f.read(8))
                if box_size == 1:
                    box_size = struct.unpack(">Q", f.read(8))[0]
                elif box_size == 0:
                    box_size = size - offset  # the box runs to the end of the file
                if box_size < 8:
                    return False  # not a box structure we understand: call it corrupt
                seen_moov |= box_type == b"moov"
                if offset + box_size > size:
                    return True
                offset += box_size
            return offset < size or not seen_moov
    except (OSError, struct.error):
        return False
