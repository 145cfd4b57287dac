"""Named crash points for fault-injection tests (like FoundationDB's or TiKV's failpoints).

``CAPFLOW_FAILPOINT=<name>`` makes the process SIGKILL itself when it reaches the point
``<name>``: tests kill a refresh at exact, reproducible moments (after the first prepared
shard commits, after the first captioned shard, with records staged but not merged) and
check the rerun loses and duplicates nothing. Unset, a failpoint costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "CAPFLOW_FAILPOINT"
POINTS = ("after-prepared-shard", "after-captioned-shard", "before-merge")


def failpoint(name: str) -> None:
    """Die here, at once and without cleanup, when ``$CAPFLOW_FAILPOINT`` names this point."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
