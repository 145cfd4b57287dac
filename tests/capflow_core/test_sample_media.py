"""The sample source: deterministic, filter-passing images and decodable videos."""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np
import pytest
from PIL import Image

from capflow_core import ocr
from capflow_core.config import OCRConfig, VideoConfig
from capflow_core.sample_media import generate_samples
from capflow_core.video import probe, sample_decord, sample_pyav

IMAGES = {"chart.png", "document.png", "screenshot.png", "code.png", "photo.jpg", "diagram.png"}
VIDEOS = {"clip_720p.mp4", "clip_540p.mp4"}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    return [generate_samples(tmp_path_factory.mktemp(f"run{i}")) for i in range(2)]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_sample_set_is_complete(two_runs):
    assert {p.name for p in two_runs[0]} == IMAGES | VIDEOS


def test_images_are_byte_identical_across_runs(two_runs):
    first, second = ({p.name: p for p in run} for run in two_runs)
    for name in IMAGES:
        assert _digest(first[name]) == _digest(second[name]), name


def test_images_pass_the_paper_filters(two_runs):
    for path in two_runs[0]:
        if path.name in IMAGES:
            with Image.open(path) as image:
                w, h = image.size
                assert min(w, h) > 512 and max(w, h) / min(w, h) < 2, path.name
                assert len(image.convert("L").getcolors(1 << 20)) > 16, path.name  # not blank


def test_videos_are_above_480p_and_decode_with_both_samplers(two_runs):
    cfg = VideoConfig(num_frames=6)
    for path in two_runs[0]:
        if path.name in VIDEOS:
            info = probe(path)
            assert min(info.width, info.height) > 480 and 1.0 <= info.duration_s <= 2.0
            a, b = sample_pyav(path, cfg, info), sample_decord(path, cfg, info)
            assert a.frames.shape[0] == 6 and np.array_equal(a.frames, b.frames)
            assert a.frames[0].std() > 1  # moving shapes, not a flat colour
            assert not np.array_equal(a.frames[0], a.frames[-1])


@pytest.mark.skipif(not ocr.tesseract_available(), reason="apt-get install tesseract-ocr")
def test_the_document_page_is_readable_by_tesseract(two_runs):
    page = next(p for p in two_runs[0] if p.name == "document.png")
    text = asyncio.run(ocr.run_ocr(Image.open(page), OCRConfig()))
    assert "Quarterly Operations Report" in text
    assert "subscription plans" in text
