"""In-process backend: one Hugging Face VLM on the CPU or one GPU, micro-batching callers.

Concurrent ``generate`` calls (one per sample coroutine) land in one queue; a single worker
takes up to ``max_batch_size`` requests of one length class (the same constraint, or a
similar token budget: a batch decodes until its longest row ends), waiting at most
``batch_wait_ms`` for more, and runs one ``model.generate`` per group of compatible sampling
settings (all greedy rows together; sampled rows by equal temperature, top-p and seed) on
the backend's one model thread: one generate at a time per model. Rows may mix text-only,
image and video chats, constraints and ``max_tokens``. Nothing heavy is imported or loaded
before the first call, and the model outlives event loops (each ``asyncio.run`` gets fresh
queue primitives).

Bounds (:meth:`TransformersBackend.set_bounds`; ``backends_for`` applies ``generation``'s; the
defaults are its safe defaults): a prompt over ``max_prompt_tokens`` is not generated, a
batch still generating ``request_timeout_s`` after it started is stopped, and a request whose
caller stopped waiting (a timed-out sample) stops at the next decoding step; each is that
request's error, never its neighbours'.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capflow_core.backends.base import Choice, GenRequest, GenResult
from capflow_core.config import Generation, TransformersModel, is_path_like
from capflow_core.errors import ConfigError


@dataclass
class BatchStats:
    """What the backend has run: ``batches`` generate calls over ``rows`` requests."""

    batches: int = 0
    rows: int = 0
    largest_batch: int = 0
    row_errors: int = 0


@dataclass
class _Pending:
    request: GenRequest
    future: asyncio.Future[GenResult]


class TransformersBackend:
    """The ``transformers`` backend (see the module docstring).

    Args:
        spec: the model, device, dtype and micro-batching settings.
        runner: a ``transformers_runner.Runner`` already in memory (benchmarks build
            random-weight models that never touch disk); by default loaded on first use.
    """

    def __init__(self, spec: TransformersModel, runner: Any = None) -> None:
        self.spec = spec
        self.model_id = spec.name or spec.model + (f":{spec.adapter}" if spec.adapter else "")
        self.stats = BatchStats()
        self._runner: Any = runner
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._pending: deque[_Pending] = deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        # One thread for all model work: one generate at a time, and one OpenMP thread pool
        # (every new calling thread gets its own pool; on few cores they fight)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capflow-model")
        defaults = Generation()
        self.max_prompt_tokens: int | None = defaults.max_prompt_tokens
        self.request_timeout_s: float | None = defaults.request_timeout_s

    def set_bounds(self, max_prompt_tokens: int | None, request_timeout_s: float | None) -> None:
        """Bound every later request (None: unbounded)."""
        self.max_prompt_tokens, self.request_timeout_s = max_prompt_tokens, request_timeout_s

    def gpus(self) -> int:
        """1 on a CUDA device, else 0."""
        return 1 if self.spec.device.startswith("cuda") else 0

    async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Run ``requests`` (batched with other callers'); one result per request, in order.

        Raises:
            ConfigError: the model folder is missing or the model cannot be loaded.
        """
        if not requests:
            return []
        self._bind_loop()
        await self._ensure_loaded()
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        items = [_Pending(r, loop.create_future()) for r in requests]
        self._pending.extend(items)
        self._wake.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name=f"transformers:{self.model_id}")
        return list(await asyncio.gather(*(i.future for i in items)))

    async def aclose(self) -> None:
        """Stop the worker and free the model (a later call loads it again)."""
        if self._worker is not None and self._loop is asyncio.get_running_loop():
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._worker = None
        _fail(list(self._pending), RuntimeError(f"backend {self.model_id} was closed"))
        self._pending.clear()
        device = self.spec.device
        self._runner = None
        gc.collect()
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def _bind_loop(self) -> None:
        # asyncio primitives belong to one event loop; a new loop (a new asyncio.run) gets
        # fresh ones while the loaded model is kept
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._lock, self._wake = loop, asyncio.Lock(), asyncio.Event()
            self._pending.clear()
            self._worker = None

    async def _ensure_loaded(self) -> None:
        assert self._lock is not None
        async with self._lock:
            if self._runner is None:
                loop = asyncio.get_running_loop()
                self._runner = await loop.run_in_executor(self._thread, self._load)

    def _load(self) -> Any:
        from capflow_core.backends.transformers_runner import Runner

        source = self.spec.model
        revision = self.spec.revision
        if is_path_like(source) or Path(source).expanduser().is_dir():
            folder = Path(source).expanduser()
            if not folder.is_dir():
                if not self.spec.build_tiny:
                    raise ConfigError(
                        f"model folder {folder} does not exist (a transformers-backend model "
                        f"role's `model`). Build the tiny offline model there with "
                        f"`capflow tiny-model {folder}`, set `build_tiny: true` on that role, "
                        f"or point `model` at a downloaded model folder or a hub id"
                    )
                from capflow_core.tiny_model import build_tiny_model

                build_tiny_model(folder)
            source, revision = str(folder), None
        return Runner.load(source, revision, self.spec.device, self.spec.dtype, self.spec.adapter)

    async def _work(self) -> None:
        assert self._wake is not None
        wait_s = self.spec.batch_wait_ms / 1000
        size = self.spec.max_batch_size
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            deadline = time.monotonic() + wait_s
            while len(self._pending) < size and (left := deadline - time.monotonic()) > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except TimeoutError:
                    break
            batch = _take_batch(self._pending, size)
            batch = [item for item in batch if not item.future.done()]  # callers gone
            try:
                for group in _sampling_groups(batch):
                    await self._run_group(group)
            except asyncio.CancelledError:
                _fail(batch, RuntimeError(f"backend {self.model_id} was closed"))
                raise

    async def _run_group(self, group: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._thread, self._run, group)
        except Exception as err:  # a bug must reach the callers, never leave them waiting
            _fail(group, err)
            return
        for item, result in zip(group, results, strict=True):
            if not item.future.done():
                item.future.set_result(result)

    def _run(self, group: list[_Pending]) -> list[GenResult]:
        from capflow_core.backends.transformers_runner import RunBounds

        runner = self._runner
        if runner is None:
            raise RuntimeError(f"backend {self.model_id} was closed")
        requests = [i.request for i in group]
        futures = {id(i.request): i.future for i in group}
        # read from the model thread: a cancelled future's state never changes back
        bounds = RunBounds(
            self.max_prompt_tokens,
            self.request_timeout_s,
            lambda request: futures[id(request)].cancelled(),
        )
        results = runner.run(requests, bounds)
        self.stats.batches += runner.take_generate_calls()
        self.stats.rows += len(requests)
        self.stats.largest_batch = max(self.stats.largest_batch, len(requests))
        self.stats.row_errors += sum(r.error is not None for r in results)
        return results


def _fail(items: list[_Pending], err: Exception) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(err)


def _sampling_groups(batch: list[_Pending]) -> list[list[_Pending]]:
    """Requests that can share one generate call: all greedy ones, or equal sampling settings."""
    groups: dict[tuple[Any, ...], list[_Pending]] = {}
    for item in batch:
        r = item.request
        key = ("greedy",) if r.temperature == 0 else ("sample", r.temperature, r.top_p, r.seed)
        groups.setdefault(key, []).append(item)
    return list(groups.values())


def _length_class(request: GenRequest) -> tuple[Any, ...]:
    """Requests whose replies run about as long: a batch decodes until its longest row ends,
    so a 24-token agent reply must not wait on an 85-token judge reply."""
    c = request.constraint
    if c is not None:
        return ("choice", len(c.options)) if isinstance(c, Choice) else ("json", c.name)
    return ("text", max(request.max_tokens - 1, 1).bit_length())  # power-of-two budget


def _take_batch(pending: deque[_Pending], size: int) -> list[_Pending]:
    """Up to ``size`` requests of the oldest request's length class, in arrival order."""
    want = _length_class(pending[0].request)
    batch: list[_Pending] = []
    rest: deque[_Pending] = deque()
    while pending:
        item = pending.popleft()
        if len(batch) < size and _length_class(item.request) == want:
            batch.append(item)
        else:
            rest.append(item)
    pending.extend(rest)
    return batch
