"""Find and run a headless Chromium for report tests (screenshot and DOM dump)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
    "--virtual-time-budget=5000",
    # Any network lookup fails: a page that needed the network would render broken.
    "--host-resolver-rules=MAP * ~NOTFOUND",
)


def find_chromium() -> str | None:
    """The path of the first Chromium-like browser on PATH, or None."""
    for name in BINARIES:
        if path := shutil.which(name):
            return path
    return None


def _run(binary: str, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [binary, *FLAGS, f"--user-data-dir={profile}", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def screenshot(binary: str, page: Path, out: Path, timeout: float = 60) -> Path:
    """Render ``page`` (a local HTML file) to the PNG ``out``; returns ``out``."""
    _run(binary, [f"--screenshot={out}", page.resolve().as_uri()], timeout)
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot at {out}")
    return out


def dump_dom(binary: str, page: Path, timeout: float = 60) -> str:
    """The serialized DOM of ``page`` (a local HTML file) after loading it."""
    return _run(binary, ["--dump-dom", page.resolve().as_uri()], timeout).stdout
