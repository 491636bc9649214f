"""Retries: botocore's ``legacy``, ``standard`` and ``adaptive`` modes, as a small policy.

One :class:`RetryPolicy` per client, shared by all its threads. Each API call asks it for a
:class:`RetryCall`, which carries that call's attempt count and quota charge::

    policy = make_retry_policy(config)
    call = policy.start("GetSnapshotBlock")
    while True:
        call.before_attempt()                 # adaptive mode may sleep here
        ... send, read, parse ...
        if it worked:
            call.after_success()
            break
        delay = call.decide(status=400, error_code="ThrottlingException")
        if delay is None:
            raise the error (with call.metadata() in its ResponseMetadata)
        call.sleep(delay)
    response["ResponseMetadata"].update(call.metadata())   # RetryAttempts, ...

The pieces follow botocore 1.43 (``retryhandler.py`` + ``data/_retry.json`` for legacy,
``retries/standard.py``, ``quota.py``, ``adaptive.py``, ``bucket.py``, ``throttling.py``),
written afresh here. Three EBS-specific cases are retried in every mode because the EBS
documentation calls them transient and boto3 users retry them by hand: a GetSnapshotBlock whose
bytes do not match ``x-amz-Checksum``, a PutSnapshotBlock ValidationException "Failed to read
block data", and the ``InternalServerException`` code itself.
"""
from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from . import exceptions as _exc
from .config import as_config

logger = logging.getLogger(__name__)

MODES = ("legacy", "standard", "adaptive")

# -- classification -------------------------------------------------------------------------
#: Every code botocore's standard mode treats as throttling (retries/standard.py).
THROTTLING_ERROR_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
    "LimitExceededException", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
    "EC2ThrottledException",
})
TRANSIENT_ERROR_CODES = frozenset({"RequestTimeout", "RequestTimeoutException",
                                   "PriorRequestNotComplete"})
TRANSIENT_STATUS_CODES = frozenset({500, 502, 503, 504})

# Legacy mode is _retry.json's "__default__" section (the file has no "ebs" section): these
# statuses alone, and these codes only together with HTTP 400.
LEGACY_STATUS_CODES = frozenset({429, 500, 502, 503, 504, 509})
LEGACY_THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "ThrottledException",
                                     "RequestThrottledException",
                                     "ProvisionedThroughputExceededException"})
# _retry.json's GENERAL_CONNECTION_ERROR, plus ResponseStreamingError: botocore reads
# non-streaming bodies inside send(), where a broken body is a ConnectionClosedError that legacy
# mode retries; ebsfast reads block bodies after send() and must not lose that retry.
_LEGACY_EXCEPTIONS = (_exc.ConnectionError, _exc.ConnectionClosedError, _exc.ReadTimeoutError,
                      _exc.EndpointConnectionError, _exc.ResponseStreamingError)
_STANDARD_EXCEPTIONS = (_exc.ConnectionError, _exc.HTTPClientError)
_TIMEOUT_EXCEPTIONS = (_exc.ConnectTimeoutError, _exc.ReadTimeoutError)

_EBS_TRANSIENT_CODES = frozenset({"InternalServerException"})
# The service's wording; compared case-insensitively as a prefix so a trailing period or
# detail after it does not turn a transient failure into a permanent one.
_BLOCK_DATA_MESSAGE = "failed to read block data"


def _ebs_retryable(operation: str | None, error_code: str | None, error_message: str | None,
                   checksum_mismatch: bool) -> bool:
    if checksum_mismatch or error_code in _EBS_TRANSIENT_CODES:
        return True
    return (operation == "PutSnapshotBlock" and error_code == "ValidationException"
            and isinstance(error_message, str)
            and error_message.strip().lower().startswith(_BLOCK_DATA_MESSAGE))


def is_throttling(error_code: str | None) -> bool:
    """True for an error code that means "slow down" (drives adaptive mode and backoff)."""
    return error_code in THROTTLING_ERROR_CODES


def is_retryable(mode: str, *, operation: str | None = None, status: int | None = None,
                 error_code: str | None = None, error_message: str | None = None,
                 exception: BaseException | None = None,
                 checksum_mismatch: bool = False) -> bool:
    """Whether ``mode`` retries this outcome, ignoring attempt limits and the quota.

    ``status``/``error_code``/``error_message`` describe an HTTP error response;
    ``exception`` an attempt that got no whole response (an ebsfast.exceptions error);
    ``checksum_mismatch`` a 2xx GetSnapshotBlock whose body failed its checksum.
    """
    if _ebs_retryable(operation, error_code, error_message, checksum_mismatch):
        return True
    if mode == "legacy":
        if exception is not None:
            return isinstance(exception, _LEGACY_EXCEPTIONS)
        if status in LEGACY_STATUS_CODES:
            return True
        # botocore pairs each code with HTTP 400; a caller that has no status still gets the code
        return status in (400, None) and error_code in LEGACY_THROTTLING_CODES
    if error_code in TRANSIENT_ERROR_CODES or error_code in THROTTLING_ERROR_CODES:
        return True
    if status in TRANSIENT_STATUS_CODES:
        return True
    return exception is not None and isinstance(exception, _STANDARD_EXCEPTIONS)


# -- retry quota (standard and adaptive) ------------------------------------------------------
class RetryQuota:
    """A shared budget of retries: each retry spends capacity, each success refills some, and an
    empty quota turns retries off until successes return, so a failing service is not hit with
    ``max_attempts`` times its normal load."""

    INITIAL_CAPACITY = 500

    def __init__(self, capacity: int = INITIAL_CAPACITY):
        self.max_capacity = capacity
        self._available = capacity
        self._lock = threading.Lock()

    @property
    def available(self) -> int:
        return self._available

    def acquire(self, amount: int) -> bool:
        with self._lock:
            if amount > self._available:
                return False
            self._available -= amount
            return True

    def release(self, amount: int) -> None:
        # Most calls succeed first time with the quota full: skip the lock then.
        if self._available >= self.max_capacity:
            return
        with self._lock:
            self._available = min(self.max_capacity, self._available + amount)


# -- adaptive mode: client-side rate limiting ------------------------------------------------
class ClientRateLimiter:
    """botocore's adaptive-mode limiter: a token bucket whose fill rate follows CUBIC.

    Until the first throttling response it only measures; from then on every attempt takes a
    token. A throttle cuts the rate to ``BETA`` times the rate being sent; later responses grow
    it along the CUBIC curve back to (and past) the rate that was throttled, but never beyond
    twice the measured send rate. (AWS SDK reference guide, "Retry behavior", adaptive mode;
    CUBIC is RFC 8312.)

    Threads wait by reservation: a token may be taken on credit (capacity below zero) and the
    taker sleeps until the credit would have refilled, outside the lock. That spaces waiting
    threads exactly ``1/rate`` apart instead of waking them all to race for each token.
    """

    MIN_FILL_RATE = 0.5
    SCALE = 0.4   # CUBIC C
    BETA = 0.7    # multiplicative decrease
    MAX_RATE_ADJUST_SCALE = 2.0
    SMOOTHING = 0.8
    BUCKET_S = 0.5  # the measured rate is updated once per half second

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        now = clock()
        self.enabled = False
        # token bucket
        self._fill_rate = 1.0
        self._max_capacity = 1.0
        self._capacity = 0.0
        self._last_refill: float | None = None
        # CUBIC state
        self._w_max = 0.0
        self._k = 0.0
        self._last_fail = now
        # measured send rate
        self.measured_rate = 0.0
        self._count = 0
        self._last_bucket: float = math.floor(now)

    @property
    def fill_rate(self) -> float:
        """Tokens (requests) per second currently allowed."""
        return self._fill_rate

    @property
    def capacity(self) -> float:
        return self._capacity

    def acquire(self) -> float:
        """Take one token, sleeping if none is due; returns the seconds slept."""
        if not self.enabled:
            return 0.0
        with self._lock:
            self._refill()
            self._capacity -= 1.0
            wait = -self._capacity / self._fill_rate if self._capacity < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait

    def on_response(self, throttled: bool) -> None:
        """Feed every attempt's outcome (success, error or exception) to the controller."""
        with self._lock:
            now = self._clock()
            measured = self._record_send(now)
            if throttled:
                rate = measured if not self.enabled else min(measured, self._fill_rate)
                self._w_max = rate
                self._k = (rate * (1 - self.BETA) / self.SCALE) ** (1 / 3)
                self._last_fail = now
                new_rate = rate * self.BETA
                self.enabled = True
            else:
                new_rate = self.SCALE * (now - self._last_fail - self._k) ** 3 + self._w_max
            self._set_rate(min(new_rate, self.MAX_RATE_ADJUST_SCALE * measured))

    def _record_send(self, now: float) -> float:
        bucket = math.floor(now / self.BUCKET_S) * self.BUCKET_S
        self._count += 1
        if bucket > self._last_bucket:
            current = self._count / (bucket - self._last_bucket)
            self.measured_rate = (current * self.SMOOTHING
                                  + self.measured_rate * (1 - self.SMOOTHING))
            self._count = 0
            self._last_bucket = bucket
        return self.measured_rate

    def _refill(self) -> None:
        now = self._clock()
        if self._last_refill is not None:
            self._capacity = min(self._max_capacity,
                                 self._capacity + (now - self._last_refill) * self._fill_rate)
        self._last_refill = now

    def _set_rate(self, rate: float) -> None:
        # Tokens earned at the old rate are banked before the rate changes.
        self._refill()
        self._fill_rate = max(rate, self.MIN_FILL_RATE)
        self._max_capacity = rate if rate >= 1 else 1.0
        self._capacity = min(self._capacity, self._max_capacity)


# -- the policy ---------------------------------------------------------------------------------
class RetryPolicy:
    """The retry behaviour of one client: mode, attempt limit, quota and rate limiter.

    Thread-safe; build it with :func:`make_retry_policy`.
    """

    MAX_BACKOFF_S = 20
    # standard/adaptive quota costs (botocore RetryQuotaChecker)
    RETRY_COST = 5
    TIMEOUT_RETRY_COST = 10
    NO_RETRY_INCREMENT = 1
    # botocore's opt-in "new retries" (AWS_NEW_RETRIES_2026=true) changes these
    NEW_RETRY_COST = 14
    NEW_THROTTLING_RETRY_COST = 5
    NEW_NON_THROTTLING_SCALE = 0.05
    RETRY_AFTER_MAX_EXTRA_S = 5

    def __init__(self, mode: str, max_attempts: int, *, new_retries: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] = random.random):
        if mode not in MODES:
            raise ValueError(f"retry mode must be one of {MODES}, got {mode!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts (total) must be >= 1, got {max_attempts!r}")
        self.mode = mode
        self.max_attempts = max_attempts
        self.new_retries = new_retries
        self._sleep = sleep
        self._rng = rng
        self.quota = RetryQuota() if mode != "legacy" else None
        self.rate_limiter = (ClientRateLimiter(clock=clock, sleep=sleep)
                             if mode == "adaptive" else None)

    def __repr__(self) -> str:
        return f"<RetryPolicy mode={self.mode} max_attempts={self.max_attempts}>"

    def start(self, operation: str) -> RetryCall:
        """The retry state of one API call (use it from one thread)."""
        return RetryCall(self, operation)

    def backoff_s(self, attempt: int, *, throttled: bool = False,
                  retry_after_ms: str | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if self.mode == "legacy":
            # _retry.json: base "rand", growth_factor 2, and no cap
            return self._rng() * 2 ** (attempt - 1)
        scale = 1.0
        if self.new_retries and not throttled:
            scale = self.NEW_NON_THROTTLING_SCALE
        delay = self._rng() * min(scale * 2 ** (attempt - 1), self.MAX_BACKOFF_S)
        if self.new_retries and retry_after_ms is not None:
            try:
                hint = int(retry_after_ms) / 1000.0
            except (TypeError, ValueError, OverflowError):
                hint = -1.0
            if hint >= 0:
                delay = max(delay, min(hint, delay + self.RETRY_AFTER_MAX_EXTRA_S))
        return delay

    def _quota_cost(self, exception: BaseException | None, throttled: bool) -> int:
        if self.new_retries:
            return self.NEW_THROTTLING_RETRY_COST if throttled else self.NEW_RETRY_COST
        if isinstance(exception, _TIMEOUT_EXCEPTIONS):
            return self.TIMEOUT_RETRY_COST
        return self.RETRY_COST


class RetryCall:
    """One API call's attempts: call :meth:`before_attempt` before each send, then either
    :meth:`after_success` or :meth:`decide`."""

    __slots__ = ("_charged", "_policy", "attempt", "max_attempts_reached", "operation",
                 "retry_quota_reached")

    def __init__(self, policy: RetryPolicy, operation: str):
        self._policy = policy
        self.operation = operation
        #: 1-based number of the attempt in flight (0 before the first)
        self.attempt = 0
        self._charged: int | None = None
        self.max_attempts_reached = False
        self.retry_quota_reached = False

    @property
    def retry_attempts(self) -> int:
        """Retries made so far: boto3's ``ResponseMetadata.RetryAttempts``."""
        return max(self.attempt - 1, 0)

    def before_attempt(self) -> None:
        self.attempt += 1
        limiter = self._policy.rate_limiter
        if limiter is not None:
            limiter.acquire()

    def decide(self, *, status: int | None = None, error_code: str | None = None,
               error_message: str | None = None, exception: BaseException | None = None,
               checksum_mismatch: bool = False,
               headers: Mapping[str, str] | None = None) -> float | None:
        """After a failed attempt: seconds to wait before the next one, or None to give up.

        ``headers`` (the error response's) are read only for ``x-amz-retry-after`` in
        botocore's opt-in new-retries behaviour.
        """
        policy = self._policy
        throttled = is_throttling(error_code)
        if policy.rate_limiter is not None:
            policy.rate_limiter.on_response(throttled)
        at_limit = self.attempt >= policy.max_attempts
        if policy.mode != "legacy" and at_limit:
            # standard mode checks the limit first, so it flags even a non-retryable outcome
            self.max_attempts_reached = True
        if not is_retryable(policy.mode, operation=self.operation, status=status,
                            error_code=error_code, error_message=error_message,
                            exception=exception, checksum_mismatch=checksum_mismatch):
            return None
        if at_limit:
            self.max_attempts_reached = True
            logger.debug("%s: not retrying, %d attempts made", self.operation, self.attempt)
            return None
        if policy.quota is not None:
            cost = policy._quota_cost(exception, throttled)
            if not policy.quota.acquire(cost):
                self.retry_quota_reached = True
                logger.debug("%s: not retrying, retry quota exhausted", self.operation)
                return None
            self._charged = cost
        retry_after = None
        if headers is not None and policy.new_retries:
            retry_after = headers.get("x-amz-retry-after")
        delay = policy.backoff_s(self.attempt, throttled=throttled, retry_after_ms=retry_after)
        logger.debug("%s: attempt %d failed (status=%s code=%s exception=%s), retrying in "
                     "%.3f s", self.operation, self.attempt, status, error_code,
                     type(exception).__name__ if exception is not None else None, delay)
        return delay

    def after_success(self) -> None:
        """After a 2xx attempt whose body was good: refunds quota, feeds the limiter."""
        policy = self._policy
        if policy.rate_limiter is not None:
            policy.rate_limiter.on_response(False)
        if policy.mode != "legacy" and self.attempt >= policy.max_attempts:
            self.max_attempts_reached = True
        if policy.quota is not None:
            # A call that retried gets its last charge back; any other success earns a little,
            # so the quota refills while the service is healthy.
            policy.quota.release(self._charged if self._charged is not None
                                 else policy.NO_RETRY_INCREMENT)

    def sleep(self, delay_s: float) -> None:
        """Wait ``delay_s`` with the policy's sleep function."""
        if delay_s > 0:
            self._policy._sleep(delay_s)

    def metadata(self) -> dict[str, Any]:
        """The retry keys of boto3's ``ResponseMetadata`` for this call."""
        # In boto3's order: the flags, set as retries are judged, then the count, set when
        # the call ends.
        meta: dict[str, Any] = {}
        if self.max_attempts_reached:
            meta["MaxAttemptsReached"] = True
        if self.retry_quota_reached:
            meta["RetryQuotaReached"] = True
        meta["RetryAttempts"] = self.retry_attempts
        return meta


# -- configuration ------------------------------------------------------------------------------
DEFAULT_MAX_ATTEMPTS = {"legacy": 5, "standard": 3, "adaptive": 3}


def _new_retries_enabled(environ: Mapping[str, str]) -> bool:
    # botocore 1.43's opt-in switch; off by default, and then the default mode is legacy
    value = environ.get("AWS_NEW_RETRIES_2026")
    return value is not None and value.lower() == "true"


def make_retry_policy(config: Any = None, *, profile_config: Mapping[str, Any] | None = None,
                      environ: Mapping[str, str] | None = None,
                      clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep,
                      rng: Callable[[], float] = random.random) -> RetryPolicy:
    """The retry policy botocore 1.43 would build from the same settings.

    Mode: ``Config(retries={"mode"})``, else ``AWS_RETRY_MODE``, else the profile's
    ``retry_mode``, else ``legacy``. Total attempts: ``retries["total_max_attempts"]``, else
    ``retries["max_attempts"] + 1`` (it counts retries), else ``AWS_MAX_ATTEMPTS``, else the
    profile's ``max_attempts`` (both total), else 5 for legacy and 3 otherwise.
    ``profile_config`` is the active profile's settings from the shared config file.
    """
    cfg = as_config(config)
    env = os.environ if environ is None else environ
    profile = profile_config or {}
    retries = cfg.retries or {}
    new_retries = _new_retries_enabled(env)

    mode = retries.get("mode") or env.get("AWS_RETRY_MODE") or profile.get("retry_mode")
    if not mode:
        mode = "standard" if new_retries else "legacy"
    if mode not in MODES:
        raise _exc.InvalidRetryModeError(provided_retry_mode=mode, valid_modes=MODES)

    if retries.get("total_max_attempts") is not None:
        total = retries["total_max_attempts"]
    elif retries.get("max_attempts") is not None:
        total = retries["max_attempts"] + 1
    else:
        raw = env.get("AWS_MAX_ATTEMPTS")
        if raw is None:
            raw = profile.get("max_attempts")
        total = int(raw) if raw is not None else DEFAULT_MAX_ATTEMPTS[mode]
    if total < 1:
        raise _exc.InvalidMaxRetryAttemptsError(provided_max_attempts=total, min_value=1)
    return RetryPolicy(mode, total, new_retries=new_retries, clock=clock, sleep=sleep, rng=rng)


__all__ = [
    "DEFAULT_MAX_ATTEMPTS", "MODES", "THROTTLING_ERROR_CODES", "TRANSIENT_ERROR_CODES",
    "TRANSIENT_STATUS_CODES", "ClientRateLimiter", "RetryCall", "RetryPolicy", "RetryQuota",
    "is_retryable", "is_throttling", "make_retry_policy",
]
