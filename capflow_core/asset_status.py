"""What preprocessing reads from and writes to the ``assets`` table.

Reads: the active assets (duplicate winners) and ``first_seen_run`` of a shard's objects,
and a run's listing counts for the reconciliation. Writes: one MERGE per shard setting each
object's ``status`` (``active`` | ``rejected``), ``asset_id``, sizes and ``phash``, retried
when it loses a commit race.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capflow_core.config import S3Config
from capflow_core.dedup import KnownAsset
from capflow_core.delta_store import open_assets, retry_commit, scan_columns
from capflow_core.prepare import PreparedItem, Rejection

_COLUMNS = ("asset_id", "status", "modality", "width", "height", "duration_s", "fps", "phash")


@dataclass(frozen=True)
class ListingCounts:
    """Objects a run's listing saw (``listed``) and those it handed on (``pending``)."""

    listed: int
    pending: int


def known_and_first_seen(
    root: str, s3: S3Config, uris: set[str]
) -> tuple[list[KnownAsset], dict[str, str]]:
    """Active assets with an id, and ``first_seen_run`` of the objects in ``uris``."""
    table = open_assets(root, s3)
    known: list[KnownAsset] = []
    first_seen: dict[str, str] = {}
    if table is None:
        return known, first_seen
    cols = ["asset_id", "source_uri", "phash", "status", "first_seen_run"]
    for batch in scan_columns(table, cols):
        for row in batch.to_pylist():
            if row["source_uri"] in uris and row["first_seen_run"]:
                first_seen[row["source_uri"]] = row["first_seen_run"]
            if row["status"] == "active" and row["asset_id"]:
                known.append(KnownAsset(row["asset_id"], row["source_uri"], row["phash"]))
    return known, first_seen


def listing_counts(root: str, s3: S3Config, run_id: str) -> ListingCounts:
    """Rows last seen by ``run_id``, and of those the ones it made pending.

    Valid until a later run lists the same sources (it moves ``last_seen_run`` on).
    """
    table = open_assets(root, s3)
    listed = pending = 0
    if table is not None:
        for batch in scan_columns(table, ["last_seen_run", "pending_run", "status"]):
            for row in batch.to_pylist():
                if row["last_seen_run"] == run_id and row["status"] != "removed":
                    listed += 1
                    pending += row["pending_run"] == run_id
    return ListingCounts(listed, pending)


def record_outcomes(
    root: str,
    s3: S3Config,
    run_id: str,
    items: list[PreparedItem],
    rejections: list[Rejection],
) -> None:
    """MERGE a shard's outcomes into ``assets`` (keyed on ``source_uri``)."""
    if not items and not rejections:
        return
    source = _source(items, rejections)
    updates = {c: f"s.{c}" for c in _COLUMNS} | {"modality": "coalesce(s.modality, t.modality)"}

    def attempt() -> None:
        from deltalake import CommitProperties

        open_assets(root, s3).merge(
            source,
            predicate="t.source_uri = s.source_uri",
            source_alias="s",
            target_alias="t",
            commit_properties=CommitProperties(custom_metadata={"capflow.run_id": run_id}),
        ).when_matched_update(updates).execute()

    retry_commit(attempt)


def _source(items: list[PreparedItem], rejections: list[Rejection]) -> Any:
    import pyarrow as pa

    from capflow_core.delta_store import assets_schema

    schema = assets_schema()
    fields = [schema.field("source_uri"), *(schema.field(c) for c in _COLUMNS)]
    rows: list[dict[str, Any]] = [
        {
            "source_uri": i.source_uri,
            "asset_id": i.asset_id,
            "status": "active",
            "modality": i.modality,
            "width": i.width,
            "height": i.height,
            "duration_s": i.duration_s,
            "fps": i.fps,
            "phash": i.phash,
        }
        for i in items
    ]
    for r in rejections:
        rows.append({"source_uri": r.source_uri, "asset_id": r.asset_id, "status": "rejected"})
    rows = [{f.name: row.get(f.name) for f in fields} for row in rows]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))
