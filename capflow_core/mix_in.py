"""Other instruction data mixed into MetaCaptioner's training, as the paper mixes VQA data.

The file is a LLaVA-style JSON list (or JSONL) of records with ``id``, ``image`` (a path
relative to the file, or an absolute path / URI) and ``conversations``; the first human
turn (its ``<image>`` token removed) and the gpt turn after it make the example. Images
are read and re-encoded to JPEG within ``preprocess.max_pixels``. Records that cannot be
used (no image, several images, no human/gpt pair, unreadable image) are counted by reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import posixpath
import random
from typing import Any

from capflow_core.config import Config
from capflow_core.errors import ConfigError
from capflow_core.storage import filesystem
from capflow_core.training_examples import Example

log = logging.getLogger(__name__)


def _records(path: str, cfg: Config) -> tuple[list[dict[str, Any]], Any, str]:
    """The file's records, its filesystem and its folder."""
    fs, where = filesystem(path, cfg.s3)
    try:
        text = fs.cat_file(where).decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"finetune.mix_in: cannot read {path} ({err}); fix the path") from None
    try:
        if text.lstrip().startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as err:
        raise ConfigError(f"finetune.mix_in: {path} is not JSON or JSONL: {err}") from None
    if not all(isinstance(r, dict) for r in records):
        raise ConfigError(f"finetune.mix_in: {path} must hold a list of JSON objects")
    return records, fs, posixpath.dirname(where)


def _turns(record: dict[str, Any]) -> tuple[str, str] | None:
    turns = record.get("conversations") or []
    for i, turn in enumerate(turns[:-1]):
        if turn.get("from") == "human" and turns[i + 1].get("from") == "gpt":
            question = str(turn.get("value", "")).replace("<image>", "").strip()
            return question, str(turns[i + 1].get("value", "")).strip()
    return None


def _jpeg(data: bytes, cfg: Config) -> bytes:
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    w, h, budget = *image.size, cfg.preprocess.max_pixels
    if w * h > budget:
        scale = (budget / (w * h)) ** 0.5
        image = image.resize((max(1, int(w * scale)), max(1, int(h * scale))))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=cfg.preprocess.jpeg_quality)
    return buf.getvalue()


def _example(
    index: int, record: dict[str, Any], fs: Any, folder: str, cfg: Config
) -> Example | str:
    """The example of one record, or the reason it cannot be used."""
    image, turns = record.get("image"), _turns(record)
    if not image:
        return "mix_in_no_image"
    if not isinstance(image, str):
        return "mix_in_unsupported"
    if turns is None or not all(turns):
        return "mix_in_malformed"
    try:
        if "://" in image:
            img_fs, img_path = filesystem(image, cfg.s3)
            data = img_fs.cat_file(img_path)
        else:
            data = fs.cat_file(posixpath.normpath(posixpath.join(folder, image)))
        jpeg = _jpeg(data, cfg)
    except Exception as err:  # missing file, or PIL's many kinds of undecodable bytes
        log.warning("mix-in record %s: image %s unreadable: %s", index, image, err)
        return "mix_in_unreadable"
    return Example(
        id=f"mix_in:{record.get('id', index)}",
        asset_id=hashlib.sha256(jpeg).hexdigest(),
        modality="image",
        instruction=turns[0],
        caption=turns[1],
        image=jpeg,
        source="mix_in",
    )


def load_mix_in(path: str, cfg: Config) -> list[Example]:
    """Every usable record of a LLaVA-style JSON/JSONL file as an image Example.

    Raises:
        ConfigError: the file cannot be read or is not a JSON list / JSONL of objects.
    """
    records, fs, folder = _records(path, cfg)
    out, skipped = [], {}
    for i, record in enumerate(records):
        got = _example(i, record, fs, folder, cfg)
        if isinstance(got, str):
            skipped[got] = skipped.get(got, 0) + 1
        else:
            out.append(got)
    if skipped:
        log.warning("mix-in %s: records left out: %s", path, skipped)
    return out


def sample_mix_in(path: str, cfg: Config, n: int, skipped: dict[str, int]) -> list[Example]:
    """``n`` mix-in examples drawn in a seeded order (``finetune.seed``), loading only those
    drawn; records are repeated (ids suffixed ``#k``) when the file holds fewer than ``n``.

    Args:
        path: the mix-in file.
        cfg: the configuration.
        n: how many examples.
        skipped: reason -> count, incremented for each unusable record met.
    """
    records, fs, folder = _records(path, cfg)
    order = list(range(len(records)))
    random.Random(cfg.finetune.seed).shuffle(order)
    loaded: dict[int, Example | str] = {}
    out: list[Example] = []
    repeat = 0
    while len(out) < n:
        before = len(out)
        for i in order:
            if len(out) == n:
                break
            if i not in loaded:
                loaded[i] = _example(i, records[i], fs, folder, cfg)
                if isinstance(loaded[i], str):
                    skipped[loaded[i]] = skipped.get(loaded[i], 0) + 1
            ex = loaded[i]
            if isinstance(ex, Example):
                out.append(dataclasses.replace(ex, id=f"{ex.id}#{repeat}") if repeat else ex)
        if len(out) == before:
            break  # no usable record at all
        repeat += 1
    return out
