"""ebsfast.retries: mode and attempt resolution, backoff schedules, the retry quota, the adaptive
rate limiter, error classification, and the same decisions from botocore on the same inputs.

A fake clock/sleep/rng makes every schedule exact; nothing here waits on real time except the
one multi-thread limiter test.
"""
from __future__ import annotations

import threading
import time
import types

import pytest

from ebsfast import exceptions as exc
from ebsfast.config import Config
from ebsfast.retries import (
    ClientRateLimiter,
    RetryPolicy,
    RetryQuota,
    is_retryable,
    is_throttling,
    make_retry_policy,
)

URL = "https://ebs.us-east-1.amazonaws.com/snapshots/snap-1/blocks/0"


class FakeTime:
    """A clock that only moves when something sleeps (or a test advances it)."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s

    def advance(self, s: float) -> None:
        self.now += s


def policy(mode="standard", *, config=None, environ=None, profile=None, rng=lambda: 1.0,
           fake=None):
    fake = fake or FakeTime()
    cfg = config if config is not None else Config(retries={"mode": mode})
    return make_retry_policy(cfg, environ=environ or {}, profile_config=profile,
                             clock=fake.clock, sleep=fake.sleep, rng=rng)


# ------------------------------------------------------------------ mode and attempts

@pytest.mark.parametrize("config, environ, profile, expected", [
    (None, {}, None, ("legacy", 5)),
    ({"mode": "standard"}, {}, None, ("standard", 3)),
    ({"mode": "adaptive"}, {}, None, ("adaptive", 3)),
    (None, {"AWS_RETRY_MODE": "standard"}, None, ("standard", 3)),
    (None, {}, {"retry_mode": "adaptive"}, ("adaptive", 3)),
    (None, {"AWS_RETRY_MODE": "standard"}, {"retry_mode": "adaptive"}, ("standard", 3)),
    ({"mode": "legacy"}, {"AWS_RETRY_MODE": "standard"}, None, ("legacy", 5)),
    ({"total_max_attempts": 7}, {}, None, ("legacy", 7)),
    ({"max_attempts": 7}, {}, None, ("legacy", 8)),
    ({"max_attempts": 0, "mode": "standard"}, {}, None, ("standard", 1)),
    ({"max_attempts": 2, "total_max_attempts": 9}, {}, None, ("legacy", 9)),
    (None, {"AWS_MAX_ATTEMPTS": "4"}, None, ("legacy", 4)),
    (None, {}, {"max_attempts": "6"}, ("legacy", 6)),
    (None, {"AWS_MAX_ATTEMPTS": "4"}, {"max_attempts": "6"}, ("legacy", 4)),
    ({"max_attempts": 1}, {"AWS_MAX_ATTEMPTS": "4"}, None, ("legacy", 2)),
    ({"mode": "standard"}, {"AWS_MAX_ATTEMPTS": "10"}, None, ("standard", 10)),
    (None, {"AWS_NEW_RETRIES_2026": "true"}, None, ("standard", 3)),
])
def test_mode_and_attempts_resolution(config, environ, profile, expected):
    p = make_retry_policy(Config(retries=config) if config else None, environ=environ,
                          profile_config=profile)
    assert (p.mode, p.max_attempts) == expected


@pytest.mark.parametrize("environ, config, match", [
    ({"AWS_RETRY_MODE": "bogus"}, None, "mode"),
    ({"AWS_MAX_ATTEMPTS": "0"}, None, "max_attempts"),
    ({}, {"total_max_attempts": 0}, "max_attempts"),
])
def test_invalid_settings_raise(environ, config, match):
    with pytest.raises(ValueError, match=match):
        make_retry_policy(Config(retries=config) if config else None, environ=environ)
    with pytest.raises(ValueError):
        make_retry_policy(None, environ={"AWS_MAX_ATTEMPTS": "three"})


def test_botocore_config_is_accepted():
    botocore_config = pytest.importorskip("botocore.config")
    p = make_retry_policy(botocore_config.Config(retries={"mode": "adaptive", "max_attempts": 4}),
                          environ={})
    assert (p.mode, p.max_attempts) == ("adaptive", 5)


@pytest.mark.parametrize("retries, environ, profile", [
    (None, {}, {}),
    ({"mode": "standard"}, {}, {}),
    ({"max_attempts": 7}, {}, {}),
    ({"total_max_attempts": 2, "mode": "adaptive"}, {}, {}),
    (None, {"AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "6"}, {}),
    (None, {}, {"retry_mode": "adaptive", "max_attempts": "9"}),
    (None, {"AWS_MAX_ATTEMPTS": "2"}, {"retry_mode": "standard", "max_attempts": "9"}),
    ({"max_attempts": 3}, {"AWS_RETRY_MODE": "adaptive"}, {"max_attempts": "9"}),
])
def test_resolution_matches_boto3(tmp_path, monkeypatch, retries, environ, profile):
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config as BotoConfig

    cfg_file = tmp_path / "config"
    cfg_file.write_text("[default]\n" + "".join(f"{k} = {v}\n" for k, v in profile.items()))
    for var in ("AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(cfg_file))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    for k, v in environ.items():
        monkeypatch.setenv(k, v)
    client = boto3.session.Session().client(
        "ebs", region_name="us-east-1", aws_access_key_id="AKID", aws_secret_access_key="x",
        config=BotoConfig(retries=dict(retries)) if retries else None)
    theirs = client.meta.config.retries
    their_mode = theirs["mode"]
    their_total = theirs.get("total_max_attempts") or (5 if their_mode == "legacy" else 3)
    ours = make_retry_policy(Config(retries=retries) if retries else None, environ=environ,
                             profile_config=profile)
    assert (ours.mode, ours.max_attempts) == (their_mode, their_total)


# ------------------------------------------------------------------ backoff schedules

def run_failing_call(p: RetryPolicy, **outcome):
    """Drive one call that fails every attempt; returns (attempts made, delays, metadata)."""
    call = p.start("GetSnapshotBlock")
    delays = []
    while True:
        call.before_attempt()
        d = call.decide(**outcome)
        if d is None:
            return call.attempt, delays, call.metadata()
        delays.append(d)
        call.sleep(d)


def test_legacy_schedule_is_uncapped_rand_times_two_to_the_n():
    p = policy(config=Config(retries={"mode": "legacy", "max_attempts": 9}), rng=lambda: 0.5)
    attempts, delays, meta = run_failing_call(p, status=500)
    assert attempts == 10
    assert delays == [0.5 * 2 ** i for i in range(9)]  # up to 128 s: botocore has no cap here
    assert meta == {"RetryAttempts": 9, "MaxAttemptsReached": True}


@pytest.mark.parametrize("mode", ["standard", "adaptive"])
def test_standard_schedule_caps_at_twenty_seconds(mode):
    p = policy(config=Config(retries={"mode": mode, "total_max_attempts": 8}))
    attempts, delays, meta = run_failing_call(p, status=503)
    assert attempts == 8
    assert delays == [1, 2, 4, 8, 16, 20, 20]
    assert meta == {"RetryAttempts": 7, "MaxAttemptsReached": True}


def test_full_jitter_uses_rng():
    draws = iter([0.0, 0.25, 0.75])
    p = policy(rng=lambda: next(draws))
    _, delays, _ = run_failing_call(p, status=500)
    assert delays == [0.0, 0.5]


def test_new_retries_scale_and_retry_after():
    p = policy(environ={"AWS_NEW_RETRIES_2026": "true"}, config=Config(), rng=lambda: 1.0)
    assert p.mode == "standard" and p.new_retries
    assert p.backoff_s(1) == pytest.approx(0.05)
    assert p.backoff_s(3, throttled=True) == 4
    # the hint wins, but by no more than 5 s over the computed delay
    assert p.backoff_s(1, retry_after_ms="2000") == 2.0
    assert p.backoff_s(1, retry_after_ms="60000") == pytest.approx(5.05)
    assert p.backoff_s(1, retry_after_ms="junk") == pytest.approx(0.05)


def test_backoff_matches_botocore():
    standard = pytest.importorskip("botocore.retries.standard")
    retryhandler = pytest.importorskip("botocore.retryhandler")
    from unittest import mock

    for r in (0.0, 0.3, 1.0):
        theirs = standard.ExponentialBackoff(random=lambda r=r: r)
        ours = policy("standard", rng=lambda r=r: r)
        for attempt in range(1, 9):
            ctx = types.SimpleNamespace(attempt_number=attempt, http_response=None)
            assert ours.backoff_s(attempt) == pytest.approx(theirs.delay_amount(ctx))
        legacy = policy("legacy", rng=lambda r=r: r)
        with mock.patch.object(retryhandler.random, "random", lambda r=r: r):
            for attempt in range(1, 9):
                assert legacy.backoff_s(attempt) == pytest.approx(
                    retryhandler.delay_exponential("rand", 2, attempt))


# ------------------------------------------------------------------ attempts and metadata

def test_success_first_time_has_zero_retry_attempts():
    call = policy().start("ListSnapshotBlocks")
    call.before_attempt()
    call.after_success()
    assert call.metadata() == {"RetryAttempts": 0}


def test_retry_then_success():
    p = policy()
    call = p.start("GetSnapshotBlock")
    call.before_attempt()
    assert call.decide(status=400, error_code="RequestThrottledException") == 1
    call.before_attempt()
    call.after_success()
    assert call.metadata() == {"RetryAttempts": 1}


def test_non_retryable_error_gives_up_at_once():
    call = policy().start("GetSnapshotBlock")
    call.before_attempt()
    assert call.decide(status=403, error_code="AccessDeniedException") is None
    assert call.metadata() == {"RetryAttempts": 0}


def test_standard_flags_max_attempts_on_last_attempt_whatever_the_outcome():
    # botocore checks the limit before retryability, so even a success on the last allowed
    # attempt reports MaxAttemptsReached; legacy flags only a retryable failure.
    p = policy(config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
    call = p.start("ListSnapshotBlocks")
    call.before_attempt()
    call.after_success()
    assert call.metadata() == {"RetryAttempts": 0, "MaxAttemptsReached": True}
    p = policy(config=Config(retries={"mode": "legacy", "total_max_attempts": 1}))
    call = p.start("ListSnapshotBlocks")
    call.before_attempt()
    assert call.decide(status=404, error_code="ResourceNotFoundException") is None
    assert call.metadata() == {"RetryAttempts": 0}


def test_legacy_has_no_quota():
    p = policy(config=Config(retries={"mode": "legacy", "total_max_attempts": 3}))
    assert p.quota is None
    for _ in range(300):
        attempts, _, _ = run_failing_call(p, exception=exc.ReadTimeoutError(endpoint_url=URL))
        assert attempts == 3


# ------------------------------------------------------------------ quota

def test_quota_exhaustion_stops_retries_and_success_refunds():
    p = policy(config=Config(retries={"mode": "standard", "total_max_attempts": 2}))
    assert p.quota.available == 500
    for _ in range(100):  # 100 retries at 5 each
        attempts, _, meta = run_failing_call(p, status=500)
        assert attempts == 2 and meta.get("RetryQuotaReached") is None
    assert p.quota.available == 0
    attempts, delays, meta = run_failing_call(p, status=500)
    assert attempts == 1 and delays == []
    assert meta == {"RetryAttempts": 0, "RetryQuotaReached": True}

    # a first-time success earns 1 back; a success after a retry returns what it spent
    call = p.start("GetSnapshotBlock")
    call.before_attempt()
    call.after_success()
    assert p.quota.available == 1
    for _ in range(4):
        call = p.start("GetSnapshotBlock")
        call.before_attempt()
        call.after_success()
    assert p.quota.available == 5
    call = p.start("GetSnapshotBlock")
    call.before_attempt()
    assert call.decide(status=503) is not None
    assert p.quota.available == 0
    call.before_attempt()
    call.after_success()
    assert p.quota.available == 5


def test_timeouts_cost_ten():
    p = policy(config=Config(retries={"mode": "standard", "total_max_attempts": 2}))
    for _ in range(50):
        run_failing_call(p, exception=exc.ConnectTimeoutError(endpoint_url=URL))
    assert p.quota.available == 0
    # other connection errors cost the ordinary 5, as in botocore
    q = policy(config=Config(retries={"mode": "standard", "total_max_attempts": 2}))
    run_failing_call(q, exception=exc.EndpointConnectionError(endpoint_url=URL))
    assert q.quota.available == 495


def test_quota_never_exceeds_its_capacity():
    q = RetryQuota()
    q.release(100)
    assert q.available == 500
    assert q.acquire(10) and q.available == 490
    q.release(100)
    assert q.available == 500
    assert not q.acquire(501)


def test_quota_is_thread_safe():
    q = RetryQuota(100_000)

    def work():
        for _ in range(2000):
            assert q.acquire(5)
            q.release(3)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert q.available == 100_000 - 8 * 2000 * 2


# ------------------------------------------------------------------ adaptive rate limiter

def drive(limiter: ClientRateLimiter, fake: FakeTime, *, seconds: float, rate: float,
          throttle_at: set[int] = frozenset()) -> list[float]:
    """Send at ``rate`` requests/s for ``seconds`` (the limiter may slow it); returns fill rates."""
    rates = []
    for i in range(int(seconds * rate)):
        limiter.acquire()
        limiter.on_response(i in throttle_at)
        rates.append(limiter.fill_rate)
        fake.advance(1 / rate)
    return rates


def test_limiter_is_off_until_the_first_throttle():
    fake = FakeTime()
    lim = ClientRateLimiter(clock=fake.clock, sleep=fake.sleep)
    drive(lim, fake, seconds=3, rate=50)
    assert not lim.enabled and fake.slept == []
    assert lim.measured_rate == pytest.approx(50, rel=0.05)


def test_throttle_slows_down_and_recovery_grows_the_rate():
    fake = FakeTime()
    lim = ClientRateLimiter(clock=fake.clock, sleep=fake.sleep)
    drive(lim, fake, seconds=3, rate=50)
    measured = lim.measured_rate
    lim.acquire()
    lim.on_response(True)
    assert lim.enabled
    cut = lim.fill_rate
    assert cut == pytest.approx(0.7 * measured)
    # now attempts are paced: back-to-back acquires beyond the banked tokens wait 1/cut each
    banked = lim.capacity
    t0 = fake.now
    for _ in range(100):
        lim.acquire()
    assert fake.now - t0 == pytest.approx((100 - banked) / cut, rel=1e-6)
    # steady successes sent as fast as the bucket allows: the CUBIC curve dips below the cut
    # and then climbs back past the throttled rate (after K = cbrt(w_max * 0.3 / 0.4) s)
    t_throttle = fake.now
    grown = []
    while fake.now - t_throttle < 8:
        lim.acquire()
        lim.on_response(False)
        grown.append(lim.fill_rate)
    assert min(grown) < cut
    assert grown[-1] > measured  # past the rate that was throttled
    assert max(grown) <= 2 * max(measured, lim.measured_rate) + 1e-9


def test_repeated_throttles_keep_cutting():
    fake = FakeTime()
    lim = ClientRateLimiter(clock=fake.clock, sleep=fake.sleep)
    drive(lim, fake, seconds=2, rate=100)
    rates = []
    for _ in range(6):
        lim.acquire()
        lim.on_response(True)
        rates.append(lim.fill_rate)
        fake.advance(0.6)
    assert all(b < a for a, b in zip(rates, rates[1:], strict=False))
    assert rates[-1] >= ClientRateLimiter.MIN_FILL_RATE


def test_limiter_matches_botocore_rates():
    adaptive = pytest.importorskip("botocore.retries.adaptive")
    from botocore.retries import bucket, standard, throttling

    fake = FakeTime()
    clock = types.SimpleNamespace(current_time=fake.clock, sleep=fake.sleep)
    theirs = adaptive.ClientRateLimiter(
        rate_adjustor=throttling.CubicCalculator(starting_max_rate=0,
                                                 start_time=clock.current_time()),
        rate_clocker=adaptive.RateClocker(clock),
        token_bucket=bucket.TokenBucket(max_rate=1, clock=clock),
        throttling_detector=standard.ThrottlingErrorDetector(standard.RetryEventAdapter()),
        clock=clock)
    ours = ClientRateLimiter(clock=fake.clock, sleep=fake.sleep)

    def needs_retry_kwargs(code):
        parsed = {"Error": {"Code": code}} if code else {"ResponseMetadata": {}}
        http = types.SimpleNamespace(status_code=400 if code else 200, headers={})
        return dict(attempts=1, operation=None, response=(http, parsed), caught_exception=None,
                    request_dict={"context": {}})

    # a pattern of rates and throttles: ramp up, throttle twice, recover, throttle again
    schedule = ([(0.02, None)] * 120 + [(0.02, "ThrottlingException")] + [(0.05, None)] * 60
                + [(0.01, "RequestThrottledException")] + [(0.1, None)] * 80
                + [(0.02, "SlowDown")] + [(0.3, None)] * 40)
    for step, code in schedule:
        fake.advance(step)
        theirs.on_receiving_response(**needs_retry_kwargs(code))
        ours.on_response(is_throttling(code))
        assert ours.fill_rate == pytest.approx(theirs._token_bucket.max_rate, rel=1e-9)
        assert ours.measured_rate == pytest.approx(theirs._rate_clocker.measured_rate, rel=1e-9)
        assert ours.enabled == theirs._enabled


def test_adaptive_policy_paces_attempts_after_throttling():
    fake = FakeTime()
    p = policy("adaptive", fake=fake)
    for _ in range(100):  # 20 calls/s succeed
        call = p.start("GetSnapshotBlock")
        call.before_attempt()
        call.after_success()
        fake.advance(0.05)
    assert fake.slept == []
    call = p.start("GetSnapshotBlock")
    call.before_attempt()
    delay = call.decide(status=400, error_code="ThrottlingException")
    assert delay is not None and p.rate_limiter.enabled
    fake.slept.clear()
    t0 = fake.now
    fastest = 0.0
    for _ in range(40):
        call = p.start("GetSnapshotBlock")
        call.before_attempt()
        call.after_success()
        fastest = max(fastest, p.rate_limiter.fill_rate)
    # without the limiter these 40 calls would take no time at all
    assert len(fake.slept) > 20
    banked = 20
    assert fake.now - t0 >= (40 - banked) / fastest


def test_limiter_spaces_threads_in_real_time():
    lim = ClientRateLimiter()
    lim.enabled = True
    lim._set_rate(100.0)
    n_threads, per_thread = 4, 10
    t0 = time.monotonic()

    def work():
        for _ in range(per_thread):
            lim.acquire()

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    # 40 tokens at 100/s, starting from an empty bucket
    assert 0.35 <= elapsed < 2.0


# ------------------------------------------------------------------ classification

def ebs_errors():
    return {
        "throttle-snapshot": dict(status=400, error_code="RequestThrottledException"),
        "throttle-account": dict(status=400, error_code="ThrottlingException"),
        "internal": dict(status=500, error_code="InternalServerException"),
        "bad-gateway": dict(status=502),
        "unavailable": dict(status=503, error_code="ServiceUnavailable"),
        "gateway-timeout": dict(status=504),
        "request-timeout": dict(status=408, error_code="RequestTimeout"),
        "validation": dict(status=400, error_code="ValidationException",
                           error_message="The block token is not valid."),
        "access-denied": dict(status=403, error_code="AccessDeniedException"),
        "bad-signature": dict(status=403, error_code="InvalidSignatureException"),
        "not-found": dict(status=404, error_code="ResourceNotFoundException"),
        "quota": dict(status=402, error_code="ServiceQuotaExceededException"),
        "conflict": dict(status=409, error_code="ConflictException"),
        "concurrent": dict(status=400, error_code="ConcurrentLimitExceededException"),
        "too-many-429": dict(status=429),
        "limit-509": dict(status=509),
        "not-implemented": dict(status=501),
        "endpoint": dict(exception=exc.EndpointConnectionError(endpoint_url=URL)),
        "connect-timeout": dict(exception=exc.ConnectTimeoutError(endpoint_url=URL)),
        "read-timeout": dict(exception=exc.ReadTimeoutError(endpoint_url=URL)),
        "closed": dict(exception=exc.ConnectionClosedError(endpoint_url=URL)),
        "ssl": dict(exception=exc.SSLError(endpoint_url=URL, error="bad cert")),
        "proxy": dict(exception=exc.ProxyConnectionError(proxy_url="http://proxy:1")),
        "http-client": dict(exception=exc.HTTPClientError(error="boom")),
        "not-ours": dict(exception=ValueError("a bug, not the network")),
    }


EXPECTED = {  # name: (legacy, standard)
    "throttle-snapshot": (True, True), "throttle-account": (True, True),
    "internal": (True, True), "bad-gateway": (True, True), "unavailable": (True, True),
    "gateway-timeout": (True, True), "request-timeout": (False, True),
    "validation": (False, False), "access-denied": (False, False),
    "bad-signature": (False, False), "not-found": (False, False), "quota": (False, False),
    "conflict": (False, False), "concurrent": (False, False), "too-many-429": (True, False),
    "limit-509": (True, False), "not-implemented": (False, False),
    "endpoint": (True, True), "connect-timeout": (True, True), "read-timeout": (True, True),
    "closed": (True, True), "ssl": (True, True), "proxy": (True, True),
    "http-client": (False, True), "not-ours": (False, False),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_classification(name):
    outcome = ebs_errors()[name]
    legacy, standard = EXPECTED[name]
    assert is_retryable("legacy", operation="GetSnapshotBlock", **outcome) is legacy
    assert is_retryable("standard", operation="GetSnapshotBlock", **outcome) is standard
    assert is_retryable("adaptive", operation="GetSnapshotBlock", **outcome) is standard


@pytest.mark.parametrize("mode", ["legacy", "standard", "adaptive"])
def test_ebs_specific_retries(mode):
    assert is_retryable(mode, operation="GetSnapshotBlock", status=200, checksum_mismatch=True)
    assert is_retryable(mode, operation="GetSnapshotBlock",
                        exception=exc.ResponseStreamingError(error="cut short"))
    put = dict(status=400, error_code="ValidationException")
    assert is_retryable(mode, operation="PutSnapshotBlock",
                        error_message="Failed to read block data", **put)
    assert is_retryable(mode, operation="PutSnapshotBlock",
                        error_message="Failed to read block data.", **put)
    assert not is_retryable(mode, operation="PutSnapshotBlock",
                            error_message="The checksum does not match.", **put)
    assert not is_retryable(mode, operation="PutSnapshotBlock", **put)
    # the message only excuses PutSnapshotBlock
    assert not is_retryable(mode, operation="StartSnapshot",
                            error_message="Failed to read block data", **put)


def test_never_retries_other_4xx():
    for mode in ("legacy", "standard", "adaptive"):
        for status in range(400, 500):
            if status == 429 or (mode != "legacy" and status == 408):
                continue
            for code in (None, "ValidationException", "AccessDeniedException", "Whatever"):
                assert not is_retryable(mode, operation="GetSnapshotBlock", status=status,
                                        error_code=code), (mode, status, code)


def test_checksum_mismatch_drives_a_retry_in_a_call():
    call = policy("standard").start("GetSnapshotBlock")
    call.before_attempt()
    assert call.decide(status=200, checksum_mismatch=True) is not None


@pytest.fixture(scope="module")
def ebs_operation():
    session = pytest.importorskip("botocore.session")
    return session.get_session().get_service_model("ebs").operation_model("GetSnapshotBlock")


def botocore_context(standard, ebs_operation, outcome, attempt=1):
    code = outcome.get("error_code")
    status = outcome.get("status")
    http = parsed = None
    if status is not None:
        http = types.SimpleNamespace(status_code=status, headers={})
        parsed = {"Error": {"Code": code or str(status), "Message": ""},
                  "ResponseMetadata": {"HTTPStatusCode": status}}
    return standard.RetryContext(attempt_number=attempt, operation_model=ebs_operation,
                                 parsed_response=parsed, http_response=http,
                                 caught_exception=outcome.get("exception"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_standard_classification_matches_botocore(name, ebs_operation):
    standard = pytest.importorskip("botocore.retries.standard")
    outcome = ebs_errors()[name]
    ctx = botocore_context(standard, ebs_operation, outcome)
    theirs = standard.StandardRetryConditions(max_attempts=3).is_retryable(ctx)
    ours = is_retryable("standard", operation="GetSnapshotBlock", **outcome)
    assert ours is theirs
    # and the adaptive limiter's idea of "throttling" is botocore's
    detector = standard.ThrottlingErrorDetector(standard.RetryEventAdapter())
    assert is_throttling(outcome.get("error_code")) is \
        detector.is_throttling_error_from_context(ctx)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_legacy_classification_matches_botocore(name):
    retryhandler = pytest.importorskip("botocore.retryhandler")
    from botocore import translate
    from botocore.loaders import create_loader

    model = create_loader().load_data("_retry")
    handler = retryhandler.create_retry_handler(
        translate.build_retry_config("ebs", model["retry"], model["definitions"]), "ebs")
    outcome = ebs_errors()[name]
    status = outcome.get("status")
    response = None
    if status is not None:
        response = (types.SimpleNamespace(status_code=status, headers={}),
                    {"Error": {"Code": outcome.get("error_code") or str(status)},
                     "ResponseMetadata": {}})
    try:
        theirs = handler(attempts=1, response=response, caught_exception=outcome.get("exception"),
                         request_dict={"context": {}}) is not None
    except Exception:  # legacy re-raises an exception it will not retry
        theirs = False
    assert is_retryable("legacy", operation="GetSnapshotBlock", **outcome) is theirs
