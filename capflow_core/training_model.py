"""The model side of MetaCaptioner training: device and precision, LoRA wrapping, reloading.

LoRA adapts only the language model's projections named in ``finetune.lora.target_modules``
(the vision tower uses some of the same names, e.g. ``gate_proj``, so names are matched
under ``language_model`` only); full fine-tuning trains the language model and the
vision-language merger, and keeps the vision tower frozen in both methods.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capflow_core.config_finetune import FinetuneConfig

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class Precision:
    """Where and how training runs, after ``None`` (auto) settings are resolved."""

    device: str
    bf16: bool
    gradient_checkpointing: bool
    packing: bool = False


def resolve_precision(ft: FinetuneConfig) -> Precision:
    """cuda when available; bf16 and gradient checkpointing on a GPU, and sequence packing on a
    GPU with flash-attention (its variable-length kernel keeps attention per example; with
    SDPA a packed row attends through a block-diagonal mask, quadratic in the row's length);
    explicit config wins."""
    import torch

    device = ft.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.startswith("cuda")
    bf16 = ft.bf16 if ft.bf16 is not None else on_gpu and torch.cuda.is_bf16_supported()
    gc = ft.gradient_checkpointing if ft.gradient_checkpointing is not None else on_gpu
    packing = ft.packing if ft.packing is not None else on_gpu and has_flash_attention()
    return Precision(device, bool(bf16), bool(gc), bool(packing))


def has_flash_attention() -> bool:
    """Whether the ``flash_attn`` package (flash-attention 2) is installed."""
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


def lora_target_pattern(names: list[str]) -> str:
    """A peft ``target_modules`` regex: the named projections of the language model only."""
    alternatives = "|".join(re.escape(n) for n in names)
    return rf".*language_model\..*\.(?:{alternatives})"


def load_base(base_model: str, precision: Precision) -> tuple[Any, Any]:
    """The processor and the model (bf16 weights when training in bf16, else fp32)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(base_model)
    dtype = torch.bfloat16 if precision.bf16 else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if precision.device.startswith("cuda") and precision.bf16 and has_flash_attention():
        kwargs["attn_implementation"] = "flash_attention_2"
    model = AutoModelForImageTextToText.from_pretrained(base_model, **kwargs)
    return model.to(precision.device), processor


def prepare_model(model: Any, ft: FinetuneConfig, precision: Precision) -> Any:
    """Wrap ``model`` for training: LoRA adapters or full; vision tower frozen; GC if asked.

    Call after seeding: LoRA's initial weights are random.
    """
    if precision.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # no KV cache in training; the text model reads its own config, and a packed row is only
    # recognised (block-diagonal attention) when no cache is made
    model.config.use_cache = False
    model.config.get_text_config().use_cache = False
    if ft.method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=ft.lora.r,
            lora_alpha=ft.lora.alpha,
            lora_dropout=ft.lora.dropout,
            target_modules=lora_target_pattern(ft.lora.target_modules),
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, lora)
    for name, param in model.named_parameters():
        param.requires_grad = not _is_vision_tower(name)
    return model


def _is_vision_tower(name: str) -> bool:
    return ".visual." in f".{name}" and ".merger." not in name


def parameter_counts(model: Any) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def load_finetuned(
    base_model: str, adapter_dir: str | None, device: str = "cpu", dtype: str = "auto"
) -> tuple[Any, Any]:
    """A fine-tuned captioner for inference: base + peft adapter, or a full checkpoint folder.

    Args:
        base_model: hub id or folder of the base model the adapter was trained on.
        adapter_dir: a folder holding ``adapter_config.json`` (LoRA), or a full model folder
            (``config.json``); None loads the base model alone.
        device: where to load it.
        dtype: ``auto`` (bf16 on CUDA, fp32 elsewhere) or a torch dtype name.

    Returns:
        ``(model, processor)``; the model is in eval mode. The processor comes from
        ``adapter_dir`` when it holds one, else from the base model.

    Raises:
        FileNotFoundError: ``adapter_dir`` holds neither an adapter nor a model.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from capflow_core.backends.transformers_runner import resolve_dtype

    torch_dtype = resolve_dtype(dtype, device)
    folder = Path(adapter_dir) if adapter_dir else None
    if folder is not None and not (folder / ADAPTER_CONFIG).is_file():
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no adapter or model in {folder}")
        source = str(folder)
    else:
        source = base_model
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch_dtype)
    if folder is not None and (folder / ADAPTER_CONFIG).is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(folder))
    has_processor = folder is not None and any(
        (folder / name).is_file() for name in ("processor_config.json", "tokenizer_config.json")
    )
    processor = AutoProcessor.from_pretrained(str(folder) if has_processor else base_model)
    return model.to(device).eval(), processor
