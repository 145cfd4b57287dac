"""Gate and version: validate a run's staged records, then promote them as one version.

Plain functions for the refresh flow and ``capflow dataset promote``. The gate runs the
caption contract (:mod:`quality.gate`) on the run's staged records; a pass promotes them in
one MERGE commit of ``captions`` (with the deletions of assets no longer active), which is
the new dataset version; a failure adds no version, keeps the staged records and leaves
``capflow dataset promote RUN_ID`` to promote after review.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from capflow_core.config import Config, config_hash
from capflow_core.failpoints import failpoint
from capflow_core.storage import join_under


@dataclass
class GateOutcome:
    """The gate's verdict as stored in ``runs`` (``skipped``: nothing was staged)."""

    passed: bool
    skipped: bool = False
    summary: str = ""
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "skipped" if self.skipped else "passed" if self.passed else "failed"


def data_docs_uri(root: str, run_id: str) -> str:
    """``<root>/reports/runs/<run_id>/data_docs`` (GX Data Docs of a run's validation)."""
    return join_under(root, "reports", "runs", run_id, "data_docs")


def gate_run(cfg: Config, root: str, run_id: str) -> GateOutcome:
    """Run the caption contract on a run's staged records and build its Data Docs."""
    from quality.gate import run_gate
    from tasks.caption import staged_records

    staged = staged_records(root, run_id, cfg.s3)
    if staged.num_rows == 0:
        return GateOutcome(passed=True, skipped=True, summary="gate skipped: nothing staged")
    if cfg.captioner.model:  # a registered captioner writes in single mode
        single = cfg.captioner.model_copy(update={"mode": "single"})
        cfg = cfg.model_copy(update={"captioner": single})
    result = run_gate(staged, cfg, run_id=run_id, docs_uri=data_docs_uri(root, run_id), s3=cfg.s3)
    failpoint("after-gate")
    return GateOutcome(passed=result.passed, summary=result.summary(), result=result.to_dict())


def promote_run(
    cfg: Config,
    root: str,
    run_id: str,
    *,
    removed: list[str],
    gate: str,
    flow_run_id: str | None = None,
    counts: dict[str, Any] | None = None,
    keep_newer: bool = False,
) -> Any:
    """MERGE a run's staged records (and the deletions) into ``captions``: one version.

    Staged rows of assets that are no longer active are left out; with ``keep_newer`` (a
    manual promote of an older run) so are rows whose stored caption is newer, so promoting
    an old run never undoes later work. Returns the store's PromoteResult (``version``
    None: nothing changed).
    """
    import pyarrow as pa

    from capflow_core.captions_store import current_captions, promote
    from tasks.caption import staged_records
    from tasks.caption_plan import active_asset_ids

    failpoint("before-merge")
    staged = staged_records(root, run_id, cfg.s3)
    active = active_asset_ids(root, cfg.s3)
    stored_at: dict[str, str] = {}
    if keep_newer:  # one more read of the whole table: only for a manual promote
        stored = current_captions(root, cfg.s3, columns=("asset_id", "created_at")).to_pylist()
        stored_at = {r["asset_id"]: r["created_at"] for r in stored}
    ids, created = staged.column("asset_id").to_pylist(), staged.column("created_at").to_pylist()
    keep = [a in active and stored_at.get(a, "") <= c for a, c in zip(ids, created, strict=True)]
    staged = staged.filter(pa.array(keep, type=pa.bool_()))
    return promote(
        root,
        cfg.s3,
        staged,
        removed,
        run_id=run_id,
        flow_run_id=flow_run_id,
        counts=counts or {},
        gate=gate,
        config_hash=config_hash(cfg),
    )
