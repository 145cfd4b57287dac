"""The exact JSON the openai backend sends, per endpoint capability flag, and its retries.

Checked against vLLM's documented OpenAI-compatible API:
- structured outputs: https://docs.vllm.ai/en/latest/features/structured_outputs/
  (``"structured_outputs": {"choice": [...]}`` / ``{"json": schema}``; ``guided_*`` removed
  in v0.12);
- video: https://docs.vllm.ai/en/latest/features/multimodal_inputs/ (``video_url`` parts);
- LoRA: https://docs.vllm.ai/en/latest/features/lora/ (the adapter name is the model).
Requests are captured by an httpx.MockTransport; nothing else is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from capflow_core.backends.base import (
    Choice,
    GenRequest,
    ImagePart,
    JsonSchema,
    Message,
    VideoPart,
)
from capflow_core.backends.openai_backend import OpenAIBackend
from capflow_core.config import OpenAIModel
from capflow_core.errors import ConfigError, InfrastructureError
from capflow_core.structured import judge_constraint

A, B = "http://a.test/v1", "http://b.test/v1"
Handler = Callable[[httpx.Request], Any]


def reply(text: str = "ok", prompt: int = 11, completion: int = 3) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        },
    )


def backend(
    handler: Handler, endpoints: list[dict[str, Any]] | None = None, **kw: Any
) -> OpenAIBackend:
    spec = OpenAIModel.model_validate(
        {
            "backend": "openai",
            "model": "Qwen/Qwen2.5-VL-7B-Instruct",
            "endpoints": endpoints or [{"url": A}],
            "max_retries": 3,
            "backoff_s": 0.01,
            "max_backoff_s": 0.05,
            **kw,
        }
    )
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return OpenAIBackend(spec, http_client=client)


def capture() -> tuple[list[dict[str, Any]], Handler]:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        body["_url"] = str(request.url)
        sent.append(body)
        return reply()

    return sent, handler


def image() -> ImagePart:
    return ImagePart(Image.new("RGB", (40, 30), (200, 10, 10)))


def video(frames: int = 6) -> VideoPart:
    arr = np.zeros((frames, 31, 45, 3), np.uint8)
    arr[..., 1] = np.arange(frames)[:, None, None] * 20
    return VideoPart(frames=arr, fps=2.0)


def request(*media: ImagePart | VideoPart, constraint: Any = None) -> GenRequest:
    return GenRequest(
        messages=[
            Message("system", ["You describe images."]),
            Message("user", [*media, "Describe it."]),
        ],
        max_tokens=17,
        temperature=0.3,
        top_p=0.9,
        seed=5,
        constraint=constraint,
    )


def run(b: OpenAIBackend, reqs: list[GenRequest], one_by_one: bool = False) -> list[Any]:
    """``generate`` the batch (or each request in turn, to fix the order sent), then close."""

    async def go() -> list[Any]:
        try:
            if not one_by_one:
                return await b.generate(reqs)
            return [r for req in reqs for r in await b.generate([req])]
        finally:
            await b.aclose()

    return asyncio.run(go())


ROUTE = JsonSchema(
    schema={
        "type": "object",
        "properties": {"domain": {"type": "string", "enum": ["natural", "ui"]}},
        "required": ["domain"],
        "additionalProperties": False,
    },
    name="route",
)


def test_vllm_endpoint_sends_structured_outputs_choice_and_json() -> None:
    sent, handler = capture()
    b = backend(handler, [{"url": A, "structured_outputs": "vllm"}])
    results = run(
        b,
        [request(image(), constraint=Choice(("yes", "no"))), request(image(), constraint=ROUTE)],
        one_by_one=True,
    )
    assert [r.error for r in results] == [None, None]
    assert sent[0]["structured_outputs"] == {"choice": ["yes", "no"]}
    assert sent[1]["structured_outputs"] == {"json": ROUTE.schema, "disable_any_whitespace": True}
    for body in sent:
        assert body["_url"] == A + "/chat/completions"
        assert "response_format" not in body and not any(k.startswith("guided_") for k in body)
        assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (
            17,
            0.3,
            0.9,
            5,
        )
        assert body["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"


def test_json_schema_endpoint_sends_strict_response_format() -> None:
    sent, handler = capture()
    b = backend(handler, [{"url": A, "structured_outputs": "json_schema"}])
    judge = judge_constraint(["accuracy", "completeness"])
    run(
        b,
        [request(image(), constraint=judge), request(image(), constraint=Choice(("a", "b")))],
        one_by_one=True,
    )
    assert sent[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "judge", "schema": judge.schema, "strict": True},
    }
    assert "structured_outputs" not in sent[0]
    # OpenAI's response_format has no bare-string form: a Choice goes unconstrained
    assert "response_format" not in sent[1] and "structured_outputs" not in sent[1]


def test_none_endpoint_sends_no_constraint_fields() -> None:
    sent, handler = capture()
    b = backend(handler, [{"url": A, "structured_outputs": "none"}])
    run(b, [request(image(), constraint=ROUTE), request(image(), constraint=Choice(("a",)))])
    for body in sent:
        assert not {"structured_outputs", "response_format"} & body.keys()


def test_media_before_text_and_image_data_url_reused() -> None:
    sent, handler = capture()
    img = image()
    b = backend(handler)
    run(b, [request(img), request(img)])
    system, user = sent[0]["messages"]
    assert system == {"role": "system", "content": "You describe images."}
    assert [p["type"] for p in user["content"]] == ["image_url", "text"]
    url = user["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (40, 30)
    assert sent[1]["messages"] == sent[0]["messages"]  # byte-identical prefix per sample


def test_video_url_part_decodes_to_the_sampled_frames() -> None:
    import av

    sent, handler = capture()
    clip = video(frames=6)
    b = backend(handler, [{"url": A, "video": "video_url"}])
    run(b, [request(clip)])
    parts = sent[0]["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["video_url", "text"]
    url = parts[0]["video_url"]["url"]
    assert url.startswith("data:video/mp4;base64,")
    with av.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert float(stream.average_rate) == pytest.approx(2.0)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6
    assert frames[0].shape == (32, 46, 3)  # 31x45 padded to even for yuv420p
    greens = [int(f[:31, :45, 1].mean()) for f in frames]
    assert greens == sorted(greens) and greens[-1] - greens[0] > 60


def test_frames_mode_sends_consecutive_images() -> None:
    sent, handler = capture()
    b = backend(handler, [{"url": A, "video": "frames"}])
    run(b, [request(video(frames=4))])
    parts = sent[0]["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["image_url"] * 4 + ["text"]
    assert len({p["image_url"]["url"] for p in parts[:4]}) == 4


def test_video_none_is_an_item_error_unless_another_endpoint_takes_video() -> None:
    sent, handler = capture()
    only = backend(handler, [{"url": A, "video": "none"}])
    [result] = run(only, [request(video())])
    assert sent == [] and "cannot take video" in (result.error or "")
    assert "video_url" in (result.error or "")
    mixed = backend(handler, [{"url": A, "video": "none"}, {"url": B, "video": "video_url"}])
    [result] = run(mixed, [request(video())])
    assert result.error is None and [s["_url"] for s in sent] == [B + "/chat/completions"]


def test_lora_adapter_is_the_request_model_name() -> None:
    sent, handler = capture()
    b = backend(handler, adapter="metacaptioner")
    assert b.model_id == "Qwen/Qwen2.5-VL-7B-Instruct:metacaptioner"
    run(b, [request(image())])
    assert sent[0]["model"] == "metacaptioner"


def test_usage_latency_and_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPFLOW_TEST_KEY", "sekrit-123")
    auth: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        auth.append(req.headers["authorization"])
        return reply("a caption", prompt=40, completion=7)

    [r] = run(backend(handler, api_key_env="CAPFLOW_TEST_KEY"), [request(image())])
    assert (r.text, r.prompt_tokens, r.completion_tokens) == ("a caption", 40, 7)
    assert r.latency_s > 0 and r.endpoint == A
    assert auth == ["Bearer sekrit-123"]
    monkeypatch.delenv("CAPFLOW_TEST_KEY")
    run(backend(handler, api_key_env="CAPFLOW_TEST_KEY"), [request(image())])
    assert auth[-1] == "Bearer EMPTY"


def scripted(*statuses: int) -> tuple[list[str], Handler]:
    """A handler answering the given statuses in turn (0 = connection refused), then 200."""
    calls: list[str] = []
    queue = list(statuses)

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(str(req.url.host))
        status = queue.pop(0) if queue else 200
        if status == 0:
            raise httpx.ConnectError("connection refused", request=req)
        if status != 200:
            return httpx.Response(status, json={"error": {"message": f"status {status}"}})
        return reply()

    return calls, handler


def test_503_then_200_succeeds_and_429_is_retried() -> None:
    calls, handler = scripted(503, 429)
    b = backend(handler)
    [r] = run(b, [request()])
    assert r.error is None and r.text == "ok"
    assert len(calls) == 3 and b.stats()["retries"] == 2


def test_400_is_an_item_error_without_retry() -> None:
    calls, handler = scripted(400)
    b = backend(handler)
    [r, ok] = run(b, [request(), request()])
    assert "HTTP 400" in (r.error or "") and "status 400" in (r.error or "")
    assert ok.error is None and len(calls) == 2 and b.stats()["retries"] == 0


def test_401_is_a_configuration_error_naming_api_key_env() -> None:
    _, handler = scripted(401)
    with pytest.raises(ConfigError, match="api_key_env"):
        run(backend(handler), [request()])


def test_all_failing_raises_infrastructure_error_after_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CAPFLOW_TEST_KEY", "sekrit-123")
    calls, handler = scripted(0, *[503] * 10)
    b = backend(
        handler,
        [{"url": A}, {"url": "http://user:pw@b.test/v1"}],
        max_retries=4,
        api_key_env="CAPFLOW_TEST_KEY",
    )
    with pytest.raises(InfrastructureError) as info:
        run(b, [request()])
    message = str(info.value)
    assert len(calls) == 5 and set(calls) == {"a.test", "b.test"}  # failed over
    assert "http://a.test/v1" in message and "http://b.test/v1" in message
    assert "5 attempts" in message and "HTTP 503" in message
    assert "sekrit" not in message and "pw" not in message


def test_least_loaded_routing_picks_the_idle_endpoint() -> None:
    release = asyncio.Event()
    hosts: list[str] = []

    async def handler(req: httpx.Request) -> httpx.Response:
        hosts.append(str(req.url.host))
        if len(hosts) == 1:
            await release.wait()  # the first request holds its endpoint busy
        return reply()

    b = backend(handler, [{"url": A, "max_inflight": 4}, {"url": B, "max_inflight": 1}])

    async def go() -> list[str]:
        first = asyncio.create_task(b.generate([request()]))
        while not hosts:
            await asyncio.sleep(0.001)
        [second] = await b.generate([request()])
        release.set()
        [held] = await first
        await b.aclose()
        return [held.endpoint, second.endpoint]

    assert asyncio.run(go()) == [A, B]


def test_inflight_bound_per_endpoint() -> None:
    active, peak = 0, 0

    async def handler(req: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return reply()

    b = backend(handler, [{"url": A, "max_inflight": 3}])
    results = run(b, [request() for _ in range(12)])
    assert all(r.error is None for r in results) and peak == 3


def test_timeout_is_retried() -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:  # what httpx raises when timeout_s passes (MockTransport has no clock)
            raise httpx.ReadTimeout("timed out", request=req)
        return reply("late but fine")

    b = backend(handler)
    [r] = run(b, [request()])
    assert r.text == "late but fine" and calls == 2 and b.stats()["retries"] == 1


def test_backend_survives_one_event_loop_per_batch() -> None:
    async def handler(req: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)
        return reply()

    b = backend(handler, [{"url": A, "max_inflight": 1}])  # contention binds the semaphore
    first = asyncio.run(b.generate([request(), request()]))
    second = asyncio.run(b.generate([request(), request()]))
    assert [r.error for r in first + second] == [None] * 4


def test_check_endpoints_names_a_credentials_problem() -> None:
    from capflow_core.backends.endpoint_check import check_endpoints

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "Unauthorized"})

    spec = OpenAIModel.model_validate(
        {"backend": "openai", "model": "m", "endpoints": [{"url": A}]}
    )
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    [status] = asyncio.run(check_endpoints(spec, http_client=client))
    assert not status.ok and "api_key_env" in status.detail
