"""Takedown and VACUUM of the ``captions`` table: delete assets' rows in a new version, and
delete the data files old versions alone still reference (which ends their time travel).

A removal is one Delta DELETE commit (``capflow.operation`` ``remove``) whose predicate
starts with a literal filter of the partitions holding the matched rows, so only those are
rewritten. See the README's "Takedown and VACUUM policy".
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from capflow_core.captions_read import PARTITION_BY, open_captions
from capflow_core.captions_store import (
    PromoteResult,
    commit_metadata,
    partition_filter,
    partitions_of,
    sql_in,
)
from capflow_core.config import S3Config
from capflow_core.delta_store import retry_commit, scan_columns

DEFAULT_RETENTION_HOURS = 168  # Delta's default deletedFileRetentionDuration (one week)


def remove_assets(
    root: str,
    s3: S3Config,
    *,
    asset_ids: Iterable[str] = (),
    source_uris: Iterable[str] = (),
    reason: str = "takedown",
    run_id: str | None = None,
) -> PromoteResult:
    """Delete assets' rows (a takedown) in one DELETE commit, a new dataset version.

    Rows match by ``asset_id`` or ``source_uri``. No matching row: no commit, version None.
    The bytes stay readable in older versions' files until :func:`vacuum` deletes them.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import CommitProperties

    ids, uris = set(asset_ids), set(source_uris)
    if not (ids or uris):
        return PromoteResult(version=None)
    predicate = " OR ".join(
        sql_in(col, vals) for col, vals in (("asset_id", ids), ("source_uri", uris)) if vals
    )
    id_set, uri_set = pa.array(sorted(ids), pa.string()), pa.array(sorted(uris), pa.string())
    run_id = run_id or f"remove-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"

    def attempt() -> PromoteResult:
        table = open_captions(root, s3)
        if table is None:
            return PromoteResult(version=None)
        hits = []
        for b in scan_columns(table, ["asset_id", "source_uri", *PARTITION_BY]):
            hit = pc.or_(
                pc.is_in(b.column("asset_id"), value_set=id_set),
                pc.is_in(b.column("source_uri"), value_set=uri_set),
            )
            hits.append(pa.Table.from_batches([b.filter(hit)]))
        found = pa.concat_tables(hits) if hits else None
        result = PromoteResult(version=None, removed=found.num_rows if found else 0)
        if not result.removed:
            return result
        meta = commit_metadata(result, run_id=run_id, operation="remove", counts={"reason": reason})
        where = f"{partition_filter(partitions_of(found))} AND ({predicate})"
        table.delete(where, commit_properties=CommitProperties(custom_metadata=meta))
        result.version = table.version()
        return result

    return retry_commit(attempt)


def vacuum(
    root: str, s3: S3Config, retention_hours: int = DEFAULT_RETENTION_HOURS, dry_run: bool = True
) -> list[str]:
    """Files no longer referenced by versions younger than ``retention_hours``: listed only
    (``dry_run``) or deleted. Versions whose files are deleted can no longer be read.

    Delta refuses a retention below its one-week default unless told otherwise; an explicit
    shorter ``retention_hours`` (an urgent takedown) lifts that check.
    """
    table = open_captions(root, s3)
    if table is None:
        return []
    return table.vacuum(
        retention_hours=retention_hours,
        dry_run=dry_run,
        enforce_retention_duration=retention_hours >= DEFAULT_RETENTION_HOURS,
    )
