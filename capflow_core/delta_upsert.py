"""Small keyed tables written by partial MERGE upserts (``runs``, ``models``, ...).

A row is written several times as its subject progresses; each :func:`upsert` MERGEs only
the columns it is given, keyed on the key columns, and leaves the others as stored.
``defaults`` fill columns on insert only (an update keeps the stored value unless the
caller names the column). Structured columns are stored as JSON strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from capflow_core.config import S3Config
from capflow_core.delta_store import open_table, retry_commit, scan_columns


def encode_json(fields: dict[str, Any], json_columns: Iterable[str]) -> dict[str, Any]:
    """``fields`` with non-string values of ``json_columns`` JSON-encoded (keys sorted)."""
    cols = set(json_columns)
    return {
        k: json.dumps(v, sort_keys=True, default=str)
        if k in cols and v is not None and not isinstance(v, str)
        else v
        for k, v in fields.items()
    }


def decode_json(row: dict[str, Any], json_columns: Iterable[str]) -> dict[str, Any]:
    """``row`` with the non-null ``json_columns`` JSON-decoded."""
    cols = set(json_columns)
    return {k: json.loads(v) if k in cols and v is not None else v for k, v in row.items()}


def check_columns(fields: dict[str, Any], schema: Any, table: str) -> None:
    """Raise ValueError naming the known columns when ``fields`` has an unknown one."""
    unknown = sorted(set(fields) - set(schema.names))
    if unknown:
        raise ValueError(f"unknown {table} field(s) {unknown}; known: {list(schema.names)}")


def upsert(
    root: str,
    s3: S3Config,
    name: str,
    schema_fn: Callable[[], Any],
    keys: dict[str, Any],
    fields: dict[str, Any],
    *,
    defaults: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Insert or update the row of table ``name`` whose ``keys`` match, with ``fields``.

    Args:
        root: the storage root.
        s3: S3 settings for an ``s3://`` root.
        name: the table under ``<root>/tables/`` (created with ``schema_fn()`` if missing).
        schema_fn: the table's pyarrow schema.
        keys: key column -> value (the MERGE predicate).
        fields: columns to set (already JSON-encoded); columns not named keep their values.
        defaults: columns set on insert only when not in ``fields``; an update keeps
            the stored value (or takes the default when the stored one is null).
        metadata: commit metadata.

    Raises:
        ValueError: an unknown column.
    """
    import pyarrow as pa
    from deltalake import CommitProperties

    schema = schema_fn()
    defaults = {k: v for k, v in (defaults or {}).items() if k not in fields}
    values = {**fields, **defaults, **keys}
    check_columns(values, schema, name)
    source = pa.Table.from_pylist(
        [values], schema=pa.schema([schema.field(c) for c in schema.names if c in values])
    )
    inserted = {c: f"s.{c}" for c in source.column_names}
    updated = {c: f"s.{c}" for c in fields} | {c: f"coalesce(t.{c}, s.{c})" for c in defaults}
    predicate = " AND ".join(f"t.{k} = s.{k}" for k in keys)

    def attempt() -> None:
        merge = open_table(root, s3, name, schema_fn, create=True).merge(
            source,
            predicate=predicate,
            source_alias="s",
            target_alias="t",
            commit_properties=CommitProperties(custom_metadata=metadata or {}),
        )
        if updated:
            merge = merge.when_matched_update(updated)
        merge.when_not_matched_insert(inserted).execute()

    retry_commit(attempt)


def read_rows(
    root: str, s3: S3Config, name: str, schema_fn: Callable[[], Any], json_columns: Iterable[str]
) -> Iterator[dict[str, Any]]:
    """Every row of table ``name`` (none when it does not exist), JSON columns decoded."""
    table = open_table(root, s3, name, schema_fn, create=False)
    if table is None:
        return
    cols = tuple(json_columns)
    for batch in scan_columns(table, list(schema_fn().names)):
        for row in batch.to_pylist():
            yield decode_json(row, cols)
