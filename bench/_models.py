"""The benchmark's configurations and backends: the tiny model's folder, or a model in memory.

In memory (the GPU mode) the model is Qwen2.5-VL-7B-Instruct's shape (or the tiny one) with
random weights, built directly on the device (nothing on disk, nothing downloaded), with the
tiny offline tokenizer and Qwen's real image pixel budget, so a 1024x768 image is ~1k
prompt tokens as in the paper.
"""

from __future__ import annotations

import os
from typing import Any

from capflow_core.backends import backends_for
from capflow_core.backends.base import Backend
from capflow_core.backends.transformers_backend import TransformersBackend
from capflow_core.config import (
    PACKAGED_CONFIG_DIR,
    Config,
    TransformersModel,
    config_from_dict,
    load_config,
)

MEMORY_MODEL_ID = "random-weights/qwen2.5-vl-{size}-shape"
# Qwen/Qwen2.5-VL-7B-Instruct preprocessor_config.json
REAL_MIN_PIXELS, REAL_MAX_PIXELS = 3136, 12_845_056


def tiny_setup(overrides: dict[str, Any]) -> tuple[Config, dict[str, Backend]]:
    """``configs/tiny.yaml`` (the tiny model, built on first use) with ``overrides`` merged in."""
    config = load_config(PACKAGED_CONFIG_DIR / "tiny.yaml", overrides=overrides)
    return config, backends_for(config)


class PreloadedBackend(TransformersBackend):
    """A :class:`TransformersBackend` around a model already in memory.

    ``TransformersBackend`` only loads from a folder or hub id; the 7B-shaped model exists
    only in GPU memory, so this subclass hands the backend a ready ``Runner`` instead.
    """

    def __init__(self, spec: TransformersModel, runner: Any) -> None:
        super().__init__(spec)
        self._preloaded = runner

    def _load(self) -> Any:
        return self._preloaded


def memory_setup(
    size: str, device: str, overrides: dict[str, Any], batching: dict[str, Any]
) -> tuple[Config, dict[str, Backend]]:
    """A random-weight Qwen2.5-VL of ``size`` built in memory on ``device``, for every role.

    bf16 on CUDA, float32 on the CPU (where only ``size="tiny"`` is practical). ``batching``
    holds the backend's ``max_batch_size`` and ``batch_wait_ms``.
    """
    from capflow_core.config import deep_merge

    dtype = "bfloat16" if device.startswith("cuda") else "float32"
    spec = {
        "backend": "transformers",
        "model": MEMORY_MODEL_ID.format(size=size),
        "device": device,
        "dtype": dtype,
        **batching,
    }
    data: dict[str, Any] = {"models": {r: dict(spec) for r in ("vlm", "llm", "judge")}}
    config = config_from_dict(deep_merge(data, overrides), where="the benchmark's in-memory config")
    backend = PreloadedBackend(TransformersModel(**spec), _memory_runner(size, device, dtype))
    return config, dict.fromkeys(("vlm", "llm", "judge", "eval_judge"), backend)


def _memory_runner(size: str, device: str, dtype: str) -> Any:
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    from capflow_core.backends.transformers_runner import Runner
    from capflow_core.tiny_model import model_config
    from capflow_core.tiny_tokenizer import train_tokenizer

    tokenizer = train_tokenizer()
    config = model_config(size, tokenizer)  # type: ignore[arg-type]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):  # weights are created (and randomly set) on the device
            model = Qwen2_5_VLForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(
        do_sample=False,
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=[config.text_config.eos_token_id, config.text_config.pad_token_id],
        pad_token_id=config.text_config.pad_token_id,
    )
    return Runner(model, _real_processor(tokenizer), device)


def _real_processor(tokenizer: Any) -> Any:
    """Qwen2.5-VL's processor around the tiny tokenizer, at the real model's pixel budget."""
    import transformers
    from transformers import Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

    images_cls = transformers.Qwen2VLImageProcessor
    if not any(c.__name__ == "TorchvisionBackend" for c in images_cls.__mro__):
        # older transformers: the torchvision-backed (fast) processor is a separate class
        images_cls = getattr(transformers, "Qwen2VLImageProcessorFast", images_cls)
    images = images_cls(min_pixels=REAL_MIN_PIXELS, max_pixels=REAL_MAX_PIXELS)
    videos = Qwen2VLVideoProcessor()
    return Qwen2_5_VLProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        video_processor=videos,
        chat_template=tokenizer.chat_template,
    )


def device_info(device: str) -> dict[str, Any]:
    """Library versions, and the GPU's name and memory on CUDA."""
    import platform

    import torch
    import transformers

    info: dict[str, Any] = {
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "load_avg_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews timings
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_memory_peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 1),
        )
    return info
