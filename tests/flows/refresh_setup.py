"""Helpers for the refresh flow tests: a config file, sample sources, reading the outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from capflow_core.sample_media import generate_samples
from tests.flows.cli_runner import ROOT

KEEP = ("chart.png", "document.png", "photo.jpg", "clip_540p.mp4")


def sample_source(folder: Path, keep: tuple[str, ...] = KEEP) -> Path:
    """A source folder with a few of the demo samples (three images and a video)."""
    for path in generate_samples(folder):
        if path.name not in keep:
            path.unlink()
    return folder


def write_refresh_config(
    path: Path, model: Path, root: str, sources: list[dict[str, Any]], dask: str, **extra: Any
) -> Path:
    """configs/tiny.yaml on the session's tiny model, one root, given sources and Dask."""
    data = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())
    spec = {"backend": "transformers", "model": str(model), "device": "cpu"}
    data["models"] = {"vlm": spec, "llm": spec, "judge": spec}
    data |= {"storage": {"root": root}, "sources": sources, "dask": {"address": dask}}
    data |= extra
    path.write_text(yaml.safe_dump(data))
    return path


def paper_thresholds() -> dict[str, Any]:
    """configs/paper.yaml's quality section and accept rule."""
    paper = yaml.safe_load((ROOT / "configs/paper.yaml").read_text())
    return {"quality": paper["quality"], "judge": paper["judge"]}


def refresh(config: Path, **params: Any) -> Any:
    """Run the capflow-refresh flow in-process; returns its final state."""
    from flows.refresh import capflow_refresh

    return capflow_refresh(config=str(config), return_state=True, **params)
