"""`ingest`: listing + diff + manifests, end to end on moto S3 (sources and root)."""

from __future__ import annotations

import uuid

import pyarrow.parquet as pq
import pytest
import s3fs
import yaml

from capflow_core.config import SourceConfig, config_from_dict
from capflow_core.errors import ConfigError
from capflow_core.manifests import completed_shards
from tasks.ingest import ingest
from tests.capflow_core.test_listing import s3_prefix
from tests.flows.cli_runner import ROOT

TINY = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())


def _rows(root: str, run_id: str) -> list[dict]:
    return [r for s in completed_shards(root, run_id) for r in pq.read_table(s).to_pylist()]


def test_incremental_ingest_on_s3(moto_s3):
    keys = [f"img/{i}.jpg" for i in range(5)] + ["img/readme.txt"]
    src = s3_prefix(moto_s3, keys, {"img/0.jpg": {"license": "cc-by-4.0"}})
    root = f"s3://capflow-test/roots/{uuid.uuid4().hex[:8]}"
    cfg = config_from_dict(
        {**TINY, "storage": {"root": root}, "sources": [{"uri": src, "domain": "ocr"}]}
        | {"ingest": {"shard_size": 4}}
    )
    first = ingest(cfg, run_id="r1")
    assert (first.new, first.changed, first.unchanged, first.removed) == (6, 0, 0, 0)
    assert (first.pending, first.shards) == (6, 2)
    rows = {r["key"]: r for r in _rows(root, "r1")}
    assert rows["img/0.jpg"]["license"] == "cc-by-4.0" and rows["img/1.jpg"]["license"] is None
    assert rows["img/readme.txt"]["modality"] == "unknown"  # kept for a rejection row later
    assert {r["domain"] for r in rows.values()} == {"ocr"}

    second = ingest(cfg, run_id="r2")
    assert (second.new, second.unchanged, second.pending, second.shards) == (0, 6, 0, 0)
    assert completed_shards(root, "r2") == []

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_s3["AWS_ENDPOINT_URL"]})
    bucket_path = src[len("s3://") :]
    for name in ("a.jpg", "b.jpg", "c.mp4"):
        fs.pipe_file(f"{bucket_path}/new/{name}", b"new")
    fs.pipe_file(f"{bucket_path}/img/1.jpg", b"changed bytes")
    fs.rm_file(f"{bucket_path}/img/2.jpg")
    dry = ingest(cfg, run_id="r3", dry_run=True)
    assert (dry.new, dry.changed, dry.removed, dry.pending) == (3, 1, 1, 4)
    assert completed_shards(root, "r3") == []
    third = ingest(cfg, run_id="r3")
    assert (third.new, third.changed, third.unchanged, third.removed) == (3, 1, 4, 1)
    assert sorted(r["key"] for r in _rows(root, "r3")) == [
        "img/1.jpg",
        "new/a.jpg",
        "new/b.jpg",
        "new/c.mp4",
    ]
    assert (ingest(cfg, run_id="r3").shards_skipped, ingest(cfg, run_id="r4").pending) == (1, 0)


def test_sources_argument_replaces_config_and_bad_input_is_a_config_error(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src/x.jpg").write_bytes(b"x")
    cfg = config_from_dict({**TINY, "storage": {"root": str(tmp_path / "root")}})
    with pytest.raises(ConfigError, match="no sources"):
        ingest(cfg)
    res = ingest(cfg, sources=[SourceConfig(uri=str(tmp_path / "src"))], run_id="r1")
    assert res.new == 1 and res.manifests == str(tmp_path / "root/staging/r1/manifests")
    with pytest.raises(ConfigError, match="run id"):
        ingest(cfg, sources=[SourceConfig(uri=str(tmp_path / "src"))], run_id="../up")
