"""Report: gather what a version (or a gate-failed run) report shows, and write it.

The HTML report of dataset version V lives at ``<root>/reports/<V>/report.html``; a run that
added no version gets ``<root>/reports/runs/<run_id>/report.html``. Both are rebuilt from
the tables on demand (``capflow quality report``).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from capflow_core.config import Config, S3Config, config_hash
from capflow_core.errors import ConfigError
from capflow_core.storage import join_under


def report_uri(root: str, *, version: int | None, run_id: str) -> str:
    """Where the report of a version (or of a run without one) is written."""
    if version is not None:
        return join_under(root, "reports", str(version), "report.html")
    return join_under(root, "reports", "runs", run_id, "report.html")


def write_run_report(
    cfg: Config,
    root: str,
    *,
    run_id: str,
    version: int | None,
    gate: dict[str, Any],
    reconciliation: dict[str, Any],
    cost: dict[str, Any],
) -> str:
    """Write the report of a run: of its version when it promoted one, else of its staged
    records. Returns the report's URI."""
    from capflow_core.captions_store import read_version, versions
    from capflow_core.dataset_diff import diff_versions
    from capflow_core.run_outcome import read_rejects
    from quality.report import write_report
    from quality.report_data import SUMMARY_COLUMNS, ReportData
    from tasks.caption import staged_records

    diff = None
    sample_rows = None
    if version is not None:
        records = read_version(root, cfg.s3, version, columns=list(SUMMARY_COLUMNS))
        sample_rows = partial(version_rows, root, cfg.s3, version)
        earlier = [v.version for v in versions(root, cfg.s3) if v.version < version]
        d = diff_versions(root, cfg.s3, earlier[-1] if earlier else None, version)
        diff = {
            "old": d.old,
            "new": d.new,
            "by_domain": d.by_domain(),
            "examples": {k: d.examples(k) for k in ("added", "changed", "removed")},
        }
        title = f"CapFlow dataset v{version}"
    else:  # the run's staged records: the summary's columns, full rows only for examples
        records = staged_records(root, run_id, cfg.s3, columns=SUMMARY_COLUMNS)
        sample_rows = partial(_staged_rows, root, run_id, cfg.s3)
        title = f"CapFlow run {run_id} (no new version)"
    data = ReportData(
        title=title,
        version=version,
        run_id=run_id,
        created_at=_now(),
        gate=gate,
        reconciliation=reconciliation,
        records=records,
        rejects=read_rejects(root, cfg.s3, run_id),
        cost={**cost, "api_name": cfg.cost.api.name},
        diff=diff,
        config_hash=config_hash(cfg),
        sample_rows=sample_rows,
    )
    return write_report(data, report_uri(root, version=version, run_id=run_id), cfg.s3)


def _staged_rows(root: str, run_id: str, s3: S3Config, asset_ids: list[str]) -> Any:
    from tasks.caption_staged import staged_records

    return staged_records(root, run_id, s3, asset_ids=asset_ids)


def version_rows(
    root: str, s3: S3Config, version: int, asset_ids: list[str], batch_rows: int = 256
) -> Any:
    """The full rows (``records.SCHEMA``) of some assets of a dataset version.

    Only the data files holding a wanted asset (found from their ``asset_id`` column) are
    read whole, streamed ``batch_rows`` rows at a time up to the last wanted row, so memory
    stays that of one batch whatever the size of the version. (A dataset scan would decode a
    whole row group of the nested ``agents`` column before its first batch.)
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pds
    import pyarrow.parquet as pq

    from capflow_core.captions_read import open_version, record_schema

    schema = record_schema()
    wanted = pa.array(sorted(set(asset_ids)), pa.string())
    found: list[Any] = []
    for fragment in open_version(root, s3, version).to_pyarrow_dataset().get_fragments():
        ids = fragment.to_table(columns=["asset_id"], use_threads=False).column(0)
        left = pc.sum(pc.is_in(ids.cast(pa.string()), value_set=wanted)).as_py() or 0
        if not left:
            continue
        keys = pds.get_partition_keys(fragment.partition_expression)
        stored = [name for name in schema.names if name not in keys]
        with fragment.filesystem.open_input_file(fragment.path) as file:
            batches = pq.ParquetFile(file).iter_batches(batch_rows, columns=stored)
            for batch in batches:
                ids = batch.column("asset_id").cast(pa.string())
                hits = pc.is_in(ids, value_set=wanted)
                if pc.any(hits).as_py():
                    found.append(_with_partitions(batch, keys, schema).filter(hits))
                    left -= found[-1].num_rows
                if left <= 0:
                    break
    return pa.concat_tables(found) if found else schema.empty_table()


def _with_partitions(rows: Any, keys: dict[str, Any], schema: Any) -> Any:
    """``rows`` of a data file as a table of ``schema``, partition columns set from ``keys``."""
    import pyarrow as pa

    columns = [
        rows.column(f.name).cast(f.type)
        if f.name in rows.schema.names
        else pa.array([keys.get(f.name)] * rows.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def rebuild_report(cfg: Config, root: str, version: int | None = None) -> str:
    """Rebuild a version's report from the tables (default: the latest version).

    Raises:
        ConfigError: no dataset, or no such version.
    """
    from capflow_core.captions_store import versions
    from capflow_core.runs_store import read_run

    known = versions(root, cfg.s3)
    if not known:
        raise ConfigError(f"no dataset version under {root}: run `capflow refresh` first")
    wanted = known[-1].version if version is None else version
    chosen = next((v for v in known if v.version == wanted), None)
    if chosen is None:
        have = ", ".join(str(v.version) for v in known)
        raise ConfigError(f"no dataset version {version}; versions: {have}")
    run = read_run(root, cfg.s3, chosen.run_id or "") or {}
    counts = run.get("counts") or {}
    gate_dict = {
        "passed": chosen.gate != "failed",
        "label": chosen.gate,
        "failing": run.get("failing") or [],
        "evaluated": counts.get("gate_evaluated", 0),
        "successful": counts.get("gate_successful", 0),
        "data_docs": counts.get("data_docs"),
    }
    cost = {k: run.get(k) or 0 for k in ("tokens_prompt", "tokens_completion", "gpu_s")}
    cost |= {k: run.get(k) or 0.0 for k in ("cost_usd", "api_usd")}
    cost["captions"] = int((chosen.counts or {}).get("captioned", 0))
    recon = run.get("reconciliation") or {}
    return write_run_report(
        cfg,
        root,
        run_id=chosen.run_id or f"version-{chosen.version}",
        version=chosen.version,
        gate=gate_dict,
        reconciliation=recon,
        cost=cost,
    )


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")
