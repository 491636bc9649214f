# Typed stub of the local server's native lane (ebsfast/_lane.pyx); ebsfast/_lane_py.py is its
# pure-Python twin with the same API.
import socket
from typing import Any, Callable

MAX_HEAD: int
MAX_HEADERS: int

class BlockLane:
    served: int
    def __init__(self, *, access_key: str, secret_key: str, session_token: str | None,
                 region: str, verify: bool, max_skew_s: float, block_size: int,
                 lookup: Callable[[str, str], tuple[bytes, int] | None]) -> None: ...
    def accepts(self, head: bytes) -> tuple[str, str] | None: ...
    def serve(self, conn: socket.socket, pending: bytes, pipe: Any) -> bytes | None: ...
