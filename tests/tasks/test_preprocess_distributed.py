"""Real distributed runs: an external `dask scheduler` + 2 workers, and a SIGKILLed run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from capflow_core.prepared_shards import MARKER, staging_dir
from capflow_core.run_outcome import read_reconciliation, read_rejects
from tasks.ingest import ingest
from tasks.preprocess import preprocess
from tests.flows.cli_runner import CAPFLOW, ROOT, closed_port
from tests.tasks.pipeline import config_dict, make_config, staged_rows, write_images

DASK = Path(sys.executable).with_name("dask")


def _cases(src: Path) -> None:
    """Six good pictures, an exact duplicate, a too-small one and random bytes."""
    write_images(src, {f"img{i}.jpg": 10 + i for i in range(6)})
    shutil.copy(src / "img0.jpg", src / "z_dup.jpg")
    (src / "noise.jpg").write_bytes(os.urandom(3000))
    from tests.tasks.media_cases import scene

    scene(99, 300, 200).save(src / "small.png")


@pytest.fixture
def external_dask() -> Iterator[str]:
    """``dask scheduler`` and two ``dask worker`` processes, as an operator would start them."""
    port = closed_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": ROOT, "env": env}
    scheduler = [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
    worker = [str(DASK), "worker", address, "--nthreads", "1", "--no-dashboard"]
    procs = [subprocess.Popen([*scheduler, "--no-dashboard"], **quiet)]
    procs += [subprocess.Popen(worker, **quiet) for _ in range(2)]
    try:
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _outcome(root: str, run_id: str, cfg) -> tuple[set, set]:
    prepared = {
        (r["asset_id"], Path(r["source_uri"]).name)
        for r in staged_rows(root, run_id, "prepared", cfg)
    }
    rejects = {
        (Path(r["source_uri"]).name, r["reason_code"], r["asset_id"])
        for r in read_rejects(root, cfg.s3, run_id)
    }
    return prepared, rejects


def test_external_scheduler_matches_local_cluster(
    tmp_path: Path, dask_address: str, external_dask: str
):
    src = tmp_path / "src"
    _cases(src)
    results = []
    for name, address in (("local", dask_address), ("external", external_dask)):
        root = str(tmp_path / name)
        cfg = make_config(root, str(src), shard_size=4)
        ingest(cfg, run_id="r1")
        res = preprocess(cfg, root=root, run_id="r1", dask_address=address)
        assert res.reconciled and (res.prepared, res.rejected) == (6, 3)
        results.append((res.reasons, *_outcome(root, "r1", cfg)))
    assert results[0] == results[1]
    assert results[0][0] == {"corrupt": 1, "duplicate": 1, "too_small": 1}


def _markers(root: str, run_id: str) -> list[Path]:
    return sorted(Path(staging_dir(root, run_id, "prepared")).glob(f"*.{MARKER}"))


def test_sigkill_after_first_shard_loses_and_duplicates_nothing(tmp_path: Path, dask_address: str):
    src = tmp_path / "src"
    write_images(src, {f"p{i:02d}.jpg": 40 + i for i in range(10)})
    (src / "bad.jpg").write_bytes(b"")
    shutil.copy(src / "p00.jpg", src / "q_dup.jpg")
    root = str(tmp_path / "root")
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(config_dict(root, str(src), shard_size=1)))
    cfg = make_config(root, str(src), shard_size=1)
    shards = ingest(cfg, run_id="k1").shards
    assert shards == 12

    args = ["preprocess", "--config", str(config), "--run-id", "k1"]
    args += ["--dask-address", dask_address]
    proc = subprocess.Popen(
        [*CAPFLOW, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not _markers(root, "k1") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = len(_markers(root, "k1"))
    assert 1 <= done_at_kill < shards

    rerun = subprocess.run([*CAPFLOW, *args], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{shards - done_at_kill} shard(s) prepared, {done_at_kill} already done" in rerun.stdout
    assert f"reconciliation -> {root}/staging/k1/reconciliation.json" in rerun.stdout
    prepared = [r["source_uri"] for r in staged_rows(root, "k1", "prepared", cfg)]
    rejected = [r["source_uri"] for r in read_rejects(root, cfg.s3, "k1")]
    staged_rejects = [r["source_uri"] for r in staged_rows(root, "k1", "rejects", cfg)]
    assert len(prepared) == len(set(prepared)) == 10
    assert len(rejected) == len(set(rejected)) == 2 and sorted(rejected) == sorted(staged_rejects)
    assert sorted(prepared + rejected) == sorted(str(p) for p in src.iterdir())
    stored = read_reconciliation(root, "k1", cfg.s3)
    assert (stored["listed"], stored["prepared"], stored["rejected"]) == (12, 10, 2)
    assert stored["reasons"] == {"corrupt": 1, "duplicate": 1} and stored["reconciled"]
