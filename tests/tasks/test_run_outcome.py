"""The stored outcome: ``rejects`` table rows (idempotent) and ``reconciliation.json``."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from capflow_core.config import S3Config
from capflow_core.prepare import Rejection
from capflow_core.run_outcome import (
    read_reconciliation,
    read_rejects,
    rejects_uri,
    store_rejects,
    write_reconciliation,
)
from capflow_core.storage import filesystem


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A local storage root, or one on the session's moto S3 server."""
    if request.param == "local":
        return str(tmp_path / "root")
    request.getfixturevalue("moto_s3")
    return f"s3://capflow-test/outcome-{uuid.uuid4().hex[:8]}"


def test_rejects_are_stored_once_per_run_and_uri(root: str):
    s3 = S3Config()
    first = [
        Rejection("s3://b/x y.jpg", "corrupt", "cannot identify image", None),
        Rejection("s3://b/ü.png", "duplicate", "same bytes as s3://b/a.png", "ab" * 32),
    ]
    store_rejects(root, s3, "r1", "shard-00000", first)
    store_rejects(root, s3, "r1", "shard-00000", first)  # the shard redone after a crash
    store_rejects(root, s3, "r1", "shard-00001", [Rejection("s3://b/t.mp4", "truncated", "eof")])
    store_rejects(root, s3, "r2", "shard-00000", first[:1])  # a later run: its own row
    store_rejects(root, s3, "r2", "shard-00001", [])
    rows = read_rejects(root, s3)
    keys = sorted((r["run_id"], r["source_uri"]) for r in rows)
    expected = [("r1", "s3://b/x y.jpg"), ("r1", "s3://b/ü.png"), ("r1", "s3://b/t.mp4")]
    assert keys == sorted([*expected, ("r2", "s3://b/x y.jpg")])
    dup = next(r for r in read_rejects(root, s3, "r1") if r["reason_code"] == "duplicate")
    assert dup == {
        "source_uri": "s3://b/ü.png",
        "asset_id": "ab" * 32,
        "stage": "preprocess",
        "reason_code": "duplicate",
        "detail": "same bytes as s3://b/a.png",
        "run_id": "r1",
        "shard": "shard-00000",
    }
    assert rejects_uri(root).endswith("/tables/rejects")


def test_reconciliation_is_written_atomically(root: str):
    s3 = S3Config()
    counts = {"listed": 3, "prepared": 1, "rejected": 1, "unchanged": 1, "reasons": {"x": 1}}
    where = write_reconciliation(root, "r1", counts, s3)
    assert where == f"{root}/staging/r1/reconciliation.json"
    write_reconciliation(root, "r1", counts | {"prepared": 1}, s3)  # overwrite in place
    assert read_reconciliation(root, "r1", s3) == counts
    fs, folder = filesystem(f"{root}/staging/r1", s3)
    fs.invalidate_cache(folder)
    assert [p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False)] == ["reconciliation.json"]
