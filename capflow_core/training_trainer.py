"""The transformers ``Trainer`` MetaCaptioner trains with: arguments, token counting, logs.

Imported only when training (it imports transformers at the top).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from capflow_core.config_finetune import FinetuneConfig
from capflow_core.training_examples import Example
from capflow_core.training_model import Precision

log = logging.getLogger("capflow")


@dataclass
class Tracker:
    """Training tokens (input tokens, padding excluded) seen by this run, and the logged losses."""

    tokens: int = 0
    losses: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)


class _CountingTrainer(Trainer):
    """Counts tokens in ``training_step``: batches skipped on resume are never counted."""

    tracker: Tracker

    def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.tracker.tokens += count_tokens(inputs)
        return super().training_step(model, inputs, *args, **kwargs)


class _LogCallback(TrainerCallback):
    def __init__(self, tracker: Tracker, on_log: Callable[[dict], None] | None) -> None:
        self.tracker = tracker
        self.on_log_fn = on_log

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.tracker.started = time.perf_counter()

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any
    ) -> None:
        if not logs or "loss" not in logs:
            return  # the end-of-training summary, or an evaluation
        elapsed = time.perf_counter() - self.tracker.started
        record = {
            "step": state.global_step,
            "epoch": state.epoch,
            "loss": float(logs["loss"]),
            "learning_rate": logs.get("learning_rate"),
            "train_tokens": self.tracker.tokens,
            "elapsed_s": elapsed,
            "tokens_per_s": self.tracker.tokens / elapsed if elapsed > 0 else 0.0,
        }
        self.tracker.losses.append(record["loss"])
        log.info(
            "fine-tuning step %d/%d: loss %.4f, lr %.3g, %.0f tokens/s",
            record["step"],
            state.max_steps,
            record["loss"],
            record["learning_rate"] or 0.0,
            record["tokens_per_s"],
        )
        if self.on_log_fn is not None:
            self.on_log_fn(record)


def count_tokens(batch: dict[str, Any]) -> int:
    """Real tokens of a batch: a padded batch's attention mask; a packed row has no padding."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def build_trainer(
    model: Any,
    collator: Callable[[list[Example]], dict[str, Any]],
    train: list[Example],
    ft: FinetuneConfig,
    precision: Precision,
    checkpoints: Path,
    *,
    on_log: Callable[[dict], None] | None,
    logging_steps: int,
) -> tuple[Trainer, Tracker]:
    """A seeded ``Trainer`` over ``train`` with checkpoints every ``save_steps`` (last 2 kept)."""
    args = TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=ft.batch_size,
        per_device_eval_batch_size=ft.batch_size,
        gradient_accumulation_steps=ft.grad_accum,
        learning_rate=ft.learning_rate,
        warmup_steps=ft.warmup_ratio,  # a float below 1 is a ratio of the total steps
        num_train_epochs=ft.epochs,
        max_steps=ft.max_steps,
        logging_steps=logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=ft.save_steps,
        save_total_limit=2,
        eval_strategy="no",
        prediction_loss_only=True,
        seed=ft.seed,
        data_seed=ft.seed,
        bf16=precision.bf16,
        use_cpu=precision.device == "cpu",
        dataloader_num_workers=_workers(ft, precision),
        remove_unused_columns=False,
        label_names=["labels"],
        report_to=[],
        disable_tqdm=True,
    )
    tracker = Tracker()
    trainer = _CountingTrainer(
        model=model,
        args=args,
        train_dataset=train,  # type: ignore[arg-type]  # a list is a map-style dataset
        data_collator=collator,
        callbacks=[_LogCallback(tracker, on_log)],
    )
    trainer.remove_callback(PrinterCallback)  # logs go to the capflow logger and on_log
    trainer.tracker = tracker
    return trainer, tracker


def _workers(ft: FinetuneConfig, precision: Precision) -> int:
    """Batch-building processes: on a GPU, collating (image processing, tokenising) would
    otherwise stall every step on the main thread."""
    if ft.dataloader_workers is not None:
        return ft.dataloader_workers
    return 0 if precision.device == "cpu" else 2
