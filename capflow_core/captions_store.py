"""Writing the ``captions`` Delta table, THE dataset: one row per asset (docs/architecture.md).

A run that passes the gate lands as ONE MERGE commit keyed on ``asset_id`` (upserts of
its staged rows and deletes of removed assets together), and that commit's Delta version
is the dataset version; its commit metadata (``capflow.*`` keys) carries the run id,
flow-run id, counts, gate result and config hash. Staged rows whose ``caption_id`` equals
the stored one are dropped before the MERGE, so re-running the same inputs adds no version.

The table is partitioned by ``domain`` and ``cohort`` (:mod:`capflow_core.captions_read`).
The MERGE source carries each row's partition: the stored ``cohort`` for updates and
deletes, the current UTC month for inserts; an update whose domain changed becomes a delete
in the old partition plus an insert in the new one. The MERGE predicate starts with a
literal filter naming exactly the partitions of the stored rows it updates or deletes, so
Delta reads and rewrites only them (a join on random ``asset_id`` values alone prunes
nothing), and new assets are inserted without reading the table's rows, unless a concurrent
writer is possible (see :func:`_merge_predicate`). Older captions stay readable by
time travel until :func:`capflow_core.captions_takedown.vacuum` deletes the unreferenced files.

The read side is re-exported here so ``from capflow_core.captions_store import ...`` works.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from capflow_core.captions_read import (  # noqa: F401  (re-exported)
    NAME,
    PARTITION_BY,
    PLANNER_COLUMNS,
    VersionInfo,
    current_captions,
    latest_version,
    open_captions,
    open_version,
    read_version,
    record_schema,
    run_commit,
    table_schema,
    unreadable,
    versions,
)
from capflow_core.config import S3Config
from capflow_core.delta_store import retry_commit, scan_columns

_KEYS = ["asset_id", "caption_id", "domain", "cohort"]
_NULL = "\x00capflow-null"  # stands for a null domain in the join (NULL = NULL is not true)


@dataclass
class PromoteResult:
    """What one promote / removal did; ``version`` is None when nothing was committed."""

    version: int | None
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0


def commit_metadata(result: PromoteResult, **meta: Any) -> dict[str, str]:
    """The ``capflow.*`` commit metadata of a promote or removal: its counts and ``meta``."""
    counts = {k: getattr(result, k) for k in ("added", "changed", "removed", "unchanged")}
    counts |= meta.pop("counts", None) or {}
    out = {f"capflow.{k}": str(v) for k, v in meta.items() if v is not None}
    return out | {"capflow.counts": json.dumps(counts, sort_keys=True, default=str)}


def _cohort_now() -> str:
    """The cohort of rows inserted now: the current UTC month."""
    return f"{datetime.now(UTC):%Y-%m}"


def _quote(value: str) -> str:
    return "'{}'".format(value.replace("'", "''"))


def sql_in(column: str, values: Iterable[str]) -> str:
    """``column IN ('a', 'b')`` with the values quoted as SQL literals."""
    return f"{column} IN ({', '.join(_quote(v) for v in sorted(values))})"


def partition_filter(partitions: Iterable[tuple[str | None, str]], alias: str = "") -> str:
    """A SQL filter matching exactly the (domain, cohort) ``partitions``, as literals."""
    by_domain: dict[str | None, set[str]] = {}
    for domain, cohort in partitions:
        by_domain.setdefault(domain, set()).add(cohort)
    terms = [
        f"({alias}domain {'IS NULL' if d is None else '= ' + _quote(d)} AND "
        f"{sql_in(alias + 'cohort', cohorts)})"
        for d, cohorts in sorted(by_domain.items(), key=lambda kv: (kv[0] is not None, kv[0]))
    ]
    return "(" + " OR ".join(terms) + ")"


def partitions_of(table: Any) -> set[tuple[str | None, str]]:
    """The (domain, cohort) partitions of a table's rows."""
    return set(zip(*(table.column(c).to_pylist() for c in PARTITION_BY), strict=True))


def _dedup_last(staged: Any) -> Any:
    """Staged rows with one row per asset_id, the last one winning."""
    last = {a: i for i, a in enumerate(staged.column("asset_id").to_pylist())}
    return staged if len(last) == staged.num_rows else staged.take(sorted(last.values()))


def _stored_keys(table: Any, asset_ids: Any) -> Any:
    """asset_id, caption_id, domain, cohort of the stored rows among ``asset_ids``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = [
        b.filter(pc.is_in(b.column("asset_id"), value_set=asset_ids))
        for b in scan_columns(table, _KEYS)
    ]
    schema = pa.schema([(c, pa.string()) for c in _KEYS])
    return pa.Table.from_batches([p.cast(schema) for p in parts if p.num_rows], schema=schema)


def _same(a: Any, b: Any) -> Any:
    """Element-wise null-aware equality of two string columns."""
    import pyarrow.compute as pc

    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    return pc.or_(pc.fill_null(pc.equal(a, b), False), both_null)


def _plan(
    table: Any, staged: Any, removed: Any
) -> tuple[Any, PromoteResult, set[tuple[str | None, str]]]:
    """The MERGE source (upserts then deletes, with ``_op`` and ``cohort``), its counts, and
    the partitions of the stored rows it updates or deletes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = staged.column("asset_id").combine_chunks()
    stored = _stored_keys(table, pa.concat_arrays([ids, removed]))
    keys = staged.select(["asset_id", "caption_id", "domain"])
    both = keys.rename_columns(["asset_id", "new_id", "new_domain"]).join(
        stored, "asset_id", join_type="inner"
    )
    same = both.filter(pc.equal(both.column("new_id"), both.column("caption_id")))
    changed = both.filter(pc.not_equal(both.column("new_id"), both.column("caption_id")))
    upserts = staged.filter(pc.invert(pc.is_in(ids, value_set=same.column("asset_id"))))
    at = pc.index_in(upserts.column("asset_id"), value_set=changed.column("asset_id"))
    cohort = pc.fill_null(changed.column("cohort").take(at), _cohort_now())
    moved = changed.filter(pc.invert(_same(changed.column("new_domain"), changed.column("domain"))))
    gone = stored.filter(pc.is_in(stored.column("asset_id"), value_set=removed))
    result = PromoteResult(
        version=None,
        added=staged.num_rows - both.num_rows,
        changed=changed.num_rows,
        removed=gone.num_rows,
        unchanged=same.num_rows,
    )
    dead = pa.concat_tables([t.select(["asset_id", "domain", "cohort"]) for t in (gone, moved)])
    deletes = pa.table(
        [
            dead.column(f.name) if f.name in dead.column_names else pa.nulls(len(dead), f.type)
            for f in table_schema()
        ],
        schema=table_schema(),
    )
    upserts = upserts.append_column("cohort", cohort.cast(pa.string()))
    ops = pa.array(["upsert"] * upserts.num_rows + ["delete"] * len(dead), pa.string())
    source = pa.concat_tables([upserts, deletes]).append_column("_op", ops)
    return source, result, partitions_of(changed) | partitions_of(gone)


def _merge_predicate(
    source: Any, touched: set[tuple[str | None, str]], inserts: bool, exclusive: bool
) -> str:
    """The join on asset_id behind a literal filter of the partitions the MERGE may read.

    ``touched`` (the stored rows it updates or deletes) is enough when this process holds the
    root's lock (``exclusive``): no other capflow writer can add a row meanwhile, so new
    assets are inserted without reading any partition. Otherwise, with new assets, the
    source's partitions and the whole current cohort are in the filter: a concurrent writer
    inserting the same asset (under any domain) then conflicts with this commit (Delta
    checks what a transaction read), and the retry sees its row instead of adding a second.
    """
    null = _quote(_NULL)
    if exclusive:
        reads = partition_filter(touched, "t.") if touched else "FALSE"
    else:
        reads = partition_filter(partitions_of(source), "t.")
        if inserts:
            reads = f"({reads} OR t.cohort = {_quote(_cohort_now())})"
    return (
        f"{reads} AND t.asset_id = s.asset_id "
        f"AND t.cohort = s.cohort AND coalesce(t.domain, {null}) = coalesce(s.domain, {null})"
    )


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
    exclusive: bool | None = None,
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
        exclusive: no other writer can commit meanwhile, so inserts need not read the
            table (default: whether this process holds the root's lock,
            :func:`capflow_core.root_lock.holds`).

    Returns:
        The version made (None when nothing was added, changed or removed) and the counts.

    Raises:
        ValueError: a staged row has no caption, or an asset is both staged and removed.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import CommitProperties

    schema = record_schema()
    staged = _dedup_last(staged.select(schema.names).cast(schema))
    if staged.column("caption").null_count:
        raise ValueError("staged rows without a caption cannot be promoted (stage only ok records)")
    removed = pa.array(sorted(set(removed_asset_ids)), pa.string())
    if pc.any(pc.is_in(removed, value_set=staged.column("asset_id"))).as_py():
        raise ValueError("an asset cannot be both staged and removed in one promote")

    if exclusive is None:
        from capflow_core.root_lock import holds

        exclusive = holds(root)

    def attempt() -> PromoteResult:
        table = open_captions(root, s3, create=True)
        source, result, touched = _plan(table, staged, removed)
        if source.num_rows == 0:  # nothing to do, or this run's earlier try committed it
            return _committed(table, run_id, operation) or result
        meta = dict(run_id=run_id, flow_run_id=flow_run_id, operation=operation, gate=gate)
        meta |= dict(config_hash=config_hash, counts=counts)
        cols = {c: f"s.{c}" for c in table_schema().names}
        merge = (
            table.merge(
                source,
                predicate=_merge_predicate(source, touched, result.added > 0, exclusive),
                source_alias="s",
                target_alias="t",
                commit_properties=CommitProperties(custom_metadata=commit_metadata(result, **meta)),
            )
            .when_matched_delete(predicate="s._op = 'delete'")
            .when_matched_update(cols, predicate="s._op = 'upsert'")
            .when_not_matched_insert(cols, predicate="s._op = 'upsert'")
        )
        try:
            merge.execute()
        except OSError:  # e.g. the reply to the commit's PUT was lost: did it land?
            landed = _committed(open_captions(root, s3, create=True), run_id, operation)
            if landed is None:
                raise
            return landed
        result.version = table.version()
        return result

    return retry_commit(attempt)


def _committed(table: Any, run_id: str, operation: str) -> PromoteResult | None:
    """The version (and counts) ``run_id``'s ``operation`` already committed, or None."""
    commit = run_commit(table, run_id, operation)
    if commit is None:
        return None
    counts = json.loads(commit.get("capflow.counts") or "{}")
    keys = ("added", "changed", "removed", "unchanged")
    return PromoteResult(commit["version"], **{k: int(counts.get(k, 0)) for k in keys})
