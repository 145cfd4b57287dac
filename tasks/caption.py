"""Caption: run the engine over one shard of prepared items; stage the records.

A plain function: ``capflow refresh``'s Prefect task calls :func:`caption_shard`. Outputs go
to ``<root>/staging/<run_id>/captioned/<shard>.parquet`` (records with a caption, judge
accepted or not), written under a temporary name and renamed, then committed by
``<shard>._CAPTIONED`` (counts, tokens, cost). A shard with its marker is skipped on rerun.

Samples whose model calls failed stay pending (a ``caption_attempts`` row; the next run's
plan retries them) until they have used ``caption.retry_budget`` tries, then become
``rejects`` rows, as do samples whose prepared media cannot be decoded. When samples cannot
reach a model server (past the backend's retries), the shard fails (InfrastructureError)
after keeping the records that did complete as a partial (:mod:`tasks.caption_partial`):
the retried task, or the resumed run, captions only the rest. Failed tries are recorded
once, when the shard commits, so a partial never counts a try twice.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from capflow_core.config import Config, S3Config, config_hash
from capflow_core.errors import ItemError
from capflow_core.failpoints import failpoint
from capflow_core.storage import filesystem
from tasks.caption_partial import (
    add_costs,
    attempt_cost,
    keep_completed,
    read_kept,
    remove_partials,
    unreachable,
)
from tasks.caption_staged import (  # noqa: F401  (re-exported)
    MARKER,
    caption_markers,
    captioned_dir,
    staged_records,
)

_ENGINES: dict[str, Any] = {}  # one engine (loaded models) per config, per process


def shard_key(shard_uri: str) -> str:
    """``shard-00003`` / ``carry-00000`` from a prepared or carry-over shard URI."""
    return shard_uri.rsplit("/", 1)[-1].removesuffix(".parquet")


def engine_for(cfg: Config) -> Any:
    """The process's CapFlow engine for this config (models load once per process)."""
    from capflow_core.engine import CapFlow

    key = config_hash(cfg)
    if key not in _ENGINES:
        _ENGINES[key] = CapFlow(cfg)
    return _ENGINES[key]


def use_engine(cfg: Config, engine: Any) -> None:
    """Make ``engine`` the process's engine for this config (benchmarks, embedding apps)."""
    from tasks.captioner import effective_config

    _ENGINES[config_hash(effective_config(cfg))] = engine


def read_caption_marker(root: str, run_id: str, shard: str, s3: S3Config) -> dict | None:
    """A captioned shard's marker (its counts), or None when not captioned yet."""
    fs, folder = filesystem(captioned_dir(root, run_id), s3)
    try:
        return json.loads(fs.cat_file(f"{folder}/{shard}.{MARKER}"))
    except FileNotFoundError:
        return None


def caption_shard(
    cfg: Config,
    root: str,
    run_id: str,
    shard_uri: str,
    *,
    engine: Any = None,
    on_record: Any = None,
) -> dict[str, Any]:
    """Caption one prepared (or carry-over) shard and commit its staged records.

    ``engine`` defaults to this process's :func:`engine_for` the config.

    Returns:
        The shard's marker: ``captioned``, ``accepted``, ``failed`` (pending retry),
        ``rejected``, ``resumed`` (samples kept from earlier tries), ``tokens_prompt``,
        ``tokens_completion``, ``wall_s``, ``gpu_s``, ``cost_usd``, ``api_usd`` (summed
        over the tries whose samples it keeps).

    Raises:
        InfrastructureError: samples could not reach a model server; the completed ones are
            kept as a partial and a retry captions only the others.
    """
    from tasks.captioner import effective_config

    cfg = effective_config(cfg)  # captioner.model: a registered MetaCaptioner
    shard = shard_key(shard_uri)
    done = read_caption_marker(root, run_id, shard, cfg.s3)
    if done is not None:
        return done
    fs, folder = filesystem(captioned_dir(root, run_id), cfg.s3)
    kept = read_kept(fs, folder, shard)
    rows = [r for r in _read_shard(shard_uri, cfg.s3) if r["asset_id"] not in kept.asset_ids]
    samples, rejections = _samples(rows)
    engine = engine or engine_for(cfg)
    new = asyncio.run(engine.acaption(samples, run_id=run_id, on_record=on_record))
    spent = attempt_cost(engine.last_cost)
    if any(unreachable(r) for r in new):
        raise keep_completed(fs, folder, shard, run_id, kept, new, spent)
    records = kept.records + new
    good = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    given_up = _over_budget(cfg, root, run_id, failed)
    rejections += given_up
    _write_records(root, run_id, shard, good, cfg.s3)
    _store_outcomes(cfg, root, run_id, shard, failed, rejections)
    cost = add_costs(kept.cost, spent)
    marker = {
        "captioned": len(good),
        "accepted": sum(r.accepted for r in good),
        "failed": len(failed) - len(given_up),  # to retry in a later run
        "rejected": len(rejections),
        "resumed": len(kept.records),
        "tokens_prompt": sum(r.tokens.prompt for r in records),
        "tokens_completion": sum(r.tokens.completion for r in records),
        "wall_s": round(cost["wall_s"], 3),
        "gpu_s": round(cost["gpu_s"], 3),
        "cost_usd": cost["cost_usd"],
        "api_usd": cost["api_usd"],
    }
    fs.pipe(f"{folder}/{shard}.{MARKER}", json.dumps(marker, sort_keys=True).encode())
    remove_partials(fs, kept.paths)  # committed in the shard; ignored from here on anyway
    failpoint("after-captioned-shard")
    return marker


def _read_shard(uri: str, s3: S3Config) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    fs, path = filesystem(uri, s3)
    with fs.open(path, "rb") as f:
        return pq.read_table(f).to_pylist()


def _samples(rows: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
    from capflow_core.prepare import Rejection
    from capflow_core.prepared_media import sample_from_row
    from capflow_core.records import Route

    samples, rejections = [], []
    for row in rows:
        route = None
        if row.get("route_domain"):
            confidence, skipped = row["route_confidence"] or 0.0, row["route_skipped"]
            route = Route(row["route_domain"], confidence, True if skipped is None else skipped)
        try:
            samples.append(sample_from_row(row, route))
        except ItemError as err:
            rejections.append(
                Rejection(row["source_uri"], "corrupt", str(err), row["asset_id"], "caption")
            )
    return samples, rejections


def _over_budget(cfg: Config, root: str, run_id: str, failed: list[Any]) -> list[Any]:
    """Rejections for failed samples whose try in this run used up the retry budget."""
    from capflow_core.caption_attempts import attempt_counts
    from capflow_core.prepare import Rejection

    if not failed:
        return []
    tried = attempt_counts(root, cfg.s3, [r.asset_id for r in failed])
    out = []
    for r in failed:
        # this run's try is recorded with the shard; a redone shard must not count it twice
        used = tried.get(r.asset_id, 0) + 1
        if used >= cfg.caption.retry_budget:
            detail = f"failed {used} time(s) (retry_budget {cfg.caption.retry_budget}): "
            detail += "; ".join(f"{k}: {v}" for k, v in r.errors.items())
            code = r.failure()[1]  # stage stays "caption": the plan skips those given up
            out.append(Rejection(r.source_uri, code, detail, r.asset_id, "caption"))
    return out


def _write_records(root: str, run_id: str, shard: str, records: list[Any], s3: S3Config) -> None:
    import pyarrow.parquet as pq

    from capflow_core.records import to_arrow

    fs, folder = filesystem(captioned_dir(root, run_id), s3)
    fs.makedirs(folder, exist_ok=True)
    tmp = f"{folder}/{shard}.parquet.tmp-{uuid.uuid4().hex}"
    with fs.open(tmp, "wb") as f:
        pq.write_table(to_arrow(records), f)
    fs.mv(tmp, f"{folder}/{shard}.parquet")


def _store_outcomes(
    cfg: Config, root: str, run_id: str, shard: str, failed: list[Any], rejections: list[Any]
) -> None:
    from capflow_core.caption_attempts import record_failures
    from capflow_core.run_outcome import store_rejects

    rows = [
        {
            "asset_id": r.asset_id,
            "source_uri": r.source_uri,
            "stage": ",".join(sorted(r.errors)) or "caption",
            "error": "; ".join(f"{k}: {v}" for k, v in r.errors.items()) or "no caption",
        }
        for r in failed
    ]
    record_failures(root, cfg.s3, run_id, rows)
    store_rejects(root, cfg.s3, run_id, f"caption-{shard}", rejections)
