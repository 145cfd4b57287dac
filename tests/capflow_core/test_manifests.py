"""Shard manifests: fixed-size shards, atomic commit, reruns skip committed shards."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from capflow_core.errors import ConfigError
from capflow_core.listing import ListedObject
from capflow_core.manifests import MARKER, ManifestWriter, completed_shards, manifests_dir


def _entries(n: int) -> list[ListedObject]:
    return [
        ListedObject(f"/src/k{i}.jpg", "/src", f"k{i}.jpg", f"e{i}", i, 1.0, "image", None, "cc0")
        for i in range(n)
    ]


def _write(root: str, run_id: str, n: int, **kw) -> ManifestWriter:
    writer = ManifestWriter(root, run_id, shard_size=2, **kw)
    writer.add(_entries(n))
    writer.close()
    return writer


def test_shards_of_fixed_size_each_committed(tmp_path):
    root = str(tmp_path / "root")
    writer = _write(root, "r1", 5)
    assert (writer.written, writer.skipped, writer.items) == (3, 0, 5)
    shards = completed_shards(root, "r1")
    assert [s.rsplit("/", 1)[-1] for s in shards] == [
        "shard-00000.parquet",
        "shard-00001.parquet",
        "shard-00002.parquet",
    ]
    rows = [r for s in shards for r in pq.read_table(s).to_pylist()]
    assert [r["key"] for r in rows] == [f"k{i}.jpg" for i in range(5)]
    assert {r["run_id"] for r in rows} == {"r1"} and rows[0]["license"] == "cc0"
    folder = tmp_path / "root/staging/r1/manifests"
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(MARKER)) == [
        "shard-00000._COMPLETE",
        "shard-00001._COMPLETE",
        "shard-00002._COMPLETE",
    ]


def test_rerun_skips_committed_and_rewrites_the_rest(tmp_path):
    root = str(tmp_path / "root")
    _write(root, "r1", 5)
    folder = tmp_path / "root/staging/r1/manifests"
    (folder / "shard-00001._COMPLETE").unlink()  # a crash before shard 1 was committed
    (folder / "shard-00001.parquet").write_bytes(b"half-written")
    (folder / "shard-00001.parquet.tmp-dead").write_bytes(b"left over")
    assert len(completed_shards(root, "r1")) == 2  # uncommitted shards are not offered
    again = _write(root, "r1", 5)
    assert (again.written, again.skipped) == (1, 2)
    assert pq.read_table(folder / "shard-00001.parquet").num_rows == 2
    assert len(completed_shards(root, "r1")) == 3


def test_dry_run_writes_nothing(tmp_path):
    writer = _write(str(tmp_path / "root"), "r1", 3, dry_run=True)
    assert writer.written == 2 and not (tmp_path / "root").exists()


def test_run_id_cannot_escape_the_root(tmp_path):
    with pytest.raises(ConfigError):
        manifests_dir(str(tmp_path), "../../etc")
    with pytest.raises(ConfigError):
        ManifestWriter(str(tmp_path), "/abs")
