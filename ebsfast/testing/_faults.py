"""Fault knobs of the local EBS server, for reliability tests.

Every knob can be set at start (``EBSServer(faults=Faults(...))``) and changed while the server
runs (``server.set_faults(error_rate=0.1)``). Probabilities are per request, drawn from one
seeded generator so a failing test can be replayed.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field, fields

# The operations whose response has a block body: where body faults apply.
BODY_OPERATIONS = frozenset({"GetSnapshotBlock"})


@dataclass
class Faults:
    #: probability of a 500 InternalServerException
    error_rate: float = 0.0
    #: probability that a block body is cut by a TCP reset part-way through
    reset_rate: float = 0.0
    #: probability that a block body stops short (the connection closes cleanly)
    truncate_rate: float = 0.0
    #: probability of a stall of ``stall_s`` seconds before the response is sent
    stall_rate: float = 0.0
    stall_s: float = 5.0
    #: probability that a block body pauses half-way for ``stall_s`` seconds, the connection
    #: left open, and then goes on to its end
    body_stall_rate: float = 0.0
    #: probability that block bytes are corrupted under a correct x-amz-Checksum
    corrupt_rate: float = 0.0
    #: requests per second allowed per operation name (per snapshot in the service):
    #: beyond it, RequestThrottledException
    rate_limits: dict = field(default_factory=dict)
    #: requests per second for the whole account: beyond it, ThrottlingException
    account_rate_limit: float | None = None
    #: operation names the random faults apply to (None: all; body faults need a body)
    operations: frozenset | None = None
    #: lifetime of block tokens and page tokens (None: the service's 7 days and 60 minutes)
    block_token_ttl_s: int | None = None
    page_token_ttl_s: int | None = None
    seed: int | None = None

    def __post_init__(self):
        for name in ("error_rate", "reset_rate", "truncate_rate", "stall_rate", "corrupt_rate",
                     "body_stall_rate"):
            p = getattr(self, name)
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"Faults.{name} must be a probability in [0, 1], got {p!r}")
        if self.stall_s < 0:
            raise ValueError(f"Faults.stall_s must be >= 0, got {self.stall_s!r}")
        if self.operations is not None:
            self.operations = frozenset(self.operations)

    @property
    def request_faults(self) -> bool:
        """Whether any knob acts before a request is answered (limits, stalls, 500s); when
        none does, the server skips those checks (none of them would draw a random number)."""
        return bool(self.account_rate_limit is not None or self.rate_limits
                    or self.stall_rate > 0 or self.error_rate > 0)

    @property
    def body_faults(self) -> bool:
        """Whether any knob acts on a block body (corruption, reset, truncation, a pause)."""
        return (self.corrupt_rate > 0 or self.reset_rate > 0 or self.truncate_rate > 0
                or self.body_stall_rate > 0)


KNOBS = frozenset(f.name for f in fields(Faults))


class FaultState:
    """The live faults of a running server: a Faults value, a generator and rate windows."""

    def __init__(self, faults: Faults | None):
        self.faults = faults or Faults()
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self._windows: dict = {}  # key -> (second, count)

    def update(self, **changes) -> Faults:
        unknown = set(changes) - KNOBS
        if unknown:
            raise TypeError(f"unknown fault knob(s) {sorted(unknown)}; known: {sorted(KNOBS)}")
        current = {f.name: getattr(self.faults, f.name) for f in fields(Faults)}
        current.update(changes)
        new = Faults(**current)
        with self._lock:
            self.faults = new
            if "seed" in changes:
                self._rng = random.Random(new.seed)
        return new

    def roll(self, name: str, operation: str) -> bool:
        f = self.faults
        p = getattr(f, name)
        if p <= 0.0:
            return False
        if f.operations is not None and operation not in f.operations:
            return False
        with self._lock:
            return self._rng.random() < p

    def over_rate(self, key, limit: float | None) -> bool:
        """True when this request is beyond ``limit`` requests in the current second."""
        if limit is None:
            return False
        now = int(time.monotonic())
        with self._lock:
            second, count = self._windows.get(key, (now, 0))
            if second != now:
                second, count = now, 0
            count += 1
            self._windows[key] = (second, count)
        return count > limit

    def corrupt(self, body: bytes) -> bytes:
        with self._lock:
            pos = self._rng.randrange(len(body)) if body else 0
        damaged = bytearray(body)
        if damaged:
            damaged[pos] ^= 0xFF
        return bytes(damaged)
