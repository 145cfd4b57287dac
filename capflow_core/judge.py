"""Reject sampling: the judge scores a caption on five criteria, each 1..3.

The accept rule comes from config (the paper's default: every criterion at 3). The rule is
not part of the fingerprint: changing it re-decides from stored scores.
"""

from __future__ import annotations

from capflow_core.backends.base import GenRequest, ImagePart, VideoPart
from capflow_core.calls import CallLog, call_structured, visual_messages
from capflow_core.config import AcceptRule
from capflow_core.context import JUDGE_MAX_TOKENS, Context
from capflow_core.records import JudgeResult
from capflow_core.registry import render
from capflow_core.structured import judge_constraint


async def judge(
    media: ImagePart | VideoPart, caption: str, ctx: Context, log: CallLog, role: str = "judge"
) -> JudgeResult:
    """Scores and decision; an unusable reply gives ``error`` set and ``accepted=False``."""
    spec = ctx.registry.judge["video" if isinstance(media, VideoPart) else "image"]
    rule = ctx.config.judge.accept
    backend = ctx.backends[role]
    request = GenRequest(
        messages=visual_messages(
            ctx.registry.system_prompt, media, render(spec.prompt, caption=caption)
        ),
        max_tokens=JUDGE_MAX_TOKENS,
        tag=role,
        **ctx.sampling(),
    )
    value, error = await call_structured(
        backend, request, judge_constraint(list(spec.criteria)), log
    )
    if error or not isinstance(value, dict):
        return JudgeResult(rule=rule.describe(), model=backend.model_id, error=error or "no reply")
    scores = {c: int(value[c]) for c in spec.criteria}
    return decide(scores, rule, backend.model_id)


def decide(scores: dict[str, int], rule: AcceptRule, model: str) -> JudgeResult:
    """Apply the accept rule to stored scores (used again when only the rule changes)."""
    return JudgeResult(
        scores=scores, accepted=rule.accepts(scores), rule=rule.describe(), model=model
    )
