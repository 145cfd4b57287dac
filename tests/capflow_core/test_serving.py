"""``capflow_core.serving``: command templates, the endpoints file, and process identity.

Fast servers here are real HTTP servers: ``python -m http.server`` over a folder holding a
file named ``health`` (so ``GET /health`` answers 200). ``transformers serve`` runs in
tests/flows/test_endpoints_cli.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from capflow_core.config import PACKAGED_CONFIG_DIR, load_config
from capflow_core.errors import ConfigError, InfrastructureError
from capflow_core.serving import down, status, up
from capflow_core.serving_launch import plan, state_path
from capflow_core.serving_state import ServerRecord, members, start_ticks, stop
from tests.serve_process import free_port

pytestmark = pytest.mark.timeout(120)


def http_server_command(docroot: Path) -> list[str]:
    """A real HTTP server whose ``/health`` answers 200 (a file of that name in ``docroot``)."""
    docroot.mkdir(parents=True, exist_ok=True)
    (docroot / "health").write_text("ok")
    return [sys.executable, "-m", "http.server", "{port}", "--bind", "{host}",
            "--directory", str(docroot)]  # fmt: skip


def write_cfg(tmp_path: Path, serving: dict[str, Any], models: dict | None = None) -> Path:
    data = yaml.safe_load((PACKAGED_CONFIG_DIR / "tiny.yaml").read_text())
    data["storage"] = {"root": str(tmp_path / "root")}
    data["serving"] = serving
    if models:
        data["models"] = models
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def fast_serving(tmp_path: Path, *groups: dict[str, Any]) -> dict[str, Any]:
    return {
        "command": http_server_command(tmp_path / "docroot"),
        "vision_args": [],
        "lora_args": [],
        "groups": list(groups),
        "health_timeout_s": 30,
        "stop_timeout_s": 5,
        "flags": {"structured_outputs": "none", "video": "frames", "max_inflight": 3},
    }


def running_with(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline and start_ticks(int(entry.name)) is not None:
                out.append(int(entry.name))
    return out


def test_default_command_is_the_vllm_recipe(tmp_path: Path) -> None:
    models = {
        "vlm": {"backend": "openai", "model": "Qwen/Qwen2.5-VL-72B-Instruct",
                "adapter": "metacaptioner-3", "endpoints_file": str(tmp_path / "e.json")},
        "llm": {"backend": "openai", "model": "Qwen/Qwen2.5-72B-Instruct",
                "endpoints_file": str(tmp_path / "e.json")},
        "judge": {"backend": "openai", "model": "Qwen/Qwen2.5-VL-7B-Instruct",
                  "endpoints_file": str(tmp_path / "e.json")},
    }  # fmt: skip
    groups = [
        {"role": "vlm", "gpus": "0,1,2,3", "port": 8000, "adapter_path": "./adapters/3"},
        {"role": "llm", "gpus": "4,5,6,7", "port": 8001},
        {"role": ["judge", "eval_judge"], "gpus": "8", "port": 8002, "max_model_len": 16384},
    ]
    cfg = load_config(write_cfg(tmp_path, {"groups": groups, "host": "0.0.0.0"}, models))
    vlm, llm, judge = plan(cfg)
    assert vlm.cmd[:3] == ["vllm", "serve", "Qwen/Qwen2.5-VL-72B-Instruct"]
    assert vlm.cmd[vlm.cmd.index("--tensor-parallel-size") + 1] == "4"
    assert vlm.cmd[vlm.cmd.index("--host") + 1] == "0.0.0.0"
    assert "--enable-prefix-caching" in vlm.cmd and "--enable-lora" in vlm.cmd
    assert vlm.cmd[vlm.cmd.index("--limit-mm-per-prompt") + 1] == '{"image": 1, "video": 1}'
    lora = vlm.cmd[vlm.cmd.index("--lora-modules") + 1]
    assert lora == f"metacaptioner-3={(tmp_path / 'adapters/3').resolve()}"
    assert "--limit-mm-per-prompt" not in llm.cmd and "--enable-lora" not in llm.cmd
    assert llm.cmd[llm.cmd.index("--served-model-name") + 1] == "Qwen/Qwen2.5-72B-Instruct"
    assert judge.cmd[judge.cmd.index("--max-model-len") + 1] == "16384"
    assert judge.cmd[judge.cmd.index("--tensor-parallel-size") + 1] == "1"
    assert judge.cmd[judge.cmd.index("--max-num-seqs") + 1] == "256"
    assert (vlm.gpus, vlm.gpu_count, judge.roles) == ("0,1,2,3", 4, ["judge", "eval_judge"])
    assert vlm.url.endswith(":8000/v1") and "0.0.0.0" not in vlm.url  # a reachable name
    assert state_path(cfg) == (tmp_path / ".capflow/endpoints/endpoints.json").resolve()


@pytest.mark.parametrize(
    ("serving", "expected"),
    [
        ({"command": ["srv", "{modle}"]}, ["serving.command", "{modle}", "{model}"]),
        ({"env": {"HF_TOKEN": "x"}}, ["serving.env", "HF_TOKEN", "environment"]),
        ({"state_dir": "s3://b/state"}, ["serving.state_dir", "local"]),
        ({"groups": [{"role": "vlm", "port": 1}, {"role": "llm", "port": 1}]}, ["share a port"]),
        ({"groups": [{"role": "critic", "port": 1}]}, ["serving.groups.0.role"]),
    ],
)
def test_bad_serving_config_names_the_key(tmp_path: Path, serving: dict, expected: list) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_cfg(tmp_path, serving))
    assert all(part in str(err.value) for part in expected), str(err.value)


def test_endpoints_file_gives_each_role_its_servers(tmp_path: Path) -> None:
    from capflow_core.backends.openai_backend import OpenAIBackend

    state = tmp_path / "state" / "endpoints.json"
    spec = {"backend": "openai", "model": "m", "endpoints_file": str(state)}
    path = write_cfg(tmp_path, fast_serving(tmp_path), {"vlm": spec, "llm": spec, "judge": spec})
    cfg = load_config(path)
    assert cfg.models.vlm.endpoints == []
    with pytest.raises(ConfigError, match=r"does not exist.*capflow endpoints up"):
        OpenAIBackend(cfg.models.vlm)

    rec = dict(name="a", model="m", served_name="m", gpus="0,1", gpu_count=2, pid=1, pgid=1,
               start_ticks=1, token="t", cmd=["x"], log="l", started_at="now", ready=True,
               flags={"structured_outputs": "none", "video": "frames", "max_inflight": 3})  # fmt: skip
    servers = [
        ServerRecord(roles=["vlm", "llm"], url="http://h:1/v1", **rec),
        ServerRecord(roles=["vlm"], url="http://h:2/v1", **rec),
        ServerRecord(roles=["vlm"], url="http://h:3/v1", **{**rec, "ready": False}),  # starting
    ]
    from capflow_core.serving_state import EndpointsState, write_state

    write_state(state, EndpointsState(str(path), servers))
    cfg = load_config(path)
    assert [e.url for e in cfg.models.vlm.endpoints] == ["http://h:1/v1", "http://h:2/v1"]
    assert [e.url for e in cfg.models.llm.endpoints] == ["http://h:1/v1"]
    first = cfg.models.vlm.endpoints[0]
    assert (first.structured_outputs, first.video, first.max_inflight, first.gpus) == (
        "none", "frames", 3, 2
    )  # fmt: skip
    assert OpenAIBackend(cfg.models.vlm).gpus() == 4
    with pytest.raises(ConfigError, match=r"lists servers for \['llm', 'vlm'\] only"):
        OpenAIBackend(cfg.models.judge)

    both = {**spec, "endpoints": [{"url": "http://h:3/v1"}]}
    with pytest.raises(ConfigError, match="not both"):
        load_config(write_cfg(tmp_path, {}, {"vlm": both, "llm": spec, "judge": spec}))


def test_up_is_idempotent_restarts_a_dead_server_and_down_stops_them(tmp_path: Path) -> None:
    groups = [{"role": ["vlm", "llm"], "port": free_port()}, {"role": "judge", "port": free_port()}]
    cfg = load_config(write_cfg(tmp_path, fast_serving(tmp_path, *groups)))
    started, kept = up(cfg)
    try:
        assert len(started) == 2 and kept == []
        assert all(s.alive and s.healthy for s in status(cfg))
        assert up(cfg) == ([], started)  # a second `up` starts nothing

        os.killpg(started[1].pgid, signal.SIGKILL)  # the judge's server crashes
        assert stop(started[1], 5)  # reaped
        again, kept = up(cfg)
        assert kept == [started[0]] and len(again) == 1 and again[0].pid != started[1].pid
        assert [s.healthy for s in status(cfg)] == [True, True]
    finally:
        stopped = down(cfg)
    assert {r.pid for r in stopped} == {started[0].pid, again[0].pid}
    assert not state_path(cfg).exists() and status(cfg) == []
    assert running_with(str(tmp_path / "docroot")) == []


def test_down_never_signals_a_process_that_is_not_its_own(tmp_path: Path) -> None:
    cfg = load_config(write_cfg(tmp_path, fast_serving(tmp_path, {"role": "vlm", "port": 1})))
    decoy = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "http.server", str(tmp_path)],
        start_new_session=True,
    )
    try:
        ticks = start_ticks(decoy.pid)
        assert ticks is not None
        common = dict(name="x", roles=["vlm"], url="http://127.0.0.1:1/v1", model="m",
                      served_name="m", gpus="", gpu_count=0, flags={}, pid=decoy.pid,
                      pgid=decoy.pid, cmd=decoy.args, log="l", started_at="now")  # fmt: skip
        # a recycled pid: right pid and start time, but not the token `up` gave its server
        recycled = ServerRecord(start_ticks=ticks, token="not-the-decoys", **common)
        from capflow_core.serving_state import EndpointsState, write_state

        write_state(state_path(cfg), EndpointsState(cfg.source, [recycled]))
        assert members(recycled) == []
        assert [s.alive for s in status(cfg)] == [False]
        assert down(cfg) == []
        time.sleep(0.2)
        assert decoy.poll() is None and not state_path(cfg).exists()
    finally:
        decoy.kill()
        decoy.wait(10)


def test_failed_start_stops_everything_it_started(tmp_path: Path) -> None:
    ok, bad = free_port(), free_port()
    groups = [{"role": "vlm", "port": ok}, {"role": "llm", "port": bad, "args": ["--bogus"]}]
    cfg = load_config(write_cfg(tmp_path, fast_serving(tmp_path, *groups)))
    with pytest.raises(InfrastructureError, match=r"(?s)exited during start-up.*--bogus"):
        up(cfg)
    assert not state_path(cfg).exists()
    assert running_with(str(tmp_path / "docroot")) == []


def test_port_in_use_and_missing_program_are_config_errors(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = load_config(
            write_cfg(tmp_path, fast_serving(tmp_path, {"role": "vlm", "port": port}))
        )
        with pytest.raises(ConfigError, match=f"port {port}.*in use"):
            up(cfg)
    serving = {**fast_serving(tmp_path, {"role": "vlm", "port": free_port()})}
    serving["command"] = [str(tmp_path / "no-such-server"), "{port}"]
    with pytest.raises(ConfigError, match=r"no-such-server.*serving\.command"):
        up(load_config(write_cfg(tmp_path, serving)))


def test_down_finds_the_servers_of_an_up_that_was_killed(tmp_path: Path) -> None:
    serving = fast_serving(tmp_path, {"role": "vlm", "port": free_port()})
    (tmp_path / "docroot/health").unlink()  # never healthy: `up` waits
    path = write_cfg(tmp_path, {**serving, "health_timeout_s": 300})
    cfg = load_config(path)
    cli = subprocess.Popen([sys.executable, "-m", "flows.cli", "endpoints", "up", "--config",
                            str(path)], cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not state_path(cfg).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert state_path(cfg).exists()
        assert running_with(str(tmp_path / "docroot")) != []
    finally:
        cli.kill()
        cli.wait(10)
    assert status(cfg)[0].alive and not status(cfg)[0].healthy
    assert len(down(cfg)) == 1
    assert running_with(str(tmp_path / "docroot")) == []


def test_plan_refuses_no_groups_and_a_server_for_two_models(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"serving\.groups is empty"):
        plan(load_config(write_cfg(tmp_path, {})))
    vlm = {"backend": "openai", "model": "a", "endpoints_file": str(tmp_path / "e.json")}
    models = {"vlm": vlm, "llm": {**vlm, "model": "b"}, "judge": vlm}
    serving = {"groups": [{"role": ["vlm", "llm"], "port": 8000}]}
    with pytest.raises(ConfigError, match=r"groups\[0\].*different models \['a', 'b'\]"):
        plan(load_config(write_cfg(tmp_path, serving, models)))


def test_relative_endpoints_file_resolves_against_the_config(tmp_path: Path, monkeypatch) -> None:
    import asyncio

    from capflow_core.backends.endpoint_check import check_endpoints

    spec = {"backend": "openai", "model": "m", "endpoints_file": "state/endpoints.json"}
    path = write_cfg(tmp_path, fast_serving(tmp_path), {"vlm": spec, "llm": spec, "judge": spec})
    monkeypatch.chdir(tmp_path.parent)  # another folder: the path is the config's, not cwd's
    cfg = load_config(path)
    assert cfg.models.vlm.endpoints_file == str(tmp_path / "state" / "endpoints.json")
    # doctor (and the caption preflight) says what to do before `up` has run
    [probe] = asyncio.run(check_endpoints(cfg.models.vlm))
    assert not probe.ok and "capflow endpoints up" in probe.detail
