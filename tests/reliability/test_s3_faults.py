"""S3 faults between CapFlow and moto: connection resets, stalls, slow and cut responses.

Ingest and preprocess run on an ``s3://`` root (and source) whose endpoint is a
fault-injecting TCP proxy in front of the moto server; the Dask workers go through it too.
Transient faults must be retried with backoff (the proxy counts them) and give the same
outcome as a clean run; a fault that outlasts the retry budget must fail the step with an
OSError and leave no object at a final key, and a rerun must complete the run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from capflow_core.config import S3Config, load_config
from capflow_core.storage import filesystem
from tests.flows.refresh_setup import sample_source
from tests.reliability.fault_proxy import FaultProxy

pytestmark = pytest.mark.timeout(240)
KEEP = ("chart.png", "document.png", "photo.jpg")
# small budgets so an exhausted retry fails within seconds: 3 tries per request (botocore),
# the whole call at most 3 times (s3fs), timeouts far below a stall
RETRY = {
    "max_attempts": 3,
    "connect_timeout_s": 2.0,
    "read_timeout_s": 4.0,
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.5,
}


@pytest.fixture
def proxy(moto_s3: dict[str, str]) -> Iterator[FaultProxy]:
    port = int(moto_s3["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    with FaultProxy(("127.0.0.1", port)) as px:
        yield px


@pytest.fixture(scope="module")
def source(moto_s3: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """Three sample images under an S3 prefix (uploaded straight to moto)."""
    local = sample_source(tmp_path_factory.mktemp("s3-faults") / "src", KEEP)
    fs, _ = filesystem("s3://capflow-test", S3Config())
    fs.put(f"{local}/", "capflow-test/fault-src/", recursive=True)
    return "s3://capflow-test/fault-src"


def _config(root: str, src: str, dask: str, endpoint: str | None) -> Any:
    s3 = {"endpoint_url": endpoint, **RETRY} if endpoint else {}
    overrides = {
        "storage": {"root": root},
        "sources": [{"uri": src}],
        "dask": {"address": dask},
        "ingest": {"shard_size": 2},
        "s3": s3,
    }
    return load_config(None, overrides)


def _ingest_and_prepare(cfg: Any) -> dict[str, Any]:
    from tasks.ingest import ingest
    from tasks.preprocess import preprocess

    listed = ingest(cfg, run_id="r1")
    prep = preprocess(cfg, run_id="r1")
    return {"new": listed.new, "shards": listed.shards} | prep.counts() | {"run_id": None}


def _staged(root: str) -> dict[str, Any]:
    """Every committed object under the run's staging folder, parsed (fails on a partial one),
    and the prepared asset ids."""
    import pyarrow.parquet as pq

    fs, base = filesystem(f"{root}/staging/r1", S3Config())
    fs.invalidate_cache()
    out: dict[str, Any] = {"assets": set(), "objects": set()}
    for path in fs.find(base):
        name = path[len(base) + 1 :]
        if ".tmp-" in name:
            continue  # an abandoned temporary name: never read by CapFlow
        out["objects"].add(name)
        with fs.open(path, "rb") as f:
            if name.endswith(".parquet"):
                table = pq.read_table(f)
                if name.startswith("prepared/"):
                    out["assets"].update(table.column("asset_id").to_pylist())
            elif not name.endswith((".jpg", ".png", ".webp", ".npy", ".bin")):
                json.loads(f.read() or b"{}")
    return out


@pytest.fixture(scope="module")
def clean(source: str, dask_address: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The outcome of ingest + preprocess without a proxy."""
    root = f"s3://capflow-test/fault-clean-{uuid.uuid4().hex[:6]}"
    counts = _ingest_and_prepare(_config(root, source, dask_address, None))
    return counts, _staged(root)


def test_resets_stalls_and_slow_responses_are_retried_to_the_clean_outcome(
    proxy: FaultProxy, source: str, dask_address: str, clean: tuple[dict, dict]
):
    from tasks.ingest import ingest
    from tasks.preprocess import preprocess

    root = f"s3://capflow-test/fault-{uuid.uuid4().hex[:6]}"
    cfg = _config(root, source, dask_address, proxy.url)
    proxy.reset(8, every=3)  # listing, manifests, the assets MERGE (deltalake)
    listed = ingest(cfg, run_id="r1")
    assert proxy.stats["reset"] >= 4, proxy.stats
    proxy.stall(2, seconds=6.0, every=4)  # longer than the 4 s read timeout
    proxy.slow(256 * 1024)  # every response at 256 KB/s
    prep = preprocess(cfg, run_id="r1")
    assert proxy.stats["stall"] == 2, proxy.stats
    proxy.clear()
    proxy.cut(3, after=100, every=2)  # responses cut in their head
    again = preprocess(cfg, run_id="r1")  # every shard committed: skipped, counts re-read
    assert proxy.stats["cut"] >= 1, proxy.stats

    expected, staged = clean
    counts = {"new": listed.new, "shards": listed.shards} | prep.counts() | {"run_id": None}
    assert counts == expected and counts["prepared"] == len(KEEP) and counts["reconciled"]
    assert again.shards_skipped == again.shards and again.prepared == len(KEEP)
    assert {"prepared/shard-00000.parquet", "prepared/shard-00000._PREPARED"} <= staged["objects"]
    assert _staged(root) == staged


def test_a_write_past_its_retries_fails_commits_nothing_and_a_rerun_completes(
    proxy: FaultProxy, source: str, dask_address: str, clean: tuple[dict, dict]
):
    from tasks.ingest import ingest
    from tasks.preprocess import preprocess

    root = f"s3://capflow-test/fault-cut-{uuid.uuid4().hex[:6]}"
    cfg = _config(root, source, dask_address, proxy.url)
    ingest(cfg, run_id="r1")
    proxy.cut(10_000, after=400, upstream=True, match=b"PUT ")  # every upload, mid-body
    with pytest.raises(Exception) as failed:
        preprocess(cfg, run_id="r1")
    cuts = proxy.stats["cut"]
    proxy.clear()
    assert cuts >= RETRY["max_attempts"], proxy.stats  # retried before giving up
    assert isinstance(failed.value, ConnectionError), repr(failed.value)  # an OSError
    message = str(failed.value)  # names the object, the endpoint and what to change
    assert f"{root}/staging/r1/prepared/" in message and proxy.url in message, message
    assert "s3.max_attempts" in message, message
    partial = _staged(root)
    assert not any(n.startswith("prepared/") for n in partial["objects"]), partial["objects"]

    rerun = preprocess(cfg, run_id="r1")  # the manifests are committed: shards redone
    expected, staged = clean
    assert rerun.shards_done == rerun.shards == expected["shards"]
    assert rerun.counts() | {"run_id": None} == {
        k: v for k, v in expected.items() if k not in ("new", "shards")
    } | {"shards": expected["shards"]}
    assert _staged(root) == staged


def _failed_tries(proxy: FaultProxy, write: Any, *args: Any, **kwargs: Any) -> int:
    """How many connection resets ``write`` went through before it gave up with an OSError."""
    before = proxy.stats["reset"]
    proxy.reset(1000)
    with pytest.raises(OSError):
        write(*args, **kwargs)
    proxy.clear()
    return proxy.stats["reset"] - before


def test_the_retry_budget_comes_from_s3_config(proxy: FaultProxy, moto_s3: dict[str, str]):
    import deltalake
    import pyarrow as pa

    from capflow_core.storage import delta_storage_options

    s3fs_tries, delta_tries = [], []
    for attempts in (1, 3):
        cfg = S3Config(
            endpoint_url=proxy.url,
            max_attempts=attempts,
            backoff_initial_s=0.01,
            backoff_max_s=0.05,
        )
        uri = f"s3://capflow-test/budget-{uuid.uuid4().hex[:6]}"
        fs, path = filesystem(uri, cfg)
        s3fs_tries.append(_failed_tries(proxy, fs.pipe_file, f"{path}/x", b"x"))
        opts = delta_storage_options(uri, cfg)
        table = pa.table({"a": [1]})
        delta_tries.append(
            _failed_tries(proxy, deltalake.write_deltalake, uri, table, storage_options=opts)
        )
        assert not fs.exists(f"{path}/x") and not fs.exists(f"{path}/_delta_log")
    assert delta_tries == [1, 3]  # object_store: max_attempts - 1 retries
    assert 1 <= s3fs_tries[0] < s3fs_tries[1] <= 30, s3fs_tries  # botocore x s3fs, bounded
