"""Sampled video frames -> an in-memory H.264 MP4, for ``video_url`` parts over HTTP.

The server (``vllm serve``) decodes the MP4 and applies the model's own temporal encoding,
so the clip is written at the rate the frames were sampled at: its duration matches the
span of the source the frames cover.
"""

from __future__ import annotations

import base64
import io
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from capflow_core.backends.base import VideoPart

_CACHE_KEY = "mp4_data_url"


def encode_mp4(frames: np.ndarray, fps: float, crf: int = 18) -> bytes:
    """Encode ``uint8`` RGB frames of shape (T, H, W, 3) as an H.264 (yuv420p) MP4.

    Args:
        frames: the sampled frames; odd heights/widths are padded (edge pixels) to even,
            which yuv420p requires.
        fps: the rate the frames were sampled at; becomes the clip's frame rate.
        crf: x264 constant rate factor (18 is visually near-lossless).

    Returns:
        The MP4 file's bytes.

    Raises:
        ValueError: on an empty or wrongly shaped array, or a non-positive fps.
    """
    import av
    import numpy as np

    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[0] == 0 or arr.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3) with T >= 1, got {arr.shape}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    _, height, width, _ = arr.shape
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")

    rate = Fraction(fps).limit_denominator(1001)
    buf = io.BytesIO()
    # no +faststart: it rewrites the file in a second pass, which an in-memory buffer refuses
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = width + pad_w, height + pad_h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for i, frame in enumerate(arr):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
                format="yuv420p"
            )
            video_frame.pts = i
            video_frame.time_base = 1 / rate
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
    return buf.getvalue()


def video_data_url(video: VideoPart) -> str:
    """The ``data:video/mp4;base64,...`` URL of a VideoPart, encoded once per object.

    The URL is cached in ``video.extra`` so every call on one sample (router, agents,
    judge) sends byte-identical media, which keeps the server's prefix and encoder caches
    warm.
    """
    cached = video.extra.get(_CACHE_KEY)
    if cached is None:
        mp4 = encode_mp4(video.frames, video.fps)
        cached = "data:video/mp4;base64," + base64.b64encode(mp4).decode()
        video.extra[_CACHE_KEY] = cached
    return cached


def is_encoded(video: VideoPart) -> bool:
    """Whether ``video_data_url`` would return at once (no encoding left to do)."""
    return _CACHE_KEY in video.extra
