"""The quality gate's verdict: which expectations failed, what was observed, example rows."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

MAX_EXAMPLES = 5
_BOUNDS = ("min_value", "max_value", "mostly")
# Dataset-level checks have no offending rows in GX's result; these frame filters pick rows
# that explain the failure instead (duplicates, rejected captions, the dominant domain).
_DATASET_EXAMPLES = {
    "duplicate_caption_rate": ("caption", lambda f: f["caption_dup"]),
    "accept_rate": ("accepted", lambda f: ~f["accepted"].astype(bool)),
    "domain_share": ("domain", lambda f: f["domain_share"] == f["domain_share"].max()),
}


@dataclass
class FailedExpectation:
    """One failing expectation of the caption contract.

    Attributes:
        expectation: the GX expectation type, e.g. ``expect_column_values_to_be_between``.
        column: the column it checks (None for column-pair expectations).
        kwargs: its arguments (thresholds, ``mostly``, row condition).
        observed: the observed value, or counts of unexpected rows for per-row checks.
        examples: up to 5 ``{"asset_id", "value"}`` of offending rows.
        check: the suite's short name for it (``meta["check"]``), e.g. ``no_refusal``.
    """

    expectation: str
    column: str | None
    kwargs: dict[str, Any]
    observed: Any
    examples: list[dict[str, Any]]
    check: str = ""

    def describe(self) -> str:
        """One line: check name, expectation, column, bounds and what was observed."""
        where = f"({self.column})" if self.column else ""
        bounds = ", ".join(f"{k}={self.kwargs[k]}" for k in _BOUNDS if k in self.kwargs)
        bounds = f" [{bounds}]" if bounds else ""
        seen = self.observed
        if isinstance(seen, dict) and "unexpected_count" in seen:
            seen = f"{seen['unexpected_count']} of {seen['element_count']} rows unexpected"
        name = self.check or self.expectation
        return f"{name}: {self.expectation}{where}{bounds} observed {seen}"


@dataclass
class GateResult:
    """The outcome of running the caption contract on one run's staged records."""

    passed: bool
    evaluated: int
    successful: int
    failing: list[FailedExpectation]
    rows: int
    suite: str
    suite_version: str
    data_docs: str | None = None
    run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for the ``runs`` table, commit metadata and reports)."""
        return jsonable(asdict(self))

    def summary(self) -> str:
        """A few lines a person reads: the verdict, then each failing check with examples."""
        suite = f"on {self.rows} records (suite {self.suite} v{self.suite_version})"
        if self.passed:
            head = f"gate passed: {self.successful} of {self.evaluated} expectations met {suite}"
        else:
            failed = len(self.failing)
            head = f"gate FAILED: {failed} of {self.evaluated} expectations failed {suite}"
        lines = [head]
        for failed in self.failing:
            lines.append(f"  - {failed.describe()}")
            for ex in failed.examples:
                lines.append(f"      {ex['asset_id']}: {_short(ex['value'])}")
        if self.data_docs:
            lines.append(f"  Data Docs: {self.data_docs}")
        return "\n".join(lines)


def failed_from_result(result: Any, frame: pd.DataFrame) -> FailedExpectation:
    """A :class:`FailedExpectation` from one GX ``ExpectationValidationResult``."""
    config = result.expectation_config
    kwargs = jsonable(dict(config.kwargs))
    kwargs.pop("result_format", None)
    kwargs.pop("batch_id", None)
    check = (config.meta or {}).get("check", "")
    res = result.result or {}
    info = result.exception_info or {}
    if info.get("raised_exception"):
        observed: Any = f"error: {info.get('exception_message')}"
    elif "observed_value" in res:
        observed = res["observed_value"]
    else:
        observed = {k: res.get(k) for k in ("unexpected_count", "element_count", "missing_count")}
        observed["unexpected_percent"] = round(float(res.get("unexpected_percent") or 0.0), 3)
    column = kwargs.get("column")
    examples = [_example(row, column) for row in (res.get("unexpected_index_list") or [])]
    if not examples and check in _DATASET_EXAMPLES and not frame.empty:
        col, pick = _DATASET_EXAMPLES[check]
        rows = frame.loc[pick(frame), ["asset_id", col]].head(MAX_EXAMPLES)
        examples = [{"asset_id": a, "value": v} for a, v in rows.itertuples(index=False)]
    return FailedExpectation(
        expectation=config.type,
        column=column,
        kwargs=kwargs,
        observed=jsonable(observed),
        examples=jsonable(examples[:MAX_EXAMPLES]),
        check=check,
    )


def _example(row: dict[str, Any], column: str | None) -> dict[str, Any]:
    if column in row:
        return {"asset_id": row.get("asset_id"), "value": row[column]}
    rest = {k: v for k, v in row.items() if k != "asset_id"}  # a column pair: both values
    return {"asset_id": row.get("asset_id"), "value": rest}


def _short(value: Any, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars, NaN, GX conditions and other objects made JSON-safe."""
    return json.loads(json.dumps(value, default=_default, allow_nan=True), parse_constant=_nan)


def _nan(_: str) -> None:
    return None


def _default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalar
        value = obj.item()
        return None if isinstance(value, float) and math.isnan(value) else value
    if hasattr(obj, "to_json_dict"):
        return obj.to_json_dict()
    if hasattr(obj, "dict"):  # GX (pydantic v1) row conditions
        return obj.dict()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    return str(obj)
