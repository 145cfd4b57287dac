"""Prepared and rejects shards of a run, their ``_PREPARED`` markers, and the assets update.

``<root>/staging/<run_id>/prepared/shard-NNNNN.parquet`` (one row per item ready to caption)
and ``<root>/staging/<run_id>/rejects/shard-NNNNN.parquet`` (one row per rejection) are
written under temporary names, renamed into place, then committed by
``prepared/shard-NNNNN._PREPARED`` (JSON counts). A shard with its marker is done.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from typing import Any

from capflow_core.config import S3Config
from capflow_core.prepare import PreparedItem, Rejection
from capflow_core.storage import filesystem, join_under

MARKER = "_PREPARED"


def prepared_schema() -> Any:
    """The pyarrow schema of a prepared shard."""
    import pyarrow as pa

    s, f = pa.string(), pa.float64()
    return pa.schema(
        [
            ("asset_id", s),
            ("source_uri", s),
            ("modality", s),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("duration_s", f),
            ("fps", f),
            ("phash", s),
            ("image", pa.binary()),
            ("frames", pa.list_(pa.binary())),
            ("domain", s),
            ("license", s),
            ("provenance", s),
            ("size", pa.int64()),
        ]
    )


def rejects_schema() -> Any:
    """The pyarrow schema of a rejects shard (``run_id`` added to each row)."""
    import pyarrow as pa

    names = ("source_uri", "reason_code", "detail", "asset_id", "stage", "run_id")
    return pa.schema([(n, pa.string()) for n in names])


def staging_dir(root: str, run_id: str, kind: str) -> str:
    """``<root>/staging/<run_id>/<kind>`` (``prepared`` or ``rejects``)."""
    return join_under(root, "staging", run_id, kind)


def shard_name(manifest_uri: str) -> str:
    """``shard-NNNNN`` from a manifest shard's path."""
    return manifest_uri.rsplit("/", 1)[-1].removesuffix(".parquet")


def read_marker(root: str, run_id: str, shard: str, s3: S3Config) -> dict[str, Any] | None:
    """A committed shard's marker (its counts), or None when the shard is not prepared."""
    fs, folder = filesystem(staging_dir(root, run_id, "prepared"), s3)
    path = f"{folder}/{shard}.{MARKER}"
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None


def write_shard(
    root: str,
    run_id: str,
    shard: str,
    items: list[PreparedItem],
    rejections: list[Rejection],
    s3: S3Config,
) -> dict[str, Any]:
    """Write a shard's prepared and rejects files atomically (not yet committed).

    Returns:
        The marker content for :func:`commit_shard`: ``prepared``, ``rejected`` and
        ``reasons`` (count per reason code).
    """
    import pyarrow as pa

    prepared = pa.Table.from_pylist([asdict(i) for i in items], schema=prepared_schema())
    rows = [{**asdict(r), "run_id": run_id} for r in rejections]
    rejects = pa.Table.from_pylist(rows, schema=rejects_schema())
    for kind, table in (("prepared", prepared), ("rejects", rejects)):
        _write_atomic(staging_dir(root, run_id, kind), shard, table, s3)
    reasons: dict[str, int] = {}
    for r in rejections:
        reasons[r.reason_code] = reasons.get(r.reason_code, 0) + 1
    return {"prepared": len(items), "rejected": len(rejections), "reasons": reasons}


def commit_shard(root: str, run_id: str, shard: str, marker: dict[str, Any], s3: S3Config) -> None:
    """Write the shard's ``_PREPARED`` marker: from now on reruns skip it."""
    fs, folder = filesystem(staging_dir(root, run_id, "prepared"), s3)
    fs.pipe(f"{folder}/{shard}.{MARKER}", json.dumps(marker, sort_keys=True).encode())


def _write_atomic(uri: str, shard: str, table: Any, s3: S3Config) -> None:
    import pyarrow.parquet as pq

    fs, folder = filesystem(uri, s3)
    fs.makedirs(folder, exist_ok=True)
    tmp = f"{folder}/{shard}.parquet.tmp-{uuid.uuid4().hex}"
    with fs.open(tmp, "wb") as f:
        pq.write_table(table, f)
    fs.mv(tmp, f"{folder}/{shard}.parquet")
