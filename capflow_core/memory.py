"""Handing freed memory back to the operating system between large steps.

A long-lived flow runner (a Prefect worker's process, ``capflow serve``) runs refresh after
refresh. Arrow's allocator and glibc's malloc keep freed pages for reuse, so without this
each run's peak would start from the previous run's high-water mark.

deltalake's Rust code allocates through its own jemalloc, which keeps freed pages for 10 s
by default; in a runner that goes from one Delta MERGE to the next step at once, those pages
add up run after run. :func:`tune_allocators` (run when ``capflow_core`` is imported, before
anything loads deltalake) has it hand them back within 0.3 s, unless ``_RJEM_MALLOC_CONF`` is
set.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)
# jemalloc's options, read once when deltalake's library starts allocating (tikv-jemallocator
# prefixes the variable). In bench/dataset.py, purging at once (0 ms) made a mixed MERGE 1.8x
# slower; 300 ms stays within run-to-run noise (100k and 1M rows) and keeps the soak flat.
DELTALAKE_JEMALLOC_CONF = "dirty_decay_ms:300,muzzy_decay_ms:0"


def tune_allocators() -> None:
    """Have deltalake's jemalloc return freed pages soon (the user's setting wins)."""
    os.environ.setdefault("_RJEM_MALLOC_CONF", DELTALAKE_JEMALLOC_CONF)


def release_memory() -> None:
    """Return unused Arrow pool memory and free malloc heap pages to the OS (best effort:
    a no-op where the allocator has no such call)."""
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except Exception as err:  # an allocator without the call
        log.debug("arrow release_unused: %s", err)
    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):  # not glibc: no malloc_trim
            ctypes.CDLL(name).malloc_trim(0)
