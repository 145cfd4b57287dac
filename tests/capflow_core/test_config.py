from pathlib import Path

import pytest

from capflow_core.config import DEFAULT_CONFIG, PACKAGED_CONFIG_DIR, AcceptRule, load_config
from capflow_core.errors import ConfigError


@pytest.mark.parametrize("name", ["tiny.yaml", "single-gpu.yaml", "paper.yaml"])
def test_packaged_configs_load(name: str):
    cfg = load_config(PACKAGED_CONFIG_DIR / name)
    assert cfg.source and cfg.source.endswith(name)
    assert Path(cfg.storage.root).is_absolute()


def test_paper_config_is_the_papers_setup():
    cfg = load_config(PACKAGED_CONFIG_DIR / "paper.yaml")
    assert cfg.models.vlm.model == "Qwen/Qwen2.5-VL-72B-Instruct"
    assert cfg.models.llm.model == "Qwen/Qwen2.5-72B-Instruct"
    assert cfg.models.judge.model == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert cfg.judge.accept.accepts(dict.fromkeys("abcde", 3))
    assert not cfg.judge.accept.accepts({"a": 3, "b": 3, "c": 2, "d": 3, "e": 3})


def test_default_rule_env_then_packaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CAPFLOW_CONFIG", raising=False)
    assert load_config().source == str(DEFAULT_CONFIG)
    other = tmp_path / "c.yaml"
    other.write_text((PACKAGED_CONFIG_DIR / "tiny.yaml").read_text())
    monkeypatch.setenv("CAPFLOW_CONFIG", str(other))
    cfg = load_config()
    assert cfg.source == str(other)
    # relative paths resolve against the config file's folder
    assert cfg.models.vlm.model == str((tmp_path / "../.capflow/tiny-model").resolve())
    assert cfg.role("eval_judge") == cfg.models.judge


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "models: {vlm: {backend: vllm, model: x}}",
            ["models.vlm", "vllm", "transformers", "openai"],
        ),
        (
            "models: {vlm: {backend: transformers, model: x, max_batch_size: 0}, llm: {backend: transformers, model: x}, judge: {backend: transformers, model: x}}",
            ["models.vlm", "max_batch_size", "greater than or equal to 1", "got 0"],
        ),
        (
            "models: {}\ngenration: {}",
            ["genration: unknown key", "models.vlm: required key is missing"],
        ),
        (
            "models: {vlm: {backend: openai, model: m, endpoints: [{url: localhost:8000}]}}",
            ["endpoints.0.url", "localhost:8000"],
        ),
        ("models: {vlm: {backend: openai, model: m, endpoints: []}}", ["endpoints", "at least 1"]),
        ("judge: {accept: {min_each: 4}}", ["judge.accept.min_each", "got 4"]),
        ("video: {num_frames: 4, fps: 2}", ["exactly one of video.num_frames or video.fps"]),
        ("models: [", ["invalid YAML"]),
    ],
)
def test_invalid_config_names_key_value_and_allowed(
    tmp_path: Path, yaml_text: str, expected: list[str]
):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    for part in [str(bad), *expected]:
        assert part in str(err.value)


def test_missing_config_file_says_how_to_fix(tmp_path: Path):
    with pytest.raises(ConfigError, match="pass --config PATH or set CAPFLOW_CONFIG"):
        load_config(tmp_path / "nope.yaml")


def test_accept_rule():
    rule = AcceptRule(min_each=2, min_mean=2.5)
    assert rule.describe() == "min_each>=2,min_mean>=2.5"
    assert rule.accepts({"a": 3, "b": 2})
    assert not rule.accepts({"a": 2, "b": 2})
    assert not rule.accepts({})
