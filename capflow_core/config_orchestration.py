"""Config section for how the Prefect flows run shards (limits and retries)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from capflow_core.config_models import StrictModel


class OrchestrationConfig(StrictModel):
    """The `gpu` global concurrency limit (created on first use) and shard retries."""

    gpu_limit: str = Field(
        "gpu",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="the Prefect global concurrency limit caption shards take a slot of",
    )
    gpu_slots: Annotated[int, Field(ge=1, le=4096)] = Field(
        1, description="caption shards running at once across all runs (one per GPU/server)"
    )
    gpu_lease_s: Annotated[float, Field(ge=60, le=86_400)] = Field(
        60.0,
        description="a slot's lease, renewed while held: a killed run's slot frees this long "
        "after it died (Prefect's minimum is 60 s)",
    )
    shard_retries: Annotated[int, Field(ge=0, le=20)] = 2
    retry_delay_s: Annotated[float, Field(ge=0, le=3600)] = 10.0
