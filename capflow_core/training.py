"""MetaCaptioner fine-tuning: transformers ``Trainer`` + peft LoRA (or full) on our collator.

Checkpoints go to ``<output_dir>/checkpoints/checkpoint-N`` (the last two kept) and a rerun
resumes from the newest complete one; the final adapter (``adapter/``) or model
(``model/``) is written next to its place and renamed in, with the processor, so a crash
never leaves a half-written result. With ``finetune.packing`` (default on a GPU) each batch is
one packed row without padding (:mod:`capflow_core.training_packing`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from capflow_core.config_finetune import FinetuneConfig
from capflow_core.training_examples import Example
from capflow_core.training_model import (
    Precision,
    load_base,
    load_finetuned,
    parameter_counts,
    prepare_model,
    resolve_precision,
)

if TYPE_CHECKING:
    from capflow_core.config import Config

__all__ = ["TrainResult", "last_checkpoint", "load_finetuned", "train", "train_model"]
log = logging.getLogger("capflow")


@dataclass
class TrainResult:
    """What one training run produced. ``losses`` are the logged training losses in order."""

    output_dir: str
    adapter_dir: str
    steps: int
    epochs: float
    train_loss: float
    eval_loss: float | None
    train_tokens: int
    seconds: float
    tokens_per_s: float
    resumed_from: str | None
    losses: list[float] = field(default_factory=list)
    hyperparameters: dict[str, Any] = field(default_factory=dict)


def train(
    train: list[Example],
    eval: list[Example],
    cfg: Config,
    output_dir: str | Path,
    *,
    base_model: str | None = None,
    resume: bool = True,
    on_log: Callable[[dict], None] | None = None,
    logging_steps: int = 5,
) -> TrainResult:
    """Fine-tune the base model on ``train``; evaluate the loss on ``eval``.

    Args:
        train: training examples (must not be empty).
        eval: held-out examples; empty skips evaluation (``eval_loss`` None).
        cfg: the configuration; ``cfg.finetune`` holds every training setting.
        output_dir: the run's folder (checkpoints, and the final adapter or model).
        base_model: hub id or folder; default ``finetune.base_model``, else the vlm role's.
        resume: continue from the newest checkpoint under ``output_dir`` if there is one.
        on_log: called every ``logging_steps`` optimizer steps with step, epoch, loss,
            learning_rate, train_tokens, elapsed_s and tokens_per_s.
        logging_steps: optimizer steps between logs (the first step is always logged).

    Returns:
        The :class:`TrainResult`.
    """
    ft = cfg.finetune
    source = base_model or ft.base_model or cfg.role("vlm").model
    precision = resolve_precision(ft)
    model, processor = load_base(source, precision)
    return train_model(
        model,
        processor,
        train,
        eval,
        ft,
        output_dir,
        base_model=source,
        precision=precision,
        resume=resume,
        on_log=on_log,
        logging_steps=logging_steps,
    )


def train_model(
    model: Any,
    processor: Any,
    train: list[Example],
    eval: list[Example],
    ft: FinetuneConfig,
    output_dir: str | Path,
    *,
    base_model: str,
    precision: Precision | None = None,
    resume: bool = True,
    on_log: Callable[[dict], None] | None = None,
    logging_steps: int = 5,
) -> TrainResult:
    """:func:`train` on a model already in memory (e.g. one built from a config on a GPU).

    ``model`` is the bare base model on its device; it is wrapped here (LoRA or full).
    """
    from transformers import set_seed

    from capflow_core.training_collate import Collator
    from capflow_core.training_packing import PackedPositions
    from capflow_core.training_trainer import build_trainer

    if not train:
        raise ValueError("no training examples")
    precision = precision or resolve_precision(ft)
    out = Path(output_dir).expanduser().resolve()
    checkpoints = out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    total = parameter_counts(model)[0]
    packing = PackedPositions(model.config) if precision.packing else None
    set_seed(ft.seed)  # before wrapping: LoRA's initial weights are random
    model = prepare_model(model, ft, precision)
    trainable = parameter_counts(model)[1]
    trainer, tracker = build_trainer(
        model,
        Collator(processor, ft.max_length, packing),
        train,
        ft,
        precision,
        checkpoints,
        on_log=on_log,
        logging_steps=logging_steps,
    )
    resumed_from = last_checkpoint(checkpoints) if resume else None
    if resumed_from:
        log.info("resuming fine-tuning from %s", resumed_from)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resumed_from)
    seconds = time.perf_counter() - started
    eval_loss = None
    if eval:
        eval_loss = float(trainer.evaluate(eval_dataset=eval)["eval_loss"])
    final = out / ("adapter" if ft.method == "lora" else "model")
    _save_final(model, processor, final)
    hyper = {
        **ft.model_dump(mode="json"),
        "base_model": base_model,
        "device": precision.device,
        "bf16": precision.bf16,
        "gradient_checkpointing": precision.gradient_checkpointing,
        "packing": precision.packing,
        "parameters": total,
        "trainable_parameters": trainable,
        "train_examples": len(train),
        "eval_examples": len(eval),
    }
    result = TrainResult(
        output_dir=str(out),
        adapter_dir=str(final),
        steps=trainer.state.global_step,
        epochs=float(trainer.state.epoch or 0.0),
        train_loss=float(output.training_loss),
        eval_loss=eval_loss,
        train_tokens=tracker.tokens,
        seconds=seconds,
        tokens_per_s=tracker.tokens / seconds if seconds > 0 else 0.0,
        resumed_from=resumed_from,
        losses=list(tracker.losses),
        hyperparameters=hyper,
    )
    log.info(
        "fine-tuning done: %d steps, train loss %.4f, eval loss %s, %.0f tokens/s -> %s",
        result.steps,
        result.train_loss,
        "-" if eval_loss is None else f"{eval_loss:.4f}",
        result.tokens_per_s,
        final,
    )
    return result


def last_checkpoint(folder: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` under ``folder`` (``trainer_state.json`` is
    written last, so a checkpoint cut short by a crash is skipped), or None."""
    root = Path(folder)
    if not root.is_dir():
        return None
    done = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and p.name.startswith("checkpoint-")
        and p.name.removeprefix("checkpoint-").isdigit()
        and (p / "trainer_state.json").is_file()
    ]
    if not done:
        return None
    return str(max(done, key=lambda p: int(p.name.removeprefix("checkpoint-"))))


def _save_final(model: Any, processor: Any, final: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        for path in [staging, *staging.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)  # mkdtemp makes 0o700
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
