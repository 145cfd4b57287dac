"""Named crash points for fault-injection tests (like FoundationDB's or TiKV's failpoints).

``CAPFLOW_FAILPOINT=<name>`` makes the process SIGKILL itself when it reaches the point
``<name>``: tests kill a refresh at exact, reproducible moments (see :data:`POINTS`) and
check the rerun loses and duplicates nothing. Unset, a failpoint costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "CAPFLOW_FAILPOINT"
POINTS = (
    "after-manifest-shard",  # ingest: the first shard manifest is committed
    "after-prepared-shard",  # preprocess: the first prepared shard is committed
    "after-captioned-shard",  # caption: the first captioned shard is committed
    "after-gate",  # the gate has run and written its Data Docs; nothing merged
    "before-merge",  # promoting: the staged records are about to be merged
)


def failpoint(name: str) -> None:
    """Die here, at once and without cleanup, when ``$CAPFLOW_FAILPOINT`` names this point."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
