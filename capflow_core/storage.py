"""Filesystems and Delta storage options for the storage root and the sources.

S3 follows the AWS conventions (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_PROFILE``,
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``), overridable by the config's ``s3``
section. Credentials are read from the environment only and are never logged or returned
by :func:`describe`. :func:`join_under` builds paths that cannot leave the root.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from capflow_core.config import S3Config
from capflow_core.errors import ConfigError

if TYPE_CHECKING:
    import fsspec

_SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


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
    import s3fs

    client_kwargs: dict[str, Any] = {}
    if endpoint := endpoint_url(s3):
        client_kwargs["endpoint_url"] = endpoint
    if reg := region(s3):
        client_kwargs["region_name"] = reg
    kwargs: dict[str, Any] = {"anon": s3.anon, "client_kwargs": client_kwargs}
    if profile := s3.profile or os.environ.get("AWS_PROFILE"):
        kwargs["profile"] = profile
    return s3fs.S3FileSystem(**kwargs)


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
    return opts


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
