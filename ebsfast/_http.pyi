# Typed stub of the native HTTP exchange (ebsfast/_http.pyx); ebsfast/_http_py.py is its
# pure-Python twin with the same API and defines the classes re-exported here.
from typing import Any

from typing_extensions import Buffer

from ebsfast._http_py import BodyTooLarge as BodyTooLarge
from ebsfast._http_py import ConnectionClosed as ConnectionClosed
from ebsfast._http_py import ExchangeError as ExchangeError
from ebsfast._http_py import IncompleteBody as IncompleteBody
from ebsfast._http_py import ProtocolError as ProtocolError
from ebsfast._http_py import Response as Response

IMPLEMENTATION: str
MAX_HEAD: int
MAX_CHUNK_LINE: int
MAX_TRAILERS: int
MAX_INTERIM: int
FIRST_HEAD_BUF: int

def exchange(
    sock: Any,
    head: Buffer,
    body: Buffer | None = ...,
    out: Buffer | None = ...,
    *,
    timeout_s: float | None = ...,
    hash_body: bool = ...,
    max_other_body: int = ...,
) -> Response: ...

def direct_tls() -> bool: ...
