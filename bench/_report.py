"""Per-run figures, their medians over repeats, the printed table and the JSON file."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TARGET_RATIO = 1.05  # engine/bare wall time we aim for; stated, never asserted

ENGINE_INCLUDES = (
    "engine wall time covers CapFlow.acaption end to end: media read and decode from disk "
    "(load_media in a worker thread), prompt building, constrained-reply parsing and "
    "re-asks, records, fingerprints and cost accounting; the bare replay starts from the "
    "decoded media in memory (fresh copies, so no backend-side caching is shared) and issues "
    "the same requests with the same stage structure and samples_in_flight limit. batches / "
    "steps: the backend's generate calls and decode steps (each micro-batch decodes until its "
    "longest reply ends, so batches that mix short and long replies cost extra steps); idle s: "
    "wall time with no micro-batch running (the time the caller's own work kept the model idle)"
)


@dataclass
class RunStats:
    """One timed run: wall time and what the backend did during it."""

    wall_s: float
    samples: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    errors: int  # engine: records with an error; bare: results with an error
    batches: int | None = None  # model generate calls the calls were batched into, if known
    decode_steps: int | None = None  # sum over batches of the batch's longest reply, if known
    backend_idle_s: float | None = None  # wall time with no micro-batch running, if known


def summarize(engine: list[RunStats], bare: list[RunStats]) -> dict[str, Any]:
    """Medians over the repeats, the overhead per sample and the engine/bare ratio."""
    out: dict[str, Any] = {}
    for name, runs in (("engine", engine), ("bare", bare)):
        wall = statistics.median(r.wall_s for r in runs)
        out[name] = {
            "wall_s": wall,
            "samples": runs[0].samples,
            "samples_per_s": runs[0].samples / wall,
            "calls": int(statistics.median(r.calls for r in runs)),
            "prompt_tokens": int(statistics.median(r.prompt_tokens for r in runs)),
            "completion_tokens": int(statistics.median(r.completion_tokens for r in runs)),
            "completion_tokens_per_s": statistics.median(
                r.completion_tokens / r.wall_s for r in runs
            ),
            "errors": max(r.errors for r in runs),
            "batches": _median([r.batches for r in runs]),
            "decode_steps": _median([r.decode_steps for r in runs]),
            "backend_idle_s": _median([r.backend_idle_s for r in runs]),
            "runs": [asdict(r) for r in runs],
        }
    e, b = out["engine"]["wall_s"], out["bare"]["wall_s"]
    out["ratio_engine_over_bare"] = e / b
    out["ratio_paired_median"] = statistics.median(
        x.wall_s / y.wall_s for x, y in zip(engine, bare, strict=True)
    )
    out["overhead_ms_per_sample"] = (e - b) / engine[0].samples * 1000
    out["calls_match"] = all(x.calls == y.calls for x, y in zip(engine, bare, strict=True))
    out["target_ratio"] = TARGET_RATIO
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    """The printed table: one row per mode and run kind, then overhead and ratio per mode."""
    head = (
        f"{'mode':<8} {'run':<7} {'wall s':>8} {'samples/s':>10} {'calls':>7} {'batches':>8} "
        f"{'steps':>7} {'idle s':>7} "
        f"{'prompt tok':>11} {'gen tok':>9} {'gen tok/s':>10} {'errors':>7}"
    )
    lines = [head, "-" * len(head)]
    for mode, res in results.items():
        for kind in ("engine", "bare"):
            r = res[kind]
            lines.append(
                f"{mode:<8} {kind:<7} {r['wall_s']:>8.2f} {r['samples_per_s']:>10.2f} "
                f"{r['calls']:>7} {_int(r['batches']):>8} {_int(r['decode_steps']):>7} "
                f"{'-' if r['backend_idle_s'] is None else format(r['backend_idle_s'], '.2f'):>7} "
                f"{r['prompt_tokens']:>11} {r['completion_tokens']:>9} "
                f"{r['completion_tokens_per_s']:>10.1f} {r['errors']:>7}"
            )
        verdict = "within" if res["ratio_engine_over_bare"] <= TARGET_RATIO else "above"
        lines.append(
            f"{mode:<8} overhead per sample (ms): {res['overhead_ms_per_sample']:.2f}   "
            f"ratio engine/bare: {res['ratio_engine_over_bare']:.3f} "
            f"(paired median {res['ratio_paired_median']:.3f}; target <= {TARGET_RATIO}: {verdict})"
        )
    return "\n".join(lines)


def _median(values: list[int | None] | list[float | None]) -> float | None:
    return None if None in values else statistics.median(values)  # type: ignore[type-var]


def _int(value: float | None) -> str:
    return "-" if value is None else str(round(value))


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
