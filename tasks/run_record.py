"""A refresh run's bookkeeping: which run id to use, and its reconciliation and cost.

``listed = prepared + rejected + unchanged`` (preprocess), and of what the plan handed to
the caption stage, ``to_caption = captioned + caption_failed + caption_rejected``; both are
stored in the ``runs`` table and shown in the report.
"""

from __future__ import annotations

from typing import Any

from capflow_core.config import S3Config

RESUMABLE = ("running", "failed")


def resumable_run(root: str, s3: S3Config) -> str | None:
    """The latest run that did not finish (killed or failed), to resume under its id."""
    from capflow_core.runs_store import read_runs

    runs = read_runs(root, s3)
    if runs and runs[-1].get("status") in RESUMABLE:
        return runs[-1]["run_id"]
    return None


def reconciliation(
    prep: dict[str, Any], plan: dict[str, Any], markers: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """One run's counts from preprocessing, the caption plan and the caption markers."""
    captioned = sum(m["captioned"] for m in markers.values())
    failed = sum(m["failed"] for m in markers.values())
    rejected = sum(m["rejected"] for m in markers.values())
    to_caption = plan.get("new", 0) + plan.get("recaption", 0) + plan.get("retry", 0)
    out = {k: prep.get(k, 0) for k in ("listed", "unchanged", "pending", "prepared", "rejected")}
    out |= {
        "reasons": prep.get("reasons", {}),
        "to_caption": to_caption,
        "recaption": plan.get("recaption", 0),
        "retry": plan.get("retry", 0),
        "captioned": captioned,
        "accepted": sum(m["accepted"] for m in markers.values()),
        "caption_failed": failed,
        "caption_rejected": rejected,
        "removed": len(plan.get("removed", [])),
        "missing_media": plan.get("missing_media", 0),
    }
    out["reconciled"] = bool(prep.get("reconciled", True)) and (
        to_caption == captioned + failed + rejected
    )
    return out


def cost_totals(markers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Tokens, GPU-seconds and dollars of a run's caption shards."""
    total = {k: 0 for k in ("tokens_prompt", "tokens_completion")}
    total |= {k: 0.0 for k in ("gpu_s", "cost_usd", "api_usd")}
    for m in markers.values():
        for key in total:
            total[key] += m.get(key, 0) or 0
    total["captions"] = sum(m["captioned"] for m in markers.values())
    return total
