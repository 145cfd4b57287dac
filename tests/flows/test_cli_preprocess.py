"""`capflow preprocess` as a user runs it: a subprocess with its own embedded LocalCluster."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.flows.cli_runner import ROOT, run
from tests.tasks.media_cases import scene


def _config(tmp_path: Path, src: Path) -> Path:
    data = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())
    data |= {"storage": {"root": str(tmp_path / "root")}, "sources": [{"uri": str(src)}]}
    data |= {"dask": {"n_workers": 1}}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def test_preprocess_command_prints_the_reconciliation(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    scene(1, 800, 600).save(src / "photo one.jpg")
    scene(2, 300, 300).save(src / "tiny.png")
    (src / "empty.jpg").write_bytes(b"")
    cfg = _config(tmp_path, src)

    missing = run("preprocess", "--config", str(cfg))
    assert missing.returncode == 2 and "capflow ingest" in missing.stderr

    assert run("ingest", "--config", str(cfg), "--run-id", "r1").returncode == 0
    first = run("preprocess", "--config", str(cfg))
    assert first.returncode == 0, first.stderr
    assert "run r1: 1 shard(s) prepared, 0 already done" in first.stdout
    table = dict(line.split() for line in first.stdout.splitlines() if line.startswith("  "))
    assert table == {
        "listed": "3",
        "unchanged": "0",
        "pending": "3",
        "prepared": "1",
        "rejected": "2",
        "corrupt": "1",
        "too_small": "1",
    }
    assert "reconciled: listed = prepared + rejected + unchanged" in first.stdout

    again = run("preprocess", "--config", str(cfg), "--run-id", "r1")
    assert again.returncode == 0 and "0 shard(s) prepared, 1 already done" in again.stdout
