"""Reachability of a model's OpenAI-compatible endpoints, for ``capflow doctor``.

``GET <url>/models`` (vLLM and ``transformers serve`` both answer it) says whether the
server is up and which names it serves; a server without it is probed at ``/health``.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import httpx

from capflow_core.backends.openai_routing import safe_url
from capflow_core.config import Endpoint, OpenAIModel


@dataclass(frozen=True)
class EndpointStatus:
    """What one endpoint answered.

    Attributes:
        url: the endpoint (credentials removed).
        ok: it answered ``/models`` or ``/health`` with HTTP 200.
        serves_model: the served name (adapter, else model) is listed by ``/models``;
            None when the server did not list its models.
        models: the names ``/models`` listed.
        detail: one line for a person: what failed, or what was found.
    """

    url: str
    ok: bool
    serves_model: bool | None
    models: tuple[str, ...]
    detail: str


async def check_endpoints(
    spec: OpenAIModel, timeout_s: float = 5.0, http_client: httpx.AsyncClient | None = None
) -> list[EndpointStatus]:
    """Probe every endpoint of ``spec`` concurrently; never raises for an unreachable one."""
    if not spec.endpoints:  # an endpoints_file that `capflow endpoints up` has not written
        from capflow_core.serving_state import no_endpoints_message

        detail = no_endpoints_message(spec.model, spec.endpoints_file)
        return [EndpointStatus(spec.endpoints_file or "(none)", False, None, (), detail)]
    headers = {}
    if spec.api_key_env and os.environ.get(spec.api_key_env):
        headers["Authorization"] = f"Bearer {os.environ[spec.api_key_env]}"
    name = spec.adapter or spec.model
    client = http_client or httpx.AsyncClient()
    try:
        return list(
            await asyncio.gather(
                *(_check(client, e, name, headers, timeout_s) for e in spec.endpoints)
            )
        )
    finally:
        if http_client is None:
            await client.aclose()


async def _check(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    name: str,
    headers: dict[str, str],
    timeout_s: float,
) -> EndpointStatus:
    url = safe_url(endpoint.url)
    base = endpoint.url.rstrip("/")
    try:
        resp = await client.get(f"{base}/models", headers=headers, timeout=timeout_s)
        if resp.status_code == 200:
            models = tuple(str(m.get("id")) for m in resp.json().get("data", []))
            listed = name in models
            detail = (
                f"up; serves {name!r}"
                if listed
                else f"up, but {name!r} is not among its models {list(models)[:10]}; "
                "fix the model/adapter name in the config or the server's flags"
            )
            return EndpointStatus(url, True, listed, models, detail)
        if resp.status_code in (401, 403):
            return EndpointStatus(
                url,
                False,
                None,
                (),
                f"HTTP {resp.status_code}: set api_key_env to the server's key",
            )
        root = base.removesuffix("/v1")
        health = await client.get(f"{root}/health", headers=headers, timeout=timeout_s)
        if health.status_code == 200:
            return EndpointStatus(
                url, True, None, (), f"up (/health); /models: HTTP {resp.status_code}"
            )
        return EndpointStatus(
            url,
            False,
            None,
            (),
            f"HTTP {resp.status_code} from /models, {health.status_code} from /health",
        )
    except (httpx.HTTPError, ValueError, AttributeError) as err:  # AttributeError: odd JSON
        return EndpointStatus(
            url,
            False,
            None,
            (),
            f"unreachable ({type(err).__name__}: {err}); is the server started?",
        )
