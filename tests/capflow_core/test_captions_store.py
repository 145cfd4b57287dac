"""The dataset (`captions` Delta table): promote, versions, time travel, diff, takedown,
concurrent and killed writers, on local roots and a moto S3 root."""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import time
import uuid

import pyarrow as pa
import pytest

from capflow_core import captions_store as cs
from capflow_core import captions_takedown as ct
from capflow_core.config import S3Config
from capflow_core.dataset_diff import diff_versions
from capflow_core.errors import ConfigError
from capflow_core.records import AgentOutput, CaptionRecord, JudgeResult, Route, to_arrow
from capflow_core.root_lock import holds, root_lock

S3 = S3Config()


def rec(i: int, domain: str = "natural", fp: str = "fp1", run: str = "r1") -> CaptionRecord:
    return CaptionRecord(
        asset_id=f"{i:064x}",
        source_uri=f"s3://src/{domain}/{i}.jpg",
        modality="image",
        domain=domain,
        route=Route(domain, 0.9, False),
        agents=[AgentOutput("scene", "describe", "m", "p" * 64, f"text {i}", 10, 20, 0.1)],
        caption=f"caption {i} by {fp}",
        judge=JudgeResult({"accuracy": 3, "detail": 2}, True, "mean>=2", "m"),
        accepted=True,
        fingerprint=fp,
        run_id=run,
    )


def staged(ids, **kw):
    return to_arrow([rec(i, **kw) for i in ids])


def rows(root: str, version: int | None = None) -> dict[str, dict]:
    table = cs.read_version(root, S3, version)
    return {r["asset_id"]: r for r in table.to_pylist()}


def test_promote_rerun_domain_change_and_removal(tmp_path):
    root = str(tmp_path / "root")
    first = to_arrow([rec(i, "natural") for i in range(4)] + [rec(i, "chart") for i in (4, 5)])
    res = cs.promote(
        root, S3, first, [], run_id="r1", flow_run_id="f1", counts={"staged": 6}, config_hash="c1"
    )
    assert (res.version, res.added, res.changed, res.removed, res.unchanged) == (1, 6, 0, 0, 0)
    again = cs.promote(root, S3, first, [], run_id="r2")
    assert again.version is None and again.unchanged == 6
    assert cs.latest_version(root, S3) == 1
    before = rows(root)

    # a prompt change in "chart" re-captions only chart rows; asset 0 left the source
    time.sleep(0.01)
    chart = to_arrow([rec(i, "chart", fp="fp2", run="r3") for i in (4, 5)])
    third = cs.promote(root, S3, chart, [f"{0:064x}", "not-there"], run_id="r3", gate="passed")
    assert (third.version, third.added, third.changed, third.removed) == (2, 0, 2, 1)
    after = rows(root)
    assert set(after) == set(before) - {f"{0:064x}"}
    for asset_id in (f"{i:064x}" for i in (1, 2, 3)):  # untouched natural rows
        assert after[asset_id]["created_at"] == before[asset_id]["created_at"]
        assert after[asset_id]["caption_id"] == before[asset_id]["caption_id"]
    assert after[f"{4:064x}"]["caption"] == "caption 4 by fp2"
    assert after[f"{4:064x}"]["caption_id"] != before[f"{4:064x}"]["caption_id"]

    infos = cs.versions(root, S3)
    assert [v.version for v in infos] == [1, 2]
    v1 = infos[0].to_dict()
    assert (v1["run_id"], v1["flow_run_id"], v1["gate"], v1["config_hash"]) == (
        "r1",
        "f1",
        "passed",
        "c1",
    )
    assert v1["counts"] == {"added": 6, "changed": 0, "removed": 0, "unchanged": 0, "staged": 6}
    assert v1["timestamp"].endswith("+00:00") and v1["operation"] == "promote"

    # time travel: version 1 still has the old chart captions and asset 0
    old = rows(root, 1)
    assert old[f"{4:064x}"]["caption"] == "caption 4 by fp1" and f"{0:064x}" in old
    planner = cs.current_captions(root, S3)
    assert planner.column_names == list(cs.PLANNER_COLUMNS) and planner.num_rows == 5

    diff = diff_versions(root, S3, 1, 2)
    assert (len(diff.added), len(diff.changed), len(diff.removed)) == (0, 2, 1)
    assert diff.by_domain() == {
        "chart": {"added": 0, "changed": 2, "removed": 0},
        "natural": {"added": 0, "changed": 0, "removed": 1},
    }
    example = diff.examples("changed", 1)[0]
    assert (example["caption"], example["old_caption"]) == ("caption 4 by fp2", "caption 4 by fp1")
    assert diff_versions(root, S3, None, 1).by_domain()["chart"]["added"] == 2


def test_a_commit_whose_reply_was_lost_is_found_not_redone(tmp_path, monkeypatch):
    """The MERGE committed but its caller saw an error (a lost reply to the commit's PUT):
    the same call, or the task's retry, reports the version made instead of "no change"."""
    from deltalake.table import TableMerger

    root = str(tmp_path / "root")
    cs.promote(root, S3, staged([1]), [], run_id="r0")
    execute = TableMerger.execute

    def commit_then_lose_reply(self):
        execute(self)
        raise OSError("connection reset by peer (reply to the commit lost)")

    monkeypatch.setattr(TableMerger, "execute", commit_then_lose_reply)
    res = cs.promote(root, S3, staged([1, 2, 3]), [], run_id="r1", counts={"staged": 3})
    assert (res.version, res.added, res.unchanged) == (2, 2, 1)
    monkeypatch.setattr(TableMerger, "execute", execute)
    retry = cs.promote(root, S3, staged([1, 2, 3]), [], run_id="r1")  # Prefect's task retry
    assert (retry.version, retry.added, retry.unchanged) == (2, 2, 1)
    assert cs.latest_version(root, S3) == 2 and len(rows(root)) == 3
    other = cs.promote(root, S3, staged([1, 2, 3]), [], run_id="r2")  # another run: no change
    assert other.version is None and other.unchanged == 3

    def fail_before_commit(self):
        raise OSError("connection refused")

    monkeypatch.setattr(TableMerger, "execute", fail_before_commit)
    with pytest.raises(OSError, match="refused"):  # nothing landed: the error stands
        cs.promote(root, S3, staged([4]), [], run_id="r3")
    assert cs.latest_version(root, S3) == 2


def test_staged_rows_checked_and_deduplicated(tmp_path):
    root = str(tmp_path / "root")
    bad = to_arrow(
        [rec(1), CaptionRecord(asset_id="b" * 64, source_uri="s3://x", modality="image")]
    )
    with pytest.raises(ValueError, match="caption"):
        cs.promote(root, S3, bad, [], run_id="r1")
    with pytest.raises(ValueError, match="both"):
        cs.promote(root, S3, staged([1]), [f"{1:064x}"], run_id="r1")
    dup = to_arrow([rec(1, fp="old"), rec(2), rec(1, fp="new")])
    res = cs.promote(root, S3, dup, [], run_id="r1")
    assert res.added == 2 and rows(root)[f"{1:064x}"]["caption"] == "caption 1 by new"


def test_missing_dataset_and_versions(tmp_path):
    root = str(tmp_path / "root")
    assert cs.versions(root, S3) == [] and cs.latest_version(root, S3) is None
    assert cs.current_captions(root, S3).num_rows == 0
    with pytest.raises(ConfigError, match="no dataset"):
        cs.read_version(root, S3)
    cs.promote(root, S3, staged(range(3)), [], run_id="r1")
    with pytest.raises(ConfigError, match=r"version 7 .*available versions: \[1\]"):
        cs.read_version(root, S3, 7)


def test_takedown_then_vacuum_makes_old_versions_unreadable(tmp_path):
    root = str(tmp_path / "root")
    cs.promote(root, S3, staged(range(5)), [], run_id="r1")
    assert ct.remove_assets(root, S3, asset_ids=["f" * 64]).version is None
    res = ct.remove_assets(
        root, S3, asset_ids=[f"{1:064x}"], source_uris=["s3://src/natural/3.jpg"], run_id="t1"
    )
    assert (res.version, res.removed) == (2, 2)
    assert set(rows(root)) == {f"{i:064x}" for i in (0, 2, 4)}
    info = cs.versions(root, S3)[-1]
    assert (info.operation, info.run_id, info.counts["reason"]) == ("remove", "t1", "takedown")
    assert len(rows(root, 1)) == 5  # the taken-down caption is still in version 1's files
    listed = ct.vacuum(root, S3, retention_hours=0, dry_run=True)
    assert listed and len(rows(root, 1)) == 5
    assert sorted(ct.vacuum(root, S3, retention_hours=0, dry_run=False)) == sorted(listed)
    with pytest.raises(ConfigError, match="cannot be read"):
        cs.read_version(root, S3, 1)
    assert len(rows(root)) == 3


def _writer(root: str, ids: list[int], domain: str, barrier) -> None:
    barrier.wait()
    for chunk in (ids[: len(ids) // 2], ids[len(ids) // 2 :]):
        cs.promote(root, S3, staged(chunk, domain=domain), [], run_id=f"w-{domain}")


def test_two_concurrent_writers_both_land(tmp_path):
    root = str(tmp_path / "root")
    cs.promote(root, S3, staged([0]), [], run_id="r0")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_writer, args=(root, list(range(1, 41)), "natural", barrier)),
        ctx.Process(target=_writer, args=(root, list(range(41, 81)), "chart", barrier)),
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert [v.version for v in cs.versions(root, S3)] == [1, 2, 3, 4, 5]
    assert set(rows(root)) == {f"{i:064x}" for i in range(81)}


def _busy_writer(root: str) -> None:
    for n in range(1000):  # re-caption everything again and again until killed
        cs.promote(root, S3, staged(range(3000), fp=f"fp{n}"), [], run_id=f"busy{n}")


def test_killed_writer_leaves_last_version_readable_and_writable(tmp_path):
    root = str(tmp_path / "root")
    cs.promote(root, S3, staged(range(3000)), [], run_id="r0")
    proc = multiprocessing.get_context("spawn").Process(target=_busy_writer, args=(root,))
    proc.start()
    deadline = time.monotonic() + 60
    while cs.latest_version(root, S3) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.15)  # somewhere inside a later MERGE
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    last = cs.latest_version(root, S3)
    assert last >= 2
    table = rows(root)
    assert len(table) == 3000 and len({r["fingerprint"] for r in table.values()}) == 1
    res = cs.promote(root, S3, staged(range(3000, 3010)), [], run_id="after")
    assert res.version == last + 1 and len(rows(root)) == 3010


def test_on_s3(moto_s3):
    root = f"s3://capflow-test/datasets/{uuid.uuid4().hex[:8]}"
    assert cs.promote(root, S3, staged(range(6)), [], run_id="r1").version == 1
    assert cs.promote(root, S3, staged(range(6)), [], run_id="r2").version is None
    res = cs.promote(root, S3, staged(range(2), fp="fp2"), [f"{5:064x}"], run_id="r3")
    assert (res.version, res.changed, res.removed) == (2, 2, 1)
    assert ct.remove_assets(root, S3, asset_ids=[f"{4:064x}"]).version == 3
    assert [v.run_id for v in cs.versions(root, S3)][:2] == ["r1", "r3"]
    assert len(rows(root, 1)) == 6 and len(rows(root)) == 4
    assert len(diff_versions(root, S3, 1, 3).removed) == 2


def _files(root: str) -> dict[tuple, set[str]]:
    """Data files of the latest version by (domain, cohort) partition."""
    adds = pa.table(cs.open_captions(root, S3).get_add_actions(flatten=True)).to_pylist()
    out: dict[tuple, set[str]] = {}
    for a in adds:
        out.setdefault((a["partition.domain"], a["partition.cohort"]), set()).add(a["path"])
    return out


@pytest.mark.parametrize("exclusive", [False, True])
def test_partitions_pruned_domain_moves_and_null_domain(tmp_path, monkeypatch, exclusive):
    root = str(tmp_path / "root")
    monkeypatch.setattr(cs, "promote", functools.partial(cs.promote, exclusive=exclusive))
    for month, base in (("2026-01", 0), ("2026-02", 6)):
        monkeypatch.setattr(cs, "_cohort_now", lambda m=month: m)
        batch = [rec(base + i, "natural") for i in range(3)]
        batch += [rec(base + 3, "chart"), rec(base + 4, "chart"), rec(base + 5, None)]
        cs.promote(root, S3, to_arrow(batch), [], run_id=f"r{month}")
    before = _files(root)
    assert set(before) == {
        (d, m) for d in ("natural", "chart", None) for m in ("2026-01", "2026-02")
    }

    # March: re-caption chart 3,4; move 0 natural->chart, 5 null->ui, 1 natural->null;
    # insert 20; remove 6 (natural, 2026-02). chart/null 2026-02 must stay untouched.
    monkeypatch.setattr(cs, "_cohort_now", lambda: "2026-03")
    batch = [rec(i, "chart", fp="fp2") for i in (3, 4, 0)]
    batch += [rec(5, "ui", fp="fp2"), rec(1, None, fp="fp2"), rec(20, "natural")]
    res = cs.promote(root, S3, to_arrow(batch), [f"{6:064x}"], run_id="r3")
    assert (res.version, res.added, res.changed, res.removed, res.unchanged) == (3, 1, 5, 1, 0)
    after = _files(root)
    for untouched in (("chart", "2026-02"), (None, "2026-02")):
        assert after[untouched] == before[untouched]
    assert after[("natural", "2026-02")] != before[("natural", "2026-02")]
    metrics = cs.open_captions(root, S3).history(1)[0]["operationMetrics"]
    # only natural/chart/null 2026-01 and natural 2026-02 are read and rewritten
    assert metrics["num_target_files_scanned"] == 4 and metrics["num_target_files_removed"] == 4

    table = cs.read_version(root, S3)
    assert table.column_names == cs.record_schema().names  # no cohort by default
    stored = {
        r["asset_id"]: r
        for r in cs.read_version(root, S3, columns=["asset_id", "domain", "cohort"]).to_pylist()
    }
    assert len(stored) == table.num_rows == 12  # a moved asset is not duplicated
    expect = {0: ("chart", "2026-01"), 1: (None, "2026-01"), 5: ("ui", "2026-01")}
    expect |= {20: ("natural", "2026-03"), 9: ("chart", "2026-02"), 11: (None, "2026-02")}
    for i, (domain, cohort) in expect.items():
        assert (stored[f"{i:064x}"]["domain"], stored[f"{i:064x}"]["cohort"]) == (domain, cohort)
    assert f"{6:064x}" not in stored
    assert rows(root)[f"{1:064x}"]["caption"] == "caption 1 by fp2"
    assert cs.current_captions(root, S3, ["asset_id", "cohort"]).num_rows == 12
    assert cs.promote(root, S3, to_arrow(batch), [], run_id="r4").version is None

    # a takedown in the null-domain partition rewrites only that partition
    res = ct.remove_assets(root, S3, asset_ids=[f"{1:064x}"], run_id="t1")
    assert (res.version, res.removed) == (4, 1)
    final = _files(root)
    assert {k: v for k, v in final.items() if k != (None, "2026-01")} == {
        k: v for k, v in after.items() if k != (None, "2026-01")
    }
    assert len(rows(root)) == 11


def test_racing_inserts_of_one_asset_under_two_domains_leave_one_row(tmp_path, monkeypatch):
    """Writer B planned on a snapshot from before writer A inserted the same new asset under
    another domain: B's commit must conflict (it read the current cohort) and its retry
    update A's row, not add a second one."""
    root = str(tmp_path / "root")
    cs.promote(root, S3Config(), staged([1]), [], run_id="base")
    stale = cs.open_captions(root, S3Config())
    cs.promote(root, S3Config(), staged([7], domain="natural"), [], run_id="a")
    real, handed = cs.open_captions, iter([stale])
    monkeypatch.setattr(cs, "open_captions", lambda *a, **k: next(handed, None) or real(*a, **k))
    result = cs.promote(root, S3Config(), staged([7], domain="chart", fp="fp2"), [], run_id="b")
    assert result.version == 3 and result.changed == 1 and result.added == 0
    final = [r for r in rows(root).values() if r["asset_id"] == rec(7).asset_id]
    assert len(final) == 1 and final[0]["domain"] == "chart"


def test_inserts_under_the_root_lock_read_no_stored_rows(tmp_path):
    """Holding the root's lock, new assets go in without reading the current cohort; without
    it they read it (protection against a racing writer); both give the same dataset."""
    root = str(tmp_path / "root")
    cs.promote(root, S3, to_arrow([rec(i) for i in range(6)] + [rec(7, "chart")]), [], run_id="r1")

    def scanned() -> int:
        return cs.open_captions(root, S3).history(1)[0]["operationMetrics"][
            "num_target_files_scanned"
        ]

    cs.promote(root, S3, staged([10, 11]), [], run_id="r2")
    assert not holds(root) and scanned() >= 1
    with root_lock(root, S3, wait_s=0, ttl_s=60):
        assert holds(root)
        res = cs.promote(root, S3, staged([12, 13]), [], run_id="r3")
        assert (res.version, res.added, scanned()) == (3, 2, 0)
        # a mix: only the partition of the updated row (chart, one file) is read
        mix = to_arrow([rec(7, "chart", fp="fp2"), rec(14)])
        mixed = cs.promote(root, S3, mix, [], run_id="r4")
        assert (mixed.added, mixed.changed, scanned()) == (1, 1, 1)
        assert cs.promote(root, S3, staged([12, 13]), [], run_id="r5").version is None
    assert not holds(root)
    stored = rows(root)
    assert set(stored) == {rec(i).asset_id for i in (0, 1, 2, 3, 4, 5, 7, 10, 11, 12, 13, 14)}
    assert stored[rec(7).asset_id]["caption"] == "caption 7 by fp2"
