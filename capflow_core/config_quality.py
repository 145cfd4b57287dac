"""Config sections for the caption stage's retries and the quality gate's thresholds."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from capflow_core.config_models import StrictModel

Share = Annotated[float, Field(ge=0, le=1)]

# Refusal / apology boilerplate (case-insensitive regexes); a caption matching one fails.
REFUSALS = [
    r"(?i)\bI'?m sorry\b",
    r"(?i)\bI am sorry\b",
    r"(?i)\bas an AI\b",
    r"(?i)\bas a language model\b",
    r"(?i)\bcannot see (the|this|any) (image|picture|video)\b",
    r"(?i)\bcan'?t see (the|this|any) (image|picture|video)\b",
    r"(?i)\bunable to (view|see|analy[sz]e) (the|this) (image|picture|video)\b",
    r"(?i)\bI (cannot|can'?t) (help|assist) with\b",
]


class CaptionStageConfig(StrictModel):
    """The caption stage: how often a sample whose model calls failed is retried."""

    retry_budget: Annotated[int, Field(ge=1, le=100)] = Field(
        3, description="runs that try a failing sample before it becomes a `rejects` row"
    )


class WordBounds(StrictModel):
    """Caption length in words, inclusive."""

    min: Annotated[int, Field(ge=0)] = 1
    max: Annotated[int, Field(ge=1)] = 2000

    @model_validator(mode="after")
    def _ordered(self) -> WordBounds:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class RateBounds(StrictModel):
    """A dataset-level share, inclusive."""

    min: Share = 0.0
    max: Share = 1.0

    @model_validator(mode="after")
    def _ordered(self) -> RateBounds:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class QualityConfig(StrictModel):
    """Thresholds of the caption contract (the GX suite run on each run's staged records).

    Per-caption expectations must hold for at least ``mostly`` of the rows (1.0: every row);
    dataset-level ones apply to the run's staged records as a whole.
    """

    words: WordBounds = WordBounds()
    words_by_domain: dict[str, WordBounds] = Field(
        default_factory=dict, description="overrides `words` for the named domains"
    )
    refusal_patterns: list[str] = Field(default_factory=lambda: list(REFUSALS))
    repeat_ngram: Annotated[int, Field(ge=1, le=10)] = 3
    max_repeat_ratio: Share = Field(
        0.5, description="share of a caption's word n-grams that repeat an earlier one"
    )
    min_temporal_terms: Annotated[int, Field(ge=0)] = Field(
        1, description="temporal words (then, while, begins, ...) each video caption needs"
    )
    temporal_mostly: Share = 0.9
    mostly: Share = 1.0
    accept_rate: RateBounds = RateBounds()
    max_domain_share: Share = Field(1.0, description="largest share one domain may take")
    max_duplicate_caption_rate: Share = Field(
        0.05, description="share of captions that are exact copies of another"
    )

    def word_bounds(self, domain: str | None) -> WordBounds:
        """The bounds that apply to one domain."""
        return self.words_by_domain.get(domain or "", self.words)
