"""MetaCaptioner training sets from real Delta tables and real prepared shards.

The dataset is built without the caption engine: sample media -> prepare_item -> one
committed prepared shard; ``assets`` rows with deltalake; two dataset versions promoted
with ``captions_store.promote``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from PIL import Image

from capflow_core.captions_store import promote
from capflow_core.config import Config, S3Config, config_from_dict
from capflow_core.delta_store import assets_schema, table_uri
from capflow_core.errors import ConfigError
from capflow_core.prepare import PreparedItem, prepare_item
from capflow_core.prepared_shards import commit_shard, write_shard
from capflow_core.records import CaptionRecord, JudgeResult, to_arrow
from capflow_core.sample_media import generate_samples
from capflow_core.training_data import (
    TrainingSet,
    build_training_set,
    held_out_ids,
    load_mix_in,
)
from capflow_core.training_examples import instruction_for, is_held_out
from tests.tasks.pipeline import config_dict, write_images

RUN, RUN2 = "20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb"
S3 = S3Config()
GHOST = "f" * 64  # a caption whose prepared row is gone (staging cleaned up)
REJECTED, SELF = "document.png", "screenshot.png"  # judge-rejected / written by our model
NO_ASSET_ROW = "extra_00.jpg"  # not in ``assets``: found through the caption's run_id
FIRST = [*(f"extra_{i:02d}.jpg" for i in range(6))]  # v1 extras; v2 adds extra_06..13
SCORES = {"factual_accuracy": 3, "completeness": 3, "rigor": 2, "intent": 3, "professionalism": 3}


def _record(item: PreparedItem, name: str, run_id: str) -> CaptionRecord:
    accepted = name != REJECTED
    return CaptionRecord(
        asset_id=item.asset_id,
        source_uri=item.source_uri,
        modality=item.modality,
        domain="video_temporal" if item.modality == "video" else "natural",
        caption=f"A detailed caption of {name}.",
        judge=JudgeResult(scores=SCORES, accepted=accepted, rule="min_each=2", model="tiny"),
        accepted=accepted,
        mode="single" if name == SELF else "capflow",
        captioner="model:metacaptioner/1" if name == SELF else None,
        fingerprint="fp-1",
        run_id=run_id,
    )


def _cfg(root: str, src: Path, **finetune: Any) -> Config:
    data = config_dict(root, str(src))
    return config_from_dict(data | {"finetune": {"eval_percent": 40.0, **finetune}})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A root with dataset versions v1 (samples + 6 extras + a ghost) and v2 (+8 extras)."""
    src = tmp_path_factory.mktemp("samples")
    generate_samples(src)
    write_images(src, {f"extra_{i:02d}.jpg": 100 + i for i in range(14)})
    root = str(tmp_path_factory.mktemp("training") / "root")
    cfg = _cfg(root, src)
    names = sorted(p.name for p in src.iterdir())
    items = {n: prepare_item({"source_uri": str(src / n)}, cfg) for n in names}
    assert all(isinstance(i, PreparedItem) for i in items.values()), items
    for run in (RUN, RUN2):  # each run stages the items it prepared
        mine = [
            i
            for n, i in items.items()
            if (n.startswith("extra_") and n not in FIRST) == (run == RUN2)
        ]
        commit_shard(
            root, run, "shard-00000", write_shard(root, run, "shard-00000", mine, [], S3), S3
        )
    rows = [
        {"asset_id": i.asset_id, "source_uri": i.source_uri, "status": "active",
         "pending_run": RUN2 if n.startswith("extra_") and n not in FIRST else RUN}
        for n, i in items.items() if n != NO_ASSET_ROW
    ]  # fmt: skip
    rows.append({"asset_id": GHOST, "source_uri": "file:///ghost.jpg", "pending_run": "gone"})
    write_deltalake(table_uri(root, "assets"), pa.Table.from_pylist(rows, schema=assets_schema()))

    ghost = PreparedItem(GHOST, "file:///ghost.jpg", "image", 600, 600)
    v1 = [n for n in names if not n.startswith("extra_") or n in FIRST]
    records = [_record(items[n], n, RUN) for n in v1] + [_record(ghost, "ghost", "gone")]
    first = promote(root, S3, to_arrow(records), [], run_id=RUN)
    second_names = [n for n in names if n not in v1]
    second = promote(
        root, S3, to_arrow([_record(items[n], n, RUN2) for n in second_names]), [], run_id=RUN2
    )
    assert (first.added, second.added) == (len(records), 8)
    return {"root": root, "src": src, "items": items, "v1": first.version, "v2": second.version}


def _build(dataset: dict[str, Any], version: int | None = None, **finetune: Any) -> TrainingSet:
    cfg = _cfg(dataset["root"], dataset["src"], **finetune)
    return build_training_set(dataset["root"], S3, cfg, version)


def _ids(examples: list) -> set[str]:
    return {e.asset_id for e in examples}


def test_split_is_disjoint_and_stable_across_versions(dataset: dict[str, Any]) -> None:
    root, cfg = dataset["root"], _cfg(dataset["root"], dataset["src"])
    one, two = _build(dataset, dataset["v1"]), _build(dataset)
    assert (one.version, two.version) == (dataset["v1"], dataset["v2"])
    for ts in (one, two):
        assert ts.train and ts.eval and not _ids(ts.train) & _ids(ts.eval)
        assert all(is_held_out(a, 40.0) for a in _ids(ts.eval))
        assert not any(is_held_out(a, 40.0) for a in _ids(ts.train))
    held1 = held_out_ids(root, S3, cfg, dataset["v1"])
    held2 = held_out_ids(root, S3, cfg)
    assert set(held1) < set(held2) and set(held1) - {GHOST} == _ids(one.eval)
    assert set(held2) - {GHOST} == _ids(two.eval)
    assert not set(held2) & _ids(one.train)  # v2's eval never was v1's training
    assert _ids(one.train) < _ids(two.train)

    capped = _build(dataset, eval_max_samples=2)
    order = held_out_ids(root, S3, _cfg(root, dataset["src"], eval_max_samples=2))
    assert order == held2[:2] and len(capped.eval) <= 2
    assert capped.skipped["held_out_over_cap"] == len(held2) - 2
    assert _ids(capped.train) == _ids(two.train)  # the over-cap held-out never train


def test_rejected_and_self_trained_are_left_out_and_counted(dataset: dict[str, Any]) -> None:
    items = dataset["items"]
    ts = _build(dataset)
    everything = _ids(ts.train) | _ids(ts.eval)
    assert items[REJECTED].asset_id not in everything and items[SELF].asset_id not in everything
    assert ts.skipped["not_accepted"] == 1 and ts.skipped["self_trained"] == 1
    assert ts.skipped["media_missing"] == 1  # the ghost, counted whichever split it is in
    # every caption row of v2 is an example or a counted skip
    counted = sum(v for k, v in ts.skipped.items() if k != "held_out_over_cap")
    assert len(everything) + counted == len(items) + 1

    allowed = _build(dataset, allow_self_training=True)
    assert allowed.skipped["self_trained"] == 0
    assert items[SELF].asset_id in _ids(allowed.train) | _ids(allowed.eval)
    assert items[REJECTED].asset_id not in _ids(allowed.train) | _ids(allowed.eval)


def test_examples_carry_conversations_and_media(dataset: dict[str, Any]) -> None:
    ts = _build(dataset)
    by_id = {e.asset_id: e for e in ts.train + ts.eval}
    names = {i.asset_id: n for n, i in dataset["items"].items()}
    assert dataset["items"][NO_ASSET_ROW].asset_id in by_id  # found via the caption's run
    videos = [e for e in by_id.values() if e.modality == "video"]
    assert len(videos) == 2
    for e in by_id.values():
        human, gpt = e.conversations()
        assert human["from"] == "human" and gpt == {"from": "gpt", "value": e.caption}
        assert e.caption == f"A detailed caption of {names[e.asset_id]}."
        assert e.instruction == instruction_for(e.asset_id, e.modality) and e.source == "capflow"
        if e.modality == "video":
            assert human["value"].startswith("<video>\n") and e.image is None
            assert len(e.frames) >= 2 and e.duration_s and e.duration_s > 0
            assert Image.open(io.BytesIO(e.frames[0])).format == "JPEG"
        else:
            assert human["value"].startswith("<image>\n") and not e.frames
            assert Image.open(io.BytesIO(e.image)).format == "JPEG"
    stats = ts.stats()
    assert (stats["train"], stats["eval"], stats["mixed_in"]) == (len(ts.train), len(ts.eval), 0)
    assert stats["train_videos"] + stats["eval_videos"] == 2
    assert stats["skipped"]["media_missing"] == 1


def _mix_in_file(folder: Path, jsonl: bool = False) -> Path:
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (200, 10, 10)).save(folder / "imgs" / "red.png")
    Image.new("RGB", (40, 40), (10, 10, 200)).save(folder / "blue.jpg")
    records = [
        {"id": "q1", "image": "imgs/red.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is it?"},
            {"from": "gpt", "value": "Red."}]},
        {"id": "q2", "image": "blue.jpg", "conversations": [
            {"from": "human", "value": "How many shapes?\n<image>"},
            {"from": "gpt", "value": "None."}, {"from": "human", "value": "Sure?"},
            {"from": "gpt", "value": "Yes."}]},
        {"id": "q3", "image": "missing.jpg", "conversations": [
            {"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Hello"}]},
        {"id": "t1", "conversations": [{"from": "human", "value": "Text only"}]},
    ]  # fmt: skip
    path = folder / ("mix.jsonl" if jsonl else "mix.json")
    text = "\n".join(map(json.dumps, records)) if jsonl else json.dumps(records)
    path.write_text(text)
    return path


def test_load_mix_in_json_and_jsonl(dataset: dict[str, Any], tmp_path: Path) -> None:
    cfg = _cfg(dataset["root"], dataset["src"])
    for jsonl in (False, True):
        got = load_mix_in(str(_mix_in_file(tmp_path / str(jsonl), jsonl)), cfg)
        assert [(e.id, e.instruction, e.caption) for e in got] == [
            ("mix_in:q1", "What colour is it?", "Red."),
            ("mix_in:q2", "How many shapes?", "None."),
        ]
        assert all(e.source == "mix_in" and e.modality == "image" for e in got)
        assert Image.open(io.BytesIO(got[0].image)).format == "JPEG"
        assert Image.open(io.BytesIO(got[0].image)).getpixel((5, 5))[0] > 150
    with pytest.raises(ConfigError, match=r"finetune\.mix_in: cannot read"):
        load_mix_in(str(tmp_path / "nope.json"), cfg)


def test_mix_in_goes_to_training_only(dataset: dict[str, Any], tmp_path: Path) -> None:
    path = str(_mix_in_file(tmp_path))
    plain = _build(dataset)
    ts = _build(dataset, mix_in=path, mix_in_ratio=1.0)
    mixed = [e for e in ts.train if e.source == "mix_in"]
    assert ts.mixed_in == len(mixed) == len(plain.train)  # ratio 1.0: one per caption example
    assert [e for e in ts.train if e.source == "capflow"] == plain.train
    assert all(e.source == "capflow" for e in ts.eval) and _ids(ts.eval) == _ids(plain.eval)
    assert {e.id.split("#")[0] for e in mixed} == {"mix_in:q1", "mix_in:q2"}
    assert len({e.id for e in mixed}) == len(mixed)  # repeats get distinct ids
    assert ts.skipped["mix_in_unreadable"] == 1 and ts.skipped["mix_in_no_image"] == 1
    assert all(e.conversations()[0]["value"].count("<image>") == 1 for e in mixed)
    again = _build(dataset, mix_in=path, mix_in_ratio=1.0)
    assert [e.id for e in again.train] == [e.id for e in ts.train]  # seeded


def test_missing_dataset_or_version_is_a_config_error(
    dataset: dict[str, Any], tmp_path: Path
) -> None:
    cfg = _cfg(str(tmp_path / "empty"), dataset["src"])
    with pytest.raises(ConfigError, match="no dataset version"):
        build_training_set(str(tmp_path / "empty"), S3, cfg)
    with pytest.raises(ConfigError, match="available versions"):
        _build(dataset, version=99)
