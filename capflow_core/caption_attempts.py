"""Failed caption attempts: ``<root>/tables/caption_attempts``.

A sample whose model calls failed (an unparseable reply after the re-ask, an agent error)
gets no caption row; it stays pending and the next run tries it again. Each failed try is a
row here, inserted by the caption shard *before* its completion marker (insert-only on
``(run_id, asset_id)``, so a redone shard adds nothing). Once an asset has used
``caption.retry_budget`` tries it becomes a ``rejects`` row instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from capflow_core.config import S3Config
from capflow_core.delta_store import open_table, retry_commit, scan_columns

COLUMNS = ("asset_id", "source_uri", "run_id", "stage", "error")


def attempts_schema() -> Any:
    """The pyarrow schema of ``caption_attempts`` (all strings)."""
    import pyarrow as pa

    return pa.schema([pa.field(c, pa.string(), c in ("stage", "error")) for c in COLUMNS])


def record_failures(root: str, s3: S3Config, run_id: str, failures: list[dict[str, str]]) -> None:
    """Insert one row per failed asset of a shard (``asset_id``, ``source_uri``, ``stage``,
    ``error``) unless this run already recorded it."""
    if not failures:
        return
    import pyarrow as pa

    rows = [{c: f.get(c) for c in COLUMNS} | {"run_id": run_id} for f in failures]
    source = pa.Table.from_pylist(rows, schema=attempts_schema())

    def attempt() -> None:
        from deltalake import CommitProperties

        table = open_table(root, s3, "caption_attempts", attempts_schema, create=True)
        table.merge(
            source,
            predicate="t.run_id = s.run_id AND t.asset_id = s.asset_id",
            source_alias="s",
            target_alias="t",
            commit_properties=CommitProperties(custom_metadata={"capflow.run_id": run_id}),
        ).when_not_matched_insert_all().execute()

    retry_commit(attempt)


def attempt_counts(
    root: str, s3: S3Config, asset_ids: Iterable[str] | None = None
) -> dict[str, int]:
    """Failed tries per asset (of ``asset_ids`` when given)."""
    table = open_table(root, s3, "caption_attempts", attempts_schema)
    wanted = set(asset_ids) if asset_ids is not None else None
    counts: dict[str, int] = {}
    if table is None:
        return counts
    for batch in scan_columns(table, ["asset_id"]):
        for asset_id in batch.column("asset_id").to_pylist():
            if wanted is None or asset_id in wanted:
                counts[asset_id] = counts.get(asset_id, 0) + 1
    return counts


def last_errors(root: str, s3: S3Config, asset_ids: Iterable[str]) -> dict[str, str]:
    """The most recent recorded error of each asset (by run id order)."""
    table = open_table(root, s3, "caption_attempts", attempts_schema)
    wanted, best = set(asset_ids), {}
    if table is None:
        return {}
    for batch in scan_columns(table, ["asset_id", "run_id", "stage", "error"]):
        for row in batch.to_pylist():
            if row["asset_id"] in wanted:
                key = row["run_id"]
                if row["asset_id"] not in best or key > best[row["asset_id"]][0]:
                    best[row["asset_id"]] = (key, f"{row['stage']}: {row['error']}")
    return {a: text for a, (_, text) in best.items()}
