"""Config section ``serving``: the model servers ``capflow endpoints up`` launches.

One server per group: a group serves one or more model roles on a set of GPUs (one GPU, or
a tensor-parallel group). Its command line is ``command`` with ``{placeholders}`` filled in
from the group, plus ``vision_args`` when it serves a role that sees pixels, ``lora_args``
when it has an adapter, and the group's own ``args``. The default is the ``infra/vllm/``
recipe: ``vllm serve`` with prefix caching, multimodal limits and tensor parallelism.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from capflow_core.config_models import EndpointFlags, StrictModel

Role = Literal["vlm", "llm", "judge", "eval_judge"]
VISION_ROLES = frozenset({"vlm", "judge", "eval_judge"})  # the llm (summary) never sees pixels

PLACEHOLDERS = frozenset({
    "model", "served_name", "host", "port", "tp", "gpus", "max_model_len",
    "gpu_memory_utilization", "max_num_seqs", "adapter_name", "adapter_path", "max_lora_rank",
})  # fmt: skip
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")  # JSON such as {"image": 1} is left alone

VLLM_COMMAND = [
    "vllm", "serve", "{model}", "--host", "{host}", "--port", "{port}",
    "--served-model-name", "{served_name}",
    "--tensor-parallel-size", "{tp}", "--max-model-len", "{max_model_len}",
    "--enable-prefix-caching", "--gpu-memory-utilization", "{gpu_memory_utilization}",
    "--max-num-seqs", "{max_num_seqs}",
]  # fmt: skip
VLLM_VISION_ARGS = ["--limit-mm-per-prompt", '{"image": 1, "video": 1}']
VLLM_LORA_ARGS = [
    "--enable-lora", "--lora-modules", "{adapter_name}={adapter_path}",
    "--max-lora-rank", "{max_lora_rank}", "--max-loras", "1",
]  # fmt: skip

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)


def _check_template(args: list[str]) -> list[str]:
    for arg in args:
        for name in PLACEHOLDER.findall(arg):
            if name not in PLACEHOLDERS:
                raise ValueError(
                    f"unknown placeholder {{{name}}} in {arg!r}; use one of "
                    + ", ".join(f"{{{p}}}" for p in sorted(PLACEHOLDERS))
                )
    return args


class ServingGroup(StrictModel):
    """One server: the roles it serves, its GPUs and port, and what it loads."""

    role: Role | list[Role] = Field(description="a role, or roles sharing this server")
    port: Annotated[int, Field(ge=1, le=65535)]
    gpus: str = Field("0", pattern=r"^(\d+(,\d+)*)?$", description="CUDA_VISIBLE_DEVICES")
    tp: Annotated[int, Field(ge=1, le=64)] | None = Field(
        None, description="tensor parallel size (default: the number of GPUs in `gpus`)"
    )
    model: str | None = Field(None, description="default: the role's model in `models`")
    served_name: str | None = Field(None, description="default: the role's served model name")
    max_model_len: Annotated[int, Field(ge=256)] = 32768
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.90
    adapter_path: str | None = Field(
        None, description="a LoRA adapter folder served next to the base model (lora_args)"
    )
    adapter_name: str | None = Field(None, description="default: the role's `adapter`")
    max_lora_rank: Annotated[int, Field(ge=1)] = 64
    args: list[str] = Field(default_factory=list, description="appended to the command")
    flags: EndpointFlags | None = Field(None, description="default: serving.flags")

    @field_validator("args")
    @classmethod
    def _args(cls, args: list[str]) -> list[str]:
        return _check_template(args)

    @property
    def roles(self) -> list[Role]:
        """The roles this server serves, as a list."""
        return [self.role] if isinstance(self.role, str) else list(self.role)

    @property
    def gpu_count(self) -> int:
        return len(self.gpus.split(",")) if self.gpus else 0


class ServingConfig(StrictModel):
    """Servers for the model roles, launched by ``capflow endpoints up``."""

    command: Annotated[list[str], Field(min_length=1)] = Field(
        default_factory=lambda: list(VLLM_COMMAND)
    )
    vision_args: list[str] = Field(default_factory=lambda: list(VLLM_VISION_ARGS))
    lora_args: list[str] = Field(default_factory=lambda: list(VLLM_LORA_ARGS))
    groups: list[ServingGroup] = Field(default_factory=list)
    host: str = Field("127.0.0.1", description="the address servers listen on")
    url_host: str | None = Field(
        None, description="the host written into endpoint URLs (default: host, or this "
        "machine's name when host is 0.0.0.0)",
    )  # fmt: skip
    state_dir: str = Field(
        ".capflow/endpoints",
        description="a local folder for endpoints.json and server logs (relative paths: "
        "against the config file's folder)",
    )
    health_timeout_s: Annotated[float, Field(gt=0, le=7200)] = 900.0
    stop_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    env: dict[str, str] = Field(
        default_factory=dict,
        description="extra non-secret environment; secrets pass through from the environment",
    )
    flags: EndpointFlags = Field(
        default_factory=lambda: EndpointFlags(max_inflight=256),
        description="how the openai backend talks to these servers; max_inflight is also "
        "{max_num_seqs}",
    )

    @field_validator("command", "vision_args", "lora_args")
    @classmethod
    def _templates(cls, args: list[str]) -> list[str]:
        return _check_template(args)

    @field_validator("state_dir")
    @classmethod
    def _local(cls, value: str) -> str:
        if "://" in value:
            raise ValueError("state_dir must be a local folder (it holds process ids)")
        return value

    @field_validator("env")
    @classmethod
    def _no_secrets(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if _SECRET_NAME.search(name):
                raise ValueError(
                    f"{name}: do not put secrets in the config; export {name} in the "
                    "environment of `capflow endpoints up` (servers inherit it)"
                )
        return env

    @model_validator(mode="after")
    def _distinct(self) -> ServingConfig:
        ports = [g.port for g in self.groups]
        if len(set(ports)) != len(ports):
            raise ValueError(f"groups: two groups share a port ({ports}); give each its own")
        return self
