"""The preprocessing benchmark, run for real at a tiny size (timings not checked)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench.preprocess import main


def test_smoke_writes_every_figure_and_ratios_from_the_timings(tmp_path: Path):
    out = tmp_path / "preprocess.json"
    argv = ["--images-1080p", "2", "--images-12mp", "0", "--repeats", "1", "--gops", "2"]
    payload = main([*argv, "--video-seconds", "1", "--dask-batch", "1", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(payload))
    assert data["environment"]["load_avg_1m_at_start"] >= 0

    img = data["images"]
    assert img["items"] == img["prepared"] == 2
    for kind in ("prepare", "bare"):
        r = img[kind]
        assert r["cpu_s"] == statistics.median(x["cpu_s"] for x in r["runs"]) > 0
        assert r["images_per_core_s"] == 2 / r["cpu_s"] and r["images_per_s"] == 2 / r["wall_s"]
    assert img["ratio"] == img["prepare"]["images_per_core_s"] / img["bare"]["images_per_core_s"]
    assert img["ratio_wall"] == img["prepare"]["images_per_s"] / img["bare"]["images_per_s"]

    (video,) = data["videos"]
    assert video["gop_s"] == 2 and video["keyframes"] >= 1
    for name in ("pyav", "decord", "bare"):
        r = video[name]
        assert r["frames"] == 8 and r["cpu_s_median"] > 0
        assert r["core_s_per_10s"] == r["cpu_s_median"] / r["duration_s"] * 10
        assert r["peak_rss_mib"] >= r["rss_before_mib"] > 0
    for name in ("pyav", "decord"):
        assert (
            video[name]["ratio"] == video[name]["core_s_per_10s"] / video["bare"]["core_s_per_10s"]
        )

    one, two = data["dask"]["runs"]
    assert (one["workers"], two["workers"]) == (1, 2)
    assert one["items"] == two["items"] == one["prepared"] == 2 and one["tasks"] == 2
    assert data["dask"]["speedup"] == two["items_per_s"] / one["items_per_s"]
