"""`capflow demo` from the command line on generated sample media."""

from __future__ import annotations

import json
from pathlib import Path

from tests.flows.cli_runner import run


def test_demo_captions_generated_samples(tmp_path: Path, tiny_cfg: Path):
    res = run("demo", "--config", str(tiny_cfg), "--root", str(tmp_path / "root"))
    assert res.returncode == 0, res.stderr[-3000:]
    source = tmp_path / "root" / "demo-source"
    files = sorted(p.name for p in source.iterdir())
    assert any(f.endswith(".mp4") for f in files) and len(files) >= 8
    rows = [json.loads(x) for x in (tmp_path / "root/demo/records.jsonl").read_text().splitlines()]
    assert len(rows) == len(files) and all(r["caption"] and not r["errors"] for r in rows)
    assert "CapFlow demo" in res.stderr and "accepted" in res.stderr
