"""The ``metacaptioner-finetune`` Prefect flow: train MetaCaptioner on a dataset version.

The orchestration issue triggers it from the ``capflow.dataset.promoted`` event with the
event's version; run by hand with ``capflow finetune``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task

from flows.refresh import load


@task(name="train-metacaptioner", retries=1, retry_delay_seconds=[30])
def train_model(
    config: str | dict | None, overrides: dict | None, version: int | None, number: int | None
) -> dict[str, Any]:
    """Build the training set, train (resuming a checkpoint), register the model."""
    from prefect.runtime import flow_run

    from tasks.finetune import finetune

    log = get_run_logger()
    cfg = load(config, overrides)

    def progress(entry: dict) -> None:
        log.info(
            "step %s: loss %.4f, %.0f tokens/s",
            entry.get("step"),
            entry.get("loss", 0),
            entry.get("tokens_per_s", 0),
        )

    result = finetune(
        cfg,
        cfg.storage.root,
        version=version,
        number=number,
        flow_run_id=str(flow_run.id) if flow_run.id else None,
        on_log=progress,
    )
    return asdict(result)


@flow(name="metacaptioner-finetune")
def metacaptioner_finetune(
    config: str | dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    version: int | None = None,
    number: int | None = None,
) -> dict[str, Any]:
    """Fine-tune MetaCaptioner on dataset ``version`` (default: the latest) and register it.

    Args:
        config: path of the config YAML (None: the default rule).
        overrides: nested config keys merged over the file.
        version: the dataset version; None or 0 means the latest.
        number: continue registration ``metacaptioner/number`` after a crash.
    """
    return train_model(config, overrides, version or None, number)


if __name__ == "__main__":
    metacaptioner_finetune()
