"""`capflow dataset ...` read commands against a real dataset on a local root."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capflow_core import captions_store as cs
from capflow_core.config import S3Config
from flows.dataset_cli import app
from tests.capflow_core.test_captions_store import staged
from tests.flows.cli_runner import ROOT

runner = CliRunner()
CONFIG = str(ROOT / "configs/tiny.yaml")


@pytest.fixture
def root(tmp_path) -> str:
    where = str(tmp_path / "root")
    cs.promote(where, S3Config(), staged(range(4)), [], run_id="run-one", counts={"staged": 4})
    chart = staged([2, 3], domain="chart", fp="fp2")
    cs.promote(where, S3Config(), chart, [f"{0:064x}"], run_id="run-two")
    return where


def invoke(*args: str):
    return runner.invoke(app, [*args], catch_exceptions=False)


def test_versions_json_and_table(root):
    out = invoke("versions", "--config", CONFIG, "--root", root, "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert [(v["version"], v["run_id"]) for v in data] == [(1, "run-one"), (2, "run-two")]
    assert data[0]["counts"]["added"] == 4 and data[1]["counts"]["removed"] == 1
    assert all(v["timestamp"] for v in data)
    table = invoke("versions", "-c", CONFIG, "--root", root).output
    assert "run-two" in table and "promote" in table


def test_show_and_diff(root):
    out = invoke("show", "-c", CONFIG, "--root", root, "--version", "1", "--limit", "2", "--json")
    data = json.loads(out.output)
    assert (data["version"], data["rows"], data["run_id"]) == (1, 4, "run-one")
    assert data["by_domain"] == {"natural": {"rows": 4, "accepted": 4}}
    assert len(data["captions"]) == 2
    text = invoke("show", "-c", CONFIG, "--root", root).output
    assert "dataset version 2: 3 rows" in text and "caption 2 by fp2" in text
    out = invoke("diff", "1", "2", "-c", CONFIG, "--root", root, "--json")
    data = json.loads(out.output)
    assert (data["added"], data["changed"], data["removed"]) == (0, 2, 1)
    assert data["by_domain"]["chart"]["changed"] == 2
    assert data["examples"]["changed"][0]["old_caption"] == "caption 2 by fp1"
    text = invoke("diff", "1", "2", "-c", CONFIG, "--root", root).output
    assert "was: caption 2 by fp1" in text
    bad = invoke("show", "-c", CONFIG, "--root", root, "--version", "9")
    assert bad.exit_code == 2 and "available versions: [1, 2]" in bad.output


def test_remove_then_vacuum(root):
    out = invoke("remove", "-c", CONFIG, "--root", root, "--source-uri", "s3://src/natural/1.jpg")
    assert out.exit_code == 0 and "dataset version 3" in out.output and "vacuum" in out.output
    assert f"{1:064x}" not in cs.read_version(root, S3Config()).column("asset_id").to_pylist()
    assert (
        "nothing removed" in invoke("remove", "-c", CONFIG, "--root", root, "--asset", "x").output
    )
    staged = Path(root) / "staging" / "r9" / "prepared"  # a killed writer's leftovers
    staged.mkdir(parents=True)
    old, fresh = staged / "shard-00000.parquet.tmp-1a", staged / "shard-00001.parquet.tmp-2b"
    kept = staged / "shard-00002.parquet"
    for f in (old, fresh, kept):
        f.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    dry = invoke("vacuum", "-c", CONFIG, "--root", root, "--retention-hours", "0")
    assert dry.exit_code == 0 and "would delete" in dry.output and "--yes" in dry.output
    assert "would delete 1 abandoned temporary object(s)" in dry.output and old.name in dry.output
    assert len(cs.read_version(root, S3Config(), 1)) == 4  # dry run deleted nothing
    assert old.exists()
    done = invoke("vacuum", "-c", CONFIG, "--root", root, "--retention-hours", "0", "--yes")
    assert done.exit_code == 0 and "deleted" in done.output
    assert not old.exists() and fresh.exists() and kept.exists()
    assert invoke("show", "-c", CONFIG, "--root", root, "--version", "1").exit_code == 2


def test_root_without_dataset(tmp_path):
    for args in (
        ["versions"],
        ["show"],
        ["diff", "1", "2"],
        ["vacuum"],
        ["remove", "--asset", "a"],
    ):
        out = invoke(*args, "-c", CONFIG, "--root", str(tmp_path / "empty"))
        assert out.exit_code == 2 and "no dataset" in out.output, args
