"""The ``models`` registry: a real Delta table under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from deltalake import DeltaTable

from capflow_core.config import S3Config
from capflow_core.delta_store import table_uri
from capflow_core.errors import ConfigError
from capflow_core.models_store import (
    last_model_version,
    model_dir,
    next_number,
    read_models,
    register_model,
    resolve,
)

S3 = S3Config()
NAME = "metacaptioner"


@pytest.fixture
def root(tmp_path: Path) -> str:
    return str(tmp_path / "root")


def _train(root: str, number: int, status: str, version: int) -> None:
    register_model(
        root, S3, NAME, number, status="training", method="lora", base_model="tiny",
        dataset_version=version, hyperparameters={"lr": 1e-4, "r": 16}, seed=0, run_id="r1",
    )  # fmt: skip
    register_model(root, S3, NAME, number, status=status, train_loss=1.5, eval_loss=1.7)


def test_register_partial_update_and_read_back(root: str) -> None:
    assert read_models(root, S3) == [] and next_number(root, S3, NAME) == 1
    register_model(
        root, S3, NAME, 1, status="training", method="lora", base_model="Qwen/x",
        base_revision="abc", dataset_version=3, train_examples=10, eval_examples=2,
        hyperparameters={"lr": 1e-4, "lora": {"r": 16}}, seed=7, run_id="run-1",
        flow_run_id="flow-1",
    )  # fmt: skip
    (row,) = read_models(root, S3)
    created = row["created_at"]
    assert row["path"] == model_dir(root, NAME, 1) + "/" and row["path"].endswith(
        "/models/metacaptioner/1/"
    )
    assert row["hyperparameters"] == {"lr": 1e-4, "lora": {"r": 16}} and row["eval_scores"] is None

    scores = {"overall": 2.1, "accept_rate": 0.8, "per_criterion": {"rigor": 2.0}}
    register_model(root, S3, NAME, 1, status="ready", train_loss=0.5, eval_scores=scores)
    (row,) = read_models(root, S3)
    assert (row["status"], row["train_loss"], row["eval_scores"]) == ("ready", 0.5, scores)
    # fields not given keep their values, including the insert-time defaults
    assert (row["base_revision"], row["seed"], row["dataset_version"]) == ("abc", 7, 3)
    assert row["hyperparameters"]["lora"] == {"r": 16}
    assert (row["created_at"], row["path"]) == (created, model_dir(root, NAME, 1) + "/")
    assert row["eval_loss"] is None and row["flow_run_id"] == "flow-1"
    assert next_number(root, S3, NAME) == 2 and next_number(root, S3, "other") == 1
    assert DeltaTable(table_uri(root, "models")).version() == 2  # create + 2 MERGEs


def test_rows_sorted_and_filtered_by_name(root: str) -> None:
    for name, number in (("zeta", 1), (NAME, 2), (NAME, 1)):
        register_model(root, S3, name, number, status="ready")
    assert [(r["name"], r["number"]) for r in read_models(root, S3)] == [
        (NAME, 1), (NAME, 2), ("zeta", 1)
    ]  # fmt: skip
    assert [r["number"] for r in read_models(root, S3, NAME)] == [1, 2]


def test_invalid_fields_are_refused(root: str) -> None:
    with pytest.raises(ValueError, match="status"):
        register_model(root, S3, NAME, 1, status="done")
    with pytest.raises(ValueError, match="method"):
        register_model(root, S3, NAME, 1, method="qlora")
    with pytest.raises(ValueError, match="unknown models field"):
        register_model(root, S3, NAME, 1, loss=1.0)
    with pytest.raises(ValueError, match="start at 1"):
        register_model(root, S3, NAME, 0)
    with pytest.raises(ConfigError, match="model name"):
        register_model(root, S3, "../x", 1)
    assert read_models(root, S3) == []


def test_resolve_latest_number_and_unknown(root: str) -> None:
    with pytest.raises(ConfigError, match="none registered"):
        resolve(root, S3, "metacaptioner/latest")
    assert last_model_version(root, S3, NAME) is None
    _train(root, 1, "ready", version=4)
    _train(root, 2, "ready", version=6)
    _train(root, 3, "failed", version=9)
    register_model(root, S3, NAME, 4, status="training", dataset_version=11)

    assert resolve(root, S3, "metacaptioner/latest")["number"] == 2
    assert resolve(root, S3, "model:metacaptioner/latest")["number"] == 2
    assert resolve(root, S3, "metacaptioner")["number"] == 2
    row = resolve(root, S3, "model:metacaptioner/1")
    assert (row["number"], row["dataset_version"], row["hyperparameters"]["r"]) == (1, 4, 16)
    assert last_model_version(root, S3, NAME) == 6

    with pytest.raises(ConfigError, match="is failed") as err:
        resolve(root, S3, "metacaptioner/3")
    assert "metacaptioner/1 (ready), metacaptioner/2 (ready), metacaptioner/3 (failed)" in str(
        err.value
    )
    assert resolve(root, S3, "metacaptioner/4", require_ready=False)["status"] == "training"
    with pytest.raises(
        ConfigError, match=r"no model metacaptioner/7.*metacaptioner/4 \(training\)"
    ):
        resolve(root, S3, "metacaptioner/7")
    with pytest.raises(ConfigError, match=r"no ready model named 'other'.*metacaptioner/1"):
        resolve(root, S3, "model:other/latest")
    with pytest.raises(ConfigError, match="NAME/latest or NAME/N"):
        resolve(root, S3, "metacaptioner/newest")
