from __future__ import annotations

import time
from pathlib import Path

import pytest

from capflow_core.tiny_model import build_tiny_model, folder_revision, model_config

SPECIAL = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_build_is_fast_and_byte_identical(tiny_model_dir: Path, tmp_path: Path) -> None:
    start = time.perf_counter()
    again = build_tiny_model(tmp_path / "again")
    assert time.perf_counter() - start < 60
    first, second = _files(tiny_model_dir), _files(again)
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "processor_config.json",
        "chat_template.jinja",
    } <= set(first)
    assert sorted(first) == sorted(second)
    assert [n for n in first if first[n] != second[n]] == []
    assert folder_revision(tiny_model_dir) == folder_revision(again)
    assert not [p for p in tmp_path.iterdir() if p.name != "again"]  # no staging left behind


def test_rebuild_replaces_a_changed_folder_and_keeps_an_identical_one(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    target = tmp_path / "m"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    build_tiny_model(target)
    assert folder_revision(target) == folder_revision(tiny_model_dir)
    assert oct((target / "model.safetensors").stat().st_mode & 0o777) == "0o644"
    inode = (target / "model.safetensors").stat().st_ino
    build_tiny_model(target)
    assert (target / "model.safetensors").stat().st_ino == inode  # left in place


def test_folder_revision_tracks_names_and_contents(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.json").write_text("{}")
    (folder / "sub" / "w.bin").write_bytes(b"\x00\x01")
    base = folder_revision(folder)
    assert len(base) == 64 and folder_revision(folder) == base
    (folder / "sub" / "w.bin").write_bytes(b"\x00\x02")
    edited = folder_revision(folder)
    assert edited != base
    (folder / "sub" / "w.bin").rename(folder / "sub" / "v.bin")
    assert folder_revision(folder) not in (base, edited)
    # the same bytes split differently across files are a different folder
    other = tmp_path / "g"
    other.mkdir()
    (other / "a").write_bytes(b"xy")
    (other / "b").write_bytes(b"")
    split = folder_revision(other)
    (other / "a").write_bytes(b"x")
    (other / "b").write_bytes(b"y")
    assert folder_revision(other) != split
    with pytest.raises(NotADirectoryError):
        folder_revision(tmp_path / "missing")


def test_tiny_model_loads_with_auto_classes(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    tok = processor.tokenizer
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert all(tok.convert_tokens_to_ids(t) != tok.unk_token_id for t in SPECIAL)
    assert (tok.eos_token, tok.pad_token, tok.padding_side) == (
        "<|im_end|>",
        "<|endoftext|>",
        "left",
    )
    assert 500 <= len(tok) <= 1000 and model.config.text_config.vocab_size >= len(tok)
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert model.generation_config.do_sample is False
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert processor.image_processor.size["longest_edge"] == 112 * 112
    assert tok.decode(tok("a red bus near the tree").input_ids) == "a red bus near the tree"

    chat = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "describe"}],
        }
    ]
    text = processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in text
    assert "<|vision_start|><|video_pad|><|vision_end|>" in text
    assert text.endswith("describe<|im_end|>\n<|im_start|>assistant\n")

    inputs = processor(text=["a photo of a dog"], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=4)
    assert out.shape[1] > inputs["input_ids"].shape[1]


def test_7b_config_has_qwen25_vl_7b_shape(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = model_config("7b", tok)
    assert config.text_config.hidden_size == 3584 and config.vision_config.depth == 32
    assert config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    # Qwen/Qwen2.5-VL-7B-Instruct has 8,292,166,656 parameters
    assert sum(p.numel() for p in model.parameters()) == 8_292_166_656


def test_model_config_rejects_unknown_size(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    with pytest.raises(ValueError, match="unknown model size"):
        model_config("3b", AutoTokenizer.from_pretrained(tiny_model_dir))  # type: ignore[arg-type]
