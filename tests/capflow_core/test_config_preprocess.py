"""The `preprocess` and `dask` config sections: defaults and errors that name the key."""

from __future__ import annotations

import pytest
import yaml

from capflow_core.config import config_from_dict
from capflow_core.errors import ConfigError
from tests.flows.cli_runner import ROOT

TINY = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())


def test_defaults_follow_the_paper():
    cfg = config_from_dict(TINY)
    pre = cfg.preprocess
    assert (pre.min_short_edge, pre.max_aspect_ratio, pre.min_video_height) == (512, 2.0, 480)
    assert (pre.max_pixels, pre.near_dup_distance, pre.items_per_task) == (1024 * 1024, 4, 32)
    assert (cfg.dask.address, cfg.dask.n_workers) == (None, None)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"preprocess": {"items_per_task": 0}}, "preprocess.items_per_task"),
        ({"preprocess": {"min_short_edge_px": 5}}, "preprocess.min_short_edge_px: unknown key"),
        ({"dask": {"n_workers": 0}}, "dask.n_workers"),
    ],
)
def test_bad_values_name_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(TINY | section)
