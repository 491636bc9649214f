"""Types of ebsfast._pages (identical to ebsfast._pages_py; see it for the behaviour)."""
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

IMPLEMENTATION: str
KINDS: tuple[str, str]

Kind = Literal["blocks", "changed"]
Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

class Columns:
    kind: str
    indexes: Int64Array
    tokens: bytes | None
    offsets: Int64Array | None
    first: bytes | None
    first_offsets: Int64Array | None
    second: bytes | None
    second_offsets: Int64Array | None
    has_first: BoolArray | None
    has_second: BoolArray | None
    expiry_time: int | float | None
    volume_size: int | None
    block_size: int | None
    next_token: str | None
    def __init__(
        self,
        kind: str,
        indexes: Int64Array,
        *,
        tokens: bytes | None = None,
        offsets: Int64Array | None = None,
        first: bytes | None = None,
        first_offsets: Int64Array | None = None,
        second: bytes | None = None,
        second_offsets: Int64Array | None = None,
        has_first: BoolArray | None = None,
        has_second: BoolArray | None = None,
        expiry_time: int | float | None = None,
        volume_size: int | None = None,
        block_size: int | None = None,
        next_token: str | None = None,
    ) -> None: ...
    def __len__(self) -> int: ...

def parse_page(body: Any, kind: Kind) -> dict[str, Any]: ...
def parse_columns(body: Any, kind: Kind) -> Columns: ...
