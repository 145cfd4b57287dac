"""infra/prefect.yaml applied by `capflow deploy` to a real Prefect server: schedules, the
fine-tune trigger, a refresh run on a process worker, and the deployments page of the UI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from flows.deploy import PREFECT_FILE, REPO_ROOT, load_spec, render_spec, start_worker, stop
from flows.deploy_cli import deploy, serve
from tests.flows.cli_runner import closed_port, write_config
from tests.flows.refresh_setup import sample_source, write_refresh_config
from tests.quality.chromium import FLAGS, find_chromium

pytestmark = pytest.mark.timeout(240)
NAMES = {"capflow-refresh", "metacaptioner-finetune", "capflow-evaluate"}
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
GPU_POOL = "capflow-gpu-test"


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(deploy)
    app.command()(serve)
    return app


@pytest.fixture(scope="module")
def deployed(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`capflow deploy --config tiny.yaml` once for the module; deployments by name."""
    from prefect.client.orchestration import get_client

    tiny = str(REPO_ROOT / "configs/tiny.yaml")
    result = CliRunner().invoke(_cli(), ["deploy", "--config", tiny, "--gpu-pool", GPU_POOL])
    assert result.exit_code == 0, result.output
    assert "capflow-refresh" in result.output
    with get_client(sync_client=True) as client:
        return {d.name: d for d in client.read_deployments()}


def _sync_client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def test_render_spec_applies_config_cron_pool_and_checkout():
    root = {"storage": {"root": "s3://bucket/capflow"}}
    spec = render_spec(
        load_spec(), config="/c.yaml", cron="15 4 * * *", pool="gpu-pool", overrides=root
    )
    deps = {d["name"]: d for d in spec["deployments"]}
    assert all(d["parameters"]["overrides"] == root for d in deps.values())
    assert set(deps) == NAMES and "definitions" not in spec
    assert deps["capflow-refresh"]["schedules"][0]["cron"] == "15 4 * * *"
    assert all(d["parameters"]["config"] == "/c.yaml" for d in deps.values())
    assert {d["work_pool"]["name"] for d in deps.values()} == {"gpu-pool"}
    split = render_spec(load_spec(), gpu_pool="trainers")  # the GPU deployment alone moves
    pools = {d["name"]: d["work_pool"]["name"] for d in split["deployments"]}
    assert pools == {
        "capflow-refresh": "capflow-process",
        "capflow-evaluate": "capflow-process",
        "metacaptioner-finetune": "trainers",
    }
    assert spec["pull"][0]["prefect.deployments.steps.set_working_directory"] == {
        "directory": str(REPO_ROOT)
    }
    # the file itself keeps its defaults (it is the documented source of truth)
    raw = {d["name"]: d for d in load_spec(PREFECT_FILE)["deployments"]}
    assert raw["capflow-refresh"]["schedules"][0]["cron"] == "0 2 * * *"
    assert raw["capflow-refresh"]["work_pool"]["name"] == "capflow-process"


def test_deploy_without_server_exits_2(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path)  # no profile with a server either
    code = "import typer; from flows.deploy_cli import deploy; typer.run(deploy)"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "capflow serve" in proc.stderr


def test_deploy_registers_schedule_and_trigger(deployed: dict[str, Any]):
    assert set(deployed) >= NAMES
    tiny = str(REPO_ROOT / "configs/tiny.yaml")
    assert all(deployed[n].parameters["config"] == tiny for n in NAMES)
    pools = {n: deployed[n].work_pool_name for n in NAMES}
    assert pools.pop("metacaptioner-finetune") == GPU_POOL  # --gpu-pool
    assert set(pools.values()) == {"capflow-process"}
    with _sync_client() as client:
        assert client.read_work_pool(GPU_POOL).type == "process"  # made when missing
        refresh = client.read_deployment_schedules(deployed["capflow-refresh"].id)
        assert [s.schedule.cron for s in refresh] == ["0 2 * * *"]
        assert client.read_deployment_schedules(deployed["capflow-evaluate"].id) == []
        assert client.read_deployment_schedules(deployed["metacaptioner-finetune"].id) == []
        finetune_id = deployed["metacaptioner-finetune"].id
        autos = [
            a
            for a in client.read_automations()
            if any(getattr(x, "deployment_id", None) == finetune_id for x in a.actions)
        ]
    assert len(autos) == 1
    trigger = autos[0].trigger
    assert trigger.expect == {"capflow.dataset.promoted"}
    assert trigger.match.root == {"prefect.resource.id": "capflow.dataset.*"}


def _wait_final(flow_run_id, timeout: float):
    deadline = time.monotonic() + timeout
    with _sync_client() as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state and run.state.type.value in TERMINAL:
                return run
            if time.monotonic() > deadline:
                return run
            time.sleep(1)


def test_refresh_run_from_the_api_completes_on_a_process_worker(
    deployed: dict[str, Any], tmp_path: Path, tiny_model_dir: Path, dask_address: str
):
    from prefect.deployments import run_deployment

    src = sample_source(tmp_path / "src", ("chart.png", "photo.jpg"))
    cfg = write_refresh_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        str(tmp_path / "root"),
        [{"uri": str(src)}],
        dask_address,
        finetune={"min_new_samples": 1_000_000},  # no promoted event: no fine-tune run here
    )
    log = tmp_path / "worker.log"
    worker = start_worker(log=log, env={"PREFECT_WORKER_QUERY_SECONDS": "2"})
    try:
        run = run_deployment(
            "capflow-refresh/capflow-refresh", parameters={"config": str(cfg)}, timeout=0
        )
        run = _wait_final(run.id, 150)
    finally:
        stop(worker)
    assert run.state.type.value == "COMPLETED", f"{run.state}\n{log.read_text()[-4000:]}"
    assert run.parameters["config"] == str(cfg)


def test_promoted_event_creates_a_finetune_run_with_its_version(deployed: dict[str, Any]):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.events import emit_event

    dep_id = deployed["metacaptioner-finetune"].id
    only = DeploymentFilter(id=DeploymentFilterId(any_=[dep_id]))
    with _sync_client() as client:
        before = {r.id for r in client.read_flow_runs(deployment_filter=only)}
        emit_event(
            event="capflow.dataset.promoted",
            resource={"prefect.resource.id": "capflow.dataset.test-root"},
            payload={"version": 7, "run_id": "x", "new_accepted": 5},
        )
        deadline, new = time.monotonic() + 30, []
        while not new and time.monotonic() < deadline:
            time.sleep(1)
            new = [r for r in client.read_flow_runs(deployment_filter=only) if r.id not in before]
        for run in new:  # no worker serves it; do not leave it for a later one
            client.delete_flow_run(run.id)
    assert len(new) == 1, "no metacaptioner-finetune run within 30 s of the event"
    assert new[0].parameters["version"] == 7
    assert new[0].parameters["config"] == str(REPO_ROOT / "configs/tiny.yaml")


def _chromium(binary: str, url: str, args: list[str], tmp: Path) -> str:
    # The UI needs more virtual time than a static report, and 127.0.0.1 must resolve.
    flags = [f for f in FLAGS if not f.startswith(("--virtual-time-budget", "--host-resolver"))]
    offline = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
    cmd = [binary, *flags, offline, "--virtual-time-budget=15000", f"--user-data-dir={tmp}"]
    proc = subprocess.run([*cmd, *args, url], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _wait_for_line(log: Path, proc: subprocess.Popen[bytes], marker: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        text = log.read_text()
        if marker in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"`capflow serve` never printed {marker!r}:\n{log.read_text()[-3000:]}")


def test_serve_starts_server_worker_and_ui_then_stops_them(tmp_path: Path, tiny_model_dir: Path):
    """`capflow serve` with no server configured: the UI lists the deployments; SIGINT stops
    the server and worker it started."""
    from PIL import Image

    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium on PATH")
    spec = {"backend": "transformers", "model": str(tiny_model_dir), "device": "cpu"}
    cfg = write_config(tmp_path, {"vlm": spec, "llm": spec, "judge": spec})
    port = closed_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"PREFECT_HOME": str(tmp_path / "user-home"), "PREFECT_WORKER_QUERY_SECONDS": "2"}
    code = "import typer; from flows.deploy_cli import serve; typer.run(serve)"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-u", "-c", code, "--config", str(cfg), "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        text = _wait_for_line(log, proc, "Prefect UI:", 120)
        assert (tmp_path / "root/prefect-home").is_dir()
        pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", text)]
        assert len(pids) == 2, text
        page = f"http://127.0.0.1:{port}/deployments"
        png = tmp_path / "deployments.png"
        _chromium(binary, page, [f"--screenshot={png}"], tmp_path / "p1")
        assert png.is_file(), f"chromium wrote no screenshot of {page}"
        with Image.open(png) as img:
            colors = img.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colors is None or len(colors) > 20, "the deployments page rendered flat"
        dom = _chromium(binary, page, ["--dump-dom"], tmp_path / "p2")
        assert "capflow-refresh" in dom and "metacaptioner-finetune" in dom
        assert "At 02:00 AM every day" in dom  # the refresh's nightly cron, as the UI shows it
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        stop(proc)
    for pid in pids:  # both children were stopped (and reaped) by serve
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "stopped server" in log.read_text()
