"""The one async protocol every inference backend implements, and its request types.

A request is a chat in a neutral form: text parts are ``str``, media parts are
:class:`ImagePart` / :class:`VideoPart`. Each backend shapes it for its runtime
(a processor call in-process, OpenAI content parts over HTTP).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


@dataclass(eq=False)
class ImagePart:
    """An RGB image. Its data URL is encoded once and reused by every call on the sample."""

    image: Image.Image

    @cached_property
    def jpeg_bytes(self) -> bytes:
        buf = io.BytesIO()
        self.image.save(buf, format="JPEG", quality=95)
        return buf.getvalue()

    @cached_property
    def data_url(self) -> str:
        return "data:image/jpeg;base64," + base64.b64encode(self.jpeg_bytes).decode()


@dataclass(eq=False)
class VideoPart:
    """Uniformly sampled frames, ``uint8`` array of shape (T, H, W, 3), and their rate."""

    frames: np.ndarray
    fps: float
    source_fps: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def frame_images(self) -> list[ImagePart]:
        from PIL import Image

        return [ImagePart(Image.fromarray(f)) for f in self.frames]


Part = str | ImagePart | VideoPart


@dataclass
class Message:
    role: str  # "system" | "user" | "assistant"
    content: list[Part]


@dataclass(frozen=True)
class Choice:
    """Constrain the reply to exactly one of ``options``."""

    options: tuple[str, ...]


@dataclass(frozen=True)
class JsonSchema:
    """Constrain the reply to compact JSON matching an enum-only schema."""

    schema: dict[str, Any] = field(hash=False)
    name: str = "reply"


Constraint = Choice | JsonSchema


@dataclass
class GenRequest:
    messages: list[Message]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    constraint: Constraint | None = None
    seed: int | None = None
    tag: str = ""  # what the call is for (route, agent:<name>, summary, judge): logs only

    @property
    def has_video(self) -> bool:
        return any(isinstance(p, VideoPart) for m in self.messages for p in m.content)


@dataclass
class GenResult:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None  # an item error for this request (the batch goes on)
    endpoint: str = ""


@runtime_checkable
class Backend(Protocol):
    """``generate`` runs a list of requests and returns one result per request, in order.

    Per-request problems come back as ``GenResult.error``; a server or runtime that stays
    unusable past the retry budget raises :class:`~capflow_core.errors.InfrastructureError`.
    """

    model_id: str

    async def generate(self, requests: list[GenRequest]) -> list[GenResult]: ...

    async def aclose(self) -> None: ...

    def gpus(self) -> int:
        """GPUs behind this backend (for the GPU-seconds cost model)."""
        ...
