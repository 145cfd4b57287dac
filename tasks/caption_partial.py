"""Partial caption shards: what a shard completed before its model servers failed.

When some samples of a shard cannot reach a model server, the caption task keeps the
records that did complete (captioned, or failed on their own account) as
``<root>/staging/<run_id>/captioned/<shard>.part-<n>.parquet``, written under a temporary
name and renamed, before it raises. The retried task, or the next refresh (which resumes
the run under its id), reads them back, captions only the other samples, and commits the
shard's final ``<shard>.parquet`` holding every record; the partials are then removed (a
leftover one is ignored once the shard's marker exists: readers look at marked shards only).

Each partial carries the cost of the attempt that wrote it (wall and GPU seconds, USD, API
comparison) in its Parquet metadata, so the shard's marker counts every attempt's work.
Failed samples in a partial are not yet in ``caption_attempts``: the final commit records
them once, with the rest of the shard.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from capflow_core.errors import InfrastructureError

COST_FIELDS = ("wall_s", "gpu_s", "cost_usd", "api_usd")
_COST_KEY = b"capflow.attempt_cost"
MAX_PARTIALS = 10_000  # tries of one shard that kept work; Prefect retries far fewer


def _zero_cost() -> dict[str, float]:
    return dict.fromkeys(COST_FIELDS, 0.0)


@dataclass
class Kept:
    """Records kept by a shard's earlier attempts, what those attempts cost, and where.

    Attributes:
        records: one per asset (the first partial holding an asset wins).
        cost: ``wall_s``, ``gpu_s``, ``cost_usd``, ``api_usd`` summed over the attempts.
        paths: the partial files read (filesystem paths).
    """

    records: list[Any] = field(default_factory=list)
    cost: dict[str, float] = field(default_factory=_zero_cost)
    paths: list[str] = field(default_factory=list)

    @property
    def asset_ids(self) -> set[str]:
        """The assets that need no more work in this run."""
        return {r.asset_id for r in self.records}


def attempt_cost(cost: Any) -> dict[str, float]:
    """An engine's ``last_cost`` (a CostSummary, or None) as the partial metadata's fields."""
    if cost is None:
        return _zero_cost()
    return {
        "wall_s": cost.wall_s,
        "gpu_s": cost.gpu_seconds,
        "cost_usd": cost.usd,
        "api_usd": cost.api_usd,
    }


def add_costs(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Field-wise sum of two attempt costs."""
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in COST_FIELDS}


def partial_paths(fs: Any, folder: str, shard: str) -> list[str]:
    """The committed partials of ``shard`` in ``folder``, in the order they were written.

    Partials are numbered from 0 without gaps, so this probes names instead of listing the
    folder (one HEAD request per shard without partials, however many shards the run has).
    """
    found = []
    for n in range(MAX_PARTIALS):
        path = f"{folder}/{shard}.part-{n}.parquet"
        fs.invalidate_cache(path)  # an earlier try, in another process, may have written it
        if not fs.exists(path):
            break
        found.append(path)
    return found


def read_kept(fs: Any, folder: str, shard: str) -> Kept:
    """Everything the shard's partials hold (nothing when it has none)."""
    import pyarrow.parquet as pq

    from capflow_core.records import from_arrow

    kept, seen = Kept(), set()
    for path in partial_paths(fs, folder, shard):
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
        meta = table.schema.metadata or {}
        if _COST_KEY in meta:
            kept.cost = add_costs(kept.cost, json.loads(meta[_COST_KEY]))
        for record in from_arrow(table):
            if record.asset_id not in seen:
                seen.add(record.asset_id)
                kept.records.append(record)
        kept.paths.append(path)
    return kept


def write_partial(
    fs: Any, folder: str, shard: str, records: list[Any], cost: dict[str, float]
) -> str:
    """Commit ``records`` (with the attempt's ``cost``) as the shard's next partial.

    Returns:
        The partial's path.
    """
    import pyarrow.parquet as pq

    from capflow_core.records import to_arrow

    n = len(partial_paths(fs, folder, shard))
    if n == MAX_PARTIALS:
        raise InfrastructureError(f"{shard}: {n} partial files already; fix the model servers")
    fs.makedirs(folder, exist_ok=True)
    final = f"{folder}/{shard}.part-{n}.parquet"
    tmp = f"{final}.tmp-{uuid.uuid4().hex}"
    table = to_arrow(records).replace_schema_metadata({_COST_KEY: json.dumps(cost).encode()})
    with fs.open(tmp, "wb") as f:
        pq.write_table(table, f)
    fs.mv(tmp, final)
    return final


def remove_partials(fs: Any, paths: list[str]) -> None:
    """Delete partials whose records are now in the committed shard."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            fs.rm(path)


def unreachable(record: Any) -> bool:
    """Whether a record failed because a model server could not be used (not its own fault)."""
    return any(v.startswith("infrastructure:") for v in record.errors.values())


def keep_completed(
    fs: Any,
    folder: str,
    shard: str,
    run_id: str,
    kept: Kept,
    new: list[Any],
    cost: dict[str, float],
) -> InfrastructureError:
    """Keep this try's completed records as the shard's next partial.

    Args:
        new: this try's records, some of them :func:`unreachable`.
        cost: this try's cost (:func:`attempt_cost`).

    Returns:
        The error that fails the shard: how many samples are kept and left, what to do.
    """
    lost = [r for r in new if unreachable(r)]
    completed = [r for r in new if not unreachable(r)]
    saved = "none of this try's samples completed"
    if completed:
        name = write_partial(fs, folder, shard, completed, cost).rsplit("/", 1)[-1]
        saved = f"kept the {len(completed)} completed in staging/{run_id}/captioned/{name}"
    first = next(v for v in lost[0].errors.values() if v.startswith("infrastructure:"))
    return InfrastructureError(
        f"{shard}: {len(lost)} of {len(new)} sample(s) could not reach a model server; "
        f"{saved} ({len(kept.records) + len(completed)} kept in all). Retrying the task, "
        f"or the next `capflow refresh` (it resumes run {run_id}), captions only the "
        f"{len(lost)} left; check the model endpoints with `capflow doctor`. "
        f"First error: {first.removeprefix('infrastructure: ')}"
    )
