"""SigV4 verification for the local server, built on ebsfast's own signer.

The server recomputes the signature from the request as it arrived (method, wire path and
query, the headers the client says it signed, the payload hash) and compares it in constant
time. Presigned URLs (signature in the query) are verified the same way.
"""
from __future__ import annotations

import calendar
import hmac
import re
import time
from functools import lru_cache
from urllib.parse import unquote

from .. import signing
from ..checksums import sha256
from ._service import ApiError

_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})$")
_DATE_RE = re.compile(r"^\d{8}T\d{6}Z$")
_EMPTY_SHA256 = sha256(b"").hex()


def _denied(code: str, message: str, status: int = 403, reason: str | None = None) -> ApiError:
    return ApiError(status, code, message, reason)


@lru_cache(maxsize=64)
def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    return signing.derive_signing_key(secret, date, region, service)


@lru_cache(maxsize=256)
def _amz_epoch(amz_date: str) -> float:
    d = amz_date
    try:
        return calendar.timegm((int(d[0:4]), int(d[4:6]), int(d[6:8]), int(d[9:11]),
                                int(d[11:13]), int(d[13:15]), 0, 0, 0))
    except (ValueError, OverflowError):
        raise _denied("InvalidSignatureException", f"X-Amz-Date {d!r} is not a valid "
                      "date.") from None


def _signed_with(payload_hash: str, req, query: str, sig_headers: list, key: bytes,
                 amz_date: str, scope: str, signature: str) -> bool:
    """Whether ``signature`` is the request's signature with this payload hash."""
    try:
        creq, _ = signing.canonical_request(req.method, req.path, query, sig_headers,
                                            payload_hash)
    except ValueError as exc:
        raise _denied("InvalidSignatureException", f"The request cannot be signed: {exc}")
    return hmac.compare_digest(signing.signature(key, signing.string_to_sign(amz_date, scope,
                                                                             creq)), signature)


def verify(req, *, access_key: str, secret_key: str, session_token: str | None, region: str,
           max_skew_s: float) -> None:
    """Raise ApiError unless ``req`` carries a valid signature by these credentials."""
    headers = req.headers
    auth = headers.get("authorization")
    if auth is None and "X-Amz-Signature=" not in req.query_string:
        raise ApiError(403, "AccessDeniedException", "The request carries no SigV4 signature "
                       "(Authorization header or X-Amz-Signature query parameter).",
                       "UNAUTHORIZED_ACCOUNT")
    if auth is not None:
        m = _AUTH_RE.match(auth.strip())
        if m is None:
            raise _denied("InvalidSignatureException", "The Authorization header is not a "
                          "well-formed AWS4-HMAC-SHA256 authorization.")
        credential, signed_names, signature = m.groups()
        amz_date = headers.get("x-amz-date", "")
        token = headers.get("x-amz-security-token")
        query = req.query_string
        expires = None
    else:
        params = {}
        kept = []
        for part in req.query_string.split("&"):
            k, _, v = part.partition("=")
            params[k] = v
            if k != "X-Amz-Signature":
                kept.append(part)

        if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
            raise _denied("InvalidSignatureException", "X-Amz-Algorithm must be AWS4-HMAC-SHA256.")
        credential = unquote(params.get("X-Amz-Credential", ""))
        signed_names = unquote(params.get("X-Amz-SignedHeaders", ""))
        signature = params.get("X-Amz-Signature", "")
        amz_date = params.get("X-Amz-Date", "")
        token = unquote(params["X-Amz-Security-Token"]) if "X-Amz-Security-Token" in params else None
        query = "&".join(kept)
        try:
            expires = int(params.get("X-Amz-Expires", ""))
        except ValueError:
            raise _denied("InvalidSignatureException", "X-Amz-Expires is missing or not an "
                          "integer.") from None
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise _denied("InvalidSignatureException", "The credential scope is malformed.")
    key_id, date, scope_region, service, _ = parts
    if key_id != access_key:
        raise _denied("UnrecognizedClientException", "The security token included in the "
                      "request is invalid.")
    if session_token is not None and token != session_token:
        raise _denied("UnrecognizedClientException", "The security token included in the "
                      "request is invalid.")
    if scope_region != region:
        raise _denied("InvalidSignatureException", f"Credential should be scoped to a valid "
                      f"region, not '{scope_region}' (this server is '{region}').")
    if service != "ebs":
        raise _denied("InvalidSignatureException", f"Credential should be scoped to the "
                      f"correct service: 'ebs', not '{service}'.")
    if not _DATE_RE.match(amz_date) or amz_date[:8] != date:
        raise _denied("InvalidSignatureException", "X-Amz-Date is missing, malformed, or not "
                      "the day of the credential scope.")
    signed_at = _amz_epoch(amz_date)
    now = time.time()
    if expires is None:
        if abs(now - signed_at) > max_skew_s:
            raise _denied("InvalidSignatureException", f"Signature expired: {amz_date} is more "
                          f"than {int(max_skew_s // 60)} minutes from the server's time.")
    elif not 0 <= expires <= 604800 or now > signed_at + expires or signed_at > now + max_skew_s:
        raise _denied("AccessDeniedException", "The presigned URL has expired.",
                      reason="UNAUTHORIZED_ACCOUNT")
    names = signed_names.split(";")
    if "host" not in names:
        raise _denied("InvalidSignatureException", "The host header must be signed.")
    sig_headers = []
    for name in names:
        value = headers.get(name)
        if value is None:
            raise _denied("InvalidSignatureException", f"Signed header '{name}' is not in the "
                          "request.")
        sig_headers.append((name, value))
    key = _signing_key(secret_key, date, region, service)
    scope = f"{date}/{region}/{service}/aws4_request"
    # The client may have signed the hash it announced (x-amz-content-sha256, which may be
    # UNSIGNED-PAYLOAD), or the body's own hash: botocore announces UNSIGNED-PAYLOAD for
    # PutSnapshotBlock but signs the body hash when the endpoint is plain http. A signed hash
    # vouches for the body only if it is the body's, so an announced hash other than
    # UNSIGNED-PAYLOAD must be the SHA-256 of the body received. A GET without a body (all the
    # lane serves) has nothing to vouch for and is taken as signed, as the lane takes it.
    announced = headers.get("x-amz-content-sha256")
    body = req.body
    checked = (announced not in (None, "", "UNSIGNED-PAYLOAD")
               and (len(body) > 0 or req.method != "GET"))
    body_hash = (sha256(body).hex() if body else _EMPTY_SHA256) if checked else None
    if not ((announced and _signed_with(announced, req, query, sig_headers, key, amz_date,
                                        scope, signature))
            or (expires is not None and _signed_with("UNSIGNED-PAYLOAD", req, query,
                                                     sig_headers, key, amz_date, scope,
                                                     signature))
            or _signed_with(body_hash or (sha256(body).hex() if body else _EMPTY_SHA256), req,
                            query, sig_headers, key, amz_date, scope, signature)):
        raise _denied("InvalidSignatureException", "The request signature we calculated does "
                      "not match the signature you provided. Check your AWS Secret Access Key "
                      "and signing method.")
    if checked and announced != body_hash:
        raise _denied("InvalidSignatureException", "The x-amz-content-sha256 header is not "
                      "the SHA-256 of the request body received.")
