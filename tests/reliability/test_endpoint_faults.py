"""Model endpoints that die mid-shard: real ``transformers serve`` processes, killed and restarted.

One endpoint killed and brought back: the openai backend retries on the other, the shard
completes, nothing is lost or duplicated. Every endpoint down past the retry budget: the
shard fails clearly, its completed samples are kept as a partial, and the next call
captions only the rest. The shard is prepared by the real ingest and Dask preprocessing;
the random-weight tiny model's replies rarely parse as judge scores, so most samples end
as failed tries (``caption_attempts``) rather than staged captions: both count as done.

The random-weight model sometimes spells the literal ``<|image_pad|>``; rendered into the
summary or judge prompt unchanged, ``transformers serve`` would answer HTTP 500 (an image
placeholder count mismatch) on every server, faults or not. ``registry.render`` defuses
control tokens in such data, so these tests use the packaged prompts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from capflow_core.caption_attempts import attempt_counts
from capflow_core.engine import CapFlow
from capflow_core.errors import InfrastructureError
from capflow_core.records import CaptionRecord
from capflow_core.storage import filesystem
from tasks.caption import caption_markers, caption_shard, captioned_dir, staged_records
from tasks.caption_partial import partial_paths, read_kept
from tasks.caption_plan import plan_captions
from tasks.ingest import ingest
from tasks.preprocess import preprocess
from tests.serve_process import ServeProcess
from tests.tasks.pipeline import config_dict, write_images

pytestmark = [pytest.mark.http, pytest.mark.timeout(600)]

N_IMAGES = 8
RESTART_TIMEOUT_S = 300.0  # a model server's start on a loaded 2-core machine


@pytest.fixture
def servers(serve_pair: tuple[ServeProcess, ServeProcess]) -> Iterator[tuple[ServeProcess, ...]]:
    """The session's two servers; any left dead by a test is started again afterwards."""
    yield serve_pair
    dead = [s for s in serve_pair if s.proc is None or s.proc.poll() is not None]
    for server in dead:
        server.start()
    for server in dead:
        server.wait_healthy(RESTART_TIMEOUT_S)


def _config(tmp_path: Path, servers: tuple[ServeProcess, ...], max_retries: int) -> Any:
    from capflow_core.config import config_from_dict

    src, root = tmp_path / "src", str(tmp_path / "root")
    write_images(src, {f"img-{i}.jpg": 40 + i for i in range(N_IMAGES)})
    spec = {
        "backend": "openai",
        "model": str(servers[0].model_dir),
        "timeout_s": 60,
        "endpoints": [
            {"url": s.url, "structured_outputs": "none", "video": "frames", "max_inflight": 2}
            for s in servers
        ],
        "max_retries": max_retries,
        "backoff_s": 0.05,
        "max_backoff_s": 0.3,
    }
    data = config_dict(root, str(src)) | {
        # a source domain skips routing: agents, summary and judge per sample
        "sources": [{"uri": str(src), "license": "cc0", "domain": "natural"}],
        "models": {"vlm": spec, "llm": spec, "judge": spec},
        "concurrency": {"samples_in_flight": 2},
    }
    return config_from_dict(data), root


def _prepared_shard(cfg: Any, root: str, run_id: str, dask_address: str) -> tuple[str, set[str]]:
    ingest(cfg, run_id=run_id)
    preprocess(cfg, run_id=run_id, dask_address=dask_address)
    [shard] = plan_captions(cfg, root, run_id).shards
    ids = set(pq.read_table(shard, columns=["asset_id"]).column("asset_id").to_pylist())
    assert len(ids) == N_IMAGES
    return shard, ids


def _after(n: int, action: Callable[[], None], seen: list[CaptionRecord]) -> Callable:
    """An ``on_record`` callback that collects records and starts ``action`` in a thread
    once ``n`` records are complete (the event loop is not blocked)."""
    started: list[threading.Thread] = []

    def on_record(record: CaptionRecord) -> None:
        seen.append(record)
        if len(seen) == n and not started:
            started.append(threading.Thread(target=action, daemon=True))
            started[0].start()

    on_record.threads = started  # type: ignore[attr-defined]
    return on_record


def _unreachable(record: CaptionRecord) -> bool:
    return any(v.startswith("infrastructure:") for v in record.errors.values())


def _done_once(cfg: Any, root: str, run_id: str, ids: set[str]) -> None:
    """Every asset is either staged or a recorded failed try, exactly once."""
    staged = staged_records(root, run_id, cfg.s3).column("asset_id").to_pylist()
    tried = attempt_counts(root, cfg.s3)
    assert len(staged) == len(set(staged)) and set(tried.values()) <= {1}
    assert set(staged).isdisjoint(tried) and set(staged) | set(tried) == ids


def test_endpoint_killed_mid_shard_and_restarted(servers, tmp_path: Path, dask_address: str):
    a, b = servers
    cfg, root = _config(tmp_path, servers, max_retries=6)
    shard, ids = _prepared_shard(cfg, root, "k1", dask_address)
    engine = CapFlow(cfg)
    backend = engine.backends["vlm"]
    at_kill: dict[str, Any] = {}

    def kill_and_restart() -> None:
        at_kill.update(backend.stats()["endpoints"][b.url])
        a.kill()
        a.start()
        a.wait_healthy(RESTART_TIMEOUT_S)

    seen: list[CaptionRecord] = []
    on_record = _after(1, kill_and_restart, seen)
    marker = caption_shard(cfg, root, "k1", shard, engine=engine, on_record=on_record)
    on_record.threads[0].join(timeout=RESTART_TIMEOUT_S + 10)
    assert a.proc is not None and a.proc.poll() is None  # back up

    stats = backend.stats()
    assert stats["endpoints"][a.url]["failures"] >= 1 and stats["retries"] >= 1
    assert stats["endpoints"][b.url]["served"] > at_kill["served"]  # b took over
    assert [r for r in seen if _unreachable(r)] == []
    assert sorted(r.asset_id for r in seen) == sorted(ids)
    assert marker["captioned"] + marker["failed"] + marker["rejected"] == N_IMAGES
    assert marker["resumed"] == 0
    _done_once(cfg, root, "k1", ids)
    fs, folder = filesystem(captioned_dir(root, "k1"), cfg.s3)
    assert partial_paths(fs, folder, shard.rsplit("/", 1)[-1].removesuffix(".parquet")) == []


def test_all_endpoints_down_keeps_completed_samples(servers, tmp_path: Path, dask_address: str):
    cfg, root = _config(tmp_path, servers, max_retries=2)
    shard, ids = _prepared_shard(cfg, root, "d1", dask_address)
    name = shard.rsplit("/", 1)[-1].removesuffix(".parquet")

    def kill_both() -> None:
        for server in servers:
            server.kill()

    first: list[CaptionRecord] = []
    on_record = _after(2, kill_both, first)
    with pytest.raises(InfrastructureError) as info:
        caption_shard(cfg, root, "d1", shard, engine=CapFlow(cfg), on_record=on_record)
    message = str(info.value)
    completed = {r.asset_id for r in first if not _unreachable(r)}
    lost = ids - completed
    assert 2 <= len(completed) < N_IMAGES
    assert f"{name}: {len(lost)} of {N_IMAGES} sample(s) could not reach a model server" in message
    assert f"kept the {len(completed)} completed in staging/d1/captioned/{name}.part-0" in message
    assert "no answer after 3 attempts" in message and "capflow doctor" in message
    assert all(s.url in message for s in servers)
    fs, folder = filesystem(captioned_dir(root, "d1"), cfg.s3)
    assert {r.asset_id for r in read_kept(fs, folder, name).records} == completed
    assert caption_markers(root, "d1", cfg.s3) == {} and attempt_counts(root, cfg.s3) == {}

    for server in servers:
        server.start()
    for server in servers:
        server.wait_healthy(RESTART_TIMEOUT_S)
    engine = CapFlow(cfg)
    second: list[CaptionRecord] = []
    marker = caption_shard(cfg, root, "d1", shard, engine=engine, on_record=second.append)
    assert sorted(r.asset_id for r in second) == sorted(lost)  # only the missing ones
    served = sum(e["served"] for e in engine.backends["vlm"].stats()["endpoints"].values())
    assert served >= len(lost)
    assert marker["resumed"] == len(completed)
    assert marker["captioned"] + marker["failed"] + marker["rejected"] == N_IMAGES
    _done_once(cfg, root, "d1", ids)
    assert partial_paths(fs, folder, name) == []
