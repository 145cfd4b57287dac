"""Cost accounting (docs/architecture.md, "Tables").

GPU-seconds of a run = wall time of its caption stage x GPUs behind the backends it used,
allocated to captions in proportion to their tokens; ``cost_usd`` = that x $/GPU-hour. The
API comparison prices the same tokens, plus the image tokens an API would bill for every
call that carried the media, at the configured API prices.
"""

from __future__ import annotations

from dataclasses import dataclass

from capflow_core.config import ApiPrice
from capflow_core.records import CaptionRecord


@dataclass
class CostSummary:
    wall_s: float
    gpus: int
    gpu_seconds: float
    usd: float
    api_usd: float
    captions: int

    def per_100(self, usd: float) -> float:
        return 100 * usd / self.captions if self.captions else 0.0


def allocate_cost(
    records: list[CaptionRecord], wall_s: float, gpus: int, usd_per_gpu_hour: float
) -> float:
    """Set each record's ``cost_usd`` from its token share; return the run's GPU-seconds."""
    gpu_seconds = wall_s * gpus
    total = sum(r.tokens.prompt + r.tokens.completion for r in records)
    for r in records:
        share = (r.tokens.prompt + r.tokens.completion) / total if total else 0.0
        r.cost_usd = gpu_seconds * share * usd_per_gpu_hour / 3600
    return gpu_seconds


def api_equivalent_usd(
    prompt_tokens: int, completion_tokens: int, visual_calls: int, api: ApiPrice
) -> float:
    """What the same calls would cost at the API's prices."""
    billed_input = prompt_tokens + visual_calls * api.image_tokens
    return (
        billed_input * api.usd_per_mtok_input + completion_tokens * api.usd_per_mtok_output
    ) / 1e6
