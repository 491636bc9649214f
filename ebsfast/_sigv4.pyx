# cython: language_level=3, embedsignature=True
"""AWS Signature Version 4, native: the same API as ``ebsfast._sigv4_py`` (read that module
for the exact rules) with the work done by ``_csrc/sigv4.c``.

Nothing here releases the GIL. A signature is well under a microsecond of C work; dropping
and retaking the GIL would cost about as much, and the per-day key swap relies on it. The C
core itself is reentrant and GIL-free, for a future C-level transport.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint8_t
from libc.string cimport memcmp, memcpy, memset
from libc.time cimport gmtime_r, strftime, time_t, time as c_time, tm

from ebsfast._sha256 cimport ebs_sha256_setup

from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit, urlunsplit

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void *PyUnicode_DATA(object s)

ebs_sha256_setup()

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EXCLUDED_HEADERS = frozenset({
    "connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id",
})
_PRESIGN_DROPPED_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"

cdef enum:
    STACK = 1024  # bytes of stack buffer before a result moves to the heap


cdef int _raise(int rc) except -1:
    if rc == EBS_SIGV4_ENOMEM:
        raise MemoryError()
    if rc == EBS_SIGV4_ENOSPC:
        raise RuntimeError("sigv4: " + ebs_sigv4_strerror(rc).decode())
    raise ValueError(ebs_sigv4_strerror(rc).decode())


cdef inline int _check(int rc) except -1:
    if rc != EBS_SIGV4_OK:
        _raise(rc)
    return 0


cdef inline const char *_utf8(object s, Py_ssize_t *n, str what) except NULL:
    if type(s) is not str:
        if not isinstance(s, str):
            raise TypeError(f"{what} must be str, not {type(s).__name__}")
    return PyUnicode_AsUTF8AndSize(s, n)


cdef inline str _text(ebs_buf *b):
    return PyUnicode_DecodeUTF8(b.data, <Py_ssize_t>b.len, NULL)


cdef inline str _ascii_str(const char *p, size_t n):
    s = PyUnicode_New(<Py_ssize_t>n, 127)
    memcpy(PyUnicode_DATA(s), p, n)
    return <str>s


cdef inline str _ascii_or_utf8(const char *p, size_t n):
    # Signatures are ASCII unless a key id or region is not; building the str directly
    # skips the decoder (measured ~30 ns of the hot path's ~1 us).
    cdef size_t i
    cdef unsigned char acc = 0
    for i in range(n):
        acc |= <unsigned char>p[i]
    if acc >= 0x80:
        return PyUnicode_DecodeUTF8(p, <Py_ssize_t>n, NULL)
    s = PyUnicode_New(<Py_ssize_t>n, 127)
    memcpy(PyUnicode_DATA(s), p, n)
    return <str>s


def uri_encode(str s not None, bint safe_slash=False) -> str:
    """Percent-encode the UTF-8 bytes of ``s``: ``A-Za-z0-9-_.~`` kept, the rest ``%XX``."""
    cdef Py_ssize_t n
    cdef const char *p = _utf8(s, &n, "s")
    cdef char stack[STACK]
    cdef ebs_buf b
    ebs_buf_init(&b, stack, STACK)
    try:
        _check(ebs_uri_encode(&b, p, n, safe_slash))
        return _text(&b)
    finally:
        ebs_buf_free(&b)


def normalize_path(str path not None) -> str:
    """botocore's ``normalize_url_path`` (dot segments and empty segments removed)."""
    cdef Py_ssize_t n
    cdef const char *p = _utf8(path, &n, "path")
    cdef char stack[STACK]
    cdef ebs_buf b
    ebs_buf_init(&b, stack, STACK)
    try:
        _check(ebs_sigv4_normalize_path(&b, p, n))
        return _text(&b)
    finally:
        ebs_buf_free(&b)


def canonical_uri(str path not None, bint normalize=True) -> str:
    """The canonical URI of a request-line path (normalized if asked, then encoded once)."""
    cdef Py_ssize_t n
    cdef const char *p = _utf8(path, &n, "path")
    cdef char stack[STACK]
    cdef ebs_buf b
    ebs_buf_init(&b, stack, STACK)
    try:
        _check(ebs_sigv4_canonical_uri(&b, p, n, normalize))
        return _text(&b)
    finally:
        ebs_buf_free(&b)


cdef str _encode_pairs(object query):
    items = query.items() if isinstance(query, Mapping) else query
    return "&".join([f"{uri_encode(str(k))}={uri_encode(str(v))}" for k, v in items])


cdef str _wire_query(object query):
    if isinstance(query, str):
        return <str>query
    return _encode_pairs(query)


def canonical_query(query) -> str:
    """The canonical query string: a ``str`` is a wire query (signed as it stands, sorted);
    a mapping or iterable of pairs holds raw values, encoded first."""
    cdef str q = _wire_query(query)
    cdef Py_ssize_t n
    cdef const char *p = _utf8(q, &n, "query")
    cdef char stack[STACK]
    cdef ebs_buf b
    ebs_buf_init(&b, stack, STACK)
    try:
        _check(ebs_sigv4_canonical_query(&b, p, n))
        return _text(&b)
    finally:
        ebs_buf_free(&b)


cdef list _header_list(object headers):
    """[(name, value)] with values as str; the list keeps every UTF-8 buffer alive."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    cdef list out = []
    for name, value in items:
        if not isinstance(name, str):
            raise ValueError(f"header name {name!r} is not an HTTP token")
        if isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"header {name!r}: value must be str, not {type(value).__name__}")
        out.append((name, value if isinstance(value, str) else str(value)))
    return out


cdef ebs_header *_c_headers(list items) except NULL:
    cdef Py_ssize_t n = len(items)
    cdef ebs_header *h = <ebs_header *>PyMem_Malloc((n if n else 1) * sizeof(ebs_header))
    cdef Py_ssize_t i, ln
    if h == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            name, value = items[i]
            h[i].name = _utf8(name, &ln, "header name")
            h[i].name_len = ln
            h[i].value = _utf8(value, &ln, "header value")
            h[i].value_len = ln
    except BaseException:
        PyMem_Free(h)
        raise
    return h


cdef int _header_error(int rc, list items) except -1:
    # Name the offending header, as the twin does.
    if rc == EBS_SIGV4_EHEADER_VALUE:
        for name, value in items:
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r}: value contains CR or LF (header injection)")
    if rc == EBS_SIGV4_EHEADER_NAME:
        for name, value in items:
            if not name or not name.isascii():
                raise ValueError(f"header name {name!r} is not an HTTP token")
        raise ValueError("a header name is not an HTTP token")
    return _raise(rc)


def canonical_headers(headers) -> tuple:
    """``(block, signed_headers)``: the canonical header lines (each ending in LF) and the
    ';'-joined names. CR/LF in a value is a ValueError."""
    cdef list items = _header_list(headers)
    cdef ebs_header *h = _c_headers(items)
    cdef char stack[STACK]
    cdef char stack2[256]
    cdef ebs_buf b, s
    cdef int rc
    ebs_buf_init(&b, stack, STACK)
    ebs_buf_init(&s, stack2, 256)
    try:
        rc = ebs_sigv4_canonical_headers(&b, &s, h, len(items))
        if rc != EBS_SIGV4_OK:
            _header_error(rc, items)
        return _text(&b), _text(&s)
    finally:
        PyMem_Free(h)
        ebs_buf_free(&b)
        ebs_buf_free(&s)


cdef tuple _canonical_request(str method, str path, str query, list items, str payload_hash,
                              bint normalize):
    cdef ebs_sigv4_request r
    cdef Py_ssize_t n
    cdef ebs_header *h
    cdef char stack[STACK]
    cdef char stack2[256]
    cdef ebs_buf b, s
    cdef int rc
    r.method = _utf8(method, &n, "method")
    r.method_len = n
    r.path = _utf8(path, &n, "path")
    r.path_len = n
    r.query = _utf8(query, &n, "query")
    r.query_len = n
    r.payload_hash = _utf8(payload_hash, &n, "payload_hash")
    r.payload_hash_len = n
    r.normalize = normalize
    h = _c_headers(items)
    r.headers = h
    r.n_headers = len(items)
    ebs_buf_init(&b, stack, STACK)
    ebs_buf_init(&s, stack2, 256)
    try:
        rc = ebs_sigv4_canonical_request(&b, &s, &r)
        if rc != EBS_SIGV4_OK:
            if rc == EBS_SIGV4_EMETHOD:
                raise ValueError(f"HTTP method {method!r} is not an HTTP token")
            _header_error(rc, items)
        return _text(&b), _text(&s)
    finally:
        PyMem_Free(h)
        ebs_buf_free(&b)
        ebs_buf_free(&s)


def canonical_request(method, path, query, headers, payload_hash, *,
                      bint normalize=True) -> tuple:
    """``(canonical_request, signed_headers)``; ``path`` and ``query`` as on the wire."""
    if not isinstance(method, str):
        raise ValueError(f"HTTP method {method!r} is not an HTTP token")
    return _canonical_request(method, path, _wire_query(query), _header_list(headers),
                              payload_hash, normalize)


cdef int _check_date(object amz_date) except -1:
    cdef Py_ssize_t n
    cdef const char *p
    if not isinstance(amz_date, str):
        raise ValueError(f"amz_date {amz_date!r} is not YYYYMMDDTHHMMSSZ")
    p = _utf8(amz_date, &n, "amz_date")
    if ebs_sigv4_check_amz_date(p, n) != EBS_SIGV4_OK:
        raise ValueError(f"amz_date {amz_date!r} is not YYYYMMDDTHHMMSSZ")
    return 0


def string_to_sign(str amz_date not None, str scope not None, str creq not None) -> str:
    """``AWS4-HMAC-SHA256\\n<amz_date>\\n<scope>\\n<hex SHA-256 of creq>``."""
    cdef Py_ssize_t dn, sn, cn
    _check_date(amz_date)
    cdef const char *d = _utf8(amz_date, &dn, "amz_date")
    cdef const char *s = _utf8(scope, &sn, "scope")
    cdef const char *c = _utf8(creq, &cn, "creq")
    cdef char stack[256]
    cdef ebs_buf b
    ebs_buf_init(&b, stack, 256)
    try:
        _check(ebs_sigv4_string_to_sign(&b, d, dn, s, sn, c, cn))
        return _text(&b)
    finally:
        ebs_buf_free(&b)


def derive_signing_key(str secret_key not None, str date not None, str region not None,
                       str service not None) -> bytes:
    """kSigning for one day (``date`` is YYYYMMDD)."""
    cdef Py_ssize_t kn, dn, rn, sn
    cdef const char *k = _utf8(secret_key, &kn, "secret_key")
    cdef const char *d = _utf8(date, &dn, "date")
    cdef const char *r = _utf8(region, &rn, "region")
    cdef const char *s = _utf8(service, &sn, "service")
    cdef uint8_t out[32]
    ebs_sigv4_derive_key(out, k, kn, d, dn, r, rn, s, sn)
    try:
        return PyBytes_FromStringAndSize(<char *>out, 32)
    finally:
        memset(out, 0, 32)


def signature(const uint8_t[::1] signing_key, str sts not None) -> str:
    """Hex HMAC-SHA256 of the string to sign."""
    cdef Py_ssize_t n
    cdef const char *s = _utf8(sts, &n, "sts")
    cdef uint8_t mac[32]
    cdef char hexd[64]
    cdef int i
    ebs_hmac_sha256(&signing_key[0] if signing_key.shape[0] else NULL, signing_key.shape[0],
                    s, n, mac)
    for i in range(32):
        hexd[2 * i] = b"0123456789abcdef"[mac[i] >> 4]
        hexd[2 * i + 1] = b"0123456789abcdef"[mac[i] & 15]
    return hexd[:64].decode("ascii")


cdef time_t _now_sec = -1
cdef str _now_str = ""


def amz_date(epoch_s=None) -> str:
    """``YYYYMMDDTHHMMSSZ`` for ``epoch_s`` (default: now), UTC; cached per second."""
    global _now_sec, _now_str
    cdef time_t sec = c_time(NULL) if epoch_s is None else <time_t>int(epoch_s)
    cdef tm t
    cdef char buf[32]
    if sec == _now_sec:
        return _now_str
    if gmtime_r(&sec, &t) == NULL:
        raise ValueError(f"epoch_s {epoch_s!r} out of range")
    strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &t)
    _now_str = buf.decode("ascii")
    _now_sec = sec
    return _now_str


_now = amz_date


def _host_from_url(parts) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{port}"
    return host


cdef class Signer:
    """SigV4 signer for one set of credentials, region and service (see the twin,
    ``ebsfast._sigv4_py.Signer``, for every rule)."""

    def __cinit__(self):
        self._have_key = False
        memset(&self._c, 0, sizeof(self._c))
        memset(&self._sts, 0, sizeof(self._sts))

    def __init__(self, access_key, secret_key, region, service, session_token=None, *,
                 sign_session_token=True):
        for label, v in (("access_key", access_key), ("secret_key", secret_key),
                         ("region", region), ("service", service)):
            if not isinstance(v, str):
                raise TypeError(f"{label} must be str")
        if session_token is not None:
            if not isinstance(session_token, str):
                raise TypeError("session_token must be str or None")
            if "\r" in session_token or "\n" in session_token:
                raise ValueError("session_token contains CR or LF")
        self._access_key = access_key
        self._secret_key = secret_key
        self._region = region
        self._service = service
        self._token = session_token
        self._sign_token = bool(sign_session_token)
        self._access_key_b = access_key.encode("utf-8")
        # With the signed header names, these decide whether an Authorization is ASCII.
        self._ascii = access_key.isascii() and region.isascii() and service.isascii()
        # botocore signs the token header only when the token is truthy; the hot path
        # merges it into the canonical headers, so it is stored in canonical form.
        self._token_b = (" ".join(session_token.split()).encode("utf-8")
                         if (session_token and self._sign_token) else None)
        self._have_key = False
        memset(&self._sts, 0, sizeof(self._sts))
        self._c.access_key = self._access_key_b
        self._c.access_key_len = len(self._access_key_b)
        if self._token_b is not None:
            self._c.token = self._token_b
            self._c.token_len = len(self._token_b)
        else:
            self._c.token = NULL
            self._c.token_len = 0

    def __dealloc__(self):
        # Both hold state derived from the secret key.
        memset(&self._c.key, 0, sizeof(self._c.key))
        memset(&self._sts, 0, sizeof(self._sts))

    @property
    def access_key(self):
        return self._access_key

    @property
    def region(self):
        return self._region

    @property
    def service(self):
        return self._service

    @property
    def has_session_token(self):
        return self._token is not None

    def __repr__(self):
        token = ", session_token=<hidden>" if self._token is not None else ""
        return (f"{type(self).__name__}(access_key={self._access_key!r}, secret_key=<hidden>, "
                f"region={self._region!r}, service={self._service!r}{token})")

    def __reduce__(self):
        raise TypeError("Signer holds credentials and is not picklable")

    cdef int _ensure_day(self, const char *amz_date) except -1:
        if self._have_key and memcmp(self._date, amz_date, 8) == 0:
            return 0
        date = amz_date[:8].decode("ascii")
        scope = f"{date}/{self._region}/{self._service}/aws4_request"
        scope_b = scope.encode("utf-8")
        key = derive_signing_key(self._secret_key, date, self._region, self._service)
        cdef const unsigned char *kp = key
        # All of this happens with the GIL held, so no other thread sees a half-swapped day.
        ebs_hmac_key_init(&self._c.key, kp, 32, NULL, 0)
        self._sts.valid = 0  # it was absorbed with the previous day's key
        self._scope = scope
        self._scope_b = scope_b
        self._c.scope = self._scope_b
        self._c.scope_len = len(self._scope_b)
        memcpy(self._date, amz_date, 8)
        self._have_key = True
        return 0

    cdef str _day(self, object amz_date):
        cdef Py_ssize_t n
        _check_date(amz_date)
        self._ensure_day(_utf8(amz_date, &n, "amz_date"))
        return self._scope

    def scope(self, amz_date) -> str:
        """``YYYYMMDD/region/service/aws4_request`` for the day of ``amz_date``."""
        return self._day(amz_date)

    def signing_key(self, amz_date) -> bytes:
        """The derived key for the day of ``amz_date``."""
        _check_date(amz_date)
        return derive_signing_key(self._secret_key, amz_date[:8], self._region, self._service)

    cdef str _signature(self, str amz_date, str creq):
        cdef str scope = self._day(amz_date)
        cdef Py_ssize_t dn, sn, cn
        cdef const char *d = _utf8(amz_date, &dn, "amz_date")
        cdef const char *c = _utf8(creq, &cn, "creq")
        cdef char stack[256]
        cdef char sig[64]
        cdef ebs_buf b
        ebs_buf_init(&b, stack, 256)
        try:
            _check(ebs_sigv4_string_to_sign(&b, d, dn, self._c.scope, self._c.scope_len, c, cn))
            ebs_sigv4_signature_hex(&self._c.key, b.data, b.len, sig)
            return sig[:64].decode("ascii")
        finally:
            ebs_buf_free(&b)

    def sign(self, method, path, query, headers, payload_hash=None, amz_date=None, *,
             bint content_sha256=False, bint normalize=True) -> dict:
        """Sign for the ``Authorization`` header; returns the headers to add
        (``X-Amz-Date``, ``X-Amz-Security-Token``, ``X-Amz-Content-SHA256`` when asked,
        ``Authorization``). ``headers`` must include ``host``."""
        if amz_date is None:
            amz_date = _now()
        _check_date(amz_date)
        if not isinstance(method, str):
            raise ValueError(f"HTTP method {method!r} is not an HTTP token")
        replaced = {"authorization", "x-amz-date"}
        if self._token:
            replaced.add("x-amz-security-token")
        if content_sha256:
            replaced.add("x-amz-content-sha256")
        given_hash = None
        cdef list kept = []
        cdef bint has_host = False
        for name, value in _header_list(headers):
            lname = name.lower()
            if lname == "host":
                has_host = True
            if lname == "x-amz-content-sha256" and given_hash is None:
                given_hash = value
            if lname not in replaced:
                kept.append((name, value))
        if not has_host:
            raise ValueError("headers must include host (it is always signed)")
        if payload_hash is None:
            payload_hash = given_hash if given_hash is not None and not content_sha256 \
                else EMPTY_SHA256
        elif given_hash is not None and not content_sha256 and given_hash != payload_hash:
            raise ValueError("payload_hash differs from the x-amz-content-sha256 header "
                             "(botocore would sign the header's value)")
        added = {"X-Amz-Date": amz_date}
        kept.append(("X-Amz-Date", amz_date))
        if self._token:
            added["X-Amz-Security-Token"] = self._token
            if self._sign_token:
                kept.append(("X-Amz-Security-Token", self._token))
        if content_sha256:
            added["X-Amz-Content-SHA256"] = payload_hash
            kept.append(("X-Amz-Content-SHA256", payload_hash))
        creq, signed = _canonical_request(method, path, _wire_query(query), kept,
                                          payload_hash, normalize)
        sig = self._signature(amz_date, creq)
        added["Authorization"] = (f"{ALGORITHM} Credential={self._access_key}/{self._scope}, "
                                  f"SignedHeaders={signed}, Signature={sig}")
        return added

    def authorization(self, str method not None, str path not None,
                      str canonical_query not None, str header_block not None,
                      str signed_headers not None, str payload_hash not None,
                      str amz_date not None) -> str:
        """The ``Authorization`` value from pre-canonicalized pieces: the hot path. See
        ``ebsfast._sigv4_py.Signer.authorization`` for what each piece is."""
        cdef ebs_sigv4_prepared p
        cdef Py_ssize_t n
        p.method = _utf8(method, &n, "method")
        p.method_len = n
        p.path = _utf8(path, &n, "path")
        p.path_len = n
        p.query = _utf8(canonical_query, &n, "canonical_query")
        p.query_len = n
        p.header_block = _utf8(header_block, &n, "header_block")
        p.header_block_len = n
        p.signed_headers = _utf8(signed_headers, &n, "signed_headers")
        p.signed_headers_len = n
        p.payload_hash = _utf8(payload_hash, &n, "payload_hash")
        p.payload_hash_len = n
        # isascii() reads a flag of the str: free
        return _authorize(self, &p, amz_date, method,
                          self._ascii and signed_headers.isascii())

    def prepare(self, str method not None, str header_block not None,
                str signed_headers not None, str payload_hash not None) -> PreparedRequest:
        """The hot path for many requests of one shape: see the twin's ``Signer.prepare``."""
        return PreparedRequest(self, method, header_block, signed_headers, payload_hash)

    def presign(self, method, url, expires=3600, amz_date=None, *, headers=None,
                payload_hash=None, bint normalize=True) -> str:
        """A presigned URL, as botocore's ``SigV4QueryAuth`` makes it (see the twin)."""
        if isinstance(expires, bool) or not isinstance(expires, int):
            raise TypeError(f"expires must be an int number of seconds, not "
                            f"{type(expires).__name__}")
        if not 0 <= expires <= 604800:
            raise ValueError(f"expires must be 0 to 604800 seconds (seven days), "
                             f"got {expires}")
        if amz_date is None:
            amz_date = _now()
        _check_date(amz_date)
        if not isinstance(method, str):
            raise ValueError(f"HTTP method {method!r} is not an HTTP token")
        parts = urlsplit(url)
        items = [(n, v) for n, v in _header_list(headers or ())
                 if not (n.lower() == "content-type" and v == _PRESIGN_DROPPED_CONTENT_TYPE)]
        if not any(n.lower() == "host" for n, _ in items):
            items.append(("host", _host_from_url(parts)))
        if payload_hash is None:
            payload_hash = next((v for n, v in items
                                 if n.lower() == "x-amz-content-sha256"), EMPTY_SHA256)
        _, signed = canonical_headers(items)
        scope = self._day(amz_date)
        auth = [
            ("X-Amz-Algorithm", ALGORITHM),
            ("X-Amz-Credential", f"{self._access_key}/{scope}"),
            ("X-Amz-Date", amz_date),
            ("X-Amz-Expires", str(int(expires))),
            ("X-Amz-SignedHeaders", signed),
        ]
        token_pair = ("X-Amz-Security-Token", self._token)
        if self._token is not None and self._sign_token:
            auth.append(token_pair)
        operation = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        query = _encode_pairs(auth)
        if operation:
            query = _encode_pairs(operation) + "&" + query
        creq, _ = _canonical_request(method, parts.path, query, items, payload_hash,
                                     normalize)
        sig = self._signature(amz_date, creq)
        if self._token is not None and not self._sign_token:
            query += "&" + _encode_pairs([token_pair])
        query += f"&X-Amz-Signature={sig}"
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


cdef class PreparedRequest:
    """``Signer.authorization`` with the method, header block, signed headers and payload hash
    fixed and validated once (see the twin, ``ebsfast._sigv4_py.PreparedRequest``)."""

    def __init__(self, Signer signer not None, str method not None, str header_block not None,
                 str signed_headers not None, str payload_hash not None):
        # One full call validates every fixed piece exactly as authorization() would.
        signer.authorization(method, "/", "", header_block, signed_headers, payload_hash,
                             amz_date())
        self._signer = signer
        self._method = method.encode("utf-8")
        self._header_block = header_block.encode("utf-8")
        self._signed_headers = signed_headers.encode("utf-8")
        self._payload_hash = payload_hash.encode("utf-8")
        # The Authorization holds only the key id, scope, signed header names and hex.
        self._ascii = signer._ascii and signed_headers.isascii()

    def __repr__(self):
        return f"<PreparedRequest {self._method.decode()} for {self._signer!r}>"

    def __reduce__(self):
        raise TypeError("a PreparedRequest holds a signing key and cannot be pickled")

    def authorization(self, str path not None, str canonical_query not None,
                      str amz_date not None) -> str:
        cdef ebs_sigv4_prepared p
        cdef Py_ssize_t n
        p.method = self._method
        p.method_len = len(self._method)
        p.path = _utf8(path, &n, "path")
        p.path_len = n
        p.query = _utf8(canonical_query, &n, "canonical_query")
        p.query_len = n
        p.header_block = self._header_block
        p.header_block_len = len(self._header_block)
        p.signed_headers = self._signed_headers
        p.signed_headers_len = len(self._signed_headers)
        p.payload_hash = self._payload_hash
        p.payload_hash_len = len(self._payload_hash)
        return _authorize(self._signer, &p, amz_date, None, self._ascii)


cdef str _authorize(Signer signer, ebs_sigv4_prepared *p, str amz_date, object method,
                    bint ascii_out):
    """The shared end of both hot paths: the date (and the day's key), the C call, errors."""
    cdef Py_ssize_t n
    cdef char stack[512]
    cdef ebs_buf out
    cdef int rc
    p.amz_date = _utf8(amz_date, &n, "amz_date")
    if n != EBS_SIGV4_AMZ_DATE_LEN:
        raise ValueError(f"amz_date {amz_date!r} is not YYYYMMDDTHHMMSSZ")
    if not signer._have_key or memcmp(signer._date, p.amz_date, 8) != 0:
        _check_date(amz_date)
        signer._ensure_day(p.amz_date)
    p.normalize = 1
    ebs_buf_init(&out, stack, 512)
    rc = ebs_sigv4_authorize_cached(&out, &signer._c, p, &signer._sts)
    try:
        if rc != EBS_SIGV4_OK:
            if rc == EBS_SIGV4_EDATE:
                raise ValueError(f"amz_date {amz_date!r} is not YYYYMMDDTHHMMSSZ")
            if rc == EBS_SIGV4_EMETHOD:
                raise ValueError(f"HTTP method {method!r} is not an HTTP token")
            if rc == EBS_SIGV4_EINVAL:
                raise ValueError("header_block / signed_headers are not canonical "
                                 "(CR, unterminated line, or x-amz-date / "
                                 "x-amz-security-token inside)")
            _raise(rc)
        if ascii_out:
            return _ascii_str(out.data, out.len)
        return _ascii_or_utf8(out.data, out.len)
    finally:
        ebs_buf_free(&out)
