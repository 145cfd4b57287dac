"""The fine-tuning benchmark, run for real at a tiny size on the CPU (timings not checked)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bench._finetune_runs import build_model, make_examples
from bench.finetune import main, parse_args
from capflow_core.training_collate import IGNORE, Collator


def test_smoke_writes_both_runs_ratio_and_mfu(tmp_path: Path):
    out = tmp_path / "finetune.json"
    argv = ["--batch", "2", "--seq", "128", "--steps", "2", "--warmup", "1"]
    payload = main([*argv, "--peak-seconds", "0.2", "--torch-threads", "2", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(payload))
    assert data["settings"]["method"] == "lora" and data["settings"]["dtype"] == "float32"
    assert data["flops_per_token"] == 4 * data["parameters"]
    peak = data["matmul_peak"]["flops_per_s"]
    assert peak > 0
    for name in ("ours", "plain"):
        run = data["runs"][name]
        assert run["total_steps"] == 3 and run["timed_steps"] == 2
        assert run["timed_tokens"] == 2 * 2 * 128  # every row is exactly --seq tokens
        assert run["tokens_per_s"] == pytest.approx(run["timed_tokens"] / run["timed_seconds"])
        assert run["mfu"] == pytest.approx(data["flops_per_token"] * run["tokens_per_s"] / peak)
        assert len(run["losses"]) == 3 and all(math.isfinite(x) for x in run["losses"])
    ours, plain = data["runs"]["ours"], data["runs"]["plain"]
    assert data["ratio_ours_over_plain"] == ours["tokens_per_s"] / plain["tokens_per_s"]


def test_same_model_for_both_runs_and_rows_of_exactly_seq_tokens():
    first, processor, n = build_model("tiny", "cpu", bf16=False, seed=0)
    second, _, _ = build_model("tiny", "cpu", bf16=False, seed=0)
    assert n == sum(p.numel() for p in first.parameters())
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    examples = make_examples(processor, 3, 200)
    batch = Collator(processor, 200)(examples)
    assert batch["input_ids"].shape == (3, 200) and bool(batch["attention_mask"].all())
    for row in batch["labels"]:
        supervised = int((row != IGNORE).sum())
        assert 0 < supervised < 200 * 0.3  # mostly image tokens, then the caption
    with pytest.raises(ValueError, match="too short"):
        make_examples(processor, 1, 40)


def test_7b_needs_a_gpu():
    with pytest.raises(SystemExit):
        parse_args(["--size", "7b"])
    args = parse_args(["--device", "cuda", "--size", "7b"])
    assert (args.steps, args.warmup, args.batch, args.seq) == (20, 5, 8, 970)
