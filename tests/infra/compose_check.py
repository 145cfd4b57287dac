"""Static checks of infra/compose/docker-compose.yaml: schema, builds, commands, variables."""

from __future__ import annotations

import json
import re
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.infra.programs import REPO, image_name, program_problems

COMPOSE_DIR = REPO / "infra" / "compose"
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY", re.IGNORECASE)


@cache
def compose_schema() -> dict[str, Any]:
    """The compose specification's JSON schema, as vendored by check-jsonschema."""
    text = (files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
    return json.loads(text)


def schema_problems(doc: dict[str, Any]) -> list[str]:
    """Schema violations, one line each (path: message)."""
    validator = jsonschema.Draft202012Validator(compose_schema())
    return [f"{e.json_path}: {e.message[:200]}" for e in validator.iter_errors(doc)]


def env_example_keys(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of an env file."""
    pairs = (
        ln.split("=", 1)
        for ln in path.read_text().splitlines()
        if "=" in ln and not ln.startswith("#")
    )
    return {k.strip(): v.strip() for k, v in pairs}


def resolve_defaults(value: str) -> str:
    """A string with every ``${VAR:-default}`` replaced by its default."""
    return VAR.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "", value)


def as_argv(value: Any) -> list[str]:
    """A compose command/entrypoint (list or string) as argv, defaults filled in."""
    if value is None:
        return []
    items = value if isinstance(value, list) else value.split()
    return [resolve_defaults(str(v)) for v in items]


def service_argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: entrypoint + command (our images' entrypoint is tini)."""
    return as_argv(service.get("entrypoint")) + as_argv(service.get("command"))


def build_problems(name: str, service: dict[str, Any], base: Path) -> list[str]:
    """The service's build context and Dockerfile must exist."""
    build = service.get("build")
    if build is None:
        return []
    context = base / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile = context / (
        build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
    )
    problems = [] if context.is_dir() else [f"{name}: build context {context} is missing"]
    return problems + (
        [] if dockerfile.is_file() else [f"{name}: Dockerfile {dockerfile} is missing"]
    )


def secret_problems(doc: dict[str, Any]) -> list[str]:
    """Secret-looking environment values must come from ``${VAR}`` interpolation."""
    problems = []
    for name, service in doc.get("services", {}).items():
        env = service.get("environment") or {}
        items = env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env if "=" in e)
        for key, value in items:
            if SECRET_KEY.search(key) and value not in (None, "") and not VAR.fullmatch(str(value)):
                problems.append(f"{name}: {key} has a literal value; use ${{{key}}} from .env")
    return problems


def variable_problems(text: str, documented: dict[str, str]) -> list[str]:
    """Every ``${VAR}`` of the file is in .env.example; secrets there are left empty."""
    used = {m.group(1) for m in VAR.finditer(text)}
    problems = [
        f"${{{v}}} is not documented in .env.example" for v in sorted(used - set(documented))
    ]
    return problems + [
        f".env.example ships a value for secret {k}"
        for k, v in documented.items()
        if SECRET_KEY.search(k) and v
    ]


def compose_problems(doc: dict[str, Any], text: str, base: Path = COMPOSE_DIR) -> list[str]:
    """All static problems of a compose file (``doc`` parsed from ``text``)."""
    problems = schema_problems(doc) + secret_problems(doc)
    problems += variable_problems(text, env_example_keys(base / ".env.example"))
    for name, service in doc.get("services", {}).items():
        problems += build_problems(name, service, base)
        image = service.get("image")
        if not image:
            problems.append(f"{name}: no image")
            continue
        tag = resolve_defaults(image).rsplit(":", 1)
        if len(tag) < 2 or tag[1] == "latest":
            problems.append(f"{name}: image {image} is not pinned to a tag")
        argv = service_argv(service)
        if not argv and image_name(image) in ("capflow-cpu", "capflow-gpu"):
            continue  # the image's own CMD, checked with the Dockerfile
        problems += [f"{name}: {p}" for p in program_problems(argv, resolve_defaults(image))]
        test = (service.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test[:1] == ["CMD"]:
            problems += [
                f"{name} healthcheck: {p}"
                for p in program_problems(test[1:], resolve_defaults(image))
            ]
    return problems


def load_compose(path: Path = COMPOSE_DIR / "docker-compose.yaml") -> tuple[dict[str, Any], str]:
    """The parsed compose file and its text."""
    text = path.read_text()
    return yaml.safe_load(text), text
