"""Import direction and lazy heavy imports, checked for real."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = re.compile(r"^\s*(import|from)\s+(prefect|dask|distributed)\b", re.M)


def _modules_loaded_by(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return {name.split(".")[0] for name in out.split()}


def test_capflow_core_never_imports_prefect_or_dask():
    offenders = [
        p for p in (ROOT / "capflow_core").rglob("*.py") if FORBIDDEN.search(p.read_text())
    ]
    assert offenders == []
    modules = [
        "capflow_core." + ".".join(p.relative_to(ROOT / "capflow_core").with_suffix("").parts)
        for p in (ROOT / "capflow_core").rglob("*.py")
        if p.name != "__init__.py"
    ]
    loaded = _modules_loaded_by("\n".join(f"import {m}" for m in modules))
    assert not loaded & {"prefect", "dask", "distributed"}


def test_cli_help_path_imports_nothing_heavy():
    loaded = _modules_loaded_by(
        "from typer.testing import CliRunner\nfrom flows.cli import app\n"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0\n"
        "assert CliRunner().invoke(app, ['caption', '--help']).exit_code == 0"
    )
    assert not loaded & {"torch", "transformers", "pyarrow", "av", "decord", "xgrammar", "prefect"}


def test_engine_with_http_backend_imports_without_torch():
    loaded = _modules_loaded_by(
        "from capflow_core.engine import CapFlow\n"
        "from capflow_core.config import load_config\n"
        "cfg = load_config('configs/single-gpu.yaml')\n"
        "flow = CapFlow(cfg)\n"
        "import capflow_core.backends.openai_backend"
    )
    assert "torch" not in loaded and "transformers" not in loaded
