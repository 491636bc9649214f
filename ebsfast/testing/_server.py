"""The local EBS direct API server: HTTP/1.1 over real sockets, a thread per connection.

GetSnapshotBlock of a stored block goes through the lane (ebsfast._lane): parsed, its
signature and token checked and the block sent from C, about 100 µs of server CPU, so the
server is never what a client benchmark measures. Everything else takes the general path
here, small and hand-written (no http.server). A stored block's bytes are sent as they sit in
the store.
"""
from __future__ import annotations

import email.utils
import errno
import itertools
import json
import os
import secrets
import shutil
import socket
import ssl
import string
import struct
import tempfile
import threading
import time
from urllib.parse import unquote

from .. import _backend
from . import _auth, _splice
from ._faults import BODY_OPERATIONS, Faults, FaultState
from ._service import ApiError, Response, Service
from ._store import BLOCK_SIZE, BlockStore

MAX_HEAD = 64 * 1024
MAX_BODY = 524288 + 64 * 1024  # one block and some slack; anything larger is refused
IDLE_TIMEOUT_S = 120.0
REASONS = {200: "OK", 201: "Created", 202: "Accepted", 400: "Bad Request", 402: "Payment Required",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
           411: "Length Required", 413: "Payload Too Large", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}
# The namespace the service puts after the code in x-amzn-ErrorType.
ERROR_TYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.zeppelindataservice/"
# A GetSnapshotBlock head: these pieces around the request id, the date and the block's
# checksum (the lane writes its direct answers from the same pieces).
_BLOCK_HEAD_PIECES = ("HTTP/1.1 200 OK\r\nx-amzn-RequestId: ", "\r\nDate: ",
                      f"\r\nContent-Type: application/octet-stream\r\nContent-Length: "
                      f"{BLOCK_SIZE}\r\nx-amz-Data-Length: {BLOCK_SIZE}\r\nx-amz-Checksum: ",
                      "\r\nx-amz-Checksum-Algorithm: SHA256\r\n\r\n")
_BLOCK_HEAD_END_CLOSE = "\r\nx-amz-Checksum-Algorithm: SHA256\r\nConnection: close\r\n\r\n"


class _BadRequest(Exception):
    """The bytes are not an HTTP request we can answer; reply once and close."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _Request:
    __slots__ = ("method", "target", "path", "query_string", "version", "headers", "lines",
                 "body", "keep_alive")

    @property
    def header_list(self) -> list:
        """The headers as (name, value) in arrival order; built only when asked for (request
        recording), since every name was checked when the head was parsed."""
        return [(name, value.strip(" \t"))
                for name, _, value in (line.partition(":") for line in self.lines)]


def _unquote(s: str) -> str:
    """``unquote`` for a query part, with a shortcut for what block tokens carry: base64's
    ``+``, ``/`` and ``=`` escaped in upper case. The shortcut applies only when no other
    escape is left afterwards, and gives exactly what ``unquote`` gives."""
    quick = s.replace("%2B", "+").replace("%2F", "/").replace("%3D", "=")
    return quick if "%" not in quick else unquote(s)


def _parse_query(qs: str) -> dict:
    """Query parameters, decoded; the last of a repeated name wins. Faster than parse_qsl for
    the few short parameters EBS requests carry, which matters at thousands of requests/s."""
    out = {}
    if not qs:
        return out
    for part in qs.split("&"):
        k, _, v = part.partition("=")
        if "%" in k or "+" in k:
            k = _unquote(k.replace("+", " "))
        if "%" in v or "+" in v:
            v = _unquote(v.replace("+", " "))
        out[k] = v
    return out


class _Clock:
    """The Date header and request ids, cheap per response: the date is formatted once a
    second; ids are a random per-server prefix and a counter, in UUID form."""

    def __init__(self):
        self._second = -1
        self._date = ""
        p = secrets.token_hex(10)
        self._prefix = f"{p[:8]}-{p[8:12]}-{p[12:16]}-{p[16:20]}-"
        self._counter = itertools.count()

    def date(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._date = email.utils.formatdate(now, usegmt=True)
            self._second = now
        return self._date

    def request_id(self) -> str:
        return f"{self._prefix}{next(self._counter):012x}"


def _random_access_key() -> str:
    return "AKIA" + "".join(secrets.choice(string.ascii_uppercase + "234567") for _ in range(16))


def _route(method: str, path: str):
    """(operation name, path parameters) for a request path, or None."""
    parts = path.split("/")
    # ['', 'snapshots', ...]
    if (method == "GET" and len(parts) == 5 and parts[3] == "blocks" and parts[1] == "snapshots"
            and parts[0] == ""):  # GetSnapshotBlock, the one that must be quick
        snap, index = parts[2], parts[4]
        return "GetSnapshotBlock", (unquote(snap) if "%" in snap else snap,
                                    unquote(index) if "%" in index else index)
    if len(parts) < 2 or parts[0] != "" or parts[1] != "snapshots":
        return None
    rest = [unquote(p) if "%" in p else p for p in parts[2:]]
    if method == "POST" and rest in ([], [""]):
        return "StartSnapshot", ()
    if method == "POST" and len(rest) == 2 and rest[0] == "completion":
        return "CompleteSnapshot", (rest[1],)
    if len(rest) == 3 and rest[1] == "blocks":
        if method == "GET":
            return "GetSnapshotBlock", (rest[0], rest[2])
        if method == "PUT":
            return "PutSnapshotBlock", (rest[0], rest[2])
    if method == "GET" and len(rest) == 2 and rest[1] == "blocks":
        return "ListSnapshotBlocks", (rest[0],)
    if method == "GET" and len(rest) == 2 and rest[1] == "changedblocks":
        return "ListChangedBlocks", (rest[0],)
    return None


class EBSServer:
    """A local EBS direct API server on 127.0.0.1 (or ``host``), started on a free port.

    ::

        with EBSServer() as server:
            client = boto3.client("ebs", endpoint_url=server.endpoint_url,
                                  aws_access_key_id=server.access_key,
                                  aws_secret_access_key=server.secret_key,
                                  region_name=server.region)
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 access_key: str | None = None, secret_key: str | None = None,
                 session_token: str | None = None, region: str = "us-east-1",
                 verify_signatures: bool = True, max_clock_skew_s: float = 900.0,
                 tls: bool = False, data_dir: str | None = None,
                 faults: Faults | None = None, max_pending_snapshots: int = 100,
                 record_requests: bool = False, clock=None):
        self.host = host
        self.port = port
        self.access_key = access_key or _random_access_key()
        self._secret_key = secret_key or secrets.token_urlsafe(30)[:40]
        self._session_token = session_token
        self.region = region
        self.verify_signatures = verify_signatures
        self.max_clock_skew_s = max_clock_skew_s
        self.tls = tls
        self.data_dir = data_dir
        self._faults = FaultState(faults)
        self._max_pending = max_pending_snapshots
        self._clock_fn = clock
        #: with record_requests=True, every request as received: dicts with method, path,
        #: query, headers (a list of (name, value) in arrival order) and body
        self.requests: list[dict] | None = [] if record_requests else None
        self._sock: socket.socket | None = None
        self._ssl_ctx: ssl.SSLContext | None = None
        self._tmpdir: str | None = None
        self.ca_file: str | None = None
        self.service: Service | None = None
        self._threads: set[threading.Thread] = set()
        self._conns: set = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self._clock = _Clock()
        self._local = threading.local()  # per connection thread: its _splice.BlockPipe
        self._served = itertools.count()
        self._accepted = itertools.count()
        self._lane = None  # ebsfast._lane.BlockLane (or its twin) while running, where usable
        self._requests_served = 0
        self._direct_before = 0  # direct answers of earlier runs' lanes
        self.connections_accepted = 0

    # -- credentials: readable on purpose (tests need them), never in repr -----------------
    @property
    def secret_key(self) -> str:
        return self._secret_key

    @property
    def session_token(self) -> str | None:
        return self._session_token

    def __repr__(self) -> str:
        state = "running" if self._sock is not None else "stopped"
        return (f"<EBSServer {state} {self.endpoint_url if self._sock else ''} "
                f"access_key={self.access_key} tls={self.tls}>")

    @property
    def endpoint_url(self) -> str:
        if self._sock is None:
            raise RuntimeError("the server is not running; call start() or use it as a "
                               "context manager")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def faults(self) -> Faults:
        return self._faults.faults

    def set_faults(self, **changes) -> Faults:
        """Change fault knobs while running; see :class:`Faults` for their names."""
        new = self._faults.update(**changes)
        self._apply_token_ttls()
        self._lane_direct()
        return new

    def _apply_token_ttls(self) -> None:
        if self.service is None:
            return
        from ._service import BLOCK_TOKEN_TTL_S, PAGE_TOKEN_TTL_S

        f = self._faults.faults
        self.service.block_token_ttl_s = (BLOCK_TOKEN_TTL_S if f.block_token_ttl_s is None
                                          else f.block_token_ttl_s)
        self.service.page_token_ttl_s = (PAGE_TOKEN_TTL_S if f.page_token_ttl_s is None
                                         else f.page_token_ttl_s)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "EBSServer":
        if self._sock is not None:
            return self
        self._stopping.clear()
        kw = {"clock": self._clock_fn} if self._clock_fn is not None else {}
        self.service = Service(BlockStore(self.data_dir), max_pending=self._max_pending, **kw)
        self._apply_token_ttls()
        if self.tls:
            from ._tls import make_certificate, server_context

            self._tmpdir = tempfile.mkdtemp(prefix="ebsfast-tls-")
            cert, key = make_certificate(self._tmpdir, self.host)
            self._ssl_ctx = server_context(cert, key)
            self.ca_file = cert
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(512)
        self.port = sock.getsockname()[1]
        self._sock = sock
        if self._lane is not None:  # a restart: keep the count of the last run's lane
            self._direct_before += self._lane.direct_served
        self._lane = self._make_lane()
        self._lane_direct()
        self._accept_thread = threading.Thread(target=self._accept_loop,
                                               name=f"ebsfast-server:{self.port}", daemon=True)
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        self._stopping.set()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(timeout=5)
        if self.service is not None:
            self.service.store.close()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> "EBSServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Block until interrupted (used by ``python -m ebsfast.testing``)."""
        self.start()
        try:
            while not self._stopping.wait(0.5):
                pass
        finally:
            self.stop()

    def _make_lane(self):
        """The GetSnapshotBlock lane (``ebsfast._lane``), where it can serve: plain HTTP, blocks
        in memory sent by vmsplice, and requests not recorded (the lane keeps no record)."""
        if (self._ssl_ctx is not None or not self.service.store.in_memory
                or not _splice.AVAILABLE or self.requests is not None):
            return None
        p = secrets.token_hex(10)  # request ids of direct answers: their own prefix
        lane = _backend.load("lane").BlockLane(
            access_key=self.access_key, secret_key=self._secret_key,
            session_token=self._session_token, region=self.region,
            verify=self.verify_signatures, max_skew_s=self.max_clock_skew_s,
            block_size=BLOCK_SIZE, lookup=self._lane_block, token_key=self.service._key,
            request_id_prefix=f"{p[:8]}-{p[8:12]}-{p[12:16]}-{p[16:20]}-",
            head_pieces=tuple(piece.encode("ascii") for piece in _BLOCK_HEAD_PIECES))
        self.service.on_completed = self._publish
        return lane

    def _publish(self, snap) -> None:
        """A snapshot just completed: its stored blocks, for the lane to answer directly."""
        lane, address = self._lane, self.service.store.address
        if lane is None:
            return
        indexes, addresses, checksums = [], [], []
        for index, block in snap.blocks.items():
            at = address(block)
            if at is not None:  # a zero block goes by the general path
                indexes.append(index)
                addresses.append(at)
                checksums.append(block.checksum)
        lane.publish(snap.id, indexes, addresses, checksums)

    def _lane_direct(self) -> None:
        """Direct answers skip the faults and the service's clock: on only when no fault is set
        and the service keeps real time."""
        f = self._faults.faults
        if self._lane is not None:
            self._lane.direct = (not (f.request_faults or f.body_faults)
                                 and self.service.clock is time.time)

    @property
    def requests_served(self) -> int:
        """Requests answered so far (each counted once, whichever path answered it)."""
        lane = self._lane
        return (self._requests_served + self._direct_before
                + (lane.direct_served if lane is not None else 0))

    def _lane_block(self, path: str, query: str):
        """For the lane: the head and block address of the GetSnapshotBlock at ``path`` when the
        general path would send it by vmsplice with nothing else to do (no fault set), else None,
        with nothing done. The lane has checked the signature."""
        f = self._faults.faults
        if f.request_faults or f.body_faults:
            return None
        route = _route("GET", path)
        if route is None or route[0] != "GetSnapshotBlock":
            return None
        try:
            block = self.service.block_for_get(route[1][0], route[1][1],
                                               _parse_query(query).get("blockToken"))
        except ApiError:
            return None
        address = self.service.store.address(block)
        if address is None:
            return None
        self._requests_served = next(self._served) + 1
        return self._block_head(block.checksum, True), address

    def _pipe(self):
        """This connection thread's BlockPipe, made on first use; False when none can be made
        (out of file descriptors: the connection copies instead)."""
        pipe = getattr(self._local, "pipe", None)
        if pipe is None:
            try:
                pipe = _splice.BlockPipe(BLOCK_SIZE)
            except OSError:
                pipe = False
            self._local.pipe = pipe
        return pipe

    # -- connections --------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        sock = self._sock
        while not self._stopping.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.01)
                continue
            self.connections_accepted = next(self._accepted) + 1
            t = threading.Thread(target=self._serve_connection, args=(conn,), daemon=True,
                                 name=f"ebsfast-conn:{self.port}")
            with self._lock:
                self._threads.add(t)
            t.start()

    def _serve_connection(self, conn: socket.socket) -> None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A blocking socket with a kernel receive timeout, not settimeout(): with a Python
            # timeout every send of a block becomes a poll()+send() loop, which doubled the
            # server's CPU per GetSnapshotBlock. An idle connection still closes (EAGAIN).
            conn.settimeout(None)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                            struct.pack("ll", int(IDLE_TIMEOUT_S), 0))
            if self._ssl_ctx is not None:
                try:
                    conn = self._ssl_ctx.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()
                    return
            with self._lock:
                self._conns.add(conn)
            buf = bytearray()
            lane = self._lane if not isinstance(conn, ssl.SSLSocket) else None
            while not self._stopping.is_set():
                if lane is not None:
                    pipe = self._pipe()
                    if pipe:
                        rest = lane.serve(conn, bytes(buf), pipe)
                        if rest is None:
                            return
                        buf = bytearray(rest)
                try:
                    req = self._read_request(conn, buf)
                except _BadRequest as exc:
                    self._send(conn, self._error(exc.status, "BadRequestException" if
                                                 exc.status != 413 else "ValidationException",
                                                 exc.message), keep_alive=False)
                    return
                if req is None:
                    return
                if not self._handle(conn, req):
                    return
        except (OSError, ssl.SSLError):
            return
        finally:
            pipe = getattr(self._local, "pipe", None)
            self._local.pipe = None
            if pipe:
                pipe.close()
            with self._lock:
                self._conns.discard(conn)
                self._threads.discard(threading.current_thread())
            try:
                conn.close()
            except OSError:
                pass

    def _read_request(self, conn, buf: bytearray) -> _Request | None:
        end = buf.find(b"\r\n\r\n")
        while end < 0:
            if len(buf) > MAX_HEAD:
                raise _BadRequest(431, "The request head is too large.")
            data = conn.recv(65536)
            if not data:
                if buf:
                    raise _BadRequest(400, "The connection closed inside a request head.")
                return None
            buf += data
            end = buf.find(b"\r\n\r\n")
        lines = buf[:end].decode("latin-1").split("\r\n")
        del buf[:end + 4]
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise _BadRequest(400, "The request line is malformed.") from None
        if not version.startswith("HTTP/1."):
            raise _BadRequest(400, f"Unsupported protocol {version!r}.")
        del lines[0]
        headers: dict[str, str] = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep or not name or " " in name or "\t" in name or name != name.strip():
                raise _BadRequest(400, f"Malformed header line {line[:80]!r}.")
            value = value.strip(" \t")
            key = name.lower()
            if key in headers:
                headers[key] = f"{headers[key]},{value}"
            else:
                headers[key] = value
        req = _Request()
        req.method = method
        req.target = target
        req.path, _, req.query_string = target.partition("?")
        req.version = version
        req.headers = headers
        req.lines = lines
        conn_hdr = headers.get("connection")
        if conn_hdr is None:
            req.keep_alive = version == "HTTP/1.1"
        else:
            conn_hdr = conn_hdr.lower()
            req.keep_alive = ("close" not in conn_hdr if version == "HTTP/1.1"
                              else "keep-alive" in conn_hdr)
        if "expect" in headers and headers["expect"].lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "transfer-encoding" in headers and "chunked" in headers["transfer-encoding"].lower():
            req.body = self._read_chunked(conn, buf)
            return req
        cl = headers.get("content-length")
        if cl is None:  # a GET: no body, and nothing to read
            req.body = b""
            return req
        if not cl.isdigit():
            raise _BadRequest(400, f"Invalid Content-Length {cl[:40]!r}.")
        n = int(cl)
        if n > MAX_BODY:
            raise _BadRequest(413, f"The request body of {n} bytes is larger than a block.")
        while len(buf) < n:
            data = conn.recv(max(65536, n - len(buf)))
            if not data:
                raise _BadRequest(400, "The connection closed inside a request body.")
            buf += data
        req.body = bytes(buf[:n])
        del buf[:n]
        return req

    def _read_chunked(self, conn, buf: bytearray) -> bytes:
        body = bytearray()
        while True:
            while b"\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    raise _BadRequest(400, "The connection closed inside a chunk.")
                buf += data
            line_end = buf.find(b"\r\n")
            size_s = bytes(buf[:line_end]).split(b";")[0].strip()
            try:
                size = int(size_s, 16)
            except ValueError:
                raise _BadRequest(400, "Malformed chunk size.") from None
            del buf[:line_end + 2]
            if len(body) + size > MAX_BODY:
                raise _BadRequest(413, "The chunked request body is larger than a block.")
            while len(buf) < size + 2:
                data = conn.recv(65536)
                if not data:
                    raise _BadRequest(400, "The connection closed inside a chunk.")
                buf += data
            body += buf[:size]
            del buf[:size + 2]
            if size == 0:
                return bytes(body)

    # -- requests -----------------------------------------------------------------------------
    def _handle(self, conn, req: _Request) -> bool:
        """Answer one request; False when the connection must close."""
        self._requests_served = next(self._served) + 1
        if self.requests is not None:
            self.requests.append({"method": req.method, "path": req.path,
                                  "query": req.query_string, "headers": list(req.header_list),
                                  "body": req.body})
        route = _route(req.method, req.path)
        op = route[0] if route else None
        faults = self._faults
        try:
            if route is None:
                raise ApiError(404, "UnknownOperationException",
                               f"No operation at {req.method} {req.path[:200]}.")
            if self.verify_signatures:
                _auth.verify(req, access_key=self.access_key, secret_key=self._secret_key,
                             session_token=self._session_token, region=self.region,
                             max_skew_s=self.max_clock_skew_s)
            f = faults.faults
            if f.request_faults:
                if faults.over_rate(("account",), f.account_rate_limit):
                    raise ApiError(400, "ThrottlingException", "Rate exceeded.")
                if op in f.rate_limits:
                    snap = route[1][0] if route[1] else ""
                    if faults.over_rate((op, snap), f.rate_limits[op]):
                        raise ApiError(400, "RequestThrottledException",
                                       f"{op} is throttled for this snapshot.",
                                       "RESOURCE_LEVEL_THROTTLE")
                if faults.roll("stall_rate", op):
                    if self._stopping.wait(f.stall_s):
                        return False
                if faults.roll("error_rate", op):
                    raise ApiError(500, "InternalServerException", "An internal error "
                                   "occurred (injected by ebsfast.testing).")
            if op == "GetSnapshotBlock":
                # The hot path: no Response, and the head written in one piece.
                token = _parse_query(req.query_string).get("blockToken")
                params = route[1]
                block = self.service.block_for_get(params[0], params[1], token)
                resp = None
            else:
                resp = self._dispatch(op, route[1], req)
        except ApiError as exc:
            resp = self._error(exc.status, exc.code, exc.message, exc.reason)
        if resp is None:
            return self._send_block(conn, self._block_head(block.checksum, req.keep_alive),
                                    block, op, req.keep_alive)
        return self._send(conn, resp, keep_alive=req.keep_alive, op=op)

    def _dispatch(self, op: str, params: tuple, req: _Request) -> Response:
        svc = self.service
        query = _parse_query(req.query_string)
        if op == "GetSnapshotBlock":
            return svc.get_snapshot_block(params[0], params[1], query)
        if op == "ListSnapshotBlocks":
            return svc.list_snapshot_blocks(params[0], query)
        if op == "ListChangedBlocks":
            return svc.list_changed_blocks(params[0], query)
        if op == "PutSnapshotBlock":
            return svc.put_snapshot_block(params[0], params[1], req.headers, req.body)
        if op == "StartSnapshot":
            return svc.start_snapshot(req.body)
        return svc.complete_snapshot(params[0], req.headers)

    @staticmethod
    def _error(status: int, code: str, message: str, reason: str | None = None) -> Response:
        body = {"message": message}
        if reason:
            body["Reason"] = reason
        return Response(status, body, headers={"x-amzn-ErrorType": code + ERROR_TYPE_SUFFIX})

    def _send(self, conn, resp: Response, *, keep_alive: bool, op: str | None = None) -> bool:
        block = resp.block
        body = resp.body
        if block is not None:
            ctype = "application/octet-stream"
            length = BLOCK_SIZE
        elif body is None:
            body = json.dumps(resp.json if resp.json is not None else {}).encode()
            ctype = "application/json"
            length = len(body)
        else:
            ctype = "application/octet-stream"
            length = len(body)
        head = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Unknown')}",
                f"x-amzn-RequestId: {self._clock.request_id()}",
                f"Date: {self._clock.date()}",
                f"Content-Type: {ctype}",
                f"Content-Length: {length}"]
        head += [f"{k}: {v}" for k, v in resp.headers.items()]
        if not keep_alive:
            head.append("Connection: close")
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if block is not None:
            return self._send_block(conn, head_bytes, block, op, keep_alive)
        conn.sendall(head_bytes + body)
        return keep_alive

    def _block_head(self, checksum: str, keep_alive: bool) -> bytes:
        """The head of a GetSnapshotBlock answer: what ``_send`` makes of the Response
        ``Service.get_snapshot_block`` returns, byte for byte, built in one f-string."""
        clock = self._clock
        p0, p1, p2, p3 = _BLOCK_HEAD_PIECES
        return (f"{p0}{clock.request_id()}{p1}{clock.date()}{p2}{checksum}"
                f"{p3 if keep_alive else _BLOCK_HEAD_END_CLOSE}").encode("latin-1")

    def _send_block(self, conn, head: bytes, block, op: str | None, keep_alive: bool) -> bool:
        store = self.service.store
        faults = self._faults
        body = None
        f = faults.faults
        if op in BODY_OPERATIONS and f.body_faults:
            if faults.roll("corrupt_rate", op):
                body = faults.corrupt(store.read(block))
            if faults.roll("reset_rate", op):
                conn.sendall(head)
                conn.sendall(memoryview(body or store.read(block))[: BLOCK_SIZE // 3])
                self._reset(conn)
                return False
            if faults.roll("truncate_rate", op):
                conn.sendall(head)
                conn.sendall(memoryview(body or store.read(block))[: BLOCK_SIZE // 2])
                return False
            if faults.roll("body_stall_rate", op):
                data = memoryview(body or store.read(block))
                conn.sendall(head)
                conn.sendall(data[: BLOCK_SIZE // 2])
                if self._stopping.wait(f.stall_s):
                    return False
                conn.sendall(data[BLOCK_SIZE // 2:])  # fails if the client gave up
                return keep_alive
        if body is None and not isinstance(conn, ssl.SSLSocket):
            address = store.address(block)
            pipe = self._pipe() if address is not None else False
            if pipe:
                # By reference: vmsplice + splice (see _splice for why).
                pipe.send(conn, head, address, BLOCK_SIZE)
                return keep_alive
            if not store.in_memory and block.slot >= 0:
                # The block goes from the store's file to the socket inside the kernel. (Not
                # a zero block: while nothing else is stored, the file ends before it.)
                conn.sendall(head, socket.MSG_MORE)
                offset, left = store.offset(block), BLOCK_SIZE
                while left > 0:
                    sent = os.sendfile(conn.fileno(), store.fileno, offset, left)
                    if sent == 0:
                        raise ConnectionResetError("the client closed the connection mid-block")
                    offset += sent
                    left -= sent
                return keep_alive
            # Head and block in one sendmsg, the block from where it sits in memory (or
            # ZERO_BLOCK).
            view = store.view(block)
            sent = conn.sendmsg((head, view))
            if sent < len(head) + BLOCK_SIZE:  # a signal cut the send short
                if sent < len(head):
                    conn.sendall(head[sent:])
                    sent = len(head)
                conn.sendall(view[sent - len(head):])
            return keep_alive
        # TLS: written by OpenSSL without the GIL where the native exchange can (each 16 KiB
        # record through SSLSocket.sendall would take the GIL back)
        _backend.load("http").tls_sendall(conn, head,
                                          body if body is not None else store.view(block))
        return keep_alive

    @staticmethod
    def _reset(conn) -> None:
        """Close with an RST rather than a FIN, as a broken network path would."""
        try:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError as exc:
            if exc.errno not in (errno.EBADF, errno.ENOTCONN):
                raise
        conn.close()
