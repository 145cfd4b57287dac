"""Sequence packing on the tiny Qwen2.5-VL: a packed row computes what the padded batch does."""

from __future__ import annotations

from pathlib import Path

import pytest

from capflow_core.training import train
from tests.capflow_core.test_training import _config, _examples


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.config.get_text_config().use_cache = False  # as in training (prepare_model)
    return model.eval(), processor


def test_packed_row_matches_padded_batch(tiny):
    import torch

    from capflow_core.training_collate import IGNORE, Collator
    from capflow_core.training_packing import PackedPositions

    model, processor = tiny
    examples = _examples()  # three images and a video
    padded = Collator(processor, 256)(examples)
    packed = Collator(processor, 256, PackedPositions(model.config))(examples)
    lengths = padded["attention_mask"].sum(dim=1).tolist()
    assert "attention_mask" not in packed and packed["input_ids"].shape == (1, sum(lengths))
    assert packed["position_ids"].shape == (4, 1, sum(lengths))
    # text positions restart at 0 for each example
    starts = (packed["position_ids"][0, 0] == 0).nonzero().flatten().tolist()
    assert starts == [sum(lengths[:i]) for i in range(len(lengths))]
    assert (packed["labels"] != IGNORE).sum() == (padded["labels"] != IGNORE).sum()
    with torch.no_grad():
        assert torch.allclose(model(**packed).loss, model(**padded).loss, atol=1e-5)
        row = model(**packed).logits[0]
        offset = 0
        for i, n in enumerate(lengths):  # no example sees another: same logits as alone
            alone = model(**Collator(processor, 256)([examples[i]])).logits[0]
            assert torch.allclose(row[offset : offset + n], alone, atol=1e-4), examples[i].id
            offset += n


def test_padded_batch_carries_media_positions(tiny):
    """The padded batch passes the token modalities, so the model builds 3-D positions for
    media tokens; without them it would fall back to 1-D positions (a different loss)."""
    import torch

    from capflow_core.training_collate import Collator

    model, processor = tiny
    batch = Collator(processor, 256)(_examples())
    types = batch["mm_token_type_ids"]
    assert set(types.unique().tolist()) == {0, 1, 2}
    flat = {k: v for k, v in batch.items() if k != "mm_token_type_ids"}
    with torch.no_grad():
        assert not torch.allclose(model(**batch).loss, model(**flat).loss, atol=1e-6)


def test_training_with_packing(tiny_model_dir: Path, tmp_path: Path):
    runs = {
        packing: train(
            _examples(),
            _examples()[:2],
            _config(max_steps=4, save_steps=50, packing=packing),
            tmp_path / str(packing),
            base_model=str(tiny_model_dir),
            logging_steps=1,
        )
        for packing in (True, False)
    }
    packed, padded = runs[True], runs[False]
    assert packed.hyperparameters["packing"] is True and padded.hyperparameters["packing"] is False
    assert packed.steps == 4 and all(loss == loss for loss in packed.losses)
    # the same examples, the same real tokens counted, the same losses step by step
    assert packed.train_tokens == padded.train_tokens
    assert packed.losses == pytest.approx(padded.losses, rel=1e-3)
    assert packed.eval_loss == pytest.approx(padded.eval_loss, rel=1e-3)
