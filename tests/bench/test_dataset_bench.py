"""The dataset benchmark runs end to end at a tiny size and writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_dataset_bench_smoke(tmp_path):
    out = tmp_path / "dataset.json"
    proc = subprocess.run(
        [sys.executable, "bench/dataset.py", "--rows", "2000", "--batch", "200", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ratio MERGE/parquet write" in proc.stdout
    data = json.loads(out.read_text())
    assert data["settings"] == {"rows": 2000, "batch": 200, "seed": 0}
    assert data["inputs"]["batch_updates"] == 100 and data["inputs"]["batch_new"] == 100
    runs = data["runs"]
    for kind in ("parquet", "merge", "remerge"):
        assert runs[kind]["rows"] == 200
        assert runs[kind]["wall_s"] > 0 and runs[kind]["rows_per_s"] > 0
        assert runs[kind]["peak_rss_mib"] >= runs[kind]["rss_before_mib"] > 0
    merged = runs["merge"]["result"]
    assert (merged["added"], merged["changed"], merged["version"]) == (100, 100, 1)
    assert runs["remerge"]["result"] == {
        "version": None,
        "added": 0,
        "changed": 0,
        "removed": 0,
        "unchanged": 200,
    }
    assert data["ratio"] > 0 and data["target_ratio"] == 3.0
