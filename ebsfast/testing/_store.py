"""Block storage for the local EBS server.

Blocks are immutable once stored and are shared by reference between a parent snapshot and its
children, so a child costs nothing until it is written. A block of zeros is never stored: it is
the ZERO reference. Every other block has a slot, reused once the block is released:

- in memory (the default): anonymous memory mapped in chunks of 64 slots, backed by
  transparent huge pages where the system allows it. The server sends a block from there with
  ``vmsplice`` + ``splice`` (see ``_splice``) or one ``sendmsg``; huge pages make both cheaper.
- in a data directory: ``blocks.bin``, a slot per block after an empty first slot (which reads
  as zeros); the server sends a block from the file with ``sendfile``.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import mmap
import os
import threading
from dataclasses import dataclass

BLOCK_SIZE = 524288
ZERO_BLOCK = bytes(BLOCK_SIZE)
ZERO_DIGEST = hashlib.sha256(ZERO_BLOCK).digest()
# In memory, slots are allocated this many at a time, in one mapping.
CHUNK_SLOTS = 64
CHUNK_BYTES = CHUNK_SLOTS * BLOCK_SIZE


@dataclass(frozen=True)
class Block:
    """One stored block version. ``gen`` is unique per write, which is what "changed" means."""

    gen: int
    slot: int  # -1: all zeros, nothing stored
    digest: bytes
    checksum: str  # base64 of digest, as sent in x-amz-Checksum


class BlockStore:
    def __init__(self, data_dir: str | None = None):
        self._gen = itertools.count(1)
        self._lock = threading.Lock()
        self._next_slot = 0
        self._free: list[int] = []
        self._stored = 0
        self._chunks: list[mmap.mmap] = []  # in memory: CHUNK_SLOTS slots each
        self._views: list[memoryview] = []
        self._addresses: list[int] = []  # with _splice: where each chunk starts
        self._exports: list[object] = []
        self._fd = -1
        self.path = None
        if data_dir is not None:
            os.makedirs(data_dir, exist_ok=True)
            self.path = os.path.join(data_dir, "blocks.bin")
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)

    @property
    def in_memory(self) -> bool:
        return self.path is None

    @property
    def fileno(self) -> int:
        """The file the blocks live in (for ``os.sendfile``); -1 when they are in memory."""
        return self._fd

    @staticmethod
    def offset(block: Block) -> int:
        """Where ``block``'s bytes start in the data-directory file; a zero block reads from
        the empty first slot."""
        return 0 if block.slot < 0 else (block.slot + 1) * BLOCK_SIZE

    def put(self, data: bytes, digest: bytes) -> Block:
        gen = next(self._gen)
        checksum = base64.b64encode(digest).decode()
        if digest == ZERO_DIGEST and data == ZERO_BLOCK:
            return Block(gen, -1, digest, checksum)
        with self._lock:
            if self._free:
                slot = self._free.pop()
            else:
                slot = self._next_slot
                self._next_slot += 1
                if self.path is None and slot >= len(self._chunks) * CHUNK_SLOTS:
                    self._add_chunk()
            self._stored += 1
        block = Block(gen, slot, digest, checksum)
        if self.path is None:
            start = (slot % CHUNK_SLOTS) * BLOCK_SIZE
            self._views[slot // CHUNK_SLOTS][start:start + BLOCK_SIZE] = data
            return block
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], self.offset(block) + done)
        return block

    def _add_chunk(self) -> None:
        from . import _splice

        flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
        chunk = mmap.mmap(-1, CHUNK_BYTES, flags=flags) if flags else mmap.mmap(-1, CHUNK_BYTES)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                chunk.madvise(mmap.MADV_HUGEPAGE)
            except OSError:
                pass
        self._chunks.append(chunk)
        self._views.append(memoryview(chunk))
        if _splice.AVAILABLE:
            address, export = _splice.buffer_address(chunk)
            self._addresses.append(address)
            self._exports.append(export)

    def view(self, block: Block) -> memoryview | bytes:
        """``block``'s bytes where they sit in memory, without a copy (in a data directory: a
        copy, read from the file)."""
        if block.slot < 0:
            return ZERO_BLOCK
        if self.path is not None:
            return self.read(block)
        start = (block.slot % CHUNK_SLOTS) * BLOCK_SIZE
        return self._views[block.slot // CHUNK_SLOTS][start:start + BLOCK_SIZE]

    def address(self, block: Block) -> int | None:
        """Where ``block``'s bytes sit in this process's memory, for ``_splice``; None for a
        zero block, in a data directory, or without ``_splice``."""
        if block.slot < 0 or not self._addresses:
            return None
        return self._addresses[block.slot // CHUNK_SLOTS] + (block.slot % CHUNK_SLOTS) * BLOCK_SIZE

    def read(self, block: Block) -> bytes:
        if block.slot < 0:
            return ZERO_BLOCK
        if self.path is None:
            return bytes(self.view(block))
        return os.pread(self._fd, BLOCK_SIZE, self.offset(block))

    def release(self, block: Block) -> None:
        """Free a block version nothing else refers to; its slot is reused by the next put."""
        if block.slot >= 0:
            with self._lock:
                self._free.append(block.slot)
                self._stored -= 1

    def close(self) -> None:
        """Give back the memory (or close the file). Pages still being sent stay valid: the
        kernel holds its own reference to them."""
        views, self._views = self._views, []
        chunks, self._chunks = self._chunks, []
        self._addresses, self._exports = [], []
        for v in views:
            try:
                v.release()
            except BufferError:
                pass
        for c in chunks:
            try:
                c.close()
            except BufferError:  # a view still in use: the mapping goes when it does
                pass
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @property
    def stored_bytes(self) -> int:
        """Bytes of block data held (zero blocks count nothing)."""
        return self._stored * BLOCK_SIZE
