"""The scale benchmark's printed table: seconds per stage, items/s, and ratios vs 1 x 1."""

from __future__ import annotations

from typing import Any

SHOWN = ("listing", "preprocessing", "plan", "captioning", "gate", "MERGE", "report", "other")
SHORT = {
    "listing": "listing",
    "preprocessing": "preproc",
    "plan": "plan",
    "captioning": "caption",
    "gate": "gate",
    "MERGE": "MERGE",
    "report": "report",
    "other": "other",
}
RATIO_STAGES = ("listing", "preprocessing", "captioning", "gate", "MERGE")


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def seconds_table(configs: list[dict[str, Any]]) -> list[str]:
    """Per configuration: wall time, items/s, and where the time went (seconds)."""
    head = f"{'config':<10} {'load':>5} {'wall s':>7} {'items/s':>8} " + " ".join(
        f"{SHORT[s]:>8}" for s in SHOWN
    )
    title = "seconds per stage (median over repeats; load: 1-min load average at the start)"
    lines = [title, head, "-" * len(head)]
    for c in configs:
        stages = " ".join(f"{c['stages_s'][s]:>8.2f}" for s in SHOWN)
        lines.append(
            f"{c['name']:<10} {c['load_1m_at_start']:>5.1f} {c['wall_s']:>7.2f} "
            f"{c['items_per_s']:>8.2f} {stages}"
        )
    return lines


def rate_table(configs: list[dict[str, Any]], baseline: str) -> list[str]:
    """Items/s per stage, and each configuration's ratio vs the baseline (ideal 2x)."""
    head = f"{'config':<10} {'overall':>14} " + " ".join(f"{SHORT[s]:>14}" for s in RATIO_STAGES)
    lines = [
        f"\nitems/s (ratio vs {baseline}; ideal 2.00x on the doubled dimension)",
        head,
        "-" * len(head),
    ]
    for c in configs:
        r = c["ratio_vs_baseline"]
        cells = [f"{c['items_per_s']:>6.2f} {_x(r['overall']):>7}"]
        for s in RATIO_STAGES:
            cells.append(f"{_rate(c['stage_items_per_s'][s]):>6} {_x(r['stages'][s]):>7}")
        lines.append(f"{c['name']:<10} " + " ".join(f"{x:>14}" for x in cells))
    return lines


def table(payload: dict[str, Any]) -> str:
    """The whole printed report."""
    configs = payload["configurations"]
    env = payload["environment"]
    lines = seconds_table(configs) + rate_table(configs, payload["baseline"])
    lines.append("")
    for c in configs:
        if c["requests_per_endpoint"]:
            spread = ", ".join(str(n) for n in c["requests_per_endpoint"].values())
            lines.append(f"{c['name']}: model requests per endpoint: {spread}")
        short = [r for r in c["runs"] if r["captioned"] < r["to_caption"]]
        if short:
            failed = max(r["caption_failed"] for r in short)
            lines.append(f"{c['name']}: WARNING up to {failed} item(s) failed captioning")
    lines.append(
        f"machine: {env['cpu_count']} CPU core(s); Dask workers and model endpoints each "
        "use one core, and both compete with the flow process, Prefect and each other, so "
        f"2 x 1 / 1 x 2 cannot reach 2x unless there are >= 4 cores "
        f"(load average {env['load_avg_1m_at_start']} -> {env['load_avg_1m_at_end']}); a "
        "ratio above 2x means the load from outside changed between runs: use --repeats "
        "(runs alternate the order) or a quiet machine"
    )
    lines.append(f"model: {payload['settings']['model_note']}")
    return "\n".join(lines)
