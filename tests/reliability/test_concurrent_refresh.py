"""Two refreshes of one storage root at once, and the root lock that orders them.

``capflow refresh`` takes an exclusive lock on its root (capflow_core.root_lock): a second
refresh waits for it, then finds nothing left to do; one that cannot get it in
``storage.lock_wait_s`` exits 3 before writing anything. Never a duplicate or lost caption.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from capflow_core.captions_store import read_version, versions
from capflow_core.config import S3Config
from capflow_core.root_lock import RootBusyError, holds, lock_uri, root_lock
from capflow_core.runs_store import read_runs
from tests.flows.cli_runner import CAPFLOW, ROOT, run
from tests.flows.refresh_setup import sample_source, write_refresh_config

pytestmark = pytest.mark.timeout(420)
KEEP = ("chart.png", "photo.jpg")
HOLDER = """
import time
from capflow_core.config import S3Config
from capflow_core.root_lock import root_lock
with root_lock({root!r}, S3Config(), 5, 60):
    print("held", flush=True)
    time.sleep(120)
"""


def _config(tmp_path: Path, model: Path, dask: str, **storage: float) -> tuple[Path, str]:
    src, root = sample_source(tmp_path / "src", KEEP), str(tmp_path / "root")
    cfg = write_refresh_config(
        tmp_path / "c.yaml",
        model,
        root,
        [{"uri": str(src)}],
        dask,
        storage={"root": root, **storage},
        orchestration={"gpu_limit": f"gpu-conc-{tmp_path.name}", "gpu_slots": 2},
    )
    return cfg, root


def test_two_refreshes_at_once_one_waits_and_no_caption_is_lost_or_doubled(
    tmp_path: Path, tiny_model_dir: Path, dask_address: str, prefect_api: str
):
    cfg, root = _config(tmp_path, tiny_model_dir, dask_address)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [*CAPFLOW, "refresh", "--config", str(cfg)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outs = []
    try:
        for proc in procs:
            outs.append(proc.communicate(timeout=360)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n----\n".join(outs)
    assert sum("waiting for the lock" in out for out in outs) == 1, "\n----\n".join(outs)

    runs = {r["status"]: r for r in read_runs(root, S3Config())}
    assert sorted(runs) == ["no_change", "promoted"], runs
    first, second = runs["promoted"], runs["no_change"]
    assert first["dataset_version"] == 1 and second["started_at"] >= first["finished_at"]
    assert [v.version for v in versions(root, S3Config())] == [1]
    rows = read_version(root, S3Config()).to_pylist()
    assert sorted(Path(r["source_uri"]).name for r in rows) == sorted(KEEP)  # none lost
    assert len({r["asset_id"] for r in rows}) == len({r["caption_id"] for r in rows}) == len(KEEP)
    assert not Path(lock_uri(root)).read_bytes()  # released: the file holds no holder


def test_a_refresh_that_cannot_get_the_lock_exits_3_before_writing(
    tmp_path: Path, tiny_model_dir: Path, dask_address: str, prefect_api: str
):
    cfg, root = _config(tmp_path, tiny_model_dir, dask_address, lock_wait_s=1)
    with root_lock(root, S3Config(), wait_s=0, ttl_s=60):
        res = run("refresh", "--config", str(cfg))
    assert res.returncode == 3, res.stdout + res.stderr
    assert "another refresh holds the storage root" in res.stderr
    assert f"pid {os.getpid()}" in res.stderr  # names the holder
    assert sorted(p.name for p in Path(root).iterdir()) == ["_locks"]  # no run, no table


def test_dataset_writes_take_the_lock_too(tmp_path: Path, tiny_model_dir: Path, dask_address: str):
    """A takedown or a VACUUM during a refresh would race its MERGE (`dataset promote` takes
    the lock the same way): they wait for it, and exit 3 naming the holder when it is not
    freed in time."""
    from capflow_core.captions_store import promote
    from capflow_core.records import CaptionRecord, to_arrow

    cfg, root = _config(tmp_path, tiny_model_dir, dask_address, lock_wait_s=1)
    row = CaptionRecord(asset_id="a" * 64, source_uri="s3://b/a.jpg", modality="image")
    row.caption, row.accepted = "a caption", True
    promote(root, S3Config(), to_arrow([row]), [], run_id="r1")
    with root_lock(root, S3Config(), wait_s=0, ttl_s=60):
        busy = [
            run("dataset", "remove", "--asset", "a" * 64, "--config", str(cfg)),
            run("dataset", "vacuum", "--yes", "--config", str(cfg)),
        ]
    for res in busy:
        assert res.returncode == 3, res.stdout + res.stderr
        assert f"pid {os.getpid()}" in res.stderr
    assert len(versions(root, S3Config())) == 1  # nothing was written
    res = run("dataset", "remove", "--asset", "a" * 64, "--config", str(cfg))
    assert res.returncode == 0, res.stderr  # the lock is free again: it goes through
    assert read_version(root, S3Config()).num_rows == 0


@pytest.mark.parametrize("where", ["local", "s3"])
def test_the_lock_admits_one_holder_and_outlives_no_killed_one(where: str, tmp_path: Path, request):
    if where == "s3":
        request.getfixturevalue("moto_s3")
        root = f"s3://capflow-test/lock-{tmp_path.name}"
    else:
        root = str(tmp_path / "root")
    held, most = [], []

    def hold(i: int) -> None:
        with root_lock(root, S3Config(), wait_s=30, ttl_s=10):
            held.append(i)
            most.append(len(held) if holds(root) else -1)
            time.sleep(0.3)
            held.remove(i)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(most) == 3 and max(most) == 1

    code = HOLDER.format(root=root)
    holder = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not holds(root)  # another process holds it
        busy = pytest.raises(RootBusyError, match=f"pid {holder.pid}")
        with busy, root_lock(root, S3Config(), wait_s=0.5, ttl_s=60):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    start = time.monotonic()
    with root_lock(root, S3Config(), wait_s=10, ttl_s=60):  # the 60 s lease is not waited out
        assert time.monotonic() - start < 5 and holds(root)
    assert not holds(root)
