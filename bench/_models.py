"""The benchmark's configurations and backends: the tiny model's folder, or a model in memory.

In memory (the GPU mode) the model is Qwen2.5-VL-7B-Instruct's shape (or the tiny one) with
random weights, built directly on the device (nothing on disk, nothing downloaded), with the
tiny offline tokenizer and Qwen's real image pixel budget, so a 1024x768 image is ~1k
prompt tokens as in the paper.
"""

from __future__ import annotations

import os
import time
from typing import Any

from capflow_core.backends import backends_for
from capflow_core.backends.base import Backend, GenRequest, GenResult
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


class CountingBackend(TransformersBackend):
    """A :class:`TransformersBackend` that also counts decode steps and busy time.

    One micro-batch runs until its longest row is done, so the steps a run costs are the sum
    over batches of the longest reply; rows of mixed lengths in one batch waste steps. Busy
    time is the time spent inside micro-batches (the model runs one at a time).
    """

    def __init__(self, spec: TransformersModel, runner: Any = None) -> None:
        super().__init__(spec, runner)
        self.decode_steps = 0
        self.busy_s = 0.0

    def _run(self, requests: list[GenRequest]) -> list[GenResult]:
        started = time.perf_counter()
        results = super()._run(requests)
        self.busy_s += time.perf_counter() - started
        self.decode_steps += max((r.completion_tokens for r in results), default=0)
        return results


def tiny_setup(overrides: dict[str, Any]) -> tuple[Config, dict[str, Backend]]:
    """``configs/tiny.yaml`` (the tiny model, built on first use) with ``overrides`` merged in.

    Roles with the same model spec share one backend, as ``backends_for`` does.
    """
    config = load_config(PACKAGED_CONFIG_DIR / "tiny.yaml", overrides=overrides)

    def counting(spec: Any) -> Backend:
        if not isinstance(spec, TransformersModel):
            raise ValueError(f"the benchmark runs the transformers backend, not {spec.backend}")
        return CountingBackend(spec)

    return config, backends_for(config, factory=counting)


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
    backend = CountingBackend(TransformersModel(**spec), _memory_runner(size, device, dtype))
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
