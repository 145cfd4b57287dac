"""The domain registry: packaged YAML + prompt files, optionally overlaid by a user's file.

Agents are data (name, role, model role, prompt, token budget, optional tool); the engine
runs them with one async function per sample. A bad registry fails at load, naming the
file, the key and the fix.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from capflow_core.config import format_validation_error
from capflow_core.errors import ConfigError

PACKAGED_REGISTRY = Path(__file__).parent / "domains" / "registry.yaml"
KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
TOOLS = ("ocr",)


class _AgentEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    role: Literal["guideline", "perception", "reasoning", "tool", "summary"]
    model: Literal["vlm", "llm"]
    prompt: str
    max_tokens: int = Field(ge=1, le=32768)
    tool: Literal["ocr"] | None = None


class _DomainEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    agents: list[str] = Field(min_length=1)
    summary: str
    modality: Literal["image", "video"] = "image"


class _JudgeEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str
    criteria: list[str] = Field(min_length=1)


@dataclass(frozen=True)
class Agent:
    key: str
    name: str
    role: str
    model: str  # model role: "vlm" | "llm"
    prompt: str  # the template text
    max_tokens: int
    tool: str | None = None

    @property
    def prompt_sha256(self) -> str:
        return hashlib.sha256(self.prompt.encode()).hexdigest()


@dataclass(frozen=True)
class Domain:
    key: str
    name: str
    description: str
    agents: tuple[Agent, ...]
    summary: Agent
    modality: str


@dataclass(frozen=True)
class JudgeSpec:
    prompt: str
    criteria: tuple[str, ...]


@dataclass(frozen=True)
class Registry:
    domains: dict[str, Domain]
    system_prompt: str
    router_prompt: str
    single_prompt: str
    judge: dict[str, JudgeSpec]  # by modality
    sources: tuple[str, ...]  # the files it was built from

    def domain(self, key: str) -> Domain:
        try:
            return self.domains[key]
        except KeyError:
            raise ConfigError(
                f"unknown domain {key!r}; known domains: {', '.join(self.domains)}"
            ) from None

    def image_domains(self) -> list[str]:
        return [k for k, d in self.domains.items() if d.modality == "image"]


# chat-template control tokens (<|image_pad|>, <|im_end|>, ...): in a model's or OCR's text
# they would be tokenized as the real tokens (a media placeholder without its media fails
# the request; an <|im_end|> would end the turn)
_SPECIAL_TOKEN = re.compile(r"<\|([^|<>\s]{1,64})\|>")


def defuse_special_tokens(text: str) -> str:
    """``text`` with chat control-token markup broken by a word joiner (U+2060), so it stays
    readable data and never tokenizes as a control token."""
    return _SPECIAL_TOKEN.sub("<\u2060|\\1|\u2060>", text)


def render(template: str, **values: str) -> str:
    """Fill ``${name}`` placeholders with ``values`` (data: their control-token markup is
    defused); other text (braces, dollars) is left alone."""
    safe = {k: defuse_special_tokens(v) for k, v in values.items()}
    return Template(template).safe_substitute(safe)


def load_registry(user_file: str | Path | None = None) -> Registry:
    """The packaged registry, with ``user_file``'s entries added or replacing by key."""
    layers = [_read_layer(PACKAGED_REGISTRY)]
    if user_file:
        layers.append(_read_layer(Path(user_file)))
    return _build(layers)


def _read_layer(path: Path) -> tuple[Path, dict[str, Any]]:
    if not path.is_file():
        raise ConfigError(f"registry file not found: {path}; fix the config key `registry`")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"invalid YAML in registry {path}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"registry {path}: expected a mapping with agents:/domains: sections")
    allowed = {
        "version",
        "system_prompt",
        "router_prompt",
        "single_prompt",
        "judge",
        "agents",
        "domains",
    }
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(
            f"registry {path}: unknown section(s) {unknown}; allowed: {sorted(allowed)}"
        )
    return path, data


def _prompt_text(base: Path, rel: str, where: str) -> str:
    file = (base / rel).resolve()
    if not file.is_file():
        raise ConfigError(f"{where}: prompt file not found: {file}; create it or fix the path")
    return file.read_text()


def _build(layers: list[tuple[Path, dict[str, Any]]]) -> Registry:
    agents: dict[str, tuple[Path, _AgentEntry]] = {}  # the file each entry came from
    domains: dict[str, tuple[Path, _DomainEntry]] = {}
    texts: dict[str, str] = {}
    judge: dict[str, JudgeSpec] = {}
    for path, data in layers:
        base = path.parent
        for key in ("system_prompt", "router_prompt", "single_prompt"):
            if key in data:
                texts[key] = _prompt_text(base, data[key], f"registry {path}: {key}")
        for modality, raw in (data.get("judge") or {}).items():
            entry = _validate(_JudgeEntry, raw, path, f"judge.{modality}")
            if modality not in ("image", "video"):
                raise ConfigError(f"registry {path}: judge.{modality}: use 'image' or 'video'")
            text = _prompt_text(base, entry.prompt, f"registry {path}: judge.{modality}")
            judge[modality] = JudgeSpec(text, tuple(entry.criteria))
        for key, raw in (data.get("agents") or {}).items():
            _check_key(key, path, "agents")
            agents[key] = (path, _validate(_AgentEntry, raw, path, f"agents.{key}"))
        for key, raw in (data.get("domains") or {}).items():
            _check_key(key, path, "domains")
            domains[key] = (path, _validate(_DomainEntry, raw, path, f"domains.{key}"))

    built_agents = {
        key: Agent(
            key,
            e.name,
            e.role,
            e.model,
            _prompt_text(path.parent, e.prompt, f"registry {path}: agents.{key}"),
            e.max_tokens,
            e.tool,
        )
        for key, (path, e) in agents.items()
    }
    built_domains = {key: _link(key, path, e, built_agents) for key, (path, e) in domains.items()}
    missing = [k for k in ("system_prompt", "router_prompt", "single_prompt") if k not in texts]
    missing += [f"judge.{m}" for m in ("image", "video") if m not in judge]
    if missing:
        raise ConfigError(f"registry is missing {missing}; the packaged registry defines them")
    return Registry(
        domains=built_domains,
        system_prompt=texts["system_prompt"],
        router_prompt=texts["router_prompt"],
        single_prompt=texts["single_prompt"],
        judge=judge,
        sources=tuple(str(p) for p, _ in layers),
    )


def _link(key: str, path: Path, entry: _DomainEntry, agents: dict[str, Agent]) -> Domain:
    where = f"registry {path}: domains.{key}"
    members = []
    for i, name in enumerate(entry.agents):
        agent = agents.get(name)
        if agent is None:
            raise ConfigError(
                f"{where}.agents[{i}]: unknown agent {name!r}; define it under agents: "
                f"or use one of {sorted(agents)}"
            )
        if agent.role == "summary" or agent.model != "vlm":
            raise ConfigError(
                f"{where}.agents[{i}]: {name!r} is a {agent.role}/{agent.model} agent; functional "
                "agents need model: vlm and a role other than summary"
            )
        members.append(agent)
    summary = agents.get(entry.summary)
    if summary is None or summary.role != "summary" or summary.model != "llm":
        raise ConfigError(
            f"{where}.summary: {entry.summary!r} must be an agent with role: summary and "
            "model: llm (the summary agent is text-only)"
        )
    return Domain(key, entry.name, entry.description, tuple(members), summary, entry.modality)


def _check_key(key: str, path: Path, section: str) -> None:
    if not KEY_PATTERN.match(str(key)):
        raise ConfigError(
            f"registry {path}: {section}.{key}: keys are snake_case (a-z, 0-9, _), e.g. 'my_domain'"
        )


def _validate(model: type[BaseModel], raw: Any, path: Path, where: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        msg = format_validation_error(err, f"registry {path}")
        raise ConfigError(msg.replace("\n  ", f"\n  {where}.")) from None
