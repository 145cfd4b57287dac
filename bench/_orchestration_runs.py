"""The orchestration benchmark's inputs and runs: an instant in-process model, generated
sources, the refresh config, and the refresh done as plain function calls or as the flow."""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CAPTION_WORDS = (
    "coloured shapes on a plain ground, soft edges blending into each other, with a "
    "brighter patch near the centre and darker corners"
)


class InstantBackend:
    """An in-memory backend that answers every request at once, per the request's tag.

    Replies are distinct per sample (they name a hash of ``CURRENT_SAMPLE``), judgements
    give every criterion 3 so the gate and the accept rule pass.
    """

    model_id = "bench-instant"

    def __init__(self) -> None:
        self.calls = 0

    async def generate(self, requests: list[Any]) -> list[Any]:
        """One immediate reply per request, in order."""
        from capflow_core.backends.base import GenResult

        self.calls += len(requests)
        return [GenResult(self._reply(r), prompt_tokens=10, completion_tokens=5) for r in requests]

    def _reply(self, request: Any) -> str:
        from capflow_core.backends.base import Choice
        from capflow_core.engine import CURRENT_SAMPLE

        if isinstance(request.constraint, Choice):
            return request.constraint.options[0]
        if request.tag.startswith("route"):
            return '{"domain":"natural","confidence":8}'
        if request.tag.startswith(("judge", "eval_judge")):
            return json.dumps(dict.fromkeys(request.constraint.schema["properties"], 3))
        sample = hashlib.sha256(CURRENT_SAMPLE.get().encode()).hexdigest()[:12]
        return f"Picture {sample} ({request.tag}) shows {CAPTION_WORDS}."

    async def aclose(self) -> None:
        """Nothing to release."""

    def gpus(self) -> int:
        """No GPUs behind it."""
        return 0


def _image(seed: int, path: Path, size: tuple[int, int]) -> None:
    import numpy as np
    from PIL import Image

    grid = np.random.default_rng(seed).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    Image.fromarray(grid).resize(size, Image.Resampling.BICUBIC).save(path, quality=85)


def image_source(folder: Path, n: int, offset: int = 0, size: tuple[int, int] = (600, 560)) -> Path:
    """``n`` distinct smooth-noise JPEGs (they pass the size, aspect and near-dup filters)."""
    folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: _image(offset + i, folder / f"img-{i:06d}.jpg", size), range(n)))
    return folder


def tiny_file_source(folder: Path, n: int) -> Path:
    """``n`` few-byte ``.jpg`` files in folders of 1,000 (listed, then rejected as undecodable)."""
    for i in range(n):
        sub = folder / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:07d}.jpg").write_bytes(b"x%d" % i)
    return folder


def write_config(path: Path, model: Path, dask_address: str | None, max_pixels: int) -> Path:
    """configs/tiny.yaml with the tiny model folder, shards of 500 and a 2-worker Dask."""
    import yaml

    data = yaml.safe_load((REPO / "configs/tiny.yaml").read_text())
    spec = {"backend": "transformers", "model": str(model), "device": "cpu"}
    data["models"] = {"vlm": spec, "llm": spec, "judge": spec}
    data["ingest"] = {"shard_size": 500}
    data["dask"] = {"address": dask_address} if dask_address else {"n_workers": 2}
    data["preprocess"] = {"max_pixels": max_pixels}
    path.write_text(yaml.safe_dump(data))
    return path


def overrides_for(root: Path, source: Path, shard_size: int | None = None) -> dict[str, Any]:
    """Config overrides: a storage root, one local source, optionally a shard size."""
    out: dict[str, Any] = {
        "storage": {"root": str(root)},
        "sources": [{"uri": str(source), "license": "cc-by-4.0"}],
    }
    return out | ({"ingest": {"shard_size": shard_size}} if shard_size else {})


def install_engine(config: Path, overrides: dict[str, Any], backend: InstantBackend) -> None:
    """Make a CapFlow engine on ``backend`` the process's engine for this config."""
    from capflow_core.config import load_config
    from capflow_core.engine import CapFlow
    from tasks.caption import use_engine

    cfg = load_config(str(config), overrides)
    use_engine(cfg, CapFlow(cfg, backends={"vlm": backend, "llm": backend, "judge": backend}))


def run_plain(config: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The flow's steps as plain function calls (and its non-Prefect bookkeeping: the
    ``runs`` rows, reconciliation and cost totals); returns per-step seconds and the outcome."""
    from capflow_core.config import config_hash, load_config
    from capflow_core.runs_store import record_run
    from tasks.caption import caption_markers, caption_shard
    from tasks.caption_plan import plan_captions
    from tasks.ingest import ingest, new_run_id
    from tasks.preprocess import preprocess
    from tasks.report import write_run_report
    from tasks.run_record import cost_totals, reconciliation
    from tasks.version import gate_run, promote_run

    steps: dict[str, float] = {}
    started = time.perf_counter()

    def timed(name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        steps[name] = steps.get(name, 0.0) + time.perf_counter() - t0
        return out

    cfg = load_config(str(config), overrides)
    root, s3, run_id = cfg.storage.root, cfg.s3, new_run_id()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    record_run(root, s3, run_id, status="running", started_at=now, config_hash=config_hash(cfg))
    listed = timed("ingest", ingest, cfg, run_id=run_id)
    prep = timed("preprocess", preprocess, cfg, run_id=run_id).counts()
    todo = timed("plan", plan_captions, cfg, root, run_id).to_dict()
    for shard in todo["shards"]:
        timed("caption", caption_shard, cfg, root, run_id, shard)
    markers = caption_markers(root, run_id, s3)
    recon, cost = reconciliation(prep, todo, markers), cost_totals(markers)
    verdict = timed("gate", gate_run, cfg, root, run_id)
    number = None
    if verdict.passed:
        removed = todo["removed"]
        res = timed("version", promote_run, cfg, root, run_id, removed=removed, gate="passed")
        number = res.version
    gate = {**verdict.result, "passed": verdict.passed}
    kw = {"gate": gate, "reconciliation": recon, "cost": cost}
    timed("report", write_run_report, cfg, root, run_id=run_id, version=number, **kw)
    status = "promoted" if number is not None else "no_change" if verdict.passed else "gate_failed"
    record_run(root, s3, run_id, status=status, dataset_version=number, counts=recon)
    return {
        "wall_s": time.perf_counter() - started,
        "steps_s": steps,
        "status": status,
        "version": number,
        "shards": len(todo["shards"]),
        "ingest": {"new": listed.new, "unchanged": listed.unchanged},
        "reconciliation": recon,
    }


def run_flow(config: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """One ``capflow-refresh`` flow run in this process; returns its seconds and outcome."""
    from flows.refresh import capflow_refresh

    started = time.perf_counter()
    state = capflow_refresh(config=str(config), overrides=overrides, return_state=True)
    wall = time.perf_counter() - started
    if not state.is_completed():
        raise RuntimeError(f"the flow ended {state.type}: {state.message}")
    out = state.result()
    return {
        "wall_s": wall,
        "status": out["status"],
        "version": out["version"],
        "reconciliation": out["reconciliation"],
        "tasks_s": task_seconds(state.state_details.flow_run_id),
    }


def task_seconds(flow_run_id: Any) -> dict[str, float]:
    """Seconds each task of a flow run spent running (start to end, summed per task name)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        found = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    out: dict[str, float] = {}
    for t in found:
        name = t.task_key.rsplit(".", 1)[-1] if not t.name else t.name.rsplit("-", 1)[0]
        if t.start_time and t.end_time:
            out[name] = out.get(name, 0.0) + (t.end_time - t.start_time).total_seconds()
    return out


def warm_up_prefect() -> float:
    """Run a trivial flow (starts the ephemeral API server when no server is configured)."""
    from prefect import flow

    @flow(name="bench-warm-up")
    def warm_up() -> int:
        return 1

    t0 = time.perf_counter()
    warm_up()
    return time.perf_counter() - t0


def drain_prefect_logs() -> None:
    """Send buffered run logs before the API goes away."""
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
