"""Read one source object to a local file with its sha256, retrying transient failures.

A missing or forbidden object is permanent: an :class:`ItemError` with code ``read_error``
(the item becomes a rejection). Anything else (S3 5xx, timeouts, dropped connections) is
retried with exponential backoff; when the tries run out it is an
:class:`InfrastructureError` and the shard is retried by its caller, never half-recorded.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from capflow_core.config import S3Config
from capflow_core.errors import InfrastructureError, ItemError
from capflow_core.media_format import extension
from capflow_core.storage import filesystem, is_s3

_CHUNK = 1 << 20
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def fetch_object(
    uri: str, s3: S3Config, spool_dir: str | os.PathLike[str], *, attempts: int = 4
) -> tuple[Path, str]:
    """A local file with the object's bytes, and their sha256 hex digest.

    Local objects are read in place; remote ones are streamed (in 1 MiB chunks, never whole
    in memory) into ``spool_dir`` under a name that keeps the extension.

    Raises:
        ItemError: stage ``read``, code ``read_error``: the object is gone or forbidden.
        InfrastructureError: a transient error outlasted ``attempts`` tries.
    """
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            return _fetch_once(uri, s3, Path(spool_dir))
        except _PERMANENT as err:
            raise ItemError("read", "read_error", f"{uri}: {type(err).__name__}: {err}") from None
        except Exception as err:  # network and server errors of any fsspec backend
            last = err
            if attempt < attempts - 1:
                time.sleep(min(0.2 * 2**attempt, 5.0))
    raise InfrastructureError(f"{uri}: reading failed {attempts} times: {last}") from last


def _fetch_once(uri: str, s3: S3Config, spool_dir: Path) -> tuple[Path, str]:
    fs, path = filesystem(uri, s3)
    if fs.isdir(path):
        raise IsADirectoryError(f"{uri} is a directory")
    digest = hashlib.sha256()
    if not is_s3(uri):
        with open(path, "rb") as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
        return Path(path), digest.hexdigest()
    ext = extension(uri)
    local = spool_dir / ("object." + ext if ext and len(ext) <= 8 else "object")
    with fs.open(path, "rb") as src, open(local, "wb") as dst:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
    return local, digest.hexdigest()
