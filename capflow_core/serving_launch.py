"""What ``capflow endpoints up`` starts, and starting it: one server per ``serving.groups`` entry.

Placeholders in ``serving.command`` (and ``vision_args``, ``lora_args``, a group's ``args``)
are filled from the group and the roles it serves; a group's model defaults to its roles'
model in ``models``. Relative paths resolve against the config file's folder.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from capflow_core.config import Config, OpenAIModel, is_path_like
from capflow_core.config_serving import PLACEHOLDER, VISION_ROLES, ServingGroup
from capflow_core.errors import ConfigError
from capflow_core.serving_state import STATE_FILE, TOKEN_ENV, ServerRecord, start_ticks

WILDCARD_HOSTS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class Launch:
    """A server to start: one group, rendered."""

    name: str
    roles: list[str]
    model: str
    served_name: str
    port: int
    url: str
    gpus: str
    gpu_count: int
    flags: dict
    cmd: list[str]


def base_dir(cfg: Config) -> Path:
    """The folder relative paths of ``cfg`` resolve against."""
    return Path(cfg.source).parent if cfg.source else Path.cwd()


def state_path(cfg: Config) -> Path:
    """``<serving.state_dir>/endpoints.json``, the state dir resolved like config paths."""
    state_dir = Path(cfg.serving.state_dir).expanduser()
    return (base_dir(cfg) / state_dir).resolve() / STATE_FILE


def render(template: list[str], values: dict[str, str]) -> list[str]:
    """Fill ``{placeholder}`` in each argument (JSON braces such as ``{"image": 1}`` stay)."""
    return [PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in template]


def plan(cfg: Config) -> list[Launch]:
    """The servers ``serving.groups`` describes, with their command lines.

    Raises:
        ConfigError: no groups, or roles sharing a server whose models differ.
    """
    serving = cfg.serving
    if not serving.groups:
        raise ConfigError(
            "serving.groups is empty: list the servers to start, e.g. "
            "groups: [{role: [vlm, llm, judge], gpus: '0', port: 8000}] (infra/vllm/README.md)"
        )
    host = serving.url_host or (
        socket.gethostname() if serving.host in WILDCARD_HOSTS else serving.host
    )
    return [_launch(cfg, g, i, host) for i, g in enumerate(serving.groups)]


def _launch(cfg: Config, group: ServingGroup, index: int, url_host: str) -> Launch:
    where = f"serving.groups[{index}]"
    specs = {r: cfg.role(r) for r in group.roles}
    models = {s.model for s in specs.values()}
    if len(models) > 1 and (group.model is None or group.served_name is None):
        raise ConfigError(
            f"{where}: roles {group.roles} use different models {sorted(models)}; give each "
            "its own group, or set model and served_name (and the roles' model to that name)"
        )
    spec = next(iter(specs.values()))
    model = _local_path(cfg, group.model or spec.model)
    # the name clients ask for: the role's served model name when the role is served
    served = group.served_name or (spec.model if isinstance(spec, OpenAIModel) else model)
    adapter = group.adapter_name or getattr(spec, "adapter", None) or "adapter"
    flags = (group.flags or cfg.serving.flags).model_dump()
    values = {
        "model": model, "served_name": served, "host": cfg.serving.host,
        "port": str(group.port), "tp": str(group.tp or max(1, group.gpu_count)),
        "gpus": group.gpus, "max_model_len": str(group.max_model_len),
        "gpu_memory_utilization": f"{group.gpu_memory_utilization:g}",
        "max_num_seqs": str(flags["max_inflight"]), "adapter_name": adapter,
        "adapter_path": _local_path(cfg, group.adapter_path or ""),
        "max_lora_rank": str(group.max_lora_rank),
    }  # fmt: skip
    template = list(cfg.serving.command)
    if VISION_ROLES.intersection(group.roles):
        template += cfg.serving.vision_args
    if group.adapter_path:
        template += cfg.serving.lora_args
    return Launch(
        name="-".join(group.roles) + f"-{group.port}",
        roles=list(group.roles),
        model=model,
        served_name=served,
        port=group.port,
        url=f"http://{url_host}:{group.port}/v1",
        gpus=group.gpus,
        gpu_count=group.gpu_count,
        flags=flags,
        cmd=render(template + group.args, values),
    )


def _local_path(cfg: Config, value: str) -> str:
    if is_path_like(value):  # like models.*.model: relative to the config file
        return str((base_dir(cfg) / Path(value).expanduser()).resolve())
    return value


def start(launch: Launch, cfg: Config, log_dir: Path) -> ServerRecord:
    """Start one server in a new session; return its record (does not wait for health)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{launch.name}.log"
    token = secrets.token_hex(16)
    env = {**os.environ, **cfg.serving.env, "CUDA_VISIBLE_DEVICES": launch.gpus, TOKEN_ENV: token}
    with log.open("ab") as out:
        out.write(f"\n# {datetime.now(UTC).isoformat()} {' '.join(launch.cmd)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                launch.cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as err:
            raise ConfigError(
                f"cannot run {launch.cmd[0]!r} for {launch.name}: {err}; install it or fix "
                "serving.command"
            ) from None
    ticks = start_ticks(proc.pid)
    return ServerRecord(
        name=launch.name, roles=launch.roles, url=launch.url, model=launch.model,
        served_name=launch.served_name, gpus=launch.gpus, gpu_count=launch.gpu_count,
        flags=launch.flags, pid=proc.pid, pgid=proc.pid, start_ticks=ticks or -1, token=token,
        cmd=launch.cmd, log=str(log), started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )  # fmt: skip


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host or "0.0.0.0", port))
        except OSError:
            return False
    return True
