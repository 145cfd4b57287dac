"""Constrained decoding in-process with xgrammar: grammars per constraint, masks per batch row.

Imported only once a transformers model is loaded (it imports torch, transformers and
xgrammar at the top). Unconstrained rows of a batch get no grammar matcher at all: the mask
is applied to the constrained rows only (``indices``), so a caption row in the same batch as
a judge row pays nothing for the judge's grammar.
"""

from __future__ import annotations

import json
from typing import Any

import torch
import transformers
import xgrammar as xgr

from capflow_core.backends.base import Choice, Constraint, JsonSchema

# xgrammar's default on CUDA is a Triton kernel, JIT-compiled per shape on first use (seconds
# per new batch shape); its plain-torch kernel is a handful of elementwise ops and needs none.
CUDA_MASK_KERNEL = "torch_native"


def choice_ebnf(options: tuple[str, ...]) -> str:
    """An EBNF grammar whose only sentences are the ``options``, verbatim."""
    if not options:
        raise ValueError("a Choice constraint needs at least one option")
    return "root ::= " + " | ".join(json.dumps(o, ensure_ascii=False) for o in options)


def reply_token_bound(constraint: Constraint) -> int | None:
    """Most tokens any reply valid under ``constraint`` can take, end-of-sequence included.

    Every token covers at least one byte, so the longest valid reply in bytes (+1 for the end
    token) bounds it. None for schemas whose replies are unbounded (non-enum values).
    """
    if isinstance(constraint, Choice):
        return max(len(o.encode()) for o in constraint.options) + 1
    schema = constraint.schema
    props = schema.get("properties")
    if (
        schema.get("type") != "object"
        or not isinstance(props, dict)
        or schema.get("additionalProperties", True) is not False
        or not all(isinstance(p, dict) and p.get("enum") for p in props.values())
    ):
        return None
    # optional keys may be left out; the bound counts every key, an upper bound either way
    fields = [
        json.dumps(k) + ":" + max((json.dumps(v) for v in p["enum"]), key=len)
        for k, p in props.items()
    ]
    return len(("{" + ",".join(fields) + "}").encode()) + 1


class GrammarCache:
    """Compiles each distinct constraint once for one tokenizer and logits width.

    Args:
        tokenizer: the model's Hugging Face tokenizer.
        vocab_size: the width of the model's logits (may exceed ``len(tokenizer)``).
        stop_token_ids: tokens that end a reply (the generation config's end tokens).
    """

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]) -> None:
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids
        )
        self.vocab_size = vocab_size
        self._compiler = xgr.GrammarCompiler(info, max_threads=2)
        self._compiled: dict[str, xgr.CompiledGrammar] = {}
        self._batch = xgr.BatchGrammarMatcher(max_threads="auto")  # fills masks in parallel

    def compiled(self, constraint: Constraint) -> xgr.CompiledGrammar:
        """The compiled grammar of ``constraint`` (cached)."""
        if isinstance(constraint, Choice):
            key = "choice:" + json.dumps(list(constraint.options))
        elif isinstance(constraint, JsonSchema):
            key = "json:" + json.dumps(constraint.schema)
        else:
            raise TypeError(f"unsupported constraint {type(constraint).__name__}")
        if key not in self._compiled:
            if isinstance(constraint, Choice):
                grammar = self._compiler.compile_grammar(choice_ebnf(constraint.options))
            else:
                grammar = self._compiler.compile_json_schema(
                    json.dumps(constraint.schema), any_whitespace=False, separators=(",", ":")
                )
            self._compiled[key] = grammar
        return self._compiled[key]

    def processor(self, grammars: list[xgr.CompiledGrammar | None]) -> RowGrammarProcessor:
        """A fresh logits processor for one ``generate`` call, one entry per batch row."""
        return RowGrammarProcessor(grammars, self.vocab_size, self._batch)


class RowGrammarProcessor(transformers.LogitsProcessor):
    """Masks the logits of constrained rows to their grammar; other rows pass untouched.

    Like ``xgr.contrib.hf.LogitsProcessor`` (one instance serves one ``generate`` call), but
    a row may have no grammar, and the rows' masks are filled in parallel threads. Registered
    before the sampling warpers, so temperature and top-p act on the allowed tokens only.
    """

    def __init__(
        self,
        grammars: list[xgr.CompiledGrammar | None],
        vocab_size: int,
        batch: xgr.BatchGrammarMatcher,
    ) -> None:
        self.rows = [i for i, g in enumerate(grammars) if g is not None]
        self.matchers = {i: xgr.GrammarMatcher(g) for i, g in enumerate(grammars) if g is not None}
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), vocab_size)
        self.vocab_size = vocab_size
        self.batch = batch
        self.started = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.started and self.rows:
            last = input_ids[:, -1].tolist()
            accepted = xgr.BatchGrammarMatcher.batch_accept_token(
                [self.matchers[i] for i in self.rows], [last[i] for i in self.rows]
            )
            # A rejected token means generate already ended the row (its length limit) and
            # pads it; a terminated matcher means the reply is complete. Either way: done.
            self.rows = [
                i
                for i, ok in zip(self.rows, accepted, strict=True)
                if ok and not self.matchers[i].is_terminated()
            ]
        self.started = True
        if not self.rows:
            return scores
        self.batch.batch_fill_next_token_bitmask(
            [self.matchers[i] for i in self.rows], self.bitmask, indices=self.rows
        )
        device = scores.device.type
        target = scores if device in ("cuda", "cpu") else scores.to("cpu")
        xgr.apply_token_bitmask_inplace(
            target,
            self.bitmask.to(target.device),
            vocab_size=self.vocab_size,
            indices=self.rows,
            backend=CUDA_MASK_KERNEL if device == "cuda" else "cpu",
        )
        return target if target is scores else target.to(scores.device)
