"""The ``runs`` Delta table (docs/architecture.md, "Tables"): one row per refresh run.

A run's row is written several times as it goes (started, gate result, promoted version,
cost); each :func:`record_run` MERGEs only the fields it is given, keyed on ``run_id``,
and leaves the others as stored. Structured fields are stored as JSON strings.
"""

from __future__ import annotations

from typing import Any

from capflow_core.config import S3Config
from capflow_core.delta_store import open_table, scan_columns
from capflow_core.delta_upsert import decode_json, encode_json, read_rows, upsert

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


def _check(fields: dict[str, Any]) -> None:
    if fields.get("status") not in (None, *STATUSES):
        raise ValueError(f"status {fields['status']!r}: use one of {STATUSES}")
    if fields.get("gate") not in (None, *GATES):
        raise ValueError(f"gate {fields['gate']!r}: use one of {GATES}")


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
    _check(fields)
    upsert(
        root,
        s3,
        NAME,
        runs_schema,
        {"run_id": run_id},
        encode_json(fields, JSON_COLUMNS),
        metadata={"capflow.run_id": run_id},
    )


def read_runs(root: str, s3: S3Config) -> list[dict[str, Any]]:
    """Every run's row, JSON fields decoded, sorted by ``started_at`` (unknown last)."""
    rows = list(read_rows(root, s3, NAME, runs_schema, JSON_COLUMNS))
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
            return decode_json(hit.to_pylist()[0], JSON_COLUMNS)
    return None
