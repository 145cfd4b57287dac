"""The fine-tuning benchmark's parts: model and batches, matmul peak, our run and the plain loop.

Both runs start from the same random-weight model (rebuilt from the same seed), wrapped by
the same :func:`capflow_core.training_model.prepare_model`, fed by the same collator over
the same examples; every sequence is exactly ``seq`` tokens (captions are cut to fit), so
tokens per step are identical whatever order the batches come in.
"""

from __future__ import annotations

import io
import time
from typing import Any

from capflow_core.config_finetune import FinetuneConfig
from capflow_core.training_examples import Example
from capflow_core.training_model import Precision

PATCH = 28  # pixels per visual token side after Qwen2.5-VL's 2x2 merge of 14 px patches


def build_model(size: str, device: str, bf16: bool, seed: int) -> tuple[Any, Any, int]:
    """A random-weight Qwen2.5-VL of ``size`` built on ``device``, the real-budget processor,
    and its parameter count. The same seed gives the same weights."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from bench._models import _real_processor
    from capflow_core.tiny_model import model_config
    from capflow_core.tiny_tokenizer import train_tokenizer
    from capflow_core.training_model import has_flash_attention

    tokenizer = train_tokenizer()
    config = model_config(size, tokenizer)  # type: ignore[arg-type]
    if device == "cuda" and bf16 and has_flash_attention():  # as training.load_base does
        config._attn_implementation = "flash_attention_2"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16 if bf16 else torch.float32)
    torch.manual_seed(seed)
    try:
        with torch.device(device):  # weights are created (and randomly set) on the device
            model = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model, _real_processor(tokenizer), sum(p.numel() for p in model.parameters())


def make_examples(processor: Any, count: int, seq: int, seed: int = 0) -> list[Example]:
    """``count`` noise-image examples whose prompt + caption fill ``seq`` tokens exactly.

    The image is sized so its visual tokens take ~85% of the sequence after the chat
    template; the caption is longer than the rest and cut to ``seq`` by the collator.
    """
    import numpy as np
    from PIL import Image

    from capflow_core.training_collate import IGNORE, Collator

    rng = np.random.default_rng(seed)

    def jpeg(width: int, height: int) -> bytes:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
        return buf.getvalue()

    caption = " ".join(f"word{i % 97}" for i in range(seq))
    probe = Example("probe", "probe", "image", "Describe this image in detail.", caption)
    probe.image = jpeg(2 * PATCH, 2 * PATCH)  # 4 visual tokens, the processor's minimum
    overhead = Collator(processor, 10 * seq).encode_one(probe).labels.count(IGNORE) - 4
    visual = int((seq - overhead) * 0.85)
    if visual < 4:
        raise ValueError(f"--seq {seq} is too short: the chat template alone takes {overhead}")
    cols = max(2, int(visual**0.5))
    rows = max(2, visual // cols)
    return [
        Example(
            f"x{i}", f"x{i}", "image", probe.instruction, caption, jpeg(cols * PATCH, rows * PATCH)
        )
        for i in range(count)
    ]


def matmul_peak(device: str, bf16: bool, seconds: float = 2.0) -> dict[str, Any]:
    """Measured matmul throughput: bf16 8192^3 on a GPU, fp32 1024^3 on the CPU."""
    import torch

    n = 8192 if device.startswith("cuda") else 1024
    dtype = torch.bfloat16 if bf16 else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(3):
        a @ b
    sync()
    iters, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(10):
            a @ b
        iters += 10
        sync()
    elapsed = time.perf_counter() - started
    return {
        "n": n,
        "dtype": str(dtype).removeprefix("torch."),
        "flops_per_s": 2 * n**3 * iters / elapsed,
    }


def run_ours(
    model: Any,
    processor: Any,
    examples: list[Example],
    ft: FinetuneConfig,
    precision: Precision,
    warmup: int,
    out_dir: str,
) -> dict[str, Any]:
    """Our :func:`capflow_core.training.train_model`; steady state timed from its step logs."""
    from capflow_core.training import train_model

    marks: list[tuple[int, float, int]] = []
    result = train_model(
        model,
        processor,
        examples,
        [],
        ft,
        out_dir,
        base_model="random-weights",
        precision=precision,
        resume=False,
        logging_steps=1,
        on_log=lambda r: marks.append((r["step"], time.perf_counter(), r["train_tokens"])),
    )
    return _steady(marks, warmup) | {"total_steps": result.steps, "losses": result.losses}


def run_plain(
    model: Any,
    processor: Any,
    examples: list[Example],
    ft: FinetuneConfig,
    precision: Precision,
    warmup: int,
) -> dict[str, Any]:
    """A bare loop: collate, forward, backward, clip, fused AdamW step (as the Trainer does)."""
    import contextlib

    import torch
    from transformers import set_seed

    from capflow_core.training_collate import Collator
    from capflow_core.training_model import prepare_model
    from capflow_core.training_packing import PackedPositions
    from capflow_core.training_trainer import count_tokens

    set_seed(ft.seed)
    model = prepare_model(model, ft, precision)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=ft.learning_rate, fused=True)
    packing = PackedPositions(model.config) if precision.packing else None
    collate = Collator(processor, ft.max_length, packing)
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        if precision.bf16
        else contextlib.nullcontext()
    )
    marks, losses, tokens = [], [], 0
    for step in range(1, ft.max_steps + 1):
        first = (step - 1) * ft.batch_size % len(examples)
        batch = collate((examples * 2)[first : first + ft.batch_size])
        tokens += count_tokens(batch)
        batch = {k: v.to(precision.device) for k, v in batch.items()}
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())  # syncs, as the Trainer's per-step log does
        marks.append((step, time.perf_counter(), tokens))
    return _steady(marks, warmup) | {"total_steps": ft.max_steps, "losses": losses}


def _steady(marks: list[tuple[int, float, int]], warmup: int) -> dict[str, Any]:
    """Tokens/s between the end of step ``warmup`` and the end of the last step."""
    start = next(m for m in marks if m[0] == max(warmup, 1))
    end = marks[-1]
    seconds, tokens = end[1] - start[1], end[2] - start[2]
    return {
        "timed_steps": end[0] - start[0],
        "timed_seconds": seconds,
        "timed_tokens": tokens,
        "seconds_per_step": seconds / max(end[0] - start[0], 1),
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
    }
