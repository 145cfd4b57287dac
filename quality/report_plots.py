"""The report's plots: matplotlib (Agg) PNGs as base64 strings, None where there is no data.

Figures are built with ``matplotlib.figure.Figure`` directly, never pyplot, so rendering a
report leaves no global figure state behind and ignores the user's interactive backend.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any

from quality.report_data import ReportData, Summary, cost_per_100

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 90
MAX_BARS = 20
COLORS = {"main": "#3566a8", "ok": "#3a8d5c", "bad": "#c2493d", "mid": "#d59a2b"}
SCORE_COLORS = {1: COLORS["bad"], 2: COLORS["mid"], 3: COLORS["ok"]}


def render_plots(data: ReportData, summary: Summary) -> dict[str, str | None]:
    """Every plot of the report, keyed by name: base64 PNG, or None when it has no data."""
    return {
        "domain_mix": _domain_mix(summary),
        "caption_lengths": _caption_lengths(summary),
        "judge_scores": _judge_scores(summary),
        "accept_rate": _accept_rate(summary),
        "rejects": _rejects(summary),
        "cost": _cost(data.cost),
        "diff": _diff(data.diff),
    }


def _figure(height: float = 3.2, width: float = 7.0) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig


def _encode(fig: Figure) -> str:
    buf = io.BytesIO()
    # No "Software" text chunk: it would carry matplotlib's URL into the page.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    fig.clear()
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _bar_height(n: int) -> float:
    return min(1.2 + 0.32 * n, 8.0)


def _hbars(
    labels: list[str],
    values: list[float],
    xlabel: str,
    color: str,
    fmt: str,
    xmax: float | None = None,
) -> str:
    fig = _figure(_bar_height(len(labels)))
    ax = fig.add_subplot()
    y = list(range(len(labels)))
    bars = ax.barh(y, values, color=color)
    ax.set_yticks(y, [_label(t) for t in labels])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=3, fontsize=8)
    if xmax is None:
        ax.margins(x=0.15)
        if fmt == "{:,}":  # counts: whole-number ticks
            ax.xaxis.set_major_locator(_integer_ticks())
    else:
        ax.set_xlim(0, xmax)
    _tidy(ax)
    return _encode(fig)


def _label(text: str) -> str:
    """A tick label: shortened, with ``$`` escaped so matplotlib never parses mathtext."""
    text = text if len(text) <= 40 else text[:39] + "…"
    return text.replace("$", r"\$")


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _tidy(ax: Any) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)


def _domain_mix(s: Summary) -> str | None:
    if not s.domains:
        return None
    domains = s.domains[:MAX_BARS]
    counts = [s.domain_counts[d] for d in domains]
    return _hbars(domains, counts, "records", COLORS["main"], "{:,}")


def _caption_lengths(s: Summary) -> str | None:
    domains = [d for d in s.domains[:MAX_BARS] if s.words[d]]
    if not domains:
        return None
    fig = _figure(_bar_height(len(domains)) + 0.4)
    ax = fig.add_subplot()
    ax.boxplot(
        [s.words[d] for d in domains],
        orientation="horizontal",
        tick_labels=[_label(d) for d in domains],
        patch_artist=True,
        boxprops={"facecolor": "#c9d8ee", "edgecolor": COLORS["main"]},
        medianprops={"color": COLORS["bad"]},
        flierprops={"markersize": 3},
    )
    ax.invert_yaxis()
    ax.set_xlabel("caption length (words)")
    ax.xaxis.set_major_locator(_integer_ticks())
    _tidy(ax)
    return _encode(fig)


def _judge_scores(s: Summary) -> str | None:
    if not s.judge:
        return None
    criteria = sorted(s.judge)
    series = [
        (f"score {score}", SCORE_COLORS[score], [s.judge[c].get(score, 0) for c in criteria])
        for score in (1, 2, 3)
    ]
    return _grouped_bars(criteria, series, height=max(5.0, 1.2 * len(criteria) + 2))


def _accept_rate(s: Summary) -> str | None:
    if not s.domains:
        return None
    domains = s.domains[:MAX_BARS]
    rates = [100 * s.accept_rate(d) for d in domains]
    return _hbars(domains, rates, "accepted (%)", COLORS["ok"], "{:.0f}%", xmax=112)


def _rejects(s: Summary) -> str | None:
    if not s.rejects_by_reason:
        return None
    rows = s.rejects_by_reason[:MAX_BARS]
    labels = [f"{stage}: {code}" if stage else code for stage, code, _ in rows]
    return _hbars(labels, [c for *_, c in rows], "rejects", COLORS["bad"], "{:,}")


def _cost(cost: dict) -> str | None:
    per100 = cost_per_100(cost)
    if per100["cost_usd"] is None or per100["api_usd"] is None:
        return None
    labels = ["CapFlow (self-hosted)", f"{per100['api_name']} (same tokens)"]
    values = [per100["cost_usd"], per100["api_usd"]]
    return _hbars(labels, values, "USD per 100 captions", COLORS["main"], r"\${:,.4f}")


def _diff(diff: dict | None) -> str | None:
    by_domain = (diff or {}).get("by_domain") or {}
    if not by_domain:
        return None
    domains = sorted(by_domain)[:MAX_BARS]
    kinds = (("added", COLORS["ok"]), ("changed", COLORS["mid"]), ("removed", COLORS["bad"]))
    series = [
        (kind, color, [int(by_domain[d].get(kind, 0)) for d in domains]) for kind, color in kinds
    ]
    return _grouped_bars(domains, series, height=max(5.0, 1.0 * len(domains) + 2))


def _grouped_bars(
    groups: list[str], series: list[tuple[str, str, list[int]]], height: float
) -> str:
    """Bars of several series side by side per group, counts on top."""
    fig = _figure(3.2, height)
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    middle = (len(series) - 1) / 2
    for k, (label, color, counts) in enumerate(series):
        xs = [i + (k - middle) * width for i in range(len(groups))]
        bars = ax.bar(xs, counts, width, label=label, color=color)
        ax.bar_label(bars, padding=2, fontsize=7)
    ax.set_xticks(range(len(groups)), [_label(g) for g in groups])
    ax.set_ylabel("captions")
    ax.yaxis.set_major_locator(_integer_ticks())
    ax.legend(fontsize=8, frameon=False)
    ax.margins(y=0.15)
    _tidy(ax)
    return _encode(fig)
