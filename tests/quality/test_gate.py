"""The caption contract run through GX: clean records pass, each planted defect is named."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from capflow_core.config import S3Config
from capflow_core.config_quality import RateBounds
from capflow_core.records import CaptionRecord, to_arrow
from quality.gate import run_gate
from quality.suite import SUITE_NAME, SUITE_VERSION, build_suite
from tests.quality.factory import clean_records, gate_config

Mutation = Callable[[list[CaptionRecord]], None]


def _set(i: int, **fields: object) -> Mutation:
    def apply(recs: list[CaptionRecord]) -> None:
        for key, value in fields.items():
            setattr(recs[i], key, value)

    return apply


def _scores(i: int, value: int, accepted: bool) -> Mutation:
    def apply(recs: list[CaptionRecord]) -> None:
        recs[i].judge.scores = dict.fromkeys(recs[i].judge.scores, value)
        recs[i].judge.accepted = recs[i].accepted = accepted

    return apply


def _reject(n: int) -> Mutation:
    def apply(recs: list[CaptionRecord]) -> None:
        for i in range(n):
            _scores(i, 2, accepted=False)(recs)

    return apply


def _move_to_natural(n: int) -> Mutation:
    def apply(recs: list[CaptionRecord]) -> None:
        for rec in recs[:n]:
            rec.domain = "natural"

    return apply


def _copy_caption(targets: range) -> Mutation:
    def apply(recs: list[CaptionRecord]) -> None:
        for i in targets:
            recs[i].caption = recs[0].caption

    return apply


REFUSAL = (
    "I'm sorry, but as an AI I cannot see the image you sent, so I am not able to describe "
    "its colours, objects, layout or any text on it; please upload the file again and I "
    "will try once more."
)
LOOP = " ".join(["the cat sat on the mat"] * 8)
STILL_VIDEO = (
    "A wide shot of a green valley with a small wooden house, a stone wall and three "
    "cows grazing on the slope under a pale blue sky with a few white clouds drifting."
)

# (mutation, the checks that must fail - exactly these, the asset id an example names)
DEFECTS: dict[str, tuple[Mutation, set[str], str | None]] = {
    "refusal": (_set(4, caption=REFUSAL), {"no_refusal"}, "asset-004"),
    "repetition": (_set(3, caption=LOOP), {"repeat_ratio_3gram"}, "asset-003"),
    "empty_caption": (_set(6, caption=""), {"caption_not_empty", "word_count"}, "asset-006"),
    "score_above_3": (_scores(7, 4, accepted=True), {"judge_score_max"}, "asset-007"),
    "score_0": (
        _scores(8, 0, accepted=True),
        {"judge_score_min", "accepted_matches_rule"},
        "asset-008",
    ),
    "duplicate_id": (_set(9, asset_id="asset-010"), {"unique_asset_id"}, "asset-010"),
    "accepted_inconsistent": (_set(10, accepted=False), {"accepted_matches_rule"}, "asset-010"),
    "unknown_domain": (_set(0, domain="cooking"), {"domain_in_registry"}, "asset-000"),
    "video_without_temporal": (
        _set(16, caption=STILL_VIDEO),
        {"video_temporal_terms"},
        "asset-016",
    ),
    "long_code_caption": (
        _set(2, caption=" ".join(f"token{k}" for k in range(80))),
        {"word_count:code_programming"},
        "asset-002",
    ),
    "missing_caption": (_set(1, caption=None), {"required:caption", "word_count"}, "asset-001"),
    "accept_rate_low": (_reject(12), {"accept_rate"}, "asset-000"),
    "domain_share_high": (_move_to_natural(12), {"domain_share"}, "asset-000"),
    "duplicate_captions": (_copy_caption(range(1, 4)), {"duplicate_caption_rate"}, "asset-000"),
}


@pytest.fixture(scope="module")
def cfg():
    return gate_config()


def test_clean_records_pass(cfg) -> None:
    result = run_gate(to_arrow(clean_records()), cfg, run_id="run-clean")
    assert result.passed, result.summary()
    assert result.failing == []
    assert result.rows == 20
    assert result.evaluated == result.successful >= 20
    assert (result.suite, result.suite_version) == (SUITE_NAME, SUITE_VERSION)
    assert result.summary().startswith("gate passed: ")
    assert json.loads(json.dumps(result.to_dict()))["passed"] is True


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_planted_defect_is_caught(cfg, defect: str) -> None:
    mutate, checks, offender = DEFECTS[defect]
    recs = clean_records()
    mutate(recs)
    result = run_gate(to_arrow(recs), cfg, run_id=f"run-{defect}")

    assert not result.passed
    assert {f.check for f in result.failing} == checks, result.summary()
    assert result.successful == result.evaluated - len(checks)
    for failed in result.failing:
        assert failed.expectation.startswith("expect_")
        assert [ex for ex in failed.examples if ex["asset_id"] == offender], failed
        assert len(failed.examples) <= 5
    summary = result.summary()
    assert summary.startswith(f"gate FAILED: {len(checks)} of {result.evaluated}")
    assert offender in summary and all(c in summary for c in checks)
    assert json.loads(json.dumps(result.to_dict()))["failing"][0]["check"] in checks


def test_failure_reports_observed_values_and_thresholds(cfg) -> None:
    recs = clean_records()
    _reject(12)(recs)
    _set(4, caption=REFUSAL)(recs)
    result = run_gate(to_arrow(recs), cfg, run_id="run-observed")
    failing = {f.check: f for f in result.failing}
    assert failing["accept_rate"].observed == pytest.approx(8 / 20)
    assert failing["accept_rate"].kwargs["min_value"] == 0.5
    assert failing["accept_rate"].column == "accepted"
    assert all(not ex["value"] for ex in failing["accept_rate"].examples)
    dup = run_gate(to_arrow(_dup_ids()), cfg, run_id="run-dup").failing[0]
    assert dup.examples == [{"asset_id": "asset-010", "value": "asset-010"}] * 2
    refusal = failing["no_refusal"]
    assert refusal.observed["unexpected_count"] == 1
    assert refusal.examples == [{"asset_id": "asset-004", "value": REFUSAL}]


def _dup_ids() -> list[CaptionRecord]:
    recs = clean_records()
    _set(9, asset_id="asset-010")(recs)
    return recs


def test_mostly_tolerates_a_share_of_bad_captions(cfg) -> None:
    recs = clean_records()
    _set(3, caption=LOOP)(recs)
    lenient = cfg.model_copy(update={"quality": cfg.quality.model_copy(update={"mostly": 0.9})})
    assert run_gate(to_arrow(recs), lenient, run_id="run-mostly").passed
    assert not run_gate(to_arrow(recs), cfg, run_id="run-strict").passed


def test_thresholds_come_from_config(cfg) -> None:
    recs = clean_records()
    _reject(12)(recs)  # accept rate 0.4
    looser = cfg.quality.model_copy(update={"accept_rate": RateBounds(min=0.3, max=1.0)})
    assert run_gate(to_arrow(recs), cfg.model_copy(update={"quality": looser}), run_id="r").passed
    suite = build_suite(cfg.model_copy(update={"quality": looser}), ["natural"])
    assert suite.meta["suite_version"] == SUITE_VERSION
    mean = [e for e in suite.expectations if (e.meta or {}).get("check") == "accept_rate"]
    assert mean[0].min_value == 0.3


def test_no_records_pass_without_running_gx(cfg) -> None:
    result = run_gate(to_arrow([]), cfg, run_id="run-empty", docs_uri="/nonexistent/docs")
    assert result.passed and result.evaluated == 0 and result.rows == 0
    assert result.data_docs is None


def test_data_docs_are_copied_to_docs_uri(cfg, tmp_path: Path) -> None:
    recs = clean_records()
    _set(4, caption=REFUSAL)(recs)
    docs = tmp_path / "reports" / "runs" / "run-docs" / "data_docs"
    result = run_gate(to_arrow(recs), cfg, run_id="run-docs", docs_uri=str(docs))
    assert not result.passed
    assert result.data_docs == str(docs / "index.html")
    assert (docs / "index.html").is_file()
    pages = list((docs / "validations").rglob("*.html"))
    assert len(pages) == 1 and "run-docs" in pages[0].parts
    page = pages[0].read_text()
    assert "capflow_caption_contract" in page and "asset-004" in page  # the failing row
    assert (docs / "expectations" / "capflow_caption_contract.html").is_file()
    assert "Data Docs: " in result.summary()


def test_data_docs_on_s3(cfg, moto_s3: dict[str, str]) -> None:
    import s3fs

    uri = f"s3://capflow-test/gate-{os.getpid()}/reports/runs/run-s3/data_docs"
    result = run_gate(to_arrow(clean_records()), cfg, run_id="run-s3", docs_uri=uri, s3=S3Config())
    assert result.passed
    assert result.data_docs == f"{uri}/index.html"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_s3["AWS_ENDPOINT_URL"]})
    assert fs.exists(result.data_docs)
    assert fs.find(uri.removeprefix("s3://") + "/validations")


def test_judge_criteria_follow_the_registry_per_modality(cfg, tmp_path: Path) -> None:
    (tmp_path / "judge_video.md").write_text("Score the video caption.")
    (tmp_path / "registry.yaml").write_text(
        "judge:\n  video:\n    prompt: judge_video.md\n"
        "    criteria: [temporal_factual_accuracy, event_detail_coverage, core_intent, "
        "professionalism]\n"
    )
    four = cfg.model_copy(update={"registry": str(tmp_path / "registry.yaml")})
    recs = clean_records()
    assert run_gate(to_arrow(recs), four, run_id="run-4").passed  # video: 4 of its 5 scores
    recs[16].judge.scores.pop("core_intent")
    result = run_gate(to_arrow(recs), four, run_id="run-3")
    assert [(f.check, f.examples[0]["asset_id"]) for f in result.failing] == [
        ("judge_criteria_scored:video", "asset-016")
    ]
