"""`capflow endpoints up|status|down` with `transformers serve` as the command template.

Two servers of the tiny model on two ports serve the vlm and judge roles; the engine reads
their URLs from the endpoints file `up` wrote and spreads requests over both.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from capflow_core.serving_state import start_ticks
from tests.flows.cli_runner import ROOT, run
from tests.serve_process import SERVE, free_port

pytestmark = [pytest.mark.http, pytest.mark.timeout(600)]

SERVE_ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1",
             "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}  # fmt: skip


def endpoints_config(tmp_path: Path, model: str, command: list[str], ports: list[int]) -> Path:
    state = tmp_path / "state"
    spec = {"backend": "openai", "model": model, "timeout_s": 120, "max_retries": 2,
            "backoff_s": 0.1, "endpoints_file": str(state / "endpoints.json")}  # fmt: skip
    data = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())
    data["models"] = {"vlm": spec, "llm": spec, "judge": spec}
    data["storage"] = {"root": str(tmp_path / "root")}
    data["serving"] = {
        "command": command,
        "vision_args": [],
        "lora_args": [],
        "state_dir": str(state),
        "env": SERVE_ENV,
        "health_timeout_s": 240,
        "stop_timeout_s": 10,
        "flags": {"structured_outputs": "none", "video": "frames", "max_inflight": 2},
        "groups": [
            {"role": ["vlm", "llm", "judge"], "gpus": "", "port": ports[0]},
            {"role": ["vlm", "judge"], "gpus": "", "port": ports[1]},
        ],
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def status_json(cfg: Path) -> tuple[int, list[dict[str, Any]]]:
    res = run("endpoints", "status", "--config", str(cfg), "--json")
    return res.returncode, json.loads(res.stdout)


def test_up_status_caption_down(tmp_path: Path, tiny_model_dir: Path) -> None:
    from capflow_core.config import load_config
    from capflow_core.engine import CapFlow

    ports = [free_port(), free_port()]
    command = [str(SERVE), "serve", "{model}", "--host", "{host}", "--port", "{port}",
               "--device", "cpu"]  # fmt: skip
    cfg = endpoints_config(tmp_path, str(tiny_model_dir), command, ports)
    # a look-alike: the same program name, model and port on its command line
    decoy = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", "serve", str(tiny_model_dir),
         "--port", str(ports[0])],
        start_new_session=True,
    )  # fmt: skip
    try:
        res = run("endpoints", "up", "--config", str(cfg))
        assert res.returncode == 0, res.stderr + res.stdout
        assert res.stdout.count("started") == 2
        code, rows = status_json(cfg)
        assert code == 0 and [r["healthy"] for r in rows] == [True, True]
        assert [r["url"] for r in rows] == [f"http://127.0.0.1:{p}/v1" for p in ports]
        assert all(str(tiny_model_dir) in r["models"] for r in rows)
        pids = [r["pid"] for r in rows]
        again = run("endpoints", "up", "--config", str(cfg))
        assert again.returncode == 0 and "nothing to start" in again.stdout
        assert [r["pid"] for r in status_json(cfg)[1]] == pids

        images = []
        for i in range(2):
            rng = np.random.default_rng(i)
            images.append(tmp_path / f"img{i}.png")
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images[-1])
        flow = CapFlow.from_config(load_config(cfg))
        records = flow.caption(images, mode="single", run_id="endpoints")
        assert [r.errors.get("caption") for r in records] == [None, None]
        assert all(r.caption for r in records)
        served = flow.backends["vlm"].stats()["endpoints"]
        assert set(served) == {r["url"] for r in rows}
        assert all(e["served"] >= 1 for e in served.values()), served

        res = run("endpoints", "down", "--config", str(cfg))
        assert res.returncode == 0 and res.stdout.count("stopped") == 2, res.stderr
        assert [start_ticks(p) for p in pids] == [None, None]
        assert decoy.poll() is None  # the look-alike was never signalled
        res = run("endpoints", "status", "--config", str(cfg))
        assert res.returncode == 0 and "no endpoints recorded" in res.stdout
        assert status_json(cfg) == (0, [])
    finally:
        run("endpoints", "down", "--config", str(cfg))
        decoy.kill()
        decoy.wait(10)


def test_up_fails_clearly_when_the_server_exits_at_once(tmp_path: Path) -> None:
    marker = f"capflow-test-{tmp_path.name}"
    command = [sys.executable, "-c", "import sys; print('cannot load model'); sys.exit(3)",
               marker, "{model}", "{port}"]  # fmt: skip
    cfg = endpoints_config(tmp_path, "some/model", command, [free_port(), free_port()])
    res = run("endpoints", "up", "--config", str(cfg))
    assert res.returncode == 3
    assert "exited during start-up" in res.stderr and "cannot load model" in res.stderr
    assert not (tmp_path / "state/endpoints.json").exists()
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline and start_ticks(int(entry.name)) is not None:
                alive.append(int(entry.name))
    assert alive == []
