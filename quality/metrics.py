"""Per-caption metrics and the frame the caption contract validates.

The GX suite checks only built-in expectations with explicit arguments, so every quantity a
rule needs (word count, repetition, temporal language, judge score range, the accept rule
re-applied, a domain's share) is computed here as a column of :func:`caption_frame`.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from capflow_core.config import Config
    from capflow_core.registry import Registry

_WORD = re.compile(r"\w+(?:'\w+)?")

# Temporal language a video caption should use: sequence and transition words, durations and
# references to the clip's timeline. Multi-word phrases come first so that they count once.
TEMPORAL_TERMS = (
    "over time",
    "at first",
    "at the beginning",
    "at the start",
    "at the end",
    "in the end",
    "by the end",
    "as the video",
    "as the clip",
    "throughout",
    "then",
    "after",
    "afterwards",
    "afterward",
    "before",
    "while",
    "during",
    "meanwhile",
    "next",
    "later",
    "first",
    "finally",
    "eventually",
    "subsequently",
    "gradually",
    "suddenly",
    "until",
    "once",
    "begins",
    "began",
    "starts",
    "started",
    "ends",
    "ended",
    "continues",
    "continued",
    "seconds",
    "minutes",
    "frame",
    "frames",
    "timeline",
)
_TEMPORAL = re.compile(
    r"\b(?:" + "|".join(re.escape(t).replace(r"\ ", r"\s+") for t in TEMPORAL_TERMS) + r")\b",
    re.IGNORECASE,
)


def words(text: str | None) -> list[str]:
    """The caption's lower-cased word tokens (punctuation dropped, contractions kept)."""
    return _WORD.findall(text.lower()) if text else []


def word_count(text: str | None) -> int:
    """Whitespace-separated words (0 for None or blank text)."""
    return len(text.split()) if text else 0


def repeat_ratio(text: str | None, n: int) -> float:
    """Share of the caption's word n-grams that repeat an earlier n-gram of the same caption.

    Returns 0.0 for captions shorter than ``n + 1`` words (no n-gram can repeat).
    """
    tokens = words(text)
    if len(tokens) < n + 1:
        return 0.0
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def temporal_terms(text: str | None) -> int:
    """How many temporal words or phrases (:data:`TEMPORAL_TERMS`) the caption uses."""
    return len(_TEMPORAL.findall(text)) if text else 0


@lru_cache(maxsize=32)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


def refusal(text: str | None, patterns: list[str] | tuple[str, ...]) -> str | None:
    """The first refusal/apology pattern the caption matches, or None."""
    if not text:
        return None
    for source, pattern in zip(patterns, _compiled(tuple(patterns)), strict=True):
        if pattern.search(text):
            return source
    return None


def _refusals(captions: pd.Series, patterns: list[str]) -> pd.Series:
    """:func:`refusal` for a column, vectorised the way GX's regex-list check runs it."""
    import pandas as pd

    found = pd.Series(None, index=captions.index, dtype=object)
    text = captions.astype("str")
    for pattern in patterns:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "This pattern is interpreted as a regular expression")
            hit = text.str.contains(pattern, regex=True, na=False) & captions.notna()
        found = found.where(found.notna() | ~hit, pattern)
    return found


_COLUMNS = ["caption_id", "asset_id", "domain", "modality", "caption", "fingerprint", "accepted"]


def caption_frame(records: pa.Table, cfg: Config, registry: Registry) -> pd.DataFrame:
    """One row per record with the columns the caption contract checks.

    Args:
        records: staged records (``capflow_core.records.SCHEMA``).
        cfg: the config (``quality`` thresholds, ``judge.accept`` rule).
        registry: the domain registry; its judge criteria per modality decide which
            scores count in ``judge_criteria``.

    Returns:
        A DataFrame with asset_id, caption_id, domain, modality, caption, fingerprint,
        word_count, word_min, word_max, repeat_ratio, temporal_terms (NaN for non-video
        rows), refusal, judge_min, judge_max, judge_criteria (how many of the registry's
        criteria for the row's modality were scored), accepted, accepted_expected,
        route_confidence, domain_share and caption_dup.
    """
    import pandas as pd

    criteria = {modality: set(spec.criteria) for modality, spec in registry.judge.items()}
    q = cfg.quality
    rule = cfg.judge.accept
    base = records.select(_COLUMNS).to_pylist()
    routes = records.column("route").to_pylist()
    judges = records.column("judge").to_pylist()
    rows = []
    for rec, route, judge in zip(base, routes, judges, strict=True):
        text = rec["caption"]
        bounds = q.word_bounds(rec["domain"])
        scores = dict((judge or {}).get("scores") or [])
        values = list(scores.values())
        video = rec["modality"] == "video"
        rows.append(
            {
                **rec,
                "accepted": bool(rec["accepted"]),
                "word_count": word_count(text),
                "word_min": bounds.min,
                "word_max": bounds.max,
                "repeat_ratio": repeat_ratio(text, q.repeat_ngram),
                "temporal_terms": float(temporal_terms(text)) if video else math.nan,
                "judge_min": float(min(values)) if values else math.nan,
                "judge_max": float(max(values)) if values else math.nan,
                "judge_criteria": len(criteria.get(rec["modality"], set()) & set(scores)),
                "accepted_expected": rule.accepts(scores) if judge is not None else False,
                "route_confidence": float(route["confidence"]) if route else math.nan,
            }
        )
    frame = pd.DataFrame(rows, columns=[*_COLUMNS, *_METRIC_COLUMNS])
    domains = frame["domain"].fillna("")
    counts = Counter(domains)
    frame["refusal"] = _refusals(frame["caption"], q.refusal_patterns)
    shares = [counts[d] / len(frame) for d in domains]
    frame["domain_share"] = pd.Series(shares, index=frame.index, dtype=float)
    frame["caption_dup"] = frame["caption"].notna() & frame["caption"].duplicated(keep=False)
    return frame


_METRIC_COLUMNS = [
    "word_count",
    "word_min",
    "word_max",
    "repeat_ratio",
    "temporal_terms",
    "judge_min",
    "judge_max",
    "judge_criteria",
    "accepted_expected",
    "route_confidence",
]
