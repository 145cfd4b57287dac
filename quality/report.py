"""The self-contained HTML report of one dataset version (or of a run that did not promote).

One file, no network: inline CSS, plots embedded as base64 PNGs, no JavaScript. Captions,
agent texts (which include OCR text read from the images), URIs and reject details are
untrusted; the template is rendered with autoescaping and never marks data as safe.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from capflow_core.config import S3Config
from quality.report_data import ReportData, cost_per_100, reconciliation_rows, summarize

if TYPE_CHECKING:
    import jinja2

REPORT_NAME = "report.html"
TEMPLATE = "report.html.j2"
MAX_TEXT = 2000


def render_report(data: ReportData) -> str:
    """The report as one HTML document.

    Args:
        data: the version's (or run's) records, gate result, counts, cost and diff.

    Returns:
        A self-contained HTML page (UTF-8 text).
    """
    from quality.report_plots import render_plots

    summary = summarize(data)
    counts, reasons = reconciliation_rows(data.reconciliation)
    gate = dict(data.gate or {})
    docs = gate.get("data_docs")
    context: dict[str, Any] = {
        "d": data,
        "s": summary,
        "gate": gate,
        "failing": gate.get("failing") or [],
        "data_docs": docs,
        "data_docs_link": _local_link(docs),
        "recon": counts,
        "reasons": reasons,
        "cost": cost_per_100(data.cost or {}),
        "cost_total": data.cost or {},
        "diff": data.diff,
        "diff_rows": _diff_rows(data.diff),
        "plots": render_plots(data, summary),
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    return _environment().get_template(TEMPLATE).render(**context)


def write_report(data: ReportData, uri: str, s3: S3Config | None = None) -> str:
    """Render the report and write it atomically.

    Args:
        data: the report inputs.
        uri: the file to write (``.../report.html``), a local path, ``file://`` URI or
            ``s3://`` URI; a URI not ending in ``.html`` is taken as a folder and
            ``report.html`` is written inside it.
        s3: endpoint and credentials for ``s3://`` URIs (default: from the environment).

    Returns:
        The URI of the written file.
    """
    html = render_report(data).encode("utf-8")
    if not uri.endswith(".html"):
        uri = uri.rstrip("/") + "/" + REPORT_NAME
    if uri.startswith("s3://"):
        from capflow_core.storage import filesystem

        fs, path = filesystem(uri, s3 or S3Config())
        fs.pipe_file(path, html)  # one PUT: readers see the old object or the new one
        return uri
    path = Path(uri[len("file://") :] if uri.startswith("file://") else uri).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(html)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return uri


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_num, pct=_pct, usd=_usd, short=_short, label=_label)
    return env


def _local_link(target: str | None) -> str | None:
    """``target`` when it is a relative or ``file:`` path (safe to link offline), else None."""
    if not target:
        return None
    scheme = urlsplit(target).scheme
    return target if scheme in ("", "file") else None


def _diff_rows(diff: dict | None) -> list[tuple[str, int, int, int]]:
    by_domain = (diff or {}).get("by_domain") or {}
    rows = [
        (d, int(v.get("added", 0)), int(v.get("changed", 0)), int(v.get("removed", 0)))
        for d, v in sorted(by_domain.items())
    ]
    if rows:
        rows.append(("total", *(sum(r[i] for r in rows) for i in (1, 2, 3))))
    return rows


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and digits == 0 and not value.is_integer():
        digits = 2
    return f"{value:,.{digits}f}"


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}%"


def _usd(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.4f}"


def _short(value: Any, limit: int = MAX_TEXT) -> str:
    """Any value as text, cut at ``limit`` characters (escaping happens in the template)."""
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _label(key: str) -> str:
    return key.replace("_", " ")
