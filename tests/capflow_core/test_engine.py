"""Engine control flow with a scripted backend: stage order, layout, errors, accounting."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from PIL import Image

from capflow_core.backends.base import GenRequest, ImagePart, VideoPart
from capflow_core.config import PACKAGED_CONFIG_DIR, load_config
from capflow_core.engine import CapFlow, Sample
from capflow_core.errors import InfrastructureError
from capflow_core.registry import load_registry
from tests.capflow_core.fakes import ScriptedBackend, default_reply


@pytest.fixture
def image(tmp_path: Path) -> str:
    path = tmp_path / "photo.png"
    Image.new("RGB", (96, 64), (30, 120, 200)).save(path)
    return str(path)


def make_flow(vlm: ScriptedBackend, llm: ScriptedBackend | None = None, **overrides) -> CapFlow:
    cfg = load_config(PACKAGED_CONFIG_DIR / "tiny.yaml", overrides=overrides or None)
    llm = llm or ScriptedBackend(model_id="fake-llm")
    return CapFlow(cfg, backends={"vlm": vlm, "llm": llm, "judge": vlm, "eval_judge": vlm})


def test_full_path_route_agents_summary_judge(image: str):
    vlm, llm = ScriptedBackend(), ScriptedBackend(model_id="fake-llm")
    (rec,) = make_flow(vlm, llm).caption([image])
    assert rec.ok and not rec.errors
    assert rec.route.domain == "natural" and rec.route.confidence == 0.8 and not rec.route.skipped
    assert [a.agent for a in rec.agents] == [
        "natural_perception",
        "general_reasoning",
        "visual_guideline",
    ]
    assert all(a.text and a.model == "fake-vlm" and len(a.prompt_sha256) == 64 for a in rec.agents)
    assert rec.caption == "text for summary:general_summary"
    assert rec.judge.scores == dict.fromkeys(rec.judge.scores, 3) and len(rec.judge.scores) == 5
    assert rec.accepted and rec.judge.rule == "min_each>=1"
    assert vlm.tags()[0] == "route" and vlm.tags()[-1] == "judge"
    assert vlm.max_in_flight == 3  # the three agents ran concurrently
    # 1 route + 3 agents + 1 judge on the VLM, 1 summary on the LLM; 10 + 5 tokens each
    assert (rec.tokens.prompt, rec.tokens.completion) == (60, 30)
    assert len(rec.asset_id) == 64 and len(rec.fingerprint) == 64 and rec.caption_id != rec.asset_id


def test_prompt_layout_media_first_and_shared(image: str):
    vlm, llm = ScriptedBackend(), ScriptedBackend()
    make_flow(vlm, llm).caption([image])
    visual = vlm.requests
    systems = {r.messages[0].content[0] for r in visual}
    media = {id(r.messages[1].content[0]) for r in visual}
    assert len(systems) == 1 and len(media) == 1  # byte-identical prefix on every call
    assert all(isinstance(r.messages[1].content[0], ImagePart) for r in visual)
    assert all(isinstance(r.messages[1].content[-1], str) for r in visual)  # instruction last
    (summary,) = llm.requests
    parts = [p for m in summary.messages for p in m.content]
    assert all(isinstance(p, str) for p in parts)  # the summary never sees pixels
    for agent_text in ("text for agent:natural_perception", "text for agent:visual_guideline"):
        assert agent_text in parts[-1]


def test_given_domain_skips_routing(image: str):
    vlm = ScriptedBackend()
    (rec,) = make_flow(vlm).caption([Sample(image, domain="code_programming")])
    assert "route" not in vlm.tags()
    assert rec.route.skipped and rec.domain == "code_programming"
    assert [a.agent for a in rec.agents] == ["coder", "general_reasoning", "visual_guideline"]


def test_router_reply_is_reasked_once_then_recorded(image: str):
    vlm = ScriptedBackend(lambda r: "natural!" if r.tag.startswith("route") else default_reply(r))
    other = Path(image).with_name("b.png")
    Image.new("RGB", (64, 64), "red").save(other)
    recs = make_flow(vlm).caption([image, str(other)])
    assert vlm.tags().count("route") == 2 and vlm.tags().count("route:reask") == 2
    for rec in recs:
        assert not rec.ok and "unparseable reply after one re-ask" in rec.errors["route"]
        assert rec.caption is None and not rec.accepted
        assert rec.tokens.prompt == 20  # both route calls are accounted


def test_judge_reask_recovers(image: str):
    calls = {"n": 0}

    def script(r: GenRequest) -> str:
        if r.tag == "judge":
            calls["n"] += 1
            return "I think it's great"
        return default_reply(r)

    vlm = ScriptedBackend(script)
    (rec,) = make_flow(vlm).caption([image])
    assert calls["n"] == 1 and "judge:reask" in vlm.tags()
    assert rec.ok and rec.accepted


def test_unparseable_judge_is_an_error_not_an_accept(image: str):
    vlm = ScriptedBackend(
        lambda r: '{"factual_accuracy":3}' if "judge" in r.tag else default_reply(r)
    )
    (rec,) = make_flow(vlm).caption([image])
    assert not rec.accepted and rec.judge.error and "judge" in rec.errors
    assert rec.caption  # the caption is kept for inspection, the sample stays pending


def test_accept_rule_from_config(image: str):
    scores = '{"factual_accuracy":3,"information_completeness":2,"reasoning_rigor":3,"core_intent":3,"professionalism":3}'
    vlm = ScriptedBackend(lambda r: scores if "judge" in r.tag else default_reply(r))
    (lenient,) = make_flow(vlm).caption([image])
    (strict,) = make_flow(vlm, judge={"accept": {"min_each": 3}}).caption([image])
    assert lenient.accepted and not strict.accepted
    assert strict.ok and strict.judge.scores["information_completeness"] == 2


def test_one_failing_call_and_one_corrupt_file_do_not_stop_the_batch(tmp_path: Path, image: str):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0not really a jpeg")
    failing = tmp_path / "odd.png"
    Image.new("RGB", (80, 80), "green").save(failing)

    def script(r: GenRequest) -> str | Exception:
        media = r.messages[1].content[0]
        if (
            r.tag == "agent:general_reasoning"
            and isinstance(media, ImagePart)
            and media.image.size == (80, 80)
        ):
            return RuntimeError("HTTP 400: prompt too long")
        return default_reply(r)

    recs = make_flow(ScriptedBackend(script)).caption([str(bad), str(failing), image])
    assert list(recs[0].errors) == ["load"] and recs[0].caption is None
    assert "general_reasoning: HTTP 400" in recs[1].errors["agents"]
    assert [a.error is not None for a in recs[1].agents] == [False, True, False]
    assert recs[2].ok and recs[2].accepted


def test_infrastructure_error_is_recorded_with_its_stage(image: str):
    def script(r: GenRequest):
        if r.tag.startswith("summary"):
            return InfrastructureError("all endpoints down")
        return default_reply(r)

    (rec,) = make_flow(ScriptedBackend(), ScriptedBackend(script)).caption([image])
    assert rec.errors == {"summary": "infrastructure: all endpoints down"}


def test_video_goes_to_video_domain_with_temporal_judge(tmp_path: Path):
    import numpy as np

    from capflow_core.sample_media import write_video

    video = tmp_path / "clip.mp4"
    write_video(video, [np.full((64, 96, 3), i * 20, np.uint8) for i in range(12)], fps=6)
    vlm = ScriptedBackend()
    (rec,) = make_flow(vlm).caption([str(video)])
    assert (
        rec.ok and rec.modality == "video" and rec.domain == "video_temporal" and rec.route.skipped
    )
    assert "temporal_factual_accuracy" in rec.judge.scores
    assert isinstance(vlm.requests[0].messages[1].content[0], VideoPart)


def test_single_mode_is_one_call_then_judge(image: str):
    vlm = ScriptedBackend()
    (rec,) = make_flow(vlm).caption([image], mode="single")
    assert vlm.tags() == ["single", "judge"]
    assert rec.mode == "single" and rec.captioner == "fake-vlm" and rec.agents == []
    assert rec.ok and rec.fingerprint


def test_fingerprint_changes_only_for_the_domain_whose_prompt_changed(tmp_path: Path):
    from capflow_core.fingerprint import domain_fingerprint

    cfg = load_config(PACKAGED_CONFIG_DIR / "tiny.yaml")
    base = load_registry()
    (tmp_path / "med.md").write_text("A different medical reasoning prompt.")
    user = tmp_path / "reg.yaml"
    user.write_text(
        "agents:\n  medical_reasoning: {name: MR, role: reasoning, model: vlm, prompt: med.md, max_tokens: 384}\n"
    )
    changed = load_registry(user)
    before = {k: domain_fingerprint(d, base, cfg) for k, d in base.domains.items()}
    after = {k: domain_fingerprint(d, changed, cfg) for k, d in changed.domains.items()}
    assert [k for k in before if before[k] != after[k]] == ["medical_bio"]
    assert len(set(before.values())) == len(before)  # every domain has its own fingerprint


def test_ocr_agent_gets_delimited_untrusted_grounding(tmp_path: Path):
    from PIL import ImageDraw, ImageFont

    page = tmp_path / "page.png"
    img = Image.new("RGB", (640, 200), "white")
    ImageDraw.Draw(img).text(
        (20, 60), "INVOICE 4471", fill="black", font=ImageFont.load_default(size=48)
    )
    img.save(page)
    vlm = ScriptedBackend()
    (rec,) = make_flow(vlm).caption([Sample(str(page), domain="infographic_document")])
    assert rec.ok
    by_tag = {r.tag: r.messages[1].content[-1] for r in vlm.requests}
    assert '<ocr_text source="tesseract" trust="untrusted' in by_tag["agent:ocr"]
    assert "</ocr_text>" in by_tag["agent:ocr"]
    assert "<ocr_text" not in by_tag["agent:general_reasoning"]


def test_cost_is_allocated_by_tokens(image: str, tmp_path: Path):
    other = tmp_path / "c.png"
    Image.new("RGB", (50, 50), "white").save(other)
    vlm = ScriptedBackend(gpus=2)
    flow = make_flow(vlm, ScriptedBackend(gpus=0))
    recs = flow.caption([image, Sample(str(other), domain="ui_interaction")])
    cost = flow.last_cost
    assert cost.gpus == 2 and cost.gpu_seconds == pytest.approx(cost.wall_s * 2)
    assert sum(r.cost_usd for r in recs) == pytest.approx(cost.gpu_seconds * 3.5 / 3600)
    ratio = recs[0].cost_usd / recs[1].cost_usd
    tokens = [r.tokens.prompt + r.tokens.completion for r in recs]
    assert ratio == pytest.approx(tokens[0] / tokens[1])
    assert cost.api_usd > 0


def test_records_roundtrip_json_and_arrow(image: str):
    from capflow_core.records import CaptionRecord, from_arrow, to_arrow

    recs = make_flow(ScriptedBackend()).caption([image])
    table = to_arrow(recs)
    assert table.num_rows == 1 and table.column("caption_id")[0].as_py() == recs[0].caption_id
    assert from_arrow(table)[0] == recs[0]
    assert CaptionRecord.from_dict(json.loads(recs[0].to_json())) == recs[0]


def test_acaption_runs_in_an_existing_loop(image: str):
    flow = make_flow(ScriptedBackend())
    recs = asyncio.run(flow.acaption([image], run_id="r1"))
    assert recs[0].run_id == "r1"
