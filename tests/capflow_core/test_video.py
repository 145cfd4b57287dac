"""Video probing, index selection, and PyAV/decord frame identity on real H.264 files."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from capflow_core.config import VideoConfig
from capflow_core.errors import ItemError
from capflow_core.sample_media import generate_samples, write_video
from capflow_core.video import (
    VideoInfo,
    downscale,
    frame_indices,
    probe,
    sample_decord,
    sample_frames,
    sample_pyav,
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("clips")
    videos = {p.name: p for p in generate_samples(out) if p.suffix == ".mp4"}
    # Small GOP and an odd-ish size: decord must really seek between keyframes.
    rng = np.random.default_rng(1)
    frames = (_numbered(i, rng) for i in range(45))
    videos["gop8.mp4"] = write_video(out / "gop8.mp4", frames, 30, options={"g": "8"})
    return videos


def _numbered(i: int, rng: np.random.Generator) -> np.ndarray:
    frame = rng.integers(0, 40, (368, 848, 3), dtype=np.uint8)
    frame[:, 16 * i : 16 * i + 16] = 255  # a white bar that moves one step per frame
    return frame


@functools.cache
def _all_frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        side = VideoConfig().frame_max_side
        return [downscale(f.to_ndarray(format="rgb24"), side) for f in container.decode(video=0)]


def test_probe_reads_the_container_facts(clips):
    info = probe(clips["clip_720p.mp4"])
    assert info == VideoInfo("h264", 1280, 720, duration_s=2.0, fps=25.0, frames=50)
    info = probe(clips["clip_540p.mp4"])
    assert (info.width, info.height, info.fps, info.frames) == (960, 540, 30.0, 30)


def test_indices_in_count_mode():
    cfg = VideoConfig(num_frames=4, max_frames=32)
    assert frame_indices(100, 25.0, cfg) == [12, 37, 62, 87]
    assert frame_indices(3, 25.0, cfg) == [0, 1, 2]  # never more frames than exist
    assert frame_indices(0, 25.0, cfg) == []
    assert len(frame_indices(1000, 25.0, VideoConfig(num_frames=64, max_frames=16))) == 16


def test_indices_in_fps_mode():
    cfg = VideoConfig(num_frames=None, fps=2.0, max_frames=32)
    assert frame_indices(50, 25.0, cfg) == [6, 18, 31, 43]  # 2 s at 2 fps, segment centres
    assert frame_indices(5, 25.0, cfg) == [2]  # a 0.2 s clip still gives one frame
    assert frame_indices(30, 30.0, VideoConfig(num_frames=None, fps=60.0)) == list(range(30))
    capped = frame_indices(36_000, 30.0, VideoConfig(num_frames=None, fps=1.0, max_frames=10))
    assert len(capped) == 10 and capped[0] == 1800 and capped[-1] == 34_200


@pytest.mark.parametrize("name", ["clip_720p.mp4", "clip_540p.mp4", "gop8.mp4"])
@pytest.mark.parametrize("rule", [{"num_frames": 8}, {"num_frames": None, "fps": 7.0}])
def test_pyav_and_decord_return_identical_frames(clips, name, rule):
    cfg = VideoConfig(max_frames=32, **rule)
    a = sample_pyav(clips[name], cfg)
    b = sample_decord(clips[name], cfg)
    assert a.extra["indices"] == b.extra["indices"]
    assert a.frames.dtype == b.frames.dtype == np.uint8
    assert a.frames.shape == b.frames.shape
    assert np.array_equal(a.frames, b.frames)  # byte-identical, not just close
    assert a.fps == b.fps and a.source_fps == b.source_fps
    # ... and they are the right frames: those a full sequential decode has at those indices.
    reference = _all_frames(clips[name])
    for index, frame in zip(a.extra["indices"], a.frames, strict=True):
        assert np.array_equal(frame, reference[index])


def test_frames_are_downscaled_and_rate_is_the_sampling_rate(clips):
    part = sample_frames(clips["clip_720p.mp4"], VideoConfig(num_frames=None, fps=4.0))
    assert part.frames.shape == (8, 432, VideoConfig().frame_max_side, 3)  # 2 s x 4 fps, 16:9 kept
    assert part.fps == pytest.approx(4.0) and part.source_fps == 25.0
    assert max(downscale(np.zeros((500, 300, 3), np.uint8), 768).shape) == 500  # small: untouched
    small = sample_frames(clips["clip_720p.mp4"], VideoConfig(num_frames=2, frame_max_side=320))
    assert small.frames.shape == (2, 180, 320, 3)  # the configured bound is honoured


def test_a_long_video_gives_a_bounded_number_of_frames(tmp_path):
    frames = (np.full((96, 128, 3), i % 256, np.uint8) for i in range(900))  # 30 s at 30 fps
    path = write_video(tmp_path / "long.mp4", frames, 30)
    cfg = VideoConfig(num_frames=None, fps=2.0, max_frames=12)  # 60 wanted, 12 allowed
    for sampler in (sample_pyav, sample_decord):
        part = sampler(path, cfg)
        assert part.frames.shape == (12, 96, 128, 3)
        assert part.extra["indices"][-1] == 862
        assert part.fps == pytest.approx(12 / 30)


def test_truncated_mp4_is_an_item_error_for_both_samplers(clips, tmp_path):
    import av

    data = clips["clip_540p.mp4"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])  # moov at the end: the index is gone
    with pytest.raises(ItemError) as err:
        probe(cut)
    assert (err.value.stage, err.value.code) == ("load", "truncated")

    faststart = tmp_path / "faststart.mp4"  # moov first: the index survives, frames do not
    with (
        av.open(str(clips["clip_540p.mp4"])) as src,
        av.open(str(faststart), "w", options={"movflags": "+faststart"}) as dst,
    ):
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    cut.write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])
    assert probe(cut).frames == 30
    for sampler in ("pyav", "decord"):
        with pytest.raises(ItemError) as err:
            sample_frames(cut, VideoConfig(sampler=sampler, num_frames=8))
        assert err.value.code == "truncated", sampler


def test_garbage_with_a_video_header_is_corrupt(tmp_path):
    path = tmp_path / "junk.mkv"
    path.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 8)
    with pytest.raises(ItemError) as err:
        probe(path)
    assert err.value.code == "corrupt"


def test_an_audio_only_file_is_unsupported(tmp_path):
    import av

    path = tmp_path / "voice.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            samples = np.zeros((1, 1024), np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(ItemError) as err:
        probe(path)
    assert err.value.code == "unsupported_format" and "no video stream" in str(err.value)
