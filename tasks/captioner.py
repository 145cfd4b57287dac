"""Which captioner a run uses: the workflow, one VLM call, or a registered MetaCaptioner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capflow_core.config import Config, OpenAIModel, TransformersModel
from capflow_core.errors import ConfigError
from capflow_core.storage import filesystem, is_s3


def effective_config(cfg: Config) -> Config:
    """``cfg`` with ``captioner.model`` (e.g. ``model:metacaptioner/latest``) resolved into
    the ``vlm`` role and single mode; unchanged when no registered model is configured."""
    if cfg.captioner.model is None:
        return cfg
    return captioner_config(cfg, cfg.storage.root, cfg.captioner.model)


def captioner_config(cfg: Config, root: str, captioner: str) -> Config:
    """The config that captions as ``captioner`` (capflow | single | model:NAME/N).

    Raises:
        ConfigError: an unknown captioner or registered model.
    """
    if captioner in ("capflow", "single"):
        return cfg.model_copy(
            update={"captioner": cfg.captioner.model_copy(update={"mode": captioner})}
        )
    if not captioner.startswith("model:"):
        raise ConfigError(f"--captioner {captioner!r}: use capflow, single or model:NAME/N")
    from capflow_core.models_store import resolve

    row = resolve(root, cfg.s3, captioner)
    ref = f"model:{row['name']}/{row['number']}"
    vlm = cfg.role("vlm")
    if isinstance(vlm, OpenAIModel):  # vllm serve --lora-modules NAME-N=PATH (infra/vllm/lora.sh)
        spec: Any = vlm.model_copy(update={"adapter": f"{row['name']}-{row['number']}"})
    else:
        spec = TransformersModel(
            backend="transformers",
            model=row["base_model"],
            device=vlm.device,
            dtype=vlm.dtype,
            adapter=_local(row["path"], cfg),
            name=ref,
            max_batch_size=vlm.max_batch_size,
        )
    models = cfg.models.model_copy(update={"vlm": spec})
    mode = cfg.captioner.model_copy(update={"mode": "single"})
    return cfg.model_copy(update={"models": models, "captioner": mode})


def _local(path: str, cfg: Config) -> str:
    """A local copy of an adapter folder kept on S3 (cached by its path)."""
    if not is_s3(path):
        return path
    import hashlib

    local = (
        Path.home()
        / ".cache"
        / "capflow"
        / "adapters"
        / hashlib.sha256(path.encode()).hexdigest()[:16]
    )
    if not local.is_dir():
        fs, remote = filesystem(path, cfg.s3)
        fs.get(remote.rstrip("/") + "/", str(local) + "/", recursive=True)
    return str(local)
