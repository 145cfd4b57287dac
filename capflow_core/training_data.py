"""MetaCaptioner's training set from one dataset version (docs/paper.md, "MetaCaptioner").

Accepted captions only; captions written by a fine-tuned captioner (``captioner`` starting
with :data:`FINETUNED_PREFIX`) are left out unless ``finetune.allow_self_training``. The
held-out split is by asset-id hash (:func:`is_held_out`), so it is the same in every
version and a held-out asset never reaches training. Media are the prepared JPEGs of the
run that prepared each asset (``assets.pending_run``, else the caption's run). Every
caption left out is counted by reason in :attr:`TrainingSet.skipped`, never dropped
silently. Optional mix-in data (:mod:`capflow_core.mix_in`) go to training only.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from typing import Any

from capflow_core.config import Config, S3Config
from capflow_core.errors import ConfigError
from capflow_core.mix_in import load_mix_in, sample_mix_in
from capflow_core.training_examples import Example, instruction_for, is_held_out

log = logging.getLogger(__name__)
__all__ = ["FINETUNED_PREFIX", "TrainingSet", "build_training_set", "held_out_ids", "load_mix_in"]

FINETUNED_PREFIX = "model:"
_COLUMNS = ["caption_id", "asset_id", "modality", "caption", "accepted", "captioner", "run_id"]
_REASONS = ("not_accepted", "self_trained", "media_missing", "media_corrupt", "held_out_over_cap")


@dataclass
class TrainingSet:
    """The examples of one dataset version: ``train`` and the held-out ``eval``.

    ``skipped`` counts captions (and mix-in records) left out, by reason; ``mixed_in`` is
    how many of ``train`` are mix-in examples.
    """

    version: int
    train: list[Example]
    eval: list[Example]
    skipped: dict[str, int] = field(default_factory=dict)
    mixed_in: int = 0

    def stats(self) -> dict[str, Any]:
        """Counts for logs and the ``models`` row: examples per split and modality, skips."""

        def videos(xs: list[Example]) -> int:
            return sum(x.modality == "video" for x in xs)

        return {
            "version": self.version,
            "train": len(self.train),
            "eval": len(self.eval),
            "train_videos": videos(self.train),
            "eval_videos": videos(self.eval),
            "mixed_in": self.mixed_in,
            "skipped": dict(sorted(self.skipped.items())),
        }


def _eligible(
    root: str, s3: S3Config, cfg: Config, version: int | None
) -> tuple[int, list[dict[str, Any]], dict[str, int]]:
    """The version read, its trainable caption rows (by asset id) and the skip counts."""
    from capflow_core.captions_store import latest_version, read_version

    if version is None:
        version = latest_version(root, s3)
        if version is None:
            raise ConfigError(f"no dataset version under {root}: run `capflow refresh` first")
    table = read_version(root, s3, version, _COLUMNS)
    skipped = dict.fromkeys(_REASONS, 0)
    rows = []
    for row in table.to_pylist():
        if not row["accepted"]:
            skipped["not_accepted"] += 1
        elif (row["captioner"] or "").startswith(FINETUNED_PREFIX) and not (
            cfg.finetune.allow_self_training
        ):
            skipped["self_trained"] += 1
        else:
            rows.append(row)
    return version, sorted(rows, key=lambda r: r["asset_id"]), skipped


def _eval_order(asset_id: str) -> str:
    return hashlib.sha256(b"capflow-eval-order:" + asset_id.encode()).hexdigest()


def _split(
    rows: list[dict[str, Any]], cfg: Config
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(train rows, eval rows capped at ``eval_max_samples``, held-out rows over the cap)."""
    pct = cfg.finetune.eval_percent
    held = sorted(
        (r for r in rows if is_held_out(r["asset_id"], pct)),
        key=lambda r: _eval_order(r["asset_id"]),
    )
    train = [r for r in rows if not is_held_out(r["asset_id"], pct)]
    cap = cfg.finetune.eval_max_samples
    return train, held[:cap], max(0, len(held) - cap)


def held_out_ids(root: str, s3: S3Config, cfg: Config, version: int | None = None) -> list[str]:
    """The eval split's asset ids at ``version`` (None: the latest).

    The trainable captions (accepted; not self-trained unless allowed) whose asset is held
    out, in a fixed hash order, capped at ``finetune.eval_max_samples``. Media are not
    looked up: the eval examples of :func:`build_training_set` are these ids less any
    whose prepared media is gone.

    Raises:
        ConfigError: no dataset, or no such version.
    """
    _, rows, _ = _eligible(root, s3, cfg, version)
    return [r["asset_id"] for r in _split(rows, cfg)[1]]


def _prepared(root: str, s3: S3Config, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """asset_id -> prepared row: the preparing run's staging first, then the caption's run."""
    from capflow_core.prepared_media import prepared_for_captions

    return prepared_for_captions(root, s3, {r["asset_id"]: r["run_id"] for r in rows})[0]


def _media_problem(row: dict[str, Any], prepared: dict[str, Any] | None) -> str | None:
    """None when the prepared media is usable, else the skip reason."""
    from PIL import Image

    if prepared is None:
        return "media_missing"
    data = (
        prepared.get("image")
        if row["modality"] != "video"
        else (prepared.get("frames") or [None])[0]
    )
    if not data:
        return "media_missing"
    try:
        Image.open(io.BytesIO(data)).verify()
    except Exception:  # PIL raises many kinds for bytes that are not an image
        return "media_corrupt"
    return None


def _examples(
    root: str, s3: S3Config, rows: list[dict[str, Any]], skipped: dict[str, int]
) -> list[Example]:
    media = _prepared(root, s3, rows)
    out = []
    for row in rows:
        prepared = media.get(row["asset_id"])
        problem = _media_problem(row, prepared)
        if problem:
            skipped[problem] += 1
            continue
        video = row["modality"] == "video"
        out.append(
            Example(
                id=row["caption_id"],
                asset_id=row["asset_id"],
                modality=row["modality"],
                instruction=instruction_for(row["asset_id"], row["modality"]),
                caption=row["caption"],
                image=None if video else prepared["image"],
                frames=list(prepared["frames"]) if video else [],
                duration_s=prepared.get("duration_s"),
            )
        )
    return out


def build_training_set(
    root: str, s3: S3Config, cfg: Config, version: int | None = None
) -> TrainingSet:
    """The training and held-out examples of dataset ``version`` (None: the latest).

    Args:
        root: the storage root.
        s3: S3 settings for an ``s3://`` root.
        cfg: the configuration (``finetune`` section: split, mix-in, self-training).
        version: the dataset version.

    Returns:
        The examples, sorted by asset id, then ``mix_in_ratio × len(train)`` mix-in
        examples appended to ``train``; the skip counts.

    Raises:
        ConfigError: no dataset or no such version, or an unreadable mix-in file.
    """
    version, rows, skipped = _eligible(root, s3, cfg, version)
    train_rows, eval_rows, skipped["held_out_over_cap"] = _split(rows, cfg)
    train = _examples(root, s3, train_rows, skipped)
    held = _examples(root, s3, eval_rows, skipped)
    mixed: list[Example] = []
    n = round(cfg.finetune.mix_in_ratio * len(train))
    if cfg.finetune.mix_in and n:
        mixed = sample_mix_in(cfg.finetune.mix_in, cfg, n, skipped)
    result = TrainingSet(version, train + mixed, held, skipped, len(mixed))
    log.info("training set of dataset version %s: %s", version, result.stats())
    return result
