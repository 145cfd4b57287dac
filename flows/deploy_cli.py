"""`capflow deploy` and `capflow serve`: the deployments of ``infra/prefect.yaml`` on a server."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
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

CronOpt = Annotated[
    str | None, typer.Option(help="Cron of capflow-refresh (default: the file's, 0 2 * * *).")
]
PoolOpt = Annotated[
    str | None, typer.Option(help="Work pool name (default: capflow-process; made if missing).")
]

GpuPoolOpt = Annotated[
    str | None,
    typer.Option(
        help="Work pool of metacaptioner-finetune, e.g. one served by a worker on the GPU host "
        "(default: --pool's)."
    ),
]


def _config_param(config: Path | None, root: str | None) -> tuple[str | None, dict]:
    """The absolute config path and overrides (``--root``) the deployments pass to their
    flows, validated first."""
    overrides = {"storage": storage_override(root)} if root else {}
    load_cfg(config, **overrides)
    return (str(Path(config).expanduser().resolve()) if config else None), overrides


def _apply(
    config: tuple[str | None, dict], cron: str | None, pool: str | None, gpu_pool: str | None = None
) -> list[str]:
    from flows.deploy import DeployError, apply_deployments

    path, overrides = config
    try:
        return apply_deployments(
            config=path, cron=cron, pool=pool, overrides=overrides, gpu_pool=gpu_pool
        )
    except DeployError as err:
        raise fail(str(err), EXIT_INFRA) from None


def deploy(
    config: ConfigOpt = None,
    root: RootOpt = None,
    cron: CronOpt = None,
    pool: PoolOpt = None,
    gpu_pool: GpuPoolOpt = None,
) -> None:
    """Apply the deployments of infra/prefect.yaml to the server in PREFECT_API_URL.

    capflow-refresh (cron, nightly by default), metacaptioner-finetune (runs on each
    capflow.dataset.promoted event; on --gpu-pool when given) and capflow-evaluate (on
    demand), on work pools created (as process pools) when missing. The config path becomes
    their `config` parameter.
    Exit status 2 without a configured server (use `capflow serve`); 3 if applying failed.
    """
    from flows.deploy import configured_api_url, ui_url, use_api

    param = _config_param(config, root)
    url = configured_api_url()
    if not url:
        raise fail(
            "no Prefect server configured (PREFECT_API_URL is unset): export it, or run "
            "`capflow serve` to start a local server, worker and these deployments",
            EXIT_CONFIG,
        )
    with use_api(url):  # the in-process client too, whatever was loaded at import
        names = _apply(param, cron, pool, gpu_pool)
    typer.echo(f"applied {', '.join(names)} to {url}")
    typer.echo(f"UI: {ui_url(url)}/deployments")


def _local_home(root: str) -> Path:
    """Where a server started by `capflow serve` keeps its database."""
    from flows.deploy import REPO_ROOT

    base = Path(root) if "://" not in root else REPO_ROOT / ".capflow"
    return base / "prefect-home"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(
    config: ConfigOpt = None,
    root: RootOpt = None,
    port: Annotated[int, typer.Option(help="Port of a server started here.")] = 4200,
    cron: CronOpt = None,
    pool: PoolOpt = None,
) -> None:
    """Prefect UI scheduling on a laptop: server (if none is configured), pool, deployments,
    process worker. Prints the UI address; Ctrl-C stops what this command started.

    A server started here keeps its database under <storage root>/prefect-home.
    Exit status 2 for a configuration problem, 3 when the server or worker failed.
    """
    from flows import deploy as d

    param = _config_param(config, root)
    cfg = load_cfg(config, **param[1])
    started: list[tuple[str, subprocess.Popen[bytes]]] = []
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        url = d.configured_api_url()
        if not url:
            url = _start_local_server(cfg.storage.root, port, started)
        with d.use_api(url):
            names = _apply(param, cron, pool)
            pool_name = pool or d.POOL
            worker = d.start_worker(pool_name)
            started.append(("worker", worker))
            typer.echo(f"deployments: {', '.join(names)} (work pool {pool_name})")
            what = ", ".join(f"{name} (pid {proc.pid})" for name, proc in started)
            typer.echo(f"started: {what}")
            typer.echo(f"Prefect UI: {d.ui_url(url)}  (Ctrl-C stops what was started here)")
            while worker.poll() is None:
                time.sleep(0.5)
            raise fail(f"the worker exited with status {worker.returncode}", EXIT_INFRA)
    except KeyboardInterrupt:
        typer.echo("stopping...")
    finally:
        for name, proc in reversed(started):
            d.stop(proc)
            typer.echo(f"stopped {name}")


def _start_local_server(
    root: str, port: int, started: list[tuple[str, subprocess.Popen[bytes]]]
) -> str:
    """Start a server with its home under the storage root; its API URL once healthy."""
    from flows import deploy as d

    if not _port_free(port):
        raise fail(f"port {port} is in use: pass --port", EXIT_INFRA)
    home = _local_home(root)
    log = home.parent / "prefect-server.log"
    url = f"http://127.0.0.1:{port}/api"
    server = d.start_server(home, port, log)
    started.append(("server", server))
    typer.echo(f"starting a Prefect server (PREFECT_HOME={home}, log {log})")
    try:
        d.wait_healthy(url, server)
    except d.DeployError as err:
        raise fail(f"{err}; see {log}", EXIT_INFRA) from None
    return url
