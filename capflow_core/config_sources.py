"""Config sections for where media comes from and where results go (local or S3)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from capflow_core.config_models import StrictModel


class StorageConfig(StrictModel):
    root: str = "../.capflow/data"


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
    ``AWS_SECRET_ACCESS_KEY`` or the profile.
    """

    endpoint_url: str | None = Field(None, pattern=r"^https?://")
    region: str | None = None
    profile: str | None = None
    anon: bool = False


class IngestConfig(StrictModel):
    shard_size: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        1000, description="items per manifest shard"
    )
