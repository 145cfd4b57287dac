"""The endpoints file ``capflow endpoints up`` writes, and the identity of its processes.

``<state_dir>/endpoints.json`` lists each launched server: its roles, URL, flags, command,
log, and who it is: pid, process group, the kernel's start time of the pid (so a recycled
pid is never mistaken for it) and a random token placed in its environment, which every
process it forks inherits. ``down`` signals only processes that carry the token.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "endpoints.json"
TOKEN_ENV = "CAPFLOW_ENDPOINT_TOKEN"
_PROC = Path("/proc")


@dataclass(frozen=True)
class ServerRecord:
    """One launched server, as recorded in the endpoints file."""

    name: str
    roles: list[str]
    url: str
    model: str
    served_name: str
    gpus: str
    gpu_count: int
    flags: dict[str, Any]
    pid: int
    pgid: int
    start_ticks: int
    token: str
    cmd: list[str]
    log: str
    started_at: str
    ready: bool = False  # healthy once; only ready servers are given to the openai backend

    def endpoint(self) -> dict[str, Any]:
        """The ``Endpoint`` config mapping of this server."""
        return {"url": self.url, "gpus": self.gpu_count, **self.flags}


@dataclass
class EndpointsState:
    """The whole endpoints file: the config that wrote it, and its servers."""

    config: str | None
    servers: list[ServerRecord] = field(default_factory=list)

    def to_json(self) -> str:
        roles: dict[str, list[str]] = {}
        for s in self.servers:
            for r in s.roles:
                roles.setdefault(r, []).append(s.url)
        body = {
            "version": 1,
            "config": self.config,
            "roles": roles,
            "servers": [asdict(s) for s in self.servers],
        }
        return json.dumps(body, indent=2) + "\n"


def read_state(path: Path) -> EndpointsState | None:
    """The endpoints file at ``path``; None when it does not exist.

    Raises:
        ValueError: the file is not an endpoints file this version wrote.
    """
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if not isinstance(data, dict) or data.get("version") != 1:
        raise ValueError(f"{path} is not a CapFlow endpoints file (version 1)")
    return EndpointsState(data.get("config"), [ServerRecord(**s) for s in data["servers"]])


def write_state(path: Path, state: EndpointsState) -> None:
    """Write the endpoints file atomically (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(state.to_json())
    os.replace(tmp, path)


def role_endpoints(path: str, role: str) -> list[dict[str, Any]]:
    """The ``Endpoint`` mappings of ``role``'s servers in the endpoints file at ``path``.

    Never raises: a missing or unreadable file gives ``[]`` (see :func:`describe_file`).
    """
    try:
        state = read_state(Path(path))
    except (OSError, ValueError, TypeError, KeyError):
        return []
    servers = state.servers if state else []
    return [s.endpoint() for s in servers if s.ready and role in s.roles]


def describe_file(path: str) -> str:
    """Why ``path`` gives no endpoints, in a few words."""
    try:
        state = read_state(Path(path))
    except (OSError, ValueError, TypeError, KeyError) as err:
        return f"cannot be read ({type(err).__name__}: {err})"
    if state is None:
        return "does not exist"
    roles = sorted({r for s in state.servers for r in s.roles})
    return f"lists servers for {roles or 'no role'} only"


def no_endpoints_message(model: str, endpoints_file: str | None) -> str:
    """What to do about a model whose ``endpoints_file`` gave no endpoints."""
    where = endpoints_file or "(none)"
    return (
        f"model {model!r} has no endpoints: its endpoints_file {where} {describe_file(where)}; "
        "start the servers with `capflow endpoints up --config <this config>` (or list "
        "`endpoints` in the config)"
    )


@contextlib.contextmanager
def state_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside the endpoints file (one ``up``/``down`` at a time)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{path.name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _stat(pid: int) -> list[str] | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # the name in (...) may hold spaces


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot); None when it is gone or a zombie."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _has_token(pid: int, token: str) -> bool:
    try:
        env = (_PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{TOKEN_ENV}={token}".encode() in env


def members(rec: ServerRecord) -> list[int]:
    """The live processes of ``rec``'s server: in its process group and carrying its token."""
    out = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        fields = _stat(pid)
        live = fields is not None and fields[0] not in ("Z", "X")
        if live and int(fields[2]) == rec.pgid and _has_token(pid, rec.token):
            out.append(pid)
    return out


def leader_alive(rec: ServerRecord) -> bool:
    """The recorded pid is still the process ``up`` started (same start time and token)."""
    return start_ticks(rec.pid) == rec.start_ticks and _has_token(rec.pid, rec.token)


def stop(rec: ServerRecord, timeout_s: float) -> bool:
    """SIGTERM ``rec``'s server, wait up to ``timeout_s``, then SIGKILL; True when it is gone.

    Only processes that carry the record's token are signalled; a pid reused by another
    program is left alone.
    """
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        if not _signal(rec, sig):
            return True
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            _reap(rec.pid)
            if not members(rec):
                return True
            time.sleep(0.1)
    return not members(rec)


def _signal(rec: ServerRecord, sig: signal.Signals) -> bool:
    # the whole group at once when its leader is ours: workers it forked included
    targets = [-rec.pgid] if leader_alive(rec) else members(rec)
    for target in targets:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(-target, sig) if target < 0 else os.kill(target, sig)
    return bool(targets)


def _reap(pid: int) -> None:
    # only when this process started it (tests, or `up` cleaning up after a failure)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
