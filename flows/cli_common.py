"""Options and helpers shared by every `capflow` command module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Config YAML (default: $CAPFLOW_CONFIG or configs/tiny.yaml)."
    ),
]

RootOpt = Annotated[
    str | None,
    typer.Option(help="Storage root: a folder or s3://bucket/prefix (overrides the config's)."),
]

SourceOpt = Annotated[
    list[str] | None,
    typer.Option(help="Source URI (local folder or s3://bucket/prefix); replaces config's."),
]

EXIT_CONFIG = 2
EXIT_INFRA = 3


def absolute(uri: str) -> str:
    """A local path made absolute (it may be read from another folder); URIs unchanged."""
    return uri if "://" in uri else str(Path(uri).expanduser().resolve())


def storage_override(root: str | None) -> dict[str, str] | None:
    return {"root": absolute(root)} if root else None


def flow_error(result: object) -> tuple[int, str] | None:
    """The exit status and message for a flow's error result: a configuration error 2,
    storage or a model server 3; None for anything else (each command decides)."""
    from capflow_core.errors import ConfigError, InfrastructureError

    if isinstance(result, ConfigError):
        return EXIT_CONFIG, str(result)
    if isinstance(result, InfrastructureError | OSError):
        return EXIT_INFRA, f"{type(result).__name__}: {result}"
    return None


def fail(message: str, code: int) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def load_cfg(config: Path | None, **overrides: object):  # -> Config (lazy import)
    from capflow_core.config import load_config
    from capflow_core.errors import ConfigError

    try:
        return load_config(config, overrides={k: v for k, v in overrides.items() if v} or None)
    except ConfigError as err:
        raise fail(str(err), EXIT_CONFIG) from None
