"""The ``captions`` Delta table: THE dataset (ARCHITECTURE.md §3), one row per asset.

A run that passes the gate lands as ONE MERGE commit keyed on ``asset_id`` (upserts of
its staged rows and deletes of removed assets together), and that commit's Delta version
is the dataset version; its commit metadata (``capflow.*`` keys) carries the run id,
flow-run id, counts, gate result and config hash. Staged rows whose ``caption_id`` equals
the stored one are dropped before the MERGE, so re-running the same inputs adds no version
and a prompt change in one domain rewrites only that domain's rows. Older captions stay
readable by time travel until :func:`vacuum` deletes the unreferenced files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from capflow_core.config import S3Config
from capflow_core.delta_store import open_table, retry_commit, scan_columns, table_uri
from capflow_core.errors import ConfigError

NAME = "captions"
PLANNER_COLUMNS = ("asset_id", "caption_id", "domain", "fingerprint", "route", "mode", "run_id")
DEFAULT_RETENTION_HOURS = 168  # Delta's default deletedFileRetentionDuration (one week)


def _schema() -> Any:
    from capflow_core.records import SCHEMA

    return SCHEMA


def open_captions(root: str, s3: S3Config, create: bool = False) -> Any:
    """The ``captions`` DeltaTable, or None when it does not exist and ``create`` is False."""
    return open_table(root, s3, NAME, _schema, create)


@dataclass
class PromoteResult:
    """What one promote / removal did; ``version`` is None when nothing was committed."""

    version: int | None
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0


@dataclass
class VersionInfo:
    """One dataset version: a commit of the ``captions`` table made by capflow."""

    version: int
    timestamp: str
    operation: str
    run_id: str | None = None
    flow_run_id: str | None = None
    gate: str | None = None
    config_hash: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    rows: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metadata(result: PromoteResult, **meta: Any) -> dict[str, str]:
    counts = {k: getattr(result, k) for k in ("added", "changed", "removed", "unchanged")}
    counts |= meta.pop("counts", None) or {}
    out = {f"capflow.{k}": str(v) for k, v in meta.items() if v is not None}
    return out | {"capflow.counts": json.dumps(counts, sort_keys=True, default=str)}


def _dedup_last(staged: Any) -> Any:
    """Staged rows with one row per asset_id, the last one winning."""
    last = {a: i for i, a in enumerate(staged.column("asset_id").to_pylist())}
    return staged if len(last) == staged.num_rows else staged.take(sorted(last.values()))


def _stored_ids(table: Any, asset_ids: Any) -> Any:
    """(asset_id, caption_id) of the stored rows among ``asset_ids`` (one streamed pass)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = [
        b.filter(pc.is_in(b.column("asset_id"), value_set=asset_ids))
        for b in scan_columns(table, ["asset_id", "caption_id"])
    ]
    schema = pa.schema([("asset_id", pa.string()), ("caption_id", pa.string())])
    return pa.Table.from_batches([p for p in parts if p.num_rows], schema=schema)


def _plan(table: Any, staged: Any, removed: Any) -> tuple[Any, PromoteResult]:
    """The MERGE source (upserts then deletes, with ``_op``) and the counts it implies."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = staged.column("asset_id").combine_chunks()
    stored = _stored_ids(table, pa.concat_arrays([ids, removed]))
    keys = staged.select(["asset_id", "caption_id"]).rename_columns(["asset_id", "new_id"])
    both = keys.join(stored, "asset_id", join_type="inner")
    same = both.filter(pc.equal(both.column("new_id"), both.column("caption_id")))
    upserts = staged.filter(pc.invert(pc.is_in(ids, value_set=same.column("asset_id"))))
    gone = pc.filter(removed, pc.is_in(removed, value_set=stored.column("asset_id")))
    result = PromoteResult(
        version=None,
        added=staged.num_rows - both.num_rows,
        changed=both.num_rows - same.num_rows,
        removed=len(gone),
        unchanged=same.num_rows,
    )
    ops = pa.array(["upsert"] * upserts.num_rows + ["delete"] * len(gone), pa.string())
    deletes = pa.table(
        [gone if f.name == "asset_id" else pa.nulls(len(gone), f.type) for f in _schema()],
        schema=_schema(),
    )
    source = pa.concat_tables([upserts, deletes]).append_column("_op", ops)
    return source, result


def promote(
    root: str,
    s3: S3Config,
    staged: Any,
    removed_asset_ids: Iterable[str],
    *,
    run_id: str,
    flow_run_id: str | None = None,
    counts: dict[str, Any] | None = None,
    gate: str = "passed",
    config_hash: str = "",
    operation: str = "promote",
) -> PromoteResult:
    """MERGE a run's staged records and removals into the dataset as one version.

    Args:
        root: the storage root.
        s3: S3 settings for an ``s3://`` root.
        staged: successful records (columns of ``records.SCHEMA``); the last row of a
            repeated ``asset_id`` wins.
        removed_asset_ids: assets whose rows are deleted in the same commit.
        run_id, flow_run_id, gate, config_hash, operation: commit metadata.
        counts: extra counts stored in ``capflow.counts`` next to added/changed/....

    Returns:
        The version made (None when nothing was added, changed or removed) and the counts.

    Raises:
        ValueError: a staged row has no caption, or an asset is both staged and removed.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import CommitProperties

    staged = _dedup_last(staged.select(_schema().names).cast(_schema()))
    if staged.column("caption").null_count:
        raise ValueError("staged rows without a caption cannot be promoted (stage only ok records)")
    removed = pa.array(sorted(set(removed_asset_ids)), pa.string())
    if pc.any(pc.is_in(removed, value_set=staged.column("asset_id"))).as_py():
        raise ValueError("an asset cannot be both staged and removed in one promote")

    def attempt() -> PromoteResult:
        table = open_captions(root, s3, create=True)
        source, result = _plan(table, staged, removed)
        if source.num_rows == 0:
            return result
        meta = dict(run_id=run_id, flow_run_id=flow_run_id, operation=operation, gate=gate)
        meta |= dict(config_hash=config_hash, counts=counts)
        cols = {c: f"s.{c}" for c in _schema().names}
        table.merge(
            source,
            predicate="t.asset_id = s.asset_id",
            source_alias="s",
            target_alias="t",
            commit_properties=CommitProperties(custom_metadata=_metadata(result, **meta)),
        ).when_matched_delete(predicate="s._op = 'delete'").when_matched_update(
            cols, predicate="s._op = 'upsert'"
        ).when_not_matched_insert(cols, predicate="s._op = 'upsert'").execute()
        result.version = table.version()
        return result

    return retry_commit(attempt)


def _sql_in(column: str, values: set[str]) -> str:
    quoted = ", ".join("'{}'".format(v.replace("'", "''")) for v in sorted(values))
    return f"{column} IN ({quoted})"


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
        _sql_in(col, vals) for col, vals in (("asset_id", ids), ("source_uri", uris)) if vals
    )
    id_set, uri_set = pa.array(sorted(ids), pa.string()), pa.array(sorted(uris), pa.string())
    run_id = run_id or f"remove-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"

    def attempt() -> PromoteResult:
        table = open_captions(root, s3)
        if table is None:
            return PromoteResult(version=None)
        hits = sum(
            pc.sum(
                pc.or_(
                    pc.is_in(b.column("asset_id"), value_set=id_set),
                    pc.is_in(b.column("source_uri"), value_set=uri_set),
                )
            ).as_py()
            or 0
            for b in scan_columns(table, ["asset_id", "source_uri"])
        )
        result = PromoteResult(version=None, removed=hits)
        if not hits:
            return result
        meta = _metadata(result, run_id=run_id, operation="remove", counts={"reason": reason})
        table.delete(predicate, commit_properties=CommitProperties(custom_metadata=meta))
        result.version = table.version()
        return result

    return retry_commit(attempt)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def versions(root: str, s3: S3Config) -> list[VersionInfo]:
    """The dataset versions (commits carrying ``capflow.operation``), oldest first."""
    table = open_captions(root, s3)
    if table is None:
        return []
    out = []
    for c in table.history():
        if "capflow.operation" not in c:
            continue
        out.append(
            VersionInfo(
                version=c["version"],
                timestamp=_iso(c["timestamp"]),
                operation=c["capflow.operation"],
                run_id=c.get("capflow.run_id"),
                flow_run_id=c.get("capflow.flow_run_id"),
                gate=c.get("capflow.gate"),
                config_hash=c.get("capflow.config_hash"),
                counts=json.loads(c.get("capflow.counts") or "{}"),
            )
        )
    return sorted(out, key=lambda v: v.version)


def latest_version(root: str, s3: S3Config) -> int | None:
    """The newest dataset version, or None when nothing was promoted yet."""
    found = versions(root, s3)
    return found[-1].version if found else None


def _strings(table: Any) -> Any:
    import pyarrow as pa

    return table.cast(
        pa.schema(
            [
                f.with_type(pa.string()) if pa.types.is_string_view(f.type) else f
                for f in table.schema
            ]
        )
    )


def unreadable(root: str, s3: S3Config, version: int, err: Exception) -> ConfigError:
    """The error for a dataset version that never existed or whose files were vacuumed."""
    known = [v.version for v in versions(root, s3)]
    return ConfigError(
        f"dataset version {version} cannot be read ({type(err).__name__}); available "
        f"versions: {known or 'none'} (VACUUM deletes the files of versions past retention)"
    )


def open_version(root: str, s3: S3Config, version: int | None = None) -> Any:
    """The ``captions`` DeltaTable at ``version`` (None: the latest).

    Raises:
        ConfigError: no dataset under ``root``, or no such version.
    """
    table = open_captions(root, s3)
    if table is None:
        raise ConfigError(f"no dataset at {table_uri(root, NAME)}: promote a run first")
    if version is not None:
        try:
            table.load_as_version(version)
        except Exception as err:  # deltalake raises several kinds for a missing version
            raise unreadable(root, s3, version, err) from err
    return table


def read_version(
    root: str, s3: S3Config, version: int | None = None, columns: list[str] | None = None
) -> Any:
    """The dataset at ``version`` (None: the latest) by Delta time travel, as a pyarrow table.

    Raises:
        ConfigError: no dataset under ``root``, or the version never existed or was vacuumed.
    """
    table = open_version(root, s3, version)
    try:
        return _strings(table.to_pyarrow_table(columns=columns))
    except Exception as err:  # a vacuumed version's files are gone
        raise unreadable(root, s3, table.version(), err) from err


def current_captions(root: str, s3: S3Config, columns: Iterable[str] = PLANNER_COLUMNS) -> Any:
    """The latest dataset's ``columns`` (an empty table with them when there is no dataset)."""
    columns = list(columns)
    table = open_captions(root, s3)
    if table is None:
        return _schema().empty_table().select(columns)
    return _strings(table.to_pyarrow_table(columns=columns)).cast(
        _schema().empty_table().select(columns).schema
    )


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
