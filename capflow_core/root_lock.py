"""An exclusive lease on a storage root, so two refreshes of one root never run at once.

The lock is ``<root>/_locks/<name>.json``: who holds it (a random token, host, pid, since
when) and until when. A second refresh waits for it (up to ``storage.lock_wait_s``), then
gives up with :class:`RootBusyError`, naming the holder.

- Local roots: ``flock`` on the file; the kernel drops it when the holder dies.
- S3 roots: conditional writes. Taking the lock is a PUT with ``If-None-Match: *``; the
  holder renews its lease every ``ttl/3`` with ``If-Match: <etag>``; a lease not renewed for
  ``ttl`` seconds (or held by a dead process on this host) is taken over with ``If-Match``
  on the stale object's etag, so of two waiters only one wins. The endpoint must support
  conditional writes (AWS S3, MinIO, moto do). Release reads, checks the token and
  deletes: not conditional, but only the holder ever deletes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from capflow_core.config import S3Config
from capflow_core.errors import InfrastructureError
from capflow_core.storage import filesystem, is_s3, join_under

log = logging.getLogger("capflow.root_lock")
POLL_S = 1.0
_HELD: dict[str, _LocalLock | _S3Lease] = {}  # lock URI -> this process's held lock


class RootBusyError(InfrastructureError):
    """Another process held the storage root's lock for longer than we may wait."""


def lock_uri(root: str, name: str = "refresh") -> str:
    """Where the lock object ``name`` of a storage root lives."""
    return join_under(root, "_locks", f"{name}.json")


def holds(root: str, name: str = "refresh") -> bool:
    """Whether this process holds the lock ``name`` of ``root`` now (an S3 lease only while
    its last renewal is younger than its TTL), so no other capflow writer can be at work."""
    lock = _HELD.get(lock_uri(root, name))
    return lock is not None and lock.fresh()


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _holder(token: str, since: str, ttl_s: float | None = None) -> bytes:
    body: dict[str, Any] = {
        "token": token,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": since,
    }
    if ttl_s is not None:
        body["expires_at"] = time.time() + ttl_s
    return json.dumps(body).encode()


def _describe(holder: dict[str, Any]) -> str:
    text = f"host {holder.get('host')} pid {holder.get('pid')} since {holder.get('since')}"
    if "expires_at" not in holder:
        return text
    left = holder["expires_at"] - time.time()
    return text + (f", lease for {left:.0f} s more" if left > 0 else ", lease ran out")


def _dead(holder: dict[str, Any]) -> bool:
    """Whether the holder is a process of this host that no longer runs, or its lease ran out."""
    if holder.get("expires_at", 0) < time.time():
        return True
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@contextmanager
def root_lock(
    root: str,
    s3: S3Config,
    wait_s: float,
    ttl_s: float,
    name: str = "refresh",
    notify: Callable[[str], None] | None = None,
) -> Iterator[str]:
    """Hold the exclusive lock ``name`` of ``root`` for the ``with`` block.

    Args:
        root: the storage root (local path or ``s3://`` URI).
        s3: S3 settings for an ``s3://`` root.
        wait_s: how long to wait for another holder (0: fail at once).
        ttl_s: lease length on S3 (renewed every ``ttl_s / 3`` while held).
        name: which lock (one per kind of exclusive work).
        notify: called once with a message when it has to wait (default: logged).

    Yields:
        The lock's URI.

    Raises:
        RootBusyError: another process still held it after ``wait_s`` seconds.
    """
    uri = lock_uri(root, name)
    lock = _S3Lease(uri, s3, ttl_s) if is_s3(root) else _LocalLock(uri)
    deadline = time.monotonic() + wait_s
    announced = False
    while not lock.try_acquire():
        if time.monotonic() >= deadline:
            raise RootBusyError(
                f"another refresh holds the storage root {root} ({_describe(lock.holder)}); "
                f"waited {wait_s:g} s. Rerun later, or raise storage.lock_wait_s"
            )
        if not announced:
            (notify or log.info)(f"waiting for the lock {uri}: held by {_describe(lock.holder)}")
            announced = True
        time.sleep(min(POLL_S, max(0.05, deadline - time.monotonic())))
    _HELD[uri] = lock
    try:
        yield uri
    finally:
        _HELD.pop(uri, None)
        try:
            lock.release()
        except Exception as err:  # the lease then lapses after ttl_s
            log.warning("could not release the lock %s: %s", uri, err)


class _LocalLock:
    """``flock`` on ``<root>/_locks/<name>.json``; the file holds the holder's details."""

    def __init__(self, uri: str) -> None:
        _, self.path = filesystem(uri, S3Config())
        self.holder: dict[str, Any] = {}
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        import fcntl

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                self.holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                self.holder = {}
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder(uuid.uuid4().hex, _now_iso()), 0)
        self._fd = fd
        return True

    def fresh(self) -> bool:
        """Held: the kernel keeps a ``flock`` until the file is closed."""
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


class _S3Lease:
    """A lease object on S3 taken and renewed with conditional PUTs (see the module doc)."""

    def __init__(self, uri: str, s3: S3Config, ttl_s: float) -> None:
        self.fs, self.path = filesystem(uri, s3)
        self.bucket, self.key, _ = self.fs.split_path(self.path)
        self.ttl_s = ttl_s
        self.token, self.since = uuid.uuid4().hex, _now_iso()
        self.holder: dict[str, Any] = {}
        self._etag: str | None = None
        self._renewed_at = 0.0  # time.monotonic() of the last PUT that kept the lease
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _read(self) -> tuple[dict[str, Any], str] | None:
        """The lock object's holder and etag, or None when there is none."""
        from fsspec.asyn import sync

        async def get() -> tuple[bytes, str]:
            out = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            async with out["Body"] as body:
                return await body.read(), out["ETag"]

        try:
            data, etag = sync(self.fs.loop, get)
        except FileNotFoundError:
            return None
        try:
            return json.loads(data), etag
        except ValueError:
            return {}, etag

    def _put(self, **condition: str) -> bool:
        """Write our holder record under ``condition``; whether we hold the lease now."""
        sent = time.monotonic()  # the lease runs from the PUT, not from our reading it back
        try:
            out = self.fs.pipe_file(
                self.path, _holder(self.token, self.since, self.ttl_s), **condition
            )
        except OSError:  # lost the condition (412), or the object went (404)
            out = None  # a retried PUT whose first try succeeded also ends here: look
        found = self._read()
        if found is None or found[0].get("token") != self.token:
            if found is not None:
                self.holder = found[0]
            return False
        self._etag = (out or {}).get("ETag") or found[1]
        self._renewed_at = sent
        return True

    def fresh(self) -> bool:
        """Held, and renewed within the TTL (a waiter takes over only after that)."""
        return self._renewed_at > 0 and time.monotonic() - self._renewed_at < self.ttl_s

    def try_acquire(self) -> bool:
        self.since = _now_iso()
        found = self._read()
        if found is None:
            won = self._put(mode="create")
        elif _dead(found[0]):
            log.warning("taking over the stale lock %s (%s)", self.path, _describe(found[0]))
            won = self._put(IfMatch=found[1])
        else:
            self.holder, won = found[0], False
        if won:
            self._beat = threading.Thread(target=self._renew, name="root-lock", daemon=True)
            self._beat.start()
        return won

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self._put(IfMatch=self._etag or "*"):
                    self._renewed_at = 0.0
                    log.error("lost the lock %s to %s", self.path, _describe(self.holder))
                    return
            except Exception as err:  # a failed renewal is retried at the next beat
                log.warning("could not renew the lock %s: %s", self.path, err)

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=30)
        found = self._read()
        if found is not None and found[0].get("token") == self.token:
            self.fs.rm_file(self.path)
