"""Apply ``infra/prefect.yaml`` to a Prefect server and run the local pieces of `capflow serve`.

``infra/prefect.yaml`` stays the source of truth: :func:`apply_deployments` loads it, fills
in this checkout's path, the config, the cron and the pool, and hands the result to
``prefect --no-prompt deploy --all`` (which also creates the fine-tune trigger's automation).
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO_ROOT / "infra" / "prefect.yaml"
POOL = "capflow-process"
REFRESH = "capflow-refresh"
GPU_DEPLOYMENTS = ("metacaptioner-finetune",)  # train on the GPU host; the rest call endpoints
DEPLOY_TIMEOUT_S = 300


class DeployError(RuntimeError):
    """Deployments could not be applied (the message carries the tool's output)."""


def prefect_bin() -> str:
    """The ``prefect`` executable of this interpreter's environment."""
    return str(Path(sys.executable).with_name("prefect"))


def configured_api_url() -> str | None:
    """The API URL of the environment or the active Prefect profile; None if none is set.

    The environment is read first: Prefect's settings object is built when prefect is first
    imported and does not see a variable exported after that.
    """
    from prefect.settings import get_current_settings

    url = os.environ.get("PREFECT_API_URL") or get_current_settings().api.url
    return str(url) if url else None


def render_spec(
    spec: dict[str, Any],
    *,
    config: str | None = None,
    cron: str | None = None,
    pool: str | None = None,
    gpu_pool: str | None = None,
    repo_root: Path = REPO_ROOT,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The prefect.yaml content with the checkout, config path (and config overrides, e.g.
    the storage root), refresh cron and pools applied (``gpu_pool``: the pool of the
    :data:`GPU_DEPLOYMENTS`)."""
    out = copy.deepcopy(spec)
    out.pop("definitions", None)  # its aliases are already expanded into the deployments
    out["pull"] = [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(repo_root)}}
    ]
    for dep in out["deployments"]:
        if config is not None:
            dep.setdefault("parameters", {})["config"] = config
        if overrides:
            dep.setdefault("parameters", {})["overrides"] = overrides
        chosen = gpu_pool if gpu_pool and dep["name"] in GPU_DEPLOYMENTS else pool
        if chosen:
            dep["work_pool"] = {**dep.get("work_pool", {}), "name": chosen}
        if cron and dep["name"] == REFRESH:
            dep["schedules"] = [{**s, "cron": cron} for s in dep.get("schedules") or [{}]]
    return out


def load_spec(path: Path = PREFECT_FILE) -> dict[str, Any]:
    """The parsed prefect.yaml (YAML aliases expanded)."""
    return yaml.safe_load(path.read_text())


def ensure_work_pool(name: str = POOL) -> bool:
    """Create the process work pool ``name`` if it is missing; True when it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            template = ProcessWorker.get_default_base_job_template()
            client.create_work_pool(
                WorkPoolCreate(name=name, type="process", base_job_template=template)
            )
            return True


def apply_deployments(
    config: str | None = None,
    cron: str | None = None,
    pool: str | None = None,
    prefect_file: Path = PREFECT_FILE,
    overrides: dict[str, Any] | None = None,
    gpu_pool: str | None = None,
) -> list[str]:
    """Apply the file's deployments to the server in PREFECT_API_URL; returns their names.

    Creates missing work pools (as process pools). ``config`` (made absolute by the caller)
    becomes every deployment's ``config`` parameter; ``cron`` replaces the refresh schedule;
    ``gpu_pool`` takes the :data:`GPU_DEPLOYMENTS` off ``pool``.
    """
    spec = render_spec(
        load_spec(prefect_file),
        config=config,
        cron=cron,
        pool=pool,
        gpu_pool=gpu_pool,
        overrides=overrides,
    )
    for name in dict.fromkeys(d["work_pool"]["name"] for d in spec["deployments"]):
        ensure_work_pool(name)
    with tempfile.TemporaryDirectory(prefix="capflow-deploy-") as tmp:
        rendered = Path(tmp) / "prefect.yaml"
        rendered.write_text(yaml.safe_dump(spec, sort_keys=False))
        cmd = [prefect_bin(), "--no-prompt", "deploy", "--all", "--prefect-file", str(rendered)]
        proc = subprocess.run(
            cmd,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=DEPLOY_TIMEOUT_S,
            check=False,
            env={**os.environ, "PREFECT_CLI_COLORS": "false", "COLUMNS": "200"},
        )
    if proc.returncode != 0:
        raise DeployError(f"prefect deploy failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    return [d["name"] for d in spec["deployments"]]


def server_launch(home: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """Command and environment of ``prefect server start`` on 127.0.0.1:``port`` with its
    own PREFECT_HOME (its database there too, unless the caller sets
    PREFECT_API_DATABASE_CONNECTION_URL)."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": "",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Without these the UI calls the default port 4200, whatever --port says.
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
    }
    cmd = [prefect_bin(), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return cmd, env


def start_server(home: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start ``prefect server start`` on 127.0.0.1:``port`` with its own PREFECT_HOME."""
    home.mkdir(parents=True, exist_ok=True)
    cmd, env = server_launch(home, port)
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def wait_healthy(api_url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 90) -> None:
    """Wait until ``<api_url>/health`` answers; raise if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{api_url}/health", timeout=1).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise DeployError(f"prefect server exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise DeployError(f"no answer from {api_url}/health in {timeout:.0f} s") from None
            time.sleep(0.3)


@contextlib.contextmanager
def use_api(api_url: str) -> Iterator[None]:
    """Point this process (settings already loaded) and its children at ``api_url``."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    os.environ["PREFECT_API_URL"] = api_url
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield


def start_worker(
    pool: str = POOL, log: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``prefect worker start --pool POOL --type process`` against PREFECT_API_URL."""
    cmd = [prefect_bin(), "worker", "start", "--pool", pool, "--type", "process"]
    out = log.open("ab") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    finally:
        if log:
            out.close()  # the child holds its own descriptor


def stop(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """Terminate a child we started (SIGTERM, then SIGKILL after ``timeout``)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def ui_url(api_url: str) -> str:
    """The UI address of a server: its API URL without the trailing ``/api``."""
    return api_url.rstrip("/").removesuffix("/api")
