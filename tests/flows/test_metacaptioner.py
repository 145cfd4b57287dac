"""MetaCaptioner end to end: refresh -> fine-tune -> registry -> evaluate two captioners."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from capflow_core.config import S3Config
from capflow_core.evaluations_store import read_evaluations
from capflow_core.models_store import read_models
from capflow_core.training_data import held_out_ids
from tests.flows.refresh_setup import refresh, sample_source, write_refresh_config

pytestmark = pytest.mark.timeout(300)
FINETUNE = {
    "max_steps": 4,
    "batch_size": 2,
    "eval_percent": 40.0,
    "save_steps": 2,
    "learning_rate": 0.005,
}


@pytest.fixture
def prefect(prefect_api: str) -> Iterator[str]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_api}):
        yield prefect_api


def test_finetune_registers_lineage_and_evaluation_compares_captioners(
    tmp_path: Path, tiny_model_dir: Path, dask_address: str, prefect: str
):
    from typer.testing import CliRunner

    from capflow_core.config import load_config
    from flows.cli import app

    src = sample_source(
        tmp_path / "src",
        ("chart.png", "document.png", "photo.jpg", "code.png", "diagram.png", "clip_540p.mp4"),
    )
    root = str(tmp_path / "root")
    cfg_path = write_refresh_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        root,
        [{"uri": str(src)}],
        dask_address,
        finetune=FINETUNE,
    )
    assert refresh(cfg_path).is_completed()
    cfg = load_config(cfg_path)
    held_out = held_out_ids(root, S3Config(), cfg, 1)
    assert held_out, "the fixed sample set must put some assets in the held-out split"

    res = CliRunner().invoke(app, ["finetune", "--config", str(cfg_path)])
    assert res.exit_code == 0, res.output
    assert "model:metacaptioner/1: trained on" in res.output
    out = json.loads(
        CliRunner().invoke(app, ["models", "--config", str(cfg_path), "--json"]).output
    )[0]
    assert out["dataset_version"] == 1 and out["status"] == "ready"
    assert math.isfinite(out["train_loss"])
    [row] = read_models(root, S3Config())
    assert row["status"] == "ready" and row["dataset_version"] == 1
    assert row["base_model"] == str(tiny_model_dir) and row["base_revision"]
    assert row["hyperparameters"]["learning_rate"] == 0.005 and row["seed"] == 0
    assert (
        row["train_examples"] > 0
        and row["hyperparameters"]["train_examples"] == row["train_examples"]
    )
    assert (Path(row["path"]) / "adapter_config.json").is_file()

    for captioner in ("single", "model:metacaptioner/1"):
        res = CliRunner().invoke(
            app, ["evaluate", "--captioner", captioner, "--config", str(cfg_path)]
        )
        assert res.exit_code == 0, res.output
    assert "| model:metacaptioner/1 |" in res.output and "| single |" in res.output
    rows = read_evaluations(root, S3Config(), 1)
    assert [r["captioner"] for r in rows] == ["model:metacaptioner/1", "single"]
    assert rows[0]["samples"] == rows[1]["samples"] == len(held_out)
    for r in rows:
        assert r["scored"] > 0 and 1 <= r["overall"] <= 3
        assert set(r["scores"]) and all(1 <= v <= 3 for v in r["scores"].values())
    [row] = read_models(root, S3Config())
    assert row["eval_scores"]["v1"]["captioner"] == "model:metacaptioner/1"
    report = (Path(root) / "reports/evaluations/v1.md").read_text()
    assert "| model:metacaptioner/1 |" in report and "| single |" in report

    # a refresh whose captioner is the registered model re-captions the dataset with it
    cfg_path = write_refresh_config(
        tmp_path / "c2.yaml",
        tiny_model_dir,
        root,
        [{"uri": str(src)}],
        dask_address,
        finetune=FINETUNE,
        captioner={"model": "model:metacaptioner/latest"},
    )
    state = refresh(cfg_path)
    assert state.is_completed(), state.message
    assert state.result()["version"] == 2
    from capflow_core.captions_store import read_version
    from capflow_core.training_data import build_training_set

    rows = read_version(root, S3Config(), 2).to_pylist()
    assert {(r["mode"], r["captioner"]) for r in rows} == {("single", "model:metacaptioner/1")}
    # ... and those captions are not training data for the next model unless allowed
    data = build_training_set(root, S3Config(), load_config(cfg_path), 2)
    assert data.train == [] and data.skipped["self_trained"] == len(rows)


def test_unfinished_registration_is_resumed_not_duplicated(
    tmp_path: Path, tiny_model_dir: Path, dask_address: str, prefect: str
):
    """A fine-tune that died leaves its row `training`: the next run trains that number."""
    from capflow_core.models_store import register_model
    from flows.finetune import metacaptioner_finetune

    src = sample_source(tmp_path / "src", ("chart.png", "photo.jpg", "document.png"))
    root = str(tmp_path / "root")
    cfg_path = write_refresh_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        root,
        [{"uri": str(src)}],
        dask_address,
        finetune=FINETUNE | {"eval_percent": 1.0},
    )
    assert refresh(cfg_path).is_completed()
    register_model(root, S3Config(), "metacaptioner", 1, status="training", dataset_version=1)
    state = metacaptioner_finetune(config=str(cfg_path), return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["ref"] == "model:metacaptioner/1"
    assert [(r["number"], r["status"]) for r in read_models(root, S3Config())] == [(1, "ready")]
