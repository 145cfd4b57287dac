"""The ``capflow-evaluate`` Prefect flow: score a captioner on the held-out split."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, task

from flows.refresh import load


@task(name="evaluate-captioner")
def evaluate_captioner(
    config: str | dict | None, overrides: dict | None, captioner: str, version: int | None
) -> dict[str, Any]:
    """Caption the held-out set and score it with the eval judge."""
    from tasks.evaluate import evaluate

    cfg = load(config, overrides)
    return asdict(evaluate(cfg, cfg.storage.root, captioner=captioner, version=version))


@flow(name="capflow-evaluate")
def capflow_evaluate(
    config: str | dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    captioner: str = "capflow",
    version: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``captioner`` (capflow | single | model:NAME/N) on dataset ``version``."""
    return evaluate_captioner(config, overrides, captioner, version)


if __name__ == "__main__":
    capflow_evaluate()
