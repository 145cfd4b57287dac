from pathlib import Path

import pytest

from capflow_core.errors import ConfigError
from capflow_core.registry import load_registry, render

TABLE_1 = {
    "natural": ["natural_perception", "general_reasoning", "visual_guideline"],
    "structure_math": [
        "structure_perception",
        "infographic_perception",
        "general_reasoning",
        "visual_guideline",
    ],
    "infographic_document": [
        "infographic_perception",
        "ocr",
        "general_reasoning",
        "visual_guideline",
    ],
    "medical_bio": ["natural_perception", "medical_reasoning", "visual_guideline"],
    "ui_interaction": ["ui_perception", "ocr", "general_reasoning"],
    "code_programming": ["coder", "general_reasoning", "visual_guideline"],
    "knowledge_education": ["infographic_perception", "knowledge_reasoning", "visual_guideline"],
    "synthetic_aesthetic": ["texture_perception", "general_reasoning", "visual_guideline"],
    "video_temporal": ["video_perception", "video_reasoning", "video_guideline"],
}


def test_packaged_registry_matches_table_1():
    reg = load_registry()
    assert {k: [a.key for a in d.agents] for k, d in reg.domains.items()} == TABLE_1
    for key, domain in reg.domains.items():
        expected = "video_summary" if key == "video_temporal" else "general_summary"
        assert domain.summary.key == expected
        assert domain.summary.model == "llm"  # the summary agent never sees pixels
        assert all(a.model == "vlm" and a.prompt.strip() for a in domain.agents)
    assert reg.domains["video_temporal"].modality == "video"
    assert "video_temporal" not in reg.image_domains()
    assert len(reg.judge["image"].criteria) == len(reg.judge["video"].criteria) == 5
    assert {a.tool for a in reg.domains["infographic_document"].agents} == {None, "ocr"}


def test_user_registry_adds_and_replaces(tmp_path: Path):
    (tmp_path / "p.md").write_text("Describe the satellite image.")
    user = tmp_path / "reg.yaml"
    user.write_text(
        "agents:\n"
        "  geo_perception: {name: Geo, role: perception, model: vlm, prompt: p.md, max_tokens: 64}\n"
        "  visual_guideline: {name: VG, role: guideline, model: vlm, prompt: p.md, max_tokens: 32}\n"
        "domains:\n"
        "  remote_sensing:\n"
        "    name: Remote sensing\n"
        "    description: satellite and aerial images\n"
        "    agents: [geo_perception, visual_guideline]\n"
        "    summary: general_summary\n"
    )
    reg = load_registry(user)
    assert [a.key for a in reg.domains["remote_sensing"].agents] == [
        "geo_perception",
        "visual_guideline",
    ]
    # the replaced agent is used by the packaged domains too
    natural_vg = reg.domains["natural"].agents[-1]
    assert natural_vg.max_tokens == 32 and natural_vg.prompt == "Describe the satellite image."
    assert len(reg.domains) == 10


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "domains:\n  d:\n    name: D\n    description: x\n    agents: [nope]\n    summary: general_summary\n",
            ["domains.d.agents[0]", "unknown agent 'nope'", "define it under agents"],
        ),
        (
            "domains:\n  d:\n    name: D\n    description: x\n    agents: [general_reasoning]\n    summary: general_reasoning\n",
            ["domains.d.summary", "role: summary"],
        ),
        (
            "agents:\n  a: {name: A, role: wizard, model: vlm, prompt: p.md, max_tokens: 5}\n",
            ["agents.a", "role", "wizard"],
        ),
        (
            "agents:\n  a: {name: A, role: tool, model: vlm, prompt: missing.md, max_tokens: 5}\n",
            ["agents.a", "prompt file not found"],
        ),
        (
            "agents:\n  Bad-Key: {name: A, role: tool, model: vlm, prompt: p.md, max_tokens: 5}\n",
            ["agents.Bad-Key", "snake_case"],
        ),
        ("agnets: {}\n", ["unknown section", "agnets"]),
        ("domains: [\n", ["invalid YAML"]),
    ],
)
def test_broken_user_registry_names_file_key_and_fix(
    tmp_path: Path, body: str, expected: list[str]
):
    (tmp_path / "p.md").write_text("x")
    user = tmp_path / "broken.yaml"
    user.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_registry(user)
    message = str(err.value)
    assert str(user) in message
    for part in expected:
        assert part in message


def test_unknown_domain_lookup_lists_known_keys():
    with pytest.raises(ConfigError, match="known domains: natural"):
        load_registry().domain("pets")


def test_render_leaves_json_braces_alone():
    assert render('{"a":1} ${caption}', caption="c") == '{"a":1} c'
