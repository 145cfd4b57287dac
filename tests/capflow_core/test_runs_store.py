"""The `runs` table: partial upserts keyed on run_id."""

from __future__ import annotations

import pytest

from capflow_core.config import S3Config
from capflow_core.runs_store import RUN_COLUMNS, read_run, read_runs, record_run

S3 = S3Config()


def test_partial_updates_round_trip(tmp_path):
    root = str(tmp_path / "root")
    assert read_run(root, S3, "r1") is None and read_runs(root, S3) == []
    record_run(root, S3, "r1", flow_run_id="f1", status="running", started_at="2026-01-02T00:00")
    record_run(root, S3, "r0", status="running", started_at="2026-01-01T00:00")
    record_run(
        root,
        S3,
        "r1",
        status="promoted",
        gate="passed",
        dataset_version=3,
        counts={"captioned": 5, "rejected": 1},
        reconciliation={"listed": 6, "ok": True},
        failing=[],
        cost_usd=0.25,
        tokens_prompt=100,
    )
    run = read_run(root, S3, "r1")
    assert set(run) == set(RUN_COLUMNS)
    assert (run["flow_run_id"], run["started_at"], run["status"]) == (
        "f1",
        "2026-01-02T00:00",
        "promoted",
    )
    assert run["counts"] == {"captioned": 5, "rejected": 1} and run["failing"] == []
    assert run["reconciliation"]["ok"] is True and run["dataset_version"] == 3
    assert run["cost_usd"] == 0.25 and run["tokens_prompt"] == 100 and run["api_usd"] is None
    assert [r["run_id"] for r in read_runs(root, S3)] == ["r0", "r1"]
    record_run(root, S3, "r0", status="gate_failed", failing=[{"expectation": "x"}])
    assert read_run(root, S3, "r0")["failing"] == [{"expectation": "x"}]
    assert read_run(root, S3, "r0")["started_at"] == "2026-01-01T00:00"


def test_unknown_field_or_status_refused(tmp_path):
    root = str(tmp_path / "root")
    with pytest.raises(ValueError, match="unknown"):
        record_run(root, S3, "r1", colour="red")
    with pytest.raises(ValueError, match="status"):
        record_run(root, S3, "r1", status="done")
    assert read_runs(root, S3) == []
