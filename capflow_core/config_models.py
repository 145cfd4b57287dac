"""Config sections for model roles: in-process transformers models and served endpoints."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TransformersModel(StrictModel):
    """A model run in-process with transformers (CPU or one GPU)."""

    backend: Literal["transformers"]
    model: str = Field(description="hub id or local folder")
    revision: str | None = None
    adapter: str | None = Field(
        None, description="a peft LoRA adapter folder applied on top of `model` (MetaCaptioner)"
    )
    name: str | None = Field(
        None, description="the captioner id recorded on captions (default: model[:adapter])"
    )
    build_tiny: bool = Field(False, description="build the tiny offline model here if missing")
    device: str = "cpu"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_batch_size: Annotated[int, Field(ge=1, le=1024)] = 16
    batch_wait_ms: Annotated[float, Field(ge=0, le=1000)] = 5.0


class EndpointFlags(StrictModel):
    """What a server accepts, and how many requests to keep in flight on it."""

    structured_outputs: Literal["vllm", "json_schema", "none"] = "vllm"
    video: Literal["video_url", "frames", "none"] = "video_url"
    max_inflight: Annotated[int, Field(ge=1, le=4096)] = 64


class Endpoint(EndpointFlags):
    """One OpenAI-compatible server (``vllm serve`` in production)."""

    url: str = Field(pattern=r"^https?://")
    gpus: Annotated[int, Field(ge=0)] = 1


class OpenAIModel(StrictModel):
    """A model behind one or more OpenAI-compatible endpoints."""

    backend: Literal["openai"]
    model: str = Field(description="the served model name")
    revision: str | None = None
    adapter: str | None = Field(None, description="LoRA adapter name served by vLLM")
    endpoints: list[Endpoint] = Field(
        default_factory=list,
        description="the servers; empty when `endpoints_file` names no server for the role",
    )
    endpoints_file: str | None = Field(
        None,
        description="instead of `endpoints`: the endpoints.json `capflow endpoints up` wrote "
        "(read when the config loads; the role's servers and their flags)",
    )
    api_key_env: str | None = Field(None, description="name of the env var holding the key")
    timeout_s: Annotated[float, Field(gt=0)] = 300.0
    max_retries: Annotated[int, Field(ge=0, le=50)] = 6
    backoff_s: Annotated[float, Field(ge=0)] = 0.5
    max_backoff_s: Annotated[float, Field(ge=0)] = 20.0

    @model_validator(mode="after")
    def _some_endpoints(self) -> OpenAIModel:
        if not self.endpoints and not self.endpoints_file:
            raise ValueError("list at least 1 server in `endpoints`, or set `endpoints_file`")
        return self


ModelSpec = Annotated[TransformersModel | OpenAIModel, Field(discriminator="backend")]


class Models(StrictModel):
    """Model roles: ``vlm`` (router, agents, single mode), ``llm`` (summary), ``judge``."""

    vlm: ModelSpec
    llm: ModelSpec
    judge: ModelSpec
    eval_judge: ModelSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_endpoints_files(cls, data: Any) -> Any:
        """Fill each role's ``endpoints`` from its ``endpoints_file`` when that file exists.

        A missing file (servers not started yet) leaves ``endpoints`` empty: ``capflow
        endpoints up`` must load this config before it writes the file, and the backend
        says what to run when it is built.
        """
        if not isinstance(data, dict):
            return data
        from capflow_core.serving_state import role_endpoints

        out = dict(data)
        for role, spec in data.items():
            if not (isinstance(spec, dict) and spec.get("endpoints_file")):
                continue
            if spec.get("endpoints"):
                raise ValueError(f"{role}: set `endpoints` or `endpoints_file`, not both")
            found = role_endpoints(str(spec["endpoints_file"]), str(role))
            out[role] = {**spec, "endpoints": found}
        return out
