"""Temporary objects that killed writers left under ``<root>/staging/``.

Every staged file is written as ``<name>.tmp-<random>`` and then moved to its name, so a
reader never sees half a file. A writer killed between the two (a SIGKILLed worker, a lost
node) leaves its temporary object behind; the rerun writes a new one and never reads it.
:func:`abandoned_temp_files` finds those older than an age no live write takes, and
``capflow dataset vacuum`` lists or deletes them next to the dataset's old files.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from capflow_core.config import S3Config
from capflow_core.storage import filesystem, is_s3, join_under

TEMP_MARK = ".tmp-"
DEFAULT_AGE_S = 3600.0  # no staged write takes an hour: older temp objects are orphans


def _modified(info: dict[str, Any]) -> float | None:
    """Epoch seconds of a file's last change: local ``mtime``, S3 ``LastModified``."""
    when = info.get("mtime", info.get("LastModified"))
    if isinstance(when, datetime):
        return when.timestamp()
    return float(when) if when is not None else None


def abandoned_temp_files(
    root: str, s3: S3Config, older_than_s: float = DEFAULT_AGE_S, now: float | None = None
) -> list[str]:
    """URIs of temporary objects under ``<root>/staging/`` last changed ``older_than_s`` ago."""
    fs, base = filesystem(join_under(root, "staging"), s3)
    if not fs.exists(base):
        return []
    cutoff = (time.time() if now is None else now) - older_than_s
    found = []
    for path, info in fs.find(base, detail=True).items():
        if TEMP_MARK not in path.rsplit("/", 1)[-1]:
            continue
        modified = _modified(info)
        if modified is not None and modified <= cutoff:
            found.append(f"s3://{path}" if is_s3(root) else path)
    return sorted(found)


def delete_temp_files(root: str, s3: S3Config, uris: list[str]) -> int:
    """Delete the given temporary objects (as found by :func:`abandoned_temp_files`).

    Raises:
        ValueError: a URI that is not a temporary object under ``<root>/staging/``.
    """
    fs, base = filesystem(join_under(root, "staging"), s3)
    paths = [filesystem(u, s3)[1] for u in uris]
    for uri, path in zip(uris, paths, strict=True):
        if not path.startswith(base + "/") or TEMP_MARK not in path.rsplit("/", 1)[-1]:
            raise ValueError(f"{uri} is not a temporary object under {root}/staging/")
    if paths:
        fs.rm(paths)
    return len(paths)
