"""Check that a container's command names a program its image really has.

Our images (``capflow-cpu``/``capflow-gpu``) install the project of ``pyproject.toml``, so
they have its ``[project.scripts]`` and the console scripts of its dependencies; external
images get a short list of the programs they are known to ship.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import shlex
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
OUR_IMAGES = {
    "capflow-cpu": "infra/docker/Dockerfile.cpu",
    "capflow-gpu": "infra/docker/Dockerfile.gpu",
}
BASE_PROGRAMS = {"sh", "python", "/usr/bin/tini"}  # python:3.11-slim + apt tini
EXTERNAL_PROGRAMS = {
    "vllm/vllm-openai": {"vllm", "python3"},
    "postgres": {"postgres", "pg_isready"},
    "minio/minio": {"minio", "mc"},
    "prefecthq/prefect": {"prefect"},
}
CREDENTIAL_FLAGS = {"--api-key", "--password", "--secret-key", "--token"}
PREFECT_COMMANDS = {"server", "worker", "work-pool", "deploy", "flow-run"}


def image_name(image: str) -> str:
    """``registry/name:tag`` -> ``registry/name`` (an interpolated default is resolved)."""
    if image.startswith("${") and ":-" in image:
        image = image.split(":-", 1)[1].rstrip("}")
    return image.rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image


@cache
def project_scripts() -> dict[str, str]:
    """Console scripts of our images: the project's own and its dependencies'."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    scripts = dict(meta.get("scripts", {}))
    for req in meta["dependencies"]:
        name = req.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip()
        dist = importlib.metadata.distribution(name)
        for ep in dist.entry_points.select(group="console_scripts"):
            scripts.setdefault(ep.name, ep.value)
    return scripts


@cache
def capflow_cli() -> Any:
    """The real `capflow` command group (the Typer app with its lazily mounted subcommands;
    Typer vendors click, so groups are recognised by their ``commands``)."""
    import typer.main

    from flows.cli import app

    return typer.main.get_command(app)


def capflow_problems(argv: list[str]) -> list[str]:
    """Subcommands and options of a ``capflow ...`` command line that the CLI lacks."""
    group, ctx_path = capflow_cli(), ["capflow"]
    rest = argv[1:]
    while rest and hasattr(group, "commands") and not rest[0].startswith("-"):
        sub = group.commands.get(rest[0])
        if sub is None:
            return [f"{' '.join(ctx_path)}: no subcommand {rest[0]!r}"]
        group, ctx_path, rest = sub, [*ctx_path, rest[0]], rest[1:]
    known = {"--help"} | {opt for p in group.params for opt in getattr(p, "opts", [])}
    return [
        f"{' '.join(ctx_path)}: no option {tok}"
        for tok in rest
        if tok.startswith("--") and tok.split("=")[0] not in known
    ]


def python_problems(argv: list[str]) -> list[str]:
    """A ``python -c CODE`` must compile and import only installed modules."""
    if argv[1:2] != ["-c"] or len(argv) < 3:
        return [f"python used without -c CODE: {argv}"]
    try:
        tree = ast.parse(argv[2])
    except SyntaxError as err:
        return [f"python -c does not compile: {err}"]
    mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return [
        f"python -c imports missing module {m}"
        for m in sorted(mods)
        if not importlib.util.find_spec(m)
    ]


def script_problems(script: str, image: str) -> list[str]:
    """Every line of an ``sh -c`` script, checked as its own command."""
    problems = []
    for line in script.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            problems += program_problems(shlex.split(line), image)
    return problems


def program_problems(argv: list[str], image: str) -> list[str]:
    """Why ``argv`` cannot run in ``image`` (empty when it can)."""
    name = image_name(image)
    leaks = [
        f"{image}: credential on the command line ({t}); pass it in the environment"
        for t in argv
        if t.split("=")[0] in CREDENTIAL_FLAGS
    ]
    if leaks:
        return leaks
    if not argv and name in OUR_IMAGES:
        return [f"{image}: empty command"]
    prog = argv[0] if argv else ""
    problems = [
        f"{tok}: no such file in the repo"
        for tok in argv
        if tok.startswith("infra/") and not (REPO / tok).exists()
    ]
    if name in OUR_IMAGES:
        if prog == "sh" and argv[1:2] in (["-c"], ["-ec"]):
            return problems + script_problems(argv[2], image)
        if prog == "python":
            return problems + python_problems(argv)
        if prog not in project_scripts() and prog not in BASE_PROGRAMS:
            return [*problems, f"{image}: {prog!r} is not installed by {OUR_IMAGES[name]}"]
        if prog == "capflow":
            problems += capflow_problems(argv)
        elif prog == "dask":
            subs = {ep.name for ep in importlib.metadata.entry_points(group="dask_cli")}
            if argv[1:2] and argv[1] not in subs:
                problems.append(f"dask has no subcommand {argv[1]!r} (has {sorted(subs)})")
        elif prog == "prefect":
            words = [t for t in argv[1:] if not t.startswith("-")]
            if not words or words[0] not in PREFECT_COMMANDS:
                problems.append(f"prefect subcommand {words[:1]} is not one we use")
        return problems
    allowed = EXTERNAL_PROGRAMS.get(name)
    if allowed is None:
        return [*problems, f"image {image!r} is neither ours nor a known external image"]
    if not argv:
        return problems  # the image's own entrypoint
    if prog not in allowed:
        problems.append(f"{image}: {prog!r} is not a program of this image ({sorted(allowed)})")
    return problems
