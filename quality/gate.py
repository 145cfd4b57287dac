"""The quality gate: run the caption contract on one run's staged records through GX.

Pandas data source -> dataframe asset -> whole-dataframe batch definition, the suite of
:mod:`quality.suite`, a ``ValidationDefinition`` and a ``Checkpoint`` whose run id carries
the pipeline's run id. Without ``docs_uri`` the context is ephemeral; with it, a file
context in a temporary folder builds Data Docs (``UpdateDataDocsAction``) and the whole
site is copied to ``docs_uri`` (local folder or ``s3://``) with fsspec.

GX runs offline: analytics are disabled before it is imported and progress bars are off.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from typing import TYPE_CHECKING, Any

from quality.gate_result import FailedExpectation, GateResult, failed_from_result
from quality.metrics import caption_frame
from quality.suite import SUITE_NAME, SUITE_VERSION, build_suite

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from capflow_core.config import Config, S3Config

__all__ = ["FailedExpectation", "GateResult", "run_gate"]

# GX's data_context.types.base sets its own logger to INFO, so it is quieted by name
_QUIET_LOGGERS = ("great_expectations", "great_expectations.data_context.types.base")
_RESULT_FORMAT = {"result_format": "COMPLETE", "unexpected_index_column_names": ["asset_id"]}


def run_gate(
    records: pa.Table,
    cfg: Config,
    *,
    run_id: str,
    docs_uri: str | None = None,
    s3: S3Config | None = None,
) -> GateResult:
    """Validate staged records against the caption contract.

    Zero records pass with ``evaluated=0`` and no Data Docs: GX is not run, since there is
    nothing to promote (the flow adds no version for an empty run either way).

    Args:
        records: the run's staged records (``capflow_core.records.SCHEMA``).
        cfg: the config (thresholds in ``cfg.quality``, accept rule, registry).
        run_id: the pipeline run id; GX's validation run is named after it.
        docs_uri: where to copy the Data Docs site (e.g.
            ``<root>/reports/runs/<run_id>/data_docs``); None builds no docs.
        s3: S3 settings for an ``s3://`` ``docs_uri`` (default: ``cfg.s3``).

    Returns:
        The :class:`GateResult`; ``data_docs`` is the URI of the copied ``index.html``.
    """
    from capflow_core.registry import load_registry

    if records.num_rows == 0:
        return GateResult(True, 0, 0, [], 0, SUITE_NAME, SUITE_VERSION, None, run_id)
    registry = load_registry(cfg.registry)
    criteria = {modality: len(spec.criteria) for modality, spec in registry.judge.items()}
    counts = set(criteria.values())
    frame = caption_frame(records, cfg, registry)
    suite = build_suite(cfg, list(registry.domains), counts.pop() if len(counts) == 1 else criteria)
    if docs_uri is None:
        return _validate(frame, suite, run_id, project_dir=None)
    with tempfile.TemporaryDirectory(prefix="capflow-gx-") as project_dir:
        result, site = _validate(frame, suite, run_id, project_dir=project_dir), _site(project_dir)
        result.data_docs = _publish(site, docs_uri, s3 or cfg.s3)
    return result


def _context(project_dir: str | None) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if project_dir is None:
        context = gx.get_context(mode="ephemeral")
    else:
        context = gx.get_context(mode="file", project_root_dir=project_dir)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _validate(frame: pd.DataFrame, suite: Any, run_id: str, project_dir: str | None) -> GateResult:
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    context = _context(project_dir)
    batch = (
        context.data_sources.add_pandas("capflow")
        .add_dataframe_asset("staged_records")
        .add_batch_definition_whole_dataframe("run")
    )
    suite = context.suites.add(suite)
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name="caption_contract", data=batch, suite=suite)
    )
    actions = [UpdateDataDocsAction(name="data_docs")] if project_dir else []
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="capflow_gate",
            validation_definitions=[validation],
            actions=actions,
            result_format=_RESULT_FORMAT,
        )
    )
    with warnings.catch_warnings():
        # pandas warns that refusal regexes have groups (GX uses str.contains): harmless
        warnings.filterwarnings("ignore", "This pattern is interpreted as a regular expression")
        outcome = checkpoint.run(
            batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_id)
        )
    (validated,) = outcome.run_results.values()
    stats = validated.statistics
    failing = [failed_from_result(r, frame) for r in validated.results if not r.success]
    return GateResult(
        passed=bool(validated.success),
        evaluated=int(stats["evaluated_expectations"]),
        successful=int(stats["successful_expectations"]),
        failing=failing,
        rows=len(frame),
        suite=SUITE_NAME,
        suite_version=SUITE_VERSION,
        run_id=run_id,
    )


def _site(project_dir: str) -> str:
    site = os.path.join(project_dir, "gx", "uncommitted", "data_docs", "local_site")
    if not os.path.isfile(os.path.join(site, "index.html")):
        raise RuntimeError(f"GX built no Data Docs under {site}")
    return site


def _publish(site: str, docs_uri: str, s3: S3Config) -> str:
    """Copy the local Data Docs site to ``docs_uri``; the URI of its ``index.html``."""
    from capflow_core.storage import filesystem, is_s3

    fs, path = filesystem(docs_uri, s3)
    fs.makedirs(path, exist_ok=True)
    # a trailing slash copies the folder's contents, not the folder, into ``path``
    fs.put(site.rstrip("/") + "/", path, recursive=True)
    index = f"{path}/index.html"
    if not fs.exists(index):
        raise RuntimeError(f"Data Docs were not copied to {docs_uri}")
    return f"s3://{index}" if is_s3(docs_uri) else index
