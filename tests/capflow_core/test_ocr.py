"""Tesseract OCR: exact read-back, clipping, errors, and the once-per-process warning."""

from __future__ import annotations

import asyncio
import logging

import pytest
from PIL import Image, ImageDraw

from capflow_core import ocr
from capflow_core.config import OCRConfig
from capflow_core.errors import ItemError
from capflow_core.sample_media import font

LINE = "The quick brown fox jumps over 13 lazy dogs."

needs_tesseract = pytest.mark.skipif(
    not ocr.tesseract_available(), reason="tesseract missing: apt-get install tesseract-ocr"
)


def _rendered(text: str) -> Image.Image:
    image = Image.new("RGB", (900, 120), "white")
    ImageDraw.Draw(image).text((20, 35), text, fill="black", font=font(36))
    return image


@pytest.fixture
def no_tesseract(monkeypatch, tmp_path):
    """Hide the binary: an empty PATH, a fresh availability cache, no warning issued yet."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(ocr, "_warned", False)
    ocr.tesseract_available.cache_clear()
    yield
    ocr.tesseract_available.cache_clear()


@needs_tesseract
def test_a_rendered_line_reads_back_exactly():
    assert asyncio.run(ocr.run_ocr(_rendered(LINE), OCRConfig())) == LINE


@needs_tesseract
def test_output_is_clipped_and_other_modes_are_accepted():
    rgba = _rendered(LINE).convert("RGBA")
    assert asyncio.run(ocr.run_ocr(rgba, OCRConfig(max_chars=9))) == "The quick"


@needs_tesseract
def test_timeout_and_bad_language_are_ocr_failed():
    with pytest.raises(ItemError) as err:
        asyncio.run(ocr.run_ocr(_rendered(LINE), OCRConfig(timeout_s=0.001)))
    assert (err.value.stage, err.value.code) == ("agents", "ocr_failed")
    assert "timed out" in str(err.value)
    with pytest.raises(ItemError, match="tesseract-ocr-xx"):
        asyncio.run(ocr.run_ocr(_rendered(LINE), OCRConfig(lang="xx")))


def test_warns_once_when_tesseract_is_missing(no_tesseract, caplog):
    with caplog.at_level(logging.WARNING, logger="capflow_core.ocr"):
        assert ocr.warn_if_missing() is False
        assert ocr.warn_if_missing() is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "apt-get install tesseract-ocr" in warnings[0].getMessage()


def test_run_without_tesseract_is_an_item_error(no_tesseract):
    with pytest.raises(ItemError) as err:
        asyncio.run(ocr.run_ocr(_rendered(LINE), OCRConfig()))
    assert err.value.code == "ocr_failed"
    assert "apt-get install tesseract-ocr" in str(err.value)


@needs_tesseract
def test_no_warning_when_tesseract_is_there(caplog, monkeypatch):
    monkeypatch.setattr(ocr, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="capflow_core.ocr"):
        assert ocr.warn_if_missing() is True
    assert not caplog.records
