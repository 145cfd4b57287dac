"""Launch, check and stop the model servers of ``serving.groups`` (``capflow endpoints``).

``up`` starts one server per group in its own session (so a signal to its process group
reaches everything it forks), with ``CUDA_VISIBLE_DEVICES`` set to the group's GPUs and
its output in ``<state_dir>/logs/<name>.log``; records it in ``<state_dir>/endpoints.json``
at once (a killed ``up`` leaves nothing ``down`` cannot find); waits until every server
answers ``/health`` (or ``/v1/models``); then marks them ready, and the openai backend
reads the ready ones through ``endpoints_file``. When a server exits or is not healthy in
``health_timeout_s``, everything this ``up`` started is stopped and unrecorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from capflow_core.config import Config
from capflow_core.errors import ConfigError, InfrastructureError
from capflow_core.serving_launch import WILDCARD_HOSTS, Launch, plan, port_free, start, state_path
from capflow_core.serving_state import (
    EndpointsState,
    ServerRecord,
    leader_alive,
    members,
    read_state,
    state_lock,
    stop,
    write_state,
)


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    """The server at ``url`` (``.../v1``) answers ``/health`` or ``/v1/models`` with 200."""
    root = url.rstrip("/").removesuffix("/v1")
    for probe in (f"{root}/health", f"{url.rstrip('/')}/models"):
        try:
            if httpx.get(probe, timeout=timeout_s).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
    return False


def probe_url(cfg: Config, rec: ServerRecord) -> str:
    """``rec.url`` as this machine reaches it: a wildcard bind is probed on 127.0.0.1."""
    if cfg.serving.host not in WILDCARD_HOSTS:
        return rec.url
    port = rec.url.rsplit(":", 1)[1]
    return f"http://127.0.0.1:{port}"


def wait_healthy(cfg: Config, records: list[ServerRecord], timeout_s: float) -> None:
    """Wait until every server is healthy.

    Raises:
        InfrastructureError: a server exited or was not healthy in time (with its log tail).
    """
    pending = list(records)
    deadline = time.monotonic() + timeout_s
    while pending:
        for rec in list(pending):
            if not leader_alive(rec):
                raise InfrastructureError(f"{rec.name} exited during start-up:\n{log_tail(rec)}")
            if healthy(probe_url(cfg, rec)):
                pending.remove(rec)
        if pending and time.monotonic() > deadline:
            rec = pending[0]
            raise InfrastructureError(
                f"{rec.name} not healthy after {timeout_s:g}s (serving.health_timeout_s):\n"
                + log_tail(rec)
            )
        if pending:
            time.sleep(0.5)


def log_tail(rec: ServerRecord, n: int = 3000) -> str:
    try:
        text = Path(rec.log).read_text(errors="replace")
    except OSError:
        return f"(no log at {rec.log})"
    return f"--- last lines of {rec.log} ---\n" + text[-n:]


def stop_all(records: list[ServerRecord], timeout_s: float) -> list[ServerRecord]:
    """Stop ``records``; return those still running afterwards."""
    return [r for r in records if not stop(r, timeout_s)]


def load_state(cfg: Config) -> EndpointsState | None:
    """The endpoints file of ``cfg``, or None; ConfigError when it cannot be read."""
    path = state_path(cfg)
    try:
        return read_state(path)
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"{path}: {err}; remove it after stopping its servers by hand") from None


@dataclass(frozen=True)
class ServerStatus:
    """What ``status`` found for one recorded server."""

    record: ServerRecord
    alive: bool
    healthy: bool
    models: list[str]


def up(cfg: Config) -> tuple[list[ServerRecord], list[ServerRecord]]:
    """Start the configured servers that are not already running; write the endpoints file.

    Returns:
        (started, kept): servers started now, and recorded servers still running as
        configured (a second ``up`` keeps them all and starts nothing).

    Raises:
        ConfigError: bad groups, a port in use, or running servers the config no longer has.
        InfrastructureError: a server exited or was not healthy in time; everything this
            call started has been stopped.
    """
    launches = plan(cfg)
    path = state_path(cfg)
    with state_lock(path):
        state = load_state(cfg)
        servers = _reuse(state, launches, path)
        for item in servers:
            if isinstance(item, Launch) and not port_free(cfg.serving.host, item.port):
                raise ConfigError(
                    f"port {item.port} ({item.name}) is in use by another program; "
                    "choose another port in serving.groups"
                )
        kept = [s for s in servers if isinstance(s, ServerRecord)]
        started: list[ServerRecord] = []
        try:
            records = []
            for item in servers:
                if isinstance(item, Launch):
                    item = start(item, cfg, path.parent / "logs")
                    started.append(item)
                records.append(item)
            # recorded before the wait: a killed `up` leaves nothing `down` cannot find
            write_state(path, EndpointsState(cfg.source, records))
            wait_healthy(cfg, records, cfg.serving.health_timeout_s)
        except BaseException:
            left = kept + stop_all(started, cfg.serving.stop_timeout_s)
            if left:
                write_state(path, EndpointsState(cfg.source, left))
            else:
                path.unlink(missing_ok=True)
            raise
        records = [replace(r, ready=True) for r in records]
        write_state(path, EndpointsState(cfg.source, records))
    new = {r.pid for r in started}
    return [r for r in records if r.pid in new], [r for r in records if r.pid not in new]


def _reuse(
    state: EndpointsState | None, launches: list[Launch], path: Path
) -> list[ServerRecord | Launch]:
    """Per configured server: its recorded, still running process, else what to start."""
    recorded = {tuple(r.cmd): r for r in state.servers} if state else {}
    wanted = {tuple(launch.cmd) for launch in launches}
    for rec in recorded.values():
        if tuple(rec.cmd) not in wanted and members(rec):
            raise ConfigError(
                f"{rec.name} (pid {rec.pid}, recorded in {path}) is running but no longer "
                f"configured; stop it first: capflow endpoints down --config {state.config}"
            )
    out: list[ServerRecord | Launch] = []
    for launch in launches:
        rec = recorded.get(tuple(launch.cmd))
        if rec is not None and leader_alive(rec):
            out.append(rec)
            continue
        if rec is not None and members(rec):  # its main process died; workers linger
            stop(rec, 10.0)
        out.append(launch)
    return out


def down(cfg: Config) -> list[ServerRecord]:
    """Stop every server the endpoints file records, then remove the file.

    Returns:
        The records of servers that were still running and have been stopped.

    Raises:
        InfrastructureError: a server survived SIGKILL (the file then keeps it).
    """
    path = state_path(cfg)
    with state_lock(path):
        state = load_state(cfg)
        if state is None:
            return []
        running = [r for r in state.servers if members(r)]
        left = stop_all(running, cfg.serving.stop_timeout_s)
        if left:
            write_state(path, EndpointsState(state.config, left))
            names = ", ".join(f"{r.name} (pid {r.pid})" for r in left)
            raise InfrastructureError(f"still running after SIGKILL: {names}")
        path.unlink(missing_ok=True)
    return running


def status(cfg: Config) -> list[ServerStatus]:
    """Each recorded server: alive (its own process), healthy, and the models it lists."""
    state = load_state(cfg)
    out = []
    for rec in state.servers if state else []:
        alive = bool(members(rec))
        models = _served_models(probe_url(cfg, rec)) if alive else []
        ok = alive and healthy(probe_url(cfg, rec))
        out.append(ServerStatus(rec, alive, ok, models))
    return out


def _served_models(url: str) -> list[str]:
    try:
        resp = httpx.get(f"{url.rstrip('/').removesuffix('/v1')}/v1/models", timeout=2.0)
        return [str(m.get("id")) for m in resp.json().get("data", [])]
    except (httpx.HTTPError, ValueError, AttributeError):
        return []
