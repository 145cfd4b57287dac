"""A shard whose model servers fail keeps its completed samples; the retry does the rest.

Real ingest, Dask preprocessing, staging files and Delta tables (local and on moto S3); a
scripted backend plays a model server that is down for some samples (it raises the
backend's InfrastructureError, as the openai backend does past its retries). The real
servers are killed in tests/reliability/test_endpoint_faults.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from capflow_core.backends.base import GenRequest
from capflow_core.caption_attempts import attempt_counts
from capflow_core.engine import CURRENT_SAMPLE, CapFlow
from capflow_core.errors import InfrastructureError
from capflow_core.run_outcome import read_rejects
from capflow_core.storage import filesystem
from tasks.caption import caption_markers, caption_shard, captioned_dir, staged_records
from tasks.caption_partial import partial_paths, read_kept, write_partial
from tasks.caption_plan import plan_captions
from tasks.ingest import ingest
from tasks.preprocess import preprocess
from tests.capflow_core.fakes import ScriptedBackend, default_reply
from tests.tasks.pipeline import config_dict, write_images

pytestmark = pytest.mark.timeout(240)

NAMES = ("a.jpg", "b.jpg", "c.jpg", "d.png", "e.jpg", "f.jpg")


class Servers:
    """A scripted model: down for the samples in ``down``; judge garbage for ``bad``."""

    def __init__(self, down: set[str], bad: str = "") -> None:
        self.down, self.bad = down, bad
        self.answered: list[str] = []  # the sample of every successful request

    def __call__(self, request: GenRequest) -> str | Exception:
        name = Path(CURRENT_SAMPLE.get()).name
        if name in self.down:
            return InfrastructureError("model fake: no answer after 3 attempts (refused)")
        self.answered.append(name)
        if request.tag.startswith("judge") and name == self.bad:
            return "not json"
        return default_reply(request)

    def engine(self, cfg) -> CapFlow:
        backend = ScriptedBackend(self, delay_s=0.01, gpus=1)
        return CapFlow(cfg, backends={"vlm": backend, "llm": backend, "judge": backend})


def _prepare(tmp_path: Path, root: str, dask_address: str, run_id: str, budget: int = 3):
    from capflow_core.config import config_from_dict

    src = tmp_path / "src"
    write_images(src, {name: i + 11 for i, name in enumerate(NAMES)})
    cfg = config_from_dict(config_dict(root, str(src)) | {"caption": {"retry_budget": budget}})
    ingest(cfg, run_id=run_id)
    preprocess(cfg, run_id=run_id, dask_address=dask_address)
    [shard] = plan_captions(cfg, root, run_id).shards
    return cfg, shard


def _names(table) -> list[str]:
    return sorted(Path(u).name for u in table.column("source_uri").to_pylist())


def test_partial_kept_then_retry_captions_only_the_rest(tmp_path: Path, dask_address: str):
    root = str(tmp_path / "root")
    cfg, shard = _prepare(tmp_path, root, dask_address, "r1", budget=2)
    servers = Servers(down={"e.jpg", "f.jpg"}, bad="b.jpg")
    fs, folder = filesystem(captioned_dir(root, "r1"), cfg.s3)

    with pytest.raises(InfrastructureError) as info:
        caption_shard(cfg, root, "r1", shard, engine=servers.engine(cfg))
    first_answers = len(servers.answered)
    message = str(info.value)
    assert "shard-00000: 2 of 6 sample(s) could not reach a model server" in message
    assert "kept the 4 completed in staging/r1/captioned/shard-00000.part-0.parquet" in message
    assert "captions only the 2 left" in message and "capflow doctor" in message
    assert "no answer after 3 attempts" in message
    kept = read_kept(fs, folder, "shard-00000")
    assert sorted(Path(r.source_uri).name for r in kept.records) == [
        "a.jpg",
        "b.jpg",
        "c.jpg",
        "d.png",
    ]
    assert kept.cost["wall_s"] > 0 and kept.cost["gpu_s"] > 0
    # not committed: no marker, no staged records, no failed try recorded yet
    assert caption_markers(root, "r1", cfg.s3) == {}
    assert staged_records(root, "r1", cfg.s3).num_rows == 0
    assert attempt_counts(root, cfg.s3) == {}

    # still down: nothing new completes, no new partial, the kept samples are not redone
    servers.answered.clear()
    with pytest.raises(InfrastructureError, match=r"none of this try's .* \(4 kept in all\)"):
        caption_shard(cfg, root, "r1", shard, engine=servers.engine(cfg))
    assert servers.answered == []
    assert len(partial_paths(fs, folder, "shard-00000")) == 1

    servers.down.clear()
    engine = servers.engine(cfg)
    marker = caption_shard(cfg, root, "r1", shard, engine=engine)
    assert sorted(set(servers.answered)) == ["e.jpg", "f.jpg"]
    assert (marker["captioned"], marker["failed"], marker["resumed"]) == (5, 1, 4)
    staged = staged_records(root, "r1", cfg.s3)
    assert _names(staged) == ["a.jpg", "c.jpg", "d.png", "e.jpg", "f.jpg"]
    assert len(set(staged.column("asset_id").to_pylist())) == 5
    # b.jpg's one failed try in this run is recorded once: budget 2 is not used up
    assert list(attempt_counts(root, cfg.s3).values()) == [1]
    assert [r for r in read_rejects(root, cfg.s3) if r["stage"] == "caption"] == []
    assert partial_paths(fs, folder, "shard-00000") == []
    # the marker counts both tries that kept samples
    assert marker["wall_s"] == pytest.approx(
        kept.cost["wall_s"] + engine.last_cost.wall_s, abs=2e-3
    )
    assert marker["api_usd"] == pytest.approx(kept.cost["api_usd"] + engine.last_cost.api_usd)
    # every answered request: 10 prompt tokens (the scripted backend's usage)
    assert marker["tokens_prompt"] == 10 * (first_answers + len(servers.answered))
    # rerun after commit, even with a partial left by a crash before its removal: no work,
    # and the run's readers see the committed shard only
    write_partial(fs, folder, "shard-00000", kept.records, kept.cost)
    servers.answered.clear()
    assert caption_shard(cfg, root, "r1", shard, engine=engine) == marker
    assert servers.answered == []
    assert staged_records(root, "r1", cfg.s3).num_rows == 5
    assert list(caption_markers(root, "r1", cfg.s3)) == ["shard-00000"]

    # the next run retries b.jpg once more: its second try uses up the budget of 2
    ingest(cfg, run_id="r2")
    preprocess(cfg, run_id="r2", dask_address=dask_address)
    for other in plan_captions(cfg, root, "r2").shards:
        caption_shard(cfg, root, "r2", other, engine=servers.engine(cfg))
    rejects = [r for r in read_rejects(root, cfg.s3) if r["stage"] == "caption"]
    assert [Path(r["source_uri"]).name for r in rejects] == ["b.jpg"]
    assert "failed 2 time(s)" in rejects[0]["detail"]


def test_partial_on_s3(moto_s3: dict[str, str], tmp_path: Path, dask_address: str):
    import s3fs

    root = f"s3://capflow-test/partial-{uuid.uuid4().hex[:8]}"
    cfg, shard = _prepare(tmp_path, root, dask_address, "s1")
    servers = Servers(down={"c.jpg"})
    with pytest.raises(InfrastructureError, match="kept the 5 completed"):
        caption_shard(cfg, root, "s1", shard, engine=servers.engine(cfg))
    fresh = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_s3["AWS_ENDPOINT_URL"]})
    folder = captioned_dir(root, "s1").removeprefix("s3://")
    assert [p.rsplit("/", 1)[-1] for p in fresh.ls(folder)] == ["shard-00000.part-0.parquet"]

    servers.down.clear()
    servers.answered.clear()
    marker = caption_shard(cfg, root, "s1", shard, engine=servers.engine(cfg))
    assert set(servers.answered) == {"c.jpg"}
    assert (marker["captioned"], marker["resumed"]) == (6, 5)
    assert _names(staged_records(root, "s1", cfg.s3)) == sorted(NAMES)
    fresh.invalidate_cache()
    assert sorted(p.rsplit("/", 1)[-1] for p in fresh.ls(folder)) == [
        "shard-00000._CAPTIONED",
        "shard-00000.parquet",
    ]
