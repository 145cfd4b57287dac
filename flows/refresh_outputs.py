"""What a refresh run publishes: the `gpu` concurrency limit it runs under, its artifacts,
and the ``capflow.dataset.promoted`` event that triggers fine-tuning."""

from __future__ import annotations

from typing import Any

from capflow_core.config import Config

PROMOTED = "capflow.dataset.promoted"


def ensure_gpu_limit(name: str, slots: int) -> None:
    """Create the global concurrency limit ``name`` (default `gpu`) with ``slots`` unless it
    exists (an operator may have resized it in the UI: an existing limit is left as it is)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=slots)
            )


def new_accepted_since_last_model(cfg: Config, root: str, version: int) -> int:
    """Accepted captions in ``version`` that the newest ready model was not trained on."""
    from capflow_core.captions_store import read_version
    from capflow_core.models_store import last_model_version

    trained_on = last_model_version(root, cfg.s3, "metacaptioner")
    now = read_version(root, cfg.s3, version, ["caption_id", "accepted"]).to_pylist()
    seen: set[str] = set()
    if trained_on is not None:
        old = read_version(root, cfg.s3, trained_on, ["caption_id"]).column("caption_id")
        seen = set(old.to_pylist())
    return sum(1 for r in now if r["accepted"] and r["caption_id"] not in seen)


def emit_promoted(cfg: Config, root: str, version: int, run_id: str) -> int | None:
    """Emit ``capflow.dataset.promoted`` when enough new accepted captions await training.

    Returns the count of new accepted captions when the event was emitted, else None.
    """
    from prefect.events import emit_event

    new = new_accepted_since_last_model(cfg, root, version)
    if new < cfg.finetune.min_new_samples:
        return None
    emit_event(
        event=PROMOTED,
        resource={"prefect.resource.id": f"capflow.dataset.{root}", "capflow.root": root},
        payload={"version": version, "run_id": run_id, "new_accepted": new},
    )
    return new


def publish_artifacts(summary: dict[str, Any], rejects: list[dict[str, Any]], api: str) -> None:
    """The run's markdown summary, its rejects by reason (a table) and a report link."""
    from prefect.artifacts import (
        create_link_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )

    create_markdown_artifact(
        markdown=summary_markdown(summary, api),
        key="capflow-refresh-summary",
        description=f"run {summary['run_id']}: {summary['status']}",
    )
    counts: dict[tuple[str, str], int] = {}
    for r in rejects:
        key = (r.get("stage") or "", r.get("reason_code") or "")
        counts[key] = counts.get(key, 0) + 1
    table = [{"stage": s, "reason": c, "count": n} for (s, c), n in sorted(counts.items())]
    create_table_artifact(
        table=table or [{"stage": "-", "reason": "none", "count": 0}],
        key="capflow-refresh-rejects",
        description="rejects of this run by stage and reason code",
    )
    report = summary.get("report") or ""
    link = report if "://" in report else f"file://{report}"
    create_link_artifact(link=link, link_text="HTML report", key="capflow-refresh-report")


def summary_markdown(summary: dict[str, Any], api: str) -> str:
    """A run summary a person reads in the Prefect UI."""
    recon, cost, gate = summary["reconciliation"], summary["cost"], summary.get("gate_detail", {})
    captions = max(cost.get("captions", 0), 1)
    lines = [
        f"# capflow-refresh {summary['run_id']}: {summary['status']}",
        "",
        f"- dataset version: **{summary['version']}**; gate: **{summary['gate']}**",
        f"- reconciled: {recon.get('reconciled')}",
        f"- tokens: {cost.get('tokens_prompt', 0):,} prompt + "
        f"{cost.get('tokens_completion', 0):,} completion; GPU-seconds {cost.get('gpu_s', 0):.1f}",
        f"- cost per 100 captions: ${100 * cost.get('cost_usd', 0) / captions:.4f} "
        f"(same tokens at {api} prices: ${100 * cost.get('api_usd', 0) / captions:.4f})",
        "",
        "| count | n |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in recon.items() if isinstance(v, int | bool)),
    ]
    failing = gate.get("failing") or []
    if failing:
        lines += ["", "## Failing expectations", ""]
        for f in failing:
            examples = ", ".join(str(e.get("asset_id", ""))[:12] for e in f.get("examples", []))
            lines.append(f"- `{f.get('expectation')}` {f.get('column') or ''}: {examples}")
    return "\n".join(lines)
