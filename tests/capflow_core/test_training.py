"""MetaCaptioner fine-tuning on the tiny Qwen2.5-VL on the CPU: collator, loss, reload, resume."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from capflow_core.config import PACKAGED_CONFIG_DIR, Config, load_config
from capflow_core.training import TrainResult, last_checkpoint, load_finetuned, train
from capflow_core.training_examples import Example

REPO = Path(__file__).resolve().parents[2]


def _jpeg(colour: tuple[int, int, int], text: str = "", size: tuple[int, int] = (96, 80)) -> bytes:
    img = Image.new("RGB", size, colour)
    if text:
        ImageDraw.Draw(img).text((8, 30), text, fill=(255 - colour[0], 255, 255 - colour[2]))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _examples() -> list[Example]:
    out = [
        Example(f"e{i}", f"a{i}", "image", "Describe this image in detail.", caption, _jpeg(c, t))
        for i, (c, t, caption) in enumerate(
            [
                ((220, 30, 30), "SALE", "A red poster with the word SALE in white."),
                ((30, 160, 40), "", "A plain green square."),
                ((20, 40, 200), "42", "The number 42 on a blue background."),
            ]
        )
    ]
    frames = [_jpeg((40 * i, 40 * i, 90)) for i in range(4)]
    out.append(
        Example(
            "v0",
            "v0",
            "video",
            "Describe this video.",
            "A dark scene slowly brightens.",
            frames=frames,
            duration_s=2.0,
        )
    )
    return out


def _config(**finetune: Any) -> Config:
    base = {"learning_rate": 5e-3, "batch_size": 4, "warmup_ratio": 0.0, "max_length": 256}
    return load_config(
        PACKAGED_CONFIG_DIR / "tiny.yaml", overrides={"finetune": {**base, **finetune}}
    )


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    out = tmp_path_factory.mktemp("finetune")
    cfg = _config(max_steps=20, save_steps=50)
    logs: list[dict] = []
    result = train(
        _examples(),
        _examples()[:2],
        cfg,
        out,
        base_model=str(tiny_model_dir),
        on_log=logs.append,
        logging_steps=1,
    )
    assert [r["step"] for r in logs] == list(range(1, 21))
    assert all(r["tokens_per_s"] > 0 and r["learning_rate"] is not None for r in logs)
    return result


def test_collator_supervises_only_the_caption_and_keeps_media(tiny_model_dir: Path):
    from transformers import AutoProcessor

    from capflow_core.training_collate import IGNORE, Collator

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    tok = processor.tokenizer
    image_pad, video_pad = (
        tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>")
    )
    examples = _examples()
    batch = Collator(processor, 256)(examples)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["image_grid_thw"].shape[0] == 3 and batch["video_grid_thw"].shape[0] == 1
    for i, example in enumerate(examples):
        labels = batch["labels"][i]
        assert tok.decode(labels[labels != IGNORE]) == example.caption + "<|im_end|>"
        assert (labels[batch["attention_mask"][i] == 0] == IGNORE).all()  # right padding
    # too short for the whole caption: its tail is dropped, every media token kept
    full = Collator(processor, 256).encode_one(examples[0])
    prompt_len = full.labels.count(IGNORE)
    cut = Collator(processor, prompt_len + 3).encode_one(examples[0])
    assert len(cut.input_ids) == prompt_len + 3
    assert cut.input_ids.count(image_pad) == full.input_ids.count(image_pad) > 0
    assert [t for t in cut.labels if t != IGNORE] == full.labels[prompt_len : prompt_len + 3]
    video = Collator(processor, 256).encode_one(examples[3])
    assert video.input_ids.count(video_pad) > 0
    # no room for a single caption token after the media: a clear error naming the example
    with pytest.raises(ValueError, match=r"example e0: .* max_length is"):
        Collator(processor, prompt_len).encode_one(examples[0])
    with pytest.raises(ValueError, match="example v0"):
        Collator(processor, video.labels.count(IGNORE)).encode_one(examples[3])


def test_loss_is_finite_and_falls_on_a_fixed_batch(trained: TrainResult):
    losses = trained.losses
    assert len(losses) == 20 and all(loss == loss and loss < 1e4 for loss in losses)
    assert losses[-1] < losses[0] - 0.3
    assert trained.steps == 20 and trained.eval_loss is not None and trained.eval_loss < losses[0]
    assert trained.train_tokens > 20 * 4 * 30 and trained.tokens_per_s > 0
    assert trained.resumed_from is None
    assert trained.hyperparameters["trainable_parameters"] < trained.hyperparameters["parameters"]


def test_same_seed_same_losses(tiny_model_dir: Path, tmp_path: Path):
    runs = [
        train(
            _examples(),
            [],
            _config(max_steps=3, save_steps=50, seed=7),
            tmp_path / str(i),
            base_model=str(tiny_model_dir),
            logging_steps=1,
        ).losses
        for i in range(2)
    ]
    assert runs[0] == runs[1] and len(runs[0]) == 3


def test_adapter_reloads_and_generates(trained: TrainResult, tiny_model_dir: Path):
    import torch

    from capflow_core.backends.transformers_batch import encode
    from capflow_core.training_collate import request_for

    adapter = Path(trained.adapter_dir)
    assert (adapter / "adapter_config.json").is_file()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 16
    model, processor = load_finetuned(str(tiny_model_dir), str(adapter))
    inputs = encode(processor, [request_for(_examples()[0])], "cpu")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    # the adapter changed the model: its logits differ from the base model's
    base, _ = load_finetuned(str(tiny_model_dir), None)
    with torch.inference_mode():
        assert not torch.allclose(model(**inputs).logits, base(**inputs).logits)


_CHILD = """
import sys, time
from tests.capflow_core.test_training import _config, _examples
from capflow_core.training import train
train(_examples(), [], _config(max_steps=12, save_steps=2), sys.argv[1], base_model=sys.argv[2],
      on_log=lambda r: time.sleep(0.4), logging_steps=1)
"""


def test_killed_run_resumes_from_its_last_checkpoint(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    errors = (tmp_path / "child.err").open("wb")
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(out), str(tiny_model_dir)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=errors,
    )
    try:
        deadline = time.monotonic() + 60
        while last_checkpoint(out / "checkpoints") is None:
            assert child.poll() is None, (tmp_path / "child.err").read_text()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
        errors.close()
    assert child.returncode == -signal.SIGKILL
    checkpoint = last_checkpoint(out / "checkpoints")
    assert checkpoint is not None and not (out / "adapter").exists()
    assert int(checkpoint.rsplit("-", 1)[1]) < 12
    result = train(
        _examples(),
        [],
        _config(max_steps=12, save_steps=2),
        out,
        base_model=str(tiny_model_dir),
        resume=True,
    )
    assert result.resumed_from == checkpoint
    assert result.steps == 12 and (out / "adapter" / "adapter_config.json").is_file()
    done = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert done == ["checkpoint-10", "checkpoint-12"]  # the last two kept


def test_full_fine_tuning_saves_a_model(tiny_model_dir: Path, tmp_path: Path):
    cfg = _config(method="full", max_steps=2, save_steps=50, learning_rate=1e-4)
    result = train(_examples(), [], cfg, tmp_path, base_model=str(tiny_model_dir))
    model_dir = Path(result.adapter_dir)
    assert model_dir == tmp_path / "model" and result.steps == 2
    assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
    assert not (model_dir / "adapter_config.json").exists()
    trainable = result.hyperparameters["trainable_parameters"]
    assert trainable < result.hyperparameters["parameters"]  # the vision tower stays frozen
    model, _ = load_finetuned(str(tiny_model_dir), str(model_dir))
    assert model.config.model_type == "qwen2_5_vl"
