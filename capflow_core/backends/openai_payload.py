"""Shape a neutral :class:`GenRequest` into chat-completions arguments for one endpoint.

What each capability flag sends (vLLM facts checked against
https://docs.vllm.ai/en/latest/features/structured_outputs/ and
https://docs.vllm.ai/en/latest/features/multimodal_inputs/):

- ``structured_outputs: vllm`` -> ``extra_body={"structured_outputs": {"choice": [...]}}`` or
  ``{"json": schema, "disable_any_whitespace": true}`` (the ``guided_*`` fields were removed
  in vLLM 0.12);
- ``json_schema`` -> OpenAI ``response_format={"type": "json_schema", ...}`` (strict);
  a :class:`Choice` is sent unconstrained there, since that API has no bare-string form;
- ``none`` -> no constraint fields; the engine validates the reply and re-asks;
- ``video: video_url`` -> one ``video_url`` part, an MP4 data URL of the sampled frames;
  ``frames`` -> the frames as consecutive ``image_url`` parts; ``none`` -> an item error.

Parts keep the neutral order, so the media and system text the engine puts first stay
byte-identical across calls on a sample (prefix caching).
"""

from __future__ import annotations

from typing import Any

from capflow_core.backends.base import (
    Choice,
    Constraint,
    GenRequest,
    ImagePart,
    Message,
    VideoPart,
)
from capflow_core.backends.openai_routing import safe_url
from capflow_core.backends.video_encode import is_encoded, video_data_url
from capflow_core.config import Endpoint


class UnsupportedInput(ValueError):
    """A request the endpoint cannot take as configured (an item error, not retried)."""


def request_kwargs(request: GenRequest, endpoint: Endpoint, model: str) -> dict[str, Any]:
    """Keyword arguments for ``AsyncOpenAI.chat.completions.create`` on ``endpoint``.

    Encodes media on first use (JPEG/MP4 data URLs are cached on the parts), so call it
    off the event loop when the request carries uncached media.

    Raises:
        UnsupportedInput: the request has video and the endpoint's ``video`` flag is none,
            or a system/assistant message carries media.
    """
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": build_messages(request.messages, endpoint),
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
    }
    if request.seed is not None:
        kwargs["seed"] = request.seed
    kwargs.update(constraint_kwargs(request.constraint, endpoint.structured_outputs))
    return kwargs


def constraint_kwargs(constraint: Constraint | None, mode: str) -> dict[str, Any]:
    """The request fields that constrain decoding under an endpoint's ``structured_outputs``."""
    if constraint is None or mode == "none":
        return {}
    if mode == "vllm":
        if isinstance(constraint, Choice):
            spec: dict[str, Any] = {"choice": list(constraint.options)}
        else:
            spec = {"json": constraint.schema, "disable_any_whitespace": True}
        return {"extra_body": {"structured_outputs": spec}}
    if mode == "json_schema":
        if isinstance(constraint, Choice):
            return {}
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": constraint.name,
                    "schema": constraint.schema,
                    "strict": True,
                },
            }
        }
    raise ValueError(f"unknown structured_outputs mode {mode!r}")


def build_messages(messages: list[Message], endpoint: Endpoint) -> list[dict[str, Any]]:
    """OpenAI chat messages: system/assistant as text, user turns as ordered content parts."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role != "user":
            texts = [p for p in message.content if isinstance(p, str)]
            if len(texts) != len(message.content):
                raise UnsupportedInput(f"{message.role} messages carry text only, got media")
            out.append({"role": message.role, "content": "\n".join(texts)})
            continue
        parts: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, str):
                parts.append({"type": "text", "text": part})
            elif isinstance(part, ImagePart):
                parts.append(_image(part))
            elif isinstance(part, VideoPart):
                parts.extend(_video(part, endpoint))
            else:
                raise TypeError(f"unsupported message part {type(part).__name__}")
        out.append({"role": "user", "content": parts})
    return out


def media_pending(request: GenRequest, endpoint: Endpoint) -> bool:
    """Whether shaping ``request`` for ``endpoint`` would encode media (CPU work)."""
    for message in request.messages:
        for part in message.content:
            if isinstance(part, ImagePart) and "data_url" not in part.__dict__:
                return True
            if isinstance(part, VideoPart) and not _video_cached(part, endpoint.video):
                return True
    return False


def _video_cached(part: VideoPart, mode: str) -> bool:
    if mode == "video_url":
        return is_encoded(part)
    if mode == "frames":
        frames = part.__dict__.get("frame_images")
        return frames is not None and all("data_url" in f.__dict__ for f in frames)
    return True


def _image(part: ImagePart) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": part.data_url}}


def _video(part: VideoPart, endpoint: Endpoint) -> list[dict[str, Any]]:
    if endpoint.video == "video_url":
        return [{"type": "video_url", "video_url": {"url": video_data_url(part)}}]
    if endpoint.video == "frames":
        return [_image(frame) for frame in part.frame_images]
    raise UnsupportedInput(
        f"endpoint {safe_url(endpoint.url)} cannot take video (video: none); set its video flag to "
        "'video_url' (vllm serve) or 'frames' (servers that take several images per prompt), "
        "or add an endpoint that can"
    )
