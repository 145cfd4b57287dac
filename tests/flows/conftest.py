from pathlib import Path

import pytest

from tests.flows.cli_runner import write_config


@pytest.fixture
def tiny_cfg(tmp_path: Path, tiny_model_dir: Path) -> Path:
    spec = {"backend": "transformers", "model": str(tiny_model_dir), "device": "cpu"}
    return write_config(tmp_path, {"vlm": spec, "llm": spec, "judge": spec})
