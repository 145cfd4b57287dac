"""Fingerprints: what must change for a caption to be redone.

A domain's fingerprint hashes its agents (role, model role, prompt text, effective token
budget, tool), its summary agent, the shared system prompt, the model ids and revisions of
the roles it uses, and the sampling parameters; video domains add the frame sampling. The
router and the judge are not part of it: a stored route is reused, and a judge or rule
change re-decides without re-captioning.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from capflow_core.config import Config, OpenAIModel, TransformersModel, is_path_like
from capflow_core.registry import Agent, Domain, Registry


def model_revision(spec: TransformersModel | OpenAIModel) -> str:
    """A local folder's revision is the hash of its files; a hub/served model's is pinned or not."""
    if isinstance(spec, TransformersModel) and is_path_like(spec.model):
        revision = _folder_revision(spec.model)
    else:
        revision = spec.revision or "unpinned"
    if isinstance(spec, TransformersModel) and spec.adapter:
        return revision + "+adapter:" + _folder_revision(spec.adapter)  # the weights themselves
    if isinstance(spec, OpenAIModel) and spec.adapter:
        revision += f"+adapter:{spec.adapter}"
    return revision


def _folder_revision(path: str) -> str:
    folder = Path(path)
    if not folder.is_dir():
        return "missing"
    return _cached_revision(str(folder.resolve()))


@cache
def _cached_revision(path: str) -> str:  # model folders do not change under a running process
    from capflow_core.tiny_model import folder_revision

    return folder_revision(Path(path))


def _agent(agent: Agent, cfg: Config) -> dict[str, Any]:
    cap = cfg.generation.max_tokens_cap
    budget = min(agent.max_tokens, cap) if cap else agent.max_tokens
    return {
        "key": agent.key,
        "role": agent.role,
        "model": agent.model,
        "prompt_sha256": agent.prompt_sha256,
        "max_tokens": min(budget, cfg.generation.max_completion_tokens),
        "tool": agent.tool,
    }


def _models(cfg: Config, roles: set[str]) -> dict[str, Any]:
    return {
        r: {"model": cfg.role(r).model, "revision": model_revision(cfg.role(r))}
        for r in sorted(roles)
    }


def _sampling(cfg: Config, video: bool) -> dict[str, Any]:
    gen = cfg.generation
    out: dict[str, Any] = {"temperature": gen.temperature, "top_p": gen.top_p, "seed": gen.seed}
    if video:
        out["video"] = cfg.video.model_dump(exclude={"sampler"})
    return out


def domain_fingerprint(domain: Domain, registry: Registry, cfg: Config) -> str:
    """The fingerprint of captions made by the CapFlow workflow in ``domain``."""
    agents = [*domain.agents, domain.summary]
    payload = {
        "mode": "capflow",
        "system_sha256": hashlib.sha256(registry.system_prompt.encode()).hexdigest(),
        "agents": [_agent(a, cfg) for a in agents],
        "models": _models(cfg, {a.model for a in agents}),
        "sampling": _sampling(cfg, domain.modality == "video"),
    }
    return _digest(payload)


def _single_budget(cfg: Config) -> int | None:
    """The single call's reply budget as fingerprinted: ``max_tokens_cap`` (the engine asks
    for up to 1024 tokens), or ``max_completion_tokens`` where that bound is the tighter."""
    cap = cfg.generation.max_tokens_cap
    limit = cfg.generation.max_completion_tokens
    return limit if limit < min(1024, cap or 1024) else cap


def single_fingerprint(registry: Registry, cfg: Config, video: bool) -> str:
    """The fingerprint of captions made by one VLM call (``single`` mode)."""
    payload = {
        "mode": "single",
        "system_sha256": hashlib.sha256(registry.system_prompt.encode()).hexdigest(),
        "prompt_sha256": hashlib.sha256(registry.single_prompt.encode()).hexdigest(),
        "max_tokens": _single_budget(cfg),
        "models": _models(cfg, {"vlm"}),
        "sampling": _sampling(cfg, video),
    }
    return _digest(payload)


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
