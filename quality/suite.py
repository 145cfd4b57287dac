"""The caption contract: a GX expectation suite built in code from the config's thresholds.

Only built-in expectations with explicit arguments, run on the metric columns of
:func:`quality.metrics.caption_frame` (a custom expectation subclass would be stored without
its defaults and silently skipped by a process that never imported it). Every expectation
carries ``meta["check"]``, the short name the gate reports.

Structural checks (ids, required fields, judge scores, the accept rule, domains, route
confidence) hold for every row; caption-content checks (length, refusals, repetition) hold
for ``quality.mostly`` of the rows and temporal language for ``quality.temporal_mostly`` of
the video rows (image rows have no ``temporal_terms`` value and are not counted).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

if TYPE_CHECKING:
    import great_expectations as gx

    from capflow_core.config import Config

SUITE_NAME = "capflow_caption_contract"
# Bump when the expectations (not their thresholds) change; stored in the suite's meta.
SUITE_VERSION = "1"
REQUIRED = ("asset_id", "caption_id", "caption", "domain", "modality", "fingerprint")
# single mode routes nothing: an image without a source-given domain has none
REQUIRED_SINGLE = tuple(c for c in REQUIRED if c != "domain")
MODALITIES = ("image", "video")


def build_suite(
    cfg: Config, domains: list[str], criteria_count: int | dict[str, int] = 5
) -> gx.ExpectationSuite:
    """The caption contract for one run's staged records.

    Args:
        cfg: the config; ``cfg.quality`` gives the thresholds.
        domains: the registry's domain keys (a row's domain must be one of them).
        criteria_count: judge criteria each record must have scores for; a dict by
            modality when the registry's image and video judges differ.

    Returns:
        An unsaved ``ExpectationSuite`` named :data:`SUITE_NAME`.
    """
    import great_expectations as gx

    # expectations go in through the constructor: add_expectation() needs an active context
    return gx.ExpectationSuite(
        name=SUITE_NAME,
        expectations=[
            *_structural(domains, criteria_count, cfg.captioner.mode),
            *_content(cfg),
            *_dataset(cfg),
        ],
        meta={"suite_version": SUITE_VERSION, "accept_rule": cfg.judge.accept.describe()},
    )


def _check(name: str) -> dict[str, Any]:
    return {"meta": {"check": name}}


def _criteria(criteria_count: int | dict[str, int]) -> list[Any]:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    if isinstance(criteria_count, int):
        by_modality: dict[str | None, int] = {None: criteria_count}
    else:
        by_modality = dict(criteria_count)
    return [
        gxe.ExpectColumnValuesToBeBetween(
            column="judge_criteria",
            min_value=count,
            max_value=count,
            **({"row_condition": Column("modality") == modality} if modality else {}),
            **_check("judge_criteria_scored" + (f":{modality}" if modality else "")),
        )
        for modality, count in by_modality.items()
    ]


def _structural(domains: list[str], criteria_count: int | dict[str, int], mode: str) -> list[Any]:
    import great_expectations.expectations as gxe

    out: list[Any] = [
        gxe.ExpectColumnValuesToNotBeNull(column=col, **_check(f"required:{col}"))
        for col in (REQUIRED_SINGLE if mode == "single" else REQUIRED)
    ]
    out += [
        gxe.ExpectColumnValuesToBeUnique(column="asset_id", **_check("unique_asset_id")),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="caption", min_value=1, **_check("caption_not_empty")
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="modality", value_set=list(MODALITIES), **_check("modality_known")
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="domain", value_set=sorted(domains), **_check("domain_in_registry")
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="route_confidence", min_value=0, max_value=1, **_check("route_confidence")
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="judge_min", min_value=1, **_check("judge_score_min")
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="judge_max", max_value=3, **_check("judge_score_max")
        ),
        gxe.ExpectColumnPairValuesToBeEqual(
            column_A="accepted", column_B="accepted_expected", **_check("accepted_matches_rule")
        ),
    ]
    return out + _criteria(criteria_count)


def _content(cfg: Config) -> list[Any]:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    q = cfg.quality
    out: list[Any] = []
    overridden = sorted(q.words_by_domain)
    for domain in overridden:
        bounds = q.words_by_domain[domain]
        out.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="word_count",
                min_value=bounds.min,
                max_value=bounds.max,
                mostly=q.mostly,
                row_condition=Column("domain") == domain,
                **_check(f"word_count:{domain}"),
            )
        )
    default: dict[str, Any] = {}
    if overridden:
        default["row_condition"] = Column("domain").is_not_in(overridden)
    out.append(
        gxe.ExpectColumnValuesToBeBetween(
            column="word_count",
            min_value=q.words.min,
            max_value=q.words.max,
            mostly=q.mostly,
            **default,
            **_check("word_count"),
        )
    )
    out += [
        gxe.ExpectColumnValuesToNotMatchRegexList(
            column="caption",
            regex_list=list(q.refusal_patterns),
            mostly=q.mostly,
            **_check("no_refusal"),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="repeat_ratio",
            min_value=0,
            max_value=q.max_repeat_ratio,
            mostly=q.mostly,
            **_check(f"repeat_ratio_{q.repeat_ngram}gram"),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="temporal_terms",
            min_value=q.min_temporal_terms,
            mostly=q.temporal_mostly,
            **_check("video_temporal_terms"),
        ),
    ]
    return out


def _dataset(cfg: Config) -> list[Any]:
    import great_expectations.expectations as gxe

    q = cfg.quality
    return [
        gxe.ExpectColumnMeanToBeBetween(
            column="accepted",
            min_value=q.accept_rate.min,
            max_value=q.accept_rate.max,
            **_check("accept_rate"),
        ),
        gxe.ExpectColumnMaxToBeBetween(
            column="domain_share", max_value=q.max_domain_share, **_check("domain_share")
        ),
        gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
            column="caption",
            min_value=1.0 - q.max_duplicate_caption_rate,
            **_check("duplicate_caption_rate"),
        ),
    ]
