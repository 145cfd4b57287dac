"""Fine-tune MetaCaptioner on a dataset version and register it (plain function).

The model row is registered as ``training`` before the first step (so concurrent runs get
different numbers and a crash leaves a visible row), then ``ready`` with its lineage and
losses, or ``failed``. Training writes under ``<root>/models/<name>/<n>/`` for a local
root; for an S3 root it trains in a local work folder (checkpoints there, so a rerun on the
same machine resumes) and uploads the final adapter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capflow_core.config import Config, is_path_like
from capflow_core.errors import ConfigError
from capflow_core.storage import filesystem, is_s3

log = logging.getLogger("capflow")
NAME = "metacaptioner"


@dataclass(frozen=True)
class FinetuneResult:
    """What a fine-tuning run registered."""

    name: str
    number: int
    ref: str  # "model:<name>/<n>"
    path: str
    dataset_version: int
    train_examples: int
    eval_examples: int
    train_loss: float
    eval_loss: float | None
    steps: int
    tokens_per_s: float
    resumed_from: str | None


def base_model(cfg: Config) -> str:
    """The base VLM to fine-tune: ``finetune.base_model``, else the ``vlm`` role's model."""
    return cfg.finetune.base_model or cfg.role("vlm").model


def finetune(
    cfg: Config,
    root: str,
    *,
    version: int | None = None,
    name: str = NAME,
    number: int | None = None,
    run_id: str | None = None,
    flow_run_id: str | None = None,
    on_log: Any = None,
) -> FinetuneResult:
    """Build the training set of ``version`` (default: latest), train, register the model.

    Args:
        number: the registration ``name/number`` to (re)train; default: the newest one if
            its training of this version never finished (resumed from its checkpoint),
            else the next free number.

    Raises:
        ConfigError: no dataset version, or no training examples in it.
    """
    from capflow_core.models_store import model_dir, next_number, register_model
    from capflow_core.training import train
    from capflow_core.training_data import build_training_set

    data = build_training_set(root, cfg.s3, cfg, version)
    if not data.train:
        raise ConfigError(
            f"dataset version {data.version} has no accepted captions to train on "
            f"(skipped: {data.skipped}); run `capflow refresh` first"
        )
    number = number or _unfinished(root, cfg, name, data.version) or next_number(root, cfg.s3, name)
    where = model_dir(root, name, number)
    base = base_model(cfg)
    register_model(
        root,
        cfg.s3,
        name,
        number,
        status="training",
        method=cfg.finetune.method,
        base_model=base,
        base_revision=_revision(cfg, base),
        dataset_version=data.version,
        train_examples=len(data.train),
        eval_examples=len(data.eval),
        seed=cfg.finetune.seed,
        run_id=run_id,
        flow_run_id=flow_run_id,
    )
    work = _work_dir(where, name, number)
    try:
        result = train(data.train, data.eval, cfg, work, base_model=base, on_log=on_log)
        if is_s3(where):
            fs, path = filesystem(where, cfg.s3)
            fs.put(result.adapter_dir, f"{path}/{Path(result.adapter_dir).name}", recursive=True)
    except Exception:
        register_model(root, cfg.s3, name, number, status="failed")
        raise
    register_model(
        root,
        cfg.s3,
        name,
        number,
        status="ready",
        hyperparameters=result.hyperparameters,
        train_loss=result.train_loss,
        eval_loss=result.eval_loss,
        path=f"{where.rstrip('/')}/{Path(result.adapter_dir).name}",
    )
    log.info(
        "registered %s/%d: train loss %.4f on %d examples",
        name,
        number,
        result.train_loss,
        len(data.train),
    )
    return FinetuneResult(
        name=name,
        number=number,
        ref=f"model:{name}/{number}",
        path=f"{where.rstrip('/')}/{Path(result.adapter_dir).name}",
        dataset_version=data.version,
        train_examples=len(data.train),
        eval_examples=len(data.eval),
        train_loss=result.train_loss,
        eval_loss=result.eval_loss,
        steps=result.steps,
        tokens_per_s=result.tokens_per_s,
        resumed_from=result.resumed_from,
    )


def _unfinished(root: str, cfg: Config, name: str, version: int) -> int | None:
    """The number of a registration of ``version`` whose training never finished (the
    process died): rerunning resumes it from its last checkpoint instead of starting over."""
    from capflow_core.models_store import read_models

    rows = read_models(root, cfg.s3, name)
    if rows and rows[-1]["status"] == "training" and rows[-1]["dataset_version"] == version:
        return int(rows[-1]["number"])
    return None


def _work_dir(where: str, name: str, number: int) -> Path:
    if not is_s3(where):
        return Path(where)
    return Path.home() / ".cache" / "capflow" / "train" / f"{name}-{number}"


def _revision(cfg: Config, base: str) -> str:
    from capflow_core.tiny_model import folder_revision

    if is_path_like(base) or Path(base).expanduser().is_dir():
        return folder_revision(Path(base).expanduser())
    return cfg.role("vlm").revision or "unpinned"
