"""What a run captions (docs/architecture.md, "What gets captioned").

1. This run's prepared shards: new and changed source objects.
2. Carry-over: known active assets whose caption is stale — the stored domain's current
   fingerprint differs from the caption's (a prompt or model change re-captions only that
   domain, re-using the stored route) — or that have no caption yet (a failed model call,
   a killed run, a gate that failed), unless they used up ``caption.retry_budget`` tries
   or were rejected at the caption stage. Their prepared rows are looked up in the run
   that prepared them and written as ``staging/<run_id>/carryover/carry-NNNNN.parquet``.
3. Removed: caption rows whose asset is no longer active (gone from the source, changed
   content, rejected); the version deletes them.

The plan is written once per run (``carryover/_PLANNED``); a resumed run re-reads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from capflow_core.config import Config, S3Config
from capflow_core.storage import filesystem, join_under

PLANNED = "_PLANNED"


@dataclass
class CaptionPlan:
    """The shards to caption and why (``removed``: asset ids whose rows go)."""

    run_id: str
    shards: list[str] = field(default_factory=list)
    new: int = 0
    recaption: int = 0
    retry: int = 0
    missing_media: int = 0  # stale or waiting assets whose media could not be found
    removed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def carryover_dir(root: str, run_id: str) -> str:
    """``<root>/staging/<run_id>/carryover``."""
    return join_under(root, "staging", run_id, "carryover")


def plan_captions(
    cfg: Config, root: str, run_id: str, shard_size: int | None = None
) -> CaptionPlan:
    """Decide what ``run_id`` captions; write carry-over shards; idempotent per run."""
    from capflow_core.prepared_media import prepared_shards
    from tasks.captioner import effective_config

    fs, folder = filesystem(carryover_dir(root, run_id), cfg.s3)
    try:
        return CaptionPlan(**json.loads(fs.cat_file(f"{folder}/{PLANNED}")))
    except FileNotFoundError:
        pass
    own, own_ids = _nonempty_shards(prepared_shards(root, run_id, cfg.s3), cfg.s3)
    active = _active_assets(root, cfg.s3)
    current = _current(root, cfg.s3)
    stale = _stale(effective_config(cfg), current, active, own_ids)
    waiting = _uncaptioned(cfg, root, current, active, own_ids)
    rows = list(_carry_rows(cfg, root, {**waiting, **stale}, active, current))
    plan = CaptionPlan(
        run_id=run_id,
        new=len(own_ids),
        recaption=sum(1 for r in rows if r["asset_id"] in stale),
        retry=sum(1 for r in rows if r["asset_id"] in waiting),
        missing_media=len(stale) + len(waiting) - len(rows),
        removed=sorted(set(current) - set(active)),
    )
    size = cfg.ingest.shard_size
    carry = [
        _write_carry(root, run_id, i, rows[s : s + size], cfg.s3)
        for i, s in enumerate(range(0, len(rows), size))
    ]
    plan.shards = own + carry
    fs.makedirs(folder, exist_ok=True)
    fs.pipe(f"{folder}/{PLANNED}", json.dumps(plan.to_dict(), sort_keys=True).encode())
    return plan


def _nonempty_shards(shards: list[str], s3: S3Config) -> tuple[list[str], set[str]]:
    """The shards with something to caption (all rejected: nothing), and their asset ids."""
    import pyarrow.parquet as pq

    keep, ids = [], set()
    for uri in shards:
        fs, path = filesystem(uri, s3)
        with fs.open(path, "rb") as f:
            found = pq.read_table(f, columns=["asset_id"]).column("asset_id").to_pylist()
        if found:
            keep.append(uri)
            ids.update(found)
    return keep, ids


def _active_assets(root: str, s3: S3Config) -> dict[str, dict[str, Any]]:
    """Active assets by id: source_uri, modality, pending_run (where their prepared row is)."""
    from capflow_core.delta_store import open_assets, scan_columns

    table = open_assets(root, s3)
    out: dict[str, dict[str, Any]] = {}
    if table is None:
        return out
    cols = ["asset_id", "source_uri", "status", "modality", "pending_run", "license", "provenance"]
    for batch in scan_columns(table, cols):
        for row in batch.to_pylist():
            if row["status"] == "active" and row["asset_id"]:
                out[row["asset_id"]] = row
    return out


def carryover_counts(cfg: Config, root: str) -> dict[str, int]:
    """What a run would caption or delete besides new objects, without writing anything:
    ``stale`` captions, assets to ``retry``, caption rows to ``remove``."""
    from tasks.captioner import effective_config

    active, current = _active_assets(root, cfg.s3), _current(root, cfg.s3)
    return {
        "stale": len(_stale(effective_config(cfg), current, active, set())),
        "retry": len(_uncaptioned(cfg, root, current, active, set())),
        "remove": len(set(current) - set(active)),
    }


def active_asset_ids(root: str, s3: S3Config) -> set[str]:
    """Ids of the assets that are active now (what the dataset may hold)."""
    return set(_active_assets(root, s3))


def removed_asset_ids(root: str, s3: S3Config) -> list[str]:
    """Caption rows whose asset is no longer active (the next version deletes them)."""
    return sorted(set(_current(root, s3)) - set(_active_assets(root, s3)))


def _current(root: str, s3: S3Config) -> dict[str, dict[str, Any]]:
    from capflow_core.captions_store import current_captions

    return {r["asset_id"]: r for r in current_captions(root, s3).to_pylist()}


def _fingerprints(cfg: Config) -> Any:
    """``fingerprint(domain, modality)`` under the current config and registry."""
    from functools import cache

    from capflow_core.fingerprint import domain_fingerprint, single_fingerprint
    from capflow_core.registry import load_registry

    registry = load_registry(cfg.registry)

    @cache
    def fingerprint(domain: str | None, modality: str) -> str | None:
        if cfg.captioner.mode == "single":
            return single_fingerprint(registry, cfg, modality == "video")
        if domain not in registry.domains:
            return None  # a domain the registry no longer has: caption it again, routed anew
        return domain_fingerprint(registry.domain(domain), registry, cfg)

    return fingerprint


def _stale(
    cfg: Config, current: dict[str, dict], active: dict[str, dict], own: set[str]
) -> dict[str, dict[str, Any] | None]:
    """Captioned active assets whose caption's fingerprint is out of date -> stored route."""
    from capflow_core.registry import load_registry

    fingerprint, known = _fingerprints(cfg), set(load_registry(cfg.registry).domains)
    out: dict[str, dict[str, Any] | None] = {}
    for asset_id, row in current.items():
        if asset_id in own or asset_id not in active:
            continue
        if row["fingerprint"] != fingerprint(row["domain"], active[asset_id]["modality"]):
            out[asset_id] = row["route"] if row["domain"] in known else None
    return out


def _uncaptioned(
    cfg: Config, root: str, current: dict, active: dict, own: set[str]
) -> dict[str, None]:
    """Active assets without a caption row that may still be tried."""
    from capflow_core.caption_attempts import attempt_counts
    from capflow_core.run_outcome import read_rejects

    waiting = set(active) - set(current) - own
    if not waiting:
        return {}
    given_up = {r["asset_id"] for r in read_rejects(root, cfg.s3) if r["stage"] == "caption"}
    tried = attempt_counts(root, cfg.s3, waiting)
    budget = cfg.caption.retry_budget
    return {a: None for a in sorted(waiting - given_up) if tried.get(a, 0) < budget}


def _carry_rows(
    cfg: Config, root: str, wanted: dict[str, dict | None], active: dict, current: dict
) -> Any:
    from capflow_core.prepared_media import find_prepared

    where = {a: active[a]["pending_run"] for a in wanted if active[a].get("pending_run")}
    found = set()
    for row in find_prepared(root, cfg.s3, where):
        found.add(row["asset_id"])
        yield _with_route(row, wanted[row["asset_id"]])
    for asset_id in sorted(set(wanted) - found):  # staging cleaned up: prepare it again
        row = _prepare_again(cfg, active[asset_id])
        if row is not None and row["asset_id"] == asset_id:
            yield _with_route(row, wanted[asset_id])


def _with_route(row: dict[str, Any], route: dict[str, Any] | None) -> dict[str, Any]:
    row["route_domain"] = route["domain"] if route else None
    row["route_confidence"] = route["confidence"] if route else None
    row["route_skipped"] = route["skipped"] if route else None
    return row


def _prepare_again(cfg: Config, asset: dict[str, Any]) -> dict[str, Any] | None:
    """The prepared row of an asset whose staged row is gone, read from its source again."""
    from dataclasses import asdict

    from capflow_core.prepare import PreparedItem, prepare_item

    keys = ("source_uri", "license", "provenance")
    item = prepare_item({k: asset.get(k) for k in keys}, cfg)
    return asdict(item) if isinstance(item, PreparedItem) else None


def _write_carry(root: str, run_id: str, index: int, rows: list[dict], s3: S3Config) -> str:
    import uuid

    import pyarrow as pa
    import pyarrow.parquet as pq

    from capflow_core.prepared_shards import prepared_schema

    schema = prepared_schema().append(pa.field("route_domain", pa.string()))
    schema = schema.append(pa.field("route_confidence", pa.float64()))
    schema = schema.append(pa.field("route_skipped", pa.bool_()))
    table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema)
    uri = f"{carryover_dir(root, run_id)}/carry-{index:05d}.parquet"
    fs, path = filesystem(uri, s3)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with fs.open(tmp, "wb") as f:
        pq.write_table(table, f)
    fs.mv(tmp, path)
    return uri
