"""Dataset exports: real Delta tables, real prepared shards, real files read back.

The dataset is built without the caption engine: sample media -> prepare_item -> a
committed prepared shard; ``assets`` and ``captions`` rows written with deltalake.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import typer
from deltalake import CommitProperties, DeltaTable, write_deltalake
from typer.testing import CliRunner

from capflow_core.config import S3Config
from capflow_core.delta_store import assets_schema, table_uri
from capflow_core.errors import ConfigError
from capflow_core.prepare import PreparedItem, prepare_item
from capflow_core.prepared_shards import commit_shard, write_shard
from capflow_core.records import CaptionRecord, JudgeResult, to_arrow
from capflow_core.sample_media import generate_samples
from capflow_core.storage import delta_storage_options
from flows.export_cli import export
from tasks.export import MARKER, export_dataset
from tests.tasks.pipeline import make_config

RUN = "20260101T000000Z-abcdef"
S3 = S3Config()
NAMES = {  # file -> (domain, accepted, in the assets table)
    "photo.jpg": ("natural", True, True),
    "chart.png": ("structure_math", True, True),
    "document.png": ("infographic_document", False, True),
    "clip_540p.mp4": ("video_temporal", True, True),
    "clip_720p.mp4": ("video_temporal", True, False),  # found through the caption's run_id
}
GHOST, BROKEN = "f" * 64, "e" * 64  # staging cleaned up / prepared bytes that do not decode
SCORES = {"factual_accuracy": 3, "completeness": 3, "rigor": 2, "intent": 3, "professionalism": 3}


def _record(item: PreparedItem, domain: str, accepted: bool) -> CaptionRecord:
    return CaptionRecord(
        asset_id=item.asset_id,
        source_uri=item.source_uri,
        modality=item.modality,
        license="cc-by-4.0",
        provenance="unit-test source",
        domain=domain,
        caption=f"A caption of {item.source_uri.rsplit('/', 1)[-1]} <b>bold</b>",
        judge=JudgeResult(scores=SCORES, accepted=accepted, rule="min_each=2", model="tiny"),
        accepted=accepted,
        fingerprint="fp-1",
        run_id=RUN,
    )


def _build(root: str, src: Path, names: list[str]) -> dict[str, PreparedItem]:
    """Prepared shard, ``assets`` and a 2-version ``captions`` table for ``names`` + 2 extras."""
    cfg = make_config(root, str(src))
    items = {n: prepare_item({"source_uri": str(src / n)}, cfg) for n in names}
    assert all(isinstance(i, PreparedItem) for i in items.values())
    broken = PreparedItem(BROKEN, "file:///broken.jpg", "image", 600, 600, image=b"not a jpeg")
    marker = write_shard(root, RUN, "shard-00000", [*items.values(), broken], [], S3)
    commit_shard(root, RUN, "shard-00000", marker, S3)

    rows = [
        {"asset_id": i.asset_id, "source_uri": i.source_uri, "pending_run": RUN, "status": "active"}
        for n, i in items.items()
        if NAMES[n][2]
    ]
    rows += [
        {"asset_id": GHOST, "source_uri": "file:///ghost.jpg", "pending_run": "gone-run"},
        {"asset_id": BROKEN, "source_uri": "file:///broken.jpg", "pending_run": RUN},
    ]
    kw = {"storage_options": delta_storage_options(root, S3)}
    assets = pa.Table.from_pylist(rows, schema=assets_schema())
    write_deltalake(table_uri(root, "assets"), assets, **kw)

    records = [_record(items[n], *NAMES[n][:2]) for n in names]
    ghost = PreparedItem(GHOST, "file:///ghost.jpg", "image", 600, 600)
    records += [_record(ghost, "natural", True), _record(broken, "natural", True)]
    captions, promoted = table_uri(root, "captions"), {"capflow.operation": "promote"}
    for mode, rows in (("append", records[:1]), ("overwrite", records)):  # v0: first only
        props = CommitProperties(custom_metadata=promoted)
        write_deltalake(captions, to_arrow(rows), mode=mode, commit_properties=props, **kw)
    return items


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample media folder (6 images, 2 H.264 videos)."""
    src = tmp_path_factory.mktemp("samples")
    generate_samples(src)
    return src


@pytest.fixture(scope="module")
def dataset(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A local root with a 2-version dataset: the root and the prepared items by file name."""
    root = str(tmp_path_factory.mktemp("export") / "root")
    return {"root": root, "items": _build(root, samples, list(NAMES))}


def _export(dataset: dict[str, Any], out: Path, fmt: str, **kw: Any):
    return export_dataset(dataset["root"], S3, out=out, fmt=fmt, **kw)


def test_llava_records_media_and_skips(dataset: dict[str, Any], tmp_path: Path) -> None:
    import av
    from PIL import Image

    out = tmp_path / "llava"
    res = _export(dataset, out, "llava")
    assert (res.version, res.records, res.media_files, res.files) == (1, 4, 4, ["data.json"])
    assert {(s["asset_id"], s["reason"]) for s in res.skipped} == {
        (GHOST, "prepared_media_missing"),
        (BROKEN, "media_corrupt"),
    }
    assert "gone-run" in next(s["detail"] for s in res.skipped if s["asset_id"] == GHOST)
    data = json.loads((out / "data.json").read_text())
    items = dataset["items"]
    assert {r["id"] for r in data} == {items[n].asset_id for n, v in NAMES.items() if v[1]}
    for rec in data:
        human, gpt = rec["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt")
        assert gpt["value"].startswith("A caption of ")
        assert rec["license"] == "cc-by-4.0" and rec["provenance"] == "unit-test source"
        assert rec["accepted"] is True and rec["dataset_version"] == 1
        assert rec["judge_scores"] == SCORES
        if rec["modality"] == "video":
            assert human["value"].startswith("<video>\n") and "image" not in rec
            path = out / rec["video"]
            with av.open(str(path)) as container:
                frames = list(container.decode(video=0))
            assert len(frames) == rec["num_frames"] == 4
            assert (frames[0].width, frames[0].height) == (rec["width"], rec["height"])
        else:
            assert human["value"].startswith("<image>\n") and "<video>" not in human["value"]
            with Image.open(out / rec["image"]) as im:
                assert im.format == "JPEG" and im.size == (rec["width"], rec["height"])
    marker = json.loads((out / MARKER).read_text())
    assert (marker["format"], marker["version"], marker["records"]) == ("llava", 1, 4)


def test_parquet_loads_with_hf_datasets(dataset: dict[str, Any], tmp_path: Path) -> None:
    from datasets import load_dataset

    out = tmp_path / "pq"
    res = _export(dataset, out, "parquet", shard_size=3)
    assert res.files == [
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
    ]
    assert res.media_files == 2  # the videos; images are embedded
    ds = load_dataset(
        "parquet",
        data_files=str(out / "data" / "*.parquet"),
        split="train",
        cache_dir=str(tmp_path / "hf-cache"),
    )
    assert ds.num_rows == 4
    for col in ("id", "caption", "license", "provenance", "source_uri", "image", "video"):
        assert col in ds.column_names
    assert ds.features["image"].__class__.__name__ == "Image"
    for row in ds:
        assert row["license"] == "cc-by-4.0" and row["dataset_version"] == 1
        assert json.loads(row["judge_scores"]) == SCORES
        if row["modality"] == "video":
            assert row["image"] is None and (out / row["video"]).is_file()
        else:
            assert row["video"] is None
            assert row["image"].size == (row["width"], row["height"])


def test_webdataset_shards_are_complete(dataset: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "wds"
    res = _export(dataset, out, "webdataset", shard_size=3, include_rejected=True)
    assert res.files == ["shard-000000.tar", "shard-000001.tar"] and res.records == 5
    samples: dict[str, dict[str, bytes]] = {}
    for name in res.files:
        with tarfile.open(out / name) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    items = dataset["items"]
    assert set(samples) == {i.asset_id for i in items.values()}
    for name, item in items.items():
        sample = samples[item.asset_id]
        media = "mp4" if item.modality == "video" else "jpg"
        assert set(sample) == {media, "txt", "json"}
        meta = json.loads(sample["json"])
        assert meta["license"] == "cc-by-4.0" and meta["provenance"] == "unit-test source"
        assert meta["accepted"] is NAMES[name][1]
        assert sample["txt"].decode().startswith("A caption of ")


def test_include_rejected_and_time_travel(dataset: dict[str, Any], tmp_path: Path) -> None:
    res = _export(dataset, tmp_path / "all", "llava", include_rejected=True)
    data = json.loads((tmp_path / "all" / "data.json").read_text())
    assert res.records == len(data) == 5
    rejected = [r for r in data if not r["accepted"]]
    assert [r["id"] for r in rejected] == [dataset["items"]["document.png"].asset_id]

    old = _export(dataset, tmp_path / "v0", "llava", version=0)
    assert (old.version, old.records, old.skipped) == (0, 1, [])
    with pytest.raises(
        ConfigError, match=r"version 7 cannot be read.*available versions: \[0, 1\]"
    ):
        _export(dataset, tmp_path / "v7", "llava", version=7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all", "v0"]  # no temp folder left


def test_vacuumed_version_is_a_config_error(dataset: dict[str, Any], tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(dataset["root"], root)
    table = DeltaTable(table_uri(str(root), "captions"))
    assert table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    with pytest.raises(ConfigError, match="version 0 cannot be read"):
        export_dataset(str(root), S3, out=tmp_path / "out", fmt="llava", version=0)
    assert not (tmp_path / "out").exists()
    assert export_dataset(str(root), S3, out=tmp_path / "out", fmt="llava").records == 4


def test_output_folder_rules(dataset: dict[str, Any], tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a capflow export"):
        _export(dataset, foreign, "llava")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    out = tmp_path / "again"
    _export(dataset, out, "llava")
    (out / "stale.txt").write_text("from before")
    res = _export(dataset, out, "webdataset")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "shard-000000.tar"]
    assert res.files == ["shard-000000.tar"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(ConfigError, match="unknown export format 'coco'"):
        _export(dataset, tmp_path / "x", "coco")


def test_cli_export(dataset: dict[str, Any], tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(export)
    runner, root = CliRunner(), dataset["root"]
    out = tmp_path / "cli"
    ok = runner.invoke(app, ["--root", root, "--format", "webdataset", "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "version 1: 4 record(s), 4 media file(s), 2 skipped" in ok.output
    assert "prepared_media_missing" in ok.output and (out / "shard-000000.tar").is_file()

    bad = runner.invoke(app, ["--root", root, "--format", "coco", "--out", str(out)])
    assert bad.exit_code == 2 and "llava, parquet, webdataset" in bad.output
    missing = runner.invoke(app, ["--root", root, "--version", "9", "--out", str(out)])
    assert missing.exit_code == 2 and "available versions: [0, 1]" in missing.output


def test_export_from_s3_root(moto_s3: dict[str, str], samples: Path, tmp_path: Path) -> None:
    root = "s3://capflow-test/export-test"
    items = _build(root, samples, ["photo.jpg", "clip_540p.mp4"])
    res = export_dataset(root, S3, out=tmp_path / "out", fmt="llava")
    assert (res.version, res.records, len(res.skipped)) == (1, 2, 2)
    data = json.loads((tmp_path / "out" / "data.json").read_text())
    assert {r["id"] for r in data} == {i.asset_id for i in items.values()}
    assert all((tmp_path / "out" / (r.get("image") or r["video"])).is_file() for r in data)
