"""Incremental ingest + preprocess, and odd key names through the whole path on moto S3."""

from __future__ import annotations

import uuid
from pathlib import Path

import s3fs

from capflow_core.delta_store import open_assets
from capflow_core.run_outcome import read_reconciliation, read_rejects
from tasks.ingest import ingest
from tasks.preprocess import preprocess
from tests.tasks.pipeline import image_bytes, make_config, staged_rows, write_images


def _statuses(root: str, cfg) -> dict[str, str]:
    rows = open_assets(root, cfg.s3).to_pyarrow_table().to_pylist()
    return {Path(r["source_uri"]).name: r["status"] for r in rows}


def test_add_three_change_one_delete_one(tmp_path: Path, dask_address: str):
    src = tmp_path / "src"
    write_images(src, {f"old{i}.jpg": 60 + i for i in range(5)})
    root = str(tmp_path / "root")
    cfg = make_config(root, str(src), shard_size=3)
    ingest(cfg, run_id="i1")
    first = preprocess(cfg, root=root, run_id="i1", dask_address=dask_address)
    assert first.reconciled and (first.listed, first.prepared, first.rejected) == (5, 5, 0)

    write_images(src, {"new0.jpg": 70, "new1.png": 71, "sub/new2.jpg": 72, "old1.jpg": 73})
    (src / "old4.jpg").unlink()
    listed = ingest(cfg, run_id="i2")
    assert (listed.new, listed.changed, listed.unchanged, listed.removed) == (3, 1, 3, 1)
    second = preprocess(cfg, root=root, run_id="i2", dask_address=dask_address)
    assert second.reconciled and (second.prepared, second.rejected, second.unchanged) == (4, 0, 3)
    names = sorted(Path(r["source_uri"]).name for r in staged_rows(root, "i2", "prepared", cfg))
    assert names == ["new0.jpg", "new1.png", "new2.jpg", "old1.jpg"]
    assert _statuses(root, cfg) == {
        **{f"old{i}.jpg": "active" for i in range(4)},
        "old4.jpg": "removed",
        **{n: "active" for n in ("new0.jpg", "new1.png", "new2.jpg")},
    }
    stored = read_reconciliation(root, "i2", cfg.s3)
    assert (stored["listed"], stored["prepared"], stored["unchanged"]) == (7, 4, 3)

    assert ingest(cfg, run_id="i3").pending == 0
    third = preprocess(cfg, root=root, run_id="i3", dask_address=dask_address)
    assert (third.shards, third.prepared, third.rejected, third.unchanged) == (0, 0, 0, 7)
    assert third.reconciled and staged_rows(root, "i3", "prepared", cfg) == []


ODD = {
    "odd/ünïcødé 画像.jpg": 80,
    "odd/" + "n" * 196 + ".jpg": 81,  # a 200-character file name
    "odd/with  two spaces.png": 82,
    "a/b.png": 83,
    "a/b.png.png": 84,
    "a b/b.png": 85,
    "a/b.PNG": 86,  # JPEG bytes under a .PNG name: decoded by content
}


def test_odd_keys_on_s3(moto_s3: dict[str, str], dask_address: str):
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_s3["AWS_ENDPOINT_URL"]})
    prefix = f"capflow-test/odd-{uuid.uuid4().hex[:8]}"
    for key, seed in ODD.items():
        fs.pipe_file(f"{prefix}/{key}", image_bytes(seed, "PNG" if key.endswith("png") else "JPEG"))
    fs.pipe_file(f"{prefix}/odd/bröken ☃.jpg", b"\xff\xd8 not really a jpeg")
    assert len(max(ODD, key=len).rsplit("/", 1)[-1]) == 200
    root = f"s3://capflow-test/odd-root-{uuid.uuid4().hex[:8]}"
    cfg = make_config(root, f"s3://{prefix}", shard_size=3)
    assert ingest(cfg, run_id="o1").pending == len(ODD) + 1
    res = preprocess(cfg, root=root, run_id="o1", dask_address=dask_address)
    assert res.reconciled and (res.prepared, res.rejected) == (len(ODD), 1)
    assert res.reconciliation == f"{root}/staging/o1/reconciliation.json"

    prepared = staged_rows(root, "o1", "prepared", cfg)
    got = {r["source_uri"].removeprefix(f"s3://{prefix}/"): r["asset_id"] for r in prepared}
    assert sorted(got) == sorted(ODD)
    assert len(set(got.values())) == len(ODD)  # each key read its own object
    from hashlib import sha256

    for key, seed in ODD.items():
        data = image_bytes(seed, "PNG" if key.endswith("png") else "JPEG")
        assert got[key] == sha256(data).hexdigest(), key
    (reject,) = read_rejects(root, cfg.s3, "o1")
    assert reject["source_uri"] == f"s3://{prefix}/odd/bröken ☃.jpg"
    assert reject["reason_code"] == "corrupt" and reject["shard"].startswith("shard-")
    stored = read_reconciliation(root, "o1", cfg.s3)
    assert stored["reasons"] == {"corrupt": 1} and stored["listed"] == len(ODD) + 1

    again = preprocess(cfg, root=root, run_id="o1", dask_address=dask_address)
    assert again.shards_done == 0 and len(read_rejects(root, cfg.s3, "o1")) == 1
