"""AWS Signature Version 4, in pure Python: the executable specification of ``ebsfast._sigv4``.

Every function here produces exactly what botocore's ``SigV4Auth`` / ``SigV4QueryAuth``
(botocore/auth.py) produce for the same request; ``tests/test_sigv4_botocore.py`` checks that
on random input, and the native module is checked against this one. Read this file to learn
what the C code does.

Inputs follow the wire: ``path`` is the request-line path exactly as sent (already
percent-encoded), ``query`` is the query string as sent. Like botocore for every service but
S3, the canonical URI encodes the path once more (a ``%20`` on the wire signs as ``%2520``);
the query is signed as it stands.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterable, Mapping
from typing import Union
from urllib.parse import parse_qs, urlsplit, urlunsplit

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

#: botocore's SIGNED_HEADERS_BLACKLIST (botocore 1.43): never part of a signature.
EXCLUDED_HEADERS = frozenset(
    {
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    }
)

# SigV4QueryAuth drops this content type, which botocore's query serializer adds by itself.
_PRESIGN_DROPPED_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z\Z", re.ASCII)

Headers = Union[Mapping[str, object], Iterable[tuple[str, object]]]
Query = Union[str, Mapping[str, object], Iterable[tuple[str, object]]]


def uri_encode(s: str, safe_slash: bool = False) -> str:
    """Percent-encode the UTF-8 bytes of ``s``: ``A-Za-z0-9-_.~`` kept, the rest ``%XX``."""
    out = []
    for b in s.encode("utf-8"):
        if b in _UNRESERVED or (safe_slash and b == 0x2F):
            out.append(chr(b))
        else:
            out.append(f"%{b:02X}")
    return "".join(out)


def normalize_path(path: str) -> str:
    """botocore's ``normalize_url_path``: RFC 3986 dot-segment removal plus dropping empty
    segments; a leading '/' stays, a trailing '/' stays if any segment is left."""
    if not path:
        return "/"
    segments: list[str] = []
    for seg in path.split("/"):
        if not seg or seg == ".":
            continue
        if seg == "..":
            if segments:
                segments.pop()
        else:
            segments.append(seg)
    first = "/" if path[0] == "/" else ""
    last = "/" if path[-1] == "/" and segments else ""
    return first + "/".join(segments) + last


def canonical_uri(path: str, normalize: bool = True) -> str:
    """The canonical URI of a request-line path (normalized if asked, then encoded once)."""
    if not path:
        return "/"
    if normalize:
        path = normalize_path(path)
    return uri_encode(path, safe_slash=True)


def canonical_query(query: Query) -> str:
    """The canonical query string.

    A ``str`` is a query as it sits on the wire (already encoded): split on '&', each part
    split at its first '=', sorted, rejoined, nothing re-encoded. A mapping or an iterable of
    ``(key, value)`` pairs holds raw values: each is encoded (non-str values via ``str()``)
    before sorting. Both mirror botocore (``_canonical_query_string_url`` / ``_params``).
    """
    if isinstance(query, str):
        if not query:
            return ""
        pairs = [part.partition("=")[::2] for part in query.split("&")]
    else:
        items = query.items() if isinstance(query, Mapping) else query
        pairs = [(uri_encode(str(k)), uri_encode(str(v))) for k, v in items]
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _header_items(headers: Headers) -> list[tuple[str, str]]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for name, value in items:
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise ValueError(f"header name {name!r} is not an HTTP token")
        if isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"header {name!r}: value must be str, not {type(value).__name__}")
        value = value if isinstance(value, str) else str(value)
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r}: value contains CR or LF (header injection)")
        out.append((name, value))
    return out


def canonical_headers(headers: Headers) -> tuple[str, str]:
    """``(block, signed_headers)``: block is one ``name:value\\n`` line per signed header name
    (lower-cased, sorted; values trimmed and inner whitespace runs folded as ``str.split()``
    does; repeated names joined by ',' in order), signed_headers the ';'-joined names.
    Excluded headers (``EXCLUDED_HEADERS``) are left out. CR/LF in a value is a ValueError."""
    grouped: dict[str, list[str]] = {}
    for name, value in _header_items(headers):
        lname = name.lower()
        if lname in EXCLUDED_HEADERS:
            continue
        grouped.setdefault(lname, []).append(" ".join(value.split()))
    names = sorted(grouped)
    block = "".join(f"{n}:{','.join(grouped[n])}\n" for n in names)
    return block, ";".join(names)


def _check_method(method: str) -> str:
    if not isinstance(method, str) or not _TOKEN.match(method):
        raise ValueError(f"HTTP method {method!r} is not an HTTP token")
    return method.upper()


def canonical_request(
    method: str,
    path: str,
    query: Query,
    headers: Headers,
    payload_hash: str,
    *,
    normalize: bool = True,
) -> tuple[str, str]:
    """``(canonical_request, signed_headers)`` for one request (see the module docstring for
    what ``path`` and ``query`` are)."""
    block, signed = canonical_headers(headers)
    creq = "\n".join(
        [
            _check_method(method),
            canonical_uri(path, normalize),
            canonical_query(query),
            block,
            signed,
            payload_hash,
        ]
    )
    return creq, signed


MAX_EXPIRES = 604800  # seconds: SigV4's limit for a presigned URL


def _check_expires(expires: object) -> None:
    if isinstance(expires, bool) or not isinstance(expires, int):
        raise TypeError(f"expires must be an int number of seconds, not "
                        f"{type(expires).__name__}")
    if not 0 <= expires <= MAX_EXPIRES:
        raise ValueError(f"expires must be 0 to {MAX_EXPIRES} seconds (seven days), "
                         f"got {expires}")


def _check_amz_date(amz_date: str) -> str:
    if not isinstance(amz_date, str) or not _AMZ_DATE.match(amz_date):
        raise ValueError(f"amz_date {amz_date!r} is not YYYYMMDDTHHMMSSZ")
    return amz_date


def string_to_sign(amz_date: str, scope: str, creq: str) -> str:
    """``AWS4-HMAC-SHA256\\n<amz_date>\\n<scope>\\n<hex SHA-256 of creq>``."""
    digest = hashlib.sha256(creq.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{_check_amz_date(amz_date)}\n{scope}\n{digest}"


def derive_signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """kSigning for one day (``date`` is YYYYMMDD)."""
    k = f"AWS4{secret_key}".encode("utf-8")
    for part in (date, region, service, "aws4_request"):
        k = hmac.new(k, part.encode("utf-8"), hashlib.sha256).digest()
    return k


def signature(signing_key: bytes, sts: str) -> str:
    """Hex HMAC-SHA256 of the string to sign."""
    return hmac.new(signing_key, sts.encode("utf-8"), hashlib.sha256).hexdigest()


_now_cache: tuple[int, str] = (-1, "")


def amz_date(epoch_s: float | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ`` for ``epoch_s`` (default: now), UTC."""
    global _now_cache
    sec = int(time.time() if epoch_s is None else epoch_s)
    hit = _now_cache
    if hit[0] == sec:
        return hit[1]
    s = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(sec))
    _now_cache = (sec, s)
    return s


_now = amz_date


def _merge_sorted(items: list[str], extra: list[str], name_of) -> list[str]:
    # The C hot path merges rather than sorts (the caller's part is already sorted); doing
    # the same here keeps the two identical even on unsorted input.
    out: list[str] = []
    e = 0
    for item in items:
        name = name_of(item)
        while e < len(extra) and name_of(extra[e]).encode() <= name.encode():
            if name_of(extra[e]) == name:
                raise ValueError(f"header_block / signed_headers must not hold {name}")
            out.append(extra[e])
            e += 1
        out.append(item)
    return out + extra[e:]


def _host_from_url(parts) -> str:
    # botocore's _host_from_url: lower-case host, IPv6 in brackets, no userinfo, port only
    # when it is not the scheme's default.
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{port}"
    return host


def _percent_encode_sequence(pairs: Iterable[tuple[str, object]]) -> str:
    return "&".join(f"{uri_encode(str(k))}={uri_encode(str(v))}" for k, v in pairs)


class Signer:
    """SigV4 signer for one set of credentials, region and service.

    The derived signing key is cached for the day of the last request and recomputed when a
    request carries another day. ``sign_session_token=False`` leaves the session token out of
    the signature (it is still sent): the test suite's ``omit_session_token`` cases; botocore
    always signs it.
    """

    def __init__(
        self,
        access_key: str,
        secret_key: str,
        region: str,
        service: str,
        session_token: str | None = None,
        *,
        sign_session_token: bool = True,
    ) -> None:
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
        # (date, scope, key) swapped as one tuple, so a reader never sees a torn update.
        self._key: tuple[str, str, bytes] = ("", "", b"")

    access_key = property(lambda self: self._access_key)
    region = property(lambda self: self._region)
    service = property(lambda self: self._service)
    has_session_token = property(lambda self: self._token is not None)

    def __repr__(self) -> str:
        token = ", session_token=<hidden>" if self._token is not None else ""
        return (f"{type(self).__name__}(access_key={self._access_key!r}, secret_key=<hidden>, "
                f"region={self._region!r}, service={self._service!r}{token})")

    def __reduce__(self):
        raise TypeError("Signer holds credentials and is not picklable")

    def scope(self, amz_date: str) -> str:
        """``YYYYMMDD/region/service/aws4_request`` for the day of ``amz_date``."""
        return self._day(_check_amz_date(amz_date))[1]

    def signing_key(self, amz_date: str) -> bytes:
        """The derived key for the day of ``amz_date`` (cached)."""
        return self._day(_check_amz_date(amz_date))[2]

    def _day(self, amz_date: str) -> tuple[str, str, bytes]:
        cached = self._key
        date = amz_date[:8]
        if cached[0] != date:
            scope = f"{date}/{self._region}/{self._service}/aws4_request"
            key = derive_signing_key(self._secret_key, date, self._region, self._service)
            cached = (date, scope, key)
            self._key = cached
        return cached

    def sign(
        self,
        method: str,
        path: str,
        query: Query,
        headers: Headers,
        payload_hash: str | None = None,
        amz_date: str | None = None,
        *,
        content_sha256: bool = False,
        normalize: bool = True,
    ) -> dict[str, str]:
        """Sign a request for the ``Authorization`` header; returns the headers to add.

        The result holds ``X-Amz-Date``, ``X-Amz-Security-Token`` (when the signer has a
        token), ``X-Amz-Content-SHA256`` (when ``content_sha256``) and ``Authorization``, and
        all but the last are signed. Headers of those names in ``headers`` are replaced, as
        botocore replaces them. ``headers`` must include ``host``.

        ``payload_hash`` is the hex SHA-256 of the body or ``UNSIGNED_PAYLOAD``. ``None``
        means: the value of an ``x-amz-content-sha256`` header in ``headers`` if there is
        one (botocore signs that value), else ``EMPTY_SHA256``. botocore adds
        ``X-Amz-Content-SHA256: UNSIGNED-PAYLOAD`` for operations whose auth type is
        ``v4-unsigned-body`` (EBS PutSnapshotBlock): pass
        ``payload_hash=UNSIGNED_PAYLOAD, content_sha256=True`` to do the same.

        ``amz_date`` is ``YYYYMMDDTHHMMSSZ``; ``None`` means now. A ``Date`` header is
        signed as given; botocore would instead rewrite it and drop ``X-Amz-Date``, so
        requests meant to match boto3 byte for byte should not carry one.
        """
        if amz_date is None:
            amz_date = _now()
        _check_amz_date(amz_date)
        replaced = {"authorization", "x-amz-date"}
        if self._token:
            replaced.add("x-amz-security-token")
        if content_sha256:
            replaced.add("x-amz-content-sha256")
        given_hash = None
        kept: list[tuple[str, object]] = []
        has_host = False
        for name, value in _header_items(headers):
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
        added: dict[str, str] = {"X-Amz-Date": amz_date}
        signed_extra: list[tuple[str, object]] = [("X-Amz-Date", amz_date)]
        if self._token:
            added["X-Amz-Security-Token"] = self._token
            if self._sign_token:
                signed_extra.append(("X-Amz-Security-Token", self._token))
        if content_sha256:
            added["X-Amz-Content-SHA256"] = payload_hash
            signed_extra.append(("X-Amz-Content-SHA256", payload_hash))
        creq, signed = canonical_request(method, path, query, kept + signed_extra,
                                         payload_hash, normalize=normalize)
        _, scope, key = self._day(amz_date)
        sig = signature(key, string_to_sign(amz_date, scope, creq))
        added["Authorization"] = (f"{ALGORITHM} Credential={self._access_key}/{scope}, "
                                  f"SignedHeaders={signed}, Signature={sig}")
        return added

    def authorization(
        self,
        method: str,
        path: str,
        canonical_query: str,
        header_block: str,
        signed_headers: str,
        payload_hash: str,
        amz_date: str,
    ) -> str:
        """The ``Authorization`` value from pre-canonicalized pieces: the hot path.

        ``header_block`` and ``signed_headers`` are what :func:`canonical_headers` returns for
        the request's headers *without* ``x-amz-date`` and ``x-amz-security-token``; this
        method merges those two in (from ``amz_date`` and the signer's token), so a client
        can build the pair once and reuse it while only the date changes. The caller still
        sends ``X-Amz-Date`` (and ``X-Amz-Security-Token``) itself. ``canonical_query`` is
        already canonical (``canonical_query(...)``, or a single ``k=v``); ``path`` is the
        request-line path, canonicalized (normalized and encoded) here.
        """
        _check_method(method)
        _check_amz_date(amz_date)
        if "\r" in header_block or (header_block and not header_block.endswith("\n")):
            raise ValueError("header_block must be canonical lines, each ending in LF")
        lines = header_block.split("\n")[:-1] if header_block else []
        if any(":" not in line for line in lines):
            raise ValueError("header_block must be canonical lines, each ending in LF")
        names = signed_headers.split(";") if signed_headers else []
        if any(not n for n in names):
            raise ValueError("signed_headers has an empty header name")
        extra = [("x-amz-date", amz_date)]
        if self._token and self._sign_token:
            extra.append(("x-amz-security-token", " ".join(self._token.split())))
        block = "".join(line + "\n" for line in _merge_sorted(
            lines, [f"{n}:{v}" for n, v in extra], lambda s: s.partition(":")[0]))
        all_names = ";".join(_merge_sorted(names, [n for n, _ in extra], lambda s: s))
        creq = "\n".join([method.upper(), canonical_uri(path), canonical_query, block,
                          all_names, payload_hash])
        _, scope, key = self._day(amz_date)
        sig = signature(key, string_to_sign(amz_date, scope, creq))
        return (f"{ALGORITHM} Credential={self._access_key}/{scope}, "
                f"SignedHeaders={all_names}, Signature={sig}")

    def prepare(self, method: str, header_block: str, signed_headers: str,
                payload_hash: str) -> "PreparedRequest":
        """The hot path for many requests of one shape (a client's GetSnapshotBlock): the
        method, canonical header block, signed header names and payload hash are checked once;
        each :meth:`PreparedRequest.authorization` then takes only the path, canonical query
        and date. Same result as :meth:`authorization` with the same pieces."""
        return PreparedRequest(self, method, header_block, signed_headers, payload_hash)

    def presign(
        self,
        method: str,
        url: str,
        expires: int = 3600,
        amz_date: str | None = None,
        *,
        headers: Headers | None = None,
        payload_hash: str | None = None,
        normalize: bool = True,
    ) -> str:
        """A presigned URL, as botocore's ``SigV4QueryAuth`` makes it.

        The URL's own query is decoded and re-encoded first (botocore parses it with
        ``parse_qs(keep_blank_values=True)`` and keeps the first value of a repeated key),
        then ``X-Amz-Algorithm, -Credential, -Date, -Expires, -SignedHeaders`` and
        ``X-Amz-Security-Token`` (when the signer has a token) follow, then
        ``X-Amz-Signature``. Signed headers: ``host`` (from the URL unless ``headers`` has
        one) plus ``headers`` minus excluded ones; no ``X-Amz-Date`` header. ``payload_hash``
        defaults to the ``x-amz-content-sha256`` header's value, else ``EMPTY_SHA256``.
        ``expires``: whole seconds, 0 to 604800 (seven days, SigV4's most).
        """
        _check_expires(expires)
        if amz_date is None:
            amz_date = _now()
        _check_amz_date(amz_date)
        parts = urlsplit(url)
        items = [(n, v) for n, v in _header_items(headers or ())
                 if not (n.lower() == "content-type" and v == _PRESIGN_DROPPED_CONTENT_TYPE)]
        if not any(n.lower() == "host" for n, _ in items):
            items.append(("host", _host_from_url(parts)))
        if payload_hash is None:
            payload_hash = next((str(v) for n, v in items
                                 if n.lower() == "x-amz-content-sha256"), EMPTY_SHA256)
        _, signed = canonical_headers(items)
        _, scope, key = self._day(amz_date)
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
        query = _percent_encode_sequence(auth)
        if operation:
            query = _percent_encode_sequence(operation.items()) + "&" + query
        creq, _ = canonical_request(method, parts.path, query, items, payload_hash,
                                    normalize=normalize)
        sig = signature(key, string_to_sign(amz_date, scope, creq))
        if self._token is not None and not self._sign_token:
            query += "&" + _percent_encode_sequence([token_pair])
        query += f"&X-Amz-Signature={sig}"
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class PreparedRequest:
    """:meth:`Signer.authorization` with the request's fixed pieces bound and validated."""

    __slots__ = ("_signer", "_method", "_header_block", "_signed_headers", "_payload_hash")

    def __init__(self, signer: Signer, method: str, header_block: str, signed_headers: str,
                 payload_hash: str):
        # One full call validates every fixed piece exactly as authorization() would.
        signer.authorization(method, "/", "", header_block, signed_headers, payload_hash,
                             amz_date())
        self._signer = signer
        self._method = method
        self._header_block = header_block
        self._signed_headers = signed_headers
        self._payload_hash = payload_hash

    def __repr__(self) -> str:
        return f"<PreparedRequest {self._method} for {self._signer!r}>"

    def __reduce__(self):
        raise TypeError("a PreparedRequest holds a signing key and cannot be pickled")

    def authorization(self, path: str, canonical_query: str, amz_date: str) -> str:
        return self._signer.authorization(self._method, path, canonical_query,
                                          self._header_block, self._signed_headers,
                                          self._payload_hash, amz_date)
