"""The ``capflow-refresh`` Prefect flow: ingest -> preprocess -> caption -> gate -> version
-> report (docs/architecture.md, "Orchestration").

Tasks exchange run ids and URIs, never bulk data; each wraps a plain function of ``tasks/``.
Parameters are a config path plus overrides (JSON), so a run is reproducible from its
parameters; credentials come from the environment and never appear in them. A killed or
failed run is resumed under its run id by the next refresh (completed shards are skipped).
A failing quality gate ends the run Failed, naming the failing expectations; its staged
records and report stay for ``capflow dataset promote RUN_ID``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.states import Failed
from prefect.tasks import exponential_backoff

from capflow_core.config import Config, config_from_dict, config_hash, deep_merge, load_config
from flows.refresh_outputs import emit_promoted, ensure_gpu_limit, publish_artifacts


def load(config: str | dict[str, Any] | None, overrides: dict[str, Any] | None) -> Config:
    """The run's config: a YAML path (None: the default rule) or an inline mapping (paths in
    it resolve against the working directory), with overrides merged; validated here."""
    if isinstance(config, dict):
        return config_from_dict(deep_merge(config, overrides or {}))
    return load_config(config, overrides or None)


@task(name="ingest", retries=2, retry_delay_seconds=[5, 30])
def ingest_sources(
    config: str | dict | None, overrides: dict | None, run_id: str
) -> dict[str, Any]:
    """List the sources and write manifests of new and changed objects."""
    from dataclasses import asdict

    from tasks.ingest import ingest

    return asdict(ingest(load(config, overrides), run_id=run_id))


@task(name="preprocess", retries=2, retry_delay_seconds=[5, 30])
def preprocess_shards(
    config: str | dict | None, overrides: dict | None, run_id: str
) -> dict[str, Any]:
    """Prepare the run's manifest shards on Dask (finished shards are skipped)."""
    from tasks.preprocess import preprocess

    result = preprocess(load(config, overrides), run_id=run_id)
    return result.counts()


@task(name="plan-captions")
def plan(config: str | dict | None, overrides: dict | None, run_id: str) -> dict[str, Any]:
    """Decide what to caption: new objects, stale captions, retries; and what to delete."""
    from tasks.caption_plan import plan_captions

    cfg = load(config, overrides)
    return plan_captions(cfg, cfg.storage.root, run_id).to_dict()


@task(name="caption-shard", retries=2, retry_delay_seconds=[10, 60])
def caption(config: str | dict | None, overrides: dict | None, run_id: str, shard: str) -> dict:
    """Caption one shard with the engine and stage its records (holding a `gpu` slot)."""
    from prefect.concurrency.sync import concurrency

    from tasks.caption import caption_shard

    cfg = load(config, overrides)
    limit, lease = cfg.orchestration.gpu_limit, cfg.orchestration.gpu_lease_s
    with concurrency(limit, occupy=1, strict=True, lease_duration=lease):
        return caption_shard(cfg, cfg.storage.root, run_id, shard)


@task(name="gate")
def gate(config: str | dict | None, overrides: dict | None, run_id: str) -> dict[str, Any]:
    """Validate the staged records against the caption contract."""
    from dataclasses import asdict

    from tasks.version import gate_run

    cfg = load(config, overrides)
    return asdict(gate_run(cfg, cfg.storage.root, run_id))


@task(name="version", retries=2, retry_delay_seconds=[2, 10])
def version(
    config: str | dict | None,
    overrides: dict | None,
    run_id: str,
    removed: list[str],
    flow_run_id: str | None,
    counts: dict,
) -> dict[str, Any]:
    """Promote the staged records and deletions as one dataset version."""
    from dataclasses import asdict

    from tasks.version import promote_run

    cfg = load(config, overrides)
    result = promote_run(
        cfg,
        cfg.storage.root,
        run_id,
        removed=removed,
        gate="passed",
        flow_run_id=flow_run_id,
        counts=counts,
    )
    return asdict(result)


@task(name="report")
def report(
    config: str | dict | None,
    overrides: dict | None,
    run_id: str,
    version_no: int | None,
    **parts: Any,
) -> str:
    """Write the HTML report of the version (or of the run, when it added none)."""
    from tasks.report import write_run_report

    cfg = load(config, overrides)
    return write_run_report(cfg, cfg.storage.root, run_id=run_id, version=version_no, **parts)


@flow(name="capflow-refresh", validate_parameters=True)
def capflow_refresh(
    config: str | dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    run_id: str | None = None,
    resume: bool = True,
) -> dict[str, Any] | Failed:
    """Refresh the caption dataset from the configured sources.

    Args:
        config: path of the config YAML (None: $CAPFLOW_CONFIG, else configs/tiny.yaml).
        overrides: nested config keys merged over the file (e.g. storage root, sources).
        run_id: the run id; None resumes the latest unfinished run, else starts a new one.
        resume: whether an unfinished run may be resumed.

    One refresh of a storage root at a time: a second one waits for the root's lock
    (``storage.lock_wait_s``), then fails with ``RootBusyError``.
    """
    from capflow_core.memory import release_memory
    from capflow_core.root_lock import root_lock

    cfg = load(config, overrides)
    wait, ttl = cfg.storage.lock_wait_s, cfg.storage.lock_ttl_s
    try:
        with root_lock(cfg.storage.root, cfg.s3, wait, ttl, notify=get_run_logger().info):
            return _refresh(config, overrides, run_id, resume)
    finally:  # a long-lived runner's next run starts from a low baseline
        release_memory()


def _refresh(
    config: str | dict[str, Any] | None,
    overrides: dict[str, Any] | None,
    run_id: str | None,
    resume: bool,
) -> dict[str, Any] | Failed:
    """The refresh flow's body, run while holding the storage root's lock."""
    from prefect.runtime import flow_run

    from capflow_core.run_outcome import read_rejects
    from capflow_core.runs_store import record_run
    from tasks.caption import caption_markers
    from tasks.ingest import new_run_id
    from tasks.run_record import cost_totals, reconciliation, resumable_run

    log = get_run_logger()
    cfg = load(config, overrides)
    root, s3 = cfg.storage.root, cfg.s3
    run_id = run_id or (resume and resumable_run(root, s3)) or new_run_id()
    flow_run_id = str(flow_run.id) if flow_run.id else None
    started = datetime.now(UTC).isoformat(timespec="seconds")
    record_run(
        root,
        s3,
        run_id,
        flow_run_id=flow_run_id,
        status="running",
        started_at=started,
        config_hash=config_hash(cfg),
    )
    log.info("run %s: root %s", run_id, root)
    try:
        listed = ingest_sources(config, overrides, run_id)
        log.info(
            "ingest: %s new, %s changed, %s unchanged, %s removed",
            listed["new"],
            listed["changed"],
            listed["unchanged"],
            listed["removed"],
        )
        prep = preprocess_shards(config, overrides, run_id)
        todo = plan(config, overrides, run_id)
        log.info(
            "plan: %s new, %s re-caption, %s retry, %s removed, %s shard(s)",
            todo["new"],
            todo["recaption"],
            todo["retry"],
            len(todo["removed"]),
            len(todo["shards"]),
        )
        if todo["shards"]:
            ensure_gpu_limit(cfg.orchestration.gpu_limit, cfg.orchestration.gpu_slots)
        shard_task = caption.with_options(
            retries=cfg.orchestration.shard_retries,
            retry_delay_seconds=exponential_backoff(cfg.orchestration.retry_delay_s),
        )
        for i, shard in enumerate(todo["shards"], 1):
            marker = shard_task(config, overrides, run_id, shard)
            log.info(
                "caption %d/%d: %s captioned, %s accepted, %s failed",
                i,
                len(todo["shards"]),
                marker["captioned"],
                marker["accepted"],
                marker["failed"],
            )
        markers = caption_markers(root, run_id, s3)
        recon = reconciliation(prep, todo, markers)
        cost = cost_totals(markers)
        verdict = gate(config, overrides, run_id)
        counts = recon | {
            "gate_evaluated": verdict["result"].get("evaluated", 0),
            "gate_successful": verdict["result"].get("successful", 0),
            "data_docs": verdict["result"].get("data_docs"),
        }
    except Exception:
        record_run(
            root,
            s3,
            run_id,
            status="failed",
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        raise
    gate_label = "skipped" if verdict["skipped"] else "passed" if verdict["passed"] else "failed"
    promoted: dict[str, Any] = {"version": None}
    if verdict["passed"]:
        promoted = version(config, overrides, run_id, todo["removed"], flow_run_id, counts)
    number = promoted["version"]
    gate_view = {**verdict["result"], "passed": verdict["passed"], "label": gate_label}
    where = report(
        config, overrides, run_id, number, gate=gate_view, reconciliation=recon, cost=cost
    )
    status = (
        "promoted"
        if number is not None
        else "gate_failed"
        if not verdict["passed"]
        else ("no_change")
    )
    record_run(
        root,
        s3,
        run_id,
        status=status,
        gate=gate_label,
        dataset_version=number,
        failing=verdict["result"].get("failing", []),
        counts=counts,
        reconciliation=recon,
        report_uri=where,
        **cost_fields(cost),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    summary = {
        "run_id": run_id,
        "status": status,
        "version": number,
        "gate": gate_label,
        "report": where,
        "reconciliation": recon,
        "cost": cost,
    }
    publish_artifacts(
        summary | {"gate_detail": verdict["result"]},
        read_rejects(root, s3, run_id),
        cfg.cost.api.name,
    )
    if number is not None:
        summary["new_accepted"] = emit_promoted(cfg, root, number, run_id)
    if not verdict["passed"]:
        log.error("%s", verdict["summary"])
        return Failed(
            message=f"quality gate failed for run {run_id}: {verdict['summary']}\n"
            f"staged records and the report ({where}) are kept; after review run "
            f"`capflow dataset promote {run_id}`",
            data=summary,
        )
    log.info("run %s: %s, version %s, report %s", run_id, status, number, where)
    return summary


def cost_fields(cost: dict[str, Any]) -> dict[str, Any]:
    """The ``runs`` columns of a run's cost totals."""
    keys = ("tokens_prompt", "tokens_completion", "gpu_s", "cost_usd", "api_usd")
    return {k: cost[k] for k in keys}


if __name__ == "__main__":
    capflow_refresh()
