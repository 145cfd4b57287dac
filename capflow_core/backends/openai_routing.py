"""The endpoint pool of the openai backend: per-endpoint in-flight bounds and least-loaded choice.

Each endpoint holds a semaphore of ``max_inflight`` slots: enough requests in flight to keep
the server's continuous batching full, no more (the rest wait here, not in the server's
queue, so they can still go to an endpoint that frees up). A request reserves its endpoint
before it waits for a slot, so concurrent choices see each other.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import openai

    from capflow_core.config import Endpoint

COOLDOWN_S = 5.0  # an endpoint that refused a connection is skipped this long while others are up


class Route:
    """One endpoint: its client, its in-flight bound and its health.

    Attributes:
        url: the endpoint URL without credentials (for logs, errors and results).
        inflight: requests that chose this endpoint and have not finished (waiting or running).
        down_until: ``time.monotonic()`` until which the endpoint is cooling down.
        served: successful requests; failures: failed attempts.
    """

    def __init__(self, spec: Endpoint, client: openai.AsyncOpenAI) -> None:
        self.spec = spec
        self.url = safe_url(spec.url)
        self.client = client
        self.slots = asyncio.Semaphore(spec.max_inflight)
        self.inflight = 0
        self.down_until = 0.0
        self.served = 0
        self.failures = 0

    @property
    def load(self) -> float:
        """In-flight requests relative to the endpoint's bound."""
        return self.inflight / self.spec.max_inflight

    def cool_down(self) -> None:
        """Mark the endpoint down for :data:`COOLDOWN_S` (it refused a connection)."""
        self.down_until = time.monotonic() + COOLDOWN_S

    def mark_up(self) -> None:
        """Mark the endpoint healthy (it answered)."""
        self.down_until = 0.0
        self.served += 1


def pick_route(candidates: list[Route], avoid: Route | None = None) -> Route:
    """The least-loaded endpoint that is not cooling down (ties: the first listed).

    ``avoid`` (the endpoint a retry just failed on) is skipped when another is up; when all
    are cooling down, the one that comes back first is tried anyway (the caller's backoff
    spaces the attempts).
    """
    now = time.monotonic()
    up = [r for r in candidates if r.down_until <= now]
    if not up:
        up = [min(candidates, key=lambda r: r.down_until)]
    if avoid is not None and len(up) > 1:
        up = [r for r in up if r is not avoid]
    return min(up, key=lambda r: r.load)


def safe_url(url: str) -> str:
    """``url`` without user:password, fit for logs and error messages."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return scheme + sep + host.rpartition("@")[2] + slash + path
