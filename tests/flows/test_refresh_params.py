"""The refresh flow's parameters: a config path or an inline mapping, plus overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from capflow_core.errors import ConfigError
from tests.flows.cli_runner import ROOT


def test_inline_config_with_overrides_is_validated(tmp_path: Path):
    from flows.refresh import load  # not at collection: prefect reads its settings on import

    inline = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())
    cfg = load(inline, {"storage": {"root": str(tmp_path)}, "caption": {"retry_budget": 5}})
    assert cfg.storage.root == str(tmp_path) and cfg.caption.retry_budget == 5
    assert load(str(ROOT / "configs/tiny.yaml"), None).caption.retry_budget == 3
    with pytest.raises(ConfigError, match=r"quality\.max_repeat_ratio"):
        load(inline, {"quality": {"max_repeat_ratio": 2}})
