"""The refresh flow on a multi-process local cluster, and the same refresh in one process.

The cluster (tests/cluster/conftest.py): a Prefect server on PostgreSQL, the ``capflow
deploy`` deployments on a process pool with two workers, an external Dask scheduler with two
workers, two ``transformers serve`` endpoints behind the openai backend's routing (agents and
summary; the judge runs in-process, see ``Cluster.config`` for why), moto S3.

"The same dataset" here means, for a run on the cluster and an in-process run of the same
config on another root (embedded single-worker Dask, the same two endpoints): the same
asset ids, the same ``assets`` rows, byte-identical prepared media per asset, and caption
rows equal in every field but the run's own (``run_id``, ``created_at``, the wall-time based
``cost_usd``, per-call ``latency_s``) - caption text, routes, agent outputs, judge scores,
token counts, fingerprints and caption ids included. That holds because decoding is greedy
(temperature 0) and every generation is a batch of one (each server answers one request at
a time; the in-process judge has ``max_batch_size: 1``), so a reply depends only on its
request, not on which server the least-loaded routing chose or what else was in flight.
With sampling (tiny.yaml's temperature 1.0) only the first three would hold.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import pytest

from tests.cluster.conftest import POOL, Cluster, pointed_at
from tests.cluster.stack import pg_fetch

pytestmark = [pytest.mark.http, pytest.mark.timeout(600)]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RUN_FIELDS = ("run_id", "created_at", "cost_usd")
ITEMS = 4  # tests.flows.refresh_setup.KEEP: three images and a video


def _requests(server: Any) -> int:
    """Chat completions the server answered so far (uvicorn's access log lines)."""
    return server.log_path.read_text(errors="replace").count('"POST /v1/chat/completions')


def _dask_executed(address: str) -> dict[str, int]:
    """Tasks each Dask worker has executed, by worker name."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        counts = client.run(lambda dask_worker: dask_worker.state.executed_count)
        names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
    return {str(names[a]): n for a, n in counts.items()}


def _wait_final(flow_run_id: Any, timeout: float) -> Any:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if (run.state and run.state.type.value in TERMINAL) or time.monotonic() > deadline:
                return run
            time.sleep(1)


@pytest.fixture(scope="module")
def cluster_run(cluster: Cluster) -> dict[str, Any]:
    """One capflow-refresh run started through the API and run by the workers."""
    from prefect.deployments import run_deployment

    from flows.deploy import REFRESH

    before = [_requests(s) for s in cluster.servers], _dask_executed(cluster.dask_address)
    with pointed_at(cluster.api_url):
        started = time.monotonic()
        run = run_deployment(f"{REFRESH}/{REFRESH}", timeout=0)
        run = _wait_final(run.id, 300)
        elapsed = time.monotonic() - started
    after = [_requests(s) for s in cluster.servers], _dask_executed(cluster.dask_address)
    cluster.stack.timings["refresh on the cluster (API start to final state)"] = round(elapsed, 1)
    if run.start_time and run.end_time:
        flow_s = (run.end_time - run.start_time).total_seconds()
        cluster.stack.timings["refresh on the cluster (flow run itself)"] = round(flow_s, 1)
    dask = {w: n - before[1].get(w, 0) for w, n in after[1].items()}
    served = [b - a for a, b in zip(before[0], after[0], strict=True)]
    return {"run": run, "requests": served, "dask": dask}


def test_refresh_deployment_runs_on_the_cluster(cluster: Cluster, cluster_run: dict) -> None:
    from capflow_core.config import S3Config
    from capflow_core.runs_store import read_runs

    run = cluster_run["run"]
    logs = {p.name: p.log.read_text(errors="replace") for p in cluster.workers}
    assert run.state.type.value == "COMPLETED", f"{run.state}\n" + "\n".join(
        f"--- {name}\n{text[-3000:]}" for name, text in logs.items()
    )
    # run by a worker: in a process of its own, submitted by exactly one of the two
    pid = int(str(run.infrastructure_pid).rsplit(":", 1)[-1])
    assert pid != os.getpid() and pid not in {p.popen.pid for p in cluster.workers}
    mark = f"Flow run '{run.name}' submitted to infrastructure"
    assert sum(mark in text for text in logs.values()) == 1, mark
    assert all(p.alive() for p in cluster.workers)
    assert run.work_pool_name == POOL
    # the dataset: version 1 with every listed item captioned, recorded with this flow run
    [record] = read_runs(f"{cluster.prefix}/cluster", S3Config())
    assert record["flow_run_id"] == str(run.id) and record["status"] == "promoted"
    assert record["dataset_version"] == 1
    assert record["reconciliation"]["listed"] == record["reconciliation"]["captioned"] == ITEMS
    # preprocessing went to the external scheduler and both of its workers (one item a task)
    assert set(cluster_run["dask"]) == {"dask-0", "dask-1"}, cluster_run["dask"]
    assert min(cluster_run["dask"].values()) >= 1 and sum(cluster_run["dask"].values()) == ITEMS
    # both endpoints answered the caption stage's requests
    assert min(cluster_run["requests"]) > 0, cluster_run["requests"]
    # Prefect's state is in PostgreSQL (and nowhere else)
    [row] = pg_fetch(cluster.db_dsn, "SELECT state_type FROM flow_run WHERE id = $1", run.id)
    assert row["state_type"] == "COMPLETED"
    names = {r["name"] for r in pg_fetch(cluster.db_dsn, "SELECT name FROM deployment")}
    assert "capflow-refresh" in names
    assert not list(cluster.prefect_home.glob("*.db"))


def _prepared(root: str, run_id: str) -> dict[str, str]:
    """sha256 of each asset's prepared media (image bytes or frames) in a run's staging."""
    import pyarrow.parquet as pq

    from capflow_core.config import S3Config
    from capflow_core.prepared_shards import staging_dir
    from capflow_core.storage import filesystem

    fs, folder = filesystem(staging_dir(root, run_id, "prepared"), S3Config())
    out = {}
    for path in sorted(fs.glob(f"{folder}/*.parquet")):
        with fs.open(path, "rb") as f:
            for row in pq.read_table(f).to_pylist():
                media = [row["image"] or b"", *(row["frames"] or [])]
                out[row["asset_id"]] = hashlib.sha256(b"".join(media)).hexdigest()
    return out


def _dataset(root: str) -> dict[str, Any]:
    """A root's dataset v1, assets and prepared media, without what differs by run."""
    from capflow_core.captions_store import read_version
    from capflow_core.config import S3Config
    from capflow_core.delta_store import open_assets
    from capflow_core.runs_store import read_runs

    captions = {}
    for row in read_version(root, S3Config(), 1).to_pylist():
        row = {k: v for k, v in row.items() if k not in RUN_FIELDS}
        row["agents"] = [{k: v for k, v in a.items() if k != "latency_s"} for a in row["agents"]]
        captions[row["asset_id"]] = row
    assets = {
        r["asset_id"]: {k: v for k, v in r.items() if not k.endswith("_run")}
        for r in open_assets(root, S3Config()).to_pyarrow_table().to_pylist()
    }
    [record] = read_runs(root, S3Config())
    return {"captions": captions, "assets": assets, "prepared": _prepared(root, record["run_id"])}


def test_cluster_dataset_equals_the_single_process_run(cluster: Cluster, cluster_run: dict):
    from capflow_core.config import S3Config
    from capflow_core.runs_store import read_runs
    from tests.flows.cli_runner import run

    assert cluster_run["run"].state.type.value == "COMPLETED", cluster_run["run"].state
    single = cluster.config("single", external_dask=False)
    # `capflow refresh` in its own process: this test process never binds Prefect's
    # client services (the concurrency-slot service) to the cluster's server, which stops
    # after this module while later tests go on in this process
    started = time.monotonic()
    res = run("refresh", "--config", str(single), env={"PREFECT_API_URL": cluster.api_url})
    cluster.stack.timings["refresh in one process"] = round(time.monotonic() - started, 1)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    [record] = read_runs(f"{cluster.prefix}/single", S3Config())
    assert record["status"] == "promoted" and record["dataset_version"] == 1, record
    ours, theirs = _dataset(f"{cluster.prefix}/cluster"), _dataset(f"{cluster.prefix}/single")
    assert len(ours["captions"]) == ITEMS
    assert all(r["caption"] and r["judge"]["scores"] for r in ours["captions"].values())
    assert set(ours["captions"]) == set(ours["assets"]) == set(ours["prepared"])
    assert ours["prepared"] == theirs["prepared"]
    assert ours["assets"] == theirs["assets"]
    for asset_id, row in ours["captions"].items():
        assert row == theirs["captions"][asset_id], row["source_uri"]
