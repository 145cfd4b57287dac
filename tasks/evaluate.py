"""Evaluate a captioner on the held-out split, the paper's Table 4 protocol (plain function).

The held-out assets of a dataset version (by asset-id hash, never trained on) are captioned
by ``capflow`` (the workflow), ``single`` (one VLM call, the baseline) or a registered
MetaCaptioner (``model:NAME/N``: base + adapter, in single mode); the ``eval_judge`` role
scores every caption on the five criteria. Results go to the ``evaluations`` table and, for
a registered model, its ``models`` row.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

from capflow_core.config import Config
from capflow_core.errors import ConfigError


@dataclass
class EvalResult:
    """Means per criterion (image and video criteria pooled by name) and overall."""

    captioner: str
    dataset_version: int
    samples: int
    scored: int
    scores: dict[str, float] = field(default_factory=dict)
    overall: float | None = None
    accept_rate: float | None = None
    tokens_per_100: float = 0.0
    cost_per_100: float = 0.0
    api_per_100: float = 0.0
    eval_judge: str = ""


def evaluate(cfg: Config, root: str, *, captioner: str, version: int | None = None) -> EvalResult:
    """Caption the held-out set with ``captioner``, score it with ``eval_judge``, store it.

    Raises:
        ConfigError: no dataset, no held-out example with media, or a bad captioner.
    """
    from capflow_core.captions_store import latest_version, read_version
    from capflow_core.engine import CapFlow
    from capflow_core.evaluations_store import record_evaluation
    from capflow_core.prepared_media import prepared_for_captions, sample_from_row
    from capflow_core.training_data import held_out_ids
    from tasks.captioner import captioner_config

    version = version if version is not None else latest_version(root, cfg.s3)
    if version is None:
        raise ConfigError(f"no dataset version under {root}: run `capflow refresh` first")
    ids = set(held_out_ids(root, cfg.s3, cfg, version))
    rows = [
        r
        for r in read_version(root, cfg.s3, version, ["asset_id", "run_id"]).to_pylist()
        if r["asset_id"] in ids
    ]
    found, _ = prepared_for_captions(root, cfg.s3, {r["asset_id"]: r["run_id"] for r in rows})
    if not found:
        raise ConfigError(
            f"dataset version {version} has no held-out example with media "
            f"(finetune.eval_percent {cfg.finetune.eval_percent}%)"
        )
    samples = [sample_from_row(found[a]) for a in sorted(found)]
    run_cfg = captioner_config(cfg, root, captioner)
    flow = CapFlow(run_cfg)
    result = asyncio.run(_caption_and_score(flow, samples))
    result.captioner, result.dataset_version = captioner, version
    record_evaluation(
        root,
        cfg.s3,
        version,
        captioner,
        **{k: v for k, v in asdict(result).items() if k not in ("captioner", "dataset_version")},
        created_at=_now(),
    )
    if captioner.startswith("model:"):
        _update_model(cfg, root, captioner, result)
    from capflow_core.evaluations_store import read_evaluations
    from quality.evaluation_report import write_evaluation_report

    write_evaluation_report(root, cfg.s3, version, read_evaluations(root, cfg.s3, version))
    return result


async def _caption_and_score(flow: Any, samples: list[Any]) -> EvalResult:
    from capflow_core.backends import backends_for
    from capflow_core.calls import CallBounds, CallLog
    from capflow_core.context import Context
    from capflow_core.judge import judge

    try:
        records = await flow.acaption(samples)
        cost = flow.last_cost
        judges = backends_for(flow.config, roles=("eval_judge",))
        ctx = Context(flow.config, flow.registry, judges, ocr_ready=False)
        gate = asyncio.Semaphore(flow.config.concurrency.samples_in_flight)

        async def score(sample: Any, caption: str) -> Any:
            async with gate:
                log = CallLog(CallBounds.of(flow.config.generation))
                return await judge(sample.media, caption, ctx, log, role="eval_judge")

        done = [(s, r) for s, r in zip(samples, records, strict=True) if r.caption]
        verdicts = await asyncio.gather(*(score(s, r.caption) for s, r in done))
        for backend in {id(b): b for b in judges.values()}.values():
            await backend.aclose()
    finally:
        await flow.aclose()
    return _summarize(records, verdicts, cost, flow.config, judges["eval_judge"].model_id)


def _summarize(
    records: list[Any], verdicts: list[Any], cost: Any, cfg: Config, judge_id: str
) -> EvalResult:
    good = [v for v in verdicts if not v.error and v.scores]
    by_criterion: dict[str, list[int]] = {}
    for v in good:
        for name, value in v.scores.items():
            by_criterion.setdefault(name, []).append(value)
    scores = {k: sum(vs) / len(vs) for k, vs in sorted(by_criterion.items())}
    every = [x for vs in by_criterion.values() for x in vs]
    n = max(len(records), 1)
    tokens = sum(r.tokens.prompt + r.tokens.completion for r in records)
    return EvalResult(
        captioner="",
        dataset_version=0,
        samples=len(records),
        scored=len(good),
        scores=scores,
        overall=sum(every) / len(every) if every else None,
        accept_rate=sum(cfg.judge.accept.accepts(v.scores) for v in good) / len(good)
        if good
        else None,
        tokens_per_100=100 * tokens / n,
        cost_per_100=100 * (cost.usd if cost else 0.0) / n,
        api_per_100=100 * (cost.api_usd if cost else 0.0) / n,
        eval_judge=judge_id,
    )


def _update_model(cfg: Config, root: str, captioner: str, result: EvalResult) -> None:
    from capflow_core.models_store import register_model, resolve

    row = resolve(root, cfg.s3, captioner)
    stored = row.get("eval_scores") or {}
    stored[f"v{result.dataset_version}"] = asdict(result)
    register_model(root, cfg.s3, row["name"], row["number"], eval_scores=stored)


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")
