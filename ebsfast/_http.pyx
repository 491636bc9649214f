# One HTTP/1.1 exchange with the response body received straight into caller memory (the C
# reader is in _csrc/http.c). The pure-Python twin, ebsfast/_http_py.py, has the same API, is its
# executable specification, and defines Response and the exception classes used here.
import os
import socket
import ssl
import sys

from cpython.buffer cimport (
    PyBUF_SIMPLE,
    PyBUF_WRITABLE,
    PyBUF_WRITE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.object cimport PyObject
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.unicode cimport PyUnicode_DecodeLatin1, PyUnicode_GET_LENGTH
from libc.errno cimport ECONNRESET, EPIPE
from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memset

from ebsfast._sha256 cimport ebs_sha256_setup


cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    enum:
        POLLIN
    int poll(pollfd *fds, unsigned long nfds, int timeout)

from random import getrandbits as _getrandbits

from ebsfast._sigv4 import amz_date as _amz_date, uri_encode as _uri_encode
from ebsfast._http_py import (
    BodyTooLarge,
    ConnectionClosed,
    ExchangeError,
    IncompleteBody,
    ProtocolError,
    Response,
    StaleConnection,
    _byte_view,
    _max_other,
    _timeout,
    lower_fields,
)

IMPLEMENTATION = "native"
MAX_HEAD = EBS_HTTP_MAX_HEAD
MAX_CHUNK_LINE = EBS_HTTP_MAX_CHUNK_LINE
MAX_TRAILERS = EBS_HTTP_MAX_TRAILERS
MAX_INTERIM = EBS_HTTP_MAX_INTERIM
FIRST_HEAD_BUF = EBS_HTTP_FIRST_HEAD_BUF

# Stands in for the data pointer of an empty out whose exporter gave NULL: the C reader takes a
# NULL out to mean "no out".
cdef uint8_t _empty_out[1]

# Path selection and self-tests now, under the GIL, rather than inside the first exchange.
ebs_sha256_setup()


cdef int _on_signal() noexcept nogil:
    # Runs Python's signal handlers (main thread only; elsewhere a no-op). A handler that raised
    # leaves its exception set and the C driver returns EBS_HTTP_E_SIGNAL.
    with gil:
        return _check_signals()


cdef uint8_t *_alloc_body(void *ctx, size_t n) noexcept nogil:
    # A body of known length is received straight into a bytes object of that length, which
    # the exchange then returns as it is (no copy of a 1 MB list page). Until the body is
    # complete the object is held only here, so no caller sees its unfilled bytes.
    with gil:
        return _new_body(<PyObject **>ctx, n)


cdef uint8_t *_new_body(PyObject **slot, size_t n) noexcept:
    if slot[0] != NULL or n > <size_t>PY_SSIZE_T_MAX:
        return NULL
    try:
        b = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
    except MemoryError:
        return NULL
    Py_INCREF(b)
    slot[0] = <PyObject *>b
    return <uint8_t *>PyBytes_AS_STRING(b)


cdef int _reraise() except -1:
    # The exception is already set (by a signal handler); returning -1 makes Cython raise it.
    return -1


cdef int _acquire(object obj, Py_buffer *view, int flags, str name) except -1:
    try:
        PyObject_GetBuffer(obj, view, flags)
    except (BufferError, ValueError) as exc:  # numpy raises ValueError for non-contiguous
        raise ValueError(f"{name} must be a C-contiguous"
                         f"{' writable' if flags & PyBUF_WRITABLE else ''} buffer ({exc})") from None
    except TypeError:
        raise TypeError(f"{name} must support the buffer protocol, "
                        f"not {type(obj).__name__}") from None
    return 0


cdef int _raise(ebs_http_ex *x, int rc) except -1:
    if rc == EBS_HTTP_E_CLOSED:
        if x.os_errno == EPIPE or (x.os_errno == ECONNRESET and x.received == 0 and
                                   x.hbuf == NULL):
            msg = "the connection closed while the request was being sent"
        elif x.os_errno == ECONNRESET:
            msg = "the connection was reset before a complete response head"
        elif x.received:
            msg = "the connection closed before a complete response head"
        else:
            msg = "the connection closed before a response arrived"
        raise ConnectionClosed(msg, response_started=x.received > 0)
    if rc == EBS_HTTP_E_INCOMPLETE:
        raise IncompleteBody(x.dst_len, x.content_length
                             if x.framing == EBS_HTTP_BODY_LENGTH else None)
    if rc == EBS_HTTP_E_PROTOCOL:
        raise ProtocolError(x.error.decode("ascii"))
    if rc == EBS_HTTP_E_TOO_LARGE:
        raise BodyTooLarge(x.error.decode("ascii"))
    if rc == EBS_HTTP_E_TIMEOUT:
        raise socket.timeout("timed out")
    if rc == EBS_HTTP_E_OS:
        raise OSError(x.os_errno, os.strerror(x.os_errno))
    if rc == EBS_HTTP_E_NOMEM:
        raise MemoryError()
    if rc == EBS_HTTP_E_SIGNAL:
        return _reraise()
    if rc == EBS_HTTP_E_TLS:
        msg = x.tls_message.decode("utf-8", "replace")
        if x.tls_code == ssl.SSL_ERROR_EOF:
            raise ssl.SSLEOFError(x.tls_code, msg)
        raise ssl.SSLError(x.tls_code, msg)
    raise SystemError(f"ebsfast._http: unexpected result {rc}")


cdef extern from *:
    """
    /* A header name (a token, so ASCII) as a new str, lower-cased on the way in. */
    static PyObject *ebs_lower_name(const char *p, Py_ssize_t n)
    {
        PyObject *s = PyUnicode_New(n, 127);
        if (s == NULL)
            return NULL;
        Py_UCS1 *d = PyUnicode_1BYTE_DATA(s);
        for (Py_ssize_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)p[i];
            d[i] = (Py_UCS1)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        return s;
    }
    """
    object ebs_lower_name(const char *p, Py_ssize_t n)
    void *PyUnicode_1BYTE_DATA(object s)


# The names of the headers an EBS answer carries, made once: a name that is one of them (in
# any case) is this str again, its hash already known, rather than a new one per response.
cdef tuple _KNOWN_NAMES = tuple(sys.intern(n) for n in (
    "x-amzn-requestid", "date", "content-type", "content-length", "connection",
    "x-amz-data-length", "x-amz-checksum", "x-amz-checksum-algorithm", "x-amzn-errortype",
    "server", "keep-alive"))


cdef object _lower_name(const char *p, Py_ssize_t n):
    cdef str known
    cdef const char *k
    cdef Py_ssize_t j
    cdef unsigned char c
    for known in _KNOWN_NAMES:
        if PyUnicode_GET_LENGTH(known) != n:
            continue
        k = <const char *>PyUnicode_1BYTE_DATA(known)
        for j in range(n):
            c = <unsigned char>p[j]
            if c >= b'A' and c <= b'Z':
                c += 32
            if c != <unsigned char>k[j]:
                break
        else:
            return known
    return ebs_lower_name(p, n)


cdef object _headers(ebs_http_ex *x, bint lower_headers):
    cdef const char *h = <const char *>x.hbuf
    cdef size_t i
    cdef dict lower
    if lower_headers:
        # lower_fields of the twin: lower-case names, a repeated name's values joined
        lower = {}
        for i in range(x.nfields):
            f = &x.fields[i]
            name = _lower_name(h + f.name_off, f.name_len)
            value = PyUnicode_DecodeLatin1(h + f.value_off, f.value_len, NULL)
            before = lower.get(name)
            lower[name] = value if before is None else f"{before}, {value}"
        return lower
    headers = []
    for i in range(x.nfields):
        f = &x.fields[i]
        headers.append((PyUnicode_DecodeLatin1(h + f.name_off, f.name_len, NULL),
                        PyUnicode_DecodeLatin1(h + f.value_off, f.value_len, NULL)))
    return headers


cdef object _response(ebs_http_ex *x, PyObject **exact, object headers):
    cdef const char *h = <const char *>x.hbuf
    reason = PyUnicode_DecodeLatin1(h + x.reason_off, x.reason_len, NULL)
    if x.dst_is_out:
        body = None
        digest = PyBytes_FromStringAndSize(<char *>x.digest, 32) if x.has_digest else None
    elif x.dst_is_exact and exact[0] != NULL and x.dst_len == x.dst_cap:
        body = <object>exact[0]  # filled whole: the exchange's reference goes to the caller
        Py_DECREF(body)
        exact[0] = NULL
        digest = None
    else:
        body = PyBytes_FromStringAndSize(<char *>x.dst, <Py_ssize_t>x.dst_len)
        digest = None
    return Response(x.status, reason, headers, body, x.dst_len, digest, bool(x.keep_alive))


cdef int _run_plain(ebs_http_ex *x, object sock, Py_buffer *hv, Py_buffer *bv, bint have_body,
                    object timeout) except -1:
    cdef int fd = sock.fileno()
    cdef double t
    cdef int rc
    cdef const uint8_t *bp = <const uint8_t *>bv.buf if have_body else NULL
    cdef size_t bn = <size_t>bv.len if have_body else 0
    cdef bint blocking
    if fd < 0:
        raise OSError(9, "Bad file descriptor")
    # A socket in blocking mode (no timeout of its own) is read with blocking receives that
    # wait in the kernel, one system call each; otherwise each wait is a poll.
    own_timeout = sock.gettimeout()
    blocking = own_timeout is None
    if timeout is None:
        timeout = own_timeout
    t = -1.0 if timeout is None else timeout
    with nogil:
        rc = ebs_http_send_fd(x, fd, <const uint8_t *>hv.buf, <size_t>hv.len, bp, bn, t,
                              _on_signal)
        if rc == 0:
            if blocking:
                rc = ebs_http_run_fd_blocking(x, fd, t, _on_signal)
            else:
                rc = ebs_http_run_fd(x, fd, t, _on_signal)
    if rc != EBS_HTTP_DONE:
        _raise(x, rc)
    return 0


# -- TLS: OpenSSL driven directly, without the GIL ------------------------------------------
#
# Through SSLSocket.recv_into a 512 KiB body is 32 or more calls into Python, one per 16 KiB TLS
# record, each taking the GIL back: with many threads that churn cost more than the decryption.
# So where possible the C driver calls SSL_read_ex itself on the SSL object under the socket,
# through the OpenSSL that Python's _ssl module links (looked up in that module, so the library
# that made the SSL object is the one that drives it).
#
# CPython keeps that SSL pointer right after the object header and a weak reference to the
# socket, in every CPython 3 (_ssl.c, PySSLSocket), and marks each SSL with its Python object
# (SSL_set_app_data) and its socket's fd (SSL_set_fd). Both marks are checked before an SSL is
# used; anything else (another layout, another SSL library, PyPy, a wrapper class such as
# urllib3's TLS-in-TLS transport, EBSFAST_TLS_VIA_PYTHON=1) takes the recv_into path.

cdef extern from *:
    """
    typedef struct {
        PyObject_HEAD
        PyObject *socket_ref;
        void *ssl;
    } ebs_pyssl_head;
    """
    ctypedef struct ebs_pyssl_head:
        void *ssl

cdef ebs_tls_api _tls
cdef bint _tls_bound = False
cdef object _SSLObjectType = None


cdef void _bind_tls():
    global _tls_bound, _SSLObjectType
    if os.environ.get("EBSFAST_TLS_VIA_PYTHON") or sys.implementation.name != "cpython":
        return
    try:
        import _ssl
        path = os.fsencode(_ssl.__file__)
        kind = _ssl._SSLSocket
    except (ImportError, AttributeError, TypeError):
        return  # built in (no file of its own) or not the CPython module
    if kind.__basicsize__ < <Py_ssize_t>sizeof(ebs_pyssl_head):
        return
    if ebs_tls_bind(&_tls, path) == 0:
        _SSLObjectType = kind
        _tls_bound = True


_bind_tls()


def direct_tls() -> bool:
    """Whether TLS bodies are read and requests written by OpenSSL calls from C, without the
    GIL (else each TLS record goes through ``SSLSocket.recv_into``/``sendall``)."""
    return _tls_bound


def _set_direct_tls(bint on) -> bool:
    """Tests: turn the direct TLS driver off (or back on where it could be bound); returns the
    previous setting."""
    global _tls_bound
    was = _tls_bound
    _tls_bound = on and _SSLObjectType is not None
    return was


cdef void *_tls_ssl(object sock, int *fd) except? NULL:
    """The SSL object under ``sock`` when the direct driver can use it (*fd its socket's),
    else NULL."""
    cdef void *s
    if not _tls_bound or type(sock) is not ssl.SSLSocket:
        return NULL
    obj = getattr(sock, "_sslobj", None)
    if type(obj) is not _SSLObjectType:
        return NULL  # closed or unwrapped: recv_into raises what Python raises
    s = (<ebs_pyssl_head *><PyObject *>obj).ssl
    if s == NULL or _tls.get_ex_data(s, 0) != <void *><PyObject *>obj:
        return NULL
    fd[0] = sock.fileno()
    if _tls.get_fd(s) != fd[0]:
        return NULL
    return s


cdef int _run_tls(ebs_http_ex *x, object sock, void *s, int fd, Py_buffer *hv, Py_buffer *bv,
                  bint have_body, object timeout) except -1:
    cdef int rc
    cdef int ragged_ok = bool(sock.suppress_ragged_eofs)
    cdef const uint8_t *bp = NULL
    cdef size_t bn = 0
    cdef double t
    if have_body:
        bp = <const uint8_t *>bv.buf
        bn = <size_t>bv.len
    own_timeout = sock.gettimeout()
    if timeout is None:
        timeout = own_timeout
    t = -1.0 if timeout is None else timeout
    # OpenSSL would wait inside read() on a blocking fd, where neither the timeout nor signal
    # handlers are looked at: make it non-blocking for the exchange, so every wait is a poll.
    restore = own_timeout is None and timeout is not None
    if restore:
        sock.settimeout(timeout)
    try:
        with nogil:
            rc = ebs_http_send_tls(x, &_tls, s, fd, <const uint8_t *>hv.buf, <size_t>hv.len,
                                   bp, bn, t, _on_signal)
            if rc == 0:
                rc = ebs_http_run_tls(x, &_tls, s, fd, ragged_ok, t, _on_signal)
    finally:
        if restore:
            try:
                sock.settimeout(None)
            except OSError:
                pass
    if rc != EBS_HTTP_DONE:
        _raise(x, rc)
    return 0


def tls_sendall(sock, head, body=None) -> None:
    """``sock.sendall(head)``, then ``sock.sendall(body)`` when given; for a TLS socket the direct
    driver can take (see ``direct_tls``), written by OpenSSL calls without the GIL, waiting as
    the socket's own timeout says. The local server sends its blocks over TLS with this."""
    cdef int fd = -1
    cdef void *s = _tls_ssl(sock, &fd)
    cdef Py_buffer hv
    cdef Py_buffer bv
    cdef bint have_body = False
    cdef const uint8_t *bp = NULL
    cdef size_t bn = 0
    cdef ebs_http_ex *x = NULL
    cdef int rc
    cdef double t
    if s == NULL:
        sock.sendall(head)
        if body is not None:
            sock.sendall(body)
        return
    timeout = sock.gettimeout()
    t = -1.0 if timeout is None else timeout
    _acquire(head, &hv, PyBUF_SIMPLE, "head")
    try:
        if body is not None:
            _acquire(body, &bv, PyBUF_SIMPLE, "body")
            have_body = True
            bp = <const uint8_t *>bv.buf
            bn = <size_t>bv.len
        x = <ebs_http_ex *>malloc(sizeof(ebs_http_ex))
        if x == NULL:
            raise MemoryError()
        ebs_http_init(x)
        with nogil:
            rc = ebs_http_send_tls(x, &_tls, s, fd, <const uint8_t *>hv.buf, <size_t>hv.len,
                                   bp, bn, t, _on_signal)
        if rc == EBS_HTTP_E_CLOSED:
            err = x.os_errno if x.os_errno else EPIPE
            raise (ConnectionResetError if err == ECONNRESET else BrokenPipeError)(
                err, os.strerror(err))
        if rc != 0:
            _raise(x, rc)
    finally:
        if x != NULL:
            ebs_http_release(x)
            free(x)
        if have_body:
            PyBuffer_Release(&bv)
        PyBuffer_Release(&hv)


cdef int _run_object(ebs_http_ex *x, object sock, object head, object body,
                     object timeout) except -1:
    # TLS the direct driver does not take (and any other socket-like object): its own
    # sendall/recv_into do the I/O, and release the GIL inside; the C reader decides where each
    # recv_into lands.
    cdef uint8_t *p
    cdef size_t n
    cdef int rc
    restore = timeout is not None
    if restore:
        old = sock.gettimeout()
        sock.settimeout(timeout)
    try:
        try:
            sock.sendall(_byte_view(head, "head"))
            if body is not None:
                bview = _byte_view(body, "body")
                if len(bview):
                    sock.sendall(bview)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ConnectionClosed("the connection closed while the request was being sent",
                                   response_started=False) from exc
        while True:
            with nogil:
                rc = ebs_http_step(x, &p, &n)
            if rc != EBS_HTTP_WANT_READ:
                break
            window = PyMemoryView_FromMemory(<char *>p, <Py_ssize_t>n, PyBUF_WRITE)
            try:
                got = sock.recv_into(window)
            except ConnectionResetError:
                x.os_errno = ECONNRESET
                rc = ebs_http_reset(x)
                break
            finally:
                window.release()
            if not 0 <= got <= <Py_ssize_t>n:
                raise ValueError(f"recv_into returned {got} for a {n}-byte buffer")
            ebs_http_received(x, <size_t>got)
        if rc != EBS_HTTP_DONE:
            _raise(x, rc)
    finally:
        if restore:
            try:
                sock.settimeout(old)
            except OSError:
                pass
    return 0


cdef int _run(ebs_http_ex *x, object sock, object head, Py_buffer *hv, object body,
             Py_buffer *bv, bint have_body, object timeout) except -1:
    cdef void *s
    cdef int fd = -1
    try:
        if isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket):
            return _run_plain(x, sock, hv, bv, have_body, timeout)
        s = _tls_ssl(sock, &fd)
        if s != NULL:
            return _run_tls(x, sock, s, fd, hv, bv, have_body, timeout)
        return _run_object(x, sock, head, body, timeout)
    except BaseException:
        # A body cut short (reset, timeout, signal, bad framing) leaves nothing in out that
        # could pass for data: the bytes it wrote there, and only those, are zeroed.
        if x.dst_is_out and x.dst_len:
            memset(x.dst, 0, x.dst_len)
        raise


cdef bint _idle_readable(object sock) except -1:
    cdef pollfd p
    cdef int r
    p.fd = sock.fileno()
    if p.fd < 0:
        raise OSError(9, "Bad file descriptor")
    p.events = POLLIN
    p.revents = 0
    r = poll(&p, 1, 0)
    return r > 0


def exchange(sock, head, body=None, out=None, *, timeout_s=None, hash_body=True,
             max_other_body=1 << 20, lower_headers=False, idle_check=False):
    """Sends one request (``head`` is the request line, headers and blank line; ``body`` any
    C-contiguous buffer, sent without a copy) on a connected socket and reads the response.

    A 200 body goes straight into ``out`` when given (any writable C-contiguous buffer), hashed
    with SHA-256 as it arrives when ``hash_body``; a body longer than ``out`` raises
    ``BodyTooLarge`` before anything is written past its end. When the exchange fails after
    part of a body landed in ``out`` (a reset, a timeout, a signal, bad framing), the bytes it
    wrote there are zeroed before the error leaves; the rest of ``out`` is not touched. Any
    other body comes back as ``Response.body`` (at most ``max_other_body`` bytes).
    ``timeout_s`` bounds each wait for the socket (time without progress, like a socket
    timeout); None uses the socket's own timeout.
    On a plain socket everything after argument checks runs with the GIL released; one in
    blocking mode (no timeout of its own) is read with receives that wait in the kernel, in
    slices of at most 250 ms set as its SO_RCVTIMEO (which stays set), so that ``timeout_s``
    and signal handlers are still honoured.

    ``lower_headers``: ``Response.headers`` is a dict (names lower-cased, repeated values
    joined with ``", "``) rather than a list of pairs. ``idle_check``: raise
    ``StaleConnection`` without sending if the (pooled) connection became readable while idle.
    """
    cdef Py_buffer hv
    cdef Py_buffer bv
    cdef Py_buffer ov
    cdef bint have_body = False
    cdef bint have_out = False
    cdef ebs_http_ex *x = NULL
    cdef PyObject *exact = NULL
    timeout = _timeout(timeout_s)
    max_other = _max_other(max_other_body)
    _acquire(head, &hv, PyBUF_SIMPLE, "head")
    try:
        if body is not None:
            _acquire(body, &bv, PyBUF_SIMPLE, "body")
            have_body = True
        if out is not None:
            _acquire(out, &ov, PyBUF_WRITABLE, "out")
            have_out = True
        x = <ebs_http_ex *>malloc(sizeof(ebs_http_ex))
        if x == NULL:
            raise MemoryError()
        ebs_http_init(x)
        if have_out:
            x.out = <uint8_t *>ov.buf if ov.buf != NULL else _empty_out
            x.out_cap = <size_t>ov.len
        x.hash_body = bool(hash_body)
        x.max_other = min(max_other, 1 << 63)  # past any Content-Length that parses
        x.head_request = hv.len >= 5 and memcmp(hv.buf, b"HEAD ", 5) == 0
        x.alloc_exact = _alloc_body
        x.alloc_ctx = &exact
        if idle_check and _idle_readable(sock):
            raise StaleConnection()
        _run(x, sock, head, &hv, body, &bv, have_body, timeout)
        return _response(x, &exact, _headers(x, lower_headers))
    finally:
        Py_XDECREF(exact)
        if x != NULL:
            ebs_http_release(x)
            free(x)
        if have_out:
            PyBuffer_Release(&ov)
        if have_body:
            PyBuffer_Release(&bv)
        PyBuffer_Release(&hv)


# -- GetSnapshotBlock's usual attempt in one call (the twin's BlockGetter is its specification)

cdef extern from *:
    """
    /* A version-4 UUID from 128 random bits (lo: bits 0-63, hi: bits 64-127, the twin's
     * getrandbits(128)): the version nibble 4 and the variant bits 10 set. */
    static void ebs_uuid4(unsigned long long lo, unsigned long long hi, char out[37])
    {
        static const char hex[] = "0123456789abcdef";
        int i, o = 0;
        hi = (hi & ~(0xFULL << 12)) | (0x4ULL << 12);
        lo = (lo & ~(0x3ULL << 62)) | (0x2ULL << 62);
        /* 32 hex digits, most significant first, dashes after digits 8, 12, 16 and 20 */
        for (i = 0; i < 32; i++) {
            unsigned long long w = i < 16 ? hi : lo;
            out[o++] = hex[(w >> (60 - 4 * (i & 15))) & 15];
            if (i == 7 || i == 11 || i == 15 || i == 19)
                out[o++] = '-';
        }
        out[o] = 0;
    }

    /* Standard base64 of a SHA-256 digest: 44 characters and a NUL. */
    static void ebs_b64_digest(const unsigned char d[32], char out[45])
    {
        static const char abc[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        int i, o = 0;
        for (i = 0; i + 2 < 32; i += 3) {
            unsigned v = ((unsigned)d[i] << 16) | ((unsigned)d[i + 1] << 8) | d[i + 2];
            out[o++] = abc[v >> 18];
            out[o++] = abc[(v >> 12) & 63];
            out[o++] = abc[(v >> 6) & 63];
            out[o++] = abc[v & 63];
        }
        /* 32 = 30 + 2: the last two bytes, one '=' */
        {
            unsigned v = ((unsigned)d[30] << 16) | ((unsigned)d[31] << 8);
            out[o++] = abc[v >> 18];
            out[o++] = abc[(v >> 12) & 63];
            out[o++] = abc[(v >> 6) & 63];
            out[o++] = '=';
        }
        out[o] = 0;
    }
    """
    void ebs_uuid4(unsigned long long lo, unsigned long long hi, char *out)
    void ebs_b64_digest(const uint8_t *d, char *out)


cdef str _invocation_id():
    cdef char buf[37]
    cdef unsigned long long lo = _getrandbits(64)
    cdef unsigned long long hi = _getrandbits(64)
    ebs_uuid4(lo, hi, buf)
    return buf[:36].decode("ascii")


def invocation_id():
    """A random (version 4) UUID, as botocore sends in ``amz-sdk-invocation-id``: the twin's,
    from the same generator (the random module's, reseeded in a forked child)."""
    return _invocation_id()


cdef bytes _block_head(str request_line, str amz_date, object session_token,
                       str authorization, str invocation, str sdk_request):
    session = f"X-Amz-Security-Token: {session_token}\r\n" if session_token else ""
    return (f"{request_line}X-Amz-Date: {amz_date}\r\n{session}"
            f"Authorization: {authorization}\r\namz-sdk-invocation-id: {invocation}\r\n"
            f"amz-sdk-request: {sdk_request}\r\n\r\n"
            ).encode("latin-1")


def block_head(str request_line not None, str amz_date not None, session_token,
               str authorization not None, str invocation not None, str sdk_request not None):
    """The head of a GetSnapshotBlock request (see the twin)."""
    return _block_head(request_line, amz_date, session_token, authorization, invocation,
                       sdk_request)


# Getters inside get() across the process, and blocks they hashed in pairs (see get()).
cdef extern from *:
    """
    #define ebs_http_atomic_add(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
    #define ebs_http_atomic_load(p) __atomic_load_n((p), __ATOMIC_RELAXED)
    """
    long long _atomic_add "ebs_http_atomic_add" (long long *p, long long v) nogil
    long long _atomic_load "ebs_http_atomic_load" (long long *p) nogil

cdef long long _getters_in_flight = 0
cdef long long _paired_hashes = 0


def paired_hashes() -> int:
    """How many verified blocks BlockGetter hashed together with another thread's block."""
    return _atomic_load(&_paired_hashes)


cdef class BlockGetter:
    """GetSnapshotBlock's usual attempt, whole, in one call (see the twin, which specifies it:
    ``ebsfast._http_py.BlockGetter``)."""

    cdef object _transport
    cdef object _signing
    cdef object _on_success
    cdef str _path_prefix
    cdef str _fixed_head
    cdef object _timeout
    cdef uint64_t _max_other    # clamped once, past any Content-Length that parses
    cdef object _min_snapshot_id
    cdef object _min_block_index
    cdef object _min_block_token

    def __init__(self, transport, signing, path_prefix, fixed_head, *, timeout_s=None,
                 max_other_body=1 << 20, on_success=None, min_snapshot_id=None,
                 min_block_index=None, min_block_token=None):
        self._transport = transport
        self._signing = signing
        self._path_prefix = str(path_prefix)
        self._fixed_head = str(fixed_head)
        self._timeout = _timeout(timeout_s)
        self._max_other = min(_max_other(max_other_body), 1 << 63)
        self._on_success = on_success
        self._min_snapshot_id = min_snapshot_id
        self._min_block_index = min_block_index
        self._min_block_token = min_block_token

    def __repr__(self):
        return f"<BlockGetter {self._path_prefix or '/'}>"

    def __reduce__(self):
        raise TypeError("a BlockGetter holds a client's connections and signing")

    cpdef tuple request_line(self, snapshot_id, block_index, block_token):
        """``(path, query, request line with the Host, Accept-Encoding and User-Agent
        lines)`` (see the twin)."""
        path = (f"{self._path_prefix}/snapshots/{_uri_encode(snapshot_id)}/blocks/"
                f"{block_index}")
        query = "blockToken=" + _uri_encode(block_token)
        return path, query, f"GET {path}?{query} HTTP/1.1\r\n{self._fixed_head}"

    cdef bint _handles(self, object snapshot_id, object block_index, object block_token):
        if (type(snapshot_id) is not str or type(block_index) is not int
                or type(block_token) is not str):
            return False
        least = self._min_snapshot_id
        if least is not None and len(<str>snapshot_id) < least:
            return False
        least = self._min_block_index
        if least is not None and block_index < least:
            return False
        least = self._min_block_token
        return least is None or len(<str>block_token) >= least

    def get(self, snapshot_id, block_index, block_token, out, bint verify):
        """One attempt at GetSnapshotBlock into ``out``: the response dict, None (nothing
        sent), or ``(invocation id, Response or exception)`` (see the twin)."""
        if not self._handles(snapshot_id, block_index, block_token):
            return None
        # With other getters at work in this process, a verified block is hashed once it is
        # all in, paired with another thread's where one is ready (the two-lane kernel hashes
        # two in about the time of one); alone, it is hashed as it arrives.
        cdef long long others = _atomic_add(&_getters_in_flight, 1)
        try:
            return self._get(snapshot_id, block_index, block_token, out, verify,
                             verify and others > 0)
        finally:
            _atomic_add(&_getters_in_flight, -1)

    cdef object _get(self, snapshot_id, block_index, block_token, out, bint verify, bint pair):
        cdef Py_buffer hv
        cdef Py_buffer ov
        cdef ebs_http_ex *x = NULL
        cdef PyObject *exact = NULL
        cdef char b64[45]
        cdef bint reusable
        cdef long long wait_ns
        prepared, session_token = self._signing()
        path, query, line = self.request_line(snapshot_id, block_index, block_token)
        date = _amz_date()
        invocation = _invocation_id()
        head = _block_head(line, date, session_token, prepared.authorization(path, query, date),
                           invocation, "attempt=1")
        _acquire(out, &ov, PyBUF_WRITABLE, "out")
        try:
            PyObject_GetBuffer(head, &hv, PyBUF_SIMPLE)
            try:
                x = <ebs_http_ex *>malloc(sizeof(ebs_http_ex))
                if x == NULL:
                    raise MemoryError()
                ebs_http_init(x)
                x.out = <uint8_t *>ov.buf if ov.buf != NULL else _empty_out
                x.out_cap = <size_t>ov.len
                x.hash_body = verify and not pair
                x.max_other = self._max_other
                x.alloc_exact = _alloc_body
                x.alloc_ctx = &exact
                transport = self._transport
                while True:
                    pool, conn, was_idle = transport.checkout()
                    reusable = False
                    try:
                        sock = conn.sock
                        if was_idle and _idle_readable(sock):
                            continue  # closed by the server while idle, nothing sent
                        _run(x, sock, head, &hv, None, NULL, False, self._timeout)
                        reusable = x.keep_alive
                        break
                    except OSError as e:  # the exchange's own errors and the socket's
                        return invocation, e  # (what a cut body wrote is zeroed already)
                    finally:
                        transport.checkin(pool, conn, reusable)
                if pair and x.dst_is_out:
                    with nogil:
                        # Wait for a partner at most about what hashing alone costs here
                        # (about 1.5 GB/s), and only while another getter is at work.
                        wait_ns = <long long>(x.dst_len * 2 // 3)
                        if _atomic_load(&_getters_in_flight) < 2:
                            wait_ns = 0
                        if ebs_http_sha256_paired(x.dst, x.dst_len, x.digest, wait_ns):
                            _atomic_add(&_paired_hashes, 1)
                    x.has_digest = 1
                headers = _headers(x, True)
                if x.status == 200 and x.dst_is_out:
                    result = self._result(x, <dict>headers, b64, verify)
                    if result is not None:
                        return result
                return invocation, _response(x, &exact, headers)
            finally:
                Py_XDECREF(exact)
                if x != NULL:
                    ebs_http_release(x)
                    free(x)
                PyBuffer_Release(&hv)
        finally:
            PyBuffer_Release(&ov)

    cdef object _result(self, ebs_http_ex *x, dict headers, char *b64, bint verify):
        # boto3's response dict for a clean answer, else None
        request_id = headers.get("x-amzn-requestid")
        if not request_id or "x-amz-id-2" in headers:
            return None
        checksum = headers.get("x-amz-checksum")
        algorithm = headers.get("x-amz-checksum-algorithm")
        if verify:
            if not x.has_digest or algorithm != "SHA256" or checksum is None:
                return None
            ebs_b64_digest(x.digest, b64)
            if checksum != b64[:44].decode("ascii"):
                return None
        if self._on_success is not None:
            self._on_success()
        result = {"ResponseMetadata": {"RequestId": request_id, "HTTPStatusCode": 200,
                                       "HTTPHeaders": headers, "RetryAttempts": 0}}
        value = headers.get("x-amz-data-length")
        if value is not None:
            result["DataLength"] = int(value)
        if checksum is not None:
            result["Checksum"] = checksum
        if algorithm is not None:
            result["ChecksumAlgorithm"] = algorithm
        result["_length"] = x.dst_len
        return result
