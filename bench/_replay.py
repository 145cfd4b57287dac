"""Record the backend calls an engine run makes, and replay them bare.

:class:`Recorder` wraps each real backend; every call it passes through is filed under the
sample running it (``capflow_core.engine.CURRENT_SAMPLE``). :func:`replay` then issues one
sample's recorded requests through the same backends with the engine's stage structure
(route, then the agents concurrently, then summary, then judge; re-asks where they
happened), all samples concurrent under the same ``samples_in_flight`` limit, and nothing
else: no parsing, no records, no accounting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass, field

from capflow_core.backends.base import Backend, GenRequest, GenResult, ImagePart, Message, VideoPart
from capflow_core.engine import CURRENT_SAMPLE


@dataclass
class Call:
    """One backend call: the real backend it went to and the request."""

    backend: Backend
    request: GenRequest


@dataclass
class Recording:
    """The calls of one engine run by sample (in issue order), and every result."""

    calls: dict[str, list[Call]] = field(default_factory=lambda: defaultdict(list))
    results: list[GenResult] = field(default_factory=list)


class RecordingBackend:
    """A pass-through :class:`~capflow_core.backends.base.Backend` that files its calls.

    Args:
        inner: the real backend.
        recorder: owner of the recording the calls go to.
    """

    def __init__(self, inner: Backend, recorder: Recorder) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self._recorder = recorder

    async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Files ``requests`` under the running sample, then runs them on the real backend."""
        log = self._recorder.recording
        log.calls[CURRENT_SAMPLE.get()].extend(Call(self.inner, r) for r in requests)
        results = await self.inner.generate(requests)
        log.results.extend(results)
        return results

    async def aclose(self) -> None:
        await self.inner.aclose()

    def gpus(self) -> int:
        return self.inner.gpus()


class Recorder:
    """Wraps a role -> backend mapping; :meth:`start` begins a fresh :class:`Recording`."""

    def __init__(self, backends: dict[str, Backend]) -> None:
        self.real = backends
        self.recording = Recording()
        wrappers: dict[int, RecordingBackend] = {}
        for backend in backends.values():
            wrappers.setdefault(id(backend), RecordingBackend(backend, self))
        self.wrapped: dict[str, Backend] = {r: wrappers[id(b)] for r, b in backends.items()}

    def start(self) -> Recording:
        """A new, empty recording that the following calls go to."""
        self.recording = Recording()
        return self.recording


Stage = list[Call]  # one call, or a domain's agent calls (issued concurrently)


def plan(recording: Recording, order: list[str]) -> list[list[Stage]]:
    """Each sample's calls (samples in ``order``) as stages, on fresh copies of the media.

    Consecutive ``agent:*`` calls form one concurrent stage; every other call (route,
    summary, judge, single, and their re-asks) is a stage of its own. Media parts are copied
    (one copy per sample, shared by its calls as in the engine) so that nothing a backend
    cached on the engine run's parts makes the replay cheaper.
    """
    out = []
    for uri in order:
        stages: list[Stage] = []
        copies: dict[int, ImagePart | VideoPart] = {}
        for c in recording.calls.get(uri, []):
            call = Call(c.backend, _fresh(c.request, copies))
            agent = call.request.tag.startswith("agent:")
            if agent and stages and stages[-1][0].request.tag.startswith("agent:"):
                stages[-1].append(call)
            else:
                stages.append([call])
        if stages:
            out.append(stages)
    return out


async def replay(
    samples: list[list[Stage]], samples_in_flight: int
) -> tuple[float, list[GenResult]]:
    """Issue the planned calls bare; returns ``(wall seconds, results)``."""
    gate = asyncio.Semaphore(samples_in_flight)
    results: list[GenResult] = []

    async def one(stages: list[Stage]) -> None:
        async with gate:
            for stage in stages:
                if len(stage) == 1:
                    results.extend(await stage[0].backend.generate([stage[0].request]))
                    continue
                done = await asyncio.gather(*(c.backend.generate([c.request]) for c in stage))
                for r in done:
                    results.extend(r)

    started = time.perf_counter()
    await asyncio.gather(*(one(s) for s in samples))
    return time.perf_counter() - started, results


def _fresh(request: GenRequest, copies: dict[int, ImagePart | VideoPart]) -> GenRequest:
    def part(p: object) -> object:
        if isinstance(p, ImagePart):
            return copies.setdefault(id(p), ImagePart(p.image))
        if isinstance(p, VideoPart):
            return copies.setdefault(id(p), VideoPart(p.frames, p.fps, p.source_fps, dict(p.extra)))
        return p

    messages = [Message(m.role, [part(p) for p in m.content]) for m in request.messages]
    return dataclasses.replace(request, messages=messages)
