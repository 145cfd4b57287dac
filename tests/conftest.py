"""Session-wide test setup: offline Hugging Face settings and the tiny model, built once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.serve_process import ServeProcess

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _restore_env(saved: dict[str, str | None]) -> None:
    """Put environment variables back as they were (None: was unset)."""
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight Qwen2.5-VL (``capflow_core.tiny_model``), built once per session."""
    from capflow_core.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[dict[str, str]]:
    """A real ``moto_server`` S3 process on 127.0.0.1 with bucket ``capflow-test``.

    Yields the AWS environment variables that point clients (s3fs, deltalake, the CLI) at it.
    """
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        import s3fs

        s3fs.S3FileSystem(client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]}).mkdir(
            "capflow-test"
        )
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        _restore_env(saved)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``prefect server start`` process (own PREFECT_HOME), started once per session.

    Sets ``PREFECT_API_URL`` (and PREFECT_HOME) in ``os.environ`` so in-process flows and
    ``capflow`` subprocesses use it; yields the API URL.
    """
    import socket
    import sys

    from flows.deploy import start_server, stop, wait_healthy

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp_path_factory.mktemp("prefect-home")
    env = {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "GX_ANALYTICS_ENABLED": "false",
    }
    proc = start_server(home, port, home / "server.log")  # the one `capflow serve` uses
    saved = {k: os.environ.get(k) for k in env}
    try:
        wait_healthy(env["PREFECT_API_URL"], proc, timeout=90)
        os.environ.update(env)
        yield env["PREFECT_API_URL"]
    finally:
        if "prefect" in sys.modules:  # send buffered run logs before the server goes
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=5)
        stop(proc)
        _restore_env(saved)


@pytest.fixture(scope="session")
def dask_address(moto_s3: dict[str, str]) -> Iterator[str]:
    """A real Dask LocalCluster (2 single-threaded worker processes) for the session.

    It depends on ``moto_s3`` so the workers inherit the S3 endpoint and test credentials
    (worker processes copy the environment when they start).
    """
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="session")
def serve_pair(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    """Two healthy ``transformers serve`` processes of the tiny model, started together."""
    from tests.serve_process import ServeProcess, free_port

    logs = tmp_path_factory.mktemp("transformers-serve")
    servers = tuple(
        ServeProcess(Path(tiny_model_dir), free_port(), logs / f"serve-{name}.log")
        for name in ("a", "b")
    )
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_healthy()
        yield servers  # type: ignore[misc]
    finally:
        for server in servers:
            server.stop()
