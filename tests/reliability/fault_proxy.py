"""A fault-injecting TCP proxy on 127.0.0.1 for S3 (or any HTTP/1.1) fault tests.

It forwards bytes both ways and, while a fault is armed, spends the fault's budget on the
next requests (a request starts with client bytes after the server last spoke, so keep-alive
connections from a client's pool are hit too):

- ``reset(n)``: the next ``n`` requests get a TCP reset instead of an answer;
- ``stall(n, seconds)``: the next ``n`` requests are held unanswered, then the connection
  closes (a client's read timeout fires first);
- ``cut(n, after, upstream)``: the next ``n`` requests are cut (reset) after ``after``
  bytes of the response, or of the request body when ``upstream``;
- ``slow(bytes_per_s)``: every response is throttled until ``clear()``.

The proxy runs in a child process: a Rust client (deltalake's object_store) may hold the
GIL while it waits on the network, which would freeze proxy threads in the test process.
Every loop ends with ``stop()`` or the parent; :attr:`FaultProxy.stats` counts what happened.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_CHUNK = 16384


@dataclass
class _Fault:
    kind: str = "pass"
    left: int = 0
    every: int = 1
    seconds: float = 0.0
    after: int = 0
    upstream: bool = False
    match: bytes = b""
    seen: int = 0


class _Proxy:
    """The threaded TCP proxy from an ephemeral 127.0.0.1 port to ``target`` (host, port)."""

    def __init__(self, target: tuple[str, int], max_connections: int = 256) -> None:
        self.target = target
        self.stats: Counter[str] = Counter()
        self._fault = _Fault()
        self._rate = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._conns: set[socket.socket] = set()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._thread.start()

    def reset(self, n: int, every: int = 1, match: bytes = b"") -> None:
        """Reset ``n`` requests: every ``every``-th one from now whose head holds ``match``."""
        self._arm(_Fault("reset", n, every, match=match))

    def stall(self, n: int, seconds: float, every: int = 1, match: bytes = b"") -> None:
        """Hold ``n`` requests (as for :meth:`reset`) unanswered for ``seconds``, then close."""
        self._arm(_Fault("stall", n, every, seconds=seconds, match=match))

    def cut(
        self, n: int, after: int, upstream: bool = False, every: int = 1, match: bytes = b""
    ) -> None:
        """Reset ``n`` requests (as for :meth:`reset`) after ``after`` bytes of the response
        (of the request, when ``upstream``)."""
        self._arm(_Fault("cut", n, every, after=after, upstream=upstream, match=match))

    def slow(self, bytes_per_s: float) -> None:
        """Throttle every response to ``bytes_per_s`` (0: full speed)."""
        self._rate = float(bytes_per_s)

    def clear(self) -> None:
        """Back to plain forwarding."""
        self._arm(_Fault())
        self._rate = 0.0

    def stop(self) -> None:
        """Stop accepting, close every connection and join the accept thread."""
        self._stop.set()
        with self._lock:
            conns = list(self._conns)
        for sock in conns:
            _close(sock)
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._server.close()

    def _arm(self, fault: _Fault) -> None:
        with self._lock:
            self._fault = fault

    def _take(self, head: bytes) -> _Fault | None:
        """Spend one unit of the armed fault's budget on a request starting with ``head``;
        the fault to apply, if any."""
        with self._lock:
            self.stats["requests"] += 1
            fault = self._fault
            if fault.kind == "pass" or fault.left <= 0 or fault.match not in head:
                return None
            fault.seen += 1
            if fault.seen % fault.every:
                return None
            fault.left -= 1
            self.stats[fault.kind] += 1
            return fault

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._slots.acquire(timeout=5):
                _close(client, reset=True)
                continue
            self.stats["connections"] += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            _close(client, reset=True)
            self._slots.release()
            return
        with self._lock:
            self._conns.update((client, upstream))
        state = {"request_start": True, "fault": None, "down": 0, "up": 0}
        down = threading.Thread(target=self._pump_down, args=(upstream, client, state))
        down.daemon = True
        down.start()
        try:
            self._pump_up(client, upstream, state)
        finally:
            down.join(timeout=60)
            for sock in (client, upstream):
                _close(sock)
            with self._lock:
                self._conns.difference_update((client, upstream))
            self._slots.release()

    def _received(self, sock: socket.socket) -> Iterator[bytes]:
        """What ``sock`` receives, chunk by chunk, until EOF, an error or the proxy stops."""
        sock.settimeout(0.5)
        while not self._stop.is_set():
            try:
                data = sock.recv(_CHUNK)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            yield data

    def _pump_up(self, client: socket.socket, upstream: socket.socket, state: dict) -> None:
        for data in self._received(client):
            if state["request_start"]:
                state["request_start"], state["down"], state["up"] = False, 0, 0
                state["fault"] = fault = self._take(data)
                if fault and fault.kind == "reset":
                    _close(client, reset=True)
                    break
                if fault and fault.kind == "stall":
                    self._stop.wait(fault.seconds)
                    _close(client, reset=True)
                    break
            fault = state["fault"]
            if fault and fault.kind == "cut" and fault.upstream:
                room = fault.after - state["up"]
                if room < len(data):
                    _send(upstream, data[: max(room, 0)])
                    _close(client, reset=True)
                    _close(upstream, reset=True)
                    break
            state["up"] += len(data)
            if not _send(upstream, data):
                break
        _shutdown(upstream)

    def _pump_down(self, upstream: socket.socket, client: socket.socket, state: dict) -> None:
        for data in self._received(upstream):
            state["request_start"] = True
            fault = state["fault"]
            if fault and fault.kind == "cut" and not fault.upstream:
                room = fault.after - state["down"]
                if room < len(data):
                    _send(client, data[: max(room, 0)])
                    _close(client, reset=True)
                    break
            state["down"] += len(data)
            if not self._throttled_send(client, data):
                break
        _shutdown(client)

    def _throttled_send(self, sock: socket.socket, data: bytes) -> bool:
        if not self._rate:
            return _send(sock, data)
        for i in range(0, len(data), 1024):
            piece = data[i : i + 1024]
            if not _send(sock, piece) or self._stop.wait(len(piece) / max(self._rate, 1.0)):
                return False
        return True


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def _close(sock: socket.socket, reset: bool = False) -> None:
    """Close ``sock``; with ``reset``, abortively (the peer sees ECONNRESET)."""
    try:
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


def _run(target: tuple[str, int], max_connections: int, conn: Any) -> None:
    """The child process: serve the proxy, apply the parent's commands until ``stop``."""
    proxy = _Proxy(target, max_connections)
    conn.send(proxy.port)
    try:
        while True:
            if not conn.poll(1.0):
                continue
            name, kwargs = conn.recv()
            if name == "stats":
                conn.send(dict(proxy.stats))
                continue
            if name != "stop":
                getattr(proxy, name)(**kwargs)
            conn.send(None)
            if name == "stop":
                return
    except (EOFError, OSError):  # the parent went away
        pass
    finally:
        proxy.stop()


class FaultProxy:
    """A fault-injecting proxy to ``target`` (host, port) in a child process.

    Use as a context manager; ``url`` is its ``http://127.0.0.1:PORT``. The modes are
    documented in the module docstring.
    """

    def __init__(self, target: tuple[str, int], max_connections: int = 256) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_run, args=(target, max_connections, child), daemon=True)
        self.port = 0
        self.url = ""

    def __enter__(self) -> FaultProxy:
        self._proc.start()
        if not self._conn.poll(60):
            self._proc.kill()
            raise RuntimeError("the fault proxy did not start")
        self.port = self._conn.recv()
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, name: str, **kwargs: Any) -> Any:
        self._conn.send((name, kwargs))
        if not self._conn.poll(30):
            raise RuntimeError(f"the fault proxy did not answer {name!r}")
        return self._conn.recv()

    def reset(self, n: int, every: int = 1, match: bytes = b"") -> None:
        """Reset ``n`` requests: every ``every``-th one from now whose head holds ``match``."""
        self._call("reset", n=n, every=every, match=match)

    def stall(self, n: int, seconds: float, every: int = 1, match: bytes = b"") -> None:
        """Hold ``n`` requests (as for :meth:`reset`) unanswered for ``seconds``, then close."""
        self._call("stall", n=n, seconds=seconds, every=every, match=match)

    def cut(
        self, n: int, after: int, upstream: bool = False, every: int = 1, match: bytes = b""
    ) -> None:
        """Reset ``n`` requests (as for :meth:`reset`) after ``after`` bytes of the response
        (of the request, when ``upstream``)."""
        self._call("cut", n=n, after=after, upstream=upstream, every=every, match=match)

    def slow(self, bytes_per_s: float) -> None:
        """Throttle every response to ``bytes_per_s`` (0: full speed)."""
        self._call("slow", bytes_per_s=bytes_per_s)

    def clear(self) -> None:
        """Back to plain forwarding."""
        self._call("clear")

    @property
    def stats(self) -> Counter[str]:
        """Connections and requests seen, and faults applied by kind."""
        return Counter(self._call("stats"))

    def stop(self) -> None:
        """Stop the proxy and its process."""
        if self._proc.is_alive():
            with contextlib.suppress(RuntimeError, OSError, EOFError):
                self._call("stop")
            self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=5)
