"""A tiny random-weight Qwen2.5-VL built offline in seconds, and model configs of real shape.

Tests and the demo run on it (nothing can be downloaded here); a GPU benchmark builds the
7B-shaped config with random weights in memory. The build is deterministic, so the folder's
:func:`folder_revision` is a stable model revision for fingerprints.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, PreTrainedTokenizerBase

SEED = 1234
IMAGE_MIN_PIXELS, IMAGE_MAX_PIXELS = 56 * 56, 112 * 112
VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS = 56 * 56, 84 * 84

# Qwen/Qwen2.5-VL-7B-Instruct config.json (text and vision towers), minus token ids.
_7B_TEXT = dict(
    vocab_size=152064,
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    max_position_embeddings=128000,
    rms_norm_eps=1e-6,
    use_sliding_window=False,
    sliding_window=32768,
    max_window_layers=28,
    rope_parameters={
        "rope_type": "default",
        "rope_theta": 1000000.0,
        "mrope_section": [16, 24, 24],
    },
)
_7B_VISION = dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    out_hidden_size=3584,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[7, 15, 23, 31],
    tokens_per_second=2,
    hidden_act="silu",
)
_TINY_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rms_norm_eps=1e-6,
    use_sliding_window=False,
    max_window_layers=2,
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
)
_TINY_VISION = dict(
    depth=2,
    hidden_size=64,
    intermediate_size=128,
    num_heads=4,
    out_hidden_size=64,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[1],
    tokens_per_second=2,
    hidden_act="silu",
)


def model_config(
    size: Literal["tiny", "7b"], tokenizer: PreTrainedTokenizerBase
) -> PreTrainedConfig:
    """A Qwen2.5-VL config of the given shape, with the special-token ids of ``tokenizer``.

    Args:
        size: ``"tiny"`` (~0.4M parameters, the offline test model) or ``"7b"``
            (Qwen2.5-VL-7B-Instruct's shape, ~8.3B parameters; build it on ``meta`` or a GPU).
        tokenizer: a tokenizer holding the Qwen special tokens (e.g. the tiny one).

    Returns:
        A ``Qwen2_5_VLConfig``; the tiny vocabulary is the tokenizer's rounded up to 64.
    """
    from transformers import Qwen2_5_VLConfig

    if size not in ("tiny", "7b"):
        raise ValueError(f"unknown model size {size!r}; expected 'tiny' or '7b'")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")}
    text = copy.deepcopy(_7B_TEXT if size == "7b" else _TINY_TEXT)  # configs edit nested dicts
    if size == "tiny":
        # logits wider than the tokenizer, as in Qwen (xgrammar must be told the width)
        text["vocab_size"] = -(-len(tokenizer) // 64) * 64
    text.update(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=copy.deepcopy(_7B_VISION if size == "7b" else _TINY_VISION),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )


def build_processor(tokenizer: PreTrainedTokenizerBase) -> Any:
    """Qwen2.5-VL's processor around ``tokenizer`` with a tiny pixel budget."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    images = Qwen2VLImageProcessor(min_pixels=IMAGE_MIN_PIXELS, max_pixels=IMAGE_MAX_PIXELS)
    videos = Qwen2VLVideoProcessor(
        min_pixels=VIDEO_MIN_PIXELS,
        max_pixels=VIDEO_MAX_PIXELS,
        cap_pixels_per_frame=True,
        max_video_tokens=1024,
    )
    return Qwen2_5_VLProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        video_processor=videos,
        chat_template=tokenizer.chat_template,
    )


def build_tiny_model(out_dir: str | os.PathLike[str]) -> Path:
    """Write the tiny random-weight Qwen2.5-VL (model, tokenizer, processor) to ``out_dir``.

    The same call always writes byte-identical files. The folder is written next to its
    final place and renamed in, so a crash never leaves a half-built model behind, and an
    identical folder already there is left untouched (a reader of it is never disturbed).

    Args:
        out_dir: the folder to create (replaced if it exists and differs).

    Returns:
        The folder, loadable with ``AutoProcessor`` / ``AutoModelForImageTextToText``.
    """
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    from capflow_core.tiny_tokenizer import train_tokenizer

    out = Path(out_dir).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    config = model_config("tiny", tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        do_sample=False,
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=[config.text_config.eos_token_id, config.text_config.pad_token_id],
        pad_token_id=config.text_config.pad_token_id,
    )
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging)
        build_processor(tokenizer).save_pretrained(staging)
        for path in [staging, *staging.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # mkdtemp and safetensors use 0o600
        if out.is_dir() and folder_revision(out) == folder_revision(staging):
            shutil.rmtree(staging)
            return out
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def folder_revision(path: str | os.PathLike[str]) -> str:
    """The revision of a local model folder: sha256 over its sorted relative paths and bytes.

    Args:
        path: a model folder.

    Returns:
        64 hex digits; any renamed, added, removed or edited file changes it.

    Raises:
        NotADirectoryError: ``path`` is not a folder.
    """
    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"not a model folder: {root}")
    digest = hashlib.sha256()
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    for name in sorted(files):
        file, rel = files[name], name.encode()
        digest.update(len(rel).to_bytes(8, "big") + rel)
        digest.update(file.stat().st_size.to_bytes(8, "big"))
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
