"""The multi-process local cluster, started once for the module that uses it.

PostgreSQL (as an unprivileged user), a Prefect server on it, the ``capflow deploy``
deployments on a process pool served by two ``prefect worker`` processes, an external Dask
scheduler with two workers, the session's two ``transformers serve`` endpoints and moto S3.
The Prefect server and Dask boot in parallel. Module scope, not session scope: the stack's
seven processes stop as soon as the module is done instead of competing with later tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.cluster.stack import (
    Proc,
    Stack,
    postgres_bindir,
    start_dask,
    start_postgres,
    start_prefect_server,
    start_prefect_worker,
    stop_all,
    wait_for,
)
from tests.flows.refresh_setup import sample_source, write_refresh_config
from tests.serve_process import ServeProcess

POOL = "capflow-cluster"
BUCKET = "capflow-test"


@dataclass
class Cluster:
    """The running stack, and the storage prefix and config its refresh runs use."""

    api_url: str
    db_dsn: str = field(repr=False)  # the Prefect database (postgresql://..., a password)
    prefect_home: Path
    workers: list[Proc]
    dask_address: str
    servers: tuple[ServeProcess, ServeProcess]
    prefix: str  # s3://capflow-test/cluster-<id>; sources: <prefix>/images, <prefix>/video
    model_dir: Path
    tmp: Path
    stack: Stack

    def config(self, name: str, external_dask: bool) -> Path:
        """A refresh config for root ``<prefix>/<name>``; Dask: the external scheduler, else an
        embedded one-worker LocalCluster.

        ``vlm`` and ``llm`` (agents, summary) are the tiny model behind both endpoints; the
        judge runs in-process, where xgrammar constrains its scores. ``transformers serve``
        has no constrained decoding, and the random-weight model's free replies virtually
        never parse as judge JSON or a router choice (tests/reliability/test_endpoint_faults.py),
        so an all-HTTP refresh here ends with every sample failed and no dataset. For the same
        reason the image source carries a domain (routing is skipped; video always is).
        Greedy decoding (temperature 0): a reply depends only on its request, whichever server
        answers it. One item per Dask task, so both Dask workers get work.
        """
        endpoint = {"structured_outputs": "none", "video": "frames", "max_inflight": 4}
        served = {
            "backend": "openai",
            "model": str(self.model_dir),  # the name `transformers serve` knows it by
            "endpoints": [{"url": s.url, **endpoint} for s in self.servers],
            "timeout_s": 120,
            "max_retries": 4,
            "backoff_s": 0.2,
            "max_backoff_s": 2.0,
        }
        # one request at a time: a padded batch could round differently and flip a greedy tie
        judge = {"backend": "transformers", "model": str(self.model_dir), "device": "cpu",
                 "dtype": "float32", "max_batch_size": 1}  # fmt: skip
        path = write_refresh_config(
            self.tmp / f"{name}.yaml",
            self.model_dir,
            f"{self.prefix}/{name}",
            [
                {"uri": f"{self.prefix}/images", "license": "cc-by-4.0", "domain": "natural"},
                {"uri": f"{self.prefix}/video", "license": "cc-by-4.0"},
            ],
            self.dask_address,
            models={"vlm": served, "llm": served, "judge": judge},
            generation={"temperature": 0.0, "seed": 0, "max_tokens_cap": 24},
            preprocess={"items_per_task": 1},
            finetune={"min_new_samples": 1_000_000},  # no promoted event, no fine-tune run
        )
        if not external_dask:
            data = yaml.safe_load(path.read_text())
            data["dask"] = {"address": None, "n_workers": 1}
            path.write_text(yaml.safe_dump(data))
        return path


@contextlib.contextmanager
def pointed_at(api_url: str) -> Iterator[None]:
    """This process's Prefect client (and children) on ``api_url``; env restored after."""
    from flows.deploy import use_api

    saved = os.environ.get("PREFECT_API_URL")
    try:
        with use_api(api_url):
            yield
    finally:
        if saved is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = saved


def _online_workers(api_url: str) -> set[str]:
    reply = httpx.post(f"{api_url}/work_pools/{POOL}/workers/filter", json={}, timeout=5)
    reply.raise_for_status()
    return {w["name"] for w in reply.json() if w.get("status") == "ONLINE"}


def _in_background(
    pool: ThreadPoolExecutor,
    stack: Stack,
    name: str,
    started: float,
    check: Callable[[], Any],
    procs: list[Proc],
) -> Future[None]:
    """Wait for ``check`` in a thread; record how long ``name`` took from ``started``."""

    def wait() -> None:
        wait_for(check, name, 120, procs)
        stack.timed(name, started)

    return pool.submit(wait)


def _healthy(api_url: str) -> bool:
    return httpx.get(f"{api_url}/health", timeout=1).status_code == 200


def _dask_ready(address: str, n: int) -> bool:
    from distributed import Client

    with Client(address, timeout=10) as client:
        client.wait_for_workers(n, timeout=10)
    return True


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    moto_s3: dict[str, str],
    tiny_model_dir: Path,
) -> Iterator[Cluster]:
    """Start the whole stack (the Dask workers inherit the moto S3 environment)."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (Debian: apt-get install postgresql)")
    import s3fs

    tmp = tmp_path_factory.mktemp("cluster")
    stack, pg_dir = Stack(), Path(tempfile.mkdtemp(prefix="capflow-pg-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GX_ANALYTICS_ENABLED": "false"}
    try:
        # First, alone: its two servers already keep two cores busy while they boot.
        t_serve = time.monotonic()
        servers = request.getfixturevalue("serve_pair")
        stack.timed("transformers serve x2 (session fixture)", t_serve)
        dsn = start_postgres(stack, bindir, pg_dir, tmp)
        db = f"{dsn}/prefect"
        t0 = time.monotonic()
        api, server = start_prefect_server(
            stack, tmp / "prefect-home", db.replace("://", "+asyncpg://", 1)
        )
        dask_address = start_dask(stack, tmp, 2, env)
        dask_procs = stack.procs[-3:]
        with ThreadPoolExecutor(2) as pool:
            waits = [
                _in_background(
                    pool, stack, "prefect server on postgres", t0, lambda: _healthy(api), [server]
                ),
                _in_background(
                    pool,
                    stack,
                    "dask scheduler + 2 workers",
                    t0,
                    lambda: _dask_ready(dask_address, 2),
                    dask_procs,
                ),
            ]
            for wait in waits:
                wait.result()
        prefix = f"s3://{BUCKET}/cluster-{uuid.uuid4().hex[:8]}"
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_s3["AWS_ENDPOINT_URL"]})
        for path in sample_source(tmp / "src").iterdir():
            kind = "video" if path.suffix == ".mp4" else "images"
            fs.put(str(path), f"{prefix.removeprefix('s3://')}/{kind}/{path.name}")
        c = Cluster(api, db, tmp / "prefect-home", [], dask_address, servers, prefix,
                    tiny_model_dir, tmp, stack)  # fmt: skip
        worker_env = env | {
            "PREFECT_API_URL": api,
            "PREFECT_HOME": str(tmp / "worker-home"),
            "PREFECT_WORKER_QUERY_SECONDS": "2",
        }
        t1 = time.monotonic()
        c.workers = [
            start_prefect_worker(stack, f"worker-{i}", POOL, tmp / f"worker-{i}.log", worker_env)
            for i in range(2)
        ]
        with pointed_at(api):
            from flows.deploy import REFRESH, apply_deployments

            t_deploy = time.monotonic()
            apply_deployments(config=str(c.config("cluster", external_dask=True)), pool=POOL)
            stack.timed("capflow deploy (prefect deploy --all)", t_deploy)
            _drop_schedules(REFRESH)
        names = {f"worker-{i}" for i in range(2)}
        wait_for(lambda: _online_workers(api) >= names, "prefect workers", 120, c.workers)
        stack.timed("2 prefect process workers online (parallel with deploy)", t1)
        yield c
    finally:
        print(f"\ncluster timings (s): {stack.timings}")
        stop_all(stack.procs)
        shutil.rmtree(pg_dir, ignore_errors=True)


def _drop_schedules(deployment: str) -> None:
    """Remove the nightly schedule: only the run the test starts may reach the workers."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(f"{deployment}/{deployment}")
        for schedule in client.read_deployment_schedules(dep.id):
            client.delete_deployment_schedule(dep.id, schedule.id)
