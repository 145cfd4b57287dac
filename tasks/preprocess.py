"""Preprocess: turn a run's manifest shards into prepared and rejects shards, on Dask.

A plain function: ``capflow preprocess`` and the (later) Prefect task both call
:func:`preprocess`. Each committed manifest shard without a ``_PREPARED`` marker is split
into batches of ``preprocess.items_per_task`` items, one Dask task per batch; the results
are de-duplicated, written atomically, MERGEd into ``assets``, and the marker is written
last, so a killed run redoes at most the shard it was on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from capflow_core.config import Config, S3Config
from capflow_core.errors import ConfigError
from capflow_core.failpoints import failpoint


@dataclass(frozen=True)
class PreprocessResult:
    """A run's reconciliation: ``listed = prepared + rejected + unchanged``.

    ``pending`` counts the manifest rows (new and changed objects); ``shards_done`` the
    shards prepared by this call, ``shards_skipped`` those found already prepared.
    """

    run_id: str
    shards: int
    shards_done: int
    shards_skipped: int
    listed: int
    unchanged: int
    pending: int
    prepared: int
    rejected: int
    reasons: dict[str, int] = field(default_factory=dict)
    reconciliation: str = ""

    @property
    def reconciled(self) -> bool:
        """Whether every listed object is accounted for."""
        return self.pending == self.prepared + self.rejected and (
            self.listed == self.pending + self.unchanged
        )

    def table(self) -> list[tuple[str, int]]:
        """The reconciliation as ``(label, count)`` rows, reasons indented."""
        rows = [("listed", self.listed), ("unchanged", self.unchanged)]
        rows += [("pending", self.pending), ("prepared", self.prepared)]
        rows.append(("rejected", self.rejected))
        rows += [(f"  {code}", n) for code, n in sorted(self.reasons.items())]
        return rows

    def counts(self) -> dict[str, Any]:
        """The reconciliation as stored in ``reconciliation.json``."""
        keys = ("run_id", "shards", "listed", "unchanged", "pending", "prepared", "rejected")
        return {k: getattr(self, k) for k in keys} | {
            "reasons": self.reasons,
            "reconciled": self.reconciled,
        }


def latest_run(root: str, s3: S3Config) -> str:
    """The run whose newest committed manifest is the most recent.

    Raises:
        ConfigError: no run under ``root`` has committed manifests.
    """
    from capflow_core.manifests import MARKER
    from capflow_core.storage import filesystem, join_under

    fs, staging = filesystem(join_under(root, "staging"), s3)
    fs.invalidate_cache(staging)
    best: tuple[float, str] | None = None
    runs = fs.ls(staging, detail=False) if fs.exists(staging) else []
    for run in runs:
        folder = f"{run}/manifests"
        if not fs.exists(folder):
            continue
        for info in fs.ls(folder, detail=True):
            if info["name"].endswith("." + MARKER):
                stamp = _mtime(info)
                key = (stamp, run.rsplit("/", 1)[-1])
                best = key if best is None or key > best else best
    if best is None:
        raise ConfigError(f"no run with manifests under {root}: run `capflow ingest` first")
    return best[1]


def _mtime(info: dict[str, Any]) -> float:
    stamp = info.get("mtime") or info.get("LastModified") or 0
    return stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)


def preprocess(
    cfg: Config,
    *,
    root: str | None = None,
    run_id: str | None = None,
    dask_address: str | None = None,
    on_shard: Callable[[int, int], None] | None = None,
) -> PreprocessResult:
    """Prepare every committed, not yet prepared manifest shard of a run.

    Args:
        cfg: the configuration (``preprocess``, ``dask``, ``s3``, ``video``, ``image``).
        root: replace the configured storage root.
        run_id: the run (default: :func:`latest_run`).
        dask_address: join this scheduler (overrides ``dask.address``).
        on_shard: called with ``(shards finished, shards to do)`` after each shard.

    Raises:
        ConfigError: no run to preprocess.
        InfrastructureError: storage kept failing (rerun: finished shards are kept).

    The reconciliation is also stored (``reconciliation`` says where).
    """
    from dataclasses import replace

    from capflow_core.asset_status import listing_counts
    from capflow_core.manifests import completed_shards
    from capflow_core.prepared_shards import read_marker, shard_name
    from capflow_core.run_outcome import write_reconciliation

    root = root or cfg.storage.root
    run_id = run_id or latest_run(root, cfg.s3)
    shards = completed_shards(root, run_id, cfg.s3)
    markers = {shard_name(s): read_marker(root, run_id, shard_name(s), cfg.s3) for s in shards}
    todo = [s for s in shards if markers[shard_name(s)] is None]
    if todo:
        with dask_client(cfg, dask_address) as client:
            for done, manifest in enumerate(todo, 1):
                markers[shard_name(manifest)] = _prepare_shard(client, cfg, root, run_id, manifest)
                if on_shard is not None:
                    on_shard(done, len(todo))
    reasons: dict[str, int] = {}
    for marker in markers.values():
        for code, n in marker["reasons"].items():
            reasons[code] = reasons.get(code, 0) + n
    prepared = sum(m["prepared"] for m in markers.values())
    rejected = sum(m["rejected"] for m in markers.values())
    counts = listing_counts(root, cfg.s3, run_id)
    result = PreprocessResult(
        run_id=run_id,
        shards=len(shards),
        shards_done=len(todo),
        shards_skipped=len(shards) - len(todo),
        listed=counts.listed,
        unchanged=counts.listed - counts.pending,
        pending=sum(_manifest_rows(root, run_id, s, cfg.s3) for s in shards),
        prepared=prepared,
        rejected=rejected,
        reasons=dict(sorted(reasons.items())),
    )
    where = write_reconciliation(root, run_id, result.counts(), cfg.s3)
    return replace(result, reconciliation=where)


@contextmanager
def dask_client(cfg: Config, address: str | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` to submit preprocessing batches to.

    Joins ``address`` (else ``dask.address``) when set; otherwise starts a ``LocalCluster``
    of ``dask.n_workers`` (default: the cores) single-threaded worker processes, closed on
    exit.
    """
    from distributed import Client, LocalCluster

    address = address or cfg.dask.address
    if address:
        with Client(address) as client:
            yield client
        return
    workers = cfg.dask.n_workers or os.cpu_count() or 1
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _manifest_rows(root: str, run_id: str, manifest: str, s3: S3Config) -> int:
    import json

    from capflow_core.manifests import MARKER
    from capflow_core.storage import filesystem

    fs, path = filesystem(manifest.removesuffix(".parquet") + "." + MARKER, s3)
    return int(json.loads(fs.cat_file(path))["rows"])


def _oversize(rows: list[dict[str, Any]], cfg: Config) -> tuple[list[Any], list[dict[str, Any]]]:
    """Rejections for rows whose listed size no media kind allows (never downloaded), and
    the other rows. The exact per-kind byte limit is applied once the bytes are sniffed."""
    from capflow_core.prepare import Rejection

    limit = max(cfg.image.max_bytes, cfg.video.max_bytes)
    rejected, rest = [], []
    for row in rows:
        size = row.get("size")
        if size is not None and size > limit:
            detail = (
                f"{row['source_uri']}: {size} bytes exceeds the larger of image.max_bytes and "
                f"video.max_bytes ({limit}); not read"
            )
            rejected.append(Rejection(row["source_uri"], "file_too_large", detail))
        else:
            rest.append(row)
    return rejected, rest


def _prepare_shard(client: Any, cfg: Config, root: str, run_id: str, manifest: str) -> dict:
    import pyarrow.parquet as pq

    from capflow_core.asset_status import known_and_first_seen, record_outcomes
    from capflow_core.dedup import dedup
    from capflow_core.prepare import PreparedItem, Rejection, prepare_batch
    from capflow_core.prepared_shards import commit_shard, shard_name, write_shard
    from capflow_core.run_outcome import store_rejects
    from capflow_core.storage import filesystem

    fs, path = filesystem(manifest, cfg.s3)
    with fs.open(path, "rb") as f:
        rows = pq.read_table(f).to_pylist()
    oversize, work = _oversize(rows, cfg)
    size = cfg.preprocess.items_per_task
    batches = [work[i : i + size] for i in range(0, len(work), size)]
    futures = client.map(prepare_batch, batches, cfg=cfg, pure=False)
    outcomes = [o for batch in client.gather(futures) for o in batch]
    if len(outcomes) != len(work):
        raise RuntimeError(f"{manifest}: {len(work)} rows but {len(outcomes)} outcomes")
    outcomes += oversize
    items = [o for o in outcomes if isinstance(o, PreparedItem)]
    rejections = [o for o in outcomes if isinstance(o, Rejection)]
    uris = {r["source_uri"] for r in rows}
    known, first_seen = known_and_first_seen(root, cfg.s3, uris)
    known = [k for k in known if k.source_uri not in uris]  # old versions of changed objects
    items, dups = dedup(
        items, first_seen=first_seen, known=known, distance=cfg.preprocess.near_dup_distance
    )
    rejections += dups
    shard = shard_name(manifest)
    marker = write_shard(root, run_id, shard, items, rejections, cfg.s3)
    record_outcomes(root, cfg.s3, run_id, items, rejections)
    store_rejects(root, cfg.s3, run_id, shard, rejections)  # idempotent: before the marker
    commit_shard(root, run_id, shard, marker, cfg.s3)
    failpoint("after-prepared-shard")
    return marker
