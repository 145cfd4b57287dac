"""Config sections for model roles: in-process transformers models and served endpoints."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


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


class Endpoint(StrictModel):
    """One OpenAI-compatible server (``vllm serve`` in production)."""

    url: str = Field(pattern=r"^https?://")
    structured_outputs: Literal["vllm", "json_schema", "none"] = "vllm"
    video: Literal["video_url", "frames", "none"] = "video_url"
    max_inflight: Annotated[int, Field(ge=1, le=4096)] = 64
    gpus: Annotated[int, Field(ge=0)] = 1


class OpenAIModel(StrictModel):
    """A model behind one or more OpenAI-compatible endpoints."""

    backend: Literal["openai"]
    model: str = Field(description="the served model name")
    revision: str | None = None
    adapter: str | None = Field(None, description="LoRA adapter name served by vLLM")
    endpoints: Annotated[list[Endpoint], Field(min_length=1)]
    api_key_env: str | None = Field(None, description="name of the env var holding the key")
    timeout_s: Annotated[float, Field(gt=0)] = 300.0
    max_retries: Annotated[int, Field(ge=0, le=50)] = 6
    backoff_s: Annotated[float, Field(ge=0)] = 0.5
    max_backoff_s: Annotated[float, Field(ge=0)] = 20.0


ModelSpec = Annotated[TransformersModel | OpenAIModel, Field(discriminator="backend")]


class Models(StrictModel):
    """Model roles: ``vlm`` (router, agents, single mode), ``llm`` (summary), ``judge``."""

    vlm: ModelSpec
    llm: ModelSpec
    judge: ModelSpec
    eval_judge: ModelSpec | None = None
