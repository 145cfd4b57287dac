"""`capflow finetune`, `capflow evaluate` and `capflow models`: MetaCaptioner's commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli_common import (
    ConfigOpt,
    RootOpt,
    fail,
    flow_error,
    load_cfg,
    storage_override,
)

VersionOpt = Annotated[int | None, typer.Option(help="Dataset version (default: the latest).")]


def _run_flow(flow_fn: Any, config: Path | None, root: str | None, **params: Any) -> Any:
    """Run a Prefect flow with the CLI's config; map its errors to exit codes."""
    from flows.refresh_cli import prefect_defaults

    overrides = {"storage": storage_override(root)} if root else {}
    load_cfg(config, **overrides)  # a bad config fails here, before Prefect starts
    prefect_defaults()
    path = str(Path(config).expanduser().resolve()) if config else None
    state = flow_fn(config=path, overrides=overrides, return_state=True, **params)
    result = state.result(raise_on_failure=False)
    if error := flow_error(result):
        raise fail(error[1], error[0])
    if isinstance(result, BaseException):
        raise fail(f"{type(result).__name__}: {result}", 1)
    return result


def finetune(config: ConfigOpt = None, root: RootOpt = None, version: VersionOpt = None) -> None:
    """Fine-tune MetaCaptioner on a dataset version's accepted captions; register it.

    Runs the `metacaptioner-finetune` Prefect flow: LoRA (or full) fine-tuning of the
    config's `finetune.base_model` (default: the vlm role's model), resumable from its last
    checkpoint; the result is `model:metacaptioner/N` in `capflow models`.
    """
    from flows.finetune import metacaptioner_finetune

    out = _run_flow(metacaptioner_finetune, config, root, version=version)
    typer.echo(
        f"{out['ref']}: trained on {out['train_examples']} captions of dataset version "
        f"{out['dataset_version']} ({out['steps']} steps, train loss {out['train_loss']:.4f}, "
        f"{out['tokens_per_s']:.0f} tokens/s)\nadapter -> {out['path']}"
    )


def evaluate(
    captioner: Annotated[
        str, typer.Option(help="capflow, single, or a registered model: model:metacaptioner/N")
    ] = "capflow",
    config: ConfigOpt = None,
    root: RootOpt = None,
    version: VersionOpt = None,
) -> None:
    """Caption the held-out split with a captioner and score it with the eval judge.

    Prints the comparison table of every captioner evaluated on that dataset version (mean
    per criterion and overall, accept rate, tokens and cost per 100 captions).
    """
    from capflow_core.evaluations_store import read_evaluations
    from flows.evaluate import capflow_evaluate
    from quality.evaluation_report import comparison_table, report_uri

    out = _run_flow(capflow_evaluate, config, root, captioner=captioner, version=version)
    cfg = load_cfg(config, storage=storage_override(root))
    rows = read_evaluations(cfg.storage.root, cfg.s3, out["dataset_version"])
    typer.echo(comparison_table(rows))
    typer.echo(f"report -> {report_uri(cfg.storage.root, out['dataset_version'])}")


def models(
    config: ConfigOpt = None,
    root: RootOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List registered MetaCaptioner models with their lineage and scores."""
    from capflow_core.models_store import read_models

    cfg = load_cfg(config, storage=storage_override(root))
    rows = read_models(cfg.storage.root, cfg.s3)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo("no models registered: run `capflow finetune`")
        return
    for r in rows:
        loss = "-" if r.get("train_loss") is None else f"{r['train_loss']:.4f}"
        typer.echo(
            f"model:{r['name']}/{r['number']}  {r['status']:<8} dataset v{r['dataset_version']}  "
            f"{r['method']} on {r['base_model']}  train loss {loss}  {r['path']}"
        )
