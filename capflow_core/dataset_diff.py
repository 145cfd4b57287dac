"""What changed between two dataset versions: added, changed and removed captions.

Two versions are compared by ``asset_id`` and ``caption_id`` (a changed ``caption_id`` is a
re-caption: new fingerprint). Only the key columns are read whole, into Arrow, and joined
there; the caption text of the differing rows is then read batch by batch, so Python
memory follows the size of the diff.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from capflow_core.config import S3Config
from capflow_core.delta_store import scan_columns

KINDS = ("added", "changed", "removed")
ROW_COLUMNS = ["asset_id", "source_uri", "domain", "caption", "caption_id"]


@dataclass
class VersionDiff:
    """The difference from version ``old`` (None: the empty dataset) to version ``new``.

    Each row is ``{asset_id, source_uri, domain, caption, caption_id}``; ``changed`` rows
    hold the new caption and add ``old_caption``; ``removed`` rows hold the old caption.
    """

    old: int | None
    new: int
    added: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)

    def by_domain(self) -> dict[str, dict[str, int]]:
        """``domain -> {"added": n, "changed": n, "removed": n}``, domains sorted."""
        counts = {kind: Counter(r["domain"] or "" for r in getattr(self, kind)) for kind in KINDS}
        domains = sorted(set().union(*counts.values()))
        return {d: {kind: counts[kind][d] for kind in KINDS} for d in domains}

    def examples(self, kind: str, n: int = 3) -> list[dict[str, Any]]:
        """Up to ``n`` rows of ``kind`` (added / changed / removed), spread over domains."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        rows, picked, seen = getattr(self, kind), [], set()
        for row in rows:  # one per domain first, then fill in order
            if row["domain"] not in seen and len(picked) < n:
                seen.add(row["domain"])
                picked.append(row)
        picked += [r for r in rows if r not in picked][: n - len(picked)]
        return picked

    def to_dict(self) -> dict[str, Any]:
        """Counts by kind and domain (not the rows): what ``dataset diff --json`` prints."""
        return {
            "old": self.old,
            "new": self.new,
            **{kind: len(getattr(self, kind)) for kind in KINDS},
            "by_domain": self.by_domain(),
        }


def _keys(table: Any) -> Any:
    """The version's ``(asset_id, caption_id)`` as one Arrow table (none: empty)."""
    import pyarrow as pa

    schema = pa.schema([("asset_id", pa.string()), ("caption_id", pa.string())])
    if table is None:
        return schema.empty_table()
    batches = [b.cast(schema) for b in scan_columns(table, ["asset_id", "caption_id"])]
    return pa.Table.from_batches(batches, schema)


def _differing(new_keys: Any, old_keys: Any) -> tuple[set[str], set[str], set[str]]:
    """Added, changed and removed asset ids, by an Arrow join: only the differing ids ever
    become Python objects, so memory follows the diff, not the versions' size."""
    import pyarrow.compute as pc

    both = new_keys.join(old_keys, "asset_id", join_type="full outer", right_suffix="_old")
    new_id, old_id = both.column("caption_id"), both.column("caption_id_old")
    ids = both.column("asset_id")

    def pick(mask: Any) -> set[str]:
        return set(pc.filter(ids, mask).to_pylist())

    added = pick(pc.and_(pc.is_valid(new_id), pc.is_null(old_id)))
    removed = pick(pc.and_(pc.is_null(new_id), pc.is_valid(old_id)))
    changed = pick(pc.fill_null(pc.not_equal(new_id, old_id), False))
    return added, changed, removed


def _rows(table: Any, asset_ids: set[str]) -> dict[str, dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not asset_ids:
        return {}
    wanted = pa.array(sorted(asset_ids), pa.string())
    out: dict[str, dict[str, Any]] = {}
    for batch in scan_columns(table, ROW_COLUMNS):
        for row in batch.filter(pc.is_in(batch.column("asset_id"), value_set=wanted)).to_pylist():
            out[row["asset_id"]] = row
    return out


def diff_versions(root: str, s3: S3Config, old: int | None, new: int) -> VersionDiff:
    """Compare two dataset versions by asset id and caption id.

    Raises:
        ConfigError: either version cannot be read (never existed, or vacuumed).
    """
    from capflow_core.captions_store import open_version, unreadable

    new_table = open_version(root, s3, new)
    old_table = open_version(root, s3, old) if old is not None else None
    try:
        new_keys, old_keys = _keys(new_table), _keys(old_table)
    except OSError as err:  # a vacuumed version's files are gone
        raise unreadable(root, s3, new if old is None else old, err) from err
    added, changed, removed = _differing(new_keys, old_keys)
    del new_keys, old_keys
    new_rows = _rows(new_table, added | changed)
    old_rows = _rows(old_table, removed | changed) if old_table is not None else {}
    for asset_id in changed:
        new_rows[asset_id]["old_caption"] = old_rows[asset_id]["caption"]
    return VersionDiff(
        old=old,
        new=new,
        added=[new_rows[a] for a in sorted(added)],
        changed=[new_rows[a] for a in sorted(changed)],
        removed=[old_rows[a] for a in sorted(removed)],
    )
