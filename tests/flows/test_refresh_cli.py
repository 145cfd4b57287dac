"""`capflow refresh` as a user runs it: exit codes, output, and a SIGKILL mid-run."""

from __future__ import annotations

from pathlib import Path

import pytest

from capflow_core.captions_store import versions
from capflow_core.config import S3Config
from tests.flows.cli_runner import ROOT, run
from tests.flows.refresh_setup import paper_thresholds, sample_source, write_refresh_config

pytestmark = pytest.mark.timeout(300)


def test_gate_failure_exits_1_and_names_the_fix(
    tmp_path: Path, tiny_model_dir: Path, dask_address: str, prefect_api: str
):
    src, root = sample_source(tmp_path / "src", ("chart.png", "photo.jpg")), str(tmp_path / "r")
    cfg = write_refresh_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        root,
        [{"uri": str(src)}],
        dask_address,
        **paper_thresholds(),
    )
    res = run("refresh", "--config", str(cfg))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAILED" in res.stdout and "capflow dataset promote" in res.stderr
    assert versions(root, S3Config()) == []


def test_bad_config_exits_2_before_any_work(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "configs/tiny.yaml").read_text() + "\nquality: {max_repeat_ratio: 7}\n")
    res = run("refresh", "--config", str(bad), "--root", str(tmp_path / "root"))
    assert res.returncode == 2 and "quality.max_repeat_ratio" in res.stderr
    assert not (tmp_path / "root").exists()
