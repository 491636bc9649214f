"""ebsfast.transport over real loopback sockets: connection reuse and pooling, TLS, proxies,
timeouts, broken bodies, and the botocore error each failure becomes.

The EBS server runs without signature checks so requests need no signer; small raw-socket
servers stand in where a misbehaving peer is needed (a stalled body, a recording proxy, a
server that wants a client certificate, a listener whose backlog is full).
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import socket
import ssl
import threading
import time
import warnings
from urllib.parse import quote

import pytest
import urllib3

from ebsfast import exceptions as exc
from ebsfast.config import Config
from ebsfast.testing import BLOCK_SIZE, EBSServer
from ebsfast.transport import Transport, bypass_proxy, environ_proxies, mask_proxy_url

FAST_KW = {"connect_timeout": 2, "read_timeout": 2}
FAST = Config(**FAST_KW)


# ------------------------------------------------------------------ helpers

class RawServer:
    """A TCP server running ``handler(conn, server)`` per connection; counts connections and
    records what each one received."""

    def __init__(self, handler, *, ssl_context: ssl.SSLContext | None = None):
        self.handler = handler
        self.ssl_context = ssl_context
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.closed_by_peer = 0
        self.requests: list[bytes] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self._conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        try:
            if self.ssl_context is not None:
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
            self.handler(conn, self)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def read_head(self, conn, buf: bytearray) -> bytes | None:
        """One request head (without body handling beyond Content-Length), or None at EOF."""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                with self.lock:
                    self.closed_by_peer += 1
                return None
            buf += data
        end = buf.index(b"\r\n\r\n") + 4
        head = bytes(buf[:end])
        del buf[:end]
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                n = int(line.split(b":")[1])
                while len(buf) < n:
                    buf += conn.recv(65536)
                del buf[:n]
        with self.lock:
            self.requests.append(head)
        return head

    def close(self):
        self._stop.set()
        self.sock.close()
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def make_transport(url, **kwargs):
    """A Transport that ignores this machine's proxy and CA variables unless given some."""
    kwargs.setdefault("environ", {})
    return Transport(url, **kwargs)


def ok_handler(body: bytes = b"hello"):
    """Answer every request on the connection with 200 and ``body``, keep-alive."""
    def handler(conn, server):
        buf = bytearray()
        while server.read_head(conn, buf) is not None:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return handler


@pytest.fixture(scope="module")
def server():
    with EBSServer(verify_signatures=False) as s:
        yield s


@pytest.fixture(scope="module")
def block(server):
    """(snapshot id, block token, block bytes) of a completed one-block snapshot."""
    with make_transport(server.endpoint_url, config=FAST) as t:
        r = t.send("POST", "/snapshots", {"Content-Type": "application/json"},
                   json.dumps({"VolumeSize": 1}).encode(), preload=True)
        assert r.status == 201, r.data
        snap = json.loads(r.data)["SnapshotId"]
        data = bytes(range(256)) * (BLOCK_SIZE // 256)
        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        r = t.send("PUT", f"/snapshots/{snap}/blocks/0",
                   {"x-amz-Data-Length": str(BLOCK_SIZE), "x-amz-Checksum": digest,
                    "x-amz-Checksum-Algorithm": "SHA256"}, data, preload=True)
        assert r.status == 201, r.data
        r = t.send("POST", f"/snapshots/completion/{snap}", {"x-amz-ChangedBlocksCount": "1"},
                   preload=True)
        assert r.status == 202, r.data
        r = t.send("GET", f"/snapshots/{snap}/blocks", {}, preload=True)
        token = json.loads(r.data)["Blocks"][0]["BlockToken"]
    return snap, token, data


def block_path(block):
    snap, token, _ = block
    return f"/snapshots/{snap}/blocks/0?blockToken={quote(token, safe='')}"


@pytest.fixture
def faults(server):
    yield server
    server.set_faults(error_rate=0.0, reset_rate=0.0, truncate_rate=0.0, stall_rate=0.0,
                      corrupt_rate=0.0, stall_s=5.0)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------ reuse and pooling

def test_sequential_requests_share_one_connection():
    with EBSServer(verify_signatures=False) as s, make_transport(s.endpoint_url, config=FAST) as t:
        for _ in range(20):
            r = t.send("GET", "/snapshots/snap-0123/blocks", {})
            t.read(r)
            t.discard(r)
        assert s.requests_served == 20
        assert s.connections_accepted == 1


def test_whole_block_read_keeps_the_connection(server, block):
    with make_transport(server.endpoint_url, config=FAST) as t:
        before = server.connections_accepted
        for _ in range(5):
            r = t.send("GET", block_path(block), {})
            buf = bytearray(BLOCK_SIZE)
            assert t.readinto(r, buf) == BLOCK_SIZE
            assert bytes(buf) == block[2]
            t.discard(r)
        assert server.connections_accepted - before == 1


def test_partial_read_is_never_reused(server, block):
    with make_transport(server.endpoint_url, config=FAST) as t:
        before = server.connections_accepted
        r = t.send("GET", block_path(block), {})
        assert len(t.read(r, 1000)) == 1000
        t.discard(r)
        r = t.send("GET", block_path(block), {})
        assert t.read(r) == block[2]  # a clean response, not the tail of the last one
        t.discard(r)
        assert server.connections_accepted - before == 2
        # and the fresh connection is itself reused
        r = t.send("GET", "/snapshots/snap-0123/blocks", {}, preload=True)
        t.discard(r)
        assert server.connections_accepted - before == 2


def test_unread_response_is_never_reused(server, block):
    with make_transport(server.endpoint_url, config=FAST) as t:
        before = server.connections_accepted
        r = t.send("GET", block_path(block), {})
        t.discard(r)
        r = t.send("GET", block_path(block), {}, preload=True)
        assert r.data == block[2]
        assert server.connections_accepted - before == 2


def test_empty_body_discarded_unread_keeps_the_connection():
    def handler(conn, server):
        buf = bytearray()
        while server.read_head(conn, buf) is not None:
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    with RawServer(handler) as raw, make_transport(raw.url, config=FAST) as t:
        for _ in range(3):
            t.discard(t.send("POST", "/x", {}))
        assert raw.accepted == 1


def test_pool_keeps_max_pool_connections_and_does_not_block(faults, caplog):
    caplog.set_level(logging.ERROR, logger="urllib3.connectionpool")  # "pool is full" notes
    s = faults
    s.set_faults(stall_rate=1.0, stall_s=0.15)
    cfg = Config(max_pool_connections=4, connect_timeout=2, read_timeout=5)
    with make_transport(s.endpoint_url, config=cfg) as t:
        before = s.connections_accepted
        barrier = threading.Barrier(12)
        errors = []

        def burst():
            try:
                barrier.wait()
                r = t.send("GET", "/snapshots/snap-0123/blocks", {}, preload=True)
                assert r.status == 404
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=burst) for _ in range(12)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        # like botocore the pool does not block: all 12 ran at once on their own connections
        assert s.connections_accepted - before == 12
        # ... but only 4 stay pooled: 4 concurrent requests now need no new connection
        s.set_faults(stall_rate=1.0, stall_s=0.1)
        mid = s.connections_accepted
        barrier = threading.Barrier(4)
        threads = [threading.Thread(target=burst) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        assert s.connections_accepted == mid


def test_many_threads_share_one_transport(server):
    cfg = Config(max_pool_connections=8, connect_timeout=2, read_timeout=5)
    with make_transport(server.endpoint_url, config=cfg) as t:
        errors = []

        def work():
            try:
                for _ in range(25):
                    r = t.send("GET", "/snapshots/snap-0123/blocks", {})
                    assert r.status == 404
                    assert b"SNAPSHOT_NOT_FOUND" in t.read(r)
                    t.discard(r)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(16)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors


def test_close_closes_idle_connections_and_allows_reuse():
    with RawServer(ok_handler()) as raw:
        t = make_transport(raw.url, config=FAST)
        t.discard(t.send("GET", "/", {}, preload=True))
        t.close()
        deadline = time.monotonic() + 2
        while raw.closed_by_peer < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert raw.closed_by_peer == 1
        r = t.send("GET", "/", {}, preload=True)  # botocore-style: usable after close
        assert r.data == b"hello"
        t.close()
        assert raw.accepted == 2


# ------------------------------------------------------------------ request shape

def test_paths_queries_and_endpoint_prefix():
    with RawServer(ok_handler()) as raw:
        with make_transport(raw.url + "/prefix/", config=FAST) as t:
            t.send("GET", "/snapshots/snap-1/blocks?maxResults=100&pageToken=a%2Bb", {},
                   preload=True)
            t.send("GET", raw.url + "/absolute?x=1", {}, preload=True)
        lines = [h.split(b"\r\n")[0] for h in raw.requests]
        assert lines == [b"GET /prefix/snapshots/snap-1/blocks?maxResults=100&pageToken=a%2Bb "
                         b"HTTP/1.1", b"GET /absolute?x=1 HTTP/1.1"]
        assert raw.accepted == 1


def test_memoryview_body_is_sent_without_copy(server):
    numpy = pytest.importorskip("numpy")
    with make_transport(server.endpoint_url, config=FAST) as t:
        r = t.send("POST", "/snapshots", {"Content-Type": "application/json"},
                   b'{"VolumeSize": 1}', preload=True)
        snap = json.loads(r.data)["SnapshotId"]
        arr = numpy.full(BLOCK_SIZE, 7, dtype=numpy.uint8)
        digest = base64.b64encode(hashlib.sha256(arr.tobytes()).digest()).decode()
        r = t.send("PUT", f"/snapshots/{snap}/blocks/3",
                   {"x-amz-Data-Length": str(BLOCK_SIZE), "x-amz-Checksum": digest,
                    "x-amz-Checksum-Algorithm": "SHA256"}, memoryview(arr), preload=True)
        assert r.status == 201, r.data


def test_tcp_keepalive(server):
    for kwargs in ({"config": Config(tcp_keepalive=True)},
                   {"environ": {"BOTOCORE_TCP_KEEPALIVE": "true"}},
                   {"profile_config": {"tcp_keepalive": "true"}, "environ": {}},
                   {"environ": {}}):
        with make_transport(server.endpoint_url, **kwargs) as t:
            r = t.send("GET", "/snapshots/snap-0123/blocks", {})
            sock = r.connection.sock
            want = 0 if kwargs == {"environ": {}} else 1
            assert bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)) == bool(want)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            t.read(r)
            t.discard(r)


# ------------------------------------------------------------------ TLS

@pytest.fixture(scope="module")
def tls_server():
    with EBSServer(tls=True, verify_signatures=False) as s:
        yield s


def test_https_with_ca_file(tls_server):
    with make_transport(tls_server.endpoint_url, verify=tls_server.ca_file, config=FAST) as t:
        for _ in range(3):
            r = t.send("GET", "/snapshots/snap-0123/blocks", {}, preload=True)
            assert r.status == 404


@pytest.mark.parametrize("source", ["AWS_CA_BUNDLE", "profile", "REQUESTS_CA_BUNDLE"])
def test_ca_bundle_from_environment_or_profile(tls_server, source):
    env, profile = {}, {}
    if source == "profile":
        profile["ca_bundle"] = tls_server.ca_file
    else:
        env[source] = tls_server.ca_file
    with make_transport(tls_server.endpoint_url, config=FAST, environ=env,
                   profile_config=profile) as t:
        assert t.verify == tls_server.ca_file
        assert t.send("GET", "/snapshots/snap-0123/blocks", {}, preload=True).status == 404


def test_explicit_verify_true_ignores_aws_ca_bundle(tls_server):
    with make_transport(tls_server.endpoint_url, verify=True, config=FAST,
                   environ={"AWS_CA_BUNDLE": tls_server.ca_file}) as t:
        with pytest.raises(exc.SSLError) as info:
            t.send("GET", "/snapshots/snap-0123/blocks", {})
        assert isinstance(info.value.__cause__, urllib3.exceptions.SSLError)


def test_default_trust_rejects_a_self_signed_server(tls_server):
    with make_transport(tls_server.endpoint_url, config=FAST, environ={}) as t:
        with pytest.raises(exc.SSLError, match="SSL validation failed"):
            t.send("GET", "/snapshots/snap-0123/blocks", {})


def test_wrong_ca_is_an_ssl_error(tls_server, tmp_path):
    from ebsfast.testing._tls import make_certificate

    other_ca, _ = make_certificate(str(tmp_path), "127.0.0.1")
    with make_transport(tls_server.endpoint_url, verify=other_ca, config=FAST) as t:
        with pytest.raises(exc.SSLError):
            t.send("GET", "/snapshots/snap-0123/blocks", {})


def test_verify_false_connects_and_warns_like_boto3(tls_server):
    with make_transport(tls_server.endpoint_url, verify=False, config=FAST) as t:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = t.send("GET", "/snapshots/snap-0123/blocks", {}, preload=True)
        assert r.status == 404
        assert any(issubclass(w.category, urllib3.exceptions.InsecureRequestWarning)
                   for w in caught)


def test_client_certificate(tmp_path):
    from ebsfast.testing._tls import make_certificate

    (tmp_path / "server").mkdir()
    (tmp_path / "client").mkdir()
    server_cert, server_key = make_certificate(str(tmp_path / "server"), "127.0.0.1")
    client_cert, client_key = make_certificate(str(tmp_path / "client"), "client.example")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server_cert, server_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(client_cert)

    def handler(conn, server):
        buf = bytearray()
        while server.read_head(conn, buf) is not None:
            peer = conn.getpeercert()
            body = b"peer-ok" if peer else b"no-peer"
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    with RawServer(handler, ssl_context=ctx) as raw:
        cfg = Config(client_cert=(client_cert, client_key), connect_timeout=2, read_timeout=2)
        with make_transport(raw.url, verify=server_cert, config=cfg) as t:
            assert t.send("GET", "/", {}, preload=True).data == b"peer-ok"
        with make_transport(raw.url, verify=server_cert, config=FAST) as t:
            with pytest.raises((exc.SSLError, exc.ConnectionClosedError)):
                t.send("GET", "/", {}, preload=True)


# ------------------------------------------------------------------ connection failures

def test_connection_refused_is_endpoint_connection_error():
    url = f"http://127.0.0.1:{free_port()}"
    with make_transport(url, config=FAST) as t:
        with pytest.raises(exc.EndpointConnectionError) as info:
            t.send("GET", "/snapshots/snap-1/blocks", {})
    assert url + "/snapshots/snap-1/blocks" in str(info.value)
    assert isinstance(info.value.__cause__, urllib3.exceptions.NewConnectionError)


def test_connect_timeout():
    # A listener that never accepts, with its backlog full: Linux then drops new SYNs, so
    # connect() hangs until the client gives up.
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(c)
        time.sleep(0.05)
        with make_transport(f"http://127.0.0.1:{port}",
                       config=Config(connect_timeout=0.3, read_timeout=2)) as t:
            t0 = time.monotonic()
            try:
                t.send("GET", "/", {})
            except exc.ConnectTimeoutError as e:
                assert isinstance(e.__cause__, urllib3.exceptions.ConnectTimeoutError)
            except exc.EndpointConnectionError:  # pragma: no cover - kernel without SYN drops
                pytest.skip("this kernel refuses rather than drops SYNs to a full backlog")
            else:  # pragma: no cover
                pytest.skip("the connection was accepted despite the full backlog")
            assert time.monotonic() - t0 < 2
    finally:
        for c in fillers:
            c.close()
        lst.close()


def test_response_stall_is_read_timeout(faults):
    faults.set_faults(stall_rate=1.0, stall_s=3.0)
    with make_transport(faults.endpoint_url, config=Config(connect_timeout=2, read_timeout=0.3)) as t:
        t0 = time.monotonic()
        with pytest.raises(exc.ReadTimeoutError) as info:
            t.send("GET", "/snapshots/snap-0123/blocks", {})
        assert time.monotonic() - t0 < 2
        assert isinstance(info.value.__cause__, urllib3.exceptions.ReadTimeoutError)


def test_body_stall_is_read_timeout_when_read():
    def handler(conn, server):
        server.read_head(conn, bytearray())
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        time.sleep(2)

    with RawServer(handler) as raw, \
            make_transport(raw.url, config=Config(connect_timeout=2, read_timeout=0.3)) as t:
        r = t.send("GET", "/", {})
        with pytest.raises(exc.ReadTimeoutError):
            t.read(r)
        t.discard(r)


def test_server_closing_without_response_is_connection_closed():
    def handler(conn, server):
        server.read_head(conn, bytearray())

    with RawServer(handler) as raw, make_transport(raw.url, config=FAST) as t:
        with pytest.raises(exc.ConnectionClosedError) as info:
            t.send("GET", "/", {})
        assert isinstance(info.value.__cause__, urllib3.exceptions.ProtocolError)


@pytest.mark.parametrize("fault", ["truncate_rate", "reset_rate"])
def test_broken_block_body(faults, block, fault):
    s = faults
    with make_transport(s.endpoint_url, config=FAST) as t:
        s.set_faults(**{fault: 1.0})
        r = t.send("GET", block_path(block), {})
        assert r.status == 200
        with pytest.raises(exc.ResponseStreamingError) as info:
            t.readinto(r, bytearray(BLOCK_SIZE))
        assert isinstance(info.value.__cause__, urllib3.exceptions.ProtocolError)
        t.discard(r)
        # read inside send (preload), as botocore reads a non-streaming body: ConnectionClosed
        with pytest.raises(exc.ConnectionClosedError):
            t.send("GET", block_path(block), {}, preload=True)
        s.set_faults(**{fault: 0.0})
        before = s.connections_accepted
        r = t.send("GET", block_path(block), {}, preload=True)
        assert r.data == block[2]
        assert s.connections_accepted == before + 1  # the broken connection was not reused


# ------------------------------------------------------------------ proxies

class RecordingProxy(RawServer):
    """An HTTP proxy: answers absolute-form requests itself ("via-proxy") and tunnels CONNECT."""

    def __init__(self):
        super().__init__(self._serve)

    def _serve(self, conn, server):
        buf = bytearray()
        head = self.read_head(conn, buf)
        while head is not None:
            line = head.split(b"\r\n")[0]
            if line.startswith(b"CONNECT "):
                host, port = line.split()[1].decode().rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)))
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if buf:
                    upstream.sendall(buf)
                self._pipe(conn, upstream)
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nvia-proxy")
            head = self.read_head(conn, buf)

    @staticmethod
    def _pipe(a, b):
        def one_way(src, dst):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        th = threading.Thread(target=one_way, args=(b, a), daemon=True)
        th.start()
        one_way(a, b)
        th.join(5)
        b.close()

    def lines(self):
        return [h.split(b"\r\n")[0].decode() for h in self.requests]


def test_http_proxy_from_environment(server):
    with RecordingProxy() as proxy:
        with make_transport(server.endpoint_url, config=FAST,
                       environ={"HTTP_PROXY": f"127.0.0.1:{proxy.port}"}) as t:
            served = server.requests_served
            r = t.send("GET", "/snapshots/snap-0123/blocks?maxResults=100", {}, preload=True)
            assert r.data == b"via-proxy"
        assert proxy.lines() == [f"GET {server.endpoint_url}/snapshots/snap-0123/blocks"
                                 f"?maxResults=100 HTTP/1.1"]
        assert server.requests_served == served


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "*",
                                      ".0.0.1", "127.0.0.1:{port}"])
def test_no_proxy_is_honoured(server, no_proxy):
    port = server.endpoint_url.rsplit(":", 1)[1]
    with RecordingProxy() as proxy:
        env = {"http_proxy": proxy.url, "NO_PROXY": no_proxy.format(port=port)}
        with make_transport(server.endpoint_url, config=FAST, environ=env) as t:
            assert t.proxy_url_for(server.endpoint_url) is None
            r = t.send("GET", "/snapshots/snap-0123/blocks", {}, preload=True)
            assert r.status == 404
        assert proxy.accepted == 0


def test_lower_case_proxy_variable_wins(server):
    with RecordingProxy() as proxy, RecordingProxy() as other:
        env = {"HTTP_PROXY": other.url, "http_proxy": proxy.url, "no_proxy": "example.com"}
        with make_transport(server.endpoint_url, config=FAST, environ=env) as t:
            assert t.send("GET", "/x", {}, preload=True).data == b"via-proxy"
        assert proxy.accepted == 1 and other.accepted == 0


def test_config_proxies_ignore_no_proxy_and_send_credentials(server):
    with RecordingProxy() as proxy:
        url = f"http://us%40er:p%3Ass@127.0.0.1:{proxy.port}"
        with make_transport(server.endpoint_url, config=Config(proxies={"http": url}),
                       environ={"NO_PROXY": "*"}) as t:
            assert t.send("GET", "/x", {}, preload=True).data == b"via-proxy"
        expected = base64.b64encode(b"us@er:p:ss").decode()
        assert f"Proxy-Authorization: Basic {expected}".encode() in proxy.requests[0]


def test_https_through_connect_tunnel(tls_server):
    with RecordingProxy() as proxy:
        env = {"HTTPS_PROXY": proxy.url, "HTTP_PROXY": "http://127.0.0.1:9"}
        with make_transport(tls_server.endpoint_url, verify=tls_server.ca_file, config=FAST,
                       environ=env) as t:
            for _ in range(2):
                r = t.send("GET", "/snapshots/snap-0123/blocks", {}, preload=True)
                assert r.status == 404 and b"SNAPSHOT_NOT_FOUND" in r.data
        host = tls_server.endpoint_url.split("://")[1]
        assert [line.split(" ")[:2] for line in proxy.lines()] == [["CONNECT", host]]  # reused


def _ebs_client(srv, **config):
    import ebsfast

    return ebsfast.client("ebs", endpoint_url=srv.endpoint_url, region_name=srv.region,
                          aws_access_key_id=srv.access_key,
                          aws_secret_access_key=srv.secret_key,
                          verify=srv.ca_file if srv.tls else None, config=Config(**config))


def test_the_native_path_goes_through_a_connect_tunnel(tls_server):
    # Block reads and writes and list pages written and read by the native exchange, over
    # TLS inside a CONNECT tunnel: one CONNECT, its connection kept for every call.
    import numpy as np

    data = hashlib.sha256(b"tunnel").digest() * (BLOCK_SIZE // 32)
    with RecordingProxy() as proxy:
        c = _ebs_client(tls_server, proxies={"https": proxy.url}, **FAST_KW)
        snap = c.start_snapshot(VolumeSize=1)["SnapshotId"]
        c.put_snapshot_block(SnapshotId=snap, BlockIndex=0, BlockData=data)
        c.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=1)
        token = c.list_snapshot_blocks(SnapshotId=snap)["Blocks"][0]["BlockToken"]
        out = np.zeros(BLOCK_SIZE, np.uint8)
        c.get_snapshot_block_into(SnapshotId=snap, BlockIndex=0, BlockToken=token, Out=out)
        assert out.tobytes() == data
        assert c.get_snapshot_block(SnapshotId=snap, BlockIndex=0,
                                    BlockToken=token)["BlockData"].read() == data
        assert len(c._transport._idle) == 1  # the native path's own stack of idle connections
        c.close()
        host = tls_server.endpoint_url.split("://")[1]
        assert [line.split(" ")[:2] for line in proxy.lines()] == [["CONNECT", host]]


def test_the_native_path_names_an_unreachable_proxy(tls_server):
    import numpy as np

    url = f"http://user:secret@127.0.0.1:{free_port()}"
    c = _ebs_client(tls_server, proxies={"https": url},
                    retries={"mode": "standard", "total_max_attempts": 1}, **FAST_KW)
    with pytest.raises(exc.ProxyConnectionError) as info:
        c.get_snapshot_block_into(SnapshotId="snap-0123", BlockIndex=0, BlockToken="AAAA",
                                  Out=np.zeros(BLOCK_SIZE, np.uint8))
    assert "secret" not in str(info.value) and "***" in str(info.value)
    with pytest.raises(exc.ProxyConnectionError):
        c.list_snapshot_blocks(SnapshotId="snap-0123")


def test_unreachable_proxy_is_proxy_connection_error(server):
    url = f"http://user:secret@127.0.0.1:{free_port()}"
    with make_transport(server.endpoint_url, config=FAST, environ={"HTTP_PROXY": url}) as t:
        with pytest.raises(exc.ProxyConnectionError) as info:
            t.send("GET", "/x", {})
    assert "secret" not in str(info.value) and "***" in str(info.value)
    assert isinstance(info.value.__cause__, urllib3.exceptions.ProxyError)


def test_environ_proxies_follows_urllib():
    env = {"HTTP_PROXY": "http://upper:1", "http_proxy": "http://lower:1",
           "HTTPS_PROXY": "http://s:1", "https_proxy": "", "NO_PROXY": "a.com"}
    assert environ_proxies(env) == {"http": "http://lower:1", "no": "a.com"}
    # a CGI request may set HTTP_PROXY through the Proxy: header: ignored (httpoxy)
    assert environ_proxies({"HTTP_PROXY": "http://x:1", "REQUEST_METHOD": "GET"}) == {}


@pytest.mark.parametrize("host, port, no_proxy, expected", [
    ("ebs.us-east-1.amazonaws.com", None, "amazonaws.com", True),
    ("ebs.us-east-1.amazonaws.com", None, ".amazonaws.com", True),
    ("ebs.us-east-1.amazonaws.com", None, "us-east-1.amazonaws.com", True),
    ("ebs.us-east-1.amazonaws.com", None, "east-1.amazonaws.com", False),
    ("ebs.us-east-1.amazonaws.com", None, "zonaws.com", False),
    ("ebs.us-east-1.amazonaws.com", 443, "ebs.us-east-1.amazonaws.com:443", True),
    ("ebs.us-east-1.amazonaws.com", 443, "ebs.us-east-1.amazonaws.com:8443", False),
    ("EBS.Example.COM", None, "example.com", True),
    ("10.0.0.1", None, "10.0.0.0/8", False),  # no CIDR, like botocore
    ("h", None, "", False),
    ("h", None, " , *", False),
])
def test_bypass_proxy(host, port, no_proxy, expected):
    assert bypass_proxy(host, port, no_proxy) is expected


def test_bypass_matches_urllib():
    from urllib.request import proxy_bypass_environment

    for host in ("ebs.us-east-1.amazonaws.com", "127.0.0.1", "localhost", "a.b.c"):
        for port in (None, 443):
            for no in ("amazonaws.com", "127.0.0.1", "localhost, a.b.c", ".c", "*",
                       "b.c:443", "us-east-1.amazonaws.com:443"):
                netloc = f"{host}:{port}" if port else host
                assert bypass_proxy(host, port, no) == bool(
                    proxy_bypass_environment(netloc, {"no": no})), (host, port, no)


def test_mask_proxy_url():
    assert mask_proxy_url("http://u:p@proxy:8080") == "http://***:***@proxy:8080"
    assert mask_proxy_url("http://proxy:8080") == "http://proxy:8080"
    # only the user info is masked, even when the name also occurs elsewhere in the URL
    assert mask_proxy_url("http://t:tt@proxy-t:80") == "http://***:***@proxy-t:80"


# ------------------------------------------------------------------ against botocore

@pytest.mark.parametrize("case", ["refused", "stall", "bad-ca"])
def test_errors_match_botocore(case, faults, tls_server):
    httpsession = pytest.importorskip("botocore.httpsession")
    from botocore.awsrequest import AWSRequest

    if case == "refused":
        url, verify = f"http://127.0.0.1:{free_port()}/x", True
    elif case == "stall":
        faults.set_faults(stall_rate=1.0, stall_s=2.0)
        url, verify = faults.endpoint_url + "/snapshots/snap-0123/blocks", True
    else:
        url, verify = tls_server.endpoint_url + "/snapshots/snap-0123/blocks", True
    theirs_session = httpsession.URLLib3Session(verify=verify, timeout=(1, 0.3))
    with pytest.raises(Exception) as theirs:
        theirs_session.send(AWSRequest(method="GET", url=url).prepare())
    theirs_session.close()
    with make_transport(url, verify=verify, environ={},
                   config=Config(connect_timeout=1, read_timeout=0.3)) as t:
        with pytest.raises(Exception) as ours:
            t.send("GET", url, {})
    assert type(ours.value).__name__ == type(theirs.value).__name__
    assert isinstance(ours.value, type(theirs.value))
    assert str(ours.value).split(" ")[:4] == str(theirs.value).split(" ")[:4]
