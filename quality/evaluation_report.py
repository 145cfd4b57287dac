"""The evaluation report: every captioner scored on one dataset version's held-out set.

A markdown table (the paper's Table 4 layout plus accept rate and cost) at
``<root>/reports/evaluations/v<version>.md``, rewritten after each evaluation.
"""

from __future__ import annotations

from typing import Any

from capflow_core.config import S3Config
from capflow_core.storage import filesystem, join_under


def report_uri(root: str, version: int) -> str:
    """Where the evaluation report of dataset ``version`` is written."""
    return join_under(root, "reports", "evaluations", f"v{version}.md")


def comparison_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of evaluations: one row per captioner."""
    criteria = sorted({c for r in rows for c in (r.get("scores") or {})})
    head = ["captioner", *criteria, "overall", "accept rate", "tokens/100", "$/100", "API $/100"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["captioner"], *(_num(r["scores"].get(c)) for c in criteria)]
        cells += [_num(r["overall"]), _num(r["accept_rate"]), f"{r['tokens_per_100']:.0f}"]
        cells += [f"{r['cost_per_100']:.4f}", f"{r['api_per_100']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def write_evaluation_report(root: str, s3: S3Config, version: int, rows: list[dict]) -> str:
    """Write the comparison of ``rows`` (evaluations of ``version``); returns its URI."""
    uri = report_uri(root, version)
    judges = sorted({r.get("eval_judge") or "?" for r in rows})
    text = (
        f"# Captioner evaluation on dataset version {version}\n\n"
        f"Held-out split scored by the eval judge ({', '.join(judges)}) on five criteria "
        "(1 bad .. 3 excellent); accept rate under the configured rule.\n\n"
        + comparison_table(rows)
        + "\n"
    )
    fs, path = filesystem(uri, s3)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, text.encode())
    return uri
