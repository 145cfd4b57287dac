"""Handing freed memory back to the operating system between large steps.

A long-lived flow runner (a Prefect worker's process, ``capflow serve``) runs refresh after
refresh. Arrow's allocator and glibc's malloc keep freed pages for reuse, so without this
each run's peak would start from the previous run's high-water mark.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)


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
