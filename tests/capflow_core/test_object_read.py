"""Reading source objects: permanent failures are item errors, transient ones are retried."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from capflow_core.config import S3Config
from capflow_core.errors import InfrastructureError, ItemError
from capflow_core.object_read import fetch_object
from tests.flows.cli_runner import closed_port


def test_local_object_is_read_in_place_with_its_sha256(tmp_path: Path):
    path = tmp_path / "x.jpg"
    path.write_bytes(b"abc")
    assert fetch_object(str(path), S3Config(), tmp_path) == (
        path,
        hashlib.sha256(b"abc").hexdigest(),
    )


def test_missing_object_is_a_read_error(tmp_path: Path):
    with pytest.raises(ItemError) as err:
        fetch_object(str(tmp_path / "gone.jpg"), S3Config(), tmp_path)
    assert err.value.code == "read_error"


def test_unreachable_endpoint_is_retried_then_raised(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3 = S3Config(endpoint_url=f"http://127.0.0.1:{closed_port()}", region="us-east-1")
    start = time.monotonic()
    with pytest.raises(InfrastructureError, match="reading failed 2 times"):
        fetch_object("s3://capflow-test/a.jpg", s3, tmp_path, attempts=2)
    assert time.monotonic() - start >= 0.2  # one backoff between the tries
