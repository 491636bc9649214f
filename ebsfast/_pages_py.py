"""ListSnapshotBlocks / ListChangedBlocks response pages, pure Python.

The executable specification of ``ebsfast._pages`` (same API; the native module does the same
with one C scan and no per-entry Python objects in the columnar form).

What a page means is what botocore makes of it: ``json.loads`` of the body decoded as UTF-8,
then the output shape of the EBS model (``Blocks``/``ChangedBlocks``, ``ExpiryTime``,
``VolumeSize``, ``BlockSize``, ``NextToken``; entries keep ``BlockIndex`` and their tokens).
Unknown keys are skipped at every level, ``null`` means absent, a repeated key keeps its last
value. ebsfast is stricter than botocore in five ways, so that bad input fails here rather
than later: a known key holding a value of the wrong type (in any of its occurrences) is a
``ValueError``; integers must fit int64; a token must be encodable as UTF-8 (no lone
surrogates from ``\\uD800``-style escapes); ``NaN``/``Infinity`` are not JSON; arrays and
objects nest at most ``MAX_DEPTH`` (512) levels, the page's own object counted. ``ExpiryTime``
stays the number it was (botocore turns it into a datetime).
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

IMPLEMENTATION = "python"
KINDS = ("blocks", "changed")
#: the deepest nesting of arrays and objects a page may have, the page's own object counted
#: (the native scanner's EBS_PAGE_MAX_DEPTH)
MAX_DEPTH = 512

_LIST_KEY = {"blocks": "Blocks", "changed": "ChangedBlocks"}
_TOKEN_KEYS = {"blocks": ("BlockToken",), "changed": ("FirstBlockToken", "SecondBlockToken")}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


class Columns:
    """One page in columns: ``indexes`` (int64), tokens as one bytes blob per token kind with
    int64 ``offsets`` (token i is ``blob[offsets[i]:offsets[i + 1]]``), and the page scalars.

    For ``kind == "blocks"``: ``tokens``/``offsets``; the ``first*``/``second*``/``has_*``
    members are None. For ``kind == "changed"``: ``first``/``first_offsets``,
    ``second``/``second_offsets`` (an absent token is an empty slice) and the bool arrays
    ``has_first``/``has_second``; ``tokens``/``offsets`` are None.
    """

    __slots__ = ("kind", "indexes", "tokens", "offsets", "first", "first_offsets", "second",
                 "second_offsets", "has_first", "has_second", "expiry_time", "volume_size",
                 "block_size", "next_token")

    def __init__(self, kind: str, indexes: np.ndarray, *, tokens: bytes | None = None,
                 offsets: np.ndarray | None = None, first: bytes | None = None,
                 first_offsets: np.ndarray | None = None, second: bytes | None = None,
                 second_offsets: np.ndarray | None = None, has_first: np.ndarray | None = None,
                 has_second: np.ndarray | None = None, expiry_time: int | float | None = None,
                 volume_size: int | None = None, block_size: int | None = None,
                 next_token: str | None = None) -> None:
        self.kind = kind
        self.indexes = indexes
        self.tokens = tokens
        self.offsets = offsets
        self.first = first
        self.first_offsets = first_offsets
        self.second = second
        self.second_offsets = second_offsets
        self.has_first = has_first
        self.has_second = has_second
        self.expiry_time = expiry_time
        self.volume_size = volume_size
        self.block_size = block_size
        self.next_token = next_token

    def __len__(self) -> int:
        return len(self.indexes)

    def __repr__(self) -> str:
        more = "" if self.next_token is None else ", more pages"
        return f"<Columns {self.kind}: {len(self)} entries{more}>"


class _Repeated(dict):
    """An object in which some key occurs more than once: json.loads keeps the last value,
    and ``pairs`` keeps them all so each occurrence can be type-checked (the native scanner
    checks every value of a known key as it reads it)."""

    __slots__ = ("pairs",)
    pairs: list[tuple[str, Any]]


def _object(pairs: list[tuple[str, Any]]) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        d = _Repeated(d)
        d.pairs = pairs
    return d


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class _Bad(ValueError):
    pass


def _load(body: Any, kind: str) -> dict:
    if kind not in KINDS:
        raise ValueError(f"kind must be 'blocks' or 'changed', not {kind!r}")
    data = memoryview(body).tobytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid {kind} page at byte {exc.start}: invalid UTF-8") from None
    try:
        obj = json.loads(text, object_pairs_hook=_object, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        at = len(text[:exc.pos].encode("utf-8", "surrogatepass"))
        raise ValueError(f"invalid {kind} page at byte {at}: {exc.msg}") from None
    except RecursionError:
        raise ValueError(f"invalid {kind} page: nesting too deep") from None
    except ValueError as exc:  # parse_constant
        raise ValueError(f"invalid {kind} page: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"invalid {kind} page at byte 0: the body is not a JSON object")
    if _deeper_than(obj, MAX_DEPTH):  # json.loads may go deeper than the native limit
        raise ValueError(f"invalid {kind} page: nesting too deep")
    return obj


def _deeper_than(obj: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels in ``obj`` (itself one)."""
    stack = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        values = ([v for _, v in node.pairs] if isinstance(node, _Repeated)
                  else node.values() if isinstance(node, dict) else node)
        for v in values:
            if isinstance(v, (dict, list)):
                stack.append((v, depth + 1))
    return False


def _occurrences(obj: dict, key: str) -> list[Any]:
    if isinstance(obj, _Repeated):
        return [v for k, v in obj.pairs if k == key]
    return [obj[key]] if key in obj else []


def _int(v: Any, what: str) -> int:
    if type(v) is not int:
        raise _Bad(f"{what} must be an integer or null, not {type(v).__name__}")
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise _Bad(f"{what} is outside the int64 range")
    return v


def _str(v: Any, what: str) -> str:
    if type(v) is not str:
        raise _Bad(f"{what} must be a string or null, not {type(v).__name__}")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad(f"{what}: \\u escape leaves a lone surrogate") from None
    return v


def _number(v: Any, what: str) -> int | float:
    if type(v) is not int and type(v) is not float:
        raise _Bad(f"{what} must be a number or null, not {type(v).__name__}")
    return v


def _member(obj: dict, key: str, check, what: str) -> Any:
    """The value botocore would use (the last, None when null or absent), after checking
    every occurrence."""
    value = None
    for v in _occurrences(obj, key):
        value = None if v is None else check(v, what)
    return value


def _entry(e: Any, kind: str, i: int, strict: bool) -> dict | None:
    where = f"{_LIST_KEY[kind]}[{i}]"
    if e is None:
        if strict:
            raise _Bad(f"{where} is null (the columnar form has no place for it)")
        return None
    if not isinstance(e, dict):
        raise _Bad(f"{where} must be an object or null, not {type(e).__name__}")
    out = {}
    index = _member(e, "BlockIndex", _int, f"{where}.BlockIndex")
    if index is not None:
        out["BlockIndex"] = index
    for key in _TOKEN_KEYS[kind]:
        token = _member(e, key, _str, f"{where}.{key}")
        if token is not None:
            out[key] = token
    if strict:
        if "BlockIndex" not in out:
            raise _Bad(f"{where} has no BlockIndex (the columnar form needs one)")
        if kind == "blocks" and "BlockToken" not in out:
            raise _Bad(f"{where} has no BlockToken (the columnar form needs one)")
    return out


def _entries(v: Any, kind: str, strict: bool) -> list:
    if type(v) is not list:
        raise _Bad(f"{_LIST_KEY[kind]} must be an array or null, not {type(v).__name__}")
    return [_entry(e, kind, i, strict) for i, e in enumerate(v)]


def _page(body: Any, kind: str, strict: bool) -> dict:
    obj = _load(body, kind)
    list_key = _LIST_KEY[kind]
    try:
        entries = _member(obj, list_key, lambda v, _: _entries(v, kind, strict), list_key)
        page: dict[str, Any] = {}
        if entries is not None:
            page[list_key] = entries
        for key, check in (("ExpiryTime", _number), ("VolumeSize", _int), ("BlockSize", _int),
                           ("NextToken", _str)):
            v = _member(obj, key, check, key)
            if v is not None:
                page[key] = v
    except _Bad as exc:
        raise ValueError(f"invalid {kind} page: {exc}") from None
    return page


def parse_page(body: Any, kind: str) -> dict[str, Any]:
    """The page as botocore's parser returns it (without ResponseMetadata), except that
    ``ExpiryTime`` is the number from the body. ``kind`` is ``"blocks"`` (ListSnapshotBlocks)
    or ``"changed"`` (ListChangedBlocks); ``body`` is any bytes-like object."""
    return _page(body, kind, strict=False)


def _column(tokens: list[str | None]) -> tuple[bytes, np.ndarray]:
    raw = [b"" if t is None else t.encode("utf-8") for t in tokens]
    offsets = np.zeros(len(raw) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in raw], out=offsets[1:])
    return b"".join(raw), offsets


def parse_columns(body: Any, kind: str) -> Columns:
    """The page in columns (see ``Columns``). Stricter than ``parse_page`` where a column has
    no place for something: every entry needs a ``BlockIndex`` (and, for ``"blocks"``, a
    ``BlockToken``), and a null entry is a ``ValueError``."""
    page = _page(body, kind, strict=True)
    entries = page.get(_LIST_KEY[kind], [])
    indexes = np.array([e["BlockIndex"] for e in entries], dtype=np.int64)
    scalars = dict(expiry_time=page.get("ExpiryTime"), volume_size=page.get("VolumeSize"),
                   block_size=page.get("BlockSize"), next_token=page.get("NextToken"))
    if kind == "blocks":
        tokens, offsets = _column([e["BlockToken"] for e in entries])
        return Columns(kind, indexes, tokens=tokens, offsets=offsets, **scalars)
    firsts = [e.get("FirstBlockToken") for e in entries]
    seconds = [e.get("SecondBlockToken") for e in entries]
    first, first_offsets = _column(firsts)
    second, second_offsets = _column(seconds)
    return Columns(kind, indexes, first=first, first_offsets=first_offsets, second=second,
                   second_offsets=second_offsets,
                   has_first=np.array([t is not None for t in firsts], dtype=bool),
                   has_second=np.array([t is not None for t in seconds], dtype=bool),
                   **scalars)
