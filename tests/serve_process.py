"""Real ``transformers serve`` processes on 127.0.0.1 serving the tiny model.

The session fixture ``serve_pair`` (tests/conftest.py) starts two, in parallel (~10-20 s on
2 cores); a test may kill one and start it again on the same port (``kill`` / ``start``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

HEALTH_TIMEOUT_S = 240.0  # two servers starting on a loaded 2-core machine
SERVE = Path(sys.executable).with_name("transformers")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """One ``transformers serve MODEL_DIR --device cpu`` process bound to a fixed port."""

    def __init__(self, model_dir: Path, port: int, log_path: Path) -> None:
        self.model_dir = model_dir
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The OpenAI base URL (``.../v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        """Launch the server (does not wait for it)."""
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TQDM_DISABLE": "1",
            "OMP_NUM_THREADS": "1",  # two servers share two cores
            "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        }
        cmd = [str(SERVE), "serve", str(self.model_dir), "--host", "127.0.0.1",
               "--port", str(self.port), "--device", "cpu"]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_healthy(self, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
        """Poll ``/health`` until it answers 200; fail with the log's tail otherwise."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"transformers serve exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        pytest.fail(f"transformers serve not healthy after {timeout_s:g}s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL the server (a crash: no graceful shutdown) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Terminate the server gracefully, killing it if it lingers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]
