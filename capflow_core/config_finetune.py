"""Config section for MetaCaptioner fine-tuning (the paper's second half)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from capflow_core.config_models import StrictModel

INSTRUCTIONS = (
    "Describe this image in detail.",
    "Write a comprehensive caption for this image.",
    "What does this image show? Describe everything you see.",
    "Give a detailed, accurate description of the visual content.",
    "Caption this image thoroughly, covering objects, text, layout and style.",
)
VIDEO_INSTRUCTIONS = (
    "Describe this video in detail, in temporal order.",
    "Write a comprehensive caption for this video: what happens, and when.",
    "What happens in this video? Describe the events and details as they unfold.",
)


class LoraConfig(StrictModel):
    """peft LoRA settings (ignored when ``method: full``)."""

    r: Annotated[int, Field(ge=1, le=1024)] = 16
    alpha: Annotated[int, Field(ge=1)] = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="module names of the language model to adapt",
    )


class FinetuneConfig(StrictModel):
    """How MetaCaptioner is trained on a promoted dataset version."""

    base_model: str | None = Field(
        None, description="hub id or folder of the base VLM (default: the `vlm` role's model)"
    )
    method: Literal["lora", "full"] = "lora"
    lora: LoraConfig = LoraConfig()
    epochs: Annotated[float, Field(gt=0, le=100)] = 1.0
    max_steps: Annotated[int, Field(ge=-1)] = Field(-1, description="-1: run the epochs")
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    grad_accum: Annotated[int, Field(ge=1, le=4096)] = 1
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 1e-4
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.03
    max_length: Annotated[int, Field(ge=32, le=131_072)] = 4096
    save_steps: Annotated[int, Field(ge=1)] = 200
    seed: int = 0
    eval_percent: Annotated[float, Field(gt=0, lt=100)] = Field(
        5.0, description="held-out share, by asset-id hash: stable across dataset versions"
    )
    eval_max_samples: Annotated[int, Field(ge=1)] = 250
    mix_in: str | None = Field(
        None, description="a LLaVA-style JSON/JSONL of other instruction data to mix in"
    )
    mix_in_ratio: Annotated[float, Field(ge=0, le=10)] = Field(
        0.0, description="mixed-in examples per caption example"
    )
    allow_self_training: bool = Field(
        False, description="also train on captions written by a fine-tuned captioner"
    )
    min_new_samples: Annotated[int, Field(ge=0)] = Field(
        1000,
        description="new accepted captions since the last model before a promoted "
        "version triggers fine-tuning",
    )
    bf16: bool | None = Field(None, description="None: bf16 on a GPU that supports it")
    gradient_checkpointing: bool | None = Field(None, description="None: on when on a GPU")
    packing: bool | None = Field(None, description="None: sequence packing when on a GPU")
    device: str | None = Field(None, description="None: cuda when available, else cpu")
    dataloader_workers: Annotated[int, Field(ge=0, le=64)] | None = Field(
        None, description="processes building batches (None: 2 on a GPU, 0 on the CPU)"
    )
