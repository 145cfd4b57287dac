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
    assert data["settings"] == {"rows": 2000, "batch": 200, "seed": 0, "root_lock": True}
    inputs = data["inputs"]
    assert inputs["table_files"] > 12 and inputs["mixed_updates"] == 100
    recaption_rows = inputs["batch_rows"]["recaption"]
    assert 0 < recaption_rows <= inputs["recaption_domain_rows"] < 2000 * 0.2
    runs = data["runs"]
    assert set(runs) == {"new", "recaption", "mixed", "remerge"}
    for name, run in runs.items():
        for kind in ("parquet", "merge"):
            r = run[kind]
            assert r["rows"] == (recaption_rows if name == "recaption" else 200)
            assert r["wall_s"] > 0 and r["rows_per_s"] > 0
            assert r["peak_rss_mib"] >= r["rss_before_mib"] > 0
        assert data["ratios"][name] > 0
    result = {name: run["merge"]["result"] for name, run in runs.items()}
    assert (result["new"]["added"], result["new"]["changed"], result["new"]["version"]) == (
        200,
        0,
        1,
    )
    assert (result["recaption"]["changed"], result["recaption"]["added"]) == (recaption_rows, 0)
    assert (result["mixed"]["added"], result["mixed"]["changed"]) == (100, 100)
    assert result["remerge"] == {
        "version": None,
        "added": 0,
        "changed": 0,
        "removed": 0,
        "unchanged": 200,
    }
    assert data["target_ratio"] == 3.0 and data["targeted"] == ["new", "recaption"]
