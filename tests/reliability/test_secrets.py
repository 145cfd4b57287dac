"""Planted credentials never reach storage, tables, Prefect, logs or CLI output."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
import yaml

from capflow_core.config import S3Config
from tests.flows.cli_runner import run, write_config
from tests.flows.refresh_setup import refresh, sample_source, write_refresh_config

pytestmark = pytest.mark.timeout(300)

PLANTED = {
    "AWS_ACCESS_KEY_ID": "AKIAPLANTEDKEY1234567",
    "AWS_SECRET_ACCESS_KEY": "planted-secret-9f3b1c",
    "AWS_SESSION_TOKEN": "planted-session-token-77e2d0",
    "VLLM_API_KEY": "sk-planted-vllm-5a8e41",
    "OPENAI_API_KEY": "sk-planted-openai-c02d9b",
    "HF_TOKEN": "hf_plantedtoken3e7a19",
}


@pytest.fixture
def planted(moto_s3: dict, prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """The planted secrets in the environment, fresh s3fs clients, Prefect on the test server."""
    import s3fs
    from prefect.settings import PREFECT_API_URL, temporary_settings

    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()  # cached clients hold the old credentials
    with temporary_settings({PREFECT_API_URL: prefect_api}):
        yield PLANTED
    s3fs.S3FileSystem.clear_instance_cache()


def _leaks(where: str, text: str) -> list[str]:
    return [f"{name} in {where}" for name, value in PLANTED.items() if value in text]


def _storage_leaks(root: str) -> list[str]:
    """Every object's bytes under ``root``, and every Delta table's rows, searched."""
    import deltalake

    from capflow_core.storage import delta_storage_options, filesystem

    fs, base = filesystem(root, S3Config())
    objects = fs.find(base)
    assert any("/_delta_log/" in o for o in objects) and any(o.endswith(".html") for o in objects)
    leaks = [leak for o in objects for leak in _leaks(o, fs.cat_file(o).decode("latin-1"))]
    tables = sorted({o.split("/_delta_log/")[0] for o in objects if "/_delta_log/" in o})
    names = {t.rsplit("/", 1)[-1] for t in tables}
    assert {"runs", "rejects", "captions"} <= names, names
    for table in tables:
        uri = f"s3://{table}"
        rows = deltalake.DeltaTable(uri, storage_options=delta_storage_options(uri, S3Config()))
        leaks += _leaks(f"rows of {table}", str(rows.to_pyarrow_table().to_pylist()))
    return leaks


def _prefect_leaks(flow_run_id: str) -> list[str]:
    """The server's flow runs (parameters), logs and artifacts, searched."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    by_run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)]))
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        assert "config" in run.parameters
        own_logs = client.read_logs(log_filter=by_run, limit=200)
        assert own_logs, "the flow run sent no logs: nothing was searched"
        runs = client.read_flow_runs(limit=200)
        logs, artifacts = [], []
        while batch := client.read_logs(limit=200, offset=len(logs)):
            logs += batch
        while batch := client.read_artifacts(limit=200, offset=len(artifacts)):
            artifacts += batch
    assert any(a.flow_run_id == run.id for a in artifacts)
    leaks = _leaks("flow run", run.model_dump_json())
    leaks += [x for r in runs for x in _leaks(f"flow run {r.name} parameters", str(r.parameters))]
    leaks += [x for lg in logs for x in _leaks(f"log {lg.name}", lg.message)]
    return leaks + [x for a in artifacts for x in _leaks(f"artifact {a.key}", str(a.data))]


def test_refresh_on_s3_leaks_no_planted_secret(
    tmp_path: Path,
    tiny_model_dir: Path,
    planted: dict,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
):
    import s3fs

    from capflow_core.runs_store import read_run

    caplog.set_level(logging.INFO)
    fs = s3fs.S3FileSystem()
    local = sample_source(tmp_path / "src", ("chart.png", "document.png", "photo.jpg"))
    (local / "broken.png").write_bytes(b"not a png")  # a reject row gets written too
    fs.put(str(local) + "/", "capflow-test/secrets-src/", recursive=True)
    root = "s3://capflow-test/secrets-root"
    cfg = write_refresh_config(
        tmp_path / "c.yaml", tiny_model_dir, root, [{"uri": "s3://capflow-test/secrets-src"}], ""
    )
    data = yaml.safe_load(cfg.read_text())
    data["dask"] = {"n_workers": 1}  # its own worker, started with the planted environment
    cfg.write_text(yaml.safe_dump(data))
    state = refresh(cfg)
    assert state.is_completed(), state.message
    out = state.result()
    assert out["reconciliation"]["captioned"] == 3, out

    leaks = _storage_leaks(root)
    leaks += _prefect_leaks(read_run(root, S3Config(), out["run_id"])["flow_run_id"])
    leaks += _leaks("the flow's result", str(out))
    leaks += [x for r in caplog.records for x in _leaks(f"log {r.name}", r.getMessage())]
    captured = capfd.readouterr()
    leaks += _leaks("stdout", captured.out) + _leaks("stderr", captured.err)
    assert not leaks, leaks


def _cli_config(tmp_path: Path, model: Path) -> Path:
    spec = {"backend": "transformers", "model": str(model), "device": "cpu"}
    return write_config(tmp_path, {"vlm": spec, "llm": spec, "judge": spec})


@pytest.mark.parametrize(
    "args",
    [
        ("--source", "s3://no-such-bucket-xyz/"),
        ("--source", "s3://no-such-bucket-xyz/some/prefix", "--run-id", "r1"),
    ],
)
def test_cli_s3_errors_show_no_planted_secret(
    tmp_path: Path, moto_s3: dict, tiny_model_dir: Path, args: tuple
):
    cfg = _cli_config(tmp_path, tiny_model_dir)
    proc = run("ingest", "--config", str(cfg), *args, env={**moto_s3, **PLANTED})
    assert proc.returncode == 3 and "bucket does not exist" in proc.stderr, proc.stderr
    assert not _leaks("CLI output", proc.stdout + proc.stderr)


def test_cli_missing_bucket_root_shows_no_planted_secret(
    tmp_path: Path, moto_s3: dict, tiny_model_dir: Path
):
    cfg = _cli_config(tmp_path, tiny_model_dir)
    src = sample_source(tmp_path / "src", ("chart.png",))
    env = {**moto_s3, **PLANTED}
    proc = run(
        "ingest",
        "--config",
        str(cfg),
        "--source",
        str(src),
        "--root",
        "s3://no-such-bucket-xyz/r",
        env=env,
    )
    assert proc.returncode != 0, proc.stdout
    assert not _leaks("CLI output", proc.stdout + proc.stderr)
