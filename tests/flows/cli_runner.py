"""Running `capflow` as a user would: a subprocess in the repo, with a config file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CAPFLOW = [sys.executable, "-m", "flows.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CAPFLOW, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
        env={**os.environ, **(env or {})},
    )


def write_config(tmp_path: Path, models: dict) -> Path:
    data = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())
    data["models"] = models
    data["storage"] = {"root": str(tmp_path / "root")}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
