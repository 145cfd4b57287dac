"""Training examples as Qwen2.5-VL model inputs, with the loss on the caption tokens only.

Each example's prompt (user turn: image or video plus instruction, then the opening of the
assistant turn) goes through the inference path's own processor call
(:func:`capflow_core.backends.transformers_batch.encode`), so training sees exactly the
prompts inference builds; the caption and the closing ``<|im_end|>`` are appended as tokens.
Rows are right-padded, or packed into one row without padding
(:mod:`capflow_core.training_packing`). Imported only when training (it imports torch).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from capflow_core.backends.base import GenRequest, ImagePart, Message, VideoPart
from capflow_core.backends.transformers_batch import encode
from capflow_core.training_examples import Example
from capflow_core.training_packing import PackedPositions, concat_media, pack

IGNORE = -100
END_OF_TURN = "<|im_end|>"
# processor outputs that are per-media rows, concatenated over the batch in example order
_MEDIA_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "pixel_values_videos",
    "video_grid_thw",
    "second_per_grid_ts",
)


def _rgb(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def request_for(example: Example) -> GenRequest:
    """The example's user turn as the inference path's request (its media decoded)."""
    if example.modality == "video":
        if not example.frames:
            raise ValueError(f"example {example.id}: a video example needs frames")
        frames = np.stack([np.asarray(_rgb(f)) for f in example.frames])
        duration = example.duration_s or float(len(frames))
        media: ImagePart | VideoPart = VideoPart(frames, fps=len(frames) / max(duration, 1e-6))
    else:
        if example.image is None:
            raise ValueError(f"example {example.id}: an image example needs image bytes")
        media = ImagePart(_rgb(example.image))
    return GenRequest(messages=[Message("user", [media, example.instruction])], max_tokens=0)


@dataclass
class Encoded:
    """One example's token ids, labels, token modalities and media tensors (unpadded).

    ``mm_types`` marks each token text (0), image (1) or video (2): the model derives the
    3-D positions of the media tokens from it.
    """

    input_ids: list[int]
    labels: list[int]
    mm_types: list[int]
    media: dict[str, torch.Tensor]


class Collator:
    """Turns a list of :class:`Example` into one right-padded batch for the model.

    Args:
        processor: the model's processor (Qwen2.5-VL).
        max_length: longest sequence; a caption's tail is dropped to fit, never media tokens.
        packing: the model's position ids for packed rows; given, a batch is one row of
            all its examples end to end (no padding, no attention mask), else rows are padded.
    """

    def __init__(
        self, processor: Any, max_length: int, packing: PackedPositions | None = None
    ) -> None:
        self.processor = processor
        self.packing = packing
        self.tokenizer = processor.tokenizer
        self.max_length = max_length
        self.end_id = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        pad = self.tokenizer.pad_token_id
        self.pad_id = (
            pad if pad is not None else self.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        )

    def encode_one(self, example: Example) -> Encoded:
        """Prompt tokens (unsupervised), then caption tokens and end-of-turn (supervised).

        Raises:
            ValueError: the prompt with its media tokens leaves no room for a caption token
                within ``max_length`` (the message names the example).
        """
        inputs = encode(self.processor, [request_for(example)], "cpu")
        real = inputs["attention_mask"][0].bool()
        prompt = inputs["input_ids"][0][real].tolist()
        room = self.max_length - len(prompt)
        if room < 1:
            raise ValueError(
                f"example {example.id}: its prompt with media takes {len(prompt)} tokens, "
                f"max_length is {self.max_length}; raise finetune.max_length or lower the "
                "image/video pixel budget"
            )
        answer = self.tokenizer(example.caption, add_special_tokens=False)["input_ids"]
        answer = [*answer, self.end_id][:room]
        media = {k: inputs[k] for k in _MEDIA_KEYS if k in inputs}
        types = inputs.get("mm_token_type_ids")
        prompt_types = types[0][real].tolist() if types is not None else [0] * len(prompt)
        labels = [IGNORE] * len(prompt) + answer
        return Encoded(prompt + answer, labels, prompt_types + [0] * len(answer), media)

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        """The batch: ``input_ids``, ``labels``, ``mm_token_type_ids``, the media tensors, and
        ``attention_mask`` (padded) or ``position_ids`` (packed)."""
        rows = [self.encode_one(e) for e in examples]
        if self.packing is not None:
            return pack(rows, self.packing, _MEDIA_KEYS)
        width = max(len(r.input_ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        types = torch.zeros((len(rows), width), dtype=torch.int)
        for i, row in enumerate(rows):
            n = len(row.input_ids)
            ids[i, :n] = torch.tensor(row.input_ids)
            labels[i, :n] = torch.tensor(row.labels)
            mask[i, :n] = 1
            types[i, :n] = torch.tensor(row.mm_types)
        batch: dict[str, torch.Tensor] = {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "mm_token_type_ids": types,
        }
        return batch | concat_media(rows, _MEDIA_KEYS)
