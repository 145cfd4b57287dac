"""Decode image bytes safely into an upright RGB picture.

Order matters: the pixel count is checked from the header before any pixel is decoded (the
decompression-bomb guard), then the whole image is decoded (so truncation surfaces here, not
later in a backend), then EXIF orientation is applied, then the mode becomes RGB.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from capflow_core.errors import ItemError
from capflow_core.media_format import image_truncated

log = logging.getLogger(__name__)

_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def decode_image(data: bytes, uri: str, fmt: str, max_pixels: int) -> Image.Image:
    """Decode ``data`` (sniffed as ``fmt``) to an RGB image.

    Raises:
        ItemError: stage ``load``: ``too_large`` (more than ``max_pixels``), ``truncated``,
            ``corrupt`` or ``unsupported_format``.
    """
    if fmt == "heif" or (fmt == "avif" and not features.check("avif")):
        raise ItemError(
            "load",
            "unsupported_format",
            f"{uri}: {fmt.upper()} images are not supported by this Pillow build",
        )
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise ItemError(
                "load",
                "too_large",
                f"{uri}: {width}x{height} = {width * height} "
                f"pixels exceeds image.max_pixels={max_pixels}",
            )
        image.load()
    except ItemError:
        raise
    except Image.DecompressionBombError as err:
        raise ItemError("load", "too_large", f"{uri}: {err}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        truncated = "truncat" in str(err).lower() or image_truncated(data, fmt)
        code = "truncated" if truncated else "corrupt"
        raise ItemError("load", code, f"{uri}: {fmt} does not decode ({err})") from None
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as err:  # a damaged EXIF block must not cost the image
        log.debug("ignoring unreadable EXIF orientation in %s: %s", uri, err)
    try:
        return to_rgb(image)
    except (ValueError, OSError) as err:
        raise ItemError(
            "load", "unsupported_format", f"{uri}: mode {image.mode} has no RGB conversion ({err})"
        ) from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Transparent images (alpha channels, palette or colour-key transparency) are composited on
    white; 16-bit and 32-bit greyscale is scaled to 8 bits, not clipped; CMYK, palette,
    bilevel and greyscale use Pillow's conversions.
    """
    if image.mode in _HIGH_BIT_MODES:  # colour-key transparency on these is ignored
        return Image.fromarray(_to_uint8(np.asarray(image), image.mode), "L").convert("RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    values = arr.astype(np.float64)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and 255 < hi <= 65535):
        values = values / 257.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        values = values * 255.0
    elif lo < 0 or hi > 255:  # an unknown range: stretch what is there
        values = (values - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
