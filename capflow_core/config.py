"""Typed configuration, loaded from YAML and validated in one place.

Rule (docs/configuration.md): an explicit path wins, else ``$CAPFLOW_CONFIG``, else the packaged
``configs/tiny.yaml``. Relative paths in a config resolve against the config file's folder;
a model value is a path when it starts with ``/``, ``./``, ``../`` or ``~``, else a hub id.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from capflow_core.config_finetune import FinetuneConfig, LoraConfig
from capflow_core.config_models import (  # re-exported: import config sections from here
    Endpoint,
    Models,
    ModelSpec,
    OpenAIModel,
    StrictModel,
    TransformersModel,
)
from capflow_core.config_orchestration import OrchestrationConfig
from capflow_core.config_preprocess import DaskConfig, PreprocessConfig
from capflow_core.config_quality import CaptionStageConfig, QualityConfig, RateBounds, WordBounds
from capflow_core.config_serving import ServingConfig, ServingGroup
from capflow_core.config_sources import IngestConfig, S3Config, SourceConfig, StorageConfig
from capflow_core.errors import ConfigError

__all__ = [
    "CaptionStageConfig",
    "DaskConfig",
    "Endpoint",
    "FinetuneConfig",
    "IngestConfig",
    "LoraConfig",
    "ModelSpec",
    "Models",
    "OpenAIModel",
    "OrchestrationConfig",
    "PreprocessConfig",
    "QualityConfig",
    "RateBounds",
    "S3Config",
    "ServingConfig",
    "ServingGroup",
    "SourceConfig",
    "StorageConfig",
    "TransformersModel",
    "WordBounds",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGED_CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_CONFIG = PACKAGED_CONFIG_DIR / "tiny.yaml"


class Generation(StrictModel):
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    max_tokens_cap: Annotated[int, Field(ge=1)] | None = Field(
        None, description="caps every agent's max_tokens (tiny model: keep it small)"
    )
    seed: int = 0
    max_completion_tokens: Annotated[int, Field(ge=16, le=131_072)] = Field(
        2048,
        description="hard bound on one call's reply: every request is clamped to it, and a "
        "free-text reply reported longer is an item error",
    )
    max_prompt_tokens: Annotated[int, Field(ge=256, le=1_048_576)] = Field(
        32_768,
        description="a call whose prompt (text, image and video tokens) is longer is an item "
        "error, never silently truncated",
    )
    request_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = Field(
        600.0,
        description="in-process backend: a request still generating after this is stopped "
        "and is an item error (the openai backend uses its model's timeout_s per attempt)",
    )
    sample_timeout_s: Annotated[float, Field(gt=0, le=604_800)] = Field(
        3600.0,
        description="one sample's model work, route to judge; past it the sample is an item "
        "error and its requests are abandoned",
    )


class AcceptRule(StrictModel):
    """A caption is accepted when every criterion >= min_each (and the mean >= min_mean)."""

    min_each: Annotated[int, Field(ge=1, le=3)] = 3
    min_mean: Annotated[float, Field(ge=1, le=3)] | None = None

    def describe(self) -> str:
        rule = f"min_each>={self.min_each}"
        return rule if self.min_mean is None else f"{rule},min_mean>={self.min_mean:g}"

    def accepts(self, scores: dict[str, int]) -> bool:
        values = list(scores.values())
        if not values or min(values) < self.min_each:
            return False
        return self.min_mean is None or sum(values) / len(values) >= self.min_mean


class JudgeConfig(StrictModel):
    accept: AcceptRule = AcceptRule()


class RouterConfig(StrictModel):
    enabled: bool = True
    video_domain: str = "video_temporal"


class CaptionerConfig(StrictModel):
    mode: Literal["capflow", "single"] = "capflow"
    model: str | None = Field(
        None,
        pattern=r"^model:[A-Za-z0-9._-]+/(latest|[0-9]+)$",
        description="caption in single mode with a registered fine-tuned captioner, "
        "e.g. model:metacaptioner/latest (resolved against the storage root's models table)",
    )


class VideoConfig(StrictModel):
    sampler: Literal["pyav", "decord"] = "pyav"
    num_frames: Annotated[int, Field(ge=1, le=512)] | None = 8
    fps: Annotated[float, Field(gt=0, le=60)] | None = None
    max_frames: Annotated[int, Field(ge=1, le=1024)] = 32
    frame_max_side: Annotated[int, Field(ge=28, le=4096)] = Field(
        768, description="sampled frames are downscaled so their longer side fits"
    )
    max_duration_s: Annotated[float, Field(gt=0)] = Field(
        3600.0, description="longer videos are rejected (too_long) before any frame decodes"
    )
    max_pixels: Annotated[int, Field(ge=1)] = Field(
        7680 * 4320, description="per frame, from the header: larger is frame_too_large"
    )
    max_bytes: Annotated[int, Field(ge=1)] = Field(
        2 * 1024**3, description="larger video files are rejected (file_too_large)"
    )
    decode_timeout_s: Annotated[float, Field(gt=0)] = Field(
        300.0, description="sampling that runs longer is stopped (decode_timeout)"
    )

    @model_validator(mode="after")
    def _one_rule(self) -> VideoConfig:
        if (self.num_frames is None) == (self.fps is None):
            raise ValueError("set exactly one of video.num_frames or video.fps")
        return self


class ImageConfig(StrictModel):
    max_pixels: Annotated[int, Field(ge=1)] = 178_956_970  # PIL's decompression-bomb limit
    max_bytes: Annotated[int, Field(ge=1)] = Field(
        64 * 1024**2, description="larger image files are rejected (file_too_large)"
    )


class OCRConfig(StrictModel):
    enabled: bool = True
    lang: str = "eng"
    timeout_s: Annotated[float, Field(gt=0)] = 30.0
    max_chars: Annotated[int, Field(ge=1)] = 4000


class ApiPrice(StrictModel):
    """Prices of the commercial API we compare against (USD per million tokens)."""

    name: str = "gpt-4.1"
    usd_per_mtok_input: Annotated[float, Field(ge=0)] = 2.0
    usd_per_mtok_output: Annotated[float, Field(ge=0)] = 8.0
    image_tokens: Annotated[int, Field(ge=0)] = 765


class CostConfig(StrictModel):
    usd_per_gpu_hour: Annotated[float, Field(ge=0)] = 3.5
    gpus: Annotated[int, Field(ge=0)] = Field(1, description="GPUs behind in-process models")
    api: ApiPrice = ApiPrice()


class Concurrency(StrictModel):
    samples_in_flight: Annotated[int, Field(ge=1, le=100_000)] = 32


class Config(StrictModel):
    """The whole configuration. ``source`` is the file it came from (None for inline)."""

    models: Models
    generation: Generation = Generation()
    router: RouterConfig = RouterConfig()
    judge: JudgeConfig = JudgeConfig()
    captioner: CaptionerConfig = CaptionerConfig()
    video: VideoConfig = VideoConfig()
    image: ImageConfig = ImageConfig()
    ocr: OCRConfig = OCRConfig()
    cost: CostConfig = CostConfig()
    concurrency: Concurrency = Concurrency()
    storage: StorageConfig = StorageConfig()
    sources: list[SourceConfig] = Field(default_factory=list)
    s3: S3Config = S3Config()
    ingest: IngestConfig = IngestConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    dask: DaskConfig = DaskConfig()
    caption: CaptionStageConfig = CaptionStageConfig()
    quality: QualityConfig = QualityConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    serving: ServingConfig = ServingConfig()
    registry: str | None = Field(
        None, description="a user registry file overlaying the packaged one"
    )
    source: str | None = None

    def role(self, name: str) -> TransformersModel | OpenAIModel:
        """The model spec of a role; ``eval_judge`` falls back to ``judge``."""
        if name == "eval_judge":
            return self.models.eval_judge or self.models.judge
        return getattr(self.models, name)


def is_path_like(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~"))


def _resolve(value: str, base: Path) -> str:
    if "://" in value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    if isinstance(data.get("registry"), str):
        data["registry"] = _resolve(data["registry"], base)
    storage = data.get("storage")
    if isinstance(storage, dict) and isinstance(storage.get("root"), str):
        storage["root"] = _resolve(storage["root"], base)
    elif storage is None:
        data["storage"] = {"root": _resolve(StorageConfig().root, base)}
    for src in data.get("sources") or []:
        if isinstance(src, dict) and isinstance(src.get("uri"), str) and src["uri"]:
            src["uri"] = _resolve(src["uri"], base)
    for spec in (data.get("models") or {}).values():
        if isinstance(spec, dict) and is_path_like(str(spec.get("model", ""))):
            spec["model"] = _resolve(spec["model"], base)
        if isinstance(spec, dict) and isinstance(spec.get("endpoints_file"), str):
            spec["endpoints_file"] = _resolve(spec["endpoints_file"], base)
    return data


def format_validation_error(err: ValidationError, where: str) -> str:
    lines = [f"invalid configuration in {where}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-", "tagged-")))
        if e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key; remove it or check its spelling")
        elif e["type"] == "missing":
            lines.append(f"  {loc}: required key is missing")
        else:
            got = e.get("input")
            shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
            lines.append(f"  {loc}: {e['msg']} (got {shown})")
    return "\n".join(lines)


def config_from_dict(
    data: dict[str, Any], base: Path | None = None, where: str = "<inline>"
) -> Config:
    """Validate a config mapping; relative paths resolve against ``base`` (default: cwd)."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {where}: expected a mapping at the top level")
    data = _resolve_paths(_deep_copy(data), base or Path.cwd())
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, where)) from None


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None
) -> Config:
    """Load and validate a config file (see the module docstring for which one).

    Args:
        path: the YAML file; None applies the ``$CAPFLOW_CONFIG`` / packaged default rule.
        overrides: nested keys merged over the file's content before validation.
    """
    chosen = Path(path or os.environ.get("CAPFLOW_CONFIG") or DEFAULT_CONFIG).expanduser()
    if not chosen.is_file():
        raise ConfigError(
            f"config file not found: {chosen}; pass --config PATH or set CAPFLOW_CONFIG "
            f"(packaged: {', '.join(sorted(p.name for p in PACKAGED_CONFIG_DIR.glob('*.yaml')))})"
        )
    try:
        data = yaml.safe_load(chosen.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"invalid YAML in {chosen}: {err}") from None
    if overrides:
        data = deep_merge(data, overrides)
    data["source"] = str(chosen.resolve())
    return config_from_dict(data, chosen.resolve().parent, str(chosen))


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A new mapping: ``over``'s keys replace ``base``'s, recursing into nested mappings."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def config_hash(cfg: Config) -> str:
    """A short, stable hash of the effective configuration (not where it was loaded from)."""
    import hashlib

    text = cfg.model_dump_json(exclude={"source"})
    return hashlib.sha256(text.encode()).hexdigest()[:16]
