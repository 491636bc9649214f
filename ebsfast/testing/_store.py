"""Block storage for the local EBS server.

Blocks are immutable once stored and are shared by reference between a parent snapshot and its
children, so a child costs nothing until it is written. A block of zeros is never stored: it is
the ZERO reference. With a data directory, block bytes live in one sparse file (a slot per
stored block); otherwise in memory.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import os
import threading
from dataclasses import dataclass

BLOCK_SIZE = 524288
ZERO_BLOCK = bytes(BLOCK_SIZE)
ZERO_DIGEST = hashlib.sha256(ZERO_BLOCK).digest()


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
        self._mem: dict[int, bytes] = {}
        self._fd = -1
        self.path = None
        if data_dir is not None:
            os.makedirs(data_dir, exist_ok=True)
            self.path = os.path.join(data_dir, "blocks.bin")
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)

    def put(self, data: bytes, digest: bytes) -> Block:
        gen = next(self._gen)
        checksum = base64.b64encode(digest).decode()
        if digest == ZERO_DIGEST and data == ZERO_BLOCK:
            return Block(gen, -1, digest, checksum)
        with self._lock:
            slot = self._next_slot
            self._next_slot += 1
        if self._fd >= 0:
            os.pwrite(self._fd, data, slot * BLOCK_SIZE)
        else:
            self._mem[slot] = bytes(data)
        return Block(gen, slot, digest, checksum)

    def read(self, block: Block) -> bytes:
        if block.slot < 0:
            return ZERO_BLOCK
        if self._fd >= 0:
            return os.pread(self._fd, BLOCK_SIZE, block.slot * BLOCK_SIZE)
        return self._mem[block.slot]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._mem.clear()

    @property
    def stored_bytes(self) -> int:
        """Bytes of block data held (zero blocks count nothing)."""
        return self._next_slot * BLOCK_SIZE


def release(store: BlockStore, block: Block) -> None:
    """Free a block version nothing else refers to (an overwrite inside a pending snapshot)."""
    if block.slot >= 0 and store._fd < 0:
        store._mem.pop(block.slot, None)
