"""Video probing and uniform frame sampling with PyAV or decord, returning identical frames.

Both samplers pick the same frame indices (from :func:`probe`'s frame count), convert with
FFmpeg's default YUV->RGB path and shrink with the same :func:`downscale`, so switching
``video.sampler`` never changes a sample's frames. PyAV decodes sequentially and keeps only
the wanted frames; decord fetches the wanted indices in small batches. Memory stays bounded
by the kept (downscaled) frames either way.

Both samplers apply :mod:`capflow_core.video_bounds` before decoding and between frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from capflow_core.errors import ItemError
from capflow_core.media_format import container_truncated
from capflow_core.video_bounds import Deadline, check_video_bounds

if TYPE_CHECKING:
    from capflow_core.backends.base import VideoPart
    from capflow_core.config import Config, VideoConfig

_DECORD_BATCH = 8  # full-resolution frames decord holds at once
_SHORTFALL_TOLERANCE = 0.05  # a frame-count estimate may overshoot by this much at the tail


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns from the container without decoding frames."""

    codec: str
    width: int
    height: int
    duration_s: float
    fps: float
    frames: int  # the container's count, else an estimate (duration x fps, or packets)


def _error(path: str | os.PathLike[str], fallback: str, what: str) -> ItemError:
    code = "truncated" if container_truncated(path) else fallback
    detail = "the file is cut short (its MP4 boxes end early)" if code == "truncated" else what
    return ItemError("load", code, f"{os.fspath(path)}: {detail}")


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Read codec, size, duration, frame rate and frame count of the first video stream.

    Raises:
        ItemError: stage ``load``; ``truncated``, ``corrupt``, ``unsupported_format`` (no
            video stream) or ``decode_error`` (no usable frame rate or frame count).
    """
    import av

    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                raise _error(path, "unsupported_format", "no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            duration = 0.0
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / 1_000_000
            frames = stream.frames or (round(duration * float(rate)) if rate else 0)
            if not frames:
                frames = sum(1 for p in container.demux(stream) if p.size)
            fps = float(rate) if rate else (frames / duration if duration else 0.0)
            info = VideoInfo(
                stream.codec_context.name,
                stream.width,
                stream.height,
                duration or (frames / fps if fps else 0.0),
                fps,
                int(frames),
            )
    except av.FFmpegError as err:
        raise _error(path, "corrupt", f"cannot open the video ({err.strerror})") from None
    if info.frames <= 0 or info.fps <= 0 or info.width <= 0 or info.height <= 0:
        raise _error(path, "decode_error", f"no usable frames (probe: {info})")
    return info


def frame_indices(total_frames: int, source_fps: float, cfg: Config | VideoConfig) -> list[int]:
    """Uniformly spaced frame indices: the centre frame of each of ``n`` equal segments.

    ``n`` is ``video.num_frames``, or ``duration x video.fps`` in fps mode (at least 1),
    never more than ``total_frames`` or ``video.max_frames``.
    """
    video = getattr(cfg, "video", cfg)
    if total_frames <= 0:
        return []
    if video.num_frames is not None:
        n = video.num_frames
    else:
        n = max(1, round(total_frames * video.fps / source_fps))
    n = min(n, video.max_frames, total_frames)
    return [int((i + 0.5) * total_frames / n) for i in range(n)]


def downscale(frame: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink an RGB frame so its longer side is at most ``max_side`` (bicubic, PIL)."""
    from PIL import Image

    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return np.ascontiguousarray(frame)
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BICUBIC))


def _part(frames: list[np.ndarray], indices: list[int], info: VideoInfo, sampler: str) -> VideoPart:
    from capflow_core.backends.base import VideoPart

    return VideoPart(
        frames=np.stack(frames),
        fps=len(indices) * info.fps / info.frames,
        source_fps=info.fps,
        extra={"indices": indices, "sampler": sampler},
    )


def sample_pyav(
    path: str | os.PathLike[str], cfg: Config | VideoConfig, info: VideoInfo | None = None
) -> VideoPart:
    """Decode sequentially with PyAV, converting and keeping only the wanted frames."""
    import av

    info = info or probe(path)
    check_video_bounds(path, info, cfg)
    deadline = Deadline(path, cfg)
    indices = frame_indices(info.frames, info.fps, cfg)
    max_side = getattr(cfg, "video", cfg).frame_max_side
    wanted = set(indices)
    kept: dict[int, np.ndarray] = {}
    last, decoded = None, 0
    try:
        with av.open(os.fspath(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if decoded in wanted:
                    kept[decoded] = downscale(frame.to_ndarray(format="rgb24"), max_side)
                last, decoded = frame, decoded + 1
                if decoded > indices[-1]:
                    break
                deadline.check(decoded)
    except av.FFmpegError as err:
        raise _error(
            path, "decode_error", f"decoding failed after {decoded} frames ({err.strerror})"
        ) from None
    missing = [i for i in indices if i not in kept]
    if missing:
        if last is None or info.frames - decoded > max(2, _SHORTFALL_TOLERANCE * info.frames):
            raise _error(path, "decode_error", f"only {decoded} of {info.frames} frames decode")
        # the frame-count estimate overshot: reuse the last frame
        tail = downscale(last.to_ndarray(format="rgb24"), max_side)
        kept.update({i: tail for i in missing})
    return _part([kept[i] for i in indices], indices, info, "pyav")


def sample_decord(
    path: str | os.PathLike[str], cfg: Config | VideoConfig, info: VideoInfo | None = None
) -> VideoPart:
    """Fetch the wanted frames with decord's ``get_batch``, a few at a time."""
    import decord

    info = info or probe(path)
    check_video_bounds(path, info, cfg)
    deadline = Deadline(path, cfg)
    indices = frame_indices(info.frames, info.fps, cfg)
    max_side = getattr(cfg, "video", cfg).frame_max_side
    frames: list[np.ndarray] = []
    try:
        reader = decord.VideoReader(os.fspath(path), ctx=decord.cpu(0))
        available = len(reader)
        if info.frames - available > max(2, _SHORTFALL_TOLERANCE * info.frames):
            raise _error(path, "decode_error", f"only {available} of {info.frames} frames index")
        clamped = [min(i, available - 1) for i in indices]
        for start in range(0, len(clamped), _DECORD_BATCH):
            deadline.check(start)
            batch = reader.get_batch(clamped[start : start + _DECORD_BATCH]).asnumpy()
            frames.extend(downscale(f, max_side) for f in batch)
        del reader
    except ItemError:
        raise
    except Exception as err:  # decord raises its own DECORDError / RuntimeError types
        raise _error(path, "decode_error", f"decord failed: {str(err).splitlines()[0]}") from None
    return _part(frames, indices, info, "decord")


def sample_frames(
    path: str | os.PathLike[str], cfg: Config | VideoConfig, info: VideoInfo | None = None
) -> VideoPart:
    """Sample frames per ``cfg.video`` with the configured sampler (``pyav`` or ``decord``).

    Args:
        path: a local video file.
        cfg: the whole config or its ``video`` section.
        info: a :func:`probe` result for ``path``, to skip probing again.

    Returns:
        A VideoPart: frames (T, H, W, 3) with the longer side <= ``video.frame_max_side``,
        ``fps`` the effective sampling rate, ``extra["indices"]`` the source frame indices.

    Raises:
        ItemError: stage ``load`` (see :func:`probe` and :func:`check_video_bounds`;
            ``decode_error`` or ``truncated`` when frames do not decode, ``decode_timeout``
            past ``video.decode_timeout_s``).
    """
    video = getattr(cfg, "video", cfg)
    sampler = sample_decord if video.sampler == "decord" else sample_pyav
    return sampler(path, cfg, info)
