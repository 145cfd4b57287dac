"""A small Dockerfile reader and the static checks our two images must pass."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path

from tests.infra.programs import REPO, program_problems


def instructions(text: str) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` per instruction; ``\\`` continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, args = full.partition(" ")
            out.append((keyword.upper(), args.strip()))
    if pending:
        raise ValueError("the last instruction ends with a line continuation")
    return out


def exec_form(args: str) -> list[str]:
    """A CMD/ENTRYPOINT's argv: JSON (exec form) or shell form."""
    return json.loads(args) if args.startswith("[") else ["sh", "-c", args]


def copy_sources(args: str) -> list[str]:
    """The sources of a COPY (flags dropped; ``--from`` copies have none in the context)."""
    parts = shlex.split(args)
    if any(p.startswith("--from") for p in parts):
        return []
    parts = [p for p in parts if not p.startswith("--")]
    return parts[:-1]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether a .dockerignore (last matching pattern wins, ``!`` re-includes) drops ``path``."""
    drop = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        regex = re.escape(pat).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if (
            re.fullmatch(regex, path)
            or re.fullmatch(regex, path + "/x")
            or fnmatch.fnmatch(path, pat)
        ):
            drop = not neg
    return drop


def dockerfile_problems(dockerfile: Path, repo: Path = REPO) -> list[str]:
    """Everything that would break ``docker build -f DOCKERFILE <repo root>``."""
    steps = instructions(dockerfile.read_text())
    problems: list[str] = []
    ignore_file = dockerfile.with_name(dockerfile.name + ".dockerignore")
    patterns = (
        [
            ln.strip()
            for ln in ignore_file.read_text().splitlines()
            if ln.strip() and not ln.startswith("#")
        ]
        if ignore_file.exists()
        else []
    )
    if not steps or steps[0][0] != "FROM":
        problems.append("the first instruction is not FROM")
    for keyword, args in steps:
        if keyword == "FROM":
            image = args.split()[0]
            tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
            if not tag or tag == "latest":
                problems.append(f"base image {image!r} is not pinned to a tag")
        elif keyword in ("COPY", "ADD"):
            for src in copy_sources(args):
                if not (repo / src).exists():
                    problems.append(f"COPY source {src!r} does not exist in the repo")
                elif ignored(src, patterns):
                    problems.append(f"COPY source {src!r} is excluded by {ignore_file.name}")
    runs = [args for keyword, args in steps if keyword == "RUN"]
    pip = [r for r in runs if "pip install" in r]
    if any("-c requirements/constraints.txt" not in r for r in pip):
        problems.append("a pip install ignores requirements/constraints.txt")
    project = [i for i, r in enumerate(pip) if re.search(r"(-e )?\.(\s|$)", r)]
    torch = [i for i, r in enumerate(pip) if " torch" in r]
    if not project or not torch or torch[0] > project[0]:
        problems.append("torch must be installed before the project (as the Makefile does)")
    apt = " ".join(r for r in runs if "apt-get install" in r)
    if "tesseract-ocr" not in apt:
        problems.append("tesseract-ocr is not installed (OCR tool agent)")
    entry = [exec_form(a) for k, a in steps if k == "ENTRYPOINT"]
    cmd = [exec_form(a) for k, a in steps if k == "CMD"]
    for argv in entry[-1:]:
        if argv[0] == "/usr/bin/tini" and " tini" not in apt:
            problems.append("ENTRYPOINT tini is not apt-installed")
    if cmd and project:
        problems += program_problems(cmd[-1], "capflow-cpu")
    elif cmd:
        problems.append(f"CMD {cmd[-1]} but the project is never installed")
    return problems
