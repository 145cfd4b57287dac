"""Static validation of infra/k8s: Kubernetes schemas, the DaskCluster resource, the Prefect
pool template, images, commands and cross-object references (no cluster needed).

Each validator gets a negative test on a mutated copy, so none of them can pass vacuously.
"""

from __future__ import annotations

import copy
import json

import pytest

from tests.infra import k8s_check as kc
from tests.infra import k8s_refs as kr
from tests.infra.stack_config import config_problems

pytestmark = pytest.mark.timeout(120)


# --- Kubernetes ---------------------------------------------------------------------------


def test_k8s_builtin_objects_pass_the_kubernetes_schema():
    docs = kc.all_docs(kc.load_docs())
    builtin = [d for d in docs if d.get("apiVersion") != kc.DASK_API]
    assert len(builtin) >= 20
    assert [p for d in builtin for p in kc.schema_problems(d)] == []


def test_k8s_schema_check_rejects_a_deployment_without_selector():
    deployment = next(d for d in kc.load_docs()["prefect-server.yaml"] if d["kind"] == "Deployment")
    bad = copy.deepcopy(deployment)
    del bad["spec"]["selector"]
    assert kc.schema_problems(bad)
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["imagee"] = "x:1"
    assert kc.schema_problems(typo)  # strict: unknown fields fail


def test_daskcluster_has_the_required_structure():
    (cluster,) = kc.load_docs()["dask.yaml"]
    assert cluster["kind"] == "DaskCluster"
    assert kc.daskcluster_problems(cluster) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["spec"].pop("worker"), "spec.worker.spec"),
        (lambda c: c["spec"]["scheduler"].pop("spec"), "spec.scheduler.spec"),
        (lambda c: c.update(apiVersion="kubernetes.dask.org/v2"), "apiVersion"),
        (lambda c: c["spec"]["worker"].update(replicas="2"), "replicas"),
        (lambda c: c["spec"]["worker"]["spec"]["containers"][0].update(imagee="x"), "Pod"),
        (lambda c: c["spec"]["scheduler"].pop("service"), "service"),
    ],
)
def test_daskcluster_check_rejects_mutations(mutate, expected):
    (cluster,) = kc.load_docs()["dask.yaml"]
    bad = copy.deepcopy(cluster)
    mutate(bad)
    problems = kc.daskcluster_problems(bad)
    assert any(expected in p for p in problems), problems


def k8s_state():
    docs = kc.all_docs(kc.load_docs())
    return docs, kr.generated_secrets(kr.kustomization())


def test_k8s_references_resolve():
    docs, secrets = k8s_state()
    assert "capflow-secrets" in secrets
    assert kr.reference_problems(docs, secrets) == []
    assert [p for d in docs for p in kr.container_problems(d)] == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda pod: pod["volumes"].append({"name": "x", "configMap": {"name": "nope"}}),
            "ConfigMap nope",
        ),
        (
            lambda pod: pod["volumes"].append(
                {"name": "x", "persistentVolumeClaim": {"claimName": "nope"}}
            ),
            "PVC nope",
        ),
        (
            lambda pod: pod["containers"][0]["env"].append(
                {
                    "name": "K",
                    "valueFrom": {"secretKeyRef": {"name": "capflow-secrets", "key": "NOPE"}},
                }
            ),
            "no key NOPE",
        ),
        (
            lambda pod: pod["containers"][0]["env"].append(
                {"name": "K", "valueFrom": {"secretKeyRef": {"name": "other", "key": "A"}}}
            ),
            "Secret other",
        ),
        (
            lambda pod: pod["containers"][0]["env"].append(
                {"name": "U", "value": "http://prefect-servr:4200/api"}
            ),
            "Service prefect-servr",
        ),
        (
            lambda pod: pod["containers"][0]["env"].append(
                {"name": "U", "value": "http://minio:9999"}
            ),
            "no port 9999",
        ),
        (lambda pod: pod.update(serviceAccountName="nope"), "ServiceAccount nope"),
    ],
)
def test_k8s_reference_check_rejects_mutations(mutate, expected):
    docs, secrets = k8s_state()
    docs = copy.deepcopy(docs)
    worker = next(
        d
        for d in docs
        if d["metadata"].get("name") == "prefect-worker-gpu" and d["kind"] == "Deployment"
    )
    mutate(worker["spec"]["template"]["spec"])
    problems = kr.reference_problems(docs, secrets)
    assert any(expected in p for p in problems), problems


def test_k8s_container_check_rejects_bad_images_and_commands():
    deploy = next(d for d in kc.load_docs()["capflow-deploy.yaml"])
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    for field, value, expected in [
        ("image", "capflow-cpu", "not pinned"),
        ("image", "capflow-cpu:latest", "not pinned"),
        ("args", ["capflow", "deploy", "--crone", "x"], "no option --crone"),
        ("args", ["sh", "-ec", "prefect deploy --prefect-file infra/nosuch.yaml"], "no such file"),
    ]:
        bad = copy.deepcopy(deploy)
        bad["spec"]["template"]["spec"]["containers"][0][field] = value
        problems = kr.container_problems(bad)
        assert any(expected in p for p in problems), (field, value, problems)
    assert container["image"] == "capflow-cpu:0.1.0"


def test_k8s_probe_commands_are_checked():
    postgres = next(d for d in kc.load_docs()["postgres.yaml"] if d["kind"] == "StatefulSet")
    assert kr.container_problems(postgres) == []
    bad = copy.deepcopy(postgres)
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"] = [
        "pg_ready"
    ]
    problems = kr.container_problems(bad)
    assert any("readinessProbe" in p and "'pg_ready'" in p for p in problems), problems


def test_k8s_pool_template_renders_a_valid_job():
    (template_map,) = [
        d for d in kc.load_docs()["prefect-worker-cpu.yaml"] if d["kind"] == "ConfigMap"
    ]
    template = json.loads(template_map["data"]["capflow-k8s.json"])
    job = kc.render_template(template)
    assert job["kind"] == "Job" and kc.schema_problems(job) == []
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "capflow-cpu:0.1.0"
    assert "args" not in pod["containers"][0]  # {{ command }} has no default: the worker sets it
    template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["restartPolicyy"] = (
        "Never"
    )
    assert kc.schema_problems(kc.render_template(template))


def test_k8s_config_matches_the_stack():
    docs = kc.all_docs(kc.load_docs())
    servers = {}
    for svc in (
        d for d in docs if d.get("kind") == "Service" and d["metadata"]["name"].startswith("vllm-")
    ):
        dep = next(
            d
            for d in docs
            if d.get("kind") == "Deployment"
            and d["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
        )
        c = dep["spec"]["template"]["spec"]["containers"][0]
        servers[svc["metadata"]["name"]] = {
            "argv": c["command"] + c["args"],
            "gpus": c["resources"]["limits"]["nvidia.com/gpu"],
        }
    dask = {name: 8786 for name, ports in kr.services(docs).items() if 8786 in ports}
    (cfg_map,) = [
        d
        for d in docs
        if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "capflow-config"
    ]
    assert len(servers) == 3
    assert config_problems(cfg_map["data"]["capflow.yaml"], servers, dask) == []


def test_kustomization_lists_every_manifest():
    kust = kr.kustomization()
    assert kr.kustomization_problems(kust) == []
    short = {**kust, "resources": [r for r in kust["resources"] if r != "dask.yaml"]}
    assert kr.kustomization_problems(short) == [
        "dask.yaml is not listed in kustomization.yaml resources"
    ]
    extra = {**kust, "resources": [*kust["resources"], "gone.yaml"]}
    assert kr.kustomization_problems(extra) == ["kustomization.yaml lists missing gone.yaml"]


def test_k8s_files_hold_no_literal_secrets():
    docs, _ = k8s_state()
    assert kr.literal_secret_problems(docs) == []
    example = (kc.K8S_DIR / "secrets.env.example").read_text()
    assert all(
        ln.endswith("=") for ln in example.splitlines() if "=" in ln and not ln.startswith("#")
    )
    bad = copy.deepcopy(docs)
    postgres = next(d for d in bad if d["kind"] == "StatefulSet")
    postgres["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "PGPASSWORD", "value": "hunter2"}
    )
    bad.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {}})
    assert len(kr.literal_secret_problems(bad)) == 2
