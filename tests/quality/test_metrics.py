"""Per-caption metrics and the frame the caption contract validates."""

from __future__ import annotations

import math

import pytest

from capflow_core.config_quality import REFUSALS
from capflow_core.records import to_arrow
from capflow_core.registry import load_registry
from quality.metrics import caption_frame, refusal, repeat_ratio, temporal_terms, word_count
from tests.quality.factory import clean_records, criteria, gate_config, record


def test_word_count_splits_on_whitespace() -> None:
    assert word_count("A  red\tkayak\non the beach.") == 6
    assert word_count("") == 0
    assert word_count("   ") == 0
    assert word_count(None) == 0


def test_repeat_ratio_counts_ngrams_seen_before() -> None:
    # 3-grams: (the cat the) (cat the cat) (the cat the)* (cat the cat)*
    assert repeat_ratio("the cat the cat the cat", 3) == pytest.approx(0.5)
    assert repeat_ratio("The cat, the CAT; the cat!", 3) == pytest.approx(0.5)  # case/punct
    assert repeat_ratio("a quick brown fox jumps over the lazy dog", 3) == 0.0
    assert repeat_ratio("one two three", 3) == 0.0  # shorter than n + 1 words
    loop = " ".join(["the cat sat"] * 20)
    assert repeat_ratio(loop, 3) > 0.9
    assert repeat_ratio(loop, 1) == pytest.approx(57 / 60)


def test_temporal_terms_counts_words_and_phrases() -> None:
    text = "At first the dog sits; then it runs. Over time the light fades, and finally it ends."
    # at first, then, over time, finally, ends
    assert temporal_terms(text) == 5
    assert temporal_terms("A still photograph of a red barn under a blue sky.") == 0
    assert temporal_terms("The Frames BEGIN... the scene begins") == 2  # frames, begins
    assert temporal_terms("thenceforth lateral") == 0  # whole words only
    assert temporal_terms(None) == 0


def test_refusal_returns_the_matching_pattern() -> None:
    assert refusal("I'm sorry, but as an AI I cannot see the image.", REFUSALS) == REFUSALS[0]
    assert refusal("As an AI language model, I describe.", REFUSALS) == r"(?i)\bas an AI\b"
    assert refusal("I can't see the picture clearly", REFUSALS) is not None
    assert refusal("A sorry-looking dog sits in the rain.", REFUSALS) is None
    assert refusal("", REFUSALS) is None


def test_caption_frame_columns() -> None:
    cfg = gate_config()
    recs = clean_records()
    recs[0].caption = recs[1].caption  # a duplicate caption pair
    recs[2].judge.scores = {"factual_accuracy": 2, "unrelated": 3}  # one registry criterion
    recs[2].accepted = False
    recs[3].route = None
    frame = caption_frame(to_arrow(recs), cfg, load_registry())

    assert len(frame) == 20
    assert list(frame["asset_id"]) == [r.asset_id for r in recs]
    assert list(frame["caption_id"]) == [r.caption_id for r in recs]
    by_id = frame.set_index("asset_id")
    code = by_id.loc["asset-005"]  # code_programming: its own bounds
    assert (code["domain"], code["word_min"], code["word_max"]) == ("code_programming", 20, 60)
    natural = by_id.loc["asset-003"]
    assert (natural["word_min"], natural["word_max"]) == (20, 120)
    assert math.isnan(natural["route_confidence"])
    assert by_id.loc["asset-004"]["route_confidence"] == pytest.approx(0.9)

    assert frame.loc[frame["modality"] == "image", "temporal_terms"].isna().all()
    assert (frame.loc[frame["modality"] == "video", "temporal_terms"] >= 3).all()

    odd = by_id.loc["asset-002"]
    assert (odd["judge_min"], odd["judge_max"], odd["judge_criteria"]) == (2, 3, 1)
    assert not odd["accepted_expected"] and not odd["accepted"]
    clean = by_id.loc["asset-004"]
    assert (clean["judge_min"], clean["judge_max"]) == (3, 3)
    assert clean["judge_criteria"] == len(criteria("image")) == 5
    assert clean["accepted_expected"] and clean["accepted"]

    assert by_id.loc["asset-000"]["caption_dup"] and by_id.loc["asset-001"]["caption_dup"]
    assert frame["caption_dup"].sum() == 2
    assert by_id.loc["asset-000"]["domain_share"] == pytest.approx(5 / 20)
    assert frame["refusal"].isna().all()
    assert (frame["repeat_ratio"] < 0.1).all()
    assert (frame["word_count"] == [word_count(r.caption) for r in recs]).all()


def test_caption_frame_marks_refusals_and_missing_judges() -> None:
    cfg = gate_config()
    rec = record(1, "natural", caption="I am sorry, as an AI I cannot see the image at all.")
    rec.judge = None
    frame = caption_frame(to_arrow([rec]), cfg, load_registry())
    row = frame.iloc[0]
    assert row["refusal"] == r"(?i)\bI am sorry\b"
    assert row["judge_criteria"] == 0 and math.isnan(row["judge_min"])
    assert not row["accepted_expected"]
    assert row["domain_share"] == 1.0 and not row["caption_dup"]


def test_caption_frame_of_no_records_is_empty() -> None:
    frame = caption_frame(to_arrow([]), gate_config(), load_registry())
    assert frame.empty
    assert {"word_count", "domain_share", "caption_dup", "accepted_expected"} <= set(frame)
