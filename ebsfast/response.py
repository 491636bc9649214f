"""StreamingBody: what ``get_snapshot_block`` returns as ``BlockData``.

The same interface as botocore's StreamingBody (``read(amt)``, ``readinto``, ``readline``,
``readlines``, ``iter_chunks``, ``iter_lines``, iteration, ``close``, context manager, ``tell``). The client hands it a block
it has already received whole and checked against ``x-amz-Checksum`` (a mismatch is retried
before the call returns), so every byte read from it is verified data.
"""
from __future__ import annotations

import io
from typing import Iterator

_CHUNK = 1024


class StreamingBody(io.RawIOBase):
    """A readable, verified block body."""

    def __init__(self, data, content_length: int | None = None):
        super().__init__()
        self._view = memoryview(data).cast("B")
        self._pos = 0
        self._lines_in = None  # what readline() searches for line ends, made on first use
        self._content_length = len(self._view) if content_length is None else content_length

    # -- io.RawIOBase ---------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self._check_open()
        dest = memoryview(buffer).cast("B")
        n = min(len(dest), len(self._view) - self._pos)
        dest[:n] = self._view[self._pos:self._pos + n]
        self._pos += n
        return n

    def read(self, amt: int | None = None) -> bytes:
        self._check_open()
        if amt is None or amt < 0:
            end = len(self._view)
        else:
            end = min(len(self._view), self._pos + amt)
        out = self._view[self._pos:end].tobytes()
        self._pos = end
        return out

    def readall(self) -> bytes:
        return self.read()

    def tell(self) -> int:
        return self._pos

    def readline(self, size: int | None = -1) -> bytes:
        """The next line, with its b"\\n" (at most ``size`` bytes)."""
        self._check_open()
        end = len(self._view)
        if size is not None and size >= 0:
            end = min(end, self._pos + size)
        found = self._line_source().find(b"\n", self._pos, end)
        stop = end if found < 0 else found + 1
        out = self._view[self._pos:stop].tobytes()
        self._pos = stop
        return out

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """The remaining lines, each with its b"\\n" (as botocore's, which reads them from
        the stream: not the 1 KiB chunks iteration gives); stops once ``hint`` bytes are in."""
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def _line_source(self):
        source = self._lines_in
        if source is None:
            obj = self._view.obj
            source = (obj if isinstance(obj, (bytes, bytearray)) and len(obj) == len(self._view)
                      else self._view.tobytes())
            self._lines_in = source
        return source

    def close(self) -> None:
        if not self.closed:
            self._view.release()
            self._lines_in = None
        super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed StreamingBody")

    # -- botocore's StreamingBody extras --------------------------------------------------
    def iter_chunks(self, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        while True:
            chunk = self.read(chunk_size)
            if not chunk:
                return
            yield chunk

    def iter_lines(self, chunk_size: int = _CHUNK, keepends: bool = False) -> Iterator[bytes]:
        pending = b""
        for chunk in self.iter_chunks(chunk_size):
            lines = (pending + chunk).splitlines(True)
            for line in lines[:-1]:
                yield line if keepends else line.splitlines()[0]
            pending = lines[-1]
        if pending:
            yield pending if keepends else pending.splitlines()[0]

    def __iter__(self) -> Iterator[bytes]:  # botocore iterates in 1 KiB chunks, not lines
        return self.iter_chunks(_CHUNK)

    def __next__(self) -> bytes:
        chunk = self.read(_CHUNK)
        if not chunk:
            raise StopIteration
        return chunk

    def set_socket_timeout(self, timeout: float) -> None:
        """Accepted for botocore compatibility; the body is already in memory."""

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"at {self._pos} of {self._content_length} bytes"
        return f"<ebsfast StreamingBody {state}>"
