"""The ``openai`` backend: ``vllm serve`` (or any OpenAI-compatible server) over HTTP.

Requests go to the least-loaded endpoint (in-flight / ``max_inflight``), each endpoint
behind a semaphore of ``max_inflight`` so the server's continuous batching stays full
without queueing unboundedly. 408/409/429/5xx, timeouts and connection failures are
retried with exponential backoff and jitter, failing over to other endpoints; an endpoint
that refuses connections sits out a short cooldown while others are up. Other 4xx are item
errors (``GenResult.error``); 401/403/404 are configuration errors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from typing import Any

import httpx
import openai

from capflow_core.backends.base import GenRequest, GenResult
from capflow_core.backends.openai_payload import UnsupportedInput, media_pending, request_kwargs
from capflow_core.backends.openai_routing import Route, pick_route
from capflow_core.config import Endpoint, OpenAIModel
from capflow_core.errors import ConfigError, InfrastructureError
from capflow_core.serving_state import no_endpoints_message

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 409, 429})


class _Retryable(Exception):
    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class OpenAIBackend:
    """A model behind one or more OpenAI-compatible endpoints (see the module docstring).

    Args:
        spec: the model's config (served name, optional LoRA adapter, endpoints, retries).
        http_client: an httpx client for every endpoint's OpenAI client (tests pass one
            with a mock transport); by default each endpoint gets its own.

    The API key is read from the variable ``spec.api_key_env`` names, when it is set.
    """

    def __init__(self, spec: OpenAIModel, http_client: httpx.AsyncClient | None = None) -> None:
        if not spec.endpoints:
            raise ConfigError(no_endpoints_message(spec.model, spec.endpoints_file))
        self.spec = spec
        self.model_id = spec.model + (f":{spec.adapter}" if spec.adapter else "")
        # vLLM serves a LoRA adapter under its own name (--lora-modules NAME=PATH)
        self.served_name = spec.adapter or spec.model
        self.retries = 0
        # a server started without --api-key accepts any key; the client needs a non-empty one
        key = os.environ.get(spec.api_key_env, "") if spec.api_key_env else ""
        self._api_key = key.strip() or "EMPTY"
        self._http_client = http_client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._routes = [Route(e, self._client(e)) for e in spec.endpoints]

    def gpus(self) -> int:
        """GPUs behind all endpoints (for the GPU-seconds cost model)."""
        return sum(e.gpus for e in self.spec.endpoints)

    def stats(self) -> dict[str, Any]:
        """Requests served and failed attempts per endpoint, and retries in total."""
        return {
            "retries": self.retries,
            "endpoints": {
                r.url: {"served": r.served, "failures": r.failures} for r in self._routes
            },
        }

    async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Run ``requests`` concurrently; one result per request, in order.

        Raises:
            InfrastructureError: a request outlasted the retry budget (the rest are cancelled).
        """
        self._bind_loop()
        tasks = [asyncio.create_task(self._one(r)) for r in requests]
        if not tasks:
            return []
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:  # on the first failure, or when the caller is cancelled
            for t in tasks:
                t.cancel()
        failed = [t for t in done if not t.cancelled() and t.exception() is not None]
        if failed:
            await asyncio.gather(*tasks, return_exceptions=True)
            raise failed[0].exception()  # type: ignore[misc]
        return [t.result() for t in tasks]

    async def aclose(self) -> None:
        """Close the HTTP clients; those of an event loop already closed are dropped (their
        connections went with that loop and cannot be closed from another)."""
        if self._loop is not None and self._loop.is_closed():
            return
        for route in self._routes:
            await route.client.close()

    def _client(self, endpoint: Endpoint) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=endpoint.url,
            api_key=self._api_key,
            timeout=self.spec.timeout_s,
            max_retries=0,
            http_client=self._http_client,
        )

    def _bind_loop(self) -> None:
        # Semaphores and pooled connections belong to one event loop; a caller that runs
        # asyncio.run() per batch gets fresh ones (only when nothing is in flight).
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop and not any(r.inflight for r in self._routes):
            self._loop = loop
            for route in self._routes:
                route.slots = asyncio.Semaphore(route.spec.max_inflight)
                if self._http_client is None:
                    route.client = self._client(route.spec)

    async def _one(self, request: GenRequest) -> GenResult:
        candidates = self._routes
        if request.has_video:
            candidates = [r for r in self._routes if r.spec.video != "none"] or self._routes
        payloads: dict[tuple[str, str], dict[str, Any]] = {}
        route: Route | None = None
        last = ""
        for attempt in range(self.spec.max_retries + 1):
            if attempt:
                self.retries += 1
            route = pick_route(candidates, avoid=route)
            route.inflight += 1
            try:
                key = (route.spec.structured_outputs, route.spec.video)
                if key not in payloads:
                    payloads[key] = await self._shape(request, route.spec)
                return await self._call(route, payloads[key])
            except UnsupportedInput as err:
                return GenResult(text="", error=str(err), endpoint=route.url)
            except _Retryable as err:
                route.failures += 1
                last = f"{route.url}: {err}"
                delay = self._delay(attempt + 1, err.retry_after)
            finally:
                route.inflight -= 1
            if attempt < self.spec.max_retries:
                log.warning(
                    "%s [%s] %s; retry %d/%d in %.1fs",
                    self.model_id,
                    request.tag,
                    last,
                    attempt + 1,
                    self.spec.max_retries,
                    delay,
                )
                await asyncio.sleep(delay)
        urls = ", ".join(r.url for r in candidates)
        raise InfrastructureError(
            f"model {self.model_id}: no answer after {self.spec.max_retries + 1} attempts "
            f"over [{urls}]; last error: {last}"
        )

    async def _shape(self, request: GenRequest, endpoint: Endpoint) -> dict[str, Any]:
        if media_pending(request, endpoint):  # JPEG/MP4 encoding: keep it off the loop
            return await asyncio.to_thread(request_kwargs, request, endpoint, self.served_name)
        return request_kwargs(request, endpoint, self.served_name)

    async def _call(self, route: Route, kwargs: dict[str, Any]) -> GenResult:
        async with route.slots:
            start = time.perf_counter()
            try:
                response = await route.client.chat.completions.create(**kwargs)
            except openai.APITimeoutError:
                raise _Retryable(f"timed out after {self.spec.timeout_s:g}s") from None
            except openai.APIConnectionError as err:
                cause = err.__cause__ or err
                if isinstance(cause, httpx.ConnectError):  # not a stale keep-alive or a reset
                    route.cool_down()
                raise _Retryable(f"connection failed ({type(cause).__name__}: {cause})") from None
            except openai.APIStatusError as err:
                return self._status_error(route, err)
            latency = time.perf_counter() - start
        route.mark_up()
        if not response.choices:
            return GenResult(
                text="", error=f"{route.url}: reply had no choices", endpoint=route.url
            )
        usage = response.usage
        return GenResult(
            text=response.choices[0].message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_s=latency,
            endpoint=route.url,
        )

    def _status_error(self, route: Route, err: openai.APIStatusError) -> GenResult:
        status = err.status_code
        detail = f"HTTP {status}: {_clip(_error_message(err))}"
        if status in _RETRY_STATUS or status >= 500:
            raise _Retryable(detail, _retry_after(err.response))
        if status in (401, 403):
            raise ConfigError(
                f"{route.url} refused the credentials ({detail}); set api_key_env to the "
                "variable holding the server's API key (vllm serve --api-key)"
            )
        if status == 404:
            raise ConfigError(
                f"{route.url} does not serve model {self.served_name!r} ({detail}); check "
                "the model/adapter names against GET <url>/models"
            )
        return GenResult(text="", error=f"{route.url}: {detail}", endpoint=route.url)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        cap = min(self.spec.max_backoff_s, self.spec.backoff_s * 2 ** (attempt - 1))
        delay = cap / 2 + random.uniform(0, cap / 2)  # "equal jitter"
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.spec.max_backoff_s))
        return delay


def _error_message(err: openai.APIStatusError) -> str:
    body = err.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        msg = (inner.get("message") or inner.get("detail")) if isinstance(inner, dict) else inner
        return str(msg if msg is not None else body)
    return err.response.text or err.message


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None


def _clip(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."
