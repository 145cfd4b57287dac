"""`capflow demo` from the command line: the whole refresh pipeline on generated samples."""

from __future__ import annotations

import re
from pathlib import Path

from capflow_core.captions_store import read_version, versions
from capflow_core.config import S3Config
from capflow_core.runs_store import read_runs
from tests.flows.cli_runner import run
from tests.tasks.pipeline import image_bytes


def _report(stdout: str) -> Path:
    found = re.search(r"report -> (\S+)", stdout)
    assert found, stdout[-3000:]
    return Path(found.group(1))


def test_demo_runs_the_pipeline_then_noop_then_one_new_file(
    tmp_path: Path, tiny_cfg: Path, prefect_api: str
):
    root = tmp_path / "root"
    # PREFECT_API_URL (the session's server) is in the environment: the demo must ignore it.
    first = run("demo", "--config", str(tiny_cfg), "--root", str(root))
    assert first.returncode == 0, first.stderr[-3000:]
    source = root / "demo-source"
    files = sorted(p.name for p in source.iterdir())
    assert any(f.endswith(".mp4") for f in files) and len(files) == 8
    assert "promoted" in first.stdout and "dataset version 1" in first.stdout, first.stdout
    assert "listed 8" in first.stdout and "captioned 8" in first.stdout
    assert _report(first.stdout).is_file()
    assert (root / "prefect-home" / "prefect.db").is_file()
    assert f"PREFECT_HOME={root / 'prefect-home'} prefect server start" in first.stdout
    s3 = S3Config()
    assert [v.version for v in versions(str(root), s3)] == [1]
    rows = read_version(str(root), s3, 1).to_pylist()
    assert len(rows) == 8 and all(r["caption"] and r["license"] == "CC0-1.0" for r in rows)
    mtimes = {p.name: p.stat().st_mtime_ns for p in source.iterdir()}

    # Rerun: nothing to do, answered without a flow run; no version, no new run.
    again = run("demo", "--config", str(tiny_cfg), "--root", str(root))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing changed: dataset version 1 is current" in again.stdout, again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in source.iterdir()} == mtimes
    assert [v.version for v in versions(str(root), s3)] == [1]
    assert len(read_runs(str(root), s3)) == 1

    (source / "extra.jpg").write_bytes(image_bytes(7))
    third = run("demo", "--config", str(tiny_cfg), "--root", str(root), "--use-profile")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "dataset version 2" in third.stdout and "captioned 1" in third.stdout, third.stdout
    found = versions(str(root), s3)
    assert [v.version for v in found] == [1, 2]
    assert found[-1].counts["added"] == 1 and found[-1].counts["changed"] == 0
    latest = read_version(str(root), s3, 2, columns=["source_uri", "caption_id"]).to_pylist()
    assert len(latest) == 9 and any(r["source_uri"].endswith("extra.jpg") for r in latest)
    before = {r["caption_id"] for r in rows}
    assert len({r["caption_id"] for r in latest} - before) == 1  # only the new file captioned
    _assert_run_on(prefect_api, read_runs(str(root), s3)[-1]["flow_run_id"])  # --use-profile


def _assert_run_on(api_url: str, flow_run_id: str) -> None:
    """The flow run exists on the server at ``api_url`` and ran capflow-refresh."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        assert client.read_flow(flow_run.flow_id).name == "capflow-refresh"
        assert flow_run.state.is_completed()


def test_demo_refuses_a_remote_root(tiny_cfg: Path):
    res = run("demo", "--config", str(tiny_cfg), "--root", "s3://bucket/prefix")
    assert res.returncode == 2
    assert "local folder" in res.stdout + res.stderr
