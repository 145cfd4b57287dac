"""The `sources`, `s3` and `ingest` config sections."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from capflow_core.config import config_from_dict, load_config
from capflow_core.errors import ConfigError

TINY = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs/tiny.yaml").read_text())


def test_relative_source_resolves_against_the_config_folder(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                **TINY,
                "sources": [
                    {"uri": "media", "include": ["*.jpg"]},
                    {"uri": "s3://my-bucket/raw", "license": "cc-by-4.0"},
                ],
                "ingest": {"shard_size": 7},
            }
        )
    )
    cfg = load_config(path)
    assert cfg.sources[0].uri == str(tmp_path / "media")
    assert cfg.sources[1].uri == "s3://my-bucket/raw" and cfg.sources[1].license == "cc-by-4.0"
    assert cfg.ingest.shard_size == 7 and cfg.sources[0].modality == "any"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"sources": [{"uri": "gs://b/x"}]}, "sources.0.uri"),
        ({"sources": [{"uri": "s3://Bad_Bucket/x"}]}, "not a valid S3 bucket name"),
        ({"sources": [{"uri": "x", "modality": "audio"}]}, "sources.0.modality"),
        ({"sources": [{"uri": "x", "secret": 1}]}, "unknown key"),
        ({"s3": {"endpoint_url": "localhost:9000"}}, "s3.endpoint_url"),
        ({"s3": {"aws_secret_access_key": "x"}}, "s3.aws_secret_access_key: unknown key"),
        ({"ingest": {"shard_size": 0}}, "ingest.shard_size"),
    ],
)
def test_bad_values_name_the_key(section, expected):
    with pytest.raises(ConfigError, match=expected):
        config_from_dict({**TINY, **section})
