"""Peak resident memory and open file descriptors of a set of processes, per phase.

Linux keeps each process's high-water mark of resident memory (``VmHWM`` in
``/proc/PID/status``, what ``getrusage`` reports as ``ru_maxrss``). It only ever rises, so a
process-lifetime maximum cannot compare two phases; writing ``5`` to
``/proc/PID/clear_refs`` resets it to the current RSS (Linux >= 4.0). :class:`PhasePeak`
does that at the start of a phase and reads it at the end: the exact peak within the phase.
Where the reset is refused (an unusual kernel or sandbox), a background thread sampling
RSS every 20 ms stands in (it can miss spikes shorter than that).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

_HWM = re.compile(r"^VmHWM:\s+(\d+) kB", re.M)
_RSS = re.compile(r"^VmRSS:\s+(\d+) kB", re.M)
SAMPLE_S = 0.02


def _status_kib(pid: int, pattern: re.Pattern[str]) -> int:
    match = pattern.search(Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) if match else 0


def rss_mib(pid: int) -> float:
    """Current resident memory of ``pid`` in MiB."""
    return _status_kib(pid, _RSS) / 1024


def open_fds(pid: int) -> int:
    """How many file descriptors ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def _reset_hwm(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class PhasePeak:
    """Peak RSS (MiB) of each process in ``pids`` between ``__enter__`` and ``__exit__``.

    Attributes:
        pids: the processes watched (e.g. this one and the Dask workers).
        peak_mib: after exit, the phase's peak per pid.
        exact: whether every peak came from the kernel's reset high-water mark.
    """

    pids: list[int]
    peak_mib: dict[int, float] = field(default_factory=dict)
    exact: bool = True
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> PhasePeak:
        self.exact = all([_reset_hwm(pid) for pid in self.pids])
        self.peak_mib = {pid: rss_mib(pid) for pid in self.pids}
        if not self.exact:
            self._thread = threading.Thread(target=self._sample, name="soak-rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        else:
            self.peak_mib = {pid: _status_kib(pid, _HWM) / 1024 for pid in self.pids}

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            for pid in self.pids:
                self.peak_mib[pid] = max(self.peak_mib[pid], rss_mib(pid))
