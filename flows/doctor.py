"""`capflow doctor`: check what a run needs and say what to fix."""

from __future__ import annotations

import asyncio
import importlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from capflow_core.config import Config, OpenAIModel, is_path_like


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _module(name: str, fix: str, required: bool) -> Check:
    try:
        mod = importlib.import_module(name)
    except Exception as err:  # an import can fail in many ways (missing libs, ABI)
        return Check(name, False, f"cannot import: {err}", fix, required)
    return Check(name, True, f"version {getattr(mod, '__version__', '?')}", required=required)


def checks(cfg: Config) -> list[Check]:
    from capflow_core.errors import ConfigError
    from capflow_core.registry import load_registry

    out = [Check("config", True, cfg.source or "<inline>")]
    try:
        reg = load_registry(cfg.registry)
        out.append(
            Check("registry", True, f"{len(reg.domains)} domains from {len(reg.sources)} file(s)")
        )
    except ConfigError as err:
        out.append(Check("registry", False, str(err), "fix the registry file named above"))
    tess = shutil.which("tesseract")
    out.append(
        Check(
            "tesseract",
            bool(tess),
            tess or "not found",
            "apt-get install tesseract-ocr (OCR agents otherwise run without grounding)",
            required=False,
        )
    )
    out.append(_module("av", "pip install av (PyAV decodes video)", cfg.video.sampler == "pyav"))
    out.append(
        _module(
            "decord",
            "pip install decord, or set video.sampler: pyav",
            cfg.video.sampler == "decord",
        )
    )
    seen: set[str] = set()
    for role in ("vlm", "llm", "judge", "eval_judge"):
        spec = cfg.role(role)
        key = spec.model_dump_json()
        if key in seen:
            continue
        seen.add(key)
        out.append(_model_check(role, spec))
    return out


def _model_check(role: str, spec) -> Check:  # spec: TransformersModel | OpenAIModel
    name = f"models.{role}"
    if isinstance(spec, OpenAIModel):
        from capflow_core.backends.endpoint_check import check_endpoints

        status = asyncio.run(check_endpoints(spec))
        detail = "; ".join(f"{s.url} {'ok' if s.ok else s.detail}" for s in status)
        return Check(
            name,
            any(s.ok for s in status),
            detail,
            "start `vllm serve` (infra/vllm/) or fix the endpoint url",
        )
    if not is_path_like(spec.model):
        return Check(name, True, f"hub model {spec.model} (revision {spec.revision or 'unpinned'})")
    if Path(spec.model).is_dir():
        return Check(name, True, f"model folder {spec.model}")
    if spec.build_tiny:
        return Check(name, True, f"tiny model will be built at {spec.model} on first use")
    return Check(
        name,
        False,
        f"model folder missing: {spec.model}",
        f"run `capflow tiny-model {spec.model}` or fix models.{role}.model",
    )


def run_doctor(cfg: Config) -> bool:
    """Print the checks as a table; True when every required check passed."""
    from rich.console import Console
    from rich.table import Table

    results = checks(cfg)
    table = Table(title="capflow doctor")
    for col in ("check", "status", "detail", "fix"):
        table.add_column(col, overflow="fold")
    for c in results:
        status = (
            "[green]ok[/green]"
            if c.ok
            else "[red]FAIL[/red]"
            if c.required
            else "[yellow]warn[/yellow]"
        )
        table.add_row(c.name, status, c.detail, "" if c.ok else c.fix)
    Console().print(table)
    return all(c.ok or not c.required for c in results)
