"""Cross-object checks of infra/k8s: images, commands, and every name one object uses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.infra.k8s_check import K8S_DIR, Doc, pod_specs
from tests.infra.programs import OUR_IMAGES, REPO, image_name, program_problems

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY", re.IGNORECASE)
URL = re.compile(r"\b(?:https?|tcp)://([a-z0-9-]+):(\d+)")


def container_problems(doc: Doc) -> list[str]:
    """Images pinned (ours built by a Dockerfile in infra/docker) and commands runnable."""
    problems = []
    for spec in pod_specs(doc):
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            image, where = c.get("image", ""), f"{doc.get('kind')}/{c.get('name')}"
            name = image_name(image)
            if name in OUR_IMAGES and not (REPO / OUR_IMAGES[name]).is_file():
                problems.append(f"{where}: {image} has no Dockerfile {OUR_IMAGES[name]}")
            if ":" not in image.split("/")[-1] or image.endswith(":latest"):
                problems.append(f"{where}: image {image!r} is not pinned to a tag")
            argv = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
            problems += [f"{where}: {p}" for p in program_problems(argv, image)]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe_argv = (c.get(probe) or {}).get("exec", {}).get("command")
                if probe_argv:
                    problems += [
                        f"{where} {probe}: {p}" for p in program_problems(probe_argv, image)
                    ]
    return problems


def defined(docs: list[Doc], kind: str) -> set[str]:
    """Names of the objects of one kind."""
    return {d["metadata"]["name"] for d in docs if d.get("kind") == kind}


def services(docs: list[Doc]) -> dict[str, set[int]]:
    """Service name -> ports, including the scheduler Service the Dask operator creates."""
    out = {
        d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]}
        for d in docs
        if d.get("kind") == "Service"
    }
    for d in docs:
        if d.get("kind") == "DaskCluster":
            svc = d["spec"]["scheduler"]["service"]
            out[f"{d['metadata']['name']}-scheduler"] = {p["port"] for p in svc["ports"]}
    return out


def walk(node: Any, key: str) -> list[Any]:
    """Every value stored under ``key`` anywhere in ``node``."""
    if isinstance(node, dict):
        found = [node[key]] if key in node else []
        return found + [x for v in node.values() for x in walk(v, key)]
    if isinstance(node, list):
        return [x for v in node for x in walk(v, key)]
    return []


def strings(node: Any) -> list[str]:
    """Every string value in ``node``."""
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


def reference_problems(docs: list[Doc], secrets: dict[str, set[str]]) -> list[str]:
    """ConfigMaps, Secrets (and their keys), PVCs, ServiceAccounts and Services named by
    one object must be defined (``secrets``: name -> keys, from Secret objects or the
    kustomization's secretGenerator)."""
    maps, pvcs = defined(docs, "ConfigMap"), defined(docs, "PersistentVolumeClaim")
    accounts, svc = defined(docs, "ServiceAccount") | {"default"}, services(docs)
    problems = []
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name', doc.get('metadata', {}).get('generateName'))}"
        problems += [
            f"{where}: ConfigMap {c['name']} is not defined"
            for c in walk(doc, "configMap")
            if c["name"] not in maps
        ]
        problems += [
            f"{where}: ConfigMap {c['name']} is not defined"
            for c in walk(doc, "configMapKeyRef")
            if c["name"] not in maps
        ]
        problems += [
            f"{where}: PVC {c['claimName']} is not defined"
            for c in walk(doc, "persistentVolumeClaim")
            if c["claimName"] not in pvcs
        ]
        for ref in walk(doc, "secretKeyRef") + walk(doc, "secretRef"):
            if ref["name"] not in secrets:
                problems.append(f"{where}: Secret {ref['name']} is not defined")
            elif "key" in ref and ref["key"] not in secrets[ref["name"]]:
                problems.append(f"{where}: Secret {ref['name']} has no key {ref['key']}")
        for spec in pod_specs(doc):
            if spec.get("serviceAccountName", "default") not in accounts:
                problems.append(
                    f"{where}: ServiceAccount {spec['serviceAccountName']} is not defined"
                )
        for host, port in (m.groups() for s in strings(doc) for m in URL.finditer(s)):
            if host == "localhost":
                continue  # an address the browser uses, not a Service
            if host not in svc:
                problems.append(f"{where}: Service {host} is not defined")
            elif int(port) not in svc[host]:
                problems.append(f"{where}: Service {host} has no port {port}")
    return problems


def literal_secret_problems(docs: list[Doc]) -> list[str]:
    """No Secret objects with data in the manifests, no secret-looking env with a value."""
    problems = [
        f"Secret {d['metadata']['name']} is committed" for d in docs if d.get("kind") == "Secret"
    ]
    for doc in docs:
        for env in walk(doc, "env"):
            for item in env if isinstance(env, list) else []:
                if SECRET_NAME.search(item.get("name", "")) and "value" in item:
                    problems.append(
                        f"{doc.get('kind')}: {item['name']} has a literal value; use secretKeyRef"
                    )
    return problems


def kustomization(folder: Path = K8S_DIR) -> Doc:
    """The parsed kustomization.yaml."""
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def generated_secrets(kust: Doc, folder: Path = K8S_DIR) -> dict[str, set[str]]:
    """Secrets of the secretGenerator -> keys (read from each env file's ``.example``)."""
    out = {}
    for gen in kust.get("secretGenerator", []):
        keys = set()
        for env in gen.get("envs", []):
            text = (folder / f"{env}.example").read_text()
            keys |= {
                ln.split("=", 1)[0]
                for ln in text.splitlines()
                if "=" in ln and not ln.startswith("#")
            }
        out[gen["name"]] = keys
    return out


def kustomization_problems(kust: Doc, folder: Path = K8S_DIR) -> list[str]:
    """The kustomization lists every manifest file, and only existing ones."""
    listed = set(kust.get("resources", []))
    files = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    problems = [
        f"{f} is not listed in kustomization.yaml resources" for f in sorted(files - listed)
    ]
    problems += [f"kustomization.yaml lists missing {f}" for f in sorted(listed - files)]
    if kust.get("secretGenerator") and not kust.get("generatorOptions", {}).get(
        "disableNameSuffixHash"
    ):
        problems.append("generated Secret names get a hash suffix the pool template cannot follow")
    return problems
