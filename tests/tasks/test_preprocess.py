"""`preprocess` on a real Dask cluster: every listed object prepared or rejected, once."""

from __future__ import annotations

import io
import shutil
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import s3fs
import yaml
from PIL import Image

from capflow_core.config import config_from_dict
from capflow_core.delta_store import open_assets
from capflow_core.errors import ConfigError
from capflow_core.prepared_shards import staging_dir
from capflow_core.run_outcome import read_reconciliation, read_rejects
from capflow_core.storage import filesystem
from tasks.ingest import ingest
from tasks.preprocess import preprocess
from tests.flows.cli_runner import ROOT
from tests.tasks.media_cases import scene, write_cases

TINY = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())
BUDGET = 400 * 400


def _cfg(root: str, source: str, shard_size: int = 8):
    return config_from_dict(
        {**TINY, "storage": {"root": root}, "sources": [{"uri": source, "license": "cc0"}]}
        | {"ingest": {"shard_size": shard_size}}
        | {"preprocess": {"items_per_task": 4, "max_pixels": BUDGET}}
    )


def _read(root: str, run_id: str, kind: str, cfg) -> list[dict]:
    fs, folder = filesystem(staging_dir(root, run_id, kind), cfg.s3)
    paths = sorted(p for p in fs.ls(folder, detail=False) if p.endswith(".parquet"))
    rows = []
    for p in paths:
        with fs.open(p, "rb") as f:
            rows += pq.read_table(f).to_pylist()
    return rows


def _assets(root: str, cfg) -> dict[str, dict]:
    table = open_assets(root, cfg.s3).to_pyarrow_table()
    return {r["source_uri"]: r for r in table.to_pylist()}


def test_local_end_to_end(tmp_path: Path, dask_address: str):
    src = tmp_path / "src"
    expected = write_cases(src)
    scene(7, 900, 700).save(src / "gone.jpg")
    expected["gone.jpg"] = "read_error"
    root = str(tmp_path / "root")
    cfg = _cfg(root, str(src))
    assert ingest(cfg, run_id="r1").pending == len(expected)
    (src / "gone.jpg").unlink()  # vanishes between listing and preprocessing

    res = preprocess(cfg, root=root, dask_address=dask_address)  # latest run: r1
    assert res.run_id == "r1" and res.reconciled
    assert (res.listed, res.unchanged, res.pending) == (len(expected), 0, len(expected))
    assert (res.prepared, res.shards_done) == (5, res.shards)
    rejects = {r["source_uri"]: r for r in _read(root, "r1", "rejects", cfg)}
    got = {str(Path(u).relative_to(src)): r["reason_code"] for u, r in rejects.items()}
    assert got == {k: v for k, v in expected.items() if v}
    assert str(src / "a.jpg") in rejects[str(src / "near_a.jpg")]["detail"]
    assert str(src / "a.jpg") in rejects[str(src / "z_copy_of_a.jpg")]["detail"]

    prepared = {Path(r["source_uri"]).name: r for r in _read(root, "r1", "prepared", cfg)}
    assert set(prepared) == {k for k, v in expected.items() if v is None}
    for name in ("a.jpg", "b.png", "cmyk.jpg", "grey16.png"):
        image = Image.open(io.BytesIO(prepared[name]["image"]))
        assert image.format == "JPEG" and image.mode == "RGB"
        assert image.width * image.height <= BUDGET
    a = prepared["a.jpg"]
    assert (a["width"], a["height"], a["license"], a["modality"]) == (1200, 800, "cc0", "image")
    small = Image.open(io.BytesIO(a["image"]))
    assert small.width / small.height == pytest.approx(1.5, abs=0.01)  # aspect kept
    clip = prepared["clip.mp4"]
    assert clip["modality"] == "video" and len(clip["frames"]) == TINY["video"]["num_frames"]
    assert Image.open(io.BytesIO(clip["frames"][0])).format == "JPEG"

    assets = _assets(root, cfg)
    assert assets[str(src / "a.jpg")]["status"] == "active"
    assert assets[str(src / "a.jpg")]["phash"] == a["phash"]
    assert assets[str(src / "near_a.jpg")]["status"] == "rejected"
    assert {r["status"] for r in assets.values()} == {"active", "rejected"}

    again = preprocess(cfg, root=root, run_id="r1", dask_address=dask_address)
    assert (again.shards_done, again.shards_skipped, again.prepared) == (0, res.shards, 5)
    assert again.reasons == res.reasons

    assert ingest(cfg, run_id="r2").pending == 0
    second = preprocess(cfg, root=root, run_id="r2", dask_address=dask_address)
    assert (second.shards, second.prepared, second.rejected) == (0, 0, 0)
    assert second.listed == second.unchanged == len(expected) - 1 and second.reconciled

    shutil.copy(src / "b.png", src / "c_copy_of_b.png")  # duplicates a known asset
    scene(2, 800, 800).resize((700, 700)).save(src / "c_near_b.png")
    assert ingest(cfg, run_id="r3").pending == 2
    third = preprocess(cfg, root=root, run_id="r3", dask_address=dask_address)
    assert third.reasons == {"duplicate": 1, "near_duplicate": 1} and third.reconciled
    assert third.unchanged == len(expected) - 1


def test_s3_end_to_end(moto_s3: dict[str, str], tmp_path: Path, dask_address: str):
    local = tmp_path / "cases"
    expected = write_cases(local)
    names = sorted(expected)  # every bad-input case of the local test, through S3
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_s3["AWS_ENDPOINT_URL"]})
    prefix = f"capflow-test/src-{uuid.uuid4().hex[:8]}"
    for name in names:
        fs.put_file(str(local / name), f"{prefix}/media files/{name}")
    root = f"s3://capflow-test/root-{uuid.uuid4().hex[:8]}"
    cfg = _cfg(root, f"s3://{prefix}", shard_size=3)
    n_bad = sum(1 for n in names if expected[n])
    assert ingest(cfg, run_id="s1").shards == -(-len(names) // 3)
    res = preprocess(cfg, root=root, run_id="s1", dask_address=dask_address)
    assert res.reconciled and res.listed == len(names)
    assert (res.prepared, res.rejected) == (len(names) - n_bad, n_bad)
    rejects = _read(root, "s1", "rejects", cfg)
    got = {r["source_uri"].split("/media files/")[1]: r["reason_code"] for r in rejects}
    assert got == {n: expected[n] for n in names if expected[n]}
    assert all(r["asset_id"] for r in rejects)  # every readable object is identified
    table = read_rejects(root, cfg.s3, "s1")
    assert sorted((r["source_uri"], r["reason_code"]) for r in table) == sorted(
        (r["source_uri"], r["reason_code"]) for r in rejects
    )
    assert read_reconciliation(root, "s1", cfg.s3)["rejected"] == n_bad
    assert preprocess(cfg, root=root, run_id="s1", dask_address=dask_address).shards_done == 0


def test_no_run_is_a_config_error(tmp_path: Path):
    cfg = _cfg(str(tmp_path / "root"), str(tmp_path))
    with pytest.raises(ConfigError, match="capflow ingest"):
        preprocess(cfg)
