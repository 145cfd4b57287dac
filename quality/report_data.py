"""The inputs of the per-version HTML report and the summaries computed from them.

Everything here is plain data crunching (no plotting, no HTML), so the figures shown in the
report can be checked without rendering it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

UNROUTED = "(unrouted)"


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
        records: caption rows with ``capflow_core.records.SCHEMA``.
        rejects: rows of the ``rejects`` table.
        cost: ``{"captions", "tokens_prompt", "tokens_completion", "gpu_s", "cost_usd",
            "api_usd", "api_name"}``.
        diff: the change against the previous version, or None.
        config_hash: hash of the run's configuration.
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

    Args:
        data: the report inputs.
        samples_per_domain: how many records per domain to show in full (the first ones).

    Returns:
        The summary the plots and the template read.
    """
    records = data.records
    n = records.num_rows
    domains_col = [d or UNROUTED for d in _column(records, "domain", n)]
    captions = _column(records, "caption", n)
    accepted = _column(records, "accepted", n)
    modalities = _column(records, "modality", n)
    errors = _column(records, "errors", n)
    judges = _column(records, "judge", n)

    out = Summary()
    counted = Counter(domains_col)
    out.domains = sorted(counted, key=lambda d: (-counted[d], d))
    out.domain_counts = {d: counted[d] for d in out.domains}
    out.accepted = {d: 0 for d in out.domains}
    out.words = {d: [] for d in out.domains}
    first: dict[str, list[int]] = {d: [] for d in out.domains}
    for i, domain in enumerate(domains_col):
        if accepted[i]:
            out.accepted[domain] += 1
        if captions[i] is not None:
            out.words[domain].append(len(captions[i].split()))
        if len(first[domain]) < samples_per_domain:
            first[domain].append(i)
        scores = (judges[i] or {}).get("scores") or []
        for criterion, score in scores:
            out.judge.setdefault(criterion, Counter())[score] += 1

    by_modality = Counter(m or "unknown" for m in modalities)
    n_accepted = sum(1 for a in accepted if a)
    out.counts = {
        "records": n,
        "accepted": n_accepted,
        "not accepted": n - n_accepted,
        "with errors": sum(1 for e in errors if e),
        "domains": len(out.domains),
        **{f"{m} records": c for m, c in sorted(by_modality.items())},
        "rejects rows": len(data.rejects),
    }
    reasons = Counter((r.get("stage") or "", r.get("reason_code") or "") for r in data.rejects)
    out.rejects_by_reason = sorted(
        ((stage, code, c) for (stage, code), c in reasons.items()), key=lambda t: (-t[2], t[:2])
    )
    out.samples = _samples(records, first)
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


def _column(table: pa.Table, name: str, n: int) -> list[Any]:
    if name not in table.column_names:
        return [None] * n
    return table.column(name).to_pylist()


def _samples(records: pa.Table, first: dict[str, list[int]]) -> dict[str, list[dict[str, Any]]]:
    indices = [i for rows in first.values() for i in rows]
    if not indices:
        return {d: [] for d in first}
    rows = records.take(indices).to_pylist()
    by_index = dict(zip(indices, rows, strict=True))
    out: dict[str, list[dict[str, Any]]] = {}
    for domain, idx in first.items():
        out[domain] = []
        for i in idx:
            row = dict(by_index[i])
            judge = row.get("judge") or {}
            row["scores"] = dict(judge.get("scores") or [])
            row["errors"] = dict(row.get("errors") or [])
            row["agents"] = row.get("agents") or []
            out[domain].append(row)
    return out
