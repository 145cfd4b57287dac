"""Allocator settings and memory release for long-lived flow runners."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from capflow_core.memory import DELTALAKE_JEMALLOC_CONF, release_memory

REPO = Path(__file__).resolve().parents[2]


def _conf_seen(env: dict[str, str]) -> str:
    """The jemalloc options a fresh process has once capflow_core and deltalake are loaded."""
    code = "import capflow_core, deltalake, os; print(os.environ.get('_RJEM_MALLOC_CONF'))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_deltalake_jemalloc_returns_pages_unless_the_user_says_otherwise():
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    assert _conf_seen(env) == DELTALAKE_JEMALLOC_CONF
    assert _conf_seen(env | {"_RJEM_MALLOC_CONF": "dirty_decay_ms:5000"}) == "dirty_decay_ms:5000"


def test_release_memory_hands_back_freed_heap():
    def rss_kib() -> int:
        status = Path("/proc/self/status").read_text()
        return int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS:")).split()[1])

    release_memory()
    before = rss_kib()
    blocks = [bytearray(64 * 1024) for _ in range(4096)]  # 256 MiB in small heap blocks
    del blocks[:-1]  # the last block pins the top of the heap: free() alone cannot shrink it
    grown = rss_kib()
    release_memory()
    assert grown - before > 200 * 1024
    assert rss_kib() - before < 64 * 1024
