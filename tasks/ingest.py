"""Ingest: list the sources, diff against the ``assets`` table, write shard manifests.

A plain function: ``capflow ingest`` and the (later) Prefect task both call :func:`ingest`.
"""

from __future__ import annotations

import functools
import re
import secrets
import time
from dataclasses import dataclass

from capflow_core.config import Config, SourceConfig
from capflow_core.errors import ConfigError

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class IngestResult:
    """What one ingest did (``shards`` = shards written, or that would be on a dry run)."""

    run_id: str
    new: int
    changed: int
    unchanged: int
    removed: int
    pending: int
    shards: int
    shards_skipped: int
    manifests: str
    dry_run: bool


def new_run_id() -> str:
    """A sortable, unique run id such as ``20261126T083000Z-3f9a1c``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def source_prefix(uri: str) -> str:
    """The prefix every listed ``source_uri`` of a source starts with (ends in ``/``)."""
    return uri.rstrip("/") + "/"


def ingest(
    cfg: Config,
    *,
    sources: list[SourceConfig] | None = None,
    root: str | None = None,
    run_id: str | None = None,
    dry_run: bool = False,
) -> IngestResult:
    """List every source, diff against ``assets``, write the pending objects as manifests.

    Args:
        cfg: the configuration (``sources``, ``s3``, ``ingest.shard_size``, storage root).
        sources: replace the configured sources.
        root: replace the configured storage root.
        run_id: the run (default: a new one); rerunning one skips its committed shards.
        dry_run: classify and count only; nothing is written.

    Raises:
        ConfigError: no sources, or an unusable run id.
    """
    from capflow_core.delta_store import diff
    from capflow_core.listing import list_sources, read_object_metadata
    from capflow_core.manifests import ManifestWriter

    sources = sources if sources is not None else cfg.sources
    if not sources:
        raise ConfigError("no sources: add a `sources:` list to the config or pass --source URI")
    run_id = run_id or new_run_id()
    if not _RUN_ID.match(run_id):
        raise ConfigError(f"run id {run_id!r}: use letters, digits, '.', '_' and '-' only")
    root = root or cfg.storage.root
    writer = ManifestWriter(root, run_id, cfg.ingest.shard_size, cfg.s3, dry_run)
    counts = diff(
        list_sources(sources, cfg.s3),
        root,
        run_id,
        s3=cfg.s3,
        prefixes=[source_prefix(s.uri) for s in sources],
        dry_run=dry_run,
        enrich=functools.partial(read_object_metadata, s3=cfg.s3),
        on_pending=writer.add,
    )
    writer.close()
    return IngestResult(
        run_id=run_id,
        new=counts.new,
        changed=counts.changed,
        unchanged=counts.unchanged,
        removed=counts.removed,
        pending=writer.items,
        shards=writer.written,
        shards_skipped=writer.skipped,
        manifests=writer.location,
        dry_run=dry_run,
    )
