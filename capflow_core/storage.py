"""Filesystems and Delta storage options for the storage root and the sources.

S3 follows the AWS conventions (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_PROFILE``,
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``), overridable by the config's ``s3``
section. Credentials are read from the environment only and are never logged or returned
by :func:`describe`. Every S3 client is bounded: connect/read timeouts and a few retries
with exponential backoff (``S3Config``), for s3fs (botocore) and for deltalake (object_store
has its own retry settings). :func:`join_under` builds paths that cannot leave the root.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

from capflow_core.config import S3Config
from capflow_core.errors import ConfigError

if TYPE_CHECKING:
    import fsspec

_SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_WHOLE_CALL_RETRIES = 3


def is_s3(uri: str) -> bool:
    """Whether ``uri`` is an ``s3://`` URI."""
    return uri.startswith("s3://")


def endpoint_url(s3: S3Config) -> str | None:
    """The S3 endpoint: the config's, else ``$AWS_ENDPOINT_URL``, else None (AWS)."""
    return s3.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None


def region(s3: S3Config) -> str | None:
    """The S3 region: the config's, else ``$AWS_REGION`` / ``$AWS_DEFAULT_REGION``."""
    return s3.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def s3_filesystem(s3: S3Config) -> fsspec.AbstractFileSystem:
    """An s3fs filesystem for the configured endpoint, region, profile and anonymity."""
    client_kwargs: dict[str, Any] = {}
    if endpoint := endpoint_url(s3):
        client_kwargs["endpoint_url"] = endpoint
    if reg := region(s3):
        client_kwargs["region_name"] = reg
    kwargs: dict[str, Any] = {
        "anon": s3.anon,
        "client_kwargs": client_kwargs,
        "config_kwargs": botocore_config(s3),
    }
    if profile := s3.profile or os.environ.get("AWS_PROFILE"):
        kwargs["profile"] = profile
    # s3fs retries a whole call (e.g. a body cut while it streams, which botocore does not
    # retry) around botocore's per-request retries: keep the product bounded
    kwargs["whole_call_retries"] = min(_WHOLE_CALL_RETRIES, s3.max_attempts)
    return _s3fs_class()(**kwargs)


@functools.cache
def _s3fs_class() -> type:
    """s3fs raising ``ConnectionError`` (an ``OSError``) when retries are spent.

    s3fs turns S3's error replies into OSErrors but lets botocore's connection errors
    (reset, timeout, endpoint unreachable) through; callers treat OSError as an
    infrastructure failure, so these become one too.
    """
    import s3fs
    from botocore.exceptions import BotoCoreError
    from fsspec.asyn import sync_wrapper

    class BoundedS3FileSystem(s3fs.S3FileSystem):
        def __init__(self, *args: Any, whole_call_retries: int = 3, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.retries = whole_call_retries

        async def _call_s3(self, method: str, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super()._call_s3(method, *args, **kwargs)
            except BotoCoreError as err:
                raise ConnectionError(_s3_failure(self, method, kwargs, err)) from err

        call_s3 = sync_wrapper(_call_s3)  # what s3fs's files upload through

    BoundedS3FileSystem.__module__ = __name__  # picklable by name (see __getattr__)
    BoundedS3FileSystem.__qualname__ = "BoundedS3FileSystem"
    return BoundedS3FileSystem


def _s3_failure(fs: Any, method: str, call: dict[str, Any], err: Exception) -> str:
    """What failed, where, and what to do: the object's URI, the endpoint, the settings."""
    where = f"s3://{call.get('Bucket', '?')}/{call.get('Key') or call.get('Prefix') or ''}"
    endpoint = (getattr(fs, "client_kwargs", None) or {}).get("endpoint_url") or "AWS S3"
    return (
        f"S3 {method} of {where} at {endpoint} failed after retries: {err}. Check that the "
        "endpoint is reachable (s3.endpoint_url); on a slow or flaky link raise "
        "s3.max_attempts or s3.read_timeout_s"
    )


def __getattr__(name: str) -> Any:
    if name == "BoundedS3FileSystem":  # the lazily built class, for unpickling
        return _s3fs_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def botocore_config(s3: S3Config) -> dict[str, Any]:
    """``botocore.config.Config`` arguments: timeouts and bounded retries with backoff."""
    return {
        "connect_timeout": s3.connect_timeout_s,
        "read_timeout": s3.read_timeout_s,
        "retries": {"max_attempts": s3.max_attempts, "mode": s3.retry_mode},
    }


def filesystem(uri: str, s3: S3Config) -> tuple[fsspec.AbstractFileSystem, str]:
    """``(filesystem, path)`` for a local path or ``s3://`` URI (path without the scheme)."""
    if is_s3(uri):
        return s3_filesystem(s3), uri[len("s3://") :].rstrip("/")
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem(auto_mkdir=True), os.path.abspath(os.path.expanduser(uri))


def delta_storage_options(uri: str, s3: S3Config) -> dict[str, str] | None:
    """deltalake ``storage_options`` for a table URI (None for a local table)."""
    if not is_s3(uri):
        return None
    opts: dict[str, str] = {}
    if endpoint := endpoint_url(s3):
        opts["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            opts["AWS_ALLOW_HTTP"] = "true"
    opts["AWS_REGION"] = region(s3) or "us-east-1"
    if s3.anon:
        opts["AWS_SKIP_SIGNATURE"] = "true"
    elif profile := s3.profile or os.environ.get("AWS_PROFILE"):
        opts["AWS_PROFILE"] = profile
    for name in _SECRET_ENV:
        if value := os.environ.get(name):
            opts[name] = value
    return opts | object_store_retries(s3)


def object_store_retries(s3: S3Config) -> dict[str, str]:
    """deltalake (Rust object_store) timeouts and retry/backoff options from ``s3``."""

    def ms(seconds: float) -> str:
        return f"{max(1, round(seconds * 1000))}ms"

    return {
        "connect_timeout": ms(s3.connect_timeout_s),
        "timeout": ms(s3.read_timeout_s),
        "max_retries": str(s3.max_attempts - 1),
        "retry_timeout": ms(s3.retry_timeout_s),
        "backoff_config.init_backoff": ms(s3.backoff_initial_s),
        "backoff_config.max_backoff": ms(s3.backoff_max_s),
        "backoff_config.base": "2",
    }


def describe(uri: str, s3: S3Config) -> str:
    """A loggable description of where ``uri`` lives: never includes credentials."""
    if not is_s3(uri):
        return uri
    return f"{uri} (endpoint {endpoint_url(s3) or 'AWS'}, region {region(s3) or 'default'})"


def join_under(root: str, *parts: str) -> str:
    """``root/part/...``, refusing any component that could leave ``root``.

    Args:
        root: a local path or ``s3://`` URI.
        parts: relative components; each may contain ``/`` but no empty, ``.`` or ``..``
            segment, no leading ``/`` or ``~`` and no backslash.

    Raises:
        ConfigError: a component is absolute, empty, climbs out of the root, holds a NUL
            byte, or a name is longer than file systems (255 bytes) or S3 keys (1024) allow.
    """
    segments: list[str] = []
    for part in parts:
        if not part or part.startswith(("/", "~")) or "\\" in part or "://" in part:
            raise ConfigError(f"path component {part!r} would leave the storage root {root}")
        if "\x00" in part:
            raise ConfigError(f"path component {part!r} holds a NUL byte")
        for seg in part.split("/"):
            if seg in ("", ".", ".."):
                raise ConfigError(f"path component {part!r} would leave the storage root {root}")
            if len(seg.encode()) > 255:
                raise ConfigError(f"path segment {seg[:40]!r}... is over 255 bytes")
            segments.append(seg)
    joined = "/".join([root.rstrip("/"), *segments])
    if len(joined.encode()) > 1024 + len(root.encode()):
        raise ConfigError(f"path under {root} is over 1024 bytes (the S3 key limit)")
    return joined
