"""The CapFlow config shipped with a stack must load and match the servers it names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from tests.infra.programs import REPO

COMMON_SH = REPO / "infra" / "vllm" / "common.sh"


def recipe_flags() -> tuple[set[str], set[str]]:
    """The flags every server gets (COMMON_FLAGS) and vision servers add (VISION_FLAGS)."""
    text = COMMON_SH.read_text()

    def flags(name: str) -> set[str]:
        block = re.search(rf"^{name}=\((.*?)\)", text, re.S | re.M)
        assert block, f"{name} not found in {COMMON_SH}"
        return set(re.findall(r"--[a-z-]+", block.group(1)))

    return flags("COMMON_FLAGS"), flags("VISION_FLAGS")


def flag_value(argv: list[str], flag: str) -> str | None:
    """The value after ``flag`` in ``argv``."""
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def config_problems(
    text: str, servers: dict[str, dict[str, Any]], dask: dict[str, int]
) -> list[str]:
    """Load the config as CapFlow does; every endpoint must be a vllm server of ``servers``
    (host -> {argv: vllm serve argv, gpus: GPUs given to it}) serving the role's model on
    the URL's port with TP = gpus = the endpoint's ``gpus``; dask.address must be a
    scheduler of ``dask`` (host -> port)."""
    from capflow_core.config import config_from_dict
    from capflow_core.errors import ConfigError

    try:
        cfg = config_from_dict(yaml.safe_load(text), base=Path("/etc/capflow"))
    except ConfigError as err:
        return [str(err)]
    common, vision = recipe_flags()
    problems = []
    for role in ("vlm", "llm", "judge"):
        spec = cfg.role(role)
        for ep in getattr(spec, "endpoints", []):
            url = urlparse(ep.url)
            server = servers.get(url.hostname)
            if server is None:
                problems.append(f"{role}: endpoint {ep.url} names no vllm server")
                continue
            argv = server["argv"]
            want = common | (vision if ep.video != "none" else set())
            problems += [
                f"{role}: {url.hostname} lacks recipe flag {f}" for f in sorted(want - set(argv))
            ]
            if argv[2:3] != [spec.model]:
                problems.append(
                    f"{role}: {url.hostname} serves {argv[2:3]}, config says {spec.model}"
                )
            if flag_value(argv, "--port") != str(url.port):
                problems.append(
                    f"{role}: {url.hostname} listens on {flag_value(argv, '--port')}, not {url.port}"
                )
            tp = int(flag_value(argv, "--tensor-parallel-size") or 1)
            if not tp == server["gpus"] == ep.gpus:
                problems.append(
                    f"{role}: TP {tp}, GPUs {server['gpus']} and endpoint gpus {ep.gpus} differ"
                )
    address = urlparse(cfg.dask.address or "")
    if dask.get(address.hostname or "") != address.port:
        problems.append(f"dask.address {cfg.dask.address} is not a scheduler of the stack")
    if not cfg.storage.root.startswith("s3://"):
        problems.append(f"storage.root {cfg.storage.root} is not on S3")
    return problems
