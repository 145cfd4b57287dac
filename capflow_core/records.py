"""The canonical per-sample record (docs/architecture.md, "Tables") and its pyarrow schema.

Stages fill entries of one lean record; they never add top-level fields. Every other layer
imports the record from here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

# the specific causes a failed record's error messages name (``<code>: ...``, possibly nested
# as ``model_error: scene: prompt_too_long: ...``), most specific first
FAILURE_CODES = (
    "prompt_too_long",
    "reply_too_long",
    "timeout",
    "infrastructure",
    "internal",
    "ocr_failed",
    "route_failed",
)


@dataclass
class Route:
    domain: str
    confidence: float
    skipped: bool


@dataclass
class AgentOutput:
    agent: str
    role: str
    model: str
    prompt_sha256: str
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None


@dataclass
class JudgeResult:
    scores: dict[str, int] = field(default_factory=dict)
    accepted: bool = False
    rule: str = ""
    model: str = ""
    error: str | None = None


@dataclass
class Tokens:
    prompt: int = 0
    completion: int = 0


@dataclass
class CaptionRecord:
    asset_id: str
    source_uri: str
    modality: str
    license: str | None = None
    provenance: str | None = None
    domain: str | None = None
    route: Route | None = None
    agents: list[AgentOutput] = field(default_factory=list)
    caption: str | None = None
    judge: JudgeResult | None = None
    accepted: bool = False
    mode: str = "capflow"
    captioner: str | None = None
    fingerprint: str = ""
    tokens: Tokens = field(default_factory=Tokens)
    cost_usd: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)
    run_id: str = ""
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def caption_id(self) -> str:
        return caption_id(self.asset_id, self.fingerprint)

    @property
    def ok(self) -> bool:
        """True when every stage produced its output (judge-rejected still counts as ok)."""
        return not self.errors and self.caption is not None

    def failure(self) -> tuple[str, str]:
        """``(stage, reason_code)`` of a failed record's first error: the specific cause when
        its message names one (``prompt_too_long``, ``timeout``, ...), else ``<stage>_failed``."""
        stage, message = next(iter(self.errors.items()), ("caption", ""))
        for code in FAILURE_CODES:
            if re.search(rf"\b{code}:", message):
                return stage, code
        return stage, f"{stage}_failed"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["caption_id"] = self.caption_id
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaptionRecord:
        data = {k: v for k, v in data.items() if k != "caption_id"}
        if data.get("route") is not None:
            data["route"] = Route(**data["route"])
        data["agents"] = [AgentOutput(**a) for a in data.get("agents") or []]
        if data.get("judge") is not None:
            judge = dict(data["judge"])
            judge["scores"] = dict(judge.get("scores") or {})
            data["judge"] = JudgeResult(**judge)
        data["tokens"] = Tokens(**(data.get("tokens") or {}))
        data["errors"] = dict(data.get("errors") or {})
        return cls(**data)


def caption_id(asset_id: str, fingerprint: str) -> str:
    """``sha256(asset_id + fingerprint)``: one caption of one asset by one workflow version."""
    return hashlib.sha256((asset_id + fingerprint).encode()).hexdigest()


ROUTE_TYPE = pa.struct(
    [("domain", pa.string()), ("confidence", pa.float64()), ("skipped", pa.bool_())]
)
AGENT_TYPE = pa.struct(
    [
        ("agent", pa.string()),
        ("role", pa.string()),
        ("model", pa.string()),
        ("prompt_sha256", pa.string()),
        ("text", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("latency_s", pa.float64()),
        ("error", pa.string()),
    ]
)
JUDGE_TYPE = pa.struct(
    [
        ("scores", pa.map_(pa.string(), pa.int8())),
        ("accepted", pa.bool_()),
        ("rule", pa.string()),
        ("model", pa.string()),
        ("error", pa.string()),
    ]
)
TOKENS_TYPE = pa.struct([("prompt", pa.int64()), ("completion", pa.int64())])

SCHEMA = pa.schema(
    [
        ("caption_id", pa.string()),
        ("asset_id", pa.string()),
        ("source_uri", pa.string()),
        ("modality", pa.string()),
        ("license", pa.string()),
        ("provenance", pa.string()),
        ("domain", pa.string()),
        ("route", ROUTE_TYPE),
        ("agents", pa.list_(AGENT_TYPE)),
        ("caption", pa.string()),
        ("judge", JUDGE_TYPE),
        ("accepted", pa.bool_()),
        ("mode", pa.string()),
        ("captioner", pa.string()),
        ("fingerprint", pa.string()),
        ("tokens", TOKENS_TYPE),
        ("cost_usd", pa.float64()),
        ("errors", pa.map_(pa.string(), pa.string())),
        ("run_id", pa.string()),
        ("created_at", pa.string()),
    ]
)


def to_arrow(records: list[CaptionRecord]) -> pa.Table:
    """Records as a table with the canonical schema (maps as key/value pairs)."""
    rows = []
    for rec in records:
        row = rec.to_dict()
        if row["judge"] is not None:
            row["judge"]["scores"] = list(row["judge"]["scores"].items())
        row["errors"] = list(row["errors"].items())
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def from_arrow(table: pa.Table) -> list[CaptionRecord]:
    """The inverse of :func:`to_arrow`."""
    out = []
    for row in table.to_pylist():
        if row.get("judge") is not None:
            row["judge"]["scores"] = dict(row["judge"]["scores"] or [])
        row["errors"] = dict(row.get("errors") or [])
        out.append(CaptionRecord.from_dict(row))
    return out
