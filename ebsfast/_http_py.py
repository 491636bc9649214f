"""Pure-Python twin of ``ebsfast._http``: one HTTP/1.1 exchange on a connected socket.

It is the executable specification of the native module: same function, same arguments, same
``Response`` and the same exception classes (defined here; the native module re-exports them, so
``except`` clauses work whichever module raised). It reads response bodies with
``sock.recv_into`` straight into the caller's buffer, so it makes no intermediate ``bytes`` for a
block either, but each call still costs Python-level work per received segment.

Parsing rules (RFC 9112), shared with ``ebsfast/_csrc/http.c``:

* The head is at most 64 KiB (status line through the blank line). Lines end in LF, optionally
  preceded by CR. The status line is ``HTTP/1.<d> <3 digits>`` then nothing or a space and a
  reason phrase. Header lines are ``token ":" OWS value OWS``; line folding, empty names, bytes
  outside HTAB/SP/VCHAR/obs-text and responses not starting with ``HTTP/`` are rejected.
* ``Content-Length`` is 1*DIGIT below 2**63; repeats must agree. ``Transfer-Encoding`` must be
  exactly ``chunked`` and may not come with ``Content-Length``. 1xx responses other than 101 are
  skipped (at most 16). HEAD requests, 204 and 304 have no body; without either header the body
  runs to EOF (and the connection is not kept alive).
* Chunk-size lines are ``HEX [ws] [;ext] [CR] LF``, at most 4096 bytes before the LF, the size
  below 2**63; chunk data is followed by CRLF or LF; trailers (at most 64 KiB) are skipped.
"""
from __future__ import annotations

import base64
import hashlib
import operator
import re
import select
from random import getrandbits as _getrandbits
from typing import Any, Callable

from .signing import amz_date, uri_encode
from .wire import get_block_output

IMPLEMENTATION = "python"

MAX_HEAD = 65536
MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 65536
MAX_INTERIM = 16
FIRST_HEAD_BUF = 16384
_SCRATCH = 4096
_OTHER_BODY_FIRST = 16384
_INT64_MAX = (1 << 63) - 1


# -- results and errors ----------------------------------------------------------------------

class Response:
    """The final response of one exchange.

    ``body`` is the body as ``bytes`` unless it was written into ``out`` (status 200 with an
    ``out``), in which case it is None and ``body_length`` says how many bytes of ``out`` were
    written and ``digest`` is their SHA-256 (when ``hash_body``; else None). ``headers`` is
    the list of ``(name, value)`` pairs as received, or with ``lower_headers`` the dict of
    :func:`lower_fields`.
    """

    __slots__ = ("body", "body_length", "digest", "headers", "keep_alive", "reason", "status")

    def __init__(self, status: int, reason: str,
                 headers: list[tuple[str, str]] | dict[str, str],
                 body: bytes | None, body_length: int, digest: bytes | None,
                 keep_alive: bool) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.body_length = body_length
        self.digest = digest
        self.keep_alive = keep_alive

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first header called ``name`` (any case), else ``default``."""
        want = name.lower()
        if isinstance(self.headers, dict):  # lower_headers: all of them, joined
            return self.headers.get(want, default)
        for k, v in self.headers:
            if k.lower() == want:
                return v
        return default

    def _key(self) -> tuple:
        return (self.status, self.reason, self.headers, self.body, self.body_length,
                self.digest, self.keep_alive)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        body = "None" if self.body is None else f"<{len(self.body)} bytes>"
        return (f"Response(status={self.status}, reason={self.reason!r}, "
                f"headers=<{len(self.headers)}>, body={body}, body_length={self.body_length}, "
                f"digest={None if self.digest is None else self.digest.hex()}, "
                f"keep_alive={self.keep_alive})")


class ExchangeError(OSError):
    """Base of the errors of an exchange. After any of them the connection is unusable."""

    def __init__(self, message: str) -> None:
        # One argument keeps OSError from reading it as (errno, strerror).
        super().__init__(message)

    def __reduce__(self):  # type: ignore[override]
        return self.__class__, (self.args[0],), self.__dict__


class ConnectionClosed(ExchangeError, ConnectionError):
    """The connection ended (EOF or reset) before a complete response head. When
    ``response_started`` is False not one byte of a response arrived: a stale kept-alive
    connection, and the request may be retried on a new one."""

    def __init__(self, message: str = "the connection closed before a response arrived", *,
                 response_started: bool = False) -> None:
        super().__init__(message)
        self.response_started = response_started


class StaleConnection(ConnectionClosed):
    """Found before sending (``idle_check``): the kept-alive connection became readable while
    it sat idle, so the server closed it (or sent something unasked). Nothing was sent; take
    another connection."""

    def __init__(self, message: str = "the idle connection was closed by the server") -> None:
        super().__init__(message, response_started=False)

    def __reduce__(self):  # type: ignore[override]
        return self.__class__, (self.args[0],)


class IncompleteBody(ExchangeError, ConnectionError):
    """The connection ended (EOF or reset) in the middle of the body. ``received`` body bytes
    arrived of ``expected`` (None when the length was not announced: chunked)."""

    def __init__(self, received: int, expected: int | None) -> None:
        of = "" if expected is None else f" of {expected}"
        super().__init__(f"the connection ended after {received}{of} body bytes")
        self.received = received
        self.expected = expected

    def __reduce__(self):  # type: ignore[override]
        return self.__class__, (self.received, self.expected)


class ProtocolError(ExchangeError):
    """The response is not HTTP/1.1 this module accepts: malformed head or chunk framing."""


class BodyTooLarge(ExchangeError):
    """The body is longer than ``out`` (nothing was written past its end) or, for a body
    returned as bytes, longer than ``max_other_body``."""


# -- argument handling -----------------------------------------------------------------------

def _byte_view(obj: Any, name: str, *, writable: bool = False) -> memoryview:
    try:
        mv = memoryview(obj)
    except TypeError:
        raise TypeError(f"{name} must support the buffer protocol, "
                        f"not {type(obj).__name__}") from None
    if not mv.c_contiguous or (writable and mv.readonly):
        extra = " writable" if writable else ""
        why = "not C-contiguous" if not mv.c_contiguous else "read-only"
        raise ValueError(f"{name} must be a C-contiguous{extra} buffer ({why})")
    if mv.format == "B" and mv.ndim == 1:
        return mv
    if mv.nbytes == 0:  # cast() refuses shapes with a zero in them
        return memoryview(bytearray())
    try:
        return mv.cast("B")
    except TypeError:  # formats cast() does not know; numpy views any buffer as bytes
        import numpy

        return memoryview(numpy.frombuffer(mv, dtype=numpy.uint8))


def _timeout(timeout_s: Any) -> float | None:
    if timeout_s is None:
        return None
    t = float(timeout_s)
    if not t >= 0:
        raise ValueError(f"timeout_s must be None or >= 0, got {timeout_s!r}")
    return t


def _max_other(max_other_body: Any) -> int:
    n = operator.index(max_other_body)
    if n < 0:
        raise ValueError(f"max_other_body must be >= 0, got {n}")
    return n


# -- head parsing ----------------------------------------------------------------------------

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TEXT = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_DIGITS = re.compile(rb"[0-9]+")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)[ \t]*(?:;[^\r]*)?\r?")


_HEX = re.compile(rb"[0-9A-Fa-f]*")


def _check_chunk_line(line: bytes, complete: bool) -> None:
    """A chunk-size line, or the part of one received so far, as RFC 9112 section 7.1 allows:
    HEX [ws] [;ext] [CR] before the LF."""
    digits = _HEX.match(line).group()  # type: ignore[union-attr]
    if digits and int(digits, 16) > _INT64_MAX:
        raise ProtocolError("chunk size out of range")
    if (line or complete) and not _CHUNK_LINE.fullmatch(line):
        cr = line.find(b"\r")
        if 0 <= cr < len(line) - 1 and _CHUNK_LINE.fullmatch(line[:cr + 1]):
            raise ProtocolError("bare CR in a chunk size line")
        raise ProtocolError("invalid chunk size")


def _check_trailer(line: bytes, complete: bool) -> None:
    if len(line) >= 2 and line[:1] == b"\r":
        raise ProtocolError("bare CR in the chunked trailer section")


def _tokens(values: list[bytes]) -> list[bytes]:
    return [t.strip(b" \t").lower() for v in values for t in v.split(b",") if t.strip(b" \t")]


class _Head:
    __slots__ = ("chunked", "close", "content_length", "fields", "keep_alive_token", "minor",
                 "reason", "status")
    chunked: bool
    close: bool
    content_length: int
    fields: list[tuple[str, str]]
    keep_alive_token: bool
    minor: int
    reason: str
    status: int


def _parse_head(h: bytes) -> _Head:
    lines = h.split(b"\n")
    line = lines[0][:-1] if lines[0].endswith(b"\r") else lines[0]
    if (len(line) < 12 or line[:5] != b"HTTP/" or line[6:7] != b"." or line[8:9] != b" "
            or not line[5:6].isdigit() or not line[7:8].isdigit()):
        raise ProtocolError("malformed status line")
    if line[5:6] != b"1":
        raise ProtocolError("unsupported HTTP version (only HTTP/1.x is spoken)")
    if not _DIGITS.fullmatch(line[9:12]):
        raise ProtocolError("malformed status code")
    if line[9:10] == b"0":
        raise ProtocolError("status code below 100")
    if len(line) > 12 and line[12:13] != b" ":
        raise ProtocolError("malformed status line")
    reason = line[13:]
    if not _TEXT.fullmatch(reason):
        raise ProtocolError("invalid character in the reason phrase")
    hd = _Head()
    hd.minor = line[7] - 0x30
    hd.status = int(line[9:12])
    hd.reason = reason.decode("latin-1")
    fields: list[tuple[str, str]] = []
    cl = -1
    te: list[bytes] | None = None
    conn: list[bytes] = []
    for raw in lines[1:]:
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            raise ProtocolError("obsolete line folding in the response head is not supported")
        name, colon, value = line.partition(b":")
        if not colon:
            raise ProtocolError("header line without a colon")
        if not name:
            raise ProtocolError("empty header name")
        if not _TOKEN.fullmatch(name):
            raise ProtocolError("invalid character in a header name")
        value = value.strip(b" \t")
        if not _TEXT.fullmatch(value):
            raise ProtocolError("invalid character in a header value")
        fields.append((name.decode("latin-1"), value.decode("latin-1")))
        lname = name.lower()
        if lname == b"content-length":
            if not _DIGITS.fullmatch(value):
                raise ProtocolError("invalid Content-Length")
            n = int(value)
            if n > _INT64_MAX:
                raise ProtocolError("Content-Length out of range")
            if cl >= 0 and cl != n:
                raise ProtocolError("conflicting Content-Length headers")
            cl = n
        elif lname == b"transfer-encoding":
            te = (te or []) + [value]
        elif lname == b"connection":
            conn.append(value)
    if te is not None and _tokens(te) != [b"chunked"]:
        raise ProtocolError("unsupported Transfer-Encoding (only chunked is)")
    if te is not None and cl >= 0:
        raise ProtocolError("both Content-Length and Transfer-Encoding in the response")
    if hd.status == 101:
        raise ProtocolError("unexpected 101 Switching Protocols")
    ctoks = _tokens(conn)
    hd.fields = fields
    hd.content_length = cl
    hd.chunked = te is not None
    hd.close = b"close" in ctoks
    hd.keep_alive_token = b"keep-alive" in ctoks
    return hd


# -- the reader ------------------------------------------------------------------------------

class _Exchange:
    def __init__(self, sock: Any, out: memoryview | None, hash_body: bool, max_other: int,
                 head_request: bool) -> None:
        self.sock = sock
        self.out = out
        self.hash_body = hash_body
        self.max_other = max_other
        self.head_request = head_request
        self.received = 0
        self.eof = False
        self.in_body = False
        self.hbuf = bytearray(FIRST_HEAD_BUF)
        self.hlen = 0
        # unconsumed received bytes: buf[pos:end]
        self.buf = self.hbuf
        self.pos = self.end = 0
        self.scratch: bytearray | None = None
        self.dst: memoryview | bytearray | None = None
        self.dst_len = 0
        self.expected: int | None = None
        self.sha: Any = None
        self._too_large = "the response body exceeds the size of out"

    # -- I/O --
    def _recv_into(self, view: memoryview) -> int:
        try:
            n = self.sock.recv_into(view)
        except ConnectionResetError:
            if self.in_body:
                raise IncompleteBody(self.dst_len, self.expected) from None
            raise ConnectionClosed("the connection was reset before a complete response head",
                                   response_started=self.received > 0) from None
        self.received += n
        if n == 0:
            self.eof = True
        return n

    def _fill(self) -> None:
        """Reads into the scratch buffer (framing bytes, or probing past a full out)."""
        if self.scratch is None:
            self.scratch = bytearray(_SCRATCH)
        with memoryview(self.scratch) as mv:
            n = self._recv_into(mv)
        self.buf, self.pos, self.end = self.scratch, 0, n

    # -- head --
    def read_head(self) -> tuple[_Head, int]:
        interim = 0
        while True:
            scan = line_start = 0
            while True:
                h = self.hbuf
                n = min(self.hlen, 5)
                if h[:n] != b"HTTP/"[:n]:
                    raise ProtocolError("the response does not start with HTTP/")
                head_len = 0
                while scan < self.hlen:
                    nl = h.find(b"\n", scan, self.hlen)
                    if nl < 0:
                        scan = self.hlen
                        break
                    end = nl
                    if end > line_start and h[end - 1] == 0x0D:
                        end -= 1
                    if end == line_start and line_start > 0:
                        head_len = nl + 1
                        break
                    line_start = scan = nl + 1
                if head_len:
                    break
                if self.hlen >= MAX_HEAD:
                    raise ProtocolError("the response head exceeds 64 KiB")
                if self.eof:
                    raise ConnectionClosed(
                        "the connection closed before a complete response head"
                        if self.received else "the connection closed before a response arrived",
                        response_started=self.received > 0)
                if self.hlen == len(h):
                    grown = bytearray(min(2 * len(h), MAX_HEAD))
                    grown[:self.hlen] = h[:self.hlen]
                    self.hbuf = h = grown
                with memoryview(h) as mv, mv[self.hlen:] as free:
                    self.hlen += self._recv_into(free)
            hd = _parse_head(bytes(self.hbuf[:head_len]))
            if hd.status < 200:
                interim += 1
                if interim > MAX_INTERIM:
                    raise ProtocolError("too many 1xx interim responses")
                rest = self.hlen - head_len
                self.hbuf[:rest] = self.hbuf[head_len:self.hlen]
                self.hlen = rest
                continue
            return hd, head_len

    # -- body destination --
    def _room(self, need: int) -> None:
        """Bounds before writing ``need`` more bytes (and, for bytes bodies, room)."""
        if self.out is not None and self.dst is self.out:
            if need > len(self.out) - self.dst_len:
                raise BodyTooLarge(self._too_large)
            return
        if need > self.max_other - self.dst_len:
            raise BodyTooLarge("the response body exceeds max_other_body")
        assert isinstance(self.dst, bytearray)
        want = self.dst_len + need
        if want <= len(self.dst):
            return
        cap = len(self.dst) or _OTHER_BODY_FIRST
        while cap < want:
            cap *= 2
        cap = min(cap, self.max_other)
        self.dst.extend(bytes(cap - len(self.dst)))

    def _cap(self) -> int:
        assert self.dst is not None
        return len(self.dst)

    def _take(self, n: int) -> None:
        """Copies n buffered bytes into the destination."""
        assert self.dst is not None
        with memoryview(self.dst) as d, memoryview(self.buf) as s:
            d[self.dst_len:self.dst_len + n] = s[self.pos:self.pos + n]
            if self.sha is not None:
                self.sha.update(d[self.dst_len:self.dst_len + n])
        self.dst_len += n
        self.pos += n

    def _recv_body(self, n: int) -> int:
        """Receives up to n bytes straight into the destination."""
        assert self.dst is not None
        with memoryview(self.dst) as d, d[self.dst_len:self.dst_len + n] as window:
            got = self._recv_into(window)
            if got and self.sha is not None:
                self.sha.update(window[:got])
        self.dst_len += got
        return got

    def _copy_exact(self, n: int) -> None:
        """Moves exactly n body bytes (room already checked) from the buffer or the socket."""
        while n:
            if self.pos < self.end:
                k = min(self.end - self.pos, n)
                self._take(k)
                n -= k
                continue
            if self.eof:
                raise IncompleteBody(self.dst_len, self.expected)
            n -= self._recv_body(n)

    def _byte(self) -> int:
        while self.pos == self.end:
            if self.eof:
                raise IncompleteBody(self.dst_len, None)
            self._fill()
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def _line(self, limit: int, too_long: str, check) -> bytes:
        """Bytes before the next LF (which is consumed); more than ``limit`` is an error.
        ``check(line, complete)`` sees each partial line too, so an invalid byte fails as soon
        as it arrives, as the native byte-at-a-time parser does."""
        parts = bytearray()
        while True:
            if self.pos == self.end:
                if self.eof:
                    raise IncompleteBody(self.dst_len, None)
                self._fill()
                continue
            nl = self.buf.find(b"\n", self.pos, self.end)
            stop = self.end if nl < 0 else nl
            parts += self.buf[self.pos:stop]
            if len(parts) > limit:
                raise ProtocolError(too_long)
            check(bytes(parts), nl >= 0)
            if nl >= 0:
                self.pos = nl + 1
                return bytes(parts)
            self.pos = self.end

    def _chunked(self) -> None:
        while True:
            line = self._line(MAX_CHUNK_LINE, "chunk size line too long", _check_chunk_line)
            size = int(_HEX.match(line).group(), 16)  # type: ignore[union-attr]
            if size == 0:
                break
            self._too_large = "the chunked body exceeds the size of out"
            self._room(size)
            self._copy_exact(size)
            c = self._byte()
            if c == 0x0D:
                c = self._byte()
            if c != 0x0A:
                raise ProtocolError("chunk data not followed by CRLF")
        budget = MAX_TRAILERS
        while True:
            line = self._line(budget - 1, "chunked trailer section too long", _check_trailer)
            budget -= len(line) + 1
            if line in (b"", b"\r"):
                return

    def _to_eof(self) -> None:
        self._too_large = "the response body exceeds the size of out"
        while True:
            if self.pos < self.end:
                k = self.end - self.pos
                self._room(k)
                self._take(k)
                continue
            if self.eof:
                return
            if self.dst is not self.out and self.dst_len == self._cap() \
                    and self._cap() < self.max_other:
                self._room(1)
            if self.dst_len == self._cap():
                self._fill()  # a full destination: tell EOF from excess
            else:
                self._recv_body(self._cap() - self.dst_len)

    def run(self) -> Response:
        hd, head_len = self.read_head()
        self.buf, self.pos, self.end = self.hbuf, head_len, self.hlen
        self.in_body = True
        if self.head_request or hd.status in (204, 304):
            framing = "none"
        elif hd.chunked:
            framing = "chunked"
        elif hd.content_length >= 0:
            framing = "length"
        else:
            framing = "eof"
        keep_alive = not hd.close and (hd.minor >= 1 or hd.keep_alive_token) \
            and framing != "eof"
        into_out = self.out is not None and hd.status == 200
        if into_out:
            self.dst = self.out
            if self.hash_body:
                self.sha = hashlib.sha256()
        else:
            self.dst = bytearray()
        if framing == "length":
            self.expected = hd.content_length
            self._too_large = "Content-Length exceeds the size of out"
            self._room(hd.content_length)
            self._copy_exact(hd.content_length)
        elif framing == "chunked":
            self._chunked()
        elif framing == "eof":
            self._to_eof()
        if self.pos < self.end or self.eof:
            keep_alive = False
        if into_out:
            body = None
            digest = self.sha.digest() if self.sha is not None else None
        else:
            assert isinstance(self.dst, bytearray)
            body = bytes(self.dst[:self.dst_len])
            digest = None
        return Response(hd.status, hd.reason, hd.fields, body, self.dst_len, digest,
                        bool(keep_alive))


def lower_fields(fields: list[tuple[str, str]]) -> dict[str, str]:
    """Header fields as one dict: names lower-cased, a repeated name's values joined with
    ``", "`` in the order they came (what botocore's HTTPHeaders holds)."""
    lower: dict[str, str] = {}
    for name, value in fields:
        name = name.lower()
        lower[name] = f"{lower[name]}, {value}" if name in lower else value
    return lower


def direct_tls() -> bool:
    """Always False here: the twin reads TLS through ``SSLSocket.recv_into`` (the native
    module's fallback); the native module may drive OpenSSL directly."""
    return False


def tls_sendall(sock: Any, head: Any, body: Any = None) -> None:
    """``sock.sendall(head)``, then ``sock.sendall(body)`` when given (the native module may
    write TLS without the GIL instead)."""
    sock.sendall(head)
    if body is not None:
        sock.sendall(body)


def _idle_readable(sock: Any) -> bool:
    fd = sock.fileno()
    if fd < 0:
        raise OSError(9, "Bad file descriptor")
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def exchange(sock: Any, head: Any, body: Any = None, out: Any = None, *,
             timeout_s: float | None = None, hash_body: bool = True,
             max_other_body: int = 1 << 20, lower_headers: bool = False,
             idle_check: bool = False) -> Response:
    """Sends one request (``head`` is the request line, headers and blank line; ``body`` any
    C-contiguous buffer) on a connected socket and reads the response.

    A 200 body goes straight into ``out`` when given (any writable C-contiguous buffer), hashed
    with SHA-256 as it arrives when ``hash_body``; a body longer than ``out`` raises
    ``BodyTooLarge`` before anything is written past its end. When the exchange fails after
    part of a body landed in ``out`` (a reset, a timeout, a signal, bad framing), the bytes it
    wrote there are zeroed before the error leaves; the rest of ``out`` is not touched. Any
    other body comes back as ``Response.body`` (at most ``max_other_body`` bytes).
    ``timeout_s`` bounds each wait for the socket (time without progress, like a socket
    timeout); None keeps the socket's own timeout.

    ``lower_headers``: ``Response.headers`` is the dict :func:`lower_fields` makes rather than
    the list of ``(name, value)`` pairs. ``idle_check``: first look whether the connection (a
    kept-alive one from a pool) became readable while idle, and raise ``StaleConnection``
    without sending anything if so.
    """
    head_v = _byte_view(head, "head")
    body_v = None if body is None else _byte_view(body, "body")
    out_v = None if out is None else _byte_view(out, "out", writable=True)
    timeout = _timeout(timeout_s)
    max_other = _max_other(max_other_body)
    ex = _Exchange(sock, out_v, bool(hash_body), max_other, bytes(head_v[:5]) == b"HEAD ")
    if idle_check and _idle_readable(sock):
        raise StaleConnection()
    restore = timeout is not None
    if restore:
        old = sock.gettimeout()
        sock.settimeout(timeout)
    try:
        try:
            sock.sendall(head_v)
            if body_v is not None and len(body_v):
                sock.sendall(body_v)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ConnectionClosed("the connection closed while the request was being sent",
                                   response_started=False) from exc
        try:
            response = ex.run()
        except BaseException:
            if ex.dst is not None and ex.dst is ex.out and ex.dst_len:
                ex.out[:ex.dst_len] = bytes(ex.dst_len)  # nothing half-written stays behind
            raise
    finally:
        if restore:
            try:
                sock.settimeout(old)
            except OSError:
                pass
    if lower_headers:
        response.headers = lower_fields(response.headers)
    return response


# -- GetSnapshotBlock's usual attempt in one call ---------------------------------------------

# A version-4 UUID: 122 random bits, the version nibble 4 and the variant bits 10.
_UUID_KEEP = ~((0xF << 76) | (0x3 << 62))
_UUID_SET = (0x4 << 76) | (0x2 << 62)


def invocation_id() -> str:
    """A random (version 4) UUID, as botocore sends in ``amz-sdk-invocation-id``. It names one
    call in logs and is no secret, so the random module's generator (reseeded in a forked
    child) serves, without a system call per request."""
    h = "%032x" % ((_getrandbits(128) & _UUID_KEEP) | _UUID_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def block_head(request_line: str, amz_date: str, session_token: str | None,
               authorization: str, invocation: str, sdk_request: str) -> bytes:
    """The head of a GetSnapshotBlock request: ``request_line`` (the request line, then the
    Host, Accept-Encoding and User-Agent lines), then the headers botocore sends after them,
    in its order."""
    session = f"X-Amz-Security-Token: {session_token}\r\n" if session_token else ""
    return (f"{request_line}X-Amz-Date: {amz_date}\r\n{session}"
            f"Authorization: {authorization}\r\namz-sdk-invocation-id: {invocation}\r\n"
            f"amz-sdk-request: {sdk_request}\r\n\r\n"
            ).encode("latin-1")


class BlockGetter:
    """GetSnapshotBlock's usual attempt, whole, in one call: one client's fixed parts (its
    connections, its signing, its request line prefix) kept, so that reading a block costs one
    call. The native module does the same in C; this class is its specification.

    ``transport`` lends connections (``checkout()`` gives ``(pool, connection, was_idle)``,
    ``checkin(pool, connection, reusable)`` takes them back); ``signing()`` gives the current
    ``(PreparedRequest for GET with no payload, session token or None)``; ``fixed_head`` is the
    Host, Accept-Encoding and User-Agent lines; ``on_success`` (or None) runs after a block is
    returned, for the retry quota. ``min_snapshot_id``, ``min_block_index`` and
    ``min_block_token`` (None: no limit) are the model's minimums, checked as the client's
    quick validation does.
    """

    __slots__ = ("_fixed_head", "_max_other", "_min_block_index", "_min_block_token",
                 "_min_snapshot_id", "_on_success", "_path_prefix", "_signing", "_timeout",
                 "_transport")

    def __init__(self, transport: Any, signing: Callable[[], tuple], path_prefix: str,
                 fixed_head: str, *, timeout_s: float | None = None,
                 max_other_body: int = 1 << 20, on_success: Callable[[], Any] | None = None,
                 min_snapshot_id: int | None = None, min_block_index: int | None = None,
                 min_block_token: int | None = None) -> None:
        self._transport = transport
        self._signing = signing
        self._path_prefix = str(path_prefix)
        self._fixed_head = str(fixed_head)
        self._timeout = _timeout(timeout_s)
        self._max_other = _max_other(max_other_body)
        self._on_success = on_success
        self._min_snapshot_id = min_snapshot_id
        self._min_block_index = min_block_index
        self._min_block_token = min_block_token

    def __repr__(self) -> str:
        return f"<BlockGetter {self._path_prefix or '/'}>"

    def request_line(self, snapshot_id: str, block_index: int,
                     block_token: str) -> tuple[str, str, str]:
        """``(path, query, request line with the Host, Accept-Encoding and User-Agent
        lines)``: the URI as botocore serializes it (``percent_encode`` of each member)."""
        path = (f"{self._path_prefix}/snapshots/{uri_encode(snapshot_id)}/blocks/"
                f"{block_index}")
        query = "blockToken=" + uri_encode(block_token)
        return path, query, f"GET {path}?{query} HTTP/1.1\r\n{self._fixed_head}"

    def _handles(self, snapshot_id: Any, block_index: Any, block_token: Any) -> bool:
        if (type(snapshot_id) is not str or type(block_index) is not int
                or type(block_token) is not str):
            return False
        least = self._min_snapshot_id
        if least is not None and len(snapshot_id) < least:
            return False
        least = self._min_block_index
        if least is not None and block_index < least:
            return False
        least = self._min_block_token
        return least is None or len(block_token) >= least

    def get(self, snapshot_id: Any, block_index: Any, block_token: Any, out: Any,
            verify: bool) -> dict | tuple | None:
        """One attempt at GetSnapshotBlock into ``out`` (writable, at least a block long).

        A clean answer (status 200, a request id, no ``x-amz-id-2``, and with ``verify`` an
        ``x-amz-checksum`` of algorithm SHA256 equal to the received bytes' digest) gives
        boto3's response dict without BlockData, plus ``_length`` (the bytes written). Else:
        None when nothing was sent (arguments of other types or under the minimums, left to
        the caller's validation); ``(invocation id, Response)`` for any other answer, and
        ``(invocation id, exception)`` when the exchange failed (its connection closed, and an
        incomplete body's bytes zeroed), for the caller's retry loop to judge.
        """
        if not self._handles(snapshot_id, block_index, block_token):
            return None
        prepared, session_token = self._signing()
        path, query, line = self.request_line(snapshot_id, block_index, block_token)
        date = amz_date()
        invocation = invocation_id()
        head = block_head(line, date, session_token,
                          prepared.authorization(path, query, date), invocation, "attempt=1")
        transport = self._transport
        while True:
            pool, conn, was_idle = transport.checkout()
            reusable = False
            try:
                r = exchange(conn.sock, head, None, out, timeout_s=self._timeout,
                             hash_body=verify, max_other_body=self._max_other,
                             lower_headers=True, idle_check=was_idle)
                reusable = r.keep_alive
                break
            except StaleConnection:
                continue  # closed by the server while idle, nothing sent: take another
            except OSError as e:  # the exchange's own errors and the socket's
                return invocation, e  # (what a cut body wrote is zeroed already)
            finally:
                transport.checkin(pool, conn, reusable)
        headers = r.headers
        request_id = headers.get("x-amzn-requestid")
        if (r.status != 200 or r.body is not None or not request_id
                or "x-amz-id-2" in headers):
            return invocation, r
        if verify and not (headers.get("x-amz-checksum-algorithm") == "SHA256"
                           and r.digest is not None and headers.get("x-amz-checksum")
                           == base64.b64encode(r.digest).decode("ascii")):
            return invocation, r
        if self._on_success is not None:
            self._on_success()
        result: dict[str, Any] = {"ResponseMetadata": {
            "RequestId": request_id, "HTTPStatusCode": 200, "HTTPHeaders": headers,
            "RetryAttempts": 0}}
        get_block_output(headers, result)
        result["_length"] = r.body_length
        return result


__all__ = ["BlockGetter", "BodyTooLarge", "ConnectionClosed", "ExchangeError",
           "IncompleteBody", "ProtocolError", "Response", "StaleConnection", "block_head",
           "direct_tls", "exchange", "invocation_id", "lower_fields", "tls_sendall"]
