"""Storage helpers: paths never leave the root, S3 options follow the AWS conventions."""

from __future__ import annotations

import pytest

from capflow_core.config import S3Config
from capflow_core.errors import ConfigError
from capflow_core.storage import delta_storage_options, describe, join_under


def test_join_under_builds_paths_below_the_root():
    assert (
        join_under("s3://b/root", "staging", "r1/manifests") == "s3://b/root/staging/r1/manifests"
    )
    assert join_under("/data/", "tables", "assets") == "/data/tables/assets"


@pytest.mark.parametrize(
    "part", ["..", "a/../../x", "/etc", "~/x", "a//b", "./a", "a\\..\\b", "", "s3://x"]
)
def test_join_under_rejects_escapes(part):
    with pytest.raises(ConfigError, match="would leave the storage root"):
        join_under("/data", "staging", part)


def test_delta_options_take_endpoint_and_keys_from_env_but_describe_hides_keys(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSECRET")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "topsecret")
    opts = delta_storage_options("s3://b/root", S3Config(region="eu-west-1"))
    assert opts["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"
    assert opts["AWS_ALLOW_HTTP"] == "true"
    assert opts["AWS_REGION"] == "eu-west-1"
    assert opts["AWS_SECRET_ACCESS_KEY"] == "topsecret"
    text = describe("s3://b/root", S3Config(endpoint_url="https://minio.example:9000"))
    assert "minio.example" in text and "secret" not in text.lower() and "AKID" not in text
    assert delta_storage_options("/local/root", S3Config()) is None
