"""Temporary objects killed writers leave in staging: found by age, deleted, nothing else."""

from __future__ import annotations

import time

import pytest

from capflow_core.config import S3Config
from capflow_core.staging_cleanup import abandoned_temp_files, delete_temp_files
from capflow_core.storage import filesystem


def test_finds_and_deletes_only_old_temp_objects_on_s3(moto_s3):
    root = f"s3://capflow-test/cleanup-{time.time_ns()}"
    fs, base = filesystem(root, S3Config())
    temps = [f"{base}/staging/r1/prepared/shard-0000{i}.parquet.tmp-{i}" for i in range(2)]
    others = [f"{base}/staging/r1/prepared/shard-00000.parquet", f"{base}/tables/x.tmp-1"]
    for path in temps + others:
        fs.pipe_file(path, b"x")
    assert abandoned_temp_files(root, S3Config()) == []  # too young
    found = abandoned_temp_files(root, S3Config(), older_than_s=0, now=time.time() + 5)
    assert found == [f"s3://{p}" for p in temps]  # only staging's temporary objects
    with pytest.raises(ValueError, match="not a temporary object"):
        delete_temp_files(root, S3Config(), [f"s3://{others[0]}"])
    with pytest.raises(ValueError, match="not a temporary object"):
        delete_temp_files(root, S3Config(), [f"s3://{others[1]}"])
    assert delete_temp_files(root, S3Config(), found) == 2
    fs.invalidate_cache()
    assert not any(fs.exists(p) for p in temps) and all(fs.exists(p) for p in others)
    assert abandoned_temp_files(f"{root}-none", S3Config()) == []
