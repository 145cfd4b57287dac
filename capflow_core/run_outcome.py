"""Where a preprocessing run's outcome is stored: the ``rejects`` table and reconciliation.

``<root>/tables/rejects`` (docs/architecture.md, "Tables"; plus ``shard``) gets each shard's
rejection rows by a MERGE keyed on ``(run_id, source_uri)`` that only inserts, run *before* the
shard's ``_PREPARED`` marker: a shard redone after a crash re-MERGEs the same rows and adds
none. Losing a commit race (a concurrent writer) re-opens the table and retries.

``<root>/staging/<run_id>/reconciliation.json`` holds the run's counts
(``listed = prepared + rejected + unchanged``, with counts per reason code), written to a
temporary name and renamed into place (a single PUT on S3, which is atomic).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from capflow_core.config import S3Config
from capflow_core.delta_store import open_table, retry_commit, table_uri
from capflow_core.prepare import Rejection
from capflow_core.storage import filesystem, is_s3, join_under

REJECT_COLUMNS = ("source_uri", "asset_id", "stage", "reason_code", "detail", "run_id", "shard")
RECONCILIATION = "reconciliation.json"


def rejects_table_schema() -> Any:
    """The pyarrow schema of the ``rejects`` table (all strings; ``asset_id`` nullable)."""
    import pyarrow as pa

    return pa.schema(
        [pa.field(c, pa.string(), c not in ("source_uri", "run_id")) for c in REJECT_COLUMNS]
    )


def rejects_uri(root: str) -> str:
    """Where the ``rejects`` table lives under a storage root."""
    return table_uri(root, "rejects")


def open_rejects(root: str, s3: S3Config, create: bool = False) -> Any:
    """The ``rejects`` DeltaTable, or None when it does not exist and ``create`` is False."""
    return open_table(root, s3, "rejects", rejects_table_schema, create)


def store_rejects(
    root: str, s3: S3Config, run_id: str, shard: str, rejections: list[Rejection]
) -> None:
    """Insert a shard's rejections into ``rejects`` unless already there (idempotent)."""
    if not rejections:
        return
    import pyarrow as pa

    rows = [
        {
            "source_uri": r.source_uri,
            "asset_id": r.asset_id,
            "stage": r.stage,
            "reason_code": r.reason_code,
            "detail": r.detail,
            "run_id": run_id,
            "shard": shard,
        }
        for r in {r.source_uri: r for r in rejections}.values()
    ]
    source = pa.Table.from_pylist(rows, schema=rejects_table_schema())

    def attempt() -> None:
        from deltalake import CommitProperties

        open_rejects(root, s3, create=True).merge(
            source,
            predicate="t.run_id = s.run_id AND t.source_uri = s.source_uri",
            source_alias="s",
            target_alias="t",
            commit_properties=CommitProperties(custom_metadata={"capflow.run_id": run_id}),
        ).when_not_matched_insert_all().execute()

    retry_commit(attempt)


def read_rejects(root: str, s3: S3Config, run_id: str | None = None) -> list[dict[str, Any]]:
    """The ``rejects`` rows (of one run when ``run_id`` is given), as dicts."""
    table = open_rejects(root, s3)
    if table is None:
        return []
    rows = table.to_pyarrow_table().to_pylist()
    return [r for r in rows if run_id is None or r["run_id"] == run_id]


def reconciliation_uri(root: str, run_id: str) -> str:
    """``<root>/staging/<run_id>/reconciliation.json``."""
    return join_under(root, "staging", run_id, RECONCILIATION)


def write_reconciliation(root: str, run_id: str, counts: dict[str, Any], s3: S3Config) -> str:
    """Write a run's reconciliation JSON atomically; returns its URI."""
    uri = reconciliation_uri(root, run_id)
    fs, path = filesystem(uri, s3)
    data = json.dumps(counts, indent=2, sort_keys=True).encode()
    if is_s3(uri):
        fs.pipe_file(path, data)  # one PUT: readers see the old or the new object
        return uri
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    fs.pipe_file(tmp, data)
    fs.mv(tmp, path)
    return uri


def read_reconciliation(root: str, run_id: str, s3: S3Config) -> dict[str, Any]:
    """A run's stored reconciliation."""
    fs, path = filesystem(reconciliation_uri(root, run_id), s3)
    return json.loads(fs.cat_file(path))
