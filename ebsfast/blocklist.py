"""Block lists of whole snapshots in columns: numpy indexes and tokens packed in one blob.

A 16 TiB snapshot lists up to 33.5 M blocks in about 3,400 ListSnapshotBlocks pages. As
boto3-shaped dicts that is 33.5 M dicts and strings (several GB and minutes of CPU); here it is
an int64 array and one bytes blob of tokens with an int64 offsets array, about 110 bytes a
block, built from pages parsed straight into columns::

    pages = [parse_columns(body, "blocks") for body in bodies]
    blocks = BlockList.from_pages(pages)
    blocks.indexes[:5], blocks.tokens[0], len(blocks), blocks.bytes_total

``parse_page`` / ``parse_columns`` / ``Columns`` are the native parser (``ebsfast._pages``) or
its Python twin, whichever ebsfast loaded. Everything here is vectorized: no per-block Python
work except where a method hands out per-block Python objects (``as_dicts``, iteration).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Union, overload

import numpy as np

from . import _backend

_pages = _backend.load("pages")
parse_page = _pages.parse_page
parse_columns = _pages.parse_columns
Columns = _pages.Columns

__all__ = ["BlockList", "ChangedBlockList", "Columns", "TokenColumn", "parse_columns",
           "parse_page"]

BLOCK_SIZE = 524288  # the EBS direct APIs' block size; pages say so in BlockSize

# take() gathers this many tokens at a time, so its index arrays stay near 16 MB whatever
# the size of the column.
_GATHER_CHUNK = 16384

Selector = Union[slice, "np.ndarray", "list[int]", "list[bool]"]


def _int64(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64)


def _positions(sel: Any, n: int) -> np.ndarray:
    """A slice, bool mask or integer indexes as int64 positions in [0, n)."""
    if isinstance(sel, slice):
        return np.arange(n, dtype=np.int64)[sel]
    a = np.asarray(sel)
    if a.dtype == np.bool_:
        if a.shape != (n,):
            raise IndexError(f"boolean mask of shape {a.shape} for {n} items")
        return np.flatnonzero(a).astype(np.int64, copy=False)
    if a.size == 0:
        return np.empty(0, dtype=np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise IndexError(f"cannot index with an array of {a.dtype}")
    a = a.astype(np.int64).ravel()
    if a.min() < -n or a.max() >= n:
        raise IndexError(f"index out of range for {n} items")
    return np.where(a < 0, a + n, a)


class TokenColumn:
    """Strings in columns: token i is ``blob[offsets[i]:offsets[i + 1]]`` (UTF-8; block
    tokens are base64). ``offsets`` need not start at 0, so a slice is a view sharing the
    blob."""

    __slots__ = ("blob", "offsets")

    def __init__(self, blob: bytes, offsets: Any) -> None:
        offsets = _int64(offsets)
        if offsets.ndim != 1 or len(offsets) < 1:
            raise ValueError("offsets must be a 1-D array of n + 1 positions")
        if len(offsets) > 1 and (offsets[0] < 0 or offsets[-1] > len(blob)
                                 or np.any(offsets[1:] < offsets[:-1])):
            raise ValueError("offsets must ascend within the blob")
        self.blob = bytes(blob) if not isinstance(blob, bytes) else blob
        self.offsets = offsets

    @classmethod
    def from_strings(cls, strings: Iterable[str | None]) -> TokenColumn:
        """A column of the given strings (None becomes an empty slice)."""
        raw = [b"" if s is None else s.encode("utf-8") for s in strings]
        offsets = np.zeros(len(raw) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in raw], out=offsets[1:])
        return cls(b"".join(raw), offsets)

    @classmethod
    def concat(cls, columns: Iterable[TokenColumn]) -> TokenColumn:
        """One column holding the given columns in order, copied once: O(total bytes)."""
        columns = list(columns)
        n = sum(len(c) for c in columns)
        offsets = np.empty(n + 1, dtype=np.int64)
        offsets[0] = 0
        parts = []
        at = base = 0
        for c in columns:
            k = len(c)
            start, end = int(c.offsets[0]), int(c.offsets[-1])
            parts.append(memoryview(c.blob)[start:end])
            np.add(c.offsets[1:], base - start, out=offsets[at + 1:at + k + 1])
            at += k
            base += end - start
        return cls(b"".join(parts), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Bytes in each token."""
        return np.diff(self.offsets)

    @property
    def nbytes(self) -> int:
        """Bytes of token text this column covers (the blob may hold more when sliced)."""
        return int(self.offsets[-1] - self.offsets[0])

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: Selector) -> TokenColumn: ...

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            n = len(self)
            j = int(i) + n if i < 0 else int(i)
            if not 0 <= j < n:
                raise IndexError(f"token index {i} out of range for {n} tokens")
            return self.blob[self.offsets[j]:self.offsets[j + 1]].decode("utf-8")
        if isinstance(i, slice) and i.step in (None, 1):
            start, stop, _ = i.indices(len(self))
            return TokenColumn(self.blob, self.offsets[start:max(start, stop) + 1])
        return self.take(i)

    def take(self, where: Selector) -> TokenColumn:
        """A new compact column of the selected tokens (positions, a bool mask or a slice)."""
        pos = _positions(where, len(self))
        starts = self.offsets[pos]
        lengths = self.offsets[pos + 1] - starts
        offsets = np.zeros(len(pos) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        src = np.frombuffer(self.blob, dtype=np.uint8)
        out = np.empty(int(offsets[-1]), dtype=np.uint8)
        for a in range(0, len(pos), _GATHER_CHUNK):
            b = min(a + _GATHER_CHUNK, len(pos))
            lo, hi = int(offsets[a]), int(offsets[b])
            if hi == lo:
                continue
            # Byte k of the output comes from starts[i] + (k - offsets[i]) for its token i.
            shift = np.repeat(starts[a:b] - offsets[a:b], lengths[a:b])
            out[lo:hi] = src[shift + np.arange(lo, hi, dtype=np.int64)]
        return TokenColumn(out.tobytes(), offsets)

    def compact(self) -> TokenColumn:
        """The same tokens in a blob of exactly their bytes, offsets from 0."""
        if self.offsets[0] == 0 and self.offsets[-1] == len(self.blob):
            return self
        return TokenColumn.concat([self])

    def __iter__(self) -> Iterator[str]:
        blob = self.blob
        off = self.offsets.tolist()
        for a, b in zip(off, off[1:]):
            yield blob[a:b].decode("utf-8")

    def tolist(self) -> list[str]:
        return list(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TokenColumn):
            return NotImplemented
        if len(self) != len(other) or not np.array_equal(self.lengths, other.lengths):
            return False
        a, b = self.compact(), other.compact()
        return a.blob == b.blob

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<TokenColumn: {len(self)} tokens, {self.nbytes} bytes>"


def _same(pages: list, attr: str) -> int | None:
    values = {getattr(p, attr) for p in pages} - {None}
    if len(values) > 1:
        raise ValueError(f"pages disagree on {attr}: {sorted(values)} (pages of different "
                         f"snapshots?)")
    return values.pop() if values else None


def _earliest(pages: list) -> int | float | None:
    # Every token of the list expires when the earliest page's tokens do.
    times = [p.expiry_time for p in pages if p.expiry_time is not None]
    return min(times) if times else None


def _check_kind(pages: list, kind: str) -> None:
    for p in pages:
        if p.kind != kind:
            raise ValueError(f"expected {kind!r} pages, got a {p.kind!r} page")


class BlockList:
    """Every block of a snapshot (ListSnapshotBlocks): ``indexes`` (int64) and ``tokens``
    (a TokenColumn), plus the page scalars."""

    __slots__ = ("indexes", "tokens", "volume_size", "block_size", "expiry_time")

    def __init__(self, indexes: Any, tokens: TokenColumn, *, volume_size: int | None = None,
                 block_size: int | None = None,
                 expiry_time: int | float | None = None) -> None:
        self.indexes = _int64(indexes)
        if self.indexes.ndim != 1 or len(self.indexes) != len(tokens):
            raise ValueError(f"{len(self.indexes)} indexes for {len(tokens)} tokens")
        self.tokens = tokens
        self.volume_size = volume_size
        self.block_size = block_size
        self.expiry_time = expiry_time

    @classmethod
    def from_pages(cls, pages: Iterable[Any]) -> BlockList:
        """The pages (``Columns`` of kind "blocks") one after the other, in the order given;
        ``expiry_time`` is the earliest page's."""
        pages = list(pages)
        _check_kind(pages, "blocks")
        indexes = (np.concatenate([p.indexes for p in pages]) if pages
                   else np.empty(0, dtype=np.int64))
        tokens = TokenColumn.concat(TokenColumn(p.tokens, p.offsets) for p in pages)
        return cls(indexes, tokens, volume_size=_same(pages, "volume_size"),
                   block_size=_same(pages, "block_size"), expiry_time=_earliest(pages))

    def __len__(self) -> int:
        return len(self.indexes)

    @property
    def bytes_total(self) -> int:
        """Bytes of data the listed blocks hold (blocks x BlockSize)."""
        return len(self) * (self.block_size or BLOCK_SIZE)

    def select(self, where: Selector) -> BlockList:
        """The blocks at the given positions (a bool mask, integer positions or a slice)."""
        pos = _positions(where, len(self))
        return BlockList(self.indexes[pos], self.tokens.take(pos),
                         volume_size=self.volume_size, block_size=self.block_size,
                         expiry_time=self.expiry_time)

    def sorted(self) -> BlockList:
        """By ascending block index (pages listed in parallel arrive in any order)."""
        order = np.argsort(self.indexes, kind="stable")
        return self.select(order)

    def as_dicts(self) -> list[dict[str, Any]]:
        """The entries as boto3's ``list_snapshot_blocks`` gives them in ``Blocks``."""
        return [{"BlockIndex": i, "BlockToken": t}
                for i, t in zip(self.indexes.tolist(), self.tokens)]

    def __repr__(self) -> str:
        return f"<BlockList: {len(self)} blocks, {self.bytes_total} bytes>"


class ChangedBlockList:
    """Every entry of ListChangedBlocks between two snapshots: ``indexes``, the ``first`` and
    ``second`` TokenColumns (an absent token is an empty slice) and the bool arrays
    ``has_first`` / ``has_second``."""

    __slots__ = ("indexes", "first", "second", "has_first", "has_second", "volume_size",
                 "block_size", "expiry_time")

    def __init__(self, indexes: Any, first: TokenColumn, second: TokenColumn, has_first: Any,
                 has_second: Any, *, volume_size: int | None = None,
                 block_size: int | None = None,
                 expiry_time: int | float | None = None) -> None:
        self.indexes = _int64(indexes)
        self.first = first
        self.second = second
        self.has_first = np.asarray(has_first, dtype=bool)
        self.has_second = np.asarray(has_second, dtype=bool)
        n = len(self.indexes)
        if not (len(first) == len(second) == len(self.has_first) == len(self.has_second) == n):
            raise ValueError("indexes, first, second, has_first and has_second differ in "
                             "length")
        self.volume_size = volume_size
        self.block_size = block_size
        self.expiry_time = expiry_time

    @classmethod
    def from_pages(cls, pages: Iterable[Any]) -> ChangedBlockList:
        """The pages (``Columns`` of kind "changed") one after the other, in the order given;
        ``expiry_time`` is the earliest page's."""
        pages = list(pages)
        _check_kind(pages, "changed")

        def cat(attr: str, dtype: Any) -> np.ndarray:
            if not pages:
                return np.empty(0, dtype=dtype)
            return np.concatenate([getattr(p, attr) for p in pages])

        return cls(cat("indexes", np.int64),
                   TokenColumn.concat(TokenColumn(p.first, p.first_offsets) for p in pages),
                   TokenColumn.concat(TokenColumn(p.second, p.second_offsets) for p in pages),
                   cat("has_first", bool), cat("has_second", bool),
                   volume_size=_same(pages, "volume_size"),
                   block_size=_same(pages, "block_size"), expiry_time=_earliest(pages))

    def __len__(self) -> int:
        return len(self.indexes)

    # Which entries are which (the model's meaning: a FirstBlockToken is absent when the
    # first snapshot lacks the block, a SecondBlockToken when the second no longer has it).
    @property
    def added_mask(self) -> np.ndarray:
        """Blocks only the second snapshot has."""
        return self.has_second & ~self.has_first

    @property
    def changed_mask(self) -> np.ndarray:
        """Blocks both snapshots have, with different data."""
        return self.has_first & self.has_second

    @property
    def removed_mask(self) -> np.ndarray:
        """Blocks only the first snapshot has."""
        return self.has_first & ~self.has_second

    @property
    def added(self) -> ChangedBlockList:
        return self.select(self.added_mask)

    @property
    def changed(self) -> ChangedBlockList:
        return self.select(self.changed_mask)

    @property
    def removed(self) -> ChangedBlockList:
        return self.select(self.removed_mask)

    @property
    def n_added(self) -> int:
        return int(np.count_nonzero(self.added_mask))

    @property
    def n_changed(self) -> int:
        return int(np.count_nonzero(self.changed_mask))

    @property
    def n_removed(self) -> int:
        return int(np.count_nonzero(self.removed_mask))

    @property
    def _bs(self) -> int:
        return self.block_size or BLOCK_SIZE

    @property
    def bytes_total(self) -> int:
        return len(self) * self._bs

    @property
    def bytes_added(self) -> int:
        return self.n_added * self._bs

    @property
    def bytes_changed(self) -> int:
        return self.n_changed * self._bs

    @property
    def bytes_removed(self) -> int:
        return self.n_removed * self._bs

    def select(self, where: Selector) -> ChangedBlockList:
        """The entries at the given positions (a bool mask, integer positions or a slice)."""
        pos = _positions(where, len(self))
        return ChangedBlockList(self.indexes[pos], self.first.take(pos), self.second.take(pos),
                                self.has_first[pos], self.has_second[pos],
                                volume_size=self.volume_size, block_size=self.block_size,
                                expiry_time=self.expiry_time)

    def sorted(self) -> ChangedBlockList:
        """By ascending block index."""
        return self.select(np.argsort(self.indexes, kind="stable"))

    def as_dicts(self) -> list[dict[str, Any]]:
        """The entries as boto3's ``list_changed_blocks`` gives them in ``ChangedBlocks``."""
        out = []
        for i, f, s, hf, hs in zip(self.indexes.tolist(), self.first, self.second,
                                   self.has_first.tolist(), self.has_second.tolist()):
            e: dict[str, Any] = {"BlockIndex": i}
            if hf:
                e["FirstBlockToken"] = f
            if hs:
                e["SecondBlockToken"] = s
            out.append(e)
        return out

    def __repr__(self) -> str:
        return (f"<ChangedBlockList: {len(self)} entries ({self.n_added} added, "
                f"{self.n_changed} changed, {self.n_removed} removed)>")
