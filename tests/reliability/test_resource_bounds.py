"""Resource bounds: every configured bound turns an oversized input or a runaway call into a
recorded item error or rejection with its reason, never a crash or a hang.

Media bounds go through ``load_media`` (the engine's path), ``prepare_item`` and the
preprocess stage on a real Dask cluster; call bounds through the engine with the scripted
backend (control flow) and the tiny model in process (the real runtime).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from capflow_core.backends.base import GenRequest, GenResult, ImagePart, Message
from capflow_core.config import PACKAGED_CONFIG_DIR, Config, load_config
from capflow_core.engine import CapFlow
from capflow_core.errors import ItemError
from capflow_core.media import load_media
from capflow_core.prepare import PreparedItem, Rejection, prepare_item
from capflow_core.sample_media import write_video
from tests.capflow_core.fakes import ScriptedBackend, default_reply

pytestmark = pytest.mark.timeout(300)

SMALL = {"preprocess": {"min_short_edge": 16, "min_video_height": 16}}


def config(model_dir: Path | None = None, **sections: dict) -> Config:
    overrides: dict = {**SMALL, **sections}
    if model_dir is not None:
        spec = {"model": str(model_dir), "build_tiny": False}
        overrides["models"] = {"vlm": spec, "llm": spec, "judge": spec}
    return load_config(PACKAGED_CONFIG_DIR / "tiny.yaml", overrides=overrides)


def clip(path: Path, seconds: float, fps: int = 5, size: tuple[int, int] = (64, 48)) -> str:
    w, h = size
    frames = (np.full((h, w, 3), (i * 23) % 255, np.uint8) for i in range(int(seconds * fps)))
    return str(write_video(path, frames, fps))


def picture(path: Path, side: int, noise: bool = False) -> str:
    rng = np.random.default_rng(side)
    pixels = rng.integers(0, 255, (side, side, 3), dtype=np.uint8) if noise else None
    image = Image.fromarray(pixels) if noise else Image.new("RGB", (side, side), (40, 90, 160))
    image.save(path)
    return str(path)


def flow(vlm: ScriptedBackend, cfg: Config) -> CapFlow:
    llm = ScriptedBackend(model_id="fake-llm")
    return CapFlow(cfg, backends={"vlm": vlm, "llm": llm, "judge": vlm, "eval_judge": vlm})


def load_error(source: str, cfg: Config) -> ItemError:
    with pytest.raises(ItemError) as err:
        load_media(source, cfg)
    return err.value


# --- media -------------------------------------------------------------------------------


def test_video_over_max_duration_is_an_item_error_and_the_batch_goes_on(tmp_path: Path):
    long = clip(tmp_path / "long.mp4", seconds=4)
    image = picture(tmp_path / "ok.png", 96)
    assert load_media(long, config(video={"max_duration_s": 10})).duration_s == pytest.approx(
        4, 0.1
    )

    cfg = config(video={"max_duration_s": 2})
    err = load_error(long, cfg)
    assert (err.stage, err.code) == ("load", "too_long")
    assert "video.max_duration_s=2" in str(err) and "4.0 s" in str(err)

    vlm = ScriptedBackend()
    bad, good = flow(vlm, cfg).caption([long, image])
    assert list(bad.errors) == ["load"] and bad.errors["load"].startswith("too_long:")
    assert bad.caption is None and good.ok and not good.errors
    assert len(vlm.requests) == 5  # route, 3 agents, judge: all for the image


@pytest.mark.parametrize("sampler", ["pyav", "decord"])
@pytest.mark.parametrize(
    ("bound", "code"),
    [
        ({"max_pixels": 64 * 48 - 1}, "frame_too_large"),
        ({"max_bytes": "size-1"}, "file_too_large"),
        ({"decode_timeout_s": 1e-9}, "decode_timeout"),
    ],
)
def test_video_bounds_reject_before_or_while_decoding(
    tmp_path: Path, sampler: str, bound: dict, code: str
):
    path = clip(tmp_path / "clip.mp4", seconds=2)
    size = Path(path).stat().st_size
    video = {"sampler": sampler} | {k: size - 1 if v == "size-1" else v for k, v in bound.items()}
    assert load_media(path, config(video={"sampler": sampler})).modality == "video"
    err = load_error(path, config(video=video))
    assert (err.stage, err.code) == ("load", code)
    assert f"video.{next(iter(bound))}=" in str(err)
    if code == "file_too_large":  # the bytes path checks before writing the video anywhere
        with pytest.raises(ItemError, match="file_too_large"):
            load_media(Path(path).read_bytes(), config(video=video))


def test_image_over_max_pixels_or_max_bytes_is_rejected_with_its_reason(tmp_path: Path):
    big = picture(tmp_path / "big.png", 700)  # 490,000 pixels, a few kB
    heavy = picture(tmp_path / "heavy.png", 300, noise=True)  # ~270 kB
    both = config(image={"max_pixels": 400_000, "max_bytes": 100_000})
    assert isinstance(prepare_item({"source_uri": big}, config()), PreparedItem)
    assert isinstance(prepare_item({"source_uri": heavy}, config()), PreparedItem)

    pixels = prepare_item({"source_uri": big}, both)
    assert isinstance(pixels, Rejection) and pixels.reason_code == "decompression_bomb"
    assert "image.max_pixels=400000" in pixels.detail
    weight = prepare_item({"source_uri": heavy}, both)
    assert isinstance(weight, Rejection) and weight.reason_code == "file_too_large"
    assert "image.max_bytes=100000" in weight.detail and weight.asset_id
    assert load_error(Path(heavy).read_bytes(), both).code == "file_too_large"


def test_video_prepare_rejects_a_long_video(tmp_path: Path):
    long = clip(tmp_path / "long.mp4", seconds=4)
    assert isinstance(prepare_item({"source_uri": long}, config()), PreparedItem)
    out = prepare_item({"source_uri": long}, config(video={"max_duration_s": 2}))
    assert isinstance(out, Rejection) and out.reason_code == "too_long"
    assert out.detail.startswith(long)


def test_preprocess_rejects_oversize_objects_without_reading_them(
    tmp_path: Path, dask_address: str
):
    from capflow_core.run_outcome import read_rejects
    from tasks.ingest import ingest
    from tasks.preprocess import preprocess

    src = tmp_path / "src"
    src.mkdir()
    picture(src / "ok.png", 64)
    picture(src / "heavy.png", 300, noise=True)  # over image.max_bytes, under video.max_bytes
    picture(src / "huge.png", 600, noise=True)  # over both: never downloaded
    clip(src / "long.mp4", seconds=4)
    root = str(tmp_path / "root")
    cfg = config(
        storage={"root": root},
        sources=[{"uri": str(src)}],
        image={"max_bytes": 100_000},
        video={"max_bytes": 600_000, "max_duration_s": 2},
    )
    assert ingest(cfg, run_id="r1").pending == 4
    result = preprocess(cfg, root=root, dask_address=dask_address)
    assert result.reconciled and (result.prepared, result.rejected) == (1, 3)
    assert result.reasons == {"file_too_large": 2, "too_long": 1}
    rejects = {Path(r["source_uri"]).name: r for r in read_rejects(root, cfg.s3, "r1")}
    assert rejects["huge.png"]["asset_id"] is None and "not read" in rejects["huge.png"]["detail"]
    assert rejects["heavy.png"]["asset_id"] and "image.max_bytes" in rejects["heavy.png"]["detail"]
    assert rejects["long.mp4"]["reason_code"] == "too_long"


# --- calls: control flow with the scripted backend ---------------------------------------


def test_completion_bound_clamps_every_request_and_rejects_longer_replies(tmp_path: Path):
    image = picture(tmp_path / "a.png", 96)
    cfg = config(generation={"max_tokens_cap": None, "max_completion_tokens": 16})
    vlm = ScriptedBackend()
    (rec,) = flow(vlm, cfg).caption([image])
    assert rec.ok and vlm.requests
    free_text = [r.max_tokens for r in vlm.requests if r.constraint is None]
    assert len(free_text) == 3 and max(free_text) == 16  # the agents ask for 384..768

    def runaway(request: GenRequest) -> str | GenResult:  # a server that ignores max_tokens
        if request.tag.startswith("agent"):
            return GenResult("word " * 40, prompt_tokens=10, completion_tokens=40)
        return default_reply(request)

    (rec,) = flow(ScriptedBackend(runaway), cfg).caption([image])
    assert "reply_too_long" in rec.errors["agents"] and rec.caption is None
    assert "generation.max_completion_tokens=16" in rec.errors["agents"]
    assert rec.failure() == ("agents", "reply_too_long")  # the reject's reason code


def test_prompt_over_the_bound_is_an_item_error_never_truncated(tmp_path: Path):
    """The summary's prompt is built from the agents' reports; over the bound, the sample is
    rejected for this run (retried later) rather than captioned from cut evidence."""
    image = picture(tmp_path / "a.png", 96)

    def long_summary(request: GenRequest) -> str | GenResult:
        if request.tag.startswith("summary"):
            return GenResult("caption", prompt_tokens=5000, completion_tokens=3)
        return default_reply(request)

    llm = ScriptedBackend(long_summary, model_id="fake-llm")
    vlm = ScriptedBackend()
    cfg = config(generation={"max_prompt_tokens": 4096})
    backends = {"vlm": vlm, "llm": llm, "judge": vlm, "eval_judge": vlm}
    (rec,) = CapFlow(cfg, backends=backends).caption([image])
    assert list(rec.errors) == ["summary"] and rec.caption is None
    assert "prompt_too_long: 5000 prompt tokens" in rec.errors["summary"]
    assert "generation.max_prompt_tokens=4096" in rec.errors["summary"]
    assert "judge" not in vlm.tags()  # nothing after the failed call
    assert rec.failure() == ("summary", "prompt_too_long")


class _SlowFor(ScriptedBackend):
    """Hangs (until cancelled) on requests about one image size."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.cancelled = 0

    async def _one(self, request: GenRequest) -> GenResult:
        media = request.messages[-1].content[0]
        if isinstance(media, ImagePart) and media.image.width == self.width:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return await super()._one(request)


def test_sample_wall_clock_bound_cancels_a_hung_sample_and_the_batch_goes_on(tmp_path: Path):
    hung, fine = picture(tmp_path / "hung.png", 97), picture(tmp_path / "fine.png", 96)
    vlm = _SlowFor(width=97)
    started = time.monotonic()
    slow, ok = flow(vlm, config(generation={"sample_timeout_s": 1.0})).caption([hung, fine])
    assert time.monotonic() - started < 30
    assert list(slow.errors) == ["route"] and slow.errors["route"].startswith("timeout:")
    assert "generation.sample_timeout_s=1" in slow.errors["route"]
    assert slow.failure() == ("route", "timeout")
    assert ok.ok and not ok.errors and vlm.cancelled == 1 and vlm.in_flight == 0


# --- calls: the real runtime (tiny model in process) -------------------------------------


def _req(*parts: object, max_tokens: int) -> GenRequest:
    return GenRequest(
        [Message("system", ["You are a helpful assistant."]), Message("user", list(parts))],
        max_tokens=max_tokens,
    )


@pytest.fixture(scope="module")
def tiny_backend(tiny_model_dir: Path):
    from capflow_core.backends.transformers_backend import TransformersBackend
    from capflow_core.config import TransformersModel

    spec = TransformersModel(backend="transformers", model=str(tiny_model_dir), dtype="float32")
    return TransformersBackend(spec)


def test_in_process_prompt_bound_rejects_the_long_row_only(tiny_backend):
    image = ImagePart(Image.new("RGB", (96, 96), (200, 30, 30)))
    report = "The agent saw a red square. " * 60  # e.g. a huge OCR text or agent report
    tiny_backend.set_bounds(max_prompt_tokens=256, request_timeout_s=60)
    long, short = asyncio.run(
        tiny_backend.generate([_req(image, report, max_tokens=4), _req("Hi", max_tokens=4)])
    )
    assert long.error and long.error.startswith("prompt_too_long:") and long.prompt_tokens > 256
    assert long.completion_tokens == 0 and not long.text
    assert short.error is None and 0 < short.prompt_tokens <= 256 and short.completion_tokens
    tiny_backend.set_bounds(max_prompt_tokens=4096, request_timeout_s=60)
    (again,) = asyncio.run(tiny_backend.generate([_req(image, report, max_tokens=4)]))
    assert again.error is None and again.prompt_tokens > 256


def test_in_process_request_timeout_is_an_item_error_and_the_backend_goes_on(tiny_backend):
    tiny_backend.set_bounds(max_prompt_tokens=4096, request_timeout_s=1e-6)
    (late,) = asyncio.run(tiny_backend.generate([_req("Tell a story.", max_tokens=64)]))
    assert late.error and late.error.startswith("timeout:") and not late.text
    assert "generation.request_timeout_s" in late.error
    tiny_backend.set_bounds(max_prompt_tokens=4096, request_timeout_s=60)
    (fine,) = asyncio.run(tiny_backend.generate([_req("Tell a story.", max_tokens=8)]))
    assert fine.error is None and fine.completion_tokens > 0


def test_engine_on_the_tiny_model_keeps_every_reply_within_the_completion_bound(
    tiny_model_dir: Path, tmp_path: Path
):
    images = [picture(tmp_path / "a.png", 96), picture(tmp_path / "b.png", 80)]
    gen = {"max_tokens_cap": None, "max_completion_tokens": 16}
    records = CapFlow(config(tiny_model_dir, generation=gen)).caption(images)
    agents = [a for r in records for a in r.agents]
    assert all(r.ok for r in records), [r.errors for r in records]
    assert agents and all(0 < a.completion_tokens <= 16 for a in agents)
    assert max(a.completion_tokens for a in agents) == 16  # the bound bit: they ran on


def test_engine_on_the_tiny_model_records_request_timeouts_and_finishes(
    tiny_model_dir: Path, tmp_path: Path
):
    images = [picture(tmp_path / "a.png", 96), picture(tmp_path / "b.png", 80)]
    cfg = config(tiny_model_dir, generation={"request_timeout_s": 1e-6})
    records = CapFlow(cfg).caption(images)
    assert len(records) == 2
    for rec in records:
        assert rec.caption is None and list(rec.errors) == ["route"]
        assert "timeout" in rec.errors["route"], rec.errors


def test_runner_stops_rows_whose_caller_left(tiny_model_dir: Path):
    from capflow_core.backends.transformers_runner import RunBounds, Runner

    runner = Runner.load(str(tiny_model_dir), None, "cpu", "float32")
    request = _req("Tell a story.", max_tokens=48)
    (kept,) = runner.run([request], RunBounds())
    (left,) = runner.run([request], RunBounds(gone=lambda _r: True))
    assert kept.completion_tokens > 1 and left.completion_tokens == 1
