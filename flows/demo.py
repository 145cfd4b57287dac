"""`capflow demo`: the whole refresh pipeline on generated sample media, on this machine.

It runs the ``capflow-refresh`` flow (ingest -> preprocess on Dask -> caption -> gate ->
version -> report) against a local storage root, with its own Prefect home under that root
(a temporary local server, never the user's configured one unless ``use_profile``), and
prints what the run did (:mod:`flows.demo_view`). The sample files are generated once: a
rerun must see the same etags, so it is a no-op; a file added to the source is captioned
alone into a new dataset version.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from capflow_core.config import Config

EXIT_GATE, EXIT_CONFIG, EXIT_INFRA = 1, 2, 3
SAMPLES_LICENSE = {"license": "CC0-1.0", "provenance": "capflow demo samples"}


def demo_source(root: Path, source: Path | None, say: Any) -> Path | None:
    """The folder to caption: ``source``, else ``<root>/demo-source`` (generated if empty).

    Returns None when a given ``source`` has no files.
    """
    from capflow_core.sample_media import generate_samples

    if source is not None:
        source = source.expanduser().resolve()
        return source if source.is_dir() and any(p.is_file() for p in source.rglob("*")) else None
    source = root / "demo-source"
    if not source.is_dir() or not any(source.iterdir()):
        generate_samples(source)  # only when empty: rewriting would change every etag
        say(f"generated sample media in {source}")
    return source


def prefect_environment(home: Path) -> dict[str, str]:
    """Settings of a private, temporary local Prefect server whose database is under ``home``.

    ``PREFECT_API_URL`` must be unset, not empty, for that server: with an empty value
    Prefect's events worker stops, and no events or artifacts reach the server.
    """
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_PROFILES_PATH": str(home / "profiles.toml"),  # not the user's profiles
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "GX_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "capflow",
    }


def use_private_prefect(home: Path) -> Any:
    """Point Prefect at ``home``; returns a context manager to run the flow in.

    Prefect reads its settings when first imported, so the environment is set before that;
    if it was imported already (in-process callers), its settings are overridden as well.
    """
    import contextlib

    home.mkdir(parents=True, exist_ok=True)
    env = prefect_environment(home)
    os.environ.update(env)
    for key in ("PREFECT_API_URL", "PREFECT_PROFILE"):
        os.environ.pop(key, None)
    if "prefect" not in sys.modules:
        return contextlib.nullcontext()
    import prefect.settings as ps

    return ps.temporary_settings(
        updates={
            ps.PREFECT_HOME: env["PREFECT_HOME"],
            ps.PREFECT_SERVER_DATABASE_CONNECTION_URL: env[
                "PREFECT_SERVER_DATABASE_CONNECTION_URL"
            ],
            ps.PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 90,
            ps.PREFECT_SERVER_ANALYTICS_ENABLED: False,
        },
        restore_defaults={ps.PREFECT_API_URL},
    )


def _nothing_to_do(config: str | None, overrides: dict[str, Any], root: Path, console: Any) -> bool:
    """Whether the dataset is current: a rerun with nothing new, stale, failed or unfinished
    then answers in seconds, without starting Prefect or the model."""
    import time

    from capflow_core.captions_store import latest_version
    from capflow_core.config import load_config
    from tasks.refresh_check import pending_work

    started = time.perf_counter()
    cfg = load_config(config, overrides)
    current = latest_version(str(root), cfg.s3)
    if current is None or not pending_work(cfg).nothing:
        return False
    console.print(
        f"nothing changed: dataset version {current} is current (checked the sources, "
        f"fingerprints and retries in {time.perf_counter() - started:.1f} s; no run needed)"
    )
    from tasks.report import report_uri

    console.print(f"report -> {report_uri(str(root), version=current, run_id='')}")
    return True


def run_demo(
    cfg: Config,
    source: Path | None = None,
    *,
    config: str | None = None,
    use_profile: bool = False,
) -> int:
    """Run the refresh flow on the demo source and print what it did.

    Args:
        cfg: the loaded config (its storage root must be a local folder).
        source: the folder to caption (None: generated samples under the root).
        config: the config file the flow loads (None: the default rule); ``cfg`` must be it.
        use_profile: use the user's Prefect settings instead of a private home.

    Returns:
        The exit status: 0 when a version was promoted or nothing changed, 1 when the quality
        gate failed, 2 for a configuration problem, 3 when storage or a model server failed.
    """
    from capflow_core.errors import ConfigError
    from flows.cli_common import flow_error
    from flows.demo_view import console_for, print_outcome
    from flows.refresh_cli import prefect_defaults
    from flows.runner import preflight

    console = console_for()
    if "://" in cfg.storage.root:
        console.print("[red]the demo writes to a local folder: pass --root DIR[/red]")
        return EXIT_CONFIG
    root = Path(cfg.storage.root).resolve()
    folder = demo_source(root, source, console.print)
    if folder is None:
        console.print(f"[red]no files in {source}[/red]")
        return EXIT_CONFIG
    src: dict[str, Any] = {"uri": str(folder)} | (SAMPLES_LICENSE if source is None else {})
    overrides = {"storage": {"root": str(root)}, "sources": [src]}
    try:
        preflight(cfg)
    except ConfigError as err:
        console.print(f"[red]error: {err}[/red]")
        return EXIT_CONFIG
    if _nothing_to_do(config, overrides, root, console):
        return 0
    home = root / "prefect-home"
    if use_profile:
        import contextlib

        prefect_defaults()
        settings = contextlib.nullcontext()
    else:
        settings = use_private_prefect(home)
    with settings:
        from flows.refresh import capflow_refresh

        state = capflow_refresh(config=config, overrides=overrides, return_state=True)
        result = state.result(raise_on_failure=False)
    if error := flow_error(result):
        console.print(f"[red]error: {error[1]}[/red]")
        return error[0]
    if isinstance(result, BaseException) and not _gate_failed(state):
        raise result
    failed = print_outcome(cfg, str(root), console, None if use_profile else home)
    return EXIT_GATE if failed else 0


def _gate_failed(state: Any) -> bool:
    return state.is_failed() and "quality gate failed" in (state.message or "")
