"""`capflow refresh`, `capflow dataset promote` and `capflow quality report`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli_common import (
    EXIT_CONFIG,
    EXIT_INFRA,
    ConfigOpt,
    RootOpt,
    SourceOpt,
    absolute,
    fail,
    flow_error,
    load_cfg,
    storage_override,
)

EXIT_GATE = 1
quality_app = typer.Typer(
    name="quality", help="Data-quality reports of dataset versions.", no_args_is_help=True
)


def prefect_defaults() -> None:
    """Settings a local, ephemeral Prefect server needs on a small machine (unless set)."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "capflow")  # into the run's logs


def overrides_for(root: str | None, sources: list[str] | None) -> dict[str, Any]:
    """Config overrides of the command-line options (what the flow run records)."""
    out: dict[str, Any] = {}
    if root:
        out["storage"] = storage_override(root)
    if sources:
        out["sources"] = [{"uri": absolute(u)} for u in sources]
    return out


def refresh(
    config: ConfigOpt = None,
    source: SourceOpt = None,
    root: RootOpt = None,
    run_id: Annotated[
        str | None, typer.Option(help="Run id (default: resume an unfinished run, else new).")
    ] = None,
    new_run: Annotated[
        bool, typer.Option("--new-run", help="Start a new run even if one is unfinished.")
    ] = False,
) -> None:
    """Refresh the dataset: ingest -> preprocess -> caption -> gate -> version -> report.

    Runs the `capflow-refresh` Prefect flow (on $PREFECT_API_URL, else a temporary local
    server). Exit status 0 when a version was promoted or nothing changed; 1 when the
    quality gate failed (no version; staged records kept for `capflow dataset promote`);
    2 for a configuration problem; 3 when storage or a model server failed.
    """
    from capflow_core.errors import ConfigError
    from flows.runner import preflight

    overrides = overrides_for(root, source)
    path = str(Path(config).expanduser().resolve()) if config else None
    cfg = load_cfg(config, **overrides)
    try:
        preflight(cfg)
    except ConfigError as err:
        raise fail(str(err), EXIT_CONFIG) from None
    prefect_defaults()
    from flows.refresh import capflow_refresh

    state = capflow_refresh(
        config=path, overrides=overrides, run_id=run_id, resume=not new_run, return_state=True
    )
    result = state.result(raise_on_failure=False)
    if error := flow_error(result):
        raise fail(error[1], error[0])
    if isinstance(result, BaseException) and not state.is_failed():
        raise result
    _print_run(cfg, state)


def _print_run(cfg: Any, state: Any) -> None:
    from capflow_core.runs_store import read_runs

    runs = read_runs(cfg.storage.root, cfg.s3)
    run = runs[-1] if runs else {}
    recon = run.get("reconciliation") or {}
    typer.echo(f"run {run.get('run_id')}: {run.get('status')}")
    for key in ("listed", "unchanged", "prepared", "rejected", "to_caption", "captioned"):
        typer.echo(f"  {key:<18}{recon.get(key, 0):>8}")
    for key in ("accepted", "caption_failed", "caption_rejected", "removed"):
        typer.echo(f"  {key:<18}{recon.get(key, 0):>8}")
    typer.echo("reconciled" if recon.get("reconciled") else "NOT reconciled: see the report")
    captioned = recon.get("captioned", 0)
    if captioned:
        per = 100 / captioned
        typer.echo(
            f"cost per 100 captions ${(run.get('cost_usd') or 0) * per:.4f} "
            f"(same tokens at API prices ${(run.get('api_usd') or 0) * per:.4f})"
        )
    typer.echo(f"gate {run.get('gate')}; dataset version {run.get('dataset_version')}")
    typer.echo(f"report -> {run.get('report_uri')}")
    if state.is_failed():
        for item in run.get("failing") or []:
            examples = ", ".join(str(e.get("asset_id", ""))[:12] for e in item.get("examples", []))
            typer.echo(f"  FAILED {item.get('expectation')} {item.get('column') or ''} {examples}")
        typer.secho(
            f"quality gate failed: no version added. Review the report, then "
            f"`capflow dataset promote {run.get('run_id')}` to promote anyway.",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(EXIT_GATE)


def promote(
    run_id: Annotated[str, typer.Argument(help="The run whose staged records to promote.")],
    config: ConfigOpt = None,
    root: RootOpt = None,
) -> None:
    """Promote a run's staged records after review (e.g. one whose quality gate failed).

    Adds one dataset version (nothing when the records are already in the dataset) and
    writes its report.
    """
    from capflow_core.errors import ConfigError, InfrastructureError
    from capflow_core.root_lock import root_lock
    from capflow_core.runs_store import read_run, record_run
    from tasks.caption_plan import removed_asset_ids
    from tasks.report import write_run_report
    from tasks.version import promote_run

    cfg = load_cfg(config, storage=storage_override(root))
    where = cfg.storage.root
    try:
        run = read_run(where, cfg.s3, run_id)
        if run is None:
            raise ConfigError(f"no run {run_id!r} under {where}: see `capflow dataset versions`")
        if run.get("status") == "running":
            raise ConfigError(f"run {run_id} has not finished: rerun `capflow refresh` first")
        gate = f"promoted-after-{run.get('gate') or 'review'}"
        # a refresh must not MERGE at the same time
        with root_lock(where, cfg.s3, cfg.storage.lock_wait_s, cfg.storage.lock_ttl_s):
            result = promote_run(
                cfg,
                where,
                run_id,
                removed=removed_asset_ids(where, cfg.s3),
                gate=gate,
                counts=run.get("counts") or {},
                keep_newer=True,
            )
    except ConfigError as err:
        raise fail(str(err), EXIT_CONFIG) from None
    except InfrastructureError as err:  # another writer kept the root's lock
        raise fail(str(err), EXIT_INFRA) from None
    except OSError as err:
        raise fail(f"storage: {type(err).__name__}: {err}", EXIT_INFRA) from None
    if result.version is None:
        typer.echo(f"run {run_id}: nothing to promote (its records are already in the dataset)")
        return
    keys = ("tokens_prompt", "tokens_completion", "gpu_s", "cost_usd", "api_usd")
    cost = {k: run.get(k) or 0 for k in keys} | {"captions": result.added + result.changed}
    report = write_run_report(
        cfg,
        where,
        run_id=run_id,
        version=result.version,
        gate={"passed": False, "label": gate, "failing": run.get("failing") or []},
        reconciliation=run.get("reconciliation") or {},
        cost=cost,
    )
    record_run(
        where, cfg.s3, run_id, status="promoted", dataset_version=result.version, report_uri=report
    )
    typer.echo(
        f"run {run_id} promoted as version {result.version}: {result.added} added, "
        f"{result.changed} changed, {result.removed} removed\nreport -> {report}"
    )


@quality_app.command("report")
def quality_report(
    config: ConfigOpt = None,
    root: RootOpt = None,
    version: Annotated[int | None, typer.Option(help="Dataset version (default: latest).")] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open it in a web browser.")] = False,
) -> None:
    """Rebuild the self-contained HTML report of a dataset version; print where it is."""
    from capflow_core.errors import ConfigError
    from tasks.report import rebuild_report

    cfg = load_cfg(config, storage=storage_override(root))
    try:
        uri = rebuild_report(cfg, cfg.storage.root, version)
    except ConfigError as err:
        raise fail(str(err), EXIT_CONFIG) from None
    typer.echo(uri)
    if open_:
        import webbrowser

        webbrowser.open(uri if "://" in uri else Path(uri).as_uri())
