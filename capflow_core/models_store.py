"""The ``models`` Delta table (docs/architecture.md, "Tables"): the fine-tuned captioner registry.

One row per registered captioner, keyed on ``name`` + ``number`` (1, 2, ... per name), with
its lineage: base model and revision, dataset version, hyperparameters, seed, losses, eval
scores and the run that made it. The row is written as training goes (``training``, then
``ready`` or ``failed``); each :func:`register_model` MERGEs only the fields it is given.
A captioner is referred to as ``NAME/N`` or ``NAME/latest`` (the highest ``ready`` number),
optionally prefixed ``model:`` as in a record's ``captioner`` field.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from capflow_core.config import S3Config
from capflow_core.delta_upsert import encode_json, read_rows, upsert
from capflow_core.errors import ConfigError
from capflow_core.storage import join_under

NAME = "models"
PREFIX = "model:"
STATUSES = ("training", "ready", "failed")
METHODS = ("lora", "full")
JSON_COLUMNS = ("hyperparameters", "eval_scores")
_INT = ("number", "dataset_version", "train_examples", "eval_examples", "seed")
_FLOAT = ("train_loss", "eval_loss")
MODEL_COLUMNS: tuple[str, ...] = (  # noqa: SIM905
    "name number path method base_model base_revision dataset_version train_examples "
    "eval_examples hyperparameters seed train_loss eval_loss eval_scores run_id flow_run_id "
    "created_at status"
).split()
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def models_schema() -> Any:
    """The pyarrow schema of ``models`` (all nullable but ``name`` and ``number``)."""
    import pyarrow as pa

    def kind(c: str) -> Any:
        return pa.int64() if c in _INT else pa.float64() if c in _FLOAT else pa.string()

    return pa.schema([pa.field(c, kind(c), c not in ("name", "number")) for c in MODEL_COLUMNS])


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name or ""):
        raise ConfigError(f"model name {name!r}: use letters, digits, '.', '_' or '-'")


def model_dir(root: str, name: str, number: int) -> str:
    """Where model ``name/number``'s adapter or checkpoint lives: ``<root>/models/<name>/<n>``."""
    _check_name(name)
    return join_under(root, "models", name, str(int(number)))


def read_models(root: str, s3: S3Config, name: str | None = None) -> list[dict[str, Any]]:
    """The registered models (only ``name``'s when given), JSON decoded, by (name, number)."""
    rows = read_rows(root, s3, NAME, models_schema, JSON_COLUMNS)
    return sorted(
        (r for r in rows if name is None or r["name"] == name),
        key=lambda r: (r["name"], r["number"]),
    )


def next_number(root: str, s3: S3Config, name: str) -> int:
    """The number the next model called ``name`` gets: one above the highest registered."""
    _check_name(name)
    return max((r["number"] for r in read_models(root, s3, name)), default=0) + 1


def register_model(root: str, s3: S3Config, name: str, number: int, **fields: Any) -> None:
    """Insert or update model ``name/number`` with ``fields`` (the others keep their values).

    On insert ``path`` defaults to :func:`model_dir` (with a trailing ``/``) and
    ``created_at`` to now; an update keeps the stored values unless they are given.

    Args:
        root: the storage root.
        s3: S3 settings for an ``s3://`` root.
        name: the captioner's name (e.g. ``metacaptioner``).
        number: its number under ``name`` (from :func:`next_number`).
        fields: columns of :data:`MODEL_COLUMNS`; dicts for ``hyperparameters`` and
            ``eval_scores`` are JSON-encoded.

    Raises:
        ValueError: an unknown field, status or method, or a number below 1.
        ConfigError: a name that cannot be a folder name.
    """
    _check_name(name)
    if int(number) < 1:
        raise ValueError(f"model number {number}: numbers start at 1")
    if fields.get("status") not in (None, *STATUSES):
        raise ValueError(f"status {fields['status']!r}: use one of {STATUSES}")
    if fields.get("method") not in (None, *METHODS):
        raise ValueError(f"method {fields['method']!r}: use one of {METHODS}")
    defaults = {
        "path": model_dir(root, name, number) + "/",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    upsert(
        root,
        s3,
        NAME,
        models_schema,
        {"name": name, "number": int(number)},
        encode_json(fields, JSON_COLUMNS),
        defaults=defaults,
        metadata={"capflow.model": f"{name}/{int(number)}"},
    )


def _listing(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "none registered (run `capflow finetune`)"
    return ", ".join(f"{r['name']}/{r['number']} ({r['status'] or 'unknown'})" for r in rows)


def resolve(root: str, s3: S3Config, ref: str, require_ready: bool = True) -> dict[str, Any]:
    """The row of a model reference: ``NAME/latest``, ``NAME/N`` or ``NAME`` (= latest),
    optionally prefixed ``model:``. ``latest`` is the highest-numbered ``ready`` model.

    Args:
        root: the storage root.
        s3: S3 settings for an ``s3://`` root.
        ref: the reference.
        require_ready: refuse an explicit ``NAME/N`` that is not ``ready`` (still training
            or failed: its folder may be incomplete).

    Raises:
        ConfigError: a malformed reference, or no such (ready) model; the message lists
            the registered models.
    """
    name, _, which = ref.removeprefix(PREFIX).strip().partition("/")
    which = which or "latest"
    if not _NAME_RE.match(name) or not (which == "latest" or which.isdigit()):
        raise ConfigError(f"model reference {ref!r}: use NAME/latest or NAME/N (e.g. model:x/3)")
    rows = read_models(root, s3)
    mine = [r for r in rows if r["name"] == name]
    if which == "latest":
        ready = [r for r in mine if r["status"] == "ready"]
        if ready:
            return ready[-1]
        problem = f"no ready model named {name!r}"
    else:
        hit = [r for r in mine if r["number"] == int(which)]
        if hit and (hit[0]["status"] == "ready" or not require_ready):
            return hit[0]
        problem = (
            f"model {name}/{which} is {hit[0]['status']}" if hit else f"no model {name}/{which}"
        )
    raise ConfigError(f"{problem} (reference {ref!r}); registered models: {_listing(rows)}")


def last_model_version(root: str, s3: S3Config, name: str) -> int | None:
    """The dataset version the newest ready model ``name`` was trained on (None: none)."""
    ready = [r for r in read_models(root, s3, name) if r["status"] == "ready"]
    return ready[-1]["dataset_version"] if ready else None
