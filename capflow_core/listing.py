"""Streamed, paged listing of the configured sources.

Memory stays bounded by one page (S3) or one directory (local): nothing collects the whole
listing. On S3 we call ``ListObjectsV2`` page by page (1000 keys each) through s3fs's
``_call_s3``, which retries transient errors per request; ``fs.find`` would build the full
listing in memory first. Locally, ``os.walk`` with sorted folders and files gives a
deterministic order (a rerun of the same run id writes the same shards).

Modality comes from the extension; an unknown extension is still yielded with modality
``unknown`` so preprocessing records a rejection: nothing is silently dropped. License and
provenance come from the source config; where it sets none, :func:`read_object_metadata`
fills them from S3 object metadata (``x-amz-meta-license`` / ``x-amz-meta-provenance``) for
the objects that go on (one HEAD each, only for new or changed objects).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Iterator
from dataclasses import dataclass

from capflow_core.config import S3Config, SourceConfig
from capflow_core.media_format import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from capflow_core.storage import filesystem, is_s3

PAGE_SIZE = 1000


@dataclass(frozen=True)
class ListedObject:
    """One object found in a source.

    Attributes:
        source_uri: the full URI (``s3://bucket/key`` or an absolute local path).
        source: the configured source URI it was listed from.
        key: the key relative to the source prefix (what globs match).
        etag: the S3 ETag without quotes; locally ``<size>-<mtime_ns>`` (no hashing).
        modality: ``image``, ``video`` or ``unknown`` (from the extension).
    """

    source_uri: str
    source: str
    key: str
    etag: str
    size: int
    mtime: float
    modality: str
    domain: str | None = None
    license: str | None = None
    provenance: str | None = None


def modality_of(key: str) -> str:
    """``image``, ``video`` or ``unknown`` from a key's extension."""
    ext = key.rsplit(".", 1)[-1].lower() if "." in key.rsplit("/", 1)[-1] else ""
    if ext in IMAGE_EXTENSIONS:
        return "image"
    return "video" if ext in VIDEO_EXTENSIONS else "unknown"


def _wanted(src: SourceConfig, key: str, modality: str) -> bool:
    if src.include and not any(fnmatch.fnmatchcase(key, p) for p in src.include):
        return False
    if any(fnmatch.fnmatchcase(key, p) for p in src.exclude):
        return False
    return src.modality == "any" or modality in (src.modality, "unknown")


def _entry(
    src: SourceConfig, uri: str, key: str, etag: str, size: int, mtime: float
) -> ListedObject:
    return ListedObject(
        source_uri=uri,
        source=src.uri,
        key=key,
        etag=etag,
        size=size,
        mtime=mtime,
        modality=modality_of(key),
        domain=src.domain,
        license=src.license,
        provenance=src.provenance,
    )


def _list_local(src: SourceConfig, root: str) -> Iterator[ListedObject]:
    if not os.path.isdir(root):
        from capflow_core.errors import ConfigError

        raise ConfigError(f"source {src.uri}: not a folder; fix sources[].uri or --source")
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            key = os.path.relpath(path, root).replace(os.sep, "/")
            st = os.stat(path)
            yield _entry(src, path, key, f"{st.st_size}-{st.st_mtime_ns}", st.st_size, st.st_mtime)


def _list_s3(src: SourceConfig, s3: S3Config) -> Iterator[ListedObject]:
    from fsspec.asyn import sync

    fs, path = filesystem(src.uri, s3)
    bucket, _, prefix = path.partition("/")
    prefix = f"{prefix}/" if prefix else ""
    kwargs = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": PAGE_SIZE}
    while True:
        page = sync(fs.loop, fs._call_s3, "list_objects_v2", **kwargs)
        for obj in page.get("Contents", []):
            key = obj["Key"][len(prefix) :]
            if not key or key.endswith("/"):
                continue  # folder markers
            mtime = obj["LastModified"].timestamp()
            uri = f"s3://{bucket}/{obj['Key']}"
            yield _entry(src, uri, key, obj["ETag"].strip('"'), obj["Size"], mtime)
        if not page.get("IsTruncated"):
            return
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


def list_source(src: SourceConfig, s3: S3Config) -> Iterator[ListedObject]:
    """Stream one source's objects that pass its globs and modality filter."""
    raw = _list_s3(src, s3) if is_s3(src.uri) else _list_local(src, src.uri)
    for entry in raw:
        if _wanted(src, entry.key, entry.modality):
            yield entry


def list_sources(sources: list[SourceConfig], s3: S3Config) -> Iterator[ListedObject]:
    """Stream every source in turn (see :func:`list_source`)."""
    for src in sources:
        yield from list_source(src, s3)


def read_object_metadata(entries: list[ListedObject], s3: S3Config) -> list[ListedObject]:
    """Fill license / provenance the config left unset from S3 object metadata."""
    todo = [
        e for e in entries if is_s3(e.source_uri) and (e.license is None or e.provenance is None)
    ]
    if not todo:
        return entries
    import asyncio

    from fsspec.asyn import sync

    fs, _ = filesystem("s3://", s3)

    async def heads() -> list[dict]:
        calls = []
        for e in todo:
            bucket, _, key = e.source_uri[len("s3://") :].partition("/")
            calls.append(fs._call_s3("head_object", Bucket=bucket, Key=key))
        return await asyncio.gather(*calls)  # s3fs's connection pool bounds concurrency

    found: dict[str, ListedObject] = {}
    for e, head in zip(todo, sync(fs.loop, heads), strict=True):
        meta = {k.lower(): v for k, v in head.get("Metadata", {}).items()}
        found[e.source_uri] = dataclasses.replace(
            e,
            license=e.license or meta.get("license"),
            provenance=e.provenance or meta.get("provenance"),
        )
    return [found.get(e.source_uri, e) for e in entries]
