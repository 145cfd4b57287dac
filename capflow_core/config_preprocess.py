"""Config sections for preprocessing (filters, pixel budget, dedup) and the Dask cluster."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from capflow_core.config_models import StrictModel


class PreprocessConfig(StrictModel):
    """The paper's filters and the prepared-shard settings.

    An image is kept when its short edge is at least ``min_short_edge`` and its long/short
    ratio at most ``max_aspect_ratio``; a video when its short side is at least
    ``min_video_height``.
    """

    min_short_edge: Annotated[int, Field(ge=1)] = 512
    max_aspect_ratio: Annotated[float, Field(ge=1)] = 2.0
    min_video_height: Annotated[int, Field(ge=1)] = 480
    max_pixels: Annotated[int, Field(ge=64 * 64)] = Field(
        1024 * 1024, description="prepared images are shrunk (aspect kept) to this pixel budget"
    )
    jpeg_quality: Annotated[int, Field(ge=1, le=100)] = 90
    near_dup_distance: Annotated[int, Field(ge=0, le=64)] = Field(
        4, description="phash Hamming distance at or below which images are near-duplicates"
    )
    items_per_task: Annotated[int, Field(ge=1, le=100_000)] = Field(
        32, description="items per Dask task (never one task per item)"
    )
    read_attempts: Annotated[int, Field(ge=1, le=20)] = Field(
        4, description="tries per object read before a transient error fails the shard"
    )


class DaskConfig(StrictModel):
    """Where preprocessing runs: an embedded LocalCluster, or an existing scheduler."""

    address: str | None = Field(None, description="e.g. tcp://scheduler:8786; None: LocalCluster")
    n_workers: Annotated[int, Field(ge=1, le=1024)] | None = Field(
        None, description="LocalCluster worker processes (default: the machine's cores)"
    )
