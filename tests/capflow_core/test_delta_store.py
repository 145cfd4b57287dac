"""The `assets` table diff, on a local root and on a moto S3 root."""

from __future__ import annotations

import threading
import uuid

import pytest

from capflow_core.config import S3Config, SourceConfig
from capflow_core.delta_store import assets_uri, diff, open_assets
from capflow_core.listing import list_source
from tests.capflow_core.test_listing import local_tree


def _diff(src: str, root: str, run_id: str, **kw):
    listing = list_source(SourceConfig(uri=src), S3Config())
    return diff(listing, root, run_id, prefixes=[src + "/"], chunk_size=4, **kw)


def _statuses(root: str) -> dict[str, str]:
    table = open_assets(root, S3Config()).to_pyarrow_table(columns=["source_uri", "status"])
    return {r["source_uri"].rsplit("/", 1)[-1]: r["status"] for r in table.to_pylist()}


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "root")
    request.getfixturevalue("moto_s3")
    return f"s3://capflow-test/roots/{uuid.uuid4().hex[:8]}"


def test_incremental_new_unchanged_then_add_change_delete(tmp_path, root):
    keys = [f"img{i}.jpg" for i in range(6)]
    src = local_tree(tmp_path / "src", keys)
    first = _diff(src, root, "r1")
    assert (first.new, first.changed, first.unchanged, first.removed) == (6, 0, 0, 0)
    assert sorted(e.key for e in first.pending) == keys
    second = _diff(src, root, "r2")
    assert (second.new, second.changed, second.unchanged, second.removed) == (0, 0, 6, 0)
    assert second.pending == []
    local_tree(tmp_path / "src", ["new1.jpg", "new2.png", "new3.mp4"])
    (tmp_path / "src/img0.jpg").write_bytes(b"different content")
    (tmp_path / "src/img5.jpg").unlink()
    third = _diff(src, root, "r3")
    assert (third.new, third.changed, third.unchanged, third.removed) == (3, 1, 4, 1)
    assert sorted(e.key for e in third.pending) == ["img0.jpg", "new1.jpg", "new2.png", "new3.mp4"]
    statuses = _statuses(root)
    assert statuses["img5.jpg"] == "removed" and statuses["new3.mp4"] == "pending"
    assert len(statuses) == 9


def test_dry_run_writes_nothing(tmp_path, root):
    src = local_tree(tmp_path / "src", ["a.jpg", "b.jpg"])
    dry = _diff(src, root, "r0", dry_run=True)
    assert (dry.new, dry.removed) == (2, 0) and open_assets(root, S3Config()) is None
    _diff(src, root, "r1")
    version = open_assets(root, S3Config()).version()
    (tmp_path / "src/a.jpg").unlink()
    dry = _diff(src, root, "r2", dry_run=True)
    assert (dry.new, dry.unchanged, dry.removed) == (0, 1, 1)
    assert open_assets(root, S3Config()).version() == version
    assert set(_statuses(root).values()) == {"pending"}


def test_rerun_of_same_run_id_hands_on_the_same_objects(tmp_path):
    root, src = str(tmp_path / "root"), local_tree(tmp_path / "src", ["a.jpg", "b.jpg"])
    _diff(src, root, "r1")
    again = _diff(src, root, "r1")  # e.g. the manifests of r1 were never committed
    assert (again.new, again.unchanged) == (2, 0)
    assert _diff(src, root, "r2").unchanged == 2


def test_removal_only_touches_listed_sources(tmp_path):
    root = str(tmp_path / "root")
    a = local_tree(tmp_path / "a", ["x.jpg"])
    b = local_tree(tmp_path / "a2", ["y.jpg"])  # look-alike prefix of a
    _diff(a, root, "r1")
    _diff(b, root, "r2")
    (tmp_path / "a/x.jpg").unlink()
    assert _diff(a, root, "r3").removed == 1
    assert _statuses(root) == {"x.jpg": "removed", "y.jpg": "pending"}


def test_concurrent_writers_both_commit(tmp_path):
    root = str(tmp_path / "root")
    srcs = [local_tree(tmp_path / f"s{n}", [f"{n}-{i}.jpg" for i in range(12)]) for n in range(3)]
    _diff(srcs[0], root, "r0")
    results, errors = {}, []

    def work(n: int) -> None:
        try:
            results[n] = _diff(srcs[n], root, f"r{n}")
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results[1].new == results[2].new == 12
    assert len(_statuses(root)) == 36
    assert assets_uri(root).endswith("tables/assets")
