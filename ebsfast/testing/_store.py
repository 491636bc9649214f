"""Block storage for the local EBS server.

Blocks are immutable once stored and are shared by reference between a parent snapshot and its
children, so a child costs nothing until it is written. A block of zeros is never stored: it is
the ZERO reference. Block bytes live in one file, a slot per stored block: an anonymous
in-memory file (memfd) by default, or ``blocks.bin`` in a data directory. A file, rather than
Python bytes, lets the server hand a block to the socket with ``sendfile``: no copy through
user space, which halves the server's CPU per GetSnapshotBlock. The file's first slot is never
written, so it reads as a block of zeros at no cost.
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import os
import tempfile
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
        self._free: list[int] = []
        self._stored = 0
        self.path = None
        if data_dir is not None:
            os.makedirs(data_dir, exist_ok=True)
            self.path = os.path.join(data_dir, "blocks.bin")
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        elif hasattr(os, "memfd_create"):
            self._fd = os.memfd_create("ebsfast-testing-blocks", os.MFD_CLOEXEC)
        else:  # no memfd here: an unlinked temporary file serves the same purpose
            f = tempfile.TemporaryFile()
            self._fd = os.dup(f.fileno())
            f.close()

    @property
    def fileno(self) -> int:
        """The file the blocks live in (for ``os.sendfile``)."""
        return self._fd

    @staticmethod
    def offset(block: Block) -> int:
        """Where ``block``'s bytes start in the file; a zero block reads from the empty slot."""
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
            self._stored += 1
        block = Block(gen, slot, digest, checksum)
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], self.offset(block) + done)
        return block

    def read(self, block: Block) -> bytes:
        if block.slot < 0:
            return ZERO_BLOCK
        return os.pread(self._fd, BLOCK_SIZE, self.offset(block))

    def release(self, block: Block) -> None:
        """Free a block version nothing else refers to; its slot is reused by the next put."""
        if block.slot >= 0:
            with self._lock:
                self._free.append(block.slot)
                self._stored -= 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @property
    def stored_bytes(self) -> int:
        """Bytes of block data held (zero blocks count nothing)."""
        return self._stored * BLOCK_SIZE

