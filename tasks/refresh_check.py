"""Is there anything for a refresh to do? A dry run of ingest and the caption plan.

Lists the sources and diffs them against ``assets`` without writing, and counts stale
captions, retries and deletions; a refresh is needed when any count is non-zero or a run
is unfinished. ``capflow demo`` uses it so that a rerun with nothing to do is fast.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from capflow_core.config import Config


@dataclass(frozen=True)
class PendingWork:
    """What a refresh would do now."""

    new: int
    changed: int
    removed_objects: int
    stale: int
    retry: int
    remove: int
    unfinished_run: str | None

    @property
    def nothing(self) -> bool:
        """True when a refresh would list, caption and delete nothing."""
        counts = (self.new, self.changed, self.removed_objects, self.stale, self.retry)
        return not any(counts) and not self.remove and self.unfinished_run is None

    def to_dict(self) -> dict:
        return asdict(self)


def pending_work(cfg: Config) -> PendingWork:
    """Dry-run ingest + the carry-over part of the caption plan, on the config's root."""
    from tasks.caption_plan import carryover_counts
    from tasks.ingest import ingest
    from tasks.run_record import resumable_run

    root = cfg.storage.root
    listed = ingest(cfg, dry_run=True, run_id="pending-work-check")
    carry = carryover_counts(cfg, root)
    return PendingWork(
        new=listed.new,
        changed=listed.changed,
        removed_objects=listed.removed,
        stale=carry["stale"],
        retry=carry["retry"],
        remove=carry["remove"],
        unfinished_run=resumable_run(root, cfg.s3),
    )
