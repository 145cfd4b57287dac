"""Export one dataset version as LLaVA/InternVL JSON, Hugging Face parquet or WebDataset.

A plain function: ``capflow dataset export`` (and any later Prefect task) calls
:func:`export_dataset`. Caption rows come from the ``captions`` table at the version asked
for; pixels come from the prepared shard of the run that prepared each asset
(``assets.pending_run``, else the caption's own run). An asset whose prepared row is gone
(staging cleaned up) or does not decode is listed in ``skipped`` with a reason, never
dropped silently. The export is written into a temporary sibling folder and renamed into
place, so a failed export leaves the previous one (if any) untouched.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from capflow_core.config import S3Config
from capflow_core.errors import ConfigError, ItemError
from tasks.export_formats import FORMATS, WRITERS, ExportItem

log = logging.getLogger(__name__)

MARKER = "capflow-export.json"
_CAPTION_COLUMNS = [
    "caption_id", "asset_id", "source_uri", "modality", "license", "provenance", "domain",
    "caption", "judge", "accepted", "fingerprint", "run_id", "created_at",
]  # fmt: skip


@dataclass
class ExportResult:
    """What one export wrote; ``files`` are the data files, relative to ``out``."""

    out: str
    format: str
    version: int
    records: int
    media_files: int
    skipped: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def _caption_rows(
    root: str, s3: S3Config, version: int | None, include_rejected: bool
) -> tuple[int, list[dict[str, Any]]]:
    """The version read and its caption rows (accepted only unless ``include_rejected``)."""
    from capflow_core.captions_store import open_version, unreadable
    from capflow_core.delta_store import scan_columns

    table = open_version(root, s3, version)
    rows = []
    try:
        for batch in scan_columns(table, _CAPTION_COLUMNS):
            rows += [r for r in batch.to_pylist() if include_rejected or r["accepted"]]
    except OSError as err:  # a vacuumed version's files are gone
        raise unreadable(root, s3, table.version(), err) from err
    return table.version(), sorted(rows, key=lambda r: r["asset_id"])


def _with_media(
    root: str, s3: S3Config, rows: list[dict[str, Any]], skipped: list[dict[str, Any]]
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(caption row, prepared row) pairs; rows without a prepared row go to ``skipped``."""
    from capflow_core.prepared_media import prepared_for_captions

    found, tried = prepared_for_captions(root, s3, {r["asset_id"]: r["run_id"] for r in rows})
    for row in rows:
        if row["asset_id"] in found:
            yield row, found[row["asset_id"]]
        else:
            where = ", ".join(tried[row["asset_id"]]) or "none recorded"
            detail = f"no prepared row in the staging of run(s): {where}"
            skipped.append(_skip(row, "prepared_media_missing", detail))


def _skip(row: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
    ids = {"asset_id": row["asset_id"], "source_uri": row["source_uri"]}
    return ids | {"reason": reason, "detail": detail}


def _item(row: dict[str, Any], prepared: dict[str, Any], version: int) -> ExportItem:
    """The export item of a caption row and its prepared media (MP4 encoded for a video).

    Raises:
        ItemError: the stored media does not decode.
    """
    from PIL import Image

    from capflow_core.backends.video_encode import encode_mp4
    from capflow_core.prepared_media import media_part

    extra: dict[str, Any] = {"num_frames": None, "duration_s": prepared.get("duration_s")}
    if row["modality"] == "video":
        video = media_part(prepared)
        media = encode_mp4(video.frames, video.fps)
        height, width = video.frames.shape[1:3]
        extra["num_frames"] = int(video.frames.shape[0])
    else:
        media = prepared["image"]
        try:
            width, height = Image.open(io.BytesIO(media)).size
        except (OSError, TypeError) as err:
            raise ItemError(
                "load", "corrupt", f"{row['source_uri']}: prepared image: {err}"
            ) from None
    judge = row["judge"] or {}
    meta = {
        "id": row["asset_id"],
        **{k: row[k] for k in ("asset_id", "caption_id", "source_uri", "modality", "domain")},
        "accepted": bool(row["accepted"]),
        "license": row["license"] or prepared.get("license"),
        "provenance": row["provenance"] or prepared.get("provenance"),
        "width": int(width),
        "height": int(height),
        "source_width": prepared.get("width"),
        "source_height": prepared.get("height"),
        **extra,
        "judge_scores": dict(judge.get("scores") or []),
        "judge_rule": judge.get("rule"),
        **{k: row[k] for k in ("fingerprint", "run_id", "created_at")},
        "dataset_version": version,
    }
    return ExportItem(row["asset_id"], row["modality"], media, row["caption"], meta)


def _staging_folder(out: Path) -> Path:
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"--out {out} is a file: give a folder")
        if any(out.iterdir()) and not (out / MARKER).is_file():
            raise ConfigError(
                f"--out {out} is not empty and not a capflow export (no {MARKER}): "
                "give an empty or new folder"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the export is an ordinary folder
    return tmp


def _install(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old)


def export_dataset(
    root: str,
    s3: S3Config,
    *,
    out: str | Path,
    fmt: str,
    version: int | None = None,
    include_rejected: bool = False,
    on_item: Callable[[], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    shard_size: int = 1000,
) -> ExportResult:
    """Export a dataset version (accepted captions only unless ``include_rejected``).

    Args:
        root: the storage root holding ``tables/`` and ``staging/``.
        s3: S3 settings for an ``s3://`` root.
        out: a local folder: new, empty, or a previous export (which is replaced).
        fmt: ``llava``, ``parquet`` or ``webdataset``.
        version: the dataset (``captions`` Delta) version; None = the latest.
        include_rejected: also export judge-rejected captions (``accepted`` = false).
        on_item: called once per caption row handled (exported or skipped).
        on_start: called once with the number of caption rows to handle.
        shard_size: samples per parquet file / WebDataset tar.

    Returns:
        The counts, the data files written and the skipped assets with their reasons.

    Raises:
        ConfigError: unknown format, missing dataset or version, or an unusable ``out``.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use one of: {', '.join(FORMATS)}")
    if shard_size < 1:
        raise ConfigError(f"shard_size must be at least 1, got {shard_size}")
    out = Path(out).expanduser().absolute()
    tmp = _staging_folder(out)
    skipped: list[dict[str, Any]] = []
    try:
        version, rows = _caption_rows(root, s3, version, include_rejected)
        if on_start is not None:
            on_start(len(rows))
        writer = WRITERS[fmt](tmp, shard_size)
        records = handled = 0
        for row, prepared in _with_media(root, s3, rows, skipped):
            try:
                writer.add(_item(row, prepared, version))
                records += 1
            except ItemError as err:
                skipped.append(_skip(row, "media_corrupt", str(err)))
            handled += 1
            if on_item is not None:
                on_item()
        for _ in range(len(rows) - handled if on_item is not None else 0):
            on_item()  # the rows without prepared media, found missing at the end
        files = writer.close()
        result = ExportResult(str(out), fmt, version, records, writer.media_files, skipped, files)
        marker = asdict(result) | {"include_rejected": include_rejected}
        marker["created_at"] = datetime.now(UTC).isoformat()
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, ensure_ascii=False))
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if skipped:
        first = ", ".join(f"{s['asset_id'][:12]} ({s['reason']})" for s in skipped[:5])
        log.warning(
            "export of version %d skipped %d asset(s) without usable prepared media: %s",
            *(version, len(skipped), first),
        )
    return result
