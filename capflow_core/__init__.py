"""CapFlow engine: multi-agent visual captioning with open-source models.

``from capflow_core import CapFlow`` (imported lazily so light users stay light).
"""

from __future__ import annotations

from typing import Any

from capflow_core.memory import tune_allocators

tune_allocators()  # before any module loads deltalake

__all__ = ["CapFlow", "Sample"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from capflow_core import engine

        return getattr(engine, name)
    raise AttributeError(name)
