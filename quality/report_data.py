"""The inputs of the per-version HTML report and the summaries computed from them.

Everything here is plain data crunching (no plotting, no HTML), so the figures shown in the
report can be checked without rendering it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import pyarrow as pa

UNROUTED = "(unrouted)"
SUMMARY_COLUMNS = ("asset_id", "domain", "modality", "caption", "accepted", "judge", "errors")
"""The columns :func:`summarize` reads; the others are needed only for the sample rows."""


@dataclass
class ReportData:
    """What one report shows: a promoted dataset version, or a run that did not promote.

    Attributes:
        title: heading, e.g. ``"CapFlow dataset v3"``.
        version: the dataset version; None for a run that added no version.
        run_id: the run that produced the records.
        created_at: ISO time of the run or version.
        gate: ``{"passed", "evaluated", "successful", "failing": [...], "data_docs"}``.
        reconciliation: the run's int-valued counts, plus ``"reasons": {code: n}``.
        records: caption rows with ``capflow_core.records.SCHEMA``'s columns, or only
            :data:`SUMMARY_COLUMNS` of them when ``sample_rows`` is given.
        rejects: rows of the ``rejects`` table.
        cost: ``{"captions", "tokens_prompt", "tokens_completion", "gpu_s", "cost_usd",
            "api_usd", "api_name"}``.
        diff: the change against the previous version, or None.
        config_hash: hash of the run's configuration.
        sample_rows: given asset ids, their full rows (``records.SCHEMA``); set when
            ``records`` holds only :data:`SUMMARY_COLUMNS`, so that only the sample rows are
            read whole. None: the samples are taken from ``records``.
    """

    title: str
    version: int | None
    run_id: str
    created_at: str
    gate: dict
    reconciliation: dict
    records: pa.Table
    rejects: list[dict]
    cost: dict
    diff: dict | None
    config_hash: str = ""
    sample_rows: Callable[[list[str]], pa.Table] | None = None


@dataclass
class Summary:
    """Per-domain figures of a report's records, domains ordered by count (largest first)."""

    domains: list[str] = field(default_factory=list)
    domain_counts: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    words: dict[str, list[int]] = field(default_factory=dict)
    judge: dict[str, Counter] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    rejects_by_reason: list[tuple[str, str, int]] = field(default_factory=list)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def accept_rate(self, domain: str) -> float:
        """Share of the domain's records that the judge accepted (0.0 when none)."""
        total = self.domain_counts.get(domain, 0)
        return self.accepted.get(domain, 0) / total if total else 0.0


def summarize(data: ReportData, samples_per_domain: int = 3) -> Summary:
    """Counts, caption lengths, judge scores, rejects and samples of a report's data.

    The figures are computed on Arrow arrays of :data:`SUMMARY_COLUMNS` (memory of a few
    columns, whatever the number of rows); only the sample rows become Python objects.

    Args:
        data: the report inputs.
        samples_per_domain: how many records per domain to show in full (the first ones).

    Returns:
        The summary the plots and the template read.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    records = data.records
    n = records.num_rows
    domains = _or(_column(records, "domain"), UNROUTED)
    accepted = pc.fill_null(_column(records, "accepted"), False)
    words = _word_counts(_column(records, "caption"))
    per_domain = (
        pa.table({"d": domains, "a": pc.cast(accepted, pa.int64())})
        .group_by("d", use_threads=False)
        .aggregate([("a", "sum"), ("a", "count")])
        .to_pydict()
    )
    counted = dict(zip(per_domain["d"], per_domain["a_count"], strict=True))

    out = Summary()
    out.domains = sorted(counted, key=lambda d: (-counted[d], d))
    out.domain_counts = {d: counted[d] for d in out.domains}
    n_accepted = dict(zip(per_domain["d"], per_domain["a_sum"], strict=True))
    out.accepted = {d: n_accepted[d] for d in out.domains}
    first: dict[str, list[int]] = {}
    for d in out.domains:
        mine = pc.equal(domains, d)
        out.words[d] = pc.filter(words, pc.and_(mine, pc.is_valid(words))).to_pylist()
        first[d] = pc.indices_nonzero(mine).slice(0, samples_per_domain).to_pylist()
    out.judge = _judge_counts(_column(records, "judge"))

    modalities = _or(_column(records, "modality"), "unknown").value_counts().to_pylist()
    by_modality = {m["values"]: m["counts"] for m in modalities}
    n_errors = pc.fill_null(pc.list_value_length(_entries(_column(records, "errors"))), 0)
    total_accepted = sum(out.accepted.values())
    out.counts = {
        "records": n,
        "accepted": total_accepted,
        "not accepted": n - total_accepted,
        "with errors": pc.sum(pc.greater(n_errors, 0)).as_py() or 0,
        "domains": len(out.domains),
        **{f"{m} records": c for m, c in sorted(by_modality.items())},
        "rejects rows": len(data.rejects),
    }
    reasons = Counter((r.get("stage") or "", r.get("reason_code") or "") for r in data.rejects)
    out.rejects_by_reason = sorted(
        ((stage, code, c) for (stage, code), c in reasons.items()), key=lambda t: (-t[2], t[:2])
    )
    out.samples = _samples(data, first)
    return out


def cost_per_100(cost: dict) -> dict[str, Any]:
    """Tokens and dollars per 100 captions, the API price for the same tokens, the saving.

    Values are None where the run captioned nothing (or the API price is unknown).
    """
    captions = int(cost.get("captions") or 0)

    def per100(key: str) -> float | None:
        return float(cost.get(key) or 0) * 100 / captions if captions else None

    ours, api = per100("cost_usd"), per100("api_usd")
    saving = (1 - ours / api) * 100 if ours is not None and api else None
    return {
        "captions": captions,
        "api_name": str(cost.get("api_name") or "API"),
        "tokens_prompt": per100("tokens_prompt"),
        "tokens_completion": per100("tokens_completion"),
        "gpu_s": per100("gpu_s"),
        "cost_usd": ours,
        "api_usd": api,
        "saving_pct": saving,
    }


def reconciliation_rows(reconciliation: dict) -> tuple[list[tuple[str, Any]], list[tuple]]:
    """``(counts, reasons)``: every numeric entry in the given order, and the reason codes."""
    counts = [
        (key, value)
        for key, value in reconciliation.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    ]
    reasons = reconciliation.get("reasons") or {}
    return counts, sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))


def _column(table: pa.Table, name: str) -> pa.ChunkedArray:
    """A column of ``table``, or nulls of the record schema's type when it lacks it."""
    import pyarrow as pa

    from capflow_core.records import SCHEMA

    if name in table.column_names:
        return table.column(name)
    return pa.chunked_array([pa.nulls(table.num_rows, SCHEMA.field(name).type)])


def _entries(maps: pa.ChunkedArray) -> pa.ChunkedArray:
    """A map column as ``list<struct<key, value>>`` (list kernels do not take maps)."""
    import pyarrow as pa

    entry = pa.struct([("key", maps.type.key_type), ("value", maps.type.item_type)])
    return maps.cast(pa.list_(entry))


def _word_counts(captions: pa.ChunkedArray) -> pa.ChunkedArray:
    """``len(caption.split())`` per row, null for none (Arrow's whitespace is Python's)."""
    import pyarrow.compute as pc

    trimmed = pc.utf8_trim_whitespace(captions)
    parts = pc.list_value_length(pc.utf8_split_whitespace(trimmed))
    return pc.if_else(pc.equal(trimmed, ""), 0, parts)


def _or(values: pa.ChunkedArray, default: str) -> pa.ChunkedArray:
    """``value or default`` per row."""
    import pyarrow.compute as pc

    return pc.if_else(pc.fill_null(pc.not_equal(values, ""), False), values, default)


def _judge_counts(judge: pa.ChunkedArray) -> dict[str, Counter]:
    """``{criterion: Counter({score: n})}`` over every row's judge scores."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pairs = pc.list_flatten(_entries(pc.struct_field(judge, "scores")))
    grouped = (
        pa.table({"c": pc.struct_field(pairs, "key"), "s": pc.struct_field(pairs, "value")})
        .group_by(["c", "s"], use_threads=False)
        .aggregate([([], "count_all")])
        .to_pydict()
    )
    out: dict[str, Counter] = {}
    for criterion, score, n in zip(grouped["c"], grouped["s"], grouped["count_all"], strict=True):
        out.setdefault(criterion, Counter())[score] = n
    return out


def _samples(data: ReportData, first: dict[str, list[int]]) -> dict[str, list[dict[str, Any]]]:
    """The rows at ``first``'s indices as dicts (read whole by ``data.sample_rows`` if set)."""
    import pyarrow.compute as pc

    indices = [i for rows in first.values() for i in rows]
    if not indices:
        return {d: [] for d in first}
    if data.sample_rows is None:
        rows = data.records.take(indices).to_pylist()
    else:
        ids = data.records.column("asset_id").take(indices)
        full = data.sample_rows(ids.to_pylist())
        at = pc.index_in(ids, value_set=full.column("asset_id").combine_chunks())
        rows = full.take(at).to_pylist()
    by_index = dict(zip(indices, rows, strict=True))
    return {d: [_shown(by_index[i]) for i in idx] for d, idx in first.items()}


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    scores = (row.get("judge") or {}).get("scores")
    errors, agents = dict(row.get("errors") or []), row.get("agents") or []
    return {**row, "scores": dict(scores or []), "errors": errors, "agents": agents}
