"""pytest plugin: fixtures and helpers for the HTTP exchange tests (tests/test_http_exchange.py,
tests/test_tls_direct.py).

``http_impl``   each implementation of the exchange: native ``ebsfast._http`` and the twin
                ``ebsfast._http_py``. ``EBSFAST_NO_EXTENSIONS=1`` skips the native parameter.
``raw_server``  a factory of tiny TCP servers on 127.0.0.1 that answer each request with a script
                of actions (bytes to send, pauses, a clean close or a reset), for the byte-exact
                cases a real server never produces (over TLS too: ``raw_server(..., tls=True)``).
``block``, ``get``, ``ok_head``, ``segments``, ``spins_while_waiting``: bytes and checks the
                tests share.
"""
from __future__ import annotations

import importlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType

import numpy as np
import pytest

from ebsfast.testing import BLOCK_SIZE

NO_EXTENSIONS = os.environ.get("EBSFAST_NO_EXTENSIONS", "") not in ("", "0")

# One step of a scripted answer: bytes to send, seconds to pause, or "close" / "reset" (and for
# TLS "close_notify": the TLS close alert, then the close; a plain "close" of a TLS connection
# sends no alert, an EOF in violation of the protocol; "garbage": plain bytes under the TLS).
Action = bytes | float | str
Script = Sequence[Action]


def load_http_impl(kind: str) -> ModuleType:
    if kind == "native":
        if NO_EXTENSIONS:
            pytest.skip("EBSFAST_NO_EXTENSIONS=1: the native HTTP module is not under test")
        return importlib.import_module("ebsfast._http")
    return importlib.import_module("ebsfast._http_py")


@pytest.fixture(params=["native", "python"])
def http_impl(request: pytest.FixtureRequest) -> ModuleType:
    return load_http_impl(request.param)


def reset(conn: socket.socket) -> None:
    """Close with an RST rather than a FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def read_request(conn: socket.socket, buf: bytearray) -> bytes | None:
    """One request (head and Content-Length body) off the connection, or None at EOF."""
    while b"\r\n\r\n" not in buf:
        # small reads: the tracemalloc test counts this thread's allocations too
        data = conn.recv(4096)
        if not data:
            return None
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(buf) < end + length:
        data = conn.recv(1 << 20)
        if not data:
            return None
        buf += data
    request = bytes(buf[:end + length])
    del buf[:end + length]
    return request


class RawServer:
    """Answers the n-th request on each connection with ``scripts[n]`` (the last one repeats).
    Every request received is kept in ``requests``."""

    def __init__(self, scripts: Sequence[Script], tls_dir: str | None = None):
        self.scripts = list(scripts)
        self.ca_file: str | None = None
        self._ctx = None
        if tls_dir is not None:
            from ebsfast.testing._tls import make_certificate, server_context

            cert, key = make_certificate(tls_dir, "127.0.0.1")
            self._ctx = server_context(cert, key)
            self.ca_file = cert
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self.sock.getsockname()[:2]
        self._conns: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def connect(self, timeout: float | None = 10.0) -> socket.socket:
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ca_file is not None:
            import ssl

            ctx = ssl.create_default_context(cafile=self.ca_file)
            s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
        return s

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._ctx is not None:
            try:
                conn = self._ctx.wrap_socket(conn, server_side=True)
            except OSError:
                conn.close()
                return
        buf = bytearray()
        n = 0
        try:
            while True:
                req = read_request(conn, buf)
                if req is None:
                    return
                self.requests.append(req)
                script = self.scripts[min(n, len(self.scripts) - 1)]
                n += 1
                for action in script:
                    if isinstance(action, (bytes, bytearray, memoryview)):
                        conn.sendall(action)
                    elif isinstance(action, (int, float)):
                        time.sleep(action)
                    elif action == "reset":
                        reset(conn)
                        return
                    elif action == "close":
                        conn.close()
                        return
                    elif action == "garbage":  # TLS: bytes that are no TLS record
                        os.write(conn.fileno(), b"this is not a TLS record\r\n" * 4)
                    elif action == "close_notify":  # TLS: say so before closing
                        conn.settimeout(0.5)
                        try:
                            conn.unwrap()  # sends close_notify, then waits for the peer's
                        except OSError:
                            pass
                        conn.close()
                        return
                    else:
                        raise ValueError(f"unknown action {action!r}")
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def raw_server(tmp_path) -> Iterator[Callable[..., RawServer]]:
    """raw_server(script, ...) or raw_server(script, ..., tls=True)"""
    servers: list[RawServer] = []

    def make(*scripts: Script, tls: bool = False) -> RawServer:
        s = RawServer(scripts, str(tmp_path) if tls else None)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def block(seed: int, n: int = BLOCK_SIZE) -> bytes:
    """n random bytes, the same for the same seed (a block by default)."""
    return np.random.default_rng(seed).bytes(n)


def get(target: str = "/", extra: str = "") -> bytes:
    """A GET request head (``extra``: more header lines, each ending in CRLF)."""
    return f"GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


def ok_head(length: int, extra: str = "") -> bytes:
    """A 200 response head with this Content-Length."""
    return f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n{extra}\r\n".encode()


def spins_while_waiting(fetch: Callable[[], object]) -> int:
    """Runs ``fetch()`` (an exchange that waits on its server for longer than 0.4 s) in another
    thread and counts the turns of a busy loop here in 0.3 s of that wait: many thousands when
    the waiting exchange does not hold the GIL."""
    done = threading.Event()

    def run():
        try:
            fetch()
        finally:
            done.set()

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.1)
    spins = 0
    t0 = time.monotonic()
    while not done.is_set() and time.monotonic() - t0 < 0.3:
        spins += 1
    t.join()
    return spins


def segments(data: bytes, size: int, pause: float = 0.0) -> list[Action]:
    """data cut into ``size``-byte pieces, each sent on its own (TCP_NODELAY) with a pause."""
    out: list[Action] = []
    for i in range(0, len(data), size):
        out.append(data[i:i + size])
        if pause:
            out.append(pause)
    return out


class ScriptedSocket:
    """A socket-like object whose recv_into returns exactly the given segments, then EOF: the
    exact segmentation a test asks for, through the same reader the TLS path uses."""

    def __init__(self, parts: Sequence[bytes]):
        self.parts = [bytes(p) for p in parts if p]
        self.sent = bytearray()
        self.timeout: float | None = None

    def sendall(self, data) -> None:
        self.sent += memoryview(data).cast("B")

    def recv_into(self, buf) -> int:
        if not self.parts:
            return 0
        part = self.parts[0]
        n = min(len(buf), len(part))
        buf[:n] = part[:n]
        if n == len(part):
            self.parts.pop(0)
        else:
            self.parts[0] = part[n:]
        return n

    def gettimeout(self) -> float | None:
        return self.timeout

    def settimeout(self, t: float | None) -> None:
        self.timeout = t
