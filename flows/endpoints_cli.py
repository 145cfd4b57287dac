"""`capflow endpoints up|down|status`: the model servers of the config's ``serving`` section."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from flows.cli_common import EXIT_CONFIG, EXIT_INFRA, ConfigOpt, fail, load_cfg

app = typer.Typer(
    name="endpoints",
    help="Start, stop and inspect one model server per role / GPU group (serving.groups; "
    "default command: vllm serve with the infra/vllm/ recipe's flags). `up` writes the "
    "endpoints file that models.*.endpoints_file reads.",
    no_args_is_help=True,
)


def _guard(action):  # -> action's result; maps the three error kinds to exit codes
    from capflow_core.errors import ConfigError, InfrastructureError

    try:
        return action()
    except ConfigError as err:
        raise fail(str(err), EXIT_CONFIG) from None
    except InfrastructureError as err:
        raise fail(str(err), EXIT_INFRA) from None


@app.command()
def up(config: ConfigOpt = None) -> None:
    """Start the configured servers, wait until each answers /health, write the endpoints file.

    Servers already running as configured are kept (a second `up` starts nothing). When
    one exits or is not healthy within serving.health_timeout_s, everything this call
    started is stopped and its log's tail is shown. Exit status 2 for a configuration
    problem (e.g. a port in use), 3 when a server failed to start.
    """
    from capflow_core.serving import up as start_servers
    from capflow_core.serving_launch import state_path

    cfg = load_cfg(config)
    started, kept = _guard(lambda: start_servers(cfg))
    for rec in kept:
        typer.echo(f"running  {rec.name}  {rec.url}  pid {rec.pid}")
    for rec in started:
        typer.echo(f"started  {rec.name}  {rec.url}  pid {rec.pid}  log {rec.log}")
    if not started:
        typer.echo("nothing to start: every configured server is up")
    typer.echo(f"endpoints file: {state_path(cfg)}")


@app.command()
def down(config: ConfigOpt = None) -> None:
    """Stop exactly the servers `up` recorded (SIGTERM, then SIGKILL); remove the file.

    A recorded pid now used by another program is never signalled.
    """
    from capflow_core.serving import down as stop_servers

    cfg = load_cfg(config)
    stopped = _guard(lambda: stop_servers(cfg))
    for rec in stopped:
        typer.echo(f"stopped  {rec.name}  {rec.url}  pid {rec.pid}")
    if not stopped:
        typer.echo("nothing running")


@app.command()
def status(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show each recorded server: roles, URL, pid, alive, healthy, served models.

    Exit status 0 when every recorded server is healthy (or none is recorded), 1 otherwise.
    """
    from capflow_core.serving import status as server_status

    cfg = load_cfg(config)
    rows = _guard(lambda: server_status(cfg))
    if as_json:
        body = [
            {"name": s.record.name, "roles": s.record.roles, "url": s.record.url,
             "pid": s.record.pid, "alive": s.alive, "healthy": s.healthy, "models": s.models,
             "log": s.record.log, "started_at": s.record.started_at}
            for s in rows
        ]  # fmt: skip
        typer.echo(json.dumps(body, indent=2))
    else:
        _table(rows)
    raise typer.Exit(0 if all(s.healthy for s in rows) else 1)


def _table(rows) -> None:  # rows: list[ServerStatus]
    from rich.console import Console
    from rich.table import Table

    if not rows:
        typer.echo("no endpoints recorded (start them with `capflow endpoints up`)")
        return
    table = Table(title="capflow endpoints")
    for col in ("roles", "url", "pid", "alive", "healthy", "models"):
        table.add_column(col, overflow="fold")
    for s in rows:
        table.add_row(
            ",".join(s.record.roles),
            s.record.url,
            str(s.record.pid),
            "yes" if s.alive else "[red]no[/red]",
            "yes" if s.healthy else "[red]no[/red]",
            ", ".join(s.models),
        )
    Console(width=200).print(table)
