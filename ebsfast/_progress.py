"""A one-line progress display for the command line: blocks, rate, throughput and ETA.

``Progress`` is the ``progress(done_blocks, total_blocks, done_bytes)`` callable the snapshot
tools take. It is called from worker threads, many times a second; it redraws at most every
``interval_s`` and only when its stream is a terminal, so piping ``ebsfast`` into a file or a
script gives clean output with no carriage returns in it.
"""
from __future__ import annotations

import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "format_bytes", "format_duration"]

MB = 1_000_000  # throughput in decimal MB/s, as the benchmarks report it

# Rates are measured over the last few seconds rather than since the start, so a stall (or a
# burst after the listing finished) shows up in the display instead of being averaged away.
_WINDOW_S = 3.0


def format_duration(seconds: float) -> str:
    """``0:07``, ``12:34``, ``3:02:10``."""
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_bytes(n: float) -> str:
    """Decimal units, three significant figures: ``512 B``, ``3.15 MB``, ``268 GB``."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            if unit == "B":
                return f"{int(n)} B"
            return f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class Progress:
    """``progress(done_blocks, total_blocks, done_bytes)``, drawn on one line of ``stream``.

    ``enabled=None`` draws only when ``stream.isatty()``. Use it as a context manager, or call
    ``close(ok=...)``: on success the line is left showing the totals; on an error it is wiped,
    so the error message that follows starts on a clean line.
    """

    def __init__(self, label: str = "", *, stream: TextIO | None = None,
                 enabled: bool | None = None, interval_s: float = 0.1,
                 clock: Callable[[], float] = time.monotonic, width: int | None = None):
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.interval_s = interval_s
        self._clock = clock
        self._width = width
        self._lock = threading.Lock()
        self._start = clock()
        self._last_draw: float | None = None
        self._drawn_len = 0
        self._samples: deque[tuple[float, int, int]] = deque()
        self.done_blocks = 0
        self.total_blocks = 0
        self.done_bytes = 0
        self.closed = False

    # -- the callable the snapshot tools call ----------------------------------------------
    def __call__(self, done_blocks: int, total_blocks: int | None, done_bytes: int) -> None:
        with self._lock:
            if self.closed:
                return
            # Worker threads report from their own counters snapshot; a late report must not
            # make the display go backwards.
            self.done_blocks = max(self.done_blocks, int(done_blocks))
            self.done_bytes = max(self.done_bytes, int(done_bytes))
            if total_blocks is not None:
                self.total_blocks = int(total_blocks)
            if not self.enabled:
                return
            now = self._clock()
            self._samples.append((now, self.done_blocks, self.done_bytes))
            while len(self._samples) > 2 and now - self._samples[0][0] > _WINDOW_S:
                self._samples.popleft()
            if self._last_draw is not None and now - self._last_draw < self.interval_s:
                return
            self._last_draw = now
            self._draw(self._line(now))

    # -- rendering -------------------------------------------------------------------------
    def _rates(self, now: float) -> tuple[float, float] | None:
        """(blocks/s, bytes/s) over the recent window; None before time has passed."""
        if len(self._samples) >= 2:
            t0, b0, n0 = self._samples[0]
        else:
            t0, b0, n0 = self._start, 0, 0
        dt = now - t0
        if dt <= 0:
            return None
        return (self.done_blocks - b0) / dt, (self.done_bytes - n0) / dt

    def _line(self, now: float, *, final: bool = False) -> str:
        done, total = self.done_blocks, self.total_blocks
        head = [self.label] if self.label else []
        if total:
            frac = min(1.0, done / total)
            head.append(f"{frac * 100:3.0f}%")
            parts = [f"{done:,}/{total:,} blocks"]
        else:
            frac = None
            parts = [f"{done:,} blocks"]
        if final:
            elapsed = now - self._start
            parts.append(f"in {elapsed:.1f} s")
            if elapsed > 0:
                parts.append(f"{done / elapsed:,.0f} blocks/s")
                parts.append(f"{self.done_bytes / elapsed / MB:,.1f} MB/s")
        else:
            rates = self._rates(now)
            blocks_s = rates[0] if rates else None
            if rates is None:
                parts += ["-- blocks/s", "-- MB/s"]
            else:
                blocks_s, bytes_s = rates
                parts.append(f"{blocks_s:,.0f} blocks/s")
                parts.append(f"{bytes_s / MB:,.1f} MB/s")
            if total and done < total:
                eta = (total - done) / blocks_s if blocks_s else None
                parts.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA --")
        line = "  ".join(head + parts)
        if frac is not None:
            # The bar gets whatever room the numbers leave, up to 20 cells; the numbers
            # matter more on a narrow terminal.
            bar_w = min(20, self._columns() - 1 - len(line) - 4)
            if bar_w >= 5:
                filled = int(frac * bar_w)
                bar = f"[{'#' * filled}{'.' * (bar_w - filled)}]"
                line = "  ".join(head[:-1] + [bar] + head[-1:] + parts)
        return line

    def _columns(self) -> int:
        if self._width is not None:
            return self._width
        return shutil.get_terminal_size((80, 24)).columns

    def _draw(self, line: str) -> None:
        # A line as wide as the terminal would wrap and break the carriage-return redraw.
        line = line[:max(10, self._columns() - 1)]
        pad = " " * max(0, self._drawn_len - len(line))
        try:
            self.stream.write("\r" + line + pad)
            self.stream.flush()
        except (OSError, ValueError):
            # A closed or broken stderr must not stop a transfer.
            self.enabled = False
            return
        self._drawn_len = len(line)

    # -- ending ----------------------------------------------------------------------------
    def close(self, *, ok: bool = True) -> None:
        """Leave the totals on the line (``ok``) or wipe it; idempotent."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if not self.enabled or self._last_draw is None:
                return
            try:
                if ok:
                    self._draw(self._line(self._clock(), final=True))
                    self.stream.write("\n")
                else:
                    self.stream.write("\r" + " " * self._drawn_len + "\r")
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)
