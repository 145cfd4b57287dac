"""The scale benchmark runs end to end at a tiny size and writes its JSON (timings not checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGES = ("listing", "preprocessing", "captioning", "gate", "MERGE")


@pytest.mark.http
@pytest.mark.timeout(600)  # ~1-2 min on an idle 2-core machine; far more when it is shared
def test_scale_bench_smoke(tmp_path: Path, prefect_api: str) -> None:
    out = tmp_path / "scale.json"
    cmd = [sys.executable, "bench/scale.py", "--images", "2", "--videos", "1", "--repeats", "1"]
    cmd += ["--prefect-api", prefect_api, "--out", str(out)]
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=560, env=dict(os.environ)
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "ratio vs 1w x 1e" in proc.stdout and "CPU core(s)" in proc.stdout
    data = json.loads(out.read_text())
    assert data["settings"]["prefect_api"] == prefect_api
    assert data["environment"]["cpu_count"] == os.cpu_count()
    configs = data["configurations"]
    assert [(c["workers"], c["endpoints"]) for c in configs] == [(1, 1), (2, 1), (1, 2), (2, 2)]
    base = configs[0]
    assert data["baseline"] == base["name"] == "1w x 1e"
    assert base["ratio_vs_baseline"]["overall"] == 1.0
    for c in configs:
        (run,) = c["runs"]
        assert run["status"] == "promoted" and run["version"] == 1
        assert c["items"] == c["captioned"] == 3 and run["caption_failed"] == 0
        assert c["items_per_s"] == pytest.approx(3 / c["wall_s"])
        tasks = sum(v for k, v in c["stages_s"].items() if k != "other")
        assert 0 < tasks <= c["wall_s"] * 1.05
        ratio = c["ratio_vs_baseline"]
        assert ratio["overall"] == pytest.approx(c["items_per_s"] / base["items_per_s"])
        for stage in STAGES:
            assert c["stages_s"][stage] > 0 and ratio["stages"][stage] > 0
            assert ratio["stages"][stage] == pytest.approx(
                base["stages_s"][stage] / c["stages_s"][stage]
            )
        # 3 agents + 1 summary per item over HTTP, spread over every endpoint of the config
        served = list(c["requests_per_endpoint"].values())
        assert len(served) == c["endpoints"] and all(n > 0 for n in served)
        assert sum(served) == 3 * 4
    # the judge (the instant fake) once per captioned item: 4 configurations + 2 warm-up items
    assert data["instant_calls"] == 4 * 3 + 2


def test_instant_model_has_no_endpoint_dimension_and_urls_need_a_model_name() -> None:
    from bench.scale import configurations, label, parse_args

    assert configurations("instant", 0) == [(1, 0), (2, 0)]
    assert [label(1, 0), label(2, 1)] == ["1w x instant", "2w x 1e"]
    assert configurations("tiny", 1) == [(1, 1), (2, 1)]
    assert configurations("tiny", 2) == [(1, 1), (2, 1), (1, 2), (2, 2)]
    with pytest.raises(SystemExit):
        parse_args(["--endpoint-url", "http://127.0.0.1:8000/v1"])
    with pytest.raises(SystemExit):
        parse_args(["--model", "instant", "--endpoint-url", "http://a/v1", "--served-model", "m"])
    args = parse_args(["--endpoint-url", "http://a/v1", "--served-model", "m"])
    assert args.endpoint_url == ["http://a/v1"] and args.structured_outputs == "vllm"
