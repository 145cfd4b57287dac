"""`capflow refresh` as a user runs it: exit codes, output, and a SIGKILL mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from capflow_core.captions_store import read_version, versions
from capflow_core.config import S3Config
from capflow_core.runs_store import read_runs
from tests.flows.cli_runner import CAPFLOW, ROOT, run
from tests.flows.refresh_setup import paper_thresholds, sample_source, write_refresh_config

pytestmark = pytest.mark.timeout(300)


def test_killed_refresh_resumes_under_its_run_id_and_loses_nothing(
    tmp_path: Path, tiny_model_dir: Path, dask_address: str, prefect_api: str
):
    src, root = sample_source(tmp_path / "src"), str(tmp_path / "root")
    cfg = write_refresh_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        root,
        [{"uri": str(src)}],
        dask_address,
        ingest={"shard_size": 1},
    )
    proc = subprocess.Popen(
        [*CAPFLOW, "refresh", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    markers: list[Path] = []
    while not markers and proc.poll() is None and time.monotonic() < deadline:
        markers = list(Path(root).glob("staging/*/captioned/*._CAPTIONED"))
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert markers, "the run ended before its first caption shard could be interrupted"
    [killed] = read_runs(root, S3Config())
    assert killed["status"] == "running"
    done_before = {p.name: p.stat().st_mtime_ns for p in markers}

    res = run("refresh", "--config", str(cfg))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"run {killed['run_id']}: promoted" in res.stdout
    [resumed] = read_runs(root, S3Config())
    assert resumed["run_id"] == killed["run_id"] and resumed["reconciliation"]["reconciled"]
    assert resumed["reconciliation"]["captioned"] == 4
    rows = read_version(root, S3Config()).to_pylist()
    assert sorted(Path(r["source_uri"]).name for r in rows) == sorted(p.name for p in src.iterdir())
    for marker in markers:  # finished shards were not captioned again
        assert marker.stat().st_mtime_ns == done_before[marker.name]


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
