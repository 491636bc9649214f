"""The TLS exchange: the native driver that calls OpenSSL on the socket's SSL object without the
GIL ("direct"), the native module through ``SSLSocket.recv_into``/``sendall`` ("via-python", what
it falls back to) and the pure-Python twin, against the same scripted TLS servers. All three must
give the same answers and the same errors."""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest_http_fixtures import (
    NO_EXTENSIONS,
    block,
    get,
    load_http_impl,
    ok_head,
    segments,
    spins_while_waiting,
)

from ebsfast.testing import BLOCK_SIZE

B = BLOCK_SIZE


class Driver:
    def __init__(self, name: str, impl, direct: bool):
        self.name, self.impl, self.direct = name, impl, direct

    def __getattr__(self, name):
        return getattr(self.impl, name)


@pytest.fixture(params=["direct", "via-python", "twin"])
def driver(request):
    if request.param == "twin":
        yield Driver("twin", load_http_impl("python"), False)
        return
    native = load_http_impl("native")
    if request.param == "direct" and not native.direct_tls():
        pytest.skip("this Python's ssl module cannot be driven directly (see direct_tls())")
    was = native._set_direct_tls(request.param == "direct")
    try:
        yield Driver(request.param, native, request.param == "direct")
    finally:
        native._set_direct_tls(was)


@pytest.fixture
def tls_server(raw_server):
    return lambda *scripts: raw_server(*scripts, tls=True)


class CountingSSLSocket(ssl.SSLSocket):
    """An SSLSocket subclass that counts its recv_into calls (a class the direct driver does not
    take on, since its methods are not ssl.py's own)."""
    calls = 0

    def recv_into(self, *args, **kwargs):
        CountingSSLSocket.calls += 1
        return super().recv_into(*args, **kwargs)


def test_direct_driver_is_bound_on_cpython_with_openssl_3():
    if NO_EXTENSIONS:
        pytest.skip("EBSFAST_NO_EXTENSIONS=1: the native HTTP module is not under test")
    native = load_http_impl("native")
    if sys.implementation.name != "cpython" or ssl.OPENSSL_VERSION_INFO < (3,):
        pytest.skip(f"the direct driver needs CPython with OpenSSL 3 ({ssl.OPENSSL_VERSION})")
    assert native.direct_tls() is True
    assert load_http_impl("python").direct_tls() is False


@pytest.mark.parametrize("offset", [0, 1, 4093])
def test_block_lands_exactly_and_the_connection_is_reused(driver, tls_server, offset):
    data = block(1)
    srv = tls_server([ok_head(B, "x-amz-Checksum: abc\r\n") + data])
    out = np.full(B + offset + 100, 0xA5, np.uint8)
    with srv.connect() as sock:
        for _ in range(3):  # three exchanges on one TLS connection
            out[:] = 0xA5
            r = driver.exchange(sock, get(), out=out[offset:offset + B + 50])
            assert (r.status, r.body_length, r.keep_alive) == (200, B, True)
            assert r.digest == hashlib.sha256(data).digest()
            assert bytes(out[offset:offset + B]) == data
            assert (out[:offset] == 0xA5).all() and (out[offset + B:] == 0xA5).all()
    assert srv.connections == 1 and len(srv.requests) == 3


def test_small_segments_chunked_and_other_bodies(driver, tls_server):
    data = block(2, 70_000)
    body = b"".join(b"%x\r\n" % len(data[i:i + 9000]) + data[i:i + 9000] + b"\r\n"
                    for i in range(0, len(data), 9000)) + b"0\r\n\r\n"
    srv = tls_server(segments(ok_head(len(data)) + data, 1000, 0.0005),
                     [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body],
                     [b'HTTP/1.1 404 Not Found\r\nContent-Length: 17\r\n\r\n{"message":"no"}\n'])
    with srv.connect() as sock:
        out = np.empty(len(data), np.uint8)
        r = driver.exchange(sock, get(), out=out)
        assert r.body_length == len(data) and bytes(out) == data
        r = driver.exchange(sock, get())
        assert r.body == data and r.digest is None
        r = driver.exchange(sock, get())
        assert (r.status, r.body) == (404, b'{"message":"no"}\n')


def test_put_body_arrives_whole(driver, tls_server):
    data = np.frombuffer(block(3), np.uint8)
    srv = tls_server([b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"])
    head = f"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: {B}\r\n\r\n".encode()
    with srv.connect() as sock:
        r = driver.exchange(sock, head, data)
    assert r.status == 201
    assert srv.requests == [head + data.tobytes()]


@pytest.mark.parametrize("ending", ["close_notify", "close"])
def test_body_delimited_by_the_end_of_the_connection(driver, tls_server, ending):
    # "close" ends TLS without close_notify: an EOF the socket's suppress_ragged_eofs (True,
    # as urllib3 makes them) accepts as the end, like Python's own read
    data = block(4, 5000)
    srv = tls_server([b"HTTP/1.1 200 OK\r\n\r\n" + data, 0.05, ending])
    with srv.connect() as sock:
        r = driver.exchange(sock, get())
    assert r.body == data and r.keep_alive is False


def test_ragged_eof_is_an_error_where_the_socket_says_so(driver, tls_server):
    srv = tls_server([b"HTTP/1.1 200 OK\r\n\r\nabc", 0.05, "close"])
    raw = socket.create_connection((srv.host, srv.port), timeout=10)
    ctx = ssl.create_default_context(cafile=srv.ca_file)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False) as sock:
        with pytest.raises(ssl.SSLEOFError):
            driver.exchange(sock, get())


@pytest.mark.parametrize("script,received", [
    ([ok_head(B), block(5, 1000), 0.05, "close"], 1000),
    ([ok_head(B), block(5, 1000), 0.05, "close_notify"], 1000),
    ([ok_head(B), block(5, 70_000), 0.05, "reset"], 70_000),
])
def test_cut_bodies(driver, tls_server, script, received):
    srv = tls_server(script)
    out = np.full(B, 0xA5, np.uint8)
    with srv.connect() as sock, pytest.raises(driver.IncompleteBody) as ei:
        driver.exchange(sock, get(), out=out)
    if script[-1] != "reset":  # a reset may also drop bytes already sent
        assert ei.value.received == received
    assert ei.value.expected == B


@pytest.mark.parametrize("script", [["close"], ["close_notify"], ["reset"]])
def test_connection_ends_before_a_head(driver, tls_server, script):
    srv = tls_server(script)
    with srv.connect() as sock, pytest.raises(driver.ConnectionClosed) as ei:
        driver.exchange(sock, get())
    assert ei.value.response_started is False


def test_garbage_instead_of_a_tls_record_is_an_ssl_error(driver, tls_server):
    # The server writes plain bytes on the raw socket under its TLS: not a TLS record.
    srv = tls_server([ok_head(B), block(6, 20_000), 0.05, "garbage"])
    with srv.connect() as sock, pytest.raises(ssl.SSLError):
        driver.exchange(sock, get(), out=np.empty(B, np.uint8))


def test_stall_times_out_per_wait_and_a_blocking_socket_stays_blocking(driver, tls_server):
    srv = tls_server([ok_head(1000), block(7, 500), 0.3, block(8, 400), 5.0])
    with srv.connect(timeout=None) as sock:
        t0 = time.monotonic()
        with pytest.raises(socket.timeout):
            driver.exchange(sock, get(), out=np.empty(1000, np.uint8), timeout_s=0.5)
        assert 0.75 < time.monotonic() - t0 < 2.5
        assert sock.gettimeout() is None
    srv = tls_server([5.0])
    with srv.connect(timeout=0.2) as sock, pytest.raises(socket.timeout):
        t0 = time.monotonic()
        driver.exchange(sock, get())
    assert time.monotonic() - t0 < 1.5


class Interrupted(Exception):
    pass


def test_signal_handler_interrupts_a_blocked_exchange(driver, tls_server):
    srv = tls_server([30.0])

    def handler(signum, frame):
        raise Interrupted

    old = signal.signal(signal.SIGALRM, handler)
    try:
        with srv.connect(timeout=None) as sock:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            t0 = time.monotonic()
            with pytest.raises(Interrupted):
                driver.exchange(sock, get())
            assert time.monotonic() - t0 < 2.5
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_other_threads_run_while_a_tls_exchange_waits(driver, tls_server):
    data = block(9)
    srv = tls_server([0.6, ok_head(B) + data])
    out = np.empty(B, np.uint8)
    result = {}

    def fetch():
        with srv.connect() as sock:
            result["r"] = driver.exchange(sock, get(), out=out)

    assert spins_while_waiting(fetch) > 10_000  # the waiting exchange did not hold the GIL
    assert result["r"].body_length == B and bytes(out) == data


def test_many_threads_each_fill_their_own_row(driver, tls_server):
    data = block(20)
    srv = tls_server([ok_head(B) + data])  # the same answer on every connection ...
    outs = np.full((8, B), 0xA5, np.uint8)
    errors = []

    def work(k):
        try:
            with srv.connect() as sock:
                for _ in range(4):
                    r = driver.exchange(sock, get(), out=outs[k])
                    assert r.digest == hashlib.sha256(data).digest()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    assert all(bytes(outs[k]) == data for k in range(8))  # ... landing in each one's row


def test_ssl_socket_subclasses_and_closed_sockets_go_through_python(tls_server):
    if NO_EXTENSIONS:
        pytest.skip("EBSFAST_NO_EXTENSIONS=1: the native HTTP module is not under test")
    native = load_http_impl("native")
    data = block(10, 100_000)
    srv = tls_server([ok_head(len(data)) + data])
    ctx = ssl.create_default_context(cafile=srv.ca_file)
    ctx.sslsocket_class = CountingSSLSocket
    raw = socket.create_connection((srv.host, srv.port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        assert type(sock) is CountingSSLSocket
        CountingSSLSocket.calls = 0
        r = native.exchange(sock, get())
        assert r.body == data and CountingSSLSocket.calls > 0
    with pytest.raises(OSError):  # closed: what the socket itself says
        native.exchange(sock, get())


def test_the_direct_driver_does_not_call_into_the_socket(tls_server):
    if NO_EXTENSIONS:
        pytest.skip("EBSFAST_NO_EXTENSIONS=1: the native HTTP module is not under test")
    if not load_http_impl("native").direct_tls():
        pytest.skip("this Python's ssl module cannot be driven directly (see direct_tls())")
    native = load_http_impl("native")
    data = block(11, 200_000)
    srv = tls_server([ok_head(len(data)) + data])
    calls = []
    with srv.connect() as sock:
        sock.recv_into = lambda *a, **k: calls.append(a)  # an instance attribute: unused
        sock.sendall = lambda *a, **k: calls.append(a)
        was = native._set_direct_tls(True)
        try:
            assert native.exchange(sock, get()).body == data
        finally:
            native._set_direct_tls(was)
    assert calls == []


def test_environment_switch_turns_the_direct_driver_off():
    if NO_EXTENSIONS:
        pytest.skip("EBSFAST_NO_EXTENSIONS=1: the native HTTP module is not under test")
    code = "import ebsfast._http as h; print(h.direct_tls())"
    env = dict(os.environ, EBSFAST_TLS_VIA_PYTHON="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_tls_sendall_writes_head_and_body_exactly(driver, tls_server):
    data = np.frombuffer(block(12), np.uint8)
    srv = tls_server([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    head = f"PUT /y HTTP/1.1\r\nHost: x\r\nContent-Length: {B}\r\n\r\n".encode()
    with srv.connect() as sock:
        driver.tls_sendall(sock, head, data)
        driver.tls_sendall(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 5
        while len(srv.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert srv.requests == [head + data.tobytes(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]


def test_tls_sendall_to_a_peer_that_is_gone_is_an_os_error(driver, tls_server):
    srv = tls_server(["reset"])
    with srv.connect() as sock:
        driver.tls_sendall(sock, get())  # answered by a reset
        time.sleep(0.1)
        with pytest.raises(OSError):
            for _ in range(50):  # the kernel may take a few writes to learn of the reset
                driver.tls_sendall(sock, b"x" * 65536, np.zeros(B, np.uint8))
