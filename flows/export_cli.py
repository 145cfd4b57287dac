"""`capflow dataset export`: write one dataset version in a training format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli_common import (
    EXIT_CONFIG,
    EXIT_INFRA,
    ConfigOpt,
    RootOpt,
    fail,
    load_cfg,
    storage_override,
)

FORMATS = ("llava", "parquet", "webdataset")  # = tasks.export_formats.FORMATS (kept import-free)


def export(
    config: ConfigOpt = None,
    root: RootOpt = None,
    version: Annotated[
        int | None, typer.Option(help="Dataset version (default: the latest).")
    ] = None,
    format: Annotated[
        str, typer.Option("--format", help="llava (LLaVA/InternVL JSON), parquet or webdataset.")
    ] = "llava",
    out: Annotated[
        Path,
        typer.Option(help="Output folder: new, empty, or a previous export (replaced)."),
    ] = ...,
    include_rejected: Annotated[
        bool,
        typer.Option("--include-rejected", help="Also export judge-rejected captions."),
    ] = False,
) -> None:
    """Export a dataset version with its media, license and provenance.

    llava: data.json of conversation records (the MetaCaptioner training format) with
    images/ and videos/; parquet: data/train-*.parquet that Hugging Face `datasets` loads;
    webdataset: shard-*.tar with <asset_id>.jpg|.mp4, .txt and .json. Assets whose
    prepared media is gone are listed as skipped. Exit status 2 for a bad option, version
    or output folder, 3 when storage could not be used.
    """
    from deltalake.exceptions import DeltaError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from capflow_core.errors import ConfigError, InfrastructureError
    from tasks.export import export_dataset

    if format not in FORMATS:
        raise fail(f"--format {format!r}: use one of {', '.join(FORMATS)}", EXIT_CONFIG)
    cfg = load_cfg(config, storage=storage_override(root))
    columns = (TextColumn("exporting"), BarColumn(), MofNCompleteColumn())
    try:
        with Progress(*columns, transient=True) as progress:
            bar = progress.add_task("export", total=None)
            res = export_dataset(
                cfg.storage.root,
                cfg.s3,
                out=out,
                fmt=format,
                version=version,
                include_rejected=include_rejected,
                on_start=lambda total: progress.update(bar, total=total),
                on_item=lambda: progress.advance(bar),
            )
    except ConfigError as err:
        raise fail(str(err), EXIT_CONFIG) from None
    except (OSError, InfrastructureError, DeltaError) as err:
        raise fail(f"storage: {type(err).__name__}: {err}", EXIT_INFRA) from None
    for skip in res.skipped:
        typer.secho(
            f"skipped {skip['asset_id']} ({skip['source_uri']}): {skip['reason']}: "
            f"{skip['detail']}",
            fg=typer.colors.YELLOW,
            err=True,
        )
    typer.echo(
        f"version {res.version}: {res.records} record(s), {res.media_files} media file(s), "
        f"{len(res.skipped)} skipped -> {res.out} ({res.format})"
    )
