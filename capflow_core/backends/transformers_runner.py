"""A loaded Hugging Face VLM that runs one group of requests as one ``generate`` call.

Imported only when a model is loaded (it imports torch and transformers at the top). Runs
in a worker thread, one call at a time. A row whose media or text the processor rejects, or
a batch whose ``generate`` fails, never takes its neighbours down: bad rows are found by
encoding rows singly, and a failed batch is retried row by row.

:class:`RunBounds` hold a call's resource bounds: a row whose encoded prompt is longer than
``max_prompt_tokens`` is an error without generating; rows still generating ``timeout_s``
after their batch started are stopped at the next decoding step and are errors; a row whose
caller left (``gone``) stops at the next step. One step (or the prefill) is never cut.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from capflow_core.backends.base import GenRequest, GenResult
from capflow_core.backends.transformers_batch import RowLimits, decode_rows, encode
from capflow_core.backends.xgrammar_constraints import GrammarCache, reply_token_bound
from capflow_core.errors import ConfigError


@dataclass
class RunBounds:
    """Bounds on one :meth:`Runner.run` (None: unbounded); ``gone(request)`` says whether
    the request's caller has stopped waiting."""

    max_prompt_tokens: int | None = None
    timeout_s: float | None = None
    gone: Callable[[GenRequest], bool] = field(default=lambda _request: False)


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto`` is bfloat16 on CUDA and float32 elsewhere."""
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


class Runner:
    """A model, its processor and its grammar cache on one device."""

    def __init__(self, model: Any, processor: Any, device: str) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.device = device
        gen = model.generation_config
        ends = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
        self.end_ids = {t for t in [*ends, self.tokenizer.eos_token_id] if t is not None}
        self.pad_id = (
            gen.pad_token_id if gen.pad_token_id is not None else self.tokenizer.pad_token_id
        )
        vocab = model.get_output_embeddings().weight.shape[0]  # logits width, not len(tokenizer)
        self.grammars = GrammarCache(self.tokenizer, vocab, sorted(self.end_ids))
        self._generate_calls = 0

    @classmethod
    def load(
        cls, source: str, revision: str | None, device: str, dtype: str, adapter: str | None = None
    ) -> Runner:
        """Load a hub id (at ``revision``) or a local folder onto ``device``; with
        ``adapter``, a peft LoRA adapter folder is applied and merged into the weights.

        Raises:
            ConfigError: the model, processor or adapter cannot be found or read.
        """
        try:
            processor = AutoProcessor.from_pretrained(source, revision=revision)
            model = AutoModelForImageTextToText.from_pretrained(
                source, revision=revision, dtype=resolve_dtype(dtype, device), device_map=device
            )
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"cannot load model {source!r} (revision {revision}): {err}. Download it first "
                f"(`hf download {source}`) or point the role's `model` at a local folder"
            ) from err
        if adapter:
            from peft import PeftModel

            try:
                model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
            except (OSError, ValueError) as err:
                raise ConfigError(f"cannot load adapter {adapter!r} on {source!r}: {err}") from err
        return cls(model.eval(), processor, device)

    def take_generate_calls(self) -> int:
        """``generate`` calls made since the last time this was asked."""
        calls, self._generate_calls = self._generate_calls, 0
        return calls

    def run(self, requests: list[GenRequest], bounds: RunBounds | None = None) -> list[GenResult]:
        """One result per request; per-request failures (a bound broken included) come back
        as ``GenResult.error``."""
        bounds = bounds or RunBounds()
        start = time.perf_counter()
        try:
            inputs = encode(self.processor, requests, self.device)
        except Exception as err:
            if len(requests) == 1:
                return [GenResult("", error=f"input rejected: {_brief(err)}")]
            return self._without_bad_rows(requests, bounds)
        lengths = inputs["attention_mask"].sum(dim=1).tolist()
        if bounds.max_prompt_tokens and max(lengths) > bounds.max_prompt_tokens:
            return self._without_long_prompts(requests, lengths, bounds)
        deadline = time.monotonic() + bounds.timeout_s if bounds.timeout_s else None
        try:
            rows, expired = self._generate(requests, inputs, deadline, bounds)
        except Exception as err:
            if len(requests) == 1:
                return [GenResult("", error=f"generate failed: {_brief(err)}")]
            return [self.run([r], bounds)[0] for r in requests]
        latency = time.perf_counter() - start
        results = []
        for row, limit in zip(rows, self._limits(requests), strict=True):
            error = None
            if expired and not row.ended and row.completion_tokens < limit:
                error = (
                    f"timeout: still generating after {bounds.timeout_s:g}s "
                    f"(generation.request_timeout_s), stopped at {row.completion_tokens} tokens"
                )
            text = "" if error else row.text
            results.append(
                GenResult(text, row.prompt_tokens, row.completion_tokens, latency, error=error)
            )
        return results

    def _without_long_prompts(
        self, requests: list[GenRequest], lengths: list[int], bounds: RunBounds
    ) -> list[GenResult]:
        limit = bounds.max_prompt_tokens
        keep = [i for i, n in enumerate(lengths) if n <= limit]
        kept = iter(self.run([requests[i] for i in keep], bounds) if keep else [])
        return [
            next(kept)
            if n <= limit
            else GenResult(
                "",
                prompt_tokens=int(n),
                error=f"prompt_too_long: {int(n)} prompt tokens exceed "
                f"generation.max_prompt_tokens={limit}; not generated",
            )
            for n in lengths
        ]

    def _without_bad_rows(self, requests: list[GenRequest], bounds: RunBounds) -> list[GenResult]:
        results: list[GenResult | None] = [None] * len(requests)
        good = []
        for i, request in enumerate(requests):
            try:
                encode(self.processor, [request], "cpu")
                good.append(i)
            except Exception as err:
                results[i] = GenResult("", error=f"input rejected: {_brief(err)}")
        if good:
            for i, result in zip(good, self.run([requests[i] for i in good], bounds), strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    @staticmethod
    def _limits(requests: list[GenRequest]) -> list[int]:
        # a constrained reply cut short is worthless: its budget covers the longest valid reply
        return [
            max(r.max_tokens, (reply_token_bound(r.constraint) or 0) if r.constraint else 0)
            for r in requests
        ]

    def _generate(
        self, requests: list[GenRequest], inputs: Any, deadline: float | None, bounds: RunBounds
    ) -> tuple[list[Any], bool]:
        grammars = [
            self.grammars.compiled(r.constraint) if r.constraint else None for r in requests
        ]
        limits = self._limits(requests)
        prompt_len = inputs["input_ids"].shape[1]
        first = requests[0]
        sampling: dict[str, Any] = {"do_sample": False}
        if first.temperature > 0:
            sampling = {
                "do_sample": True,
                "temperature": first.temperature,
                "top_p": first.top_p,
                "top_k": 0,
            }
            if first.seed is not None:
                torch.manual_seed(first.seed)
        self._generate_calls += 1
        gone = [lambda r=r: bounds.gone(r) for r in requests]
        stop = RowLimits(prompt_len, limits, deadline, gone)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=max(limits),
                logits_processor=[self.grammars.processor(grammars)],
                stopping_criteria=[stop],
                eos_token_id=sorted(self.end_ids),
                pad_token_id=self.pad_id,
                **sampling,
            )
        rows = decode_rows(self.tokenizer, inputs, output.cpu(), limits, self.end_ids)
        return rows, stop.expired


def _brief(err: BaseException, n: int = 300) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= n else text[:n] + "..."
