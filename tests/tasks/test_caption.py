"""The caption stage over prepared shards: staging, markers, retries and the retry budget.

Real ingest + Dask preprocessing + Delta tables; a scripted backend decides which sample's
model calls fail (the real runtimes are exercised by the refresh tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capflow_core.backends.base import GenRequest
from capflow_core.caption_attempts import attempt_counts
from capflow_core.engine import CURRENT_SAMPLE, CapFlow
from capflow_core.run_outcome import read_rejects
from tasks.caption import caption_markers, caption_shard, staged_records
from tasks.caption_plan import plan_captions
from tasks.ingest import ingest
from tasks.preprocess import preprocess
from tests.capflow_core.fakes import ScriptedBackend, default_reply
from tests.tasks.pipeline import config_dict, write_images

pytestmark = pytest.mark.timeout(180)


def _flaky(bad: str):
    """A backend whose judge replies garbage for the sample whose URI ends with ``bad``."""

    def script(request: GenRequest) -> str:
        if request.tag.startswith("judge") and CURRENT_SAMPLE.get().endswith(bad):
            return "not json"
        return default_reply(request)

    return script


def _engine(cfg, bad: str) -> CapFlow:
    backend = ScriptedBackend(_flaky(bad), delay_s=0)
    return CapFlow(cfg, backends={"vlm": backend, "llm": backend, "judge": backend})


def _run(cfg, root: str, run_id: str, engine: CapFlow, dask_address: str) -> dict:
    ingest(cfg, run_id=run_id)
    preprocess(cfg, run_id=run_id, dask_address=dask_address)
    plan = plan_captions(cfg, root, run_id)
    for shard in plan.shards:
        caption_shard(cfg, root, run_id, shard, engine=engine)
    return plan.to_dict()


def test_failed_samples_retry_next_run_then_become_rejects(tmp_path: Path, dask_address: str):
    from capflow_core.config import config_from_dict

    src, root = tmp_path / "src", str(tmp_path / "root")
    write_images(src, {"a.jpg": 1, "b.jpg": 2, "c.png": 3})
    data = config_dict(root, str(src)) | {"caption": {"retry_budget": 2}}
    cfg = config_from_dict(data)
    engine = _engine(cfg, "b.jpg")

    first = _run(cfg, root, "r1", engine, dask_address)
    assert (first["new"], first["retry"]) == (3, 0)
    markers = caption_markers(root, "r1", cfg.s3)
    assert sum(m["captioned"] for m in markers.values()) == 2
    assert sum(m["failed"] for m in markers.values()) == 1
    staged = staged_records(root, "r1", cfg.s3)
    assert sorted(Path(u).name for u in staged.column("source_uri").to_pylist()) == [
        "a.jpg",
        "c.png",
    ]
    assert list(attempt_counts(root, cfg.s3).values()) == [1]
    some = staged_records(root, "r1", cfg.s3, columns=["caption", "source_uri"])
    assert some.column_names == ["caption", "source_uri"] and some.num_rows == 2
    one = staged.column("asset_id")[0].as_py()
    picked = staged_records(root, "r1", cfg.s3, asset_ids=[one, "not-staged"])
    assert picked.schema == staged.schema and picked.column("asset_id").to_pylist() == [one]

    # rerunning a shard that has its marker does nothing (no second attempt row)
    for shard in plan_captions(cfg, root, "r1").shards:
        caption_shard(cfg, root, "r1", shard, engine=engine)
    assert list(attempt_counts(root, cfg.s3).values()) == [1]

    # next run: nothing new, b.jpg has no caption row -> retried; it fails its 2nd (last) try
    second = _run(cfg, root, "r2", engine, dask_address)
    assert (second["new"], second["retry"]) == (0, 3)  # nothing promoted yet: all 3 wait
    rejects = [r for r in read_rejects(root, cfg.s3) if r["stage"] == "caption"]
    assert [Path(r["source_uri"]).name for r in rejects] == ["b.jpg"]
    assert rejects[0]["reason_code"] == "judge_failed" and "retry_budget 2" in rejects[0]["detail"]

    # given up: the third run does not try it again
    third = _run(cfg, root, "r3", engine, dask_address)
    assert third["retry"] == 2 and third["new"] == 0


def test_plan_is_written_once_per_run(tmp_path: Path, dask_address: str):
    from capflow_core.config import config_from_dict

    src, root = tmp_path / "src", str(tmp_path / "root")
    write_images(src, {"a.jpg": 4})
    cfg = config_from_dict(config_dict(root, str(src)))
    ingest(cfg, run_id="p1")
    preprocess(cfg, run_id="p1", dask_address=dask_address)
    plan = plan_captions(cfg, root, "p1")
    stored = json.loads((Path(root) / "staging/p1/carryover/_PLANNED").read_text())
    assert stored["shards"] == plan.shards and plan.new == 1
    write_images(src, {"late.jpg": 5})  # appears after planning: not in this run's plan
    assert plan_captions(cfg, root, "p1").to_dict() == plan.to_dict()
