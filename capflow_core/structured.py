"""Enum-only output contracts for the router and the judge, and their client-side parsers.

The grammars are deliberately tiny (fixed keys, integer choices, no free whitespace) so any
model, even a random-weight one, emits a valid reply in a few tokens when decoding is
constrained. Over endpoints without structured outputs the same parser validates the reply.
"""

from __future__ import annotations

import json
from typing import Any

from capflow_core.backends.base import Choice, Constraint, JsonSchema

CONFIDENCE_LEVELS = tuple(range(11))  # router confidence 0..10, reported as level / 10


def router_constraint(domain_keys: list[str]) -> JsonSchema:
    """``{"domain": <key>, "confidence": 0..10}``."""
    return JsonSchema(
        name="route",
        schema={
            "type": "object",
            "properties": {
                "domain": {"type": "string", "enum": list(domain_keys)},
                "confidence": {"type": "integer", "enum": list(CONFIDENCE_LEVELS)},
            },
            "required": ["domain", "confidence"],
            "additionalProperties": False,
        },
    )


def judge_constraint(criteria: list[str]) -> JsonSchema:
    """``{"<criterion>": 1..3, ...}`` over the five criteria, in order."""
    return JsonSchema(
        name="judge",
        schema={
            "type": "object",
            "properties": {c: {"type": "integer", "enum": [1, 2, 3]} for c in criteria},
            "required": list(criteria),
            "additionalProperties": False,
        },
    )


class ReplyError(ValueError):
    """A reply that does not satisfy its constraint."""


def parse_reply(text: str, constraint: Constraint) -> Any:
    """Validate ``text`` against ``constraint``; return the option (Choice) or dict (JSON).

    Raises:
        ReplyError: naming what is wrong, short enough to store on the sample.
    """
    stripped = text.strip()
    if isinstance(constraint, Choice):
        if stripped in constraint.options:
            return stripped
        raise ReplyError(f"expected one of {list(constraint.options)}, got {_clip(stripped)}")
    start, end = stripped.find("{"), stripped.rfind("}")
    if start < 0 or end < start:
        raise ReplyError(f"no JSON object in reply {_clip(stripped)}")
    try:
        value = json.loads(stripped[start : end + 1])
    except json.JSONDecodeError as err:
        raise ReplyError(f"invalid JSON ({err.msg}) in reply {_clip(stripped)}") from None
    return _check_object(value, constraint.schema)


def _check_object(value: Any, schema: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReplyError(f"expected a JSON object, got {type(value).__name__}")
    props: dict[str, Any] = schema["properties"]
    missing = [k for k in schema.get("required", props) if k not in value]
    extra = [k for k in value if k not in props]
    if missing or extra:
        raise ReplyError(f"keys: missing {missing}, unexpected {extra}")
    for key, sub in props.items():
        if key in value and "enum" in sub:
            got = value[key]
            # bool is an int subclass in Python; JSON true is never a valid score
            if isinstance(got, bool) or got not in sub["enum"]:
                raise ReplyError(f"{key}: {got!r} is not one of {sub['enum']}")
    return value


def format_hint(constraint: Constraint) -> str:
    """A one-line description of the expected reply, appended when re-asking."""
    if isinstance(constraint, Choice):
        return "Reply with exactly one of: " + ", ".join(constraint.options) + "."
    example = {
        k: (v["enum"][0] if "enum" in v else "...")
        for k, v in constraint.schema["properties"].items()
    }
    return "Reply with only a compact JSON object like " + json.dumps(
        example, separators=(",", ":")
    )


def _clip(text: str, n: int = 80) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")
