"""The per-version HTML report: content, escaping, self-containment, writing, and Chromium."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from capflow_core.records import (
    AgentOutput,
    CaptionRecord,
    JudgeResult,
    Route,
    Tokens,
    to_arrow,
)
from quality.report import render_report, write_report
from quality.report_data import ReportData, cost_per_100, summarize
from tests.quality.chromium import dump_dom, find_chromium, screenshot

SCRIPT_CAPTION = 'A sign that reads <script>alert("x")</script> on a wall.'
OCR_TEXT = "<b>bold</b> OCR text & more"
CRITERIA = ("accuracy", "completeness", "fluency")


def _record(i: int, domain: str, modality: str = "image", caption: str | None = None):
    scores = dict(zip(CRITERIA, (1 + i % 3, 3 - i % 2, 2 + i % 2), strict=True))
    return CaptionRecord(
        asset_id=f"asset-{domain}-{i:03d}",
        source_uri=f"s3://media/{domain}/{i}.{'mp4' if modality == 'video' else 'jpg'}",
        modality=modality,
        license="CC-BY-4.0",
        domain=domain,
        route=Route(domain=domain, confidence=0.9, skipped=False),
        agents=[
            AgentOutput("ocr", "perception", "tiny", "f" * 64, text=OCR_TEXT, prompt_tokens=50),
            AgentOutput("scene", "perception", "tiny", "e" * 64, text=f"scene {i}"),
        ],
        caption=caption or " ".join(["word"] * (8 + 3 * i)),
        judge=JudgeResult(scores=scores, accepted=min(scores.values()) >= 2, rule="min>=2"),
        accepted=min(scores.values()) >= 2,
        fingerprint=f"fp-{domain}",
        tokens=Tokens(prompt=300, completion=80),
        cost_usd=0.0001,
        run_id="run-42",
    )


def _data(records: list[CaptionRecord], version: int | None = 7, **overrides) -> ReportData:
    kwargs = dict(
        title="CapFlow dataset",
        version=version,
        run_id="run-42",
        created_at="2025-01-02T03:04:05+00:00",
        gate={
            "passed": False,
            "evaluated": 12,
            "successful": 11,
            "failing": [
                {
                    "expectation": "expect_column_values_to_not_match_regex",
                    "column": "caption",
                    "observed": {"unexpected_count": 1},
                    "examples": [{"asset_id": "asset-x", "value": "<i>I'm sorry</i>"}],
                }
            ],
            "data_docs": "../data_docs/index.html",
        },
        reconciliation={
            "listed": 20,
            "unchanged": 2,
            "pending": 0,
            "prepared": 16,
            "rejected": 2,
            "reasons": {"decode_error": 2},
            "captioned": 15,
            "caption_failed": 1,
        },
        records=to_arrow(records),
        rejects=[
            {
                "source_uri": "s3://media/bad.jpg",
                "asset_id": None,
                "stage": "preprocess",
                "reason_code": "decode_error",
                "detail": "<img src=x onerror=alert(1)>",
                "run_id": "run-42",
            },
            {
                "source_uri": "s3://media/late.jpg",
                "asset_id": "asset-late",
                "stage": "caption",
                "reason_code": "retry_budget_exhausted",
                "detail": "timeout",
                "run_id": "run-42",
            },
        ],
        cost={
            "captions": len(records),
            "tokens_prompt": 300 * len(records),
            "tokens_completion": 80 * len(records),
            "gpu_s": 1.5 * len(records),
            "cost_usd": 0.0001 * len(records),
            "api_usd": 0.0013 * len(records),
            "api_name": "gpt-4.1",
        },
        diff={
            "old": 6,
            "new": 7,
            "by_domain": {
                "chart": {"added": 2, "changed": 1, "removed": 0},
                "natural": {"added": 0, "changed": 0, "removed": 3},
            },
            "examples": {
                "added": [{"asset_id": "a1", "domain": "chart", "caption": "new <u>one</u>"}],
                "changed": [
                    {"asset_id": "a2", "domain": "chart", "caption": "v2", "old_caption": "v1"}
                ],
                "removed": [{"asset_id": "a3", "domain": "natural", "caption": "gone"}],
            },
        },
        config_hash="cfg123abc",
    )
    kwargs.update(overrides)
    return ReportData(**kwargs)


@pytest.fixture
def records() -> list[CaptionRecord]:
    recs = [_record(i, "natural") for i in range(5)]
    recs += [_record(i, "chart") for i in range(4)]
    recs += [_record(i, "document") for i in range(2)]
    recs += [_record(0, "video", modality="video", caption="The man walks, then sits down.")]
    recs += [_record(9, "document", caption=SCRIPT_CAPTION)]
    return recs


def _resource_refs(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", html)


def test_render_escapes_untrusted_text_and_needs_no_network(records):
    html = render_report(_data(records))

    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "<script" not in html
    assert "&lt;b&gt;bold&lt;/b&gt; OCR text &amp; more" in html
    assert "<b>bold</b>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;i&gt;I&#39;m sorry&lt;/i&gt;" in html
    assert "new &lt;u&gt;one&lt;/u&gt;" in html
    assert "http://" not in html and "https://" not in html
    assert "url(" not in html and "@import" not in html
    refs = _resource_refs(html)
    assert refs, "expected links and images"
    for ref in refs:
        assert ref.startswith(("data:image/png;base64,", "#")) or "://" not in ref, ref


def test_report_sections_show_the_figures(records):
    data = _data(records)
    html = render_report(data)

    assert 'id="version">Version 7<' in html
    assert "FAILED" in html and "cfg123abc" in html
    assert len(re.findall(r'<img id="plot-[a-z-]+" class="plot" alt="[^"]+" src="data:', html)) == 7
    assert '<a href="../data_docs/index.html">' in html
    assert "expect_column_values_to_not_match_regex" in html
    for key in ("listed", "unchanged", "pending", "prepared", "captioned", "caption failed"):
        assert f"<td>{key}</td>" in html
    assert "retry_budget_exhausted" in html  # caption-stage rejects are listed too
    per100 = cost_per_100(data.cost)
    assert per100["cost_usd"] == pytest.approx(0.01)
    assert per100["api_usd"] == pytest.approx(0.13)
    assert per100["saving_pct"] == pytest.approx(100 * (1 - 1 / 13))
    assert f'id="saving">{per100["saving_pct"]:.1f}%<' in html
    assert "Version 6 &rarr; version 7" in html
    summary = summarize(data)
    # one collapsed list of rejects, one of agent outputs per sample caption
    assert html.count("<details>") == 1 + sum(len(v) for v in summary.samples.values())
    assert summary.domains == ["natural", "chart", "document", "video"]
    assert [len(summary.samples[d]) for d in summary.domains] == [3, 3, 3, 1]
    assert summary.words["video"] == [6]
    assert sum(summary.judge["accuracy"].values()) == len(records)


def test_report_without_records_or_previous_version():
    data = _data([], version=None, diff=None, rejects=[])
    data.gate = {"passed": True, "evaluated": 3, "successful": 3, "failing": [], "data_docs": None}
    data.cost = {"captions": 0, "api_name": "gpt-4.1"}
    html = render_report(data)

    assert "No version (run not promoted)" in html and "PASSED" in html
    assert 'class="plot"' not in html
    assert html.count("No data for this plot.") == 6  # the diff section says why instead
    assert "No previous version to compare with." in html
    assert "No caption records in this report." in html


def test_report_with_one_domain_and_data_docs_on_s3(records):
    one = [r for r in records if r.domain == "natural"]
    gate = {"passed": True, "evaluated": 1, "successful": 1, "data_docs": "s3://b/docs/index.html"}
    html = render_report(_data(one, gate=gate))

    assert html.count('class="plot"') == 7
    assert 'href="s3://' not in html and "s3://b/docs/index.html</code>" in html


def test_write_report_locally_and_to_s3(records, tmp_path, moto_s3):
    from capflow_core.config import S3Config
    from capflow_core.storage import filesystem

    data = _data(records)
    target = tmp_path / "reports" / "7" / "report.html"
    assert write_report(data, str(target)) == str(target)
    assert 'id="version">Version 7<' in target.read_text(encoding="utf-8")
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]

    uri = write_report(data, "s3://capflow-test/report-test/reports/7")
    assert uri == "s3://capflow-test/report-test/reports/7/report.html"
    fs, path = filesystem(uri, S3Config())
    assert 'id="version">Version 7<' in fs.cat_file(path).decode("utf-8")


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = find_chromium()
    if binary is None:
        if os.geteuid() != 0 and not os.environ.get("CI"):
            pytest.skip("chromium is not installed (the Makefile installs it as root)")
        pytest.fail("chromium is not installed: `apt-get install chromium` (make setup does)")
    return binary


def test_report_renders_in_chromium(records, tmp_path, chromium):
    from PIL import Image

    page = Path(write_report(_data(records), str(tmp_path / "report.html")))

    png = screenshot(chromium, page, tmp_path / "shot.png")
    with Image.open(png) as img:
        assert img.format == "PNG"
        rgb = img.convert("RGB")
        assert rgb.size == (1400, 900)
        colors = rgb.getcolors(maxcolors=1 << 16)  # None: more colours than that
        assert colors is None or len(colors) > 10
        assert any(lo != hi for lo, hi in rgb.getextrema())

    dom = dump_dom(chromium, page)
    assert 'id="version">Version 7</span>' in dom
    plots = re.findall(r'<img id="plot-[a-z-]+" class="plot"[^>]*src="data:image/png;base64,', dom)
    assert len(plots) >= 5
    assert '&lt;script&gt;alert("x")&lt;/script&gt;' in dom
    assert "<script" not in dom
    assert "&lt;b&gt;bold&lt;/b&gt;" in dom and "<b>bold</b>" not in dom
