"""The ``runs`` Delta table (ARCHITECTURE.md §3): one row per refresh run.

A run's row is written several times as it goes (started, gate result, promoted version,
cost); each :func:`record_run` MERGEs only the fields it is given, keyed on ``run_id``,
and leaves the others as stored. Structured fields are stored as JSON strings.
"""

from __future__ import annotations

import json
from typing import Any

from capflow_core.config import S3Config
from capflow_core.delta_store import open_table, retry_commit, scan_columns

NAME = "runs"
STATUSES = ("running", "promoted", "gate_failed", "no_change", "failed")
GATES = ("passed", "failed", "skipped")
JSON_COLUMNS = ("failing", "counts", "reconciliation")
_INT = ("dataset_version", "tokens_prompt", "tokens_completion")
_FLOAT = ("gpu_s", "cost_usd", "api_usd")
RUN_COLUMNS: tuple[str, ...] = (
    "run_id",
    "flow_run_id",
    "status",
    "started_at",
    "finished_at",
    "gate",
    "failing",
    "dataset_version",
    "config_hash",
    "report_uri",
    "counts",
    "reconciliation",
    "tokens_prompt",
    "tokens_completion",
    "gpu_s",
    "cost_usd",
    "api_usd",
)


def runs_schema() -> Any:
    """The pyarrow schema of ``runs`` (all nullable but ``run_id``)."""
    import pyarrow as pa

    def kind(c: str) -> Any:
        return pa.int64() if c in _INT else pa.float64() if c in _FLOAT else pa.string()

    return pa.schema([pa.field(c, kind(c), c != "run_id") for c in RUN_COLUMNS])


def open_runs(root: str, s3: S3Config, create: bool = False) -> Any:
    """The ``runs`` DeltaTable, or None when it does not exist and ``create`` is False."""
    return open_table(root, s3, NAME, runs_schema, create)


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(fields) - set(RUN_COLUMNS))
    if unknown:
        raise ValueError(f"unknown runs field(s) {unknown}; known: {list(RUN_COLUMNS)}")
    if fields.get("status") not in (None, *STATUSES):
        raise ValueError(f"status {fields['status']!r}: use one of {STATUSES}")
    if fields.get("gate") not in (None, *GATES):
        raise ValueError(f"gate {fields['gate']!r}: use one of {GATES}")
    return {
        k: json.dumps(v, sort_keys=True, default=str)
        if k in JSON_COLUMNS and v is not None and not isinstance(v, str)
        else v
        for k, v in fields.items()
    }


def record_run(root: str, s3: S3Config, run_id: str, **fields: Any) -> None:
    """Insert or update run ``run_id``'s row with ``fields`` (the others keep their values).

    Args:
        root: the storage root.
        s3: S3 settings for an ``s3://`` root.
        run_id: the run.
        fields: columns of :data:`RUN_COLUMNS`; dicts/lists for ``counts``,
            ``reconciliation`` and ``failing`` are JSON-encoded.

    Raises:
        ValueError: an unknown field, status or gate.
    """
    import pyarrow as pa
    from deltalake import CommitProperties

    values = _encode(fields) | {"run_id": run_id}
    schema = pa.schema([runs_schema().field(c) for c in RUN_COLUMNS if c in values])
    source = pa.Table.from_pylist([values], schema=schema)
    given = {c: f"s.{c}" for c in schema.names}

    def attempt() -> None:
        open_runs(root, s3, create=True).merge(
            source,
            predicate="t.run_id = s.run_id",
            source_alias="s",
            target_alias="t",
            commit_properties=CommitProperties(custom_metadata={"capflow.run_id": run_id}),
        ).when_matched_update(given).when_not_matched_insert(given).execute()

    retry_commit(attempt)


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    return {k: json.loads(v) if k in JSON_COLUMNS and v is not None else v for k, v in row.items()}


def read_runs(root: str, s3: S3Config) -> list[dict[str, Any]]:
    """Every run's row, JSON fields decoded, sorted by ``started_at`` (unknown last)."""
    table = open_runs(root, s3)
    if table is None:
        return []
    rows = [_decode(r) for b in scan_columns(table, list(RUN_COLUMNS)) for r in b.to_pylist()]
    return sorted(rows, key=lambda r: (r["started_at"] is None, r["started_at"] or "", r["run_id"]))


def read_run(root: str, s3: S3Config, run_id: str) -> dict[str, Any] | None:
    """Run ``run_id``'s row with JSON fields decoded, or None when it was never recorded."""
    import pyarrow.compute as pc

    table = open_runs(root, s3)
    if table is None:
        return None
    for batch in scan_columns(table, list(RUN_COLUMNS)):
        hit = batch.filter(pc.equal(batch.column("run_id"), run_id))
        if hit.num_rows:
            return _decode(hit.to_pylist()[0])
    return None
