"""Config sections for where media comes from and where results go (local or S3)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from capflow_core.config_models import StrictModel


class StorageConfig(StrictModel):
    """The storage root, and how long a refresh waits for another one holding it."""

    root: str = "../.capflow/data"
    lock_wait_s: Annotated[float, Field(ge=0, le=86_400)] = Field(
        900.0, description="how long a refresh waits for another refresh of the same root"
    )
    lock_ttl_s: Annotated[float, Field(ge=10, le=3600)] = Field(
        300.0,
        description="S3: a refresh lock not renewed for this long is stale (its holder died); "
        "above s3.retry_timeout_s + s3.read_timeout_s, as a deltalake call may hold the GIL "
        "that long and starve the renewal",
    )


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class SourceConfig(StrictModel):
    """One place media is listed from: a local folder or ``s3://bucket/prefix``.

    Globs are ``fnmatch`` patterns matched on the key relative to the source prefix (``*``
    also crosses ``/``); an empty ``include`` takes everything not excluded.
    """

    uri: str = Field(min_length=1)
    include: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    exclude: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    domain: str | None = Field(None, description="registry key for every asset (skips routing)")
    modality: Literal["image", "video", "any"] = "any"
    license: str | None = None
    provenance: str | None = None

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, uri: str) -> str:
        if "://" not in uri:
            return uri
        scheme, rest = uri.split("://", 1)
        if scheme != "s3":
            raise ValueError(f"use a local path or s3://bucket/prefix, not {scheme}://")
        if not _BUCKET.match(rest.split("/", 1)[0]):
            raise ValueError("not a valid S3 bucket name; use s3://bucket/prefix")
        return uri


class S3Config(StrictModel):
    """S3 client settings over the AWS conventions (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ...).

    Credentials never go here: they come from ``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY`` or the profile. Every request is bounded: connect and read
    timeouts, then up to ``max_attempts`` tries with exponential backoff (botocore for s3fs,
    object_store's own retry settings for the Delta tables).
    """

    endpoint_url: str | None = Field(None, pattern=r"^https?://")
    region: str | None = None
    profile: str | None = None
    anon: bool = False
    max_attempts: Annotated[int, Field(ge=1, le=20)] = Field(
        5, description="attempts per S3 request (botocore; deltalake: max_attempts - 1 retries)"
    )
    retry_mode: Literal["standard", "adaptive"] = Field(
        "standard", description="botocore retry mode: exponential backoff with jitter"
    )
    connect_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    read_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        60.0, description="per read (s3fs) and per request (deltalake) timeout"
    )
    retry_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        180.0, description="deltalake: no retry starts later than this after the first try"
    )
    backoff_initial_s: Annotated[float, Field(gt=0, le=60)] = 0.1
    backoff_max_s: Annotated[float, Field(gt=0, le=600)] = 15.0


class IngestConfig(StrictModel):
    shard_size: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        1000, description="items per manifest shard"
    )
