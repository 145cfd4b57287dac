"""The engine end to end through the real runtime: the tiny model in process, on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from capflow_core.config import PACKAGED_CONFIG_DIR, Config, load_config
from capflow_core.engine import CapFlow, Sample
from capflow_core.registry import load_registry


def tiny_config(model_dir: Path, **extra) -> Config:
    spec = {"model": str(model_dir), "build_tiny": False}
    overrides = {"models": {"vlm": spec, "llm": spec, "judge": spec}, **extra}
    return load_config(PACKAGED_CONFIG_DIR / "tiny.yaml", overrides=overrides)


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    from capflow_core.sample_media import generate_samples, make_corrupt_samples

    folder = tmp_path_factory.mktemp("samples")
    good = [str(p) for p in generate_samples(folder)]
    bad = [str(p) for p in make_corrupt_samples(folder / "bad").values()]
    return good + bad


@pytest.fixture(scope="module")
def lenient_records(tiny_model_dir: Path, sample_files: list[str]):
    flow = CapFlow(tiny_config(tiny_model_dir))
    return flow, flow.caption(sample_files)


def test_every_input_yields_a_complete_record(lenient_records, sample_files):
    _, records = lenient_records
    registry = load_registry()
    assert [r.source_uri for r in records] == sample_files
    good = [r for r in records if "/bad/" not in r.source_uri]
    bad = [r for r in records if "/bad/" in r.source_uri]
    assert len(good) >= 8 and {r.modality for r in good} == {"image", "video"}
    for r in good:
        assert r.ok, r.errors
        assert r.domain in registry.domains
        assert len(r.agents) == len(registry.domains[r.domain].agents)
        assert all(a.text is not None and a.completion_tokens > 0 for a in r.agents)
        # the grammar makes the random-weight model's router and judge replies valid
        assert r.judge.error is None and set(r.judge.scores.values()) <= {1, 2, 3}
        assert len(r.judge.scores) == 5 and r.accepted  # lenient rule in tiny.yaml
        assert r.tokens.prompt > 0 and r.fingerprint
    for r in good:
        if r.modality == "video":
            assert r.domain == "video_temporal" and r.route.skipped
        else:
            assert not r.route.skipped and 0.0 <= r.route.confidence <= 1.0
    assert bad and all(list(r.errors) == ["load"] and r.caption is None for r in bad)


def test_concurrent_calls_were_micro_batched(lenient_records):
    flow, _ = lenient_records
    backend = flow.backends["vlm"]
    assert backend is flow.backends["llm"] is flow.backends["judge"]  # one model, shared
    assert backend.stats.rows > backend.stats.batches  # several requests per generate call


def test_paper_rule_rejects_random_captions(tiny_model_dir: Path, sample_files: list[str]):
    images = [p for p in sample_files if p.endswith(".png") and "/bad/" not in p][:4]
    cfg = tiny_config(tiny_model_dir, judge={"accept": {"min_each": 3}})
    records = CapFlow(cfg).caption([Sample(p, domain="natural") for p in images], mode="single")
    assert all(r.ok for r in records)
    assert any(not r.accepted for r in records)  # a strict rule must be able to fail
    assert all(r.accepted == (min(r.judge.scores.values()) == 3) for r in records)
