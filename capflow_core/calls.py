"""Building one sample's model calls and running them with accounting.

Prompt layout for cache reuse: the system text and the image/video come first and are the
same objects (so byte-identical once encoded) across every call on one sample; the call's
own instruction comes last. vLLM's prefix cache and encoder cache then reuse the media work.

Every call is held to the sample's :class:`CallBounds` (``generation.max_completion_tokens``
and ``max_prompt_tokens``): a free-text request's token budget is clamped before it is sent
(constrained ones are bounded by their enum-only grammar), and a reply whose reported prompt
or free-text completion is over its bound becomes the call's error (an item error for the
sample), whatever the backend did.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from capflow_core.backends.base import (
    Backend,
    Constraint,
    GenRequest,
    GenResult,
    ImagePart,
    Message,
    VideoPart,
)
from capflow_core.config import Generation
from capflow_core.structured import ReplyError, format_hint, parse_reply


def visual_messages(system: str, media: ImagePart | VideoPart, instruction: str) -> list[Message]:
    """System text, then the media, then the instruction (see the module docstring)."""
    return [Message("system", [system]), Message("user", [media, instruction])]


def text_messages(system: str, instruction: str) -> list[Message]:
    return [Message("system", [system]), Message("user", [instruction])]


@dataclass(frozen=True)
class CallBounds:
    """Token bounds on every call of one sample."""

    max_prompt_tokens: int
    max_completion_tokens: int

    @classmethod
    def of(cls, generation: Generation | None = None) -> CallBounds:
        """The bounds of a config's ``generation`` section (default: the safe defaults)."""
        gen = generation or Generation()
        return cls(gen.max_prompt_tokens, gen.max_completion_tokens)

    def clamp(self, request: GenRequest) -> GenRequest:
        """The request with its reply budget cut to ``max_completion_tokens``; a constrained
        request keeps its own (small, fixed) budget: cut short, its reply would not parse."""
        if request.constraint is not None or request.max_tokens <= self.max_completion_tokens:
            return request
        return replace(request, max_tokens=self.max_completion_tokens)

    def violation(self, request: GenRequest, result: GenResult) -> str | None:
        """Why ``result`` breaks a bound, or None. A constrained reply is bounded by its
        grammar (the in-process runner may raise its budget to fit the longest valid reply)."""
        if result.prompt_tokens > self.max_prompt_tokens:
            return (
                f"prompt_too_long: {result.prompt_tokens} prompt tokens exceed "
                f"generation.max_prompt_tokens={self.max_prompt_tokens}"
            )
        if request.constraint is None and result.completion_tokens > self.max_completion_tokens:
            return (
                f"reply_too_long: {result.completion_tokens} completion tokens exceed "
                f"generation.max_completion_tokens={self.max_completion_tokens}"
            )
        return None


@dataclass
class CallLog:
    """Every call made for one sample, for token and latency accounting."""

    bounds: CallBounds = field(default_factory=CallBounds.of)
    results: list[GenResult] = field(default_factory=list)
    visual_calls: int = 0  # calls that carried the image/video (an API would bill its tokens)
    stage: str = "load"  # the stage in progress, to file infrastructure errors under

    def add(self, result: GenResult, visual: bool) -> GenResult:
        self.results.append(result)
        self.visual_calls += int(visual)
        return result

    @property
    def prompt_tokens(self) -> int:
        return sum(r.prompt_tokens for r in self.results)

    @property
    def completion_tokens(self) -> int:
        return sum(r.completion_tokens for r in self.results)


async def call(backend: Backend, request: GenRequest, log: CallLog) -> GenResult:
    """One model call within ``log.bounds``; a per-request failure comes back as
    ``result.error`` (so does a reply over a bound: its text is dropped)."""
    request = log.bounds.clamp(request)
    (result,) = await backend.generate([request])
    if not result.error and (problem := log.bounds.violation(request, result)):
        result = replace(result, text="", error=problem)
    return log.add(result, _is_visual(request))


async def call_structured(
    backend: Backend, request: GenRequest, constraint: Constraint, log: CallLog
) -> tuple[object | None, str | None]:
    """A constrained call, validated client-side; an invalid reply is re-asked once.

    Returns:
        ``(value, None)`` on success, ``(None, error)`` when both replies were unusable.
    """
    request.constraint = constraint
    first = await call(backend, request, log)
    if first.error:
        return None, first.error
    try:
        return parse_reply(first.text, constraint), None
    except ReplyError as err:
        problem = str(err)
    retry = GenRequest(
        messages=[
            *request.messages,
            Message("assistant", [first.text]),
            Message("user", [f"That reply was invalid: {problem}. {format_hint(constraint)}"]),
        ],
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        constraint=constraint,
        seed=request.seed,
        tag=request.tag + ":reask",
    )
    second = await call(backend, retry, log)
    if second.error:
        return None, second.error
    try:
        return parse_reply(second.text, constraint), None
    except ReplyError as err:
        return None, f"unparseable reply after one re-ask: {err}"


def _is_visual(request: GenRequest) -> bool:
    return any(isinstance(p, ImagePart | VideoPart) for m in request.messages for p in m.content)
