"""Prepared-shard rows as engine inputs, and finding an asset's prepared row again.

A prepared shard (:mod:`capflow_core.prepared_shards`) holds each item's re-encoded JPEG
(``image``) or sampled JPEG frames (``frames``). The caption stage decodes them into the
backend's media parts; nothing is read from the source again. Assets captioned again later
(a changed fingerprint, a retry) find their row in the staging folder of the run that
prepared them (``assets.pending_run``).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from capflow_core.config import S3Config
from capflow_core.engine import Sample
from capflow_core.errors import ItemError
from capflow_core.records import Route
from capflow_core.storage import filesystem


def media_part(row: dict[str, Any]) -> Any:
    """The ImagePart or VideoPart of a prepared row.

    Raises:
        ItemError: stage ``load``, code ``corrupt``, when the stored bytes do not decode.
    """
    import numpy as np
    from PIL import Image

    from capflow_core.backends.base import ImagePart, VideoPart

    try:
        if row["modality"] == "video":
            frames = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in row["frames"]]
            if not frames:
                raise ValueError("no frames")
            duration = row.get("duration_s") or 0.0
            fps = len(frames) / duration if duration > 0 else 1.0
            return VideoPart(np.stack(frames), fps=fps, source_fps=row.get("fps"))
        return ImagePart(Image.open(io.BytesIO(row["image"])).convert("RGB"))
    except (OSError, ValueError, TypeError, KeyError) as err:
        where = row.get("source_uri")
        raise ItemError("load", "corrupt", f"{where}: prepared media: {err}") from None


def sample_from_row(row: dict[str, Any], route: Route | None = None) -> Sample:
    """An engine Sample for a prepared row (media decoded; ``route`` reused when given).

    Raises:
        ItemError: the stored media does not decode.
    """
    return Sample(
        uri=row["source_uri"],
        domain=row.get("domain"),
        modality=row["modality"],
        license=row.get("license"),
        provenance=row.get("provenance"),
        asset_id=row["asset_id"],
        media=media_part(row),
        route=route,
    )


def prepared_shards(root: str, run_id: str, s3: S3Config) -> list[str]:
    """URIs of a run's committed prepared shards (those with a ``_PREPARED`` marker)."""
    from capflow_core.prepared_shards import MARKER, staging_dir

    uri = staging_dir(root, run_id, "prepared")
    fs, folder = filesystem(uri, s3)
    if not fs.exists(folder):
        return []
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(folder, detail=False))
    done = {n.removesuffix("." + MARKER) for n in names if n.endswith("." + MARKER)}
    return [f"{uri}/{n}.parquet" for n in sorted(done)]


def read_rows(shard_uri: str, s3: S3Config, asset_ids: set[str] | None = None) -> list[dict]:
    """The rows of one prepared shard (only ``asset_ids`` when given)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    fs, path = filesystem(shard_uri, s3)
    with fs.open(path, "rb") as f:
        table = pq.read_table(f)
    if asset_ids is not None:
        table = table.filter(pc.is_in(table.column("asset_id"), value_set=_array(asset_ids)))
    return table.to_pylist()


def find_prepared(root: str, s3: S3Config, wanted: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Prepared rows of assets, looked up in the run that prepared each.

    Args:
        wanted: ``asset_id -> run_id`` (the run whose staging holds the prepared row).

    Yields the rows found; ids without a stored row (staging cleaned up) are not yielded.
    """
    by_run: dict[str, set[str]] = {}
    for asset_id, run_id in wanted.items():
        by_run.setdefault(run_id, set()).add(asset_id)
    for run_id, ids in sorted(by_run.items()):
        left = set(ids)
        for shard in prepared_shards(root, run_id, s3):
            for row in read_rows(shard, s3, left):
                if row["asset_id"] in left:
                    left.discard(row["asset_id"])
                    yield row
            if not left:
                break


def _array(values: set[str]) -> Any:
    import pyarrow as pa

    return pa.array(sorted(values), type=pa.string())


def preparing_runs(root: str, s3: S3Config, asset_ids: set[str]) -> dict[str, str]:
    """``asset_id -> assets.pending_run``: the run whose staging holds each prepared row."""
    import pyarrow.compute as pc

    from capflow_core.delta_store import open_assets, scan_columns

    table = open_assets(root, s3)
    if table is None or not asset_ids:
        return {}
    wanted, runs = _array(asset_ids), {}
    for batch in scan_columns(table, ["asset_id", "pending_run"]):
        hits = batch.filter(pc.is_in(batch.column("asset_id"), value_set=wanted))
        runs.update((r["asset_id"], r["pending_run"]) for r in hits.to_pylist() if r["pending_run"])
    return runs


def prepared_for_captions(
    root: str, s3: S3Config, caption_runs: dict[str, str | None]
) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Prepared rows of captioned assets: the preparing run's staging first, then the run
    that wrote the caption (usually the same run).

    Args:
        caption_runs: ``asset_id -> run_id`` of each caption row.

    Returns:
        ``(found, tried)``: ``asset_id -> prepared row``, and the runs looked in per asset.
    """
    found: dict[str, dict[str, Any]] = {}
    tried: dict[str, list[str]] = {a: [] for a in caption_runs}
    pending = preparing_runs(root, s3, set(caption_runs))
    captioned = {a: run for a, run in caption_runs.items() if run}
    for runs in (pending, captioned):
        wanted = {a: run for a, run in runs.items() if a not in found and run not in tried[a]}
        for asset_id, run in wanted.items():
            tried[asset_id].append(run)
        for row in find_prepared(root, s3, wanted):
            found[row["asset_id"]] = row
    return found, tried
