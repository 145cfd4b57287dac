"""The CapFlow engine: one sample's path is a plain async function.

``route -> gather(agents) -> summarize -> judge`` in ``capflow`` mode, or one VLM call then
the judge in ``single`` mode. Item errors are recorded on the sample and the batch goes on.
Each sample's model work is bounded by ``generation.sample_timeout_s`` and each of its calls
by the token bounds of :class:`~capflow_core.calls.CallBounds`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from capflow_core.agents import run_agents
from capflow_core.backends import backends_for
from capflow_core.backends.base import Backend, GenRequest, ImagePart, VideoPart
from capflow_core.calls import CallBounds, CallLog, call, visual_messages
from capflow_core.config import Config, config_from_dict, load_config
from capflow_core.context import Context
from capflow_core.cost import CostSummary, allocate_cost, api_equivalent_usd
from capflow_core.errors import ConfigError, InfrastructureError, ItemError
from capflow_core.fingerprint import domain_fingerprint, single_fingerprint
from capflow_core.judge import judge
from capflow_core.records import CaptionRecord, Route, Tokens
from capflow_core.registry import Registry, load_registry
from capflow_core.router import route
from capflow_core.summary import summarize

log = logging.getLogger("capflow")

# The sample whose path is running in this task (and the agent tasks it starts): for logs,
# tracing and the benchmark's replay of the engine's calls.
CURRENT_SAMPLE: contextvars.ContextVar[str] = contextvars.ContextVar("capflow_sample", default="")


@dataclass
class Sample:
    """One input: a path/URI, plus what its source says about it.

    A prepared item (see :mod:`capflow_core.prepared_media`) also carries its decoded
    ``media`` and ``asset_id``: nothing is read from ``uri`` then. A stored ``route`` is
    reused as is (re-captioning after a prompt change does not route again).
    """

    uri: str
    domain: str | None = None  # the paper's `task`: set, routing is skipped
    modality: str | None = None
    license: str | None = None
    provenance: str | None = None
    asset_id: str | None = None
    media: ImagePart | VideoPart | None = None
    route: Route | None = None


Input = str | os.PathLike[str] | Sample


class CapFlow:
    """Captions images and videos with the CapFlow workflow (or one VLM call).

    Example:
        >>> records = CapFlow.from_config("configs/tiny.yaml").caption(["cat.jpg"])
    """

    def __init__(
        self,
        config: Config,
        registry: Registry | None = None,
        backends: dict[str, Backend] | None = None,
    ) -> None:
        self.config = config
        self.registry = registry or load_registry(config.registry)
        self.backends = backends or backends_for(config)
        self.last_cost: CostSummary | None = None
        self._started = False
        self._ocr_ready = True

    @classmethod
    def from_config(
        cls, config: Config | str | os.PathLike[str] | dict[str, Any] | None = None
    ) -> CapFlow:
        """From a Config, a YAML path, an inline mapping, or None (the default config rule)."""
        if isinstance(config, Config):
            return cls(config)
        if isinstance(config, dict):
            return cls(config_from_dict(config))
        return cls(load_config(config))

    def caption(self, inputs: Iterable[Input], **kwargs: Any) -> list[CaptionRecord]:
        """Synchronous :meth:`acaption` (runs its own event loop)."""

        async def run() -> list[CaptionRecord]:
            try:
                return await self.acaption(inputs, **kwargs)
            finally:
                await self.aclose()

        return asyncio.run(run())

    async def acaption(
        self,
        inputs: Iterable[Input],
        *,
        mode: str | None = None,
        run_id: str | None = None,
        on_record: Callable[[CaptionRecord], None] | None = None,
    ) -> list[CaptionRecord]:
        """One record per input, in input order; failures are recorded, never raised.

        Args:
            inputs: paths, fsspec URIs or :class:`Sample` objects.
            mode: ``capflow`` or ``single``; default from config.
            run_id: stored on every record; a fresh id by default.
            on_record: called as each record completes (progress bars).
        """
        self.start()
        samples = [i if isinstance(i, Sample) else Sample(os.fspath(i)) for i in inputs]
        mode = mode or self.config.captioner.mode
        run_id = run_id or uuid.uuid4().hex[:12]
        in_flight = self.config.concurrency.samples_in_flight
        # samples in model work, and twice that admitted: the next ones decode their media
        # while a slot is busy, so requests reach the backend together, not staggered
        gate, admit = asyncio.Semaphore(in_flight), asyncio.Semaphore(2 * in_flight)
        logs: list[CallLog] = []

        async def one(sample: Sample) -> CaptionRecord:
            async with admit:
                call_log = CallLog(CallBounds.of(self.config.generation))
                logs.append(call_log)
                record = await self._caption_one(sample, mode, run_id, call_log, gate)
            if on_record:
                on_record(record)
            return record

        started = time.perf_counter()
        records = list(await asyncio.gather(*(one(s) for s in samples)))
        wall = time.perf_counter() - started
        gpus = sum(b.gpus() for b in {id(b): b for b in self.backends.values()}.values())
        gpu_s = allocate_cost(records, wall, gpus, self.config.cost.usd_per_gpu_hour)
        api = api_equivalent_usd(
            sum(c.prompt_tokens for c in logs),
            sum(c.completion_tokens for c in logs),
            sum(c.visual_calls for c in logs),
            self.config.cost.api,
        )
        usd = sum(r.cost_usd for r in records)
        self.last_cost = CostSummary(wall, gpus, gpu_s, usd, api, len(records))
        return records

    def start(self) -> None:
        """Check tools once: a missing Tesseract is a warning at start-up, not a crash mid-run."""
        if self._started:
            return
        uses_ocr = any(a.tool == "ocr" for d in self.registry.domains.values() for a in d.agents)
        if uses_ocr and self.config.ocr.enabled:
            from capflow_core.ocr import tesseract_available, warn_if_missing

            warn_if_missing()
            self._ocr_ready = tesseract_available()
        self._started = True

    async def aclose(self) -> None:
        for backend in {id(b): b for b in self.backends.values()}.values():
            await backend.aclose()

    def context(self) -> Context:
        return Context(self.config, self.registry, self.backends, ocr_ready=self._ocr_ready)

    async def _caption_one(
        self, sample: Sample, mode: str, run_id: str, call_log: CallLog, gate: asyncio.Semaphore
    ) -> CaptionRecord:
        from capflow_core.media import load_media

        CURRENT_SAMPLE.set(sample.uri)
        record = CaptionRecord(
            asset_id="",
            source_uri=sample.uri,
            modality=sample.modality or "unknown",
            license=sample.license,
            provenance=sample.provenance,
            mode=mode,
            run_id=run_id,
        )
        budget: asyncio.Timeout | None = None
        try:
            if sample.media is not None:
                part = sample.media
                record.asset_id = sample.asset_id or ""
                record.modality = "video" if isinstance(part, VideoPart) else "image"
            else:
                media = await asyncio.to_thread(
                    load_media, sample.uri, self.config, modality=sample.modality
                )
                record.asset_id, record.modality, part = media.asset_id, media.modality, media.part
            async with gate:
                async with asyncio.timeout(self.config.generation.sample_timeout_s) as budget:
                    if mode == "single":
                        await self._single(sample, part, record, call_log)
                    else:
                        await self._workflow(sample, part, record, call_log)
        except ItemError as err:
            record.errors[err.stage] = str(err)
        except TimeoutError as err:  # the work was cancelled: its requests are abandoned
            limit = self.config.generation.sample_timeout_s
            record.errors[call_log.stage] = (
                f"timeout: the sample's model work ran past generation.sample_timeout_s={limit:g}"
                if budget is not None and budget.expired()
                else f"internal: TimeoutError: {err}"
            )
        except InfrastructureError as err:
            record.errors[call_log.stage] = f"infrastructure: {err}"
        except ConfigError:
            raise  # e.g. a missing model folder: stops the run, it is no item's fault
        except Exception as err:  # a bug must not sink the batch; it is recorded loudly
            log.exception("unexpected error on %s", sample.uri)
            record.errors[call_log.stage] = f"internal: {type(err).__name__}: {err}"
        record.tokens = Tokens(call_log.prompt_tokens, call_log.completion_tokens)
        return record

    async def _workflow(
        self, sample: Sample, media: ImagePart | VideoPart, record: CaptionRecord, call_log: CallLog
    ) -> None:
        ctx = self.context()
        call_log.stage = "route"
        if sample.route is not None:
            record.route = Route(sample.route.domain, sample.route.confidence, sample.route.skipped)
        else:
            record.route = await route(media, sample.domain, ctx, call_log)
        domain = ctx.registry.domain(record.route.domain)
        record.domain = domain.key
        call_log.stage = "agents"
        record.agents = await run_agents(domain, media, ctx, call_log)
        failed = [a for a in record.agents if a.error]
        if failed:
            raise ItemError(
                "agents", "model_error", "; ".join(f"{a.agent}: {a.error}" for a in failed)
            )
        call_log.stage = "summary"
        record.caption = _nonempty(await summarize(domain, record.agents, ctx, call_log), "summary")
        # after the calls: a tiny model folder built on first use now has its revision
        record.fingerprint = domain_fingerprint(domain, ctx.registry, ctx.config)
        await self._judge(media, record, ctx, call_log)

    async def _single(
        self, sample: Sample, media: ImagePart | VideoPart, record: CaptionRecord, call_log: CallLog
    ) -> None:
        ctx = self.context()
        video = isinstance(media, VideoPart)
        record.domain = sample.domain or (ctx.config.router.video_domain if video else None)
        if record.domain:
            ctx.registry.domain(record.domain)
            record.route = Route(record.domain, 1.0, skipped=True)
        backend = ctx.backends["vlm"]
        record.captioner = backend.model_id
        request = GenRequest(
            messages=visual_messages(ctx.registry.system_prompt, media, ctx.registry.single_prompt),
            max_tokens=ctx.max_tokens(1024),
            tag="single",
            **ctx.sampling(),
        )
        call_log.stage = "caption"
        result = await call(backend, request, call_log)
        if result.error:
            raise ItemError("caption", "model_error", result.error)
        record.caption = _nonempty(result.text, "caption")
        record.fingerprint = single_fingerprint(ctx.registry, ctx.config, video)
        await self._judge(media, record, ctx, call_log)

    async def _judge(
        self, media: ImagePart | VideoPart, record: CaptionRecord, ctx: Context, call_log: CallLog
    ) -> None:
        assert record.caption is not None
        call_log.stage = "judge"
        record.judge = await judge(media, record.caption, ctx, call_log)
        record.accepted = record.judge.accepted
        if record.judge.error:
            record.errors["judge"] = record.judge.error


def _nonempty(text: str, stage: str) -> str:
    """A caption with text; an empty reply is a failed call (retried in a later run)."""
    if not text.strip():
        raise ItemError(stage, "model_error", "the model returned an empty caption")
    return text.strip()
