"""Fine-tuning throughput: our ``train`` path against a plain PyTorch loop, and MFU.

Both runs start from the same random-weight Qwen2.5-VL (rebuilt from one seed on the
device, never downloaded), wrapped the same way (LoRA on the language model's attention
projections, or full), over the same synthetic batches from the same collator (noise images
at a pixel budget that makes each row exactly ``--seq`` tokens). Tokens/s is timed over the
steps after ``--warmup``. MFU = (4·N for LoRA, 6·N for full; N = model parameters;
recomputation not counted) × tokens/s / peak, the peak being a matmul loop measured in the
same run (bf16 on a GPU, fp32 on the CPU). Prints a table and writes JSON; never pass/fail.

Usage:
    python bench/finetune.py                                   # tiny model on the CPU
    python bench/finetune.py --device cuda --size 7b --gradient-checkpointing [--packing]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/finetune.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import write_json

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.9  # ours/plain tokens/s we aim for; stated, never asserted
SIZE_DEFAULTS = {"tiny": {"steps": 8, "warmup": 2}, "7b": {"steps": 20, "warmup": 5}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; size-dependent defaults are filled in after parsing."""
    p = argparse.ArgumentParser(
        prog="bench/finetune.py",
        description="Training tokens/s of capflow_core.training (Trainer + peft) next to a "
        "plain PyTorch loop on the same model and batches, with model-FLOPs utilisation.",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default: cpu")
    p.add_argument("--size", choices=["tiny", "7b"], default="tiny", help="default: tiny")
    p.add_argument("--batch", type=int, default=8, help="rows per step (default: 8)")
    p.add_argument("--seq", type=int, default=970, help="tokens per row (default: 970)")
    p.add_argument("--steps", type=int, help="timed steps (default: 8 tiny, 20 7b)")
    p.add_argument("--warmup", type=int, help="untimed first steps (default: 2 tiny, 5 7b)")
    p.add_argument("--method", choices=["lora", "full"], default="lora", help="default: lora")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations")
    p.add_argument(
        "--packing",
        action="store_true",
        help="each step's rows packed into one row without padding (both runs)",
    )
    p.add_argument("--peak-seconds", type=float, default=2.0, help="matmul peak loop length")
    p.add_argument(
        "--torch-threads", type=int, help="torch CPU threads (default: torch's own choice)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "results" / "finetune.json",
        help="the JSON file (default: bench/results/finetune.json)",
    )
    args = p.parse_args(argv)
    for key, value in SIZE_DEFAULTS[args.size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.size == "7b" and args.device != "cuda":
        p.error("--size 7b needs --device cuda")
    return args


def _run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import torch

    from bench._finetune_runs import build_model, make_examples, matmul_peak, run_ours, run_plain
    from bench._models import device_info
    from capflow_core.config_finetune import FinetuneConfig
    from capflow_core.training_model import Precision

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    load_before = round(os.getloadavg()[0], 2)
    cuda = args.device == "cuda"
    precision = Precision(
        args.device,
        bf16=cuda,
        gradient_checkpointing=args.gradient_checkpointing,
        packing=args.packing,
    )
    ft = FinetuneConfig(
        method=args.method,
        max_steps=args.warmup + args.steps,
        batch_size=args.batch,
        learning_rate=1e-4,
        warmup_ratio=0.0,
        max_length=args.seq,
        save_steps=10**9,  # no checkpoints inside the timed window
        seed=0,
        device=args.device,
        bf16=cuda,
        gradient_checkpointing=args.gradient_checkpointing,
        packing=args.packing,
    )
    peak = matmul_peak(args.device, cuda, args.peak_seconds)
    runs: dict[str, Any] = {}
    for name in ("ours", "plain"):
        model, processor, n_params = build_model(args.size, args.device, cuda, seed=0)
        examples = make_examples(processor, 2 * args.batch, args.seq)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        print(f"{name}: {ft.max_steps} steps of {args.batch} x {args.seq} tokens", flush=True)
        if name == "ours":
            res = run_ours(
                model, processor, examples, ft, precision, args.warmup, str(tmp / "ours")
            )
        else:
            res = run_plain(model, processor, examples, ft, precision, args.warmup)
        flops_per_token = (4 if args.method == "lora" else 6) * n_params
        res["mfu"] = flops_per_token * res["tokens_per_s"] / peak["flops_per_s"]
        if cuda:
            res["gpu_memory_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
        runs[name] = res
        del model, processor, examples
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    ratio = runs["ours"]["tokens_per_s"] / runs["plain"]["tokens_per_s"]
    settings = {
        **{k: getattr(args, k) for k in ("size", "device", "batch", "seq", "steps", "warmup")},
        "method": args.method,
        "gradient_checkpointing": args.gradient_checkpointing,
        "packing": args.packing,
        "dtype": "bfloat16" if cuda else "float32",
        "load_avg_1m_at_start": load_before,
    }
    return {
        "benchmark": "finetune_throughput",
        "settings": settings,
        "environment": device_info(args.device),
        "parameters": n_params,
        "flops_per_token": flops_per_token,
        "matmul_peak": peak,
        "runs": runs,
        "ratio_ours_over_plain": ratio,
        "target_ratio": TARGET_RATIO,
        "note": "tokens = non-pad input tokens (image tokens included); both runs use fused "
        "AdamW, grad-norm clipping at 1.0 and a loss.item() per step; MFU counts no "
        "recomputation",
    }


def table(payload: dict[str, Any]) -> str:
    """The printed table: one row per run, then the ratio and the peak."""
    head = (
        f"{'run':<6} {'timed steps':>11} {'s/step':>8} {'tokens/s':>10} {'MFU':>7} {'GPU GiB':>8}"
    )
    lines = [head, "-" * len(head)]
    for name, r in payload["runs"].items():
        mem = r.get("gpu_memory_peak_gib")
        lines.append(
            f"{name:<6} {r['timed_steps']:>11} {r['seconds_per_step']:>8.3f} "
            f"{r['tokens_per_s']:>10.1f} {r['mfu']:>7.2%} {'-' if mem is None else mem:>8}"
        )
    ratio = payload["ratio_ours_over_plain"]
    verdict = "met" if ratio >= TARGET_RATIO else "below"
    peak = payload["matmul_peak"]
    lines.append(f"ratio ours/plain: {ratio:.3f} (target >= {TARGET_RATIO}: {verdict})")
    lines.append(
        f"N = {payload['parameters']:,} parameters; {payload['flops_per_token']:,} FLOPs/token; "
        f"measured {peak['dtype']} matmul peak {peak['flops_per_s'] / 1e12:.3f} TFLOP/s "
        f"({peak['n']}^3)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and write the JSON; returns what was written."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="capflow-bench-ft-") as tmp:
        payload = _run(args, Path(tmp))
    env = payload["environment"]
    where = (
        f"CPU ({env['cpu_threads']} threads, load {payload['settings']['load_avg_1m_at_start']})"
    )
    if "gpu" in env:
        where = f"{env['gpu']} ({env['gpu_memory_gib']} GiB)"
    s = payload["settings"]
    print(
        f"\nFine-tuning throughput: {s['size']} model, {s['method']}, on {where}, batch "
        f"{s['batch']} x {s['seq']} tokens, {s['steps']} timed steps after {s['warmup']}"
        f"{', gradient checkpointing' if s['gradient_checkpointing'] else ''}"
    )
    print(table(payload))
    print(f"wrote {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
