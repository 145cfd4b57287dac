"""The in-process backend on the real tiny Qwen2.5-VL (random weights, CPU)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from capflow_core.backends.base import Choice, GenRequest, GenResult, ImagePart, Message, VideoPart
from capflow_core.backends.transformers_backend import TransformersBackend
from capflow_core.config import TransformersModel
from capflow_core.errors import ConfigError
from capflow_core.structured import judge_constraint, parse_reply, router_constraint

DOMAINS = ["natural", "structure_math", "infographic_document", "medical_bio", "ui_interaction"]
CRITERIA = ["accuracy", "completeness", "fluency", "relevance", "hallucination"]
RNG = np.random.default_rng(0)
IMAGE = ImagePart(Image.fromarray(RNG.integers(0, 255, (120, 90, 3), dtype=np.uint8)))
TALL = ImagePart(Image.fromarray(RNG.integers(0, 255, (300, 40, 3), dtype=np.uint8)))
VIDEO = VideoPart(RNG.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8), fps=2.0)


def spec(model: Path | str, **kw: object) -> TransformersModel:
    return TransformersModel(backend="transformers", model=str(model), **kw)


def req(*parts: object, max_tokens: int = 6, **kw: object) -> GenRequest:
    return GenRequest(
        [Message("system", ["You are a helpful assistant."]), Message("user", list(parts))],
        max_tokens=max_tokens,
        **kw,
    )


def run(backend: TransformersBackend, requests: list[GenRequest]) -> list[GenResult]:
    return asyncio.run(backend.generate(requests))


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> TransformersBackend:
    import torch

    torch.set_num_threads(2)
    return TransformersBackend(spec(tiny_model_dir, max_batch_size=8))


def test_import_is_lazy_and_constructor_loads_nothing(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom capflow_core.backends.transformers_backend import TransformersBackend\n"
        "from capflow_core.config import TransformersModel\n"
        f"b = TransformersBackend(TransformersModel(backend='transformers', model='{tmp_path}/x'))\n"
        "assert b.gpus() == 0 and b.model_id.endswith('/x')\n"
        "print(sorted(m for m in ('torch', 'transformers', 'xgrammar') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert TransformersBackend(spec("Qwen/x", device="cuda:0")).gpus() == 1


def test_image_video_and_text_requests_in_one_batch(backend: TransformersBackend) -> None:
    requests = [
        req(IMAGE, "describe the image"),
        req(VIDEO, "describe the video"),
        req("describe nothing"),
        req(IMAGE, "compare", IMAGE),
    ]
    before = backend.stats.batches
    mixed = run(backend, requests)
    assert backend.stats.batches == before + 1  # mixed modalities share one generate call
    assert all(r.error is None and r.text and r.latency_s > 0 for r in mixed)
    assert all(0 < r.completion_tokens <= 6 for r in mixed)
    text_only = mixed[2].prompt_tokens
    assert mixed[0].prompt_tokens > text_only and mixed[1].prompt_tokens > text_only
    assert mixed[3].prompt_tokens > mixed[0].prompt_tokens  # two images, more tokens
    # left padding and batching change nothing for greedy decoding
    singles = [run(backend, [r])[0] for r in requests]
    assert [(s.text, s.prompt_tokens, s.completion_tokens) for s in singles] == [
        (m.text, m.prompt_tokens, m.completion_tokens) for m in mixed
    ]


def test_video_frames_carry_their_rate(tiny_model_dir: Path) -> None:
    from transformers import AutoProcessor

    from capflow_core.backends.transformers_batch import encode

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    slow = VideoPart(VIDEO.frames, fps=0.5)
    inputs = encode(processor, [req(VIDEO, "a"), req(slow, "b"), req(IMAGE, "c")], "cpu")
    # Qwen2.5-VL's temporal positions: seconds per 2-frame patch = 2 / fps
    assert inputs["second_per_grid_ts"].tolist() == [1.0, 4.0]
    assert inputs["video_grid_thw"].shape[0] == 2 and inputs["image_grid_thw"].shape[0] == 1
    longer = VideoPart(np.concatenate([VIDEO.frames] * 2), fps=2.0)
    two = encode(processor, [req(VIDEO, "a"), req(longer, "a")], "cpu")
    assert (two["attention_mask"].sum(1)[1] > two["attention_mask"].sum(1)[0]).item()


def test_constrained_replies_always_parse(backend: TransformersBackend) -> None:
    route, judge = router_constraint(DOMAINS), judge_constraint(CRITERIA)
    yes_no = Choice(("yes", "no", "not sure"))
    media = [IMAGE, VIDEO, "", TALL]
    requests = [
        req(
            *[m for m in (media[i % 4],) if m],
            f"question {i}",
            max_tokens=4,
            constraint=(route, judge, yes_no)[i % 3],
            temperature=(0.0, 1.0)[i % 2],
            seed=i,
        )
        for i in range(10)
    ]
    requests.append(req(IMAGE, "caption it", max_tokens=5))  # unconstrained in the same batch
    results = run(backend, requests)
    for request, result in zip(requests[:-1], results, strict=False):
        assert result.error is None
        parse_reply(result.text, request.constraint)  # raises if invalid
    assert results[-1].error is None and results[-1].completion_tokens <= 5
    assert results[-1].text == run(backend, requests[-1:])[0].text  # no mask leaked onto it
    # a 4-token budget cannot hold the JSON: constrained rows get the grammar's bound
    assert max(r.completion_tokens for r in results[:-1]) > 4


def test_each_row_keeps_its_own_max_tokens(backend: TransformersBackend) -> None:
    limits = [1, 3, 9]
    results = run(backend, [req(IMAGE, "describe", max_tokens=n) for n in limits])
    assert [r.completion_tokens <= n for r, n in zip(results, limits, strict=True)] == [True] * 3
    assert results[0].completion_tokens == 1
    assert results[2].completion_tokens > 3  # not cut to a neighbour's limit


def test_concurrent_callers_are_micro_batched(tiny_model_dir: Path) -> None:
    small = TransformersBackend(spec(tiny_model_dir, max_batch_size=4, batch_wait_ms=50))

    async def many() -> list[GenResult]:
        calls = [small.generate([req(IMAGE if i % 2 else "", f"item {i}")]) for i in range(10)]
        return [r for (r,) in await asyncio.gather(*calls)]

    results = asyncio.run(many())
    assert all(r.error is None for r in results) and len(results) == 10
    assert small.stats.rows == 10 and small.stats.largest_batch == 4
    assert small.stats.batches == 3  # 4 + 4 + 2, never one generate per caller


def test_sampling_settings_split_groups_and_seeds_repeat(backend: TransformersBackend) -> None:
    hot = dict(temperature=1.0, top_p=0.9, seed=7)
    requests = [req("tell a story", max_tokens=8, **hot), req("tell a story", max_tokens=8)]
    before = backend.stats.batches
    first = run(backend, requests)
    assert backend.stats.batches == before + 2  # greedy and sampled rows: separate calls
    second = run(backend, requests)
    assert first[0].text == second[0].text and first[1].text == second[1].text


def test_a_bad_request_does_not_fail_its_batch(backend: TransformersBackend) -> None:
    thin = ImagePart(Image.new("RGB", (1, 300)))  # aspect ratio over Qwen's limit of 200
    flat = VideoPart(np.zeros((4, 8), dtype=np.uint8), fps=1.0)
    requests = [req(IMAGE, "fine"), req(thin, "bad"), req("fine too"), req(flat, "bad")]
    results = run(backend, requests)
    assert [r.error is None for r in results] == [True, False, True, False]
    assert "aspect ratio" in (results[1].error or "") and "(T, H, W, 3)" in (results[3].error or "")
    assert results[0].text and results[2].text
    assert backend.stats.row_errors >= 2


def test_missing_folder_is_a_config_error_naming_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "no-model"
    with pytest.raises(ConfigError, match=r"no-model.*capflow tiny-model"):
        run(TransformersBackend(spec(missing)), [req("hi")])
    assert not missing.exists()
    with pytest.raises(ConfigError, match=r"cannot load model 'nobody/no-such-model'"):
        run(TransformersBackend(spec("nobody/no-such-model")), [req("hi")])


def test_build_tiny_builds_then_serves_across_event_loops(tmp_path: Path) -> None:
    backend = TransformersBackend(spec(tmp_path / "built", build_tiny=True))
    first = run(backend, [req("hello", max_tokens=3)])[0]
    assert (tmp_path / "built" / "model.safetensors").is_file() and first.error is None
    assert run(backend, [req("hello", max_tokens=3)])[0].text == first.text  # a new loop
    asyncio.run(backend.aclose())
    assert run(backend, [req("hello", max_tokens=3)])[0].text == first.text  # reloaded


def test_closing_fails_waiting_callers_instead_of_hanging(tiny_model_dir: Path) -> None:
    closing = TransformersBackend(spec(tiny_model_dir, max_batch_size=1))

    async def close_midway() -> list[object]:
        await closing.generate([req("warm up", max_tokens=1)])
        calls = [
            asyncio.create_task(closing.generate([req(f"x {i}", max_tokens=40)])) for i in range(4)
        ]
        await asyncio.sleep(0.05)
        await closing.aclose()
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)

    outcomes = asyncio.run(close_midway())
    assert any(isinstance(o, RuntimeError) and "closed" in str(o) for o in outcomes)
