"""The orchestration benchmark runs end to end at a tiny size and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(240)


def test_orchestration_bench_smoke(tmp_path, prefect_api, dask_address):
    out = tmp_path / "orchestration.json"
    cmd = [sys.executable, "bench/orchestration.py", "--images", "20", "--noop-assets", "200"]
    cmd += ["--prefect-api", prefect_api, "--dask-address", dask_address, "--out", str(out)]
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=200, env=dict(os.environ)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "orchestration overhead per item" in proc.stdout
    assert "no-op refresh over 200 known assets" in proc.stdout
    data = json.loads(out.read_text())
    assert data["settings"]["images"] == 20 and data["settings"]["noop_assets"] == 200
    assert data["settings"]["dask"] == dask_address
    assert data["settings"]["prefect_api"] == prefect_api
    ov = data["overhead"]
    for name in ("plain", "flow"):
        r = ov[name]
        assert r["wall_s"] > 0 and r["status"] == "promoted" and r["version"] == 1
        recon = r["reconciliation"]
        assert recon["listed"] == recon["prepared"] == recon["captioned"] == 20
        assert recon["accepted"] == 20 and recon["reconciled"]
    assert set(ov["plain"]["steps_s"]) == {
        "ingest",
        "preprocess",
        "plan",
        "caption",
        "gate",
        "version",
        "report",
    }
    assert {"ingest", "preprocess", "caption-shard", "gate", "version"} <= set(
        ov["flow"]["tasks_s"]
    )
    flow_s, plain_s = ov["flow"]["wall_s"], ov["plain"]["wall_s"]
    assert ov["per_item_ms"] == pytest.approx((flow_s - plain_s) / 20 * 1000)
    assert ov["ratio_flow_over_plain"] == pytest.approx(flow_s / plain_s)
    noop = data["noop"]
    setup, again = noop["setup"]["reconciliation"], noop["noop"]["reconciliation"]
    assert setup["listed"] == setup["pending"] == setup["rejected"] == 200
    assert again["listed"] == again["unchanged"] == 200 and again["pending"] == 0
    assert noop["noop"]["status"] == "no_change" and noop["noop"]["wall_s"] > 0
    assert data["model_calls"] > 0
    assert data["target_ms_per_item"] == 5.0 and data["target_noop_s"] == 30.0
