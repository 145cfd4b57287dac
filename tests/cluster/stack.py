"""Processes of the multi-process local cluster: PostgreSQL, a Prefect server on it, process
workers, an external Dask scheduler with workers.

Every process starts in its own session (process group) so :func:`stop_all` can end it and
everything it spawned, flow-run processes included, even when a test fails half way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.serve_process import free_port

BIN = Path(sys.executable).parent
PG_USER = "prefect"


@dataclass
class Proc:
    """One process we started: its name, handle, log and (optional) graceful stop signal."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    stop_signal: int = signal.SIGTERM

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


@dataclass
class Stack:
    """What the cluster fixture started, in start order, and how long each part took."""

    procs: list[Proc] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def launch(self, name: str, cmd: list[str], log: Path, **kw: Any) -> Proc:
        """Start ``cmd`` in a new session, output to ``log``; remembered for :func:`stop_all`."""
        stop_signal = kw.pop("stop_signal", signal.SIGTERM)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw
            )
        proc = Proc(name, popen, log, stop_signal)
        self.procs.append(proc)
        return proc

    def timed(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 1)


def stop_all(procs: list[Proc], timeout: float = 15) -> None:
    """Stop every process and its descendants (even those in sessions of their own).

    All get their stop signal at once (newest first), then ``timeout`` seconds in all to
    exit; whatever is left is killed. Descendants are signalled through psutil, which checks
    a pid still names the same process.
    """
    victims: list[tuple[Proc, list[psutil.Process]]] = []
    for proc in reversed(procs):
        children: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(proc.popen.pid).children(recursive=True)
        victims.append((proc, children))
        _signal(proc, children, proc.stop_signal)
    deadline = time.monotonic() + timeout
    for proc, children in victims:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        _signal(proc, children, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=10)


def _signal(proc: Proc, children: list[psutil.Process], sig: int) -> None:
    """``sig`` to the process's group (while it is unreaped its pid is ours) and children."""
    if proc.popen.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, sig)
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.send_signal(sig)


def wait_for(check: Callable[[], Any], what: str, timeout: float, procs: list[Proc]) -> Any:
    """Poll ``check`` (a truthy result or no exception ends it) every 0.3 s, bounded.

    Raises RuntimeError, with the log tail, if one of ``procs`` exits or time runs out.
    """
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        try:
            result = check()
            if result:
                return result
        except Exception as err:  # not up yet
            last = err
        time.sleep(0.3)
    tails = "\n".join(f"--- {p.name}:\n{p.tail(1500)}" for p in procs)
    raise RuntimeError(f"{what} not ready after {timeout:g} s (last error: {last!r})\n{tails}")


def postgres_bindir() -> Path | None:
    """The newest PostgreSQL server binaries (Debian's layout, else ``initdb`` on PATH)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb and (Path(initdb).resolve().parent / "postgres").exists():
        return Path(initdb).resolve().parent
    return None


def _run_as() -> dict[str, Any]:
    """Popen arguments that drop root to an unprivileged user (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return {}
    import pwd

    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            user = pwd.getpwnam(name)
            return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    raise RuntimeError("running as root and neither a `postgres` nor a `nobody` user exists")


def start_postgres(stack: Stack, bindir: Path, base: Path, log_dir: Path) -> str:
    """initdb + ``postgres`` on 127.0.0.1 with a password; returns the DSN without database.

    ``base`` (for the data and socket folders) should be a fresh folder of the system temp
    dir: it is handed to the user the server runs as (pytest's temp folders are private to
    root).
    """
    started = time.monotonic()
    as_user = _run_as()
    password = os.urandom(12).hex()
    (base / "pw").write_text(password + "\n")
    (base / "sock").mkdir()
    if as_user:
        for path in (base, base / "pw", base / "sock"):
            os.chown(path, as_user["user"], as_user["group"])
    init = [str(bindir / "initdb"), "-D", str(base / "data"), "-U", PG_USER, "-E", "UTF8",
            f"--pwfile={base / 'pw'}", "--auth=scram-sha-256", "--no-sync"]  # fmt: skip
    done = subprocess.run(init, capture_output=True, text=True, timeout=120, **as_user)
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    port = free_port()
    cmd = [str(bindir / "postgres"), "-D", str(base / "data"), "-p", str(port),
           "-k", str(base / "sock"), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
           "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]  # fmt: skip
    # SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for every client to leave).
    proc = stack.launch("postgres", cmd, log_dir / "postgres.log", stop_signal=signal.SIGINT,
                        **as_user)  # fmt: skip
    dsn = f"postgresql://{PG_USER}:{password}@127.0.0.1:{port}"
    wait_for(lambda: pg_fetch(dsn + "/postgres", "SELECT 1"), "postgres", 60, [proc])
    pg_fetch(dsn + "/postgres", "CREATE DATABASE prefect")
    stack.timed("postgres (initdb + start)", started)
    return dsn


def pg_fetch(dsn: str, sql: str, *args: Any) -> list[Any]:
    """Run one statement with asyncpg; the rows (empty for a command)."""
    import asyncio

    import asyncpg

    async def go() -> list[Any]:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


def start_prefect_server(stack: Stack, home: Path, db_url: str) -> tuple[str, Proc]:
    """``prefect server start`` on 127.0.0.1 with its database on PostgreSQL."""
    from flows.deploy import server_launch

    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    cmd, env = server_launch(home, port)
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = db_url
    proc = stack.launch("prefect server", cmd, home / "server.log", env=env)
    return f"http://127.0.0.1:{port}/api", proc


def start_dask(stack: Stack, log_dir: Path, workers: int, env: dict[str, str]) -> str:
    """An external ``dask scheduler`` and ``workers`` single-threaded ``dask worker``s."""
    address = f"tcp://127.0.0.1:{free_port()}"
    port = address.rsplit(":", 1)[1]
    sched = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", port,
             "--no-dashboard"]  # fmt: skip
    stack.launch("dask scheduler", sched, log_dir / "dask-scheduler.log", env=env)
    for i in range(workers):
        cmd = [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "1",
               "--host", "127.0.0.1", "--no-dashboard", "--name", f"dask-{i}"]  # fmt: skip
        stack.launch(f"dask worker {i}", cmd, log_dir / f"dask-worker-{i}.log", env=env)
    return address


def start_prefect_worker(stack: Stack, name: str, pool: str, log: Path, env: dict) -> Proc:
    """``prefect worker start --type process`` polling ``pool`` every 2 s."""
    cmd = [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process",
           "--name", name]  # fmt: skip
    return stack.launch(f"prefect worker {name}", cmd, log, env=env)
