"""Model endpoints for the scale benchmark: ``transformers serve`` processes of the tiny model.

Each server runs on 127.0.0.1 with ``OMP_NUM_THREADS=1`` (one core's worth of model work,
so 1 vs 2 endpoints is 1 vs 2 cores of model capacity). ``transformers serve`` loads the
model on the first request, so :meth:`ServeFleet.ready` sends each server one small chat
request before any timed run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HEALTH_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
SERVE = Path(sys.executable).with_name("transformers")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeFleet:
    """``n`` ``transformers serve MODEL --device cpu`` processes, each on its own port.

    Args:
        model_dir: the model folder every server serves.
        n: how many servers.
        log_dir: where each server's output goes (``serve-<i>.log``).
    """

    def __init__(self, model_dir: Path, n: int, log_dir: Path) -> None:
        self.model_dir = model_dir
        self.ports = [free_port() for _ in range(n)]
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def urls(self) -> list[str]:
        """The OpenAI base URLs (``http://127.0.0.1:PORT/v1``), one per server."""
        return [f"http://127.0.0.1:{p}/v1" for p in self.ports]

    def start(self) -> ServeFleet:
        """Launch every server (without waiting: :meth:`ready` does)."""
        env = os.environ | {
            "HF_HUB_OFFLINE": "1",
            "TQDM_DISABLE": "1",
            "OMP_NUM_THREADS": "1",
            "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for i, port in enumerate(self.ports):
            cmd = [str(SERVE), "serve", str(self.model_dir), "--host", "127.0.0.1",
                   "--port", str(port), "--device", "cpu"]  # fmt: skip
            with (self.log_dir / f"serve-{i}.log").open("ab") as log:
                self.procs.append(
                    subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
                )
        return self

    def ready(self) -> float:
        """Wait until each server answers ``/health``, then :meth:`warm_up` them all.

        Returns:
            The seconds waited.

        Raises:
            RuntimeError: a server exited or stayed unhealthy for ``HEALTH_TIMEOUT_S``, or
                answered the warm-up request with an error.
        """
        t0 = time.perf_counter()
        for i in range(len(self.procs)):
            self._wait_healthy(i)
        self.warm_up()
        return time.perf_counter() - t0

    def _wait_healthy(self, i: int) -> None:
        import httpx

        proc, port = self.procs[i], self.ports[i]
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"transformers serve exited ({proc.returncode}):\n{self.tail(i)}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"transformers serve not healthy after {HEALTH_TIMEOUT_S:g} s")

    def warm_up(self) -> float:
        """One short chat request to each server (it loads the model); returns the seconds."""
        return warm_up(self.urls, str(self.model_dir))

    def stop(self) -> None:
        """Terminate every server, killing any that lingers."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)

    def tail(self, i: int, n: int = 3000) -> str:
        """The end of server ``i``'s log."""
        return (self.log_dir / f"serve-{i}.log").read_text(errors="replace")[-n:]

    def __enter__(self) -> ServeFleet:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def warm_up(urls: list[str], model: str, timeout_s: float = 300.0) -> float:
    """Send one 4-token chat request to each OpenAI-compatible server; returns the seconds.

    Raises:
        RuntimeError: a server answered with an error status.
    """
    import httpx

    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 4,
    }
    t0 = time.perf_counter()
    for url in urls:
        reply = httpx.post(f"{url}/chat/completions", json=body, timeout=timeout_s)
        if reply.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {reply.status_code}: {reply.text[:300]}")
    return time.perf_counter() - t0
