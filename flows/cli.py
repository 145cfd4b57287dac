"""The `capflow` command line. Heavy imports happen inside commands: `--help` stays fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from flows.cli_common import (
    EXIT_CONFIG,
    EXIT_INFRA,
    ConfigOpt,
    RootOpt,
    SourceOpt,
    absolute,
    fail,
    load_cfg,
    storage_override,
)

app = typer.Typer(
    name="capflow",
    help=(
        "CapFlow: caption images and videos with a multi-agent workflow of open-source "
        "VLMs/LLMs (domain router -> functional agents -> summary -> judge).\n\n"
        "Every command takes --config F (default: $CAPFLOW_CONFIG, else the packaged "
        "configs/tiny.yaml, which runs a tiny offline model on the CPU)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def caption(
    paths: Annotated[list[str], typer.Argument(help="Image/video files or fsspec URIs.")],
    config: ConfigOpt = None,
    domain: Annotated[
        str | None, typer.Option(help="Domain key for every input (skips routing), e.g. natural.")
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="capflow (multi-agent workflow) or single (one VLM call).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write JSON lines here instead of standard output.")
    ] = None,
) -> None:
    """Caption files; print one JSON record per input (the canonical record).

    Exit status 0 when every input produced a record (a judge-rejected caption or a
    corrupt file recorded with its error both count); 2 for a configuration problem;
    3 when a model server could not be used.
    """
    from capflow_core.errors import ConfigError
    from flows.runner import caption_files

    if mode not in (None, "capflow", "single"):
        raise fail(f"--mode {mode!r}: use 'capflow' or 'single'", EXIT_CONFIG)
    cfg = load_cfg(config)
    try:
        records, _ = caption_files(cfg, paths, domain=domain, mode=mode, out=out)
    except ConfigError as err:
        raise fail(str(err), EXIT_CONFIG) from None
    infra = [r for r in records if any(m.startswith("infrastructure:") for m in r.errors.values())]
    if infra:
        first = next(iter(infra[0].errors.values()))
        raise fail(f"{len(infra)} input(s) could not reach a model server: {first}", EXIT_INFRA)


@app.command()
def doctor(config: ConfigOpt = None) -> None:
    """Check tools (Tesseract, decord, PyAV), model folders and endpoints; say what to fix."""
    from flows.doctor import run_doctor

    cfg = load_cfg(config)
    ok = run_doctor(cfg)
    raise typer.Exit(0 if ok else 1)


@app.command()
def ingest(
    config: ConfigOpt = None,
    source: SourceOpt = None,
    root: RootOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count only; write nothing.")] = False,
    run_id: Annotated[
        str | None, typer.Option(help="Run id (default: new); a rerun skips committed shards.")
    ] = None,
) -> None:
    """List sources, diff against the assets table, write shard manifests of what is new.

    Prints counts of new / changed / unchanged / removed objects and where manifests went.
    Exit status 2 for a configuration problem, 3 when storage could not be used.
    """
    from capflow_core.errors import ConfigError, InfrastructureError
    from tasks.ingest import ingest as run_ingest

    sources = [{"uri": absolute(u)} for u in source or []]
    cfg = load_cfg(config, storage=storage_override(root), sources=sources)
    try:
        res = run_ingest(cfg, run_id=run_id, dry_run=dry_run)
    except ConfigError as err:
        raise fail(str(err), EXIT_CONFIG) from None
    except (OSError, InfrastructureError) as err:
        raise fail(f"storage: {type(err).__name__}: {err}", EXIT_INFRA) from None
    typer.echo(
        f"run {res.run_id}: new {res.new}, changed {res.changed}, "
        f"unchanged {res.unchanged}, removed {res.removed}"
    )
    if res.dry_run:
        typer.echo(f"dry run: {res.pending} pending in {res.shards} shard(s); nothing written")
    elif res.pending:
        skipped = f" ({res.shards_skipped} already complete)" if res.shards_skipped else ""
        typer.echo(f"{res.pending} pending in {res.shards} shard(s){skipped} -> {res.manifests}")
    else:
        typer.echo("nothing new: no manifests written")


@app.command()
def preprocess(
    config: ConfigOpt = None,
    root: RootOpt = None,
    run_id: Annotated[
        str | None, typer.Option(help="Run to prepare (default: the latest with manifests).")
    ] = None,
    dask_address: Annotated[
        str | None, typer.Option(help="Join this Dask scheduler (default: a LocalCluster).")
    ] = None,
) -> None:
    """Prepare a run's pending shards on Dask; print the reconciliation table.

    Every listed object ends prepared, rejected (with a reason code) or unchanged.
    Exit status 2 for a configuration problem, 3 when storage could not be used.
    """
    from rich.progress import Progress

    from capflow_core.errors import ConfigError, InfrastructureError
    from tasks.preprocess import preprocess as run_preprocess

    cfg = load_cfg(config, storage=storage_override(root))
    try:
        with Progress(transient=True) as progress:
            bar = progress.add_task("preprocessing shards", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(bar, completed=done, total=total)

            res = run_preprocess(cfg, run_id=run_id, dask_address=dask_address, on_shard=advance)
    except ConfigError as err:
        raise fail(str(err), EXIT_CONFIG) from None
    except (OSError, InfrastructureError) as err:
        raise fail(f"storage: {type(err).__name__}: {err}", EXIT_INFRA) from None
    typer.echo(
        f"run {res.run_id}: {res.shards_done} shard(s) prepared, {res.shards_skipped} already done"
    )
    for label, count in res.table():
        typer.echo(f"  {label:<22}{count:>8}")
    typer.echo(
        "reconciled: listed = prepared + rejected + unchanged"
        if res.reconciled
        else "NOT reconciled: some listed objects are unaccounted for"
    )
    typer.echo(f"reconciliation -> {res.reconciliation}")


@app.command("tiny-model")
def tiny_model(
    directory: Annotated[Path, typer.Argument(help="Folder to write the model into.")],
) -> None:
    """Build the tiny random-weight Qwen2.5-VL used by tests and the demo (offline, seconds).

    The build is deterministic: the same bytes every time, so its revision hash is stable.
    """
    from capflow_core.tiny_model import build_tiny_model, folder_revision

    path = build_tiny_model(directory)
    typer.echo(f"tiny model written to {path} (revision {folder_revision(path)[:12]})")


@app.command()
def demo(
    config: ConfigOpt = None,
    root: Annotated[
        str | None,
        typer.Option(help="Local storage root (default: the config's, .capflow/data)."),
    ] = None,
    source: Annotated[
        Path | None,
        typer.Option(help="Folder to caption (default: samples generated in ROOT/demo-source)."),
    ] = None,
    use_profile: Annotated[
        bool,
        typer.Option(
            "--use-profile",
            help="Use your Prefect settings/server instead of a private home in ROOT.",
        ),
    ] = False,
) -> None:
    """Run the whole refresh pipeline on sample media; print the run and the dataset version.

    ingest -> preprocess (local Dask) -> caption -> quality gate -> dataset version -> report,
    as the `capflow-refresh` Prefect flow with its own Prefect home in ROOT/prefect-home.
    Rerunning is a no-op; a file added to the source is captioned alone. Exit status 0 when
    a version was promoted or nothing changed; 1 when the quality gate failed; 2 for a
    configuration problem; 3 when storage or a model server failed.
    """
    from flows.demo import run_demo

    cfg = load_cfg(config, storage=storage_override(root))
    path = str(Path(config).expanduser().resolve()) if config else None
    raise typer.Exit(run_demo(cfg, source, config=path, use_profile=use_profile))


def _mount() -> None:
    from flows.dataset_cli import app as dataset_app
    from flows.deploy_cli import deploy, serve
    from flows.endpoints_cli import app as endpoints_app
    from flows.export_cli import export
    from flows.model_cli import evaluate, finetune, models
    from flows.refresh_cli import promote, quality_app, refresh

    app.command()(refresh)
    for command in (finetune, evaluate, models, deploy, serve):
        app.command()(command)
    dataset_app.command()(promote)
    dataset_app.command()(export)
    app.add_typer(dataset_app)
    app.add_typer(endpoints_app)
    app.add_typer(quality_app)


_mount()


def main() -> None:
    os.environ.setdefault("TQDM_DISABLE", "1")  # model-loading bars would bury our progress bar
    app()


if __name__ == "__main__":
    sys.exit(main())
