"""Shard manifests: the pending objects of a run, split into parquet files of fixed size.

``<root>/staging/<run_id>/manifests/shard-00000.parquet`` is written under a temporary name,
renamed into place, then committed by ``shard-00000._COMPLETE``. A shard whose marker exists
is skipped, so rerunning a run id (whose listing order is deterministic) rewrites only the
shards that were not committed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from capflow_core.config import S3Config
from capflow_core.failpoints import failpoint
from capflow_core.listing import ListedObject
from capflow_core.storage import filesystem, join_under

MARKER = "_COMPLETE"


def manifest_schema() -> Any:
    """The pyarrow schema of a manifest shard (one row per pending object)."""
    import pyarrow as pa

    s = pa.string()
    return pa.schema(
        [
            ("source_uri", s),
            ("source", s),
            ("key", s),
            ("etag", s),
            ("size", pa.int64()),
            ("mtime", pa.float64()),
            ("modality", s),
            ("domain", s),
            ("license", s),
            ("provenance", s),
            ("run_id", s),
        ]
    )


def manifests_dir(root: str, run_id: str) -> str:
    """Where a run's manifests go under the storage root."""
    return join_under(root, "staging", run_id, "manifests")


def completed_shards(root: str, run_id: str, s3: S3Config | None = None) -> list[str]:
    """The committed shard files of a run, in shard order."""
    fs, folder = filesystem(manifests_dir(root, run_id), s3 or S3Config())
    fs.invalidate_cache(folder)
    if not fs.exists(folder):
        return []
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False, refresh=True))
    done = {n[: -len(MARKER) - 1] for n in names if n.endswith("." + MARKER)}
    prefix = manifests_dir(root, run_id)
    return [f"{prefix}/{n}" for n in names if n.endswith(".parquet") and n[:-8] in done]


@dataclass
class ManifestWriter:
    """Collects pending objects and writes a shard every ``shard_size`` of them.

    Args:
        root: the storage root.
        run_id: the run whose staging folder receives the shards.
        shard_size: objects per shard.
        s3: S3 settings for an ``s3://`` root.
        dry_run: count shards, write nothing.
    """

    root: str
    run_id: str
    shard_size: int = 1000
    s3: S3Config | None = None
    dry_run: bool = False
    items: int = 0
    written: int = 0
    skipped: int = 0

    def __post_init__(self) -> None:
        self._buffer: list[ListedObject] = []
        self._fs, self._folder = filesystem(
            manifests_dir(self.root, self.run_id), self.s3 or S3Config()
        )
        self._fs.invalidate_cache(self._folder)  # s3fs instances (and listings) are shared

    @property
    def location(self) -> str:
        """The manifests folder (URI or local path)."""
        return manifests_dir(self.root, self.run_id)

    def add(self, entries: Iterable[ListedObject]) -> None:
        """Queue pending objects; full shards are written at once."""
        for entry in entries:
            self._buffer.append(entry)
            self.items += 1
            if len(self._buffer) >= self.shard_size:
                self._flush()

    def close(self) -> None:
        """Write the last, partial shard."""
        if self._buffer:
            self._flush()

    def _flush(self) -> None:
        index = self.written + self.skipped
        rows, self._buffer = self._buffer, []
        base = f"{self._folder}/shard-{index:05d}"
        if self.dry_run:
            self.written += 1
            return
        if self._fs.exists(f"{base}.{MARKER}"):
            self.skipped += 1
            return
        self._write(base, rows)
        self.written += 1

    def _write(self, base: str, rows: list[ListedObject]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        records = [{**asdict(r), "run_id": self.run_id} for r in rows]
        table = pa.Table.from_pylist(records, schema=manifest_schema())
        tmp = f"{base}.parquet.tmp-{uuid.uuid4().hex}"
        self._fs.makedirs(self._folder, exist_ok=True)
        with self._fs.open(tmp, "wb") as f:
            pq.write_table(table, f)
        self._fs.mv(tmp, f"{base}.parquet")
        marker = json.dumps({"rows": len(rows), "run_id": self.run_id}).encode()
        self._fs.pipe(f"{base}.{MARKER}", marker)
        failpoint("after-manifest-shard")
