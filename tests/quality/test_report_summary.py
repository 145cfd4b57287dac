"""The report's summary: Arrow aggregates equal to a row-by-row reference, and a version's
report reads the heavy ``agents`` column only for its sample rows."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa
import pytest

from capflow_core import captions_store as cs
from capflow_core.config import S3Config, load_config
from capflow_core.records import AgentOutput, CaptionRecord, JudgeResult, Route, to_arrow
from quality.report_data import SUMMARY_COLUMNS, UNROUTED, ReportData, Summary, summarize

S3 = S3Config()
DOMAINS = ("natural", "natural", "natural", "chart", "chart", "document", "video_temporal")
# every character Python's str.split() splits on, ASCII and not
SPACES = (" ", "\t", "\n", "\x1c", "\x85", "\xa0", "\u2003", "\u3000")
CRITERIA = ("accuracy", "completeness", "fluency")


def _record(
    i: int, domain: str | None, payload: int = 64, run: str = "r1", missing: str | None = None
) -> CaptionRecord:
    """Row ``i``: ``missing`` stands for every 17th caption (promoted rows need one)."""
    gap = SPACES[i % len(SPACES)]
    caption = missing if i % 17 == 0 else gap + gap.join(["word"] * (i % 23)) + gap * (i % 2)
    scores: dict[str, Any] = {c: (i + k) % 4 for k, c in enumerate(CRITERIA[: 1 + i % 3])}
    if i % 29 == 0:
        scores["accuracy"] = None
    judge = None if i % 11 == 0 else JudgeResult(scores, i % 3 > 0, "min>=1", "judge")
    agents = [
        AgentOutput(name, "perception", "m", "p" * 64, f"{name} {i} " + "x" * payload, 10, 20)
        for name in ("scene", "ocr", "objects")
    ]
    return CaptionRecord(
        asset_id=f"{i:064x}",
        source_uri=f"s3://media/{i}.jpg",
        modality=("image", "video", None)[i % 3] if i % 13 else None,
        license="CC-BY-4.0",
        domain=domain,
        route=Route(domain or "", 0.9, domain is None),
        agents=agents,
        caption=caption,
        judge=judge,
        accepted=[True, False, None][i % 3] if i % 7 else True,
        fingerprint="fp",
        errors={"judge": "timeout", "ocr": "empty"} if i % 19 == 0 else {},
        run_id=run,
    )


def _reference(records: pa.Table, rejects: list[dict], k: int = 3) -> Summary:
    """The summary computed row by row in plain Python, from every column of every row."""
    rows = records.to_pylist()
    out = Summary()
    counted = Counter(r["domain"] or UNROUTED for r in rows)
    out.domains = sorted(counted, key=lambda d: (-counted[d], d))
    out.domain_counts = {d: counted[d] for d in out.domains}
    out.accepted = {
        d: sum(1 for r in rows if (r["domain"] or UNROUTED) == d and r["accepted"])
        for d in out.domains
    }
    out.words = {d: [] for d in out.domains}
    out.samples = {d: [] for d in out.domains}
    for r in rows:
        d = r["domain"] or UNROUTED
        if r["caption"] is not None:
            out.words[d].append(len(r["caption"].split()))
        for criterion, score in (r["judge"] or {}).get("scores") or []:
            out.judge.setdefault(criterion, Counter())[score] += 1
        if len(out.samples[d]) < k:
            scores = dict((r["judge"] or {}).get("scores") or [])
            sample = {**r, "scores": scores, "errors": dict(r["errors"] or [])}
            out.samples[d].append(sample)
    modalities = Counter(r["modality"] or "unknown" for r in rows)
    accepted = sum(1 for r in rows if r["accepted"])
    out.counts = {
        "records": len(rows),
        "accepted": accepted,
        "not accepted": len(rows) - accepted,
        "with errors": sum(1 for r in rows if r["errors"]),
        "domains": len(out.domains),
        **{f"{m} records": c for m, c in sorted(modalities.items())},
        "rejects rows": len(rejects),
    }
    reasons = Counter((r["stage"] or "", r["reason_code"] or "") for r in rejects)
    out.rejects_by_reason = sorted(
        ((s, c, n) for (s, c), n in reasons.items()), key=lambda t: (-t[2], t[:2])
    )
    return out


def _assert_same(got: Summary, want: Summary) -> None:
    for name in ("domains", "domain_counts", "accepted", "words", "judge", "counts"):
        assert getattr(got, name) == getattr(want, name), name
    assert got.rejects_by_reason == want.rejects_by_reason
    assert got.samples == want.samples
    assert got == want


def _data(records: pa.Table, rejects: list[dict], **kw: Any) -> ReportData:
    return ReportData("t", 1, "r1", "now", {}, {}, records, rejects, {}, None, **kw)


def test_summary_of_edge_case_rows_matches_the_row_by_row_reference():
    domains = [*DOMAINS, None, ""]
    records = to_arrow([_record(i, domains[i % len(domains)]) for i in range(600)])
    rejects = [{"stage": "caption", "reason_code": f"r{i % 3}"} for i in range(7)]
    rejects += [{"stage": None, "reason_code": None}]
    want = _reference(records, rejects)
    assert UNROUTED in want.domains and want.counts["with errors"] > 0
    assert sum(want.judge["accuracy"].values()) > 0 and None in want.judge["accuracy"]

    _assert_same(summarize(_data(records, rejects)), want)
    # chunked columns, and records holding only the summary's columns plus a row reader
    chunked = pa.concat_tables([records.slice(0, 250), records.slice(250)])
    _assert_same(summarize(_data(chunked, rejects)), want)
    by_id = {r["asset_id"]: r for r in records.to_pylist()}

    def rows(ids: list[str]) -> pa.Table:
        return pa.Table.from_pylist([by_id[a] for a in reversed(ids)], schema=records.schema)

    slim = chunked.select(list(SUMMARY_COLUMNS))
    _assert_same(summarize(_data(slim, rejects, sample_rows=rows)), want)
    empty = summarize(_data(records.schema.empty_table(), []))
    assert (empty.domains, empty.judge, empty.samples, empty.counts["records"]) == ([], {}, {}, 0)


@pytest.mark.timeout(240)
def test_version_report_reads_agents_only_for_the_sample_rows(tmp_path, monkeypatch):
    import quality.report
    import tasks.report
    from tasks.report import rebuild_report

    root = str(tmp_path / "root")
    payload = 2000  # three agents of ~2 KB each: the column that dominates a row
    first = [_record(i, DOMAINS[i % len(DOMAINS)], payload, missing="") for i in range(2500)]
    cs.promote(root, S3, to_arrow(first), [], run_id="r1")
    # a second version: changed rows in one domain, new rows, removed rows (several files)
    again = [_record(i, "chart", payload, "r2", "") for i in range(3, 2500, 7)]
    again += [_record(i, DOMAINS[i % len(DOMAINS)], payload, "r2", "") for i in range(2500, 3000)]
    removed = [f"{i:064x}" for i in range(0, 400, 7)]
    version = cs.promote(root, S3, to_arrow(again), removed, run_id="r2").version

    reads: list[Any] = []
    fetched: list[list[str]] = []
    summaries: list[Summary] = []
    real_read, real_rows, real_summarize = cs.read_version, tasks.report.version_rows, summarize

    def read_spy(*args: Any, **kwargs: Any) -> Any:
        reads.append(kwargs.get("columns", args[3] if len(args) > 3 else None))
        return real_read(*args, **kwargs)

    def rows_spy(root: str, s3: S3Config, version: int, ids: list[str], **kw: Any) -> Any:
        fetched.append(list(ids))
        return real_rows(root, s3, version, ids, **kw)

    def summarize_spy(data: ReportData, *args: Any, **kwargs: Any) -> Summary:
        summaries.append(real_summarize(data, *args, **kwargs))
        return summaries[-1]

    monkeypatch.setattr(cs, "read_version", read_spy)
    monkeypatch.setattr(tasks.report, "version_rows", rows_spy)
    monkeypatch.setattr(quality.report, "summarize", summarize_spy)
    uri = rebuild_report(load_config("configs/tiny.yaml"), root)

    assert uri.endswith(f"reports/{version}/report.html")
    assert reads and all(cols is not None and "agents" not in cols for cols in reads), reads
    assert len(fetched) == 1 and 0 < len(fetched[0]) <= 3 * len(set(DOMAINS))
    full = real_read(root, S3, version)
    assert full.num_rows == 3000 - len(removed)
    want = _reference(full, [])
    assert summaries and all(len(v) == 3 for v in want.samples.values())
    _assert_same(summaries[0], want)
    with open(uri, encoding="utf-8") as f:
        html = f.read()
    for sample in want.samples["chart"]:
        assert sample["asset_id"] in html and sample["agents"][0]["text"][:40] in html
