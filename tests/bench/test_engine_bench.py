"""The engine-overhead benchmark, run for real at a tiny size on the CPU (timings not checked)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from PIL import Image

from bench._replay import Recorder, plan, replay
from bench.engine import main
from capflow_core.config import PACKAGED_CONFIG_DIR, load_config
from capflow_core.engine import CapFlow
from tests.capflow_core.fakes import ScriptedBackend


def test_smoke_writes_ratio_timings_and_matching_call_counts(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "engine.json"
    argv = [
        "--samples",
        "4",
        "--repeats",
        "1",
        "--video-every",
        "4",
        "--model",
        str(tiny_model_dir),
    ]
    payload = main([*argv, "--out", str(out)])
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(payload))
    assert data["settings"]["samples"] == 4 and data["settings"]["videos"] == 1
    assert set(data["modes"]) == {"capflow", "single"}
    for mode, res in data["modes"].items():
        engine, bare = res["engine"], res["bare"]
        assert engine["wall_s"] > 0 and bare["wall_s"] > 0
        assert res["ratio_engine_over_bare"] == engine["wall_s"] / bare["wall_s"]
        assert "overhead_ms_per_sample" in res and res["calls_match"]
        for e, b in zip(engine["runs"], bare["runs"], strict=True):
            assert e["calls"] == b["calls"] and e["errors"] == 0 == b["errors"]
            assert 0 < e["batches"] <= e["calls"] and 0 < b["batches"] <= b["calls"]
            assert e["decode_steps"] > 0 and b["decode_steps"] > 0
            assert 0 <= e["backend_idle_s"] < e["wall_s"] and 0 <= b["backend_idle_s"] < b["wall_s"]
        # single: caption + judge per sample; capflow adds route (images) and 3-4 agents
        assert engine["calls"] >= (2 if mode == "single" else 5) * 4
    assert data["modes"]["capflow"]["engine"]["calls"] > data["modes"]["single"]["engine"]["calls"]


def test_in_memory_model_path_of_the_gpu_mode_runs_on_the_cpu(tmp_path: Path):
    # --size 7b builds its model this way (random weights in memory, real pixel budget)
    out = tmp_path / "engine.json"
    argv = ["--in-memory", "--samples", "2", "--repeats", "1", "--mode", "capflow"]
    main([*argv, "--image-size", "448x336", "--max-tokens", "4", "--out", str(out)])
    res = json.loads(out.read_text())["modes"]["capflow"]
    assert res["calls_match"] and res["engine"]["errors"] == 0
    # a 448x336 image is 16x12 = 192 visual tokens at the real budget (the tiny one gives 16)
    assert res["engine"]["prompt_tokens"] > res["engine"]["calls"] * 192


def test_replay_keeps_stages_agents_concurrent_and_samples_gated(tmp_path: Path):
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (64, 48), (40 * i, 90, 200)).save(paths[-1])
    vlm, llm = ScriptedBackend(delay_s=0.01), ScriptedBackend(model_id="fake-llm", delay_s=0.01)
    recorder = Recorder({"vlm": vlm, "llm": llm, "judge": vlm, "eval_judge": vlm})
    config = load_config(PACKAGED_CONFIG_DIR / "tiny.yaml", overrides={"ocr": {"enabled": False}})

    def tags() -> list[str]:
        out = sorted(vlm.tags() + llm.tags())
        vlm.requests.clear(), llm.requests.clear()
        return out

    async def run() -> tuple[list, list[str], list[str], list[int]]:
        await CapFlow(config, backends=recorder.wrapped).acaption(paths)
        engine_tags = tags()
        planned = plan(recorder.recording, paths)
        peaks = []
        for samples, gate in ((planned[:1], 1), (planned[1:], 1), (planned, 2)):
            vlm.max_in_flight = 0
            await replay(samples, samples_in_flight=gate)
            peaks.append(vlm.max_in_flight)
            bare_tags = tags()
        return planned, engine_tags, bare_tags, peaks

    planned, engine_tags, bare_tags, peaks = asyncio.run(run())
    stages = [[c.request.tag for c in stage] for stage in planned[0]]
    assert stages == [
        ["route"],
        ["agent:natural_perception", "agent:general_reasoning", "agent:visual_guideline"],
        ["summary:general_summary"],
        ["judge"],
    ]
    # a sample's agents are issued together; samples_in_flight bounds the samples at once
    assert peaks == [3, 3, 6]
    assert bare_tags == engine_tags and len(engine_tags) == 3 * 6
    # fresh media per sample: the replay never hands the backend the engine's parts
    engine_part = recorder.recording.calls[paths[0]][0].request.messages[1].content[0]
    assert planned[0][0][0].request.messages[1].content[0] is not engine_part
