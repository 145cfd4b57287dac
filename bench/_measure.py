"""One mode's measurement: a warm-up, then engine runs each followed by its bare replay."""

from __future__ import annotations

import gc
import time
from typing import Any

from bench._replay import Recorder, plan, replay
from bench._report import RunStats, summarize


async def measure(
    flow: Any,
    warm_flow: Any,
    recorder: Recorder,
    samples: list[Any],
    mode: str,
    repeats: int,
    warmup: int,
) -> dict[str, Any]:
    """Warm up on ``warmup`` samples, then ``repeats`` engine runs each followed by its replay.

    Args:
        flow: the CapFlow whose backends are ``recorder.wrapped``.
        warm_flow: the same on a (possibly) lower token cap, for the untimed warm-up.
        recorder: collects each engine run's calls for the replay after it.
        samples: the inputs of every run.
        mode: ``capflow`` or ``single``.
        repeats: engine + bare pairs.
        warmup: samples in the warm-up run.

    Returns:
        :func:`bench._report.summarize` of the runs.
    """
    in_flight = flow.config.concurrency.samples_in_flight
    recorder.start()
    await warm_flow.acaption(samples[:warmup], mode=mode)  # loads the model, compiles grammars
    engine, bare = [], []
    for i in range(repeats):
        gc.collect()
        rec, before = recorder.start(), _counters(recorder)
        started = time.perf_counter()
        records = await flow.acaption(samples, mode=mode)
        wall = time.perf_counter() - started
        errors = sum(bool(r.errors) for r in records)
        engine.append(_stats(wall, len(samples), rec.results, errors, recorder, before))
        planned = plan(rec, [s.uri for s in samples])
        del records
        gc.collect()
        before = _counters(recorder)
        wall, results = await replay(planned, in_flight)
        errors = sum(r.error is not None for r in results)
        bare.append(_stats(wall, len(samples), results, errors, recorder, before))
        print(
            f"  {mode} repeat {i + 1}/{repeats}: engine {engine[-1].wall_s:.2f} s, "
            f"bare {bare[-1].wall_s:.2f} s, {engine[-1].calls} calls; batches "
            f"{engine[-1].batches} / {bare[-1].batches}, decode steps "
            f"{engine[-1].decode_steps} / {bare[-1].decode_steps}",
            flush=True,
        )
    return summarize(engine, bare)


def _counters(recorder: Recorder) -> tuple[int, int, float] | None:
    """Generate calls, decode steps and busy seconds so far over the real backends, if known."""
    unique = {id(b): b for b in recorder.real.values()}.values()
    try:
        return (
            sum(b.stats.batches for b in unique),  # type: ignore[attr-defined]
            sum(b.decode_steps for b in unique),  # type: ignore[attr-defined]
            sum(b.busy_s for b in unique),  # type: ignore[attr-defined]
        )
    except AttributeError:
        return None


def _stats(
    wall: float,
    samples: int,
    results: list[Any],
    errors: int,
    recorder: Recorder,
    before: tuple[int, int, float] | None,
) -> RunStats:
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.completion_tokens for r in results)
    stats = RunStats(wall, samples, len(results), prompt, completion, errors)
    after = _counters(recorder)
    if before is not None and after is not None:
        stats.batches, stats.decode_steps = after[0] - before[0], after[1] - before[1]
        stats.backend_idle_s = wall - (after[2] - before[2])
    return stats
