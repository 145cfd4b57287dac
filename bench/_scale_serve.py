"""Model endpoints for the scale benchmark: ``transformers serve`` processes of the tiny model.

They are launched by the product's own launcher (:mod:`capflow_core.serving_launch`, what
``capflow endpoints up`` runs), with ``transformers serve`` as the command template. Each
server runs on 127.0.0.1 with ``OMP_NUM_THREADS=1`` (one core's worth of model work, so 1 vs
2 endpoints is 1 vs 2 cores of model capacity). ``transformers serve`` loads the model on
the first request, so :meth:`ServeFleet.ready` sends each server one small chat request
before any timed run.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from typing import Any

HEALTH_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
SERVE = Path(sys.executable).with_name("transformers")
SERVE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TQDM_DISABLE": "1",
    "OMP_NUM_THREADS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serving_config(model_dir: Path, ports: list[int], state_dir: Path) -> Any:
    """A config whose ``serving`` section starts one ``transformers serve`` per port."""
    from capflow_core.config import config_from_dict

    endpoints = str(state_dir / "endpoints.json")  # written by `endpoints up`, unused here
    spec = {"backend": "openai", "model": str(model_dir), "endpoints_file": endpoints}
    command = [str(SERVE), "serve", "{model}", "--host", "{host}", "--port", "{port}",
               "--device", "cpu"]  # fmt: skip
    serving = {
        "command": command,
        "vision_args": [],
        "lora_args": [],
        "host": "127.0.0.1",
        "state_dir": str(state_dir),
        "env": SERVE_ENV,
        "groups": [{"role": ["vlm", "llm"], "gpus": "", "port": p} for p in ports],
    }
    models = dict.fromkeys(("vlm", "llm", "judge"), spec)
    return config_from_dict({"models": models, "serving": serving})


class ServeFleet:
    """``n`` ``transformers serve MODEL --device cpu`` processes, each on its own port.

    Args:
        model_dir: the model folder every server serves.
        n: how many servers.
        log_dir: where each server's output goes (``<roles>-<port>.log``).
    """

    def __init__(self, model_dir: Path, n: int, log_dir: Path) -> None:
        from capflow_core.serving_launch import plan

        self.model_dir = model_dir
        self.log_dir = log_dir
        self.cfg = serving_config(model_dir, [free_port() for _ in range(n)], log_dir)
        self.launches = plan(self.cfg)
        self.records: list[Any] = []

    @property
    def urls(self) -> list[str]:
        """The OpenAI base URLs (``http://127.0.0.1:PORT/v1``), one per server."""
        return [launch.url for launch in self.launches]

    def start(self) -> ServeFleet:
        """Launch every server (without waiting: :meth:`ready` does)."""
        from capflow_core.serving_launch import start

        self.records = [start(launch, self.cfg, self.log_dir) for launch in self.launches]
        return self

    def ready(self) -> float:
        """Wait until each server answers ``/health``, then :meth:`warm_up` them all.

        Returns:
            The seconds waited.

        Raises:
            InfrastructureError: a server exited or stayed unhealthy for ``HEALTH_TIMEOUT_S``
                (with its log's end).
            RuntimeError: a server answered the warm-up request with an error.
        """
        from capflow_core.serving import wait_healthy

        t0 = time.perf_counter()
        wait_healthy(self.cfg, self.records, HEALTH_TIMEOUT_S)
        self.warm_up()
        return time.perf_counter() - t0

    def warm_up(self) -> float:
        """One short chat request to each server (it loads the model); returns the seconds."""
        return warm_up(self.urls, str(self.model_dir))

    def stop(self) -> None:
        """Stop every server (its process group; SIGKILL after ``STOP_TIMEOUT_S``)."""
        from capflow_core.serving import stop_all

        stop_all(self.records, STOP_TIMEOUT_S)

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
