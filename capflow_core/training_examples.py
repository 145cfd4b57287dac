"""One MetaCaptioner training example: media plus a two-turn conversation.

The paper trains on InternVL/LLaVA-style records: a human turn with the image (or video)
and a captioning instruction, and a gpt turn that is the caption. Media are the prepared
JPEG bytes (an image, or a video's sampled frames), never re-read from the source.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from capflow_core.config_finetune import INSTRUCTIONS, VIDEO_INSTRUCTIONS


@dataclass
class Example:
    """A training or held-out example.

    ``source`` is ``capflow`` (a caption of the dataset) or ``mix_in`` (other instruction
    data); ``frames`` hold a video's sampled JPEG frames and ``duration_s`` its length.
    """

    id: str
    asset_id: str
    modality: str  # "image" | "video"
    instruction: str
    caption: str
    image: bytes | None = None
    frames: list[bytes] = field(default_factory=list)
    duration_s: float | None = None
    source: str = "capflow"

    def conversations(self) -> list[dict[str, str]]:
        """The LLaVA conversation: ``<image>``/``<video>`` then the instruction; the caption."""
        token = "<video>" if self.modality == "video" else "<image>"
        return [
            {"from": "human", "value": f"{token}\n{self.instruction}"},
            {"from": "gpt", "value": self.caption},
        ]


def instruction_for(asset_id: str, modality: str) -> str:
    """A captioning instruction chosen by the asset id: varied, and stable across runs."""
    pool = VIDEO_INSTRUCTIONS if modality == "video" else INSTRUCTIONS
    return pool[int(hashlib.sha256(asset_id.encode()).hexdigest()[:8], 16) % len(pool)]


def is_held_out(asset_id: str, percent: float) -> bool:
    """Whether an asset is in the held-out split: by its id's hash, so the split is the
    same in every dataset version and an asset never moves between train and eval."""
    bucket = int(hashlib.sha256(b"capflow-holdout:" + asset_id.encode()).hexdigest()[:8], 16)
    return bucket % 10_000 < percent * 100
