"""Reading the ``captions`` Delta table (THE dataset, docs/architecture.md, "Tables"): its layout,
versions, time travel.

The stored schema is ``records.SCHEMA`` plus one column, ``cohort`` (``YYYY-MM``, the UTC
month the asset's row was first inserted; an update keeps it). The table is partitioned by
``domain`` and ``cohort``, so a MERGE whose predicate names its partitions literally reads
and rewrites only those (a prompt change in one domain rewrites that domain's files, a
nightly batch of new assets appends to this month's). Readers here return the
``records.SCHEMA`` columns unless asked for ``cohort`` by name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from capflow_core.config import S3Config
from capflow_core.delta_store import open_table, table_uri
from capflow_core.errors import ConfigError
from capflow_core.storage import delta_storage_options

NAME = "captions"
PLANNER_COLUMNS = ("asset_id", "caption_id", "domain", "fingerprint", "route", "mode", "run_id")
PARTITION_BY = ("domain", "cohort")


def record_schema() -> Any:
    """``records.SCHEMA``: the columns readers get by default."""
    from capflow_core.records import SCHEMA

    return SCHEMA


def table_schema() -> Any:
    """The stored schema: ``records.SCHEMA`` then ``cohort``."""
    import pyarrow as pa

    return record_schema().append(pa.field("cohort", pa.string()))


def open_captions(root: str, s3: S3Config, create: bool = False) -> Any:
    """The ``captions`` DeltaTable, or None when it does not exist and ``create`` is False.

    A created table is partitioned by :data:`PARTITION_BY`.
    """
    from deltalake import DeltaTable

    table = open_table(root, s3, NAME, table_schema, create=False)
    if table is not None or not create:
        return table
    return DeltaTable.create(
        table_uri(root, NAME),
        table_schema(),
        partition_by=list(PARTITION_BY),
        mode="ignore",
        storage_options=delta_storage_options(root, s3),
    )


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

    def plain(f: Any) -> Any:
        if pa.types.is_dictionary(f.type):
            f = f.with_type(f.type.value_type)
        return f.with_type(pa.string()) if pa.types.is_string_view(f.type) else f

    return table.cast(pa.schema([plain(f) for f in table.schema]))


def unreadable(root: str, s3: S3Config, version: int, err: Exception) -> ConfigError:
    """The error for a dataset version that never existed or whose files were vacuumed."""
    known = [v.version for v in versions(root, s3)]
    return ConfigError(
        f"dataset version {version} cannot be read ({type(err).__name__}); available "
        f"versions: {known or 'none'} (VACUUM deletes the files of versions past retention)"
    )


def open_version(root: str, s3: S3Config, version: int | None = None) -> Any:
    """The ``captions`` DeltaTable at ``version`` (None: the latest); its columns are the
    stored ones (``records.SCHEMA`` and ``cohort``).

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

    Args:
        root: the storage root.
        s3: S3 settings for an ``s3://`` root.
        version: the Delta version; None reads the latest.
        columns: the columns wanted; None gives the ``records.SCHEMA`` columns in their
            order (not the ``cohort`` partition column, which must be named to be read), so
            the result suits ``records.from_arrow``.

    Raises:
        ConfigError: no dataset under ``root``, or the version never existed or was vacuumed.
    """
    table = open_version(root, s3, version)
    columns = list(columns) if columns is not None else record_schema().names
    try:
        return _strings(table.to_pyarrow_table(columns=columns)).select(columns)
    except Exception as err:  # a vacuumed version's files are gone
        raise unreadable(root, s3, table.version(), err) from err


def current_captions(root: str, s3: S3Config, columns: Iterable[str] = PLANNER_COLUMNS) -> Any:
    """The latest dataset's ``columns`` (an empty table with them when there is no dataset)."""
    columns = list(columns)
    schema = table_schema().empty_table().select(columns).schema
    table = open_captions(root, s3)
    if table is None:
        return schema.empty_table()
    return _strings(table.to_pyarrow_table(columns=columns)).select(columns).cast(schema)


def run_commit(table: Any, run_id: str, operation: str, depth: int = 50) -> dict | None:
    """The commit (its history entry) that ``run_id``'s ``operation`` made among the table's
    last ``depth`` commits, or None. A write whose reply was lost may still have committed:
    its retry asks here before concluding there was nothing to do."""
    for commit in table.history(depth):
        if commit.get("capflow.run_id") == run_id and commit.get("capflow.operation") == operation:
            return commit
    return None
