"""Sequence packing: a batch's examples laid end to end in one row, with no padding.

Each example keeps its own positions: text positions restart at 0 per example, and for
Qwen2-VL-family models the 3-D (M-RoPE) positions of its image or video are computed per
example, exactly as the model computes them for a lone example. transformers reads a packed
row from the position ids when no attention mask is given: with flash-attention it runs the
variable-length kernel over the examples; with SDPA or eager it builds a block-diagonal
causal mask. Either way no token attends across examples, so the loss equals the padded
batch's while no compute is spent on padding.
"""

from __future__ import annotations

from typing import Any

import torch


class _RopeShim:
    """Runs the model class's own ``get_rope_index`` on the config alone (no weights), so a
    collator in a dataloader worker process need not hold the model."""

    def __init__(self, config: Any, model_class: type) -> None:
        self.config = config
        self._cls = model_class

    def get_vision_position_ids(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._cls.get_vision_position_ids(self, *args, **kwargs)

    def get_rope_index(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self._cls.get_rope_index(self, *args, **kwargs)


class PackedPositions:
    """Position ids of one example in a packed row.

    Args:
        config: the model's config; a model whose base class has ``get_rope_index``
            (Qwen2-VL family) gets 3-D positions, any other model 1-D text positions.
    """

    def __init__(self, config: Any) -> None:
        from transformers import MODEL_MAPPING

        model_class = MODEL_MAPPING.get(type(config), None)
        self.rope = (
            _RopeShim(config, model_class)
            if model_class is not None and hasattr(model_class, "get_rope_index")
            else None
        )

    def __call__(
        self, input_ids: torch.Tensor, mm_types: torch.Tensor, media: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """``(4, L)`` for M-RoPE models (text positions, then temporal/height/width), else
        ``(1, L)``: text positions ``0..L-1``."""
        text = torch.arange(len(input_ids)).unsqueeze(0)
        if self.rope is None:
            return text
        rope, _ = self.rope.get_rope_index(
            input_ids.unsqueeze(0),
            mm_token_type_ids=mm_types.unsqueeze(0),
            image_grid_thw=media.get("image_grid_thw"),
            video_grid_thw=media.get("video_grid_thw"),
            second_per_grid_ts=media.get("second_per_grid_ts"),
        )
        return torch.cat([text, rope[:, 0, :]])


def pack(
    rows: list[Any], positions: PackedPositions, media_keys: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """One packed row (batch size 1) from encoded examples (``training_collate.Encoded``).

    Returns ``input_ids``, ``labels``, ``mm_token_type_ids`` of shape ``(1, L)``,
    ``position_ids`` of shape ``(4, 1, L)`` or ``(1, L)``, and the media tensors
    concatenated in example order; no ``attention_mask`` (that is what marks it packed).
    """
    ids = [torch.tensor(r.input_ids) for r in rows]
    types = [torch.tensor(r.mm_types, dtype=torch.int) for r in rows]
    pos = [positions(i, t, r.media) for i, t, r in zip(ids, types, rows, strict=True)]
    position_ids = torch.cat(pos, dim=1)
    batch: dict[str, torch.Tensor] = {
        "input_ids": torch.cat(ids).unsqueeze(0),
        "labels": torch.cat([torch.tensor(r.labels) for r in rows]).unsqueeze(0),
        "mm_token_type_ids": torch.cat(types).unsqueeze(0),
        "position_ids": position_ids.unsqueeze(1) if len(position_ids) > 1 else position_ids,
    }
    return batch | concat_media(rows, media_keys)


def concat_media(rows: list[Any], media_keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The examples' media tensors, concatenated in example order (absent keys omitted)."""
    out: dict[str, torch.Tensor] = {}
    for key in media_keys:
        parts = [torch.as_tensor(r.media[key]) for r in rows if key in r.media]
        if parts:
            out[key] = torch.cat(parts)
    return out
