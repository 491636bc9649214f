"""The local server's lane for GetSnapshotBlock: the pure-Python twin of ``ebsfast._lane``.

A connection of the local server (``ebsfast.testing``) runs its requests through the lane
first. The lane serves a request itself only when it is a plain keep-alive GET that it parses
and whose SigV4 signature it verifies, and when a block is found for it: among the blocks of
completed snapshots the server published to it (``find``), else by the server's ``lookup``;
it hands everything else back to the server's general path, which answers it (errors
included). The lane's rules are a subset of the general path's, so what it serves is exactly
what the general path would have served: this module states those rules, using the general
path's own signature check, and the native module is held to it by the tests.

Why it exists: with the request parsed, verified and sent from C, the GIL released while the
connection waits and while the block goes out, the server's CPU per GetSnapshotBlock falls to
little more than the kernel's own work (numbers in README, "The local server").
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import re
import socket
import struct
import threading
import time
from email.utils import formatdate
from typing import Callable, Sequence

#: the longest request head the lane reads before handing the connection back
MAX_HEAD = 64 * 1024
#: at most this many header lines, and signed header names, in a request the lane serves
MAX_HEADERS = 32

_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_VALUE_BYTES = frozenset(range(0x20, 0x7F)) | {0x09}
_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z")
#: a path whose block the lane may find: the snapshot id has no '%', the index is 1 to 18 digits
_BLOCK_PATH = re.compile(r"/snapshots/([^/%]+)/blocks/([0-9]{1,18})")
#: a query holding one block token: base64, '+' written %2B, '/' and '=' written bare or
#: %2F, %3D (a bare '+' in a query is a space)
_TOKEN_QUERY = re.compile(r"blockToken=((?:[A-Za-z0-9/=]|%2B|%2F|%3D){1,256})")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
CHECKSUM_LEN = 44  # base64 of a SHA-256

Lookup = Callable[[str, str], "tuple[bytes, int] | None"]


class _Head:
    """What the general path's signature check reads of a request."""

    __slots__ = ("method", "path", "query_string", "headers", "body")

    def __init__(self, path: str, query: str, headers: dict):
        self.method = "GET"
        self.path = path
        self.query_string = query
        self.headers = headers
        self.body = b""


def parse(head: bytes) -> _Head | None:
    """The request head (without its final CRLF CRLF) when the lane may serve it: ``GET
    <target> HTTP/1.1``, header lines of printable ASCII with token names, no name twice (in any
    case), at most MAX_HEADERS lines, no body (Content-Length absent or ``0``, no
    Transfer-Encoding, no Expect), and Connection absent or ``keep-alive``; else None."""
    lines = head.split(b"\r\n")
    first = lines[0]
    if not first.startswith(b"GET ") or not first.endswith(b" HTTP/1.1") or len(first) < 14:
        return None
    target = first[4:-9]
    if any(c <= 0x20 or c >= 0x7F for c in target):
        return None
    if len(lines) - 1 > MAX_HEADERS:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or not _TCHAR.issuperset(name) or not _VALUE_BYTES.issuperset(value):
            return None
        key = name.decode("ascii").lower()
        if key in headers:
            return None
        headers[key] = value.strip(b" \t").decode("ascii")
    if headers.get("content-length", "0") != "0":
        return None
    if "transfer-encoding" in headers or "expect" in headers:
        return None
    if headers.get("connection", "keep-alive").lower() != "keep-alive":
        return None
    path, _, query = target.decode("ascii").partition("?")
    return _Head(path, query, headers)


def _dated_in_range(amz_date: str) -> bool:
    m = _DATE.fullmatch(amz_date)
    if m is None:
        return False
    y, mo, d, h, mi, s = (int(g) for g in m.groups())
    return y >= 1 and 1 <= mo <= 12 and 1 <= d <= 31 and h <= 23 and mi <= 59 and s <= 59


def http_date(seconds: int) -> str:
    """The HTTP date of a whole second since the epoch, as direct answers carry it."""
    if not 0 <= seconds <= 253402300799:
        raise ValueError("seconds must fall in the years 1970 to 9999")
    return formatdate(seconds, usegmt=True)


def token_mac(key: bytes, payload: bytes) -> bytes:
    """HMAC-SHA256 of ``payload`` under ``key``, its first 16 bytes: the MAC of the local
    server's opaque tokens (the lane checks block tokens with it)."""
    return hmac.new(key, payload, hashlib.sha256).digest()[:16]


class BlockLane:
    """One server's lane (see the module docstring); shared by its connection threads.

    ``lookup(path, query)`` is the server's: the response head and the address of the
    ``block_size`` bytes to send for a GetSnapshotBlock it would serve, or None for the general
    path (with nothing done). With ``verify`` false no signature is checked, as the server's own
    ``verify_signatures=False`` does.

    Blocks of completed snapshots that the server ``publish``-es are answered without
    ``lookup`` (``find`` says which): when the block token in the query is the service's
    (``token_key``, see ``token_mac``) for that snapshot and index and unexpired. Their response
    head is ``head_pieces`` around this lane's request id (``request_id_prefix``, 24
    characters, and a 12-digit hex counter), the HTTP date and the block's checksum.
    """

    def __init__(self, *, access_key: str, secret_key: str, session_token: str | None,
                 region: str, verify: bool, max_skew_s: float, block_size: int,
                 lookup: Lookup, token_key: bytes, request_id_prefix: str,
                 head_pieces: tuple[bytes, bytes, bytes, bytes]):
        if len(request_id_prefix) != 24 or not request_id_prefix.isascii():
            raise ValueError("request_id_prefix must be 24 ASCII characters")
        if len(head_pieces) != 4 or not all(isinstance(p, bytes) for p in head_pieces):
            raise TypeError("head_pieces must be four bytes objects")
        self._token_key = token_key
        self._id_prefix = request_id_prefix.encode("ascii")
        self._head_pieces = head_pieces
        self._ids = itertools.count()
        self._published: dict[str, dict[int, tuple[str, int]]] = {}
        self._lock = threading.Lock()
        #: whether published blocks are answered directly (the server turns this off while a
        #: fault is set, so that every request meets the faults)
        self.direct = True
        #: of the requests served, those answered without the server's lookup
        self.direct_served = 0
        self._access_key = access_key
        self._secret_key = secret_key
        self._session_token = session_token
        self._region = region
        self._verify = verify
        self._max_skew_s = max_skew_s
        self._block_size = block_size
        self._lookup = lookup
        #: requests the lane answered (counted as each answer starts)
        self.served = 0

    def __repr__(self) -> str:
        return (f"<{type(self).__module__}.BlockLane access_key={self._access_key} "
                f"region={self._region} verify={self._verify} served={self.served}>")

    def publish(self, snapshot_id: str, indexes: Sequence[int], addresses: Sequence[int],
                checksums: Sequence[str]) -> None:
        """A completed snapshot's blocks: equal-length sequences of indexes, addresses of
        ``block_size`` bytes, and base64 SHA-256 checksums."""
        if not len(indexes) == len(addresses) == len(checksums):
            raise ValueError("indexes, addresses and checksums must have the same length")
        for c in checksums:
            if len(c.encode("ascii")) != CHECKSUM_LEN:
                raise ValueError(f"checksum {c!r} is not base64 of 32 bytes")
        blocks = dict(zip(indexes, zip(checksums, addresses)))
        with self._lock:
            self._published[snapshot_id] = blocks

    def find(self, path: str, query: str) -> tuple[str, int] | None:
        """``(checksum, address)`` of the published block a GetSnapshotBlock at ``path`` and
        ``query`` names with a valid, unexpired token; None otherwise."""
        p = _BLOCK_PATH.fullmatch(path)
        q = _TOKEN_QUERY.fullmatch(query)
        if p is None or q is None:
            return None
        snapshot_id, index = p.group(1), int(p.group(2))
        token = q.group(1).replace("%2B", "+").replace("%2F", "/").replace("%3D", "=")
        if not _BASE64.fullmatch(token):
            return None
        try:
            raw = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            return None
        sid = snapshot_id.encode()
        if (len(raw) != 17 + len(sid) + 16 or raw[:1] != b"B" or raw[17:-16] != sid
                or struct.unpack(">Q", raw[1:9])[0] != index):
            return None
        if not hmac.compare_digest(token_mac(self._token_key, raw[:-16]), raw[-16:]):
            return None
        if time.time() > struct.unpack(">Q", raw[9:17])[0]:
            return None
        with self._lock:
            return self._published.get(snapshot_id, {}).get(index)

    def _direct_head(self, checksum: str) -> bytes:
        p0, p1, p2, p3 = self._head_pieces
        rid = b"%012x" % (next(self._ids) & (2**48 - 1))
        date = http_date(int(time.time())).encode("ascii")
        return b"".join((p0, self._id_prefix, rid, p1, date, p2, checksum.encode("ascii"), p3))

    def accepts(self, head: bytes) -> tuple[str, str] | None:
        """``(path, query)`` of a request head (without its final CRLF CRLF) that the lane may
        serve, its signature checked; None for the general path."""
        req = parse(head)
        if req is None:
            return None
        if self._verify and not self._signed(req):
            return None
        return req.path, req.query_string

    def _signed(self, req: _Head) -> bool:
        from .testing import _auth
        from .testing._service import ApiError

        headers = req.headers
        if "authorization" not in headers:  # presigned URLs take the general path
            return False
        if not _dated_in_range(headers.get("x-amz-date", "")):
            return False
        # Signed header names are looked up as sent; the general path would refuse upper case.
        m = _auth._AUTH_RE.match(headers["authorization"])
        if m is None or len(m.group(2).split(";")) > MAX_HEADERS:
            return False
        try:
            _auth.verify(req, access_key=self._access_key, secret_key=self._secret_key,
                         session_token=self._session_token, region=self._region,
                         max_skew_s=self._max_skew_s)
        except ApiError:
            return False
        return True

    def serve(self, conn: socket.socket, pending: bytes, pipe) -> bytes | None:
        """Serve ``conn``'s requests until one is not the lane's: return the bytes received and
        not consumed (that request's head first) for the general path; None when the connection
        is over (closed by the peer between requests, timed out, reset, or a send failed).

        ``pending``: bytes already received; ``pipe``: the connection thread's
        ``_splice.BlockPipe``."""
        buf = bytearray(pending)
        size = self._block_size
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    return bytes(buf)
                try:
                    data = conn.recv(65536)
                except OSError:
                    return None
                if not data:
                    return bytes(buf) if buf else None
                buf += data
                continue
            target = self.accepts(bytes(buf[:end]))
            block = self.find(*target) if target is not None and self.direct else None
            if block is not None:
                found = self._direct_head(block[0]), block[1]
            else:
                found = self._lookup(*target) if target is not None else None
            if found is None:
                return bytes(buf)
            del buf[:end + 4]
            # Counted as the answer starts, so that a client holding it sees it counted.
            self.served += 1
            self.direct_served += block is not None
            try:
                pipe.send(conn, found[0], found[1], size)
            except OSError:
                return None

