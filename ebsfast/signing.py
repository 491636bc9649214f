"""AWS Signature Version 4, byte-for-byte compatible with botocore.

The signer is split into the steps of the SigV4 spec, each usable alone (as botocore's
``SigV4Auth`` splits them): :func:`canonical_request` (built from :func:`canonical_uri`,
:func:`canonical_query` and :func:`canonical_headers`), :func:`string_to_sign`,
:func:`derive_signing_key` and :func:`signature`. :class:`Signer` ties them together, caches
the day's signing key, and offers three ways to sign:

- :meth:`Signer.sign`: a request in the usual form (method, path, query, headers); returns
  the headers to add.
- :meth:`Signer.authorization`: the hot path, from pieces a client prepares once
  (the canonical header block without the date); returns the ``Authorization`` value.
- :meth:`Signer.presign`: a presigned URL, as botocore's ``SigV4QueryAuth`` makes it.

Paths and queries are taken as they go on the wire (already percent-encoded). As botocore
does for every service but S3, the canonical URI encodes the path once more, so a ``%20`` in
the request line is signed as ``%2520``.

EBS ``PutSnapshotBlock`` has auth type ``v4-unsigned-body``: botocore then sends and signs
``X-Amz-Content-SHA256: UNSIGNED-PAYLOAD`` and uses it as the payload hash. Do the same with
``Signer.sign(..., payload_hash=UNSIGNED_PAYLOAD, content_sha256=True)``, or on the hot path
put ``x-amz-content-sha256:UNSIGNED-PAYLOAD`` in the header block and pass
``payload_hash=UNSIGNED_PAYLOAD``.

The implementation is ``ebsfast._sigv4`` (C) or, with ``EBSFAST_NO_EXTENSIONS=1`` or a
broken build, its pure-Python twin ``ebsfast._sigv4_py``; both behave identically.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import _backend

if TYPE_CHECKING:
    # Type checkers see the twin's annotated signatures; at run time the backend's names.
    from ._sigv4_py import (
        ALGORITHM,
        EMPTY_SHA256,
        EXCLUDED_HEADERS,
        UNSIGNED_PAYLOAD,
        Signer,
        amz_date,
        canonical_headers,
        canonical_query,
        canonical_request,
        canonical_uri,
        derive_signing_key,
        normalize_path,
        signature,
        string_to_sign,
        uri_encode,
    )
else:
    _impl = _backend.load("sigv4")
    ALGORITHM = _impl.ALGORITHM
    EMPTY_SHA256 = _impl.EMPTY_SHA256
    EXCLUDED_HEADERS = _impl.EXCLUDED_HEADERS
    UNSIGNED_PAYLOAD = _impl.UNSIGNED_PAYLOAD
    Signer = _impl.Signer
    amz_date = _impl.amz_date
    canonical_headers = _impl.canonical_headers
    canonical_query = _impl.canonical_query
    canonical_request = _impl.canonical_request
    canonical_uri = _impl.canonical_uri
    derive_signing_key = _impl.derive_signing_key
    normalize_path = _impl.normalize_path
    signature = _impl.signature
    string_to_sign = _impl.string_to_sign
    uri_encode = _impl.uri_encode

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "EXCLUDED_HEADERS",
    "UNSIGNED_PAYLOAD",
    "Signer",
    "amz_date",
    "canonical_headers",
    "canonical_query",
    "canonical_request",
    "canonical_uri",
    "derive_signing_key",
    "normalize_path",
    "signature",
    "string_to_sign",
    "uri_encode",
]
