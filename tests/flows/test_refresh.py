"""The capflow-refresh flow on a real Prefect server, the tiny model, Dask and Delta tables."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path

import pytest

from capflow_core.captions_store import read_version, versions
from capflow_core.config import S3Config
from capflow_core.runs_store import read_run, read_runs
from tasks.caption import staged_records
from tests.flows.refresh_setup import (
    paper_thresholds,
    refresh,
    sample_source,
    write_refresh_config,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def prefect(prefect_api: str) -> Iterator[str]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_api}):
        yield prefect_api


def _summary(state) -> dict:
    assert state.is_completed(), state.message
    return state.result()


def test_refresh_versions_once_then_tracks_adds_and_deletes(
    tmp_path: Path, tiny_model_dir: Path, dask_address: str, prefect: str
):
    src, root = sample_source(tmp_path / "src"), str(tmp_path / "root")
    cfg = write_refresh_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        root,
        [{"uri": str(src), "license": "cc-by-4.0"}],
        dask_address,
    )
    first = refresh(cfg)
    assert first.is_completed(), first.message
    out = _summary(first)
    assert out["status"] == "promoted" and out["version"] == 1
    recon = out["reconciliation"]
    assert recon["reconciled"] and recon["listed"] == 4 and recon["captioned"] == 4
    assert Path(out["report"]).is_file() and "Version 1" in Path(out["report"]).read_text()
    assert (Path(root) / "reports/runs" / out["run_id"] / "data_docs/index.html").is_file()
    rows = read_version(root, S3Config(), 1).to_pylist()
    assert len(rows) == 4 and {r["license"] for r in rows} == {"cc-by-4.0"}
    run = read_run(root, S3Config(), out["run_id"])
    assert run["status"] == "promoted" and run["dataset_version"] == 1 and run["gate"] == "passed"

    again = _summary(refresh(cfg))
    assert again["status"] == "no_change" and again["version"] is None
    assert [v.version for v in versions(root, S3Config())] == [1]

    (src / "photo.jpg").unlink()
    sample_source(tmp_path / "more", ("code.png",))
    (tmp_path / "more/code.png").rename(src / "code.png")
    third = _summary(refresh(cfg))
    assert third["version"] == 2 and third["reconciliation"]["to_caption"] == 1
    assert third["reconciliation"]["removed"] == 1
    names = sorted(Path(r["source_uri"]).name for r in read_version(root, S3Config()).to_pylist())
    assert names == ["chart.png", "clip_540p.mp4", "code.png", "document.png"]
    assert len(read_version(root, S3Config(), 1)) == 4  # time travel still reads v1


def test_strict_gate_fails_the_run_then_promote_adds_the_version(
    tmp_path: Path, tiny_model_dir: Path, dask_address: str, prefect: str
):
    from typer.testing import CliRunner

    from flows.cli import app

    src, root = sample_source(tmp_path / "src"), str(tmp_path / "root")
    cfg = write_refresh_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        root,
        [{"uri": str(src)}],
        dask_address,
        **paper_thresholds(),
    )
    state = refresh(cfg)
    assert state.is_failed()
    assert "quality gate failed" in state.message and "capflow dataset promote" in state.message
    assert versions(root, S3Config()) == []
    run = read_runs(root, S3Config())[-1]
    run_id = run["run_id"]
    assert run["status"] == "gate_failed" and run["failing"]
    assert {f["expectation"] for f in run["failing"]}  # names the failing expectations
    assert Path(run["report_uri"]).is_file() and "/reports/runs/" in run["report_uri"]
    staged = staged_records(root, run_id, S3Config())
    report = html.unescape(Path(run["report_uri"]).read_text())
    shown = [c for c in staged.column("caption").to_pylist() if c[:60] in report]
    assert shown  # example captions, read whole for the sampled assets only

    res = CliRunner().invoke(app, ["dataset", "promote", run_id, "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert [v.version for v in versions(root, S3Config())] == [1]
    assert read_run(root, S3Config(), run_id)["status"] == "promoted"
    assert len(read_version(root, S3Config(), 1)) == 4


def test_prompt_change_recaptions_only_that_domain(
    tmp_path: Path, tiny_model_dir: Path, dask_address: str, prefect: str
):
    nat = sample_source(tmp_path / "nat", ("photo.jpg", "chart.png"))
    code = sample_source(tmp_path / "code", ("code.png", "document.png"))
    root = str(tmp_path / "root")
    sources = [
        {"uri": str(nat), "domain": "natural"},
        {"uri": str(code), "domain": "code_programming"},
    ]
    cfg = write_refresh_config(tmp_path / "c.yaml", tiny_model_dir, root, sources, dask_address)
    assert _summary(refresh(cfg))["version"] == 1
    before = {r["asset_id"]: r for r in read_version(root, S3Config(), 1).to_pylist()}

    (tmp_path / "coder.md").write_text("Transcribe the code on screen exactly, then explain it.")
    (tmp_path / "reg.yaml").write_text(
        "agents:\n  coder: {name: Coder, role: tool, model: vlm, prompt: coder.md, "
        "max_tokens: 512, tool: ocr}\n"
    )
    cfg = write_refresh_config(
        tmp_path / "c2.yaml",
        tiny_model_dir,
        root,
        sources,
        dask_address,
        registry=str(tmp_path / "reg.yaml"),
    )
    out = _summary(refresh(cfg))
    assert out["version"] == 2 and out["reconciliation"]["recaption"] == 2
    after = {r["asset_id"]: r for r in read_version(root, S3Config(), 2).to_pylist()}
    for asset_id, row in after.items():
        same = row["caption_id"] == before[asset_id]["caption_id"]
        assert same == (row["domain"] == "natural"), row["source_uri"]
        assert row["route"]["domain"] == before[asset_id]["route"]["domain"]


def test_refresh_on_s3_root_and_source(
    tmp_path: Path, tiny_model_dir: Path, dask_address: str, prefect: str, moto_s3: dict
):
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_s3["AWS_ENDPOINT_URL"]})
    local = sample_source(tmp_path / "src", ("chart.png", "clip_540p.mp4", "document.png"))
    fs.put(str(local) + "/", "capflow-test/refresh-src/", recursive=True)
    root = "s3://capflow-test/refresh-root"
    cfg = write_refresh_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        root,
        [{"uri": "s3://capflow-test/refresh-src"}],
        dask_address,
        finetune={"min_new_samples": 3},
    )
    out = _summary(refresh(cfg))
    assert out["status"] == "promoted" and out["version"] == 1
    assert out["new_accepted"] == 3  # >= min_new_samples: capflow.dataset.promoted emitted
    _check_artifacts_and_gpu_limit(root, out)
    assert out["reconciliation"]["reconciled"] and out["reconciliation"]["captioned"] == 3
    assert fs.exists(out["report"].removeprefix("s3://"))
    assert fs.exists(f"capflow-test/refresh-root/reports/runs/{out['run_id']}/data_docs/index.html")
    assert _summary(refresh(cfg))["status"] == "no_change"
    assert [v.version for v in versions(root, S3Config())] == [1]


def _check_artifacts_and_gpu_limit(root: str, out: dict) -> None:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    flow_run_id = read_run(root, S3Config(), out["run_id"])["flow_run_id"]
    by_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]))
    with get_client(sync_client=True) as client:
        artifacts = {a.key: a for a in client.read_artifacts(artifact_filter=by_run)}
        limit = client.read_global_concurrency_limit_by_name("gpu")
    assert set(artifacts) == {
        "capflow-refresh-summary",
        "capflow-refresh-rejects",
        "capflow-refresh-report",
    }
    summary = artifacts["capflow-refresh-summary"].data
    assert out["run_id"] in summary and "dataset version: **1**" in summary
    assert "AWS_SECRET_ACCESS_KEY" not in summary and "testing" not in summary
    assert out["report"] in artifacts["capflow-refresh-report"].data
    assert limit.limit == 1
