"""One micro-batch through a Hugging Face VLM: chat rendering, processor call, decoding.

Imported only once a model is loaded (it imports torch and transformers at the top).
Measured with the tiny Qwen2.5-VL: one processor call over rows that mix text-only, image
and video chats works, and so does ``generate`` on it, so a batch is never split by modality.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import transformers

from capflow_core.backends.base import GenRequest, ImagePart, Message, VideoPart


def chat_content(messages: list[Message]) -> list[dict[str, Any]]:
    """Our neutral messages as chat-template messages (media become placeholders)."""
    out = []
    for message in messages:
        parts: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, str):
                parts.append({"type": "text", "text": part})
            elif isinstance(part, ImagePart):
                parts.append({"type": "image"})
            elif isinstance(part, VideoPart):
                parts.append({"type": "video"})
            else:
                raise TypeError(f"unsupported message part {type(part).__name__}")
        out.append({"role": message.role, "content": parts})
    return out


def encode(processor: Any, requests: list[GenRequest], device: str) -> Any:
    """One padded (left) processor call over ``requests``; media in order of appearance.

    Raises:
        Exception: whatever the processor raises for unusable media or text.
    """
    texts, images, videos, metadata = [], [], [], []
    for request in requests:
        texts.append(
            processor.apply_chat_template(
                chat_content(request.messages), tokenize=False, add_generation_prompt=True
            )
        )
        for part in (p for m in request.messages for p in m.content):
            if isinstance(part, ImagePart):
                image = part.image
                images.append(image if image.mode == "RGB" else image.convert("RGB"))
            elif isinstance(part, VideoPart):
                if part.frames.ndim != 4 or part.frames.shape[-1] != 3 or len(part.frames) == 0:
                    raise ValueError(f"video frames must be (T, H, W, 3), got {part.frames.shape}")
                videos.append(part.frames)
                # the sampled rate sets Qwen's temporal positions (second_per_grid_ts)
                metadata.append({"fps": float(part.fps), "total_num_frames": len(part.frames)})
    kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
    if images:
        kwargs["images"] = images
    if videos:
        kwargs.update(videos=videos, video_metadata=metadata)
    return processor(**kwargs).to(device)


class RowLimits(transformers.StoppingCriteria):
    """Ends each row at its own token budget, so one batch can mix ``max_tokens``; with a
    ``deadline`` (``time.monotonic()``) every row ends at the first step past it
    (``expired`` is then set), and a row whose ``gone()`` is true (its caller left) ends at
    the next step."""

    def __init__(
        self,
        prompt_len: int,
        limits: list[int],
        deadline: float | None = None,
        gone: list[Callable[[], bool]] | None = None,
    ) -> None:
        self.prompt_len = prompt_len
        self.limits = torch.tensor(limits)
        self.deadline = deadline
        self.gone = gone or []
        self.expired = False

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        done = input_ids.shape[1] - self.prompt_len >= self.limits.to(input_ids.device)
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.expired = True
            return torch.ones_like(done)
        if any(gone() for gone in self.gone):
            left = torch.tensor([gone() for gone in self.gone], device=input_ids.device)
            done = done | left
        return done


@dataclass
class Row:
    """One decoded row: text without special tokens, and its token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    ended: bool = True  # an end token closed the reply (else it stopped at a limit)


def decode_rows(
    tokenizer: Any, inputs: Any, output: torch.Tensor, limits: list[int], end_ids: set[int]
) -> list[Row]:
    """Cut each generated row at its first end token (counted) or its own limit."""
    prompt_len = inputs["input_ids"].shape[1]
    prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
    rows = []
    for i, limit in enumerate(limits):
        generated = output[i, prompt_len : prompt_len + limit].tolist()
        end = next((j + 1 for j, t in enumerate(generated) if t in end_ids), None)
        count = end or len(generated)
        text = tokenizer.decode(generated[:count], skip_special_tokens=True)
        rows.append(Row(text, int(prompt_tokens[i]), count, end is not None))
    return rows
