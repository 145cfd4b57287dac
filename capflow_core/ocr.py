"""Tesseract OCR for the OCR tool agent: availability check, one start-up warning, async run.

A missing Tesseract is a warning at start-up (:func:`warn_if_missing`), never a crash in
the middle of a run: callers check :func:`tesseract_available` and run the OCR agent
without grounding when it is False.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
from typing import TYPE_CHECKING

from capflow_core.errors import ItemError

if TYPE_CHECKING:
    from PIL import Image

    from capflow_core.config import OCRConfig

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with `apt-get install tesseract-ocr` (or your OS's tesseract package)"
_warned = False


def _tesseract_cmd() -> str:
    import pytesseract

    return pytesseract.pytesseract.tesseract_cmd


@functools.cache
def tesseract_available() -> bool:
    """Whether the Tesseract binary is on PATH and runs (checked once per process)."""
    if shutil.which(_tesseract_cmd()) is None:
        return False
    import pytesseract

    try:
        pytesseract.get_tesseract_version()
    except (pytesseract.TesseractNotFoundError, OSError, RuntimeError):
        return False
    return True


def warn_if_missing() -> bool:
    """Log one warning per process when Tesseract is missing; returns availability."""
    global _warned
    available = tesseract_available()
    if not available and not _warned:
        _warned = True
        log.warning(
            "Tesseract OCR not found (%r): OCR agents run without OCR grounding; %s",
            _tesseract_cmd(),
            INSTALL_HINT,
        )
    return available


def _ocr_sync(image: Image.Image, cfg: OCRConfig) -> str:
    import pytesseract

    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    try:
        return pytesseract.image_to_string(image, lang=cfg.lang, timeout=cfg.timeout_s)
    except pytesseract.TesseractNotFoundError:
        raise ItemError(
            "agents", "ocr_failed", f"tesseract is not installed; {INSTALL_HINT}"
        ) from None
    except pytesseract.TesseractError as err:
        missing_lang = "language" in str(err).lower()
        hint = f" (is tesseract-ocr-{cfg.lang} installed?)" if missing_lang else ""
        raise ItemError("agents", "ocr_failed", f"tesseract failed: {err.message}{hint}") from None
    except RuntimeError as err:  # pytesseract's timeout kills tesseract and raises this
        raise ItemError(
            "agents", "ocr_failed", f"tesseract timed out after {cfg.timeout_s:g}s ({err})"
        ) from None


async def run_ocr(image: Image.Image, cfg: OCRConfig) -> str:
    """Read the text in ``image`` with Tesseract, in a worker thread.

    Args:
        image: any PIL image (converted to RGB if needed).
        cfg: language, timeout and output cap.

    Returns:
        The recognised text, stripped and clipped to ``cfg.max_chars`` characters.

    Raises:
        ItemError: stage ``agents``, code ``ocr_failed`` (missing binary or language data,
            a Tesseract error, or the timeout).
    """
    # Tesseract's OpenMP threads fight each other (and concurrent calls) for cores: one
    # thread per process was 2-5x faster here. An explicit user setting wins.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    text = await asyncio.to_thread(_ocr_sync, image, cfg)
    return text.strip()[: cfg.max_chars].rstrip()
