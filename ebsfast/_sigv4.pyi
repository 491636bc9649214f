"""Types of ebsfast._sigv4 (identical to ebsfast._sigv4_py; see it for the behaviour)."""
from collections.abc import Iterable, Mapping
from typing import Union

Headers = Union[Mapping[str, object], Iterable[tuple[str, object]]]
Query = Union[str, Mapping[str, object], Iterable[tuple[str, object]]]

ALGORITHM: str
EMPTY_SHA256: str
UNSIGNED_PAYLOAD: str
EXCLUDED_HEADERS: frozenset[str]

def uri_encode(s: str, safe_slash: bool = False) -> str: ...
def normalize_path(path: str) -> str: ...
def canonical_uri(path: str, normalize: bool = True) -> str: ...
def canonical_query(query: Query) -> str: ...
def canonical_headers(headers: Headers) -> tuple[str, str]: ...
def canonical_request(
    method: str,
    path: str,
    query: Query,
    headers: Headers,
    payload_hash: str,
    *,
    normalize: bool = True,
) -> tuple[str, str]: ...
def string_to_sign(amz_date: str, scope: str, creq: str) -> str: ...
def derive_signing_key(secret_key: str, date: str, region: str, service: str) -> bytes: ...
def signature(signing_key: bytes, sts: str) -> str: ...
def amz_date(epoch_s: float | None = None) -> str: ...

class Signer:
    def __init__(
        self,
        access_key: str,
        secret_key: str,
        region: str,
        service: str,
        session_token: str | None = None,
        *,
        sign_session_token: bool = True,
    ) -> None: ...
    @property
    def access_key(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def service(self) -> str: ...
    @property
    def has_session_token(self) -> bool: ...
    def scope(self, amz_date: str) -> str: ...
    def signing_key(self, amz_date: str) -> bytes: ...
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
    ) -> dict[str, str]: ...
    def authorization(
        self,
        method: str,
        path: str,
        canonical_query: str,
        header_block: str,
        signed_headers: str,
        payload_hash: str,
        amz_date: str,
    ) -> str: ...
    def prepare(
        self, method: str, header_block: str, signed_headers: str, payload_hash: str
    ) -> PreparedRequest: ...
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
    ) -> str: ...


class PreparedRequest:
    def __init__(
        self,
        signer: Signer,
        method: str,
        header_block: str,
        signed_headers: str,
        payload_hash: str,
    ) -> None: ...
    def authorization(self, path: str, canonical_query: str, amz_date: str) -> str: ...
