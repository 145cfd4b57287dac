"""Helpers for whole-path preprocessing tests: config, distinct images, reading outcomes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from capflow_core.config import Config, config_from_dict
from capflow_core.prepared_shards import staging_dir
from capflow_core.storage import filesystem
from tests.flows.cli_runner import ROOT
from tests.tasks.media_cases import scene

TINY = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())


def config_dict(root: str, source: str, shard_size: int = 8) -> dict[str, Any]:
    """The tiny config with one source, a storage root, small shards and batches."""
    return (
        {**TINY, "storage": {"root": root}, "sources": [{"uri": source, "license": "cc0"}]}
        | {"ingest": {"shard_size": shard_size}}
        | {"preprocess": {"items_per_task": 2, "max_pixels": 200 * 200}}
    )


def make_config(root: str, source: str, shard_size: int = 8) -> Config:
    """:func:`config_dict` as a :class:`Config`."""
    return config_from_dict(config_dict(root, source, shard_size))


def image_bytes(seed: int, fmt: str = "JPEG") -> bytes:
    """A 600x560 picture that passes the filters; distinct seeds are never near-duplicates."""
    buf = io.BytesIO()
    scene(seed, 600, 560).save(buf, format=fmt)
    return buf.getvalue()


def write_images(folder: Path, names: dict[str, int]) -> None:
    """Write ``name -> seed`` pictures under ``folder``."""
    for name, seed in names.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes(seed, "PNG" if name.endswith(".png") else "JPEG"))


def staged_rows(root: str, run_id: str, kind: str, cfg: Config) -> list[dict[str, Any]]:
    """Every row of a run's ``prepared`` or ``rejects`` staging shards (no media bytes)."""
    fs, folder = filesystem(staging_dir(root, run_id, kind), cfg.s3)
    fs.invalidate_cache(folder)
    if not fs.exists(folder):
        return []
    rows: list[dict[str, Any]] = []
    for p in sorted(p for p in fs.ls(folder, detail=False) if p.endswith(".parquet")):
        with fs.open(p, "rb") as f:
            table = pq.read_table(f)
        media = [c for c in ("image", "frames") if c in table.schema.names]
        rows += table.drop_columns(media).to_pylist()
    return rows
