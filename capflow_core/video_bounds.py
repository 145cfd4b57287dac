"""Resource bounds on one video: checked from its size and probe, and while sampling.

``video.max_bytes``, ``max_duration_s`` and ``max_pixels`` (per frame) are checked before any
frame decodes; ``video.decode_timeout_s`` stops a sampling loop between frames (a single
frame's decode cannot be interrupted). Each violation is an
:class:`~capflow_core.errors.ItemError` at stage ``load``: the item is rejected with that
reason code and the batch goes on.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from capflow_core.errors import ItemError

if TYPE_CHECKING:
    from capflow_core.config import Config, VideoConfig
    from capflow_core.video import VideoInfo


def check_video_bounds(
    path: str | os.PathLike[str], info: VideoInfo, cfg: Config | VideoConfig
) -> None:
    """Reject a video over its configured bounds, from the file size and the probe.

    Raises:
        ItemError: stage ``load``; ``file_too_large`` (``video.max_bytes``), ``too_long``
            (``video.max_duration_s``) or ``frame_too_large`` (``video.max_pixels``).
    """
    v = getattr(cfg, "video", cfg)
    name, size = os.fspath(path), os.path.getsize(path)
    checks = (
        (
            "file_too_large",
            size > v.max_bytes,
            f"{size} bytes exceed video.max_bytes={v.max_bytes}",
        ),
        (
            "too_long",
            info.duration_s > v.max_duration_s,
            f"{info.duration_s:.1f} s exceed video.max_duration_s={v.max_duration_s:g}",
        ),
        (
            "frame_too_large",
            info.width * info.height > v.max_pixels,
            f"{info.width}x{info.height} frames exceed video.max_pixels={v.max_pixels}",
        ),
    )
    for code, broken, detail in checks:
        if broken:
            raise ItemError("load", code, f"{name}: {detail}")


class Deadline:
    """``video.decode_timeout_s`` for one sampling loop, checked between frames."""

    def __init__(self, path: str | os.PathLike[str], cfg: Config | VideoConfig) -> None:
        self.path = os.fspath(path)
        self.limit = getattr(cfg, "video", cfg).decode_timeout_s
        self.end = time.monotonic() + self.limit

    def check(self, done: int) -> None:
        if time.monotonic() > self.end:
            raise ItemError(
                "load",
                "decode_timeout",
                f"{self.path}: sampling stopped after {done} frames, past "
                f"video.decode_timeout_s={self.limit:g}",
            )
