"""Static validation of the Dockerfiles and the compose stack (no container engine, no network).

Kubernetes manifests: test_static_k8s.py.

Each validator gets a negative test on a mutated copy, so none of them can pass vacuously.
"""

from __future__ import annotations

import copy

import pytest

from tests.infra import compose_check as cc
from tests.infra.dockerfile_check import dockerfile_problems, instructions
from tests.infra.programs import REPO, program_problems
from tests.infra.stack_config import config_problems, flag_value

pytestmark = pytest.mark.timeout(120)
DOCKERFILES = sorted(
    p for p in (REPO / "infra" / "docker").glob("Dockerfile.*") if p.suffix != ".dockerignore"
)


# --- Dockerfiles --------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_builds_from_repo_root(path):
    assert dockerfile_problems(path) == []


def test_dockerfiles_exist_for_both_images():
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.cpu", "Dockerfile.gpu"}


def test_dockerfile_parser_joins_continuations():
    steps = instructions(
        'FROM a:1\n# note\nRUN apt-get update \\\n  # inner\n && echo hi\nCMD ["x"]\n'
    )
    assert steps == [("FROM", "a:1"), ("RUN", "apt-get update  && echo hi"), ("CMD", '["x"]')]
    with pytest.raises(ValueError):
        instructions("FROM a:1\nRUN echo \\\n")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("COPY flows flows", "COPY flowz flows", "COPY source 'flowz' does not exist"),
        ("FROM python:3.11-slim-bookworm", "FROM python:latest", "not pinned"),
        ("FROM python:3.11-slim-bookworm", "FROM python", "not pinned"),
        ('CMD ["capflow", "--help"]', 'CMD ["capflowd", "--help"]', "'capflowd' is not installed"),
        ('CMD ["capflow", "--help"]', 'CMD ["capflow", "nosuch"]', "no subcommand 'nosuch'"),
        ("-c requirements/constraints.txt -e .", "-e .", "ignores requirements/constraints.txt"),
        ("tesseract-ocr tini", "tini", "tesseract-ocr is not installed"),
    ],
)
def test_dockerfile_check_rejects_mutations(tmp_path, old, new, expected):
    src = REPO / "infra" / "docker" / "Dockerfile.cpu"
    text = src.read_text()
    assert old in text
    bad = tmp_path / "Dockerfile.cpu"
    bad.write_text(text.replace(old, new))
    problems = dockerfile_problems(bad, REPO)
    assert any(expected in p for p in problems), problems


def test_dockerignore_must_keep_copied_sources(tmp_path):
    src = REPO / "infra" / "docker" / "Dockerfile.cpu"
    (tmp_path / "Dockerfile.cpu").write_text(src.read_text())
    ignore = src.with_name("Dockerfile.cpu.dockerignore").read_text()
    (tmp_path / "Dockerfile.cpu.dockerignore").write_text(ignore.replace("!quality/**\n", ""))
    problems = dockerfile_problems(tmp_path / "Dockerfile.cpu", REPO)
    assert problems == ["COPY source 'quality' is excluded by Dockerfile.cpu.dockerignore"]


# --- docker compose -----------------------------------------------------------------------


def test_compose_file_is_valid():
    doc, text = cc.load_compose()
    assert cc.compose_problems(doc, text) == []
    assert {
        "postgres",
        "minio",
        "prefect-server",
        "dask-scheduler",
        "dask-worker",
        "worker-cpu",
        "worker-gpu",
        "capflow-deploy",
        "vllm-vlm",
        "vllm-llm",
        "vllm-judge",
    } <= set(doc["services"])


def compose_servers(doc):
    """vllm services -> argv with defaults and the GPUs NVIDIA_VISIBLE_DEVICES gives them."""
    out = {}
    for name, svc in doc["services"].items():
        if svc["image"].startswith("vllm/"):
            gpus = cc.resolve_defaults(svc["environment"]["NVIDIA_VISIBLE_DEVICES"])
            out[name] = {"argv": cc.service_argv(svc), "gpus": len(gpus.split(","))}
    return out


def test_compose_config_matches_the_stack():
    doc, _ = cc.load_compose()
    scheduler = cc.as_argv(doc["services"]["dask-scheduler"]["command"])
    dask = {"dask-scheduler": int(flag_value(scheduler, "--port"))}
    text = doc["configs"]["capflow"]["content"]
    assert config_problems(text, compose_servers(doc), dask) == []


def test_compose_config_check_catches_mismatches():
    doc, _ = cc.load_compose()
    text = doc["configs"]["capflow"]["content"]
    servers = compose_servers(doc)
    dask = {"dask-scheduler": 8786}
    wrong_gpus = text.replace("max_inflight: 256, gpus: 4}", "max_inflight: 256, gpus: 2}", 1)
    assert any("differ" in p for p in config_problems(wrong_gpus, servers, dask))
    wrong_host = text.replace("http://vllm-judge:8000", "http://vllm-judje:8000")
    assert any("names no vllm server" in p for p in config_problems(wrong_host, servers, dask))
    no_flag = copy.deepcopy(servers)
    no_flag["vllm-vlm"]["argv"].remove("--enable-prefix-caching")
    assert any("--enable-prefix-caching" in p for p in config_problems(text, no_flag, dask))
    assert any("unknown key" in p for p in config_problems(text + "bogus: 1\n", servers, dask))
    assert any("dask.address" in p for p in config_problems(text, servers, {"other": 8786}))


def mutated_compose(mutate):
    doc, text = cc.load_compose()
    doc = copy.deepcopy(doc)
    text = mutate(doc, text) or text
    return cc.compose_problems(doc, text)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d, t: d["services"]["postgres"].update(restartt="always"), "restartt"),
        (
            lambda d, t: d["services"]["worker-cpu"].update(command=["capflow", "nosuch"]),
            "no subcommand 'nosuch'",
        ),
        (
            lambda d, t: d["services"]["worker-cpu"].update(
                command=["capflow", "deploy", "--pol", "x"]
            ),
            "no option --pol",
        ),
        (
            lambda d, t: d["services"]["worker-cpu"].update(command=["dask", "wroker"]),
            "no subcommand 'wroker'",
        ),
        (
            lambda d, t: d["services"]["worker-cpu"].update(command=["celery", "worker"]),
            "'celery' is not installed",
        ),
        (
            lambda d, t: d["services"]["worker-cpu"].update(command=["sh", "-c", "capflow deplyo"]),
            "no subcommand 'deplyo'",
        ),
        (
            lambda d, t: d["services"]["worker-cpu"].update(
                command=["python", "-c", "import nosuchmod"]
            ),
            "missing module nosuchmod",
        ),
        (
            lambda d, t: d["services"]["vllm-vlm"].update(
                entrypoint=["python3", "infra/vllm/nosuch.sh"]
            ),
            "no such file",
        ),
        (
            lambda d, t: d["services"]["vllm-vlm"].update(entrypoint=["capflow"]),
            "not a program of this image",
        ),
        (lambda d, t: d["services"]["minio"].update(image="minio/minio:latest"), "not pinned"),
        (
            lambda d, t: d["services"]["worker-gpu"]["build"].update(
                dockerfile="infra/docker/Dockerfile.tpu"
            ),
            "Dockerfile",
        ),
        (
            lambda d, t: d["services"]["postgres"]["environment"].update(
                POSTGRES_PASSWORD="hunter2"
            ),
            "literal value",
        ),
        (lambda d, t: t + "\n# ${UNDOCUMENTED_VAR}\n", "UNDOCUMENTED_VAR"),
        (
            lambda d, t: d["services"]["postgres"]["healthcheck"].update(test=["CMD", "pg_ready"]),
            "healthcheck",
        ),
        (
            lambda d, t: d["services"]["vllm-judge"]["command"].extend(
                ["--api-key", "${VLLM_API_KEY}"]
            ),
            "credential on the command line",
        ),
    ],
)
def test_compose_check_rejects_mutations(mutate, expected):
    problems = mutated_compose(mutate)
    assert any(expected in p for p in problems), problems


def test_env_example_ships_no_secret_values():
    documented = cc.env_example_keys(cc.COMPOSE_DIR / ".env.example")
    assert cc.variable_problems("", documented) == []
    assert cc.variable_problems("", {**documented, "POSTGRES_PASSWORD": "hunter2"})


def test_program_check_knows_external_images():
    assert program_problems(["vllm", "serve", "m"], "vllm/vllm-openai:v0.12.0") == []
    assert program_problems(["pg_isready"], "postgres:17-bookworm") == []
    assert program_problems(["x"], "someone/else:1")
    assert program_problems(["bash"], "postgres:17-bookworm")
