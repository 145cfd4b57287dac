"""The ``assets`` Delta table (docs/architecture.md, "Tables") and the listing diff against it.

:func:`diff` takes the listing in chunks: for each chunk it reads only the matching rows
(keyed by ``source_uri``), classifies every object (new / changed / unchanged), MERGEs the
chunk (``last_seen_run``, ``etag``, ``status``) and hands the new and changed objects on.
Then every row under the listed sources not seen this run becomes ``removed``; memory stays
bounded by one chunk. A MERGE/update losing a commit race re-opens the table and retries.

Beyond §3 the table carries ``provenance`` and ``pending_run`` (the run whose manifests list
the asset): rerunning an interrupted ingest with the same run id hands on the same objects.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from capflow_core.config import S3Config
from capflow_core.listing import ListedObject
from capflow_core.storage import delta_storage_options, join_under

STATUSES = ("active", "removed", "rejected", "pending")
_COLUMNS = (  # noqa: SIM905
    "asset_id source_uri etag size modality width height duration_s fps phash license "
    "provenance status first_seen_run last_seen_run pending_run"
).split()
_TYPES = dict(size="int64", width="int32", height="int32", duration_s="float64", fps="float64")
_KEY_COLUMNS = ["source_uri", "etag", "status", "pending_run", "first_seen_run"]
_UPDATED = ("etag", "size", "modality", "status", "pending_run", "last_seen_run")


def assets_schema() -> Any:
    """The pyarrow schema of the ``assets`` table (all nullable but ``source_uri``)."""
    import pyarrow as pa

    return pa.schema(
        [pa.field(c, getattr(pa, _TYPES.get(c, "string"))(), c != "source_uri") for c in _COLUMNS]
    )


@dataclass
class DiffResult:
    """Counts of one diff; ``pending`` holds new + changed objects when no sink was given."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    pending: list[ListedObject] = field(default_factory=list)


def table_uri(root: str, name: str) -> str:
    """Where table ``name`` (assets, rejects, ...) lives under a storage root."""
    return join_under(root, "tables", name)


def open_table(
    root: str, s3: S3Config, name: str, schema: Callable[[], Any], create: bool = False
) -> Any:
    """DeltaTable ``name``, created with ``schema()`` if missing and ``create``, else None."""
    from deltalake import DeltaTable

    uri, opts = table_uri(root, name), delta_storage_options(root, s3)
    if DeltaTable.is_deltatable(uri, storage_options=opts):
        return DeltaTable(uri, storage_options=opts)
    if not create:
        return None
    return DeltaTable.create(uri, schema(), mode="ignore", storage_options=opts)


def assets_uri(root: str) -> str:
    """Where the ``assets`` table lives under a storage root."""
    return table_uri(root, "assets")


def open_assets(root: str, s3: S3Config, create: bool = False) -> Any:
    """The ``assets`` DeltaTable, or None when it does not exist and ``create`` is False."""
    return open_table(root, s3, "assets", assets_schema, create)


def retry_commit(action: Callable[[], Any], attempts: int = 8) -> Any:
    """Run a write; on a lost optimistic-concurrency race (``CommitFailedError``) back off
    and run it again (``action`` must re-open the table so it sees the winner's commit)."""
    from deltalake.exceptions import CommitFailedError

    for attempt in range(attempts):
        try:
            return action()
        except CommitFailedError:
            if attempt == attempts - 1:
                raise
            time.sleep(min(0.05 * 2**attempt, 2.0))
    return None


def _existing(table: Any, keys: list[str]) -> dict[str, dict[str, Any]]:
    if table is None:
        return {}
    import pyarrow as pa
    import pyarrow.compute as pc

    wanted = pa.array(keys, type=pa.string())
    found: dict[str, dict[str, Any]] = {}
    for batch in scan_columns(table, _KEY_COLUMNS):
        hits = batch.filter(pc.is_in(batch.column("source_uri"), value_set=wanted))
        found.update((r["source_uri"], r) for r in hits.to_pylist())
    return found


def scan_columns(table: Any, columns: list[str]) -> Iterator[Any]:
    """Record batches of some columns, string views cast to strings.

    (A dataset ``filter=`` on strings fails against Delta's string-view file statistics, so
    callers filter each batch: one pass over the key columns in bounded memory.)
    """
    import pyarrow as pa

    for batch in table.to_pyarrow_dataset().to_batches(columns=columns):
        yield pa.RecordBatch.from_arrays(
            [c.cast(pa.string()) if pa.types.is_string_view(c.type) else c for c in batch.columns],
            names=batch.schema.names,
        )


def _classify(e: ListedObject, old: dict[str, Any] | None, run_id: str) -> str:
    if old is None:
        return "new"
    if old["status"] == "pending" and old["pending_run"] == run_id:
        return "new" if old["first_seen_run"] == run_id else "changed"  # same run, rerun
    if old["etag"] != e.etag or old["status"] == "removed":
        return "changed"
    return "unchanged"


def _source_table(rows: list[tuple[ListedObject, str, dict | None]], run_id: str) -> Any:
    import pyarrow as pa

    out: dict[str, list[Any]] = {name: [] for name in assets_schema().names}
    for e, kind, old in rows:
        pending = kind != "unchanged"
        values = {
            **dict.fromkeys(out),
            **{"source_uri": e.source_uri, "etag": e.etag, "size": e.size},
            **{"modality": e.modality, "license": e.license, "provenance": e.provenance},
            "status": "pending" if pending else old["status"],
            "pending_run": run_id if pending else old["pending_run"],
            "first_seen_run": old["first_seen_run"] if old else run_id,
            "last_seen_run": run_id,
        }
        for name, value in values.items():
            out[name].append(value)
    return pa.table(out, schema=assets_schema())


def _merge_chunk(
    root: str, s3: S3Config, chunk: list[ListedObject], run_id: str, dry: bool, enrich: Any
) -> tuple[list[tuple[ListedObject, str, dict | None]], int]:
    def attempt() -> tuple[list[tuple[ListedObject, str, dict | None]], int]:
        table = open_assets(root, s3, create=not dry)
        old = _existing(table, [e.source_uri for e in chunk])
        rows = [(e, _classify(e, old.get(e.source_uri), run_id)) for e in chunk]
        if enrich and not dry:
            done = iter(enrich([e for e, kind in rows if kind != "unchanged"]))
            rows = [(next(done) if kind != "unchanged" else e, kind) for e, kind in rows]
        rows = [(e, kind, old.get(e.source_uri)) for e, kind in rows]
        seen_live = sum(1 for _, _, o in rows if o is not None and o["status"] != "removed")
        if dry:
            return rows, seen_live
        from deltalake import CommitProperties

        updates = {c: f"s.{c}" for c in _UPDATED}
        updates |= {c: f"coalesce(s.{c}, t.{c})" for c in ("license", "provenance")}
        table.merge(
            _source_table(rows, run_id),
            predicate="t.source_uri = s.source_uri",
            source_alias="s",
            target_alias="t",
            commit_properties=CommitProperties(custom_metadata={"capflow.run_id": run_id}),
        ).when_matched_update(updates).when_not_matched_insert_all().execute()
        return rows, seen_live

    return retry_commit(attempt)


def _mark_removed(
    root: str, s3: S3Config, prefixes: list[str], run_id: str, dry: bool, seen: int
) -> int:
    table = open_assets(root, s3)
    if table is None or not prefixes:
        return 0
    if dry:  # rows still live under the sources, less those this listing matched
        import pyarrow.compute as pc

        live = 0
        for b in scan_columns(table, ["source_uri", "status"]):
            starts = [pc.starts_with(b.column("source_uri"), pattern=p) for p in prefixes]
            alive = pc.not_equal(b.column("status"), "removed")
            live += pc.sum(pc.and_(alive, functools.reduce(pc.or_, starts))).as_py() or 0
        return live - seen
    under = " OR ".join(
        "starts_with(source_uri, '{}')".format(p.replace("'", "''")) for p in prefixes
    )
    run = run_id.replace("'", "''")
    predicate = f"status != 'removed' AND last_seen_run != '{run}' AND ({under})"
    removed = {"status": "'removed'"}
    return retry_commit(
        lambda: open_assets(root, s3).update(updates=removed, predicate=predicate)[
            "num_updated_rows"
        ]
    )


def _chunks(items: Iterable[ListedObject], size: int) -> Iterator[list[ListedObject]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield list({e.source_uri: e for e in chunk}.values())  # overlapping sources


def diff(
    listing: Iterable[ListedObject],
    root: str,
    run_id: str,
    *,
    s3: S3Config | None = None,
    prefixes: list[str],
    dry_run: bool = False,
    chunk_size: int = 10_000,
    enrich: Callable[[list[ListedObject]], list[ListedObject]] | None = None,
    on_pending: Callable[[list[ListedObject]], None] | None = None,
) -> DiffResult:
    """Diff a listing against the ``assets`` table and record what was seen.

    Args:
        listing: the streamed listing (any iterable; consumed once, chunk by chunk).
        root: the storage root (local path or ``s3://``).
        run_id: this run; written to ``last_seen_run`` / ``pending_run``.
        s3: S3 settings for an ``s3://`` root.
        prefixes: URI prefixes of the listed sources (each ending in ``/``): only rows
            under them can become ``removed``.
        dry_run: classify and count, write nothing.
        chunk_size: listing entries per read + MERGE.
        enrich: applied to each chunk's new and changed objects before the MERGE (e.g.
            :func:`capflow_core.listing.read_object_metadata`).
        on_pending: receives each chunk's new and changed objects; without it they are
            collected in ``DiffResult.pending``.
    """
    s3 = s3 or S3Config()
    result, seen_live = DiffResult(), 0
    for chunk in _chunks(listing, chunk_size):
        rows, live = _merge_chunk(root, s3, chunk, run_id, dry_run, enrich)
        seen_live += live
        pending = [e for e, kind, _ in rows if kind != "unchanged"]
        for _, kind, _ in rows:
            setattr(result, kind, getattr(result, kind) + 1)
        if on_pending is not None:
            on_pending(pending)
        else:
            result.pending.extend(pending)
    result.removed = _mark_removed(root, s3, prefixes, run_id, dry_run, seen_live)
    return result
