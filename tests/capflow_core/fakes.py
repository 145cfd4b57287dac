"""A scripted in-memory backend for control-flow tests (the real runtimes have their own tests)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from capflow_core.backends.base import GenRequest, GenResult
from capflow_core.errors import InfrastructureError

Reply = str | GenResult | Exception


def default_reply(request: GenRequest) -> str:
    if request.tag.startswith("route"):
        return '{"domain":"natural","confidence":8}'
    if request.tag.startswith(("judge", "eval_judge")):
        props = request.constraint.schema["properties"]  # type: ignore[union-attr]
        return json.dumps(dict.fromkeys(props, 3))
    return f"text for {request.tag}"


class ScriptedBackend:
    """Answers each request with ``script(request)``; tracks concurrency and requests."""

    def __init__(
        self,
        script: Callable[[GenRequest], Reply] = default_reply,
        model_id: str = "fake-vlm",
        delay_s: float = 0.02,
        gpus: int = 0,
    ) -> None:
        self.script = script
        self.model_id = model_id
        self.delay_s = delay_s
        self._gpus = gpus
        self.requests: list[GenRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def _one(self, request: GenRequest) -> GenResult:
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        reply = self.script(request)
        if isinstance(reply, InfrastructureError):
            raise reply
        if isinstance(reply, Exception):
            return GenResult("", error=str(reply))
        if isinstance(reply, GenResult):
            return reply
        return GenResult(reply, prompt_tokens=10, completion_tokens=5, latency_s=self.delay_s)

    async def aclose(self) -> None:
        return None

    def gpus(self) -> int:
        return self._gpus

    def tags(self) -> list[str]:
        return [r.tag for r in self.requests]
