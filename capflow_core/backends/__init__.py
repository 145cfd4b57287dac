"""Inference backends behind one async protocol (see ``base.py``)."""

from __future__ import annotations

from collections.abc import Callable

from capflow_core.backends.base import Backend
from capflow_core.config import Config, OpenAIModel, TransformersModel


def make_backend(spec: TransformersModel | OpenAIModel) -> Backend:
    """A backend for one model spec. Nothing is loaded or contacted until first use."""
    if isinstance(spec, TransformersModel):
        from capflow_core.backends.transformers_backend import TransformersBackend

        return TransformersBackend(spec)
    from capflow_core.backends.openai_backend import OpenAIBackend

    return OpenAIBackend(spec)


ROLES = ("vlm", "llm", "judge", "eval_judge")


def backends_for(
    config: Config,
    roles: tuple[str, ...] = ROLES,
    factory: Callable[[TransformersModel | OpenAIModel], Backend] = make_backend,
) -> dict[str, Backend]:
    """One backend per role; roles with an identical spec share one instance (one model).

    In-process backends get ``generation``'s prompt-token and per-request time bounds (an
    HTTP backend has its own ``timeout_s``; the server enforces its context length).
    """
    gen = config.generation
    shared: dict[str, Backend] = {}
    out: dict[str, Backend] = {}
    for role in roles:
        spec = config.role(role)
        key = spec.model_dump_json()
        if key not in shared:
            shared[key] = factory(spec)
            if set_bounds := getattr(shared[key], "set_bounds", None):
                set_bounds(gen.max_prompt_tokens, gen.request_timeout_s)
        out[role] = shared[key]
    return out
