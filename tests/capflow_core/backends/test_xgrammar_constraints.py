from __future__ import annotations

import json

import pytest

from capflow_core.backends.base import Choice, JsonSchema
from capflow_core.structured import judge_constraint, router_constraint

xgc = pytest.importorskip("capflow_core.backends.xgrammar_constraints")


def test_token_bound_covers_the_longest_valid_reply() -> None:
    route = router_constraint(["natural", "infographic_document"])
    longest = json.dumps(
        {"domain": "infographic_document", "confidence": 10}, separators=(",", ":")
    )
    assert xgc.reply_token_bound(route) == len(longest) + 1
    judge = judge_constraint(["a", "b"])
    assert xgc.reply_token_bound(judge) == len('{"a":1,"b":1}') + 1
    assert xgc.reply_token_bound(Choice(("yes", "maybe"))) == len("maybe") + 1
    free = JsonSchema({"type": "object", "properties": {"t": {"type": "string"}}})
    assert xgc.reply_token_bound(free) is None


def test_choice_grammar_quotes_options_verbatim() -> None:
    assert xgc.choice_ebnf(("a", 'say "hi"')) == 'root ::= "a" | "say \\"hi\\""'
    with pytest.raises(ValueError):
        xgc.choice_ebnf(())
