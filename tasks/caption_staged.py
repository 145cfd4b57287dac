"""Reading a run's staged caption records and shard markers.

Caption shards are staged under ``<root>/staging/<run_id>/captioned/``: ``<shard>.parquet``
(records in ``records.SCHEMA``) committed by ``<shard>._CAPTIONED`` (counts, tokens, cost).
Only committed shards are read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from capflow_core.config import S3Config
from capflow_core.storage import filesystem, join_under

MARKER = "_CAPTIONED"


def captioned_dir(root: str, run_id: str) -> str:
    """``<root>/staging/<run_id>/captioned``."""
    return join_under(root, "staging", run_id, "captioned")


def _committed_shards(fs: Any, folder: str) -> list[str]:
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False)]
    return sorted(n.removesuffix("." + MARKER) for n in names if n.endswith("." + MARKER))


def staged_records(
    root: str,
    run_id: str,
    s3: S3Config,
    columns: Iterable[str] | None = None,
    asset_ids: Iterable[str] | None = None,
) -> Any:
    """A run's committed staged records, one pyarrow table (canonical schema).

    Args:
        columns: read only these columns (default: all), e.g. for a summary.
        asset_ids: keep only these assets' rows, filtered shard by shard.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from capflow_core.records import SCHEMA

    names = list(columns) if columns is not None else SCHEMA.names
    schema = pa.schema([SCHEMA.field(c) for c in names])
    wanted = None if asset_ids is None else pa.array(sorted(set(asset_ids)), pa.string())
    fs, folder = filesystem(captioned_dir(root, run_id), s3)
    if not fs.exists(folder):
        return schema.empty_table()
    read = None if columns is None else list(dict.fromkeys([*names, "asset_id"]))
    tables = []
    for shard in _committed_shards(fs, folder):
        with fs.open(f"{folder}/{shard}.parquet", "rb") as f:
            table = pq.read_table(f, columns=read)
        if wanted is not None:
            table = table.filter(pc.is_in(table.column("asset_id"), value_set=wanted))
        tables.append(table.select(names).cast(schema))
    return pa.concat_tables(tables) if tables else schema.empty_table()


def caption_markers(root: str, run_id: str, s3: S3Config) -> dict[str, dict[str, Any]]:
    """Every committed caption marker of a run, by shard."""
    fs, folder = filesystem(captioned_dir(root, run_id), s3)
    if not fs.exists(folder):
        return {}
    return {
        shard: json.loads(fs.cat_file(f"{folder}/{shard}.{MARKER}"))
        for shard in _committed_shards(fs, folder)
    }
