"""Crash safety: `capflow refresh` SIGKILLed at exact points, then rerun.

Each failpoint (capflow_core.failpoints.POINTS) kills the process at one exact moment:
after the first manifest shard, the first prepared shard or the first captioned shard
commits, after the gate, or with every record staged but nothing merged. The rerun must resume the same run, leave finished shards alone, and
end with exactly one caption per asset, equal to an uninterrupted run's.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from capflow_core.captions_store import read_version, versions
from capflow_core.config import S3Config
from capflow_core.failpoints import POINTS
from capflow_core.runs_store import read_runs
from tests.flows.cli_runner import run
from tests.flows.refresh_setup import refresh, sample_source, write_refresh_config

pytestmark = pytest.mark.timeout(300)
KEEP = ("chart.png", "photo.jpg", "document.png", "clip_540p.mp4")


@pytest.fixture
def prefect(prefect_api: str) -> Iterator[str]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_api}):
        yield prefect_api


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_source(tmp_path_factory.mktemp("crash") / "src", KEEP)


def _config(tmp_path: Path, name: str, model: Path, source: Path, dask: str) -> Path:
    root = str(tmp_path / name)
    return write_refresh_config(
        tmp_path / f"{name}.yaml",
        model,
        root,
        [{"uri": str(source)}],
        dask,
        ingest={"shard_size": 1},
        # a SIGKILLed run keeps its slot until the lease lapses (>= 60 s): a limit of our
        # own with a second slot lets the resumed run start at once
        orchestration={"gpu_limit": f"gpu-crash-{tmp_path.name}", "gpu_slots": 2},
    )


def _captions(root: str) -> dict[str, tuple[str, str]]:
    rows = read_version(root, S3Config()).to_pylist()
    assert len({r["asset_id"] for r in rows}) == len(rows)  # one caption per asset
    return {r["asset_id"]: (r["caption_id"], r["caption"]) for r in rows}


@pytest.mark.parametrize("point", POINTS)
def test_killed_refresh_resumes_and_matches_an_uninterrupted_run(
    point: str,
    tmp_path: Path,
    source: Path,
    tiny_model_dir: Path,
    dask_address: str,
    prefect: str,
):
    baseline = _config(tmp_path, "baseline", tiny_model_dir, source, dask_address)
    assert refresh(baseline).is_completed()
    expected = _captions(str(tmp_path / "baseline"))
    assert len(expected) == len(KEEP)

    cfg = _config(tmp_path, "crashed", tiny_model_dir, source, dask_address)
    root = str(tmp_path / "crashed")
    killed = run("refresh", "--config", str(cfg), env={"CAPFLOW_FAILPOINT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    [interrupted] = read_runs(root, S3Config())
    assert interrupted["status"] == "running" and versions(root, S3Config()) == []
    done = {p: p.stat().st_mtime_ns for p in Path(root).glob("staging/*/*/*._*")}
    assert done, "the failpoint fired before anything was committed"

    state = refresh(cfg)
    assert state.is_completed(), state.message
    assert state.result()["run_id"] == interrupted["run_id"]
    assert state.result()["reconciliation"]["reconciled"]
    for marker, mtime in done.items():  # committed shards were not redone
        assert marker.stat().st_mtime_ns == mtime, marker
    assert _captions(root) == expected
    assert [v.version for v in versions(root, S3Config())] == [1]
