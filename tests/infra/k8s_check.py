"""Static checks of infra/k8s: object schemas, the DaskCluster resource, images, references."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from tests.infra.programs import REPO

K8S_DIR = REPO / "infra" / "k8s"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes these manifests target
DASK_API = "kubernetes.dask.org/v1"
# What the kubernetes worker fills in for a flow run (its default command, the run's name).
FLOW_RUN = {"command": ["prefect", "flow-run", "execute"], "name": "capflow-flow-run"}
PLACEHOLDER = re.compile(r"^\{\{\s*(\w+)\s*\}\}$")

Doc = dict[str, Any]


def load_docs(folder: Path = K8S_DIR) -> dict[str, list[Doc]]:
    """Every manifest file (kustomization.yaml aside) -> its documents."""
    return {
        p.name: [d for d in yaml.safe_load_all(p.read_text()) if d]
        for p in sorted(folder.glob("*.yaml"))
        if p.name != "kustomization.yaml"
    }


def schema_problems(doc: Doc) -> list[str]:
    """Kubernetes' own schema (strict: unknown fields fail) for a built-in kind."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {err.message[:200]}"]
    except kubernetes_validate.SchemaNotFoundError as err:
        return [f"{doc.get('kind')}: no schema ({err})"]
    return []


def wrap(kind: str, spec: Any, name: str) -> Doc:
    """A built-in object around a spec embedded in a custom resource."""
    api = "v1"
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name}, "spec": spec}


def daskcluster_problems(doc: Doc) -> list[str]:
    """The validator knows no CRDs: check DaskCluster's required structure ourselves, and
    validate its embedded pod specs and service spec as real Pod/Service objects."""
    name = doc.get("metadata", {}).get("name")
    spec = doc.get("spec") or {}
    problems = (
        [] if doc.get("apiVersion") == DASK_API else [f"DaskCluster apiVersion must be {DASK_API}"]
    )
    if not name:
        problems.append("DaskCluster without metadata.name")
    for part in ("worker", "scheduler"):
        if not isinstance(spec.get(part), dict) or "spec" not in spec[part]:
            problems.append(f"DaskCluster {name}: spec.{part}.spec (a pod spec) is required")
    if problems:
        return problems
    if not isinstance(spec["worker"].get("replicas"), int):
        problems.append(f"DaskCluster {name}: spec.worker.replicas must be an integer")
    problems += schema_problems(wrap("Pod", spec["worker"]["spec"], f"{name}-worker"))
    problems += schema_problems(wrap("Pod", spec["scheduler"]["spec"], f"{name}-scheduler"))
    if "service" not in spec["scheduler"]:
        problems.append(f"DaskCluster {name}: spec.scheduler.service is required")
    else:
        problems += schema_problems(
            wrap("Service", spec["scheduler"]["service"], f"{name}-scheduler")
        )
    return problems


def render_template(template: Doc, values: dict[str, Any] | None = None) -> Doc:
    """A Prefect base job template's job manifest with ``values`` or the variables' defaults
    filled in (a placeholder with neither is dropped, as the worker does; ``env`` becomes
    a list)."""
    props = template["variables"]["properties"]
    values = values or {}

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: fill(v) for k, v in node.items()}
            return {k: v for k, v in out.items() if v is not _DROP}
        if isinstance(node, list):
            return [v for v in (fill(x) for x in node) if v is not _DROP]
        if isinstance(node, str) and (m := PLACEHOLDER.match(node)):
            if m.group(1) == "env":
                return []
            if m.group(1) in values:
                return values[m.group(1)]
            return props.get(m.group(1), {}).get("default", _DROP)
        return node

    return fill(copy.deepcopy(template["job_configuration"]["job_manifest"]))


_DROP = object()


def pod_specs(doc: Doc) -> list[Doc]:
    """Pod specs inside a workload or a DaskCluster."""
    spec = doc.get("spec") or {}
    if doc.get("kind") == "DaskCluster":
        return [spec.get("worker", {}).get("spec", {}), spec.get("scheduler", {}).get("spec", {})]
    if doc.get("kind") in ("Deployment", "StatefulSet", "Job"):
        return [spec.get("template", {}).get("spec", {})]
    return []


def all_docs(docs: dict[str, list[Doc]]) -> list[Doc]:
    """Manifests plus the flow-run Job rendered from each Prefect pool template ConfigMap."""
    flat = [d for ds in docs.values() for d in ds]
    for doc in list(flat):
        if doc.get("kind") == "ConfigMap":
            for key, value in (doc.get("data") or {}).items():
                if key.endswith(".json") and "job_configuration" in value:
                    flat.append(render_template(json.loads(value), FLOW_RUN))
    return flat
