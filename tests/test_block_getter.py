"""BlockGetter: GetSnapshotBlock's usual attempt as one call, native and twin alike.

The client's attempt loop hands its first attempt to the getter; these tests hold the getter to
the loop's rules on its own: the request it builds is ``wire.serialize``'s, what it returns for
a clean answer is the dict the loop would make, and everything else (arguments it does not
handle, error answers, blocks that fail their checksum, broken connections) comes back to the
loop unjudged, with nothing sent in the first case and nothing half-written left in ``out``.
"""
from __future__ import annotations

import base64
import hashlib
import random
import re
import uuid
from unittest import mock

import numpy as np
import pytest
from conftest_http_fixtures import load_http_impl
from hypothesis import given, settings
from hypothesis import strategies as st

import ebsfast
from ebsfast import model, wire
from ebsfast.client import _block_result
from ebsfast.testing import BLOCK_SIZE, EBSServer

from _blockdata import block, client_for, one_block_snapshot, unused_port

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def getter_for(impl, c, **kw):
    mins = wire.quick_minimums(model.OPERATIONS["GetSnapshotBlock"])
    args = dict(timeout_s=2, max_other_body=1 << 20, min_snapshot_id=mins["SnapshotId"],
                min_block_index=mins["BlockIndex"], min_block_token=mins["BlockToken"])
    args.update(kw)
    return impl.BlockGetter(c._transport, c._block_signing, c._path_prefix, c._fixed_head,
                            **args)


# -- the request -------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(snapshot_id=st.text(min_size=1, max_size=70), index=st.integers(0, 2**40),
       token=st.text(min_size=1, max_size=200), prefix=st.sampled_from(["", "/base"]))
@pytest.mark.parametrize("kind", ["native", "python"])
def test_request_line_is_serialize(kind, snapshot_id, index, token, prefix):
    impl = load_http_impl(kind)
    getter = impl.BlockGetter(None, None, prefix, "Host: h\r\nUser-Agent: u\r\n")
    path, query, headers, body = wire.serialize(
        model.OPERATIONS["GetSnapshotBlock"],
        {"SnapshotId": snapshot_id, "BlockIndex": index, "BlockToken": token})
    assert not headers and not body
    assert getter.request_line(snapshot_id, index, token) == (
        prefix + path, query,
        f"GET {prefix}{path}?{query} HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\n")


def test_invocation_ids_are_distinct_version_4_uuids(http_impl):
    ids = {http_impl.invocation_id() for _ in range(2000)}
    assert len(ids) == 2000
    for s in list(ids)[:200]:
        u = uuid.UUID(s)
        assert str(u) == s and u.version == 4 and u.variant == uuid.RFC_4122
        assert UUID4.fullmatch(s)


def test_native_invocation_ids_are_the_twins():
    # the same bits of the random module's generator (so reseeded in a forked child alike)
    native, twin = load_http_impl("native"), load_http_impl("python")
    state = random.getstate()
    try:
        for seed in range(50):
            random.seed(seed)
            a = native.invocation_id()
            random.seed(seed)
            assert twin.invocation_id() == a
    finally:
        random.setstate(state)


@pytest.mark.parametrize("token", [None, "", "FwoGZXIvYXdzEXAMPLE//+="])
def test_block_head_is_the_twins(token):
    native, twin = load_http_impl("native"), load_http_impl("python")
    args = ("GET /snapshots/s/blocks/1?blockToken=t HTTP/1.1\r\nHost: h\r\n", "20261206T101010Z",
            token, "AWS4-HMAC-SHA256 Credential=x", "0-1-2", "attempt=1")
    head = twin.block_head(*args)
    assert native.block_head(*args) == head
    assert head.endswith(b"amz-sdk-invocation-id: 0-1-2\r\namz-sdk-request: attempt=1\r\n\r\n")
    assert (b"X-Amz-Security-Token" in head) is bool(token)
    if token:
        assert b"\r\nX-Amz-Security-Token: " + token.encode() + b"\r\nAuthorization: " in head


# -- one attempt against the local server ------------------------------------------------------

@pytest.fixture(scope="module", params=["http", "https"])
def served(request):
    with EBSServer(tls=request.param == "https", record_requests=True) as s:
        c = client_for(s, retries={"mode": "standard"})
        data = block(41)
        snap, token = one_block_snapshot(c, data, 3)
        yield s, c, snap, data, token
        c.close()


@pytest.mark.parametrize("verify", [True, False])
def test_a_clean_answer_is_the_loops_dict(http_impl, served, verify):
    s, c, snap, data, token = served
    refunds = []
    getter = getter_for(http_impl, c, on_success=lambda: refunds.append(1))
    out = np.zeros(BLOCK_SIZE + 9, np.uint8)
    got = getter.get(snap, 3, token, memoryview(out)[2:], verify)
    assert type(got) is dict and refunds == [1]
    assert out[2:BLOCK_SIZE + 2].tobytes() == data and not out[:2].any() and not out[-7:].any()
    headers = got["ResponseMetadata"]["HTTPHeaders"]
    assert got == {
        "ResponseMetadata": {"RequestId": headers["x-amzn-requestid"], "HTTPStatusCode": 200,
                             "HTTPHeaders": headers, "RetryAttempts": 0},
        "DataLength": BLOCK_SIZE,
        "Checksum": base64.b64encode(hashlib.sha256(data).digest()).decode(),
        "ChecksumAlgorithm": "SHA256", "_length": BLOCK_SIZE}
    # the loop's own epilogue makes the same dict from the same answer
    call = c._retry.start("GetSnapshotBlock")
    call.before_attempt()
    assert _block_result(200, headers, call, BLOCK_SIZE) == got
    sent = s.requests[-1]
    assert dict(sent["headers"])["amz-sdk-request"] == "attempt=1"
    assert UUID4.fullmatch(dict(sent["headers"])["amz-sdk-invocation-id"])


@pytest.mark.parametrize("bad", [
    {"snapshot_id": 7}, {"snapshot_id": ""}, {"block_index": True}, {"block_index": -1},
    {"block_index": "3"}, {"block_token": None}, {"block_token": b"t"}])
def test_arguments_it_does_not_handle_send_nothing(http_impl, served, bad):
    s, c, snap, data, token = served
    getter = getter_for(http_impl, c)
    args = dict(snapshot_id=snap, block_index=3, block_token=token)
    args.update(bad)
    before = len(s.requests)
    out = bytearray(BLOCK_SIZE)
    assert getter.get(args["snapshot_id"], args["block_index"], args["block_token"], out,
                      True) is None
    assert len(s.requests) == before and not any(out)


def test_without_minimums_an_out_of_range_index_is_sent(http_impl, served):
    s, c, snap, data, token = served
    getter = getter_for(http_impl, c, min_snapshot_id=None, min_block_index=None,
                        min_block_token=None)
    out = bytearray(b"\x5a" * BLOCK_SIZE)
    invocation, r = getter.get(snap, -1, token, out, True)
    assert UUID4.fullmatch(invocation) and r.status == 400 and b"Reason" in r.body
    assert s.requests[-1]["path"].endswith("/blocks/-1")
    assert out == b"\x5a" * BLOCK_SIZE  # an error body never lands in out


def test_an_error_answer_goes_back_to_the_loop(http_impl, served):
    s, c, snap, data, token = served
    refunds = []
    getter = getter_for(http_impl, c, on_success=lambda: refunds.append(1))
    invocation, r = getter.get(snap, 2, token, bytearray(BLOCK_SIZE), True)  # token of block 3
    assert UUID4.fullmatch(invocation) and r.status >= 400 and r.body
    assert r.headers["x-amzn-errortype"] and refunds == []


@pytest.mark.parametrize("verify", [True, False])
def test_a_block_that_fails_its_checksum_goes_back_to_the_loop(http_impl, verify):
    with EBSServer() as s:
        c = client_for(s, retries={"mode": "standard"})
        data = block(42)
        snap, token = one_block_snapshot(c, data)
        s.set_faults(corrupt_rate=1.0)
        out = bytearray(BLOCK_SIZE)
        got = getter_for(http_impl, c).get(snap, 0, token, out, verify)
        assert out != data
        if verify:  # judged by the loop, which wipes out before retrying or raising
            invocation, r = got
            assert r.status == 200 and r.digest == hashlib.sha256(out).digest()
            assert r.headers["x-amz-checksum"] != base64.b64encode(r.digest).decode()
        else:
            assert type(got) is dict and got["_length"] == BLOCK_SIZE
        c.close()


@pytest.mark.parametrize("knob", ["reset_rate", "truncate_rate"])
def test_a_broken_body_is_wiped_and_its_connection_closed(http_impl, knob):
    with EBSServer() as s:
        c = client_for(s, retries={"mode": "standard"})
        data = block(43)
        snap, token = one_block_snapshot(c, data)
        getter = getter_for(http_impl, c)
        s.set_faults(**{knob: 1.0})
        out = bytearray(b"\x5a" * BLOCK_SIZE)
        invocation, e = getter.get(snap, 0, token, out, True)
        assert isinstance(e, OSError) and UUID4.fullmatch(invocation)
        # what landed (at most what the server sent) was zeroed, and nothing past it touched
        landed = len(out) - len(out.lstrip(b"\0"))
        sent = BLOCK_SIZE // 3 if knob == "reset_rate" else BLOCK_SIZE // 2
        assert landed == sent if knob == "truncate_rate" else landed <= sent
        assert out[landed:] == b"\x5a" * (len(out) - landed)
        s.set_faults(**{knob: 0.0})
        accepted = s.connections_accepted
        assert type(getter.get(snap, 0, token, out, True)) is dict and out == data
        assert s.connections_accepted == accepted + 1  # the broken one was not reused
        c.close()


# -- the client's use of it --------------------------------------------------------------------

def test_a_retried_block_read_keeps_one_invocation_id():
    with EBSServer(record_requests=True) as s:
        c = client_for(s, retries={"mode": "standard", "total_max_attempts": 10})
        data = block(44)
        snap, token = one_block_snapshot(c, data)
        seen, retried = [], 0
        with mock.patch.object(c._retry, "_sleep", lambda _: None):
            for seed in (1, 2):
                s.set_faults(error_rate=0.6, seed=seed)
                before = len(s.requests)
                out = np.zeros(BLOCK_SIZE, np.uint8)
                r = c.get_snapshot_block_into(SnapshotId=snap, BlockIndex=0, BlockToken=token,
                                              Out=out)
                assert out.tobytes() == data
                sent = [dict(x["headers"]) for x in s.requests[before:]]
                assert len(sent) == r["ResponseMetadata"]["RetryAttempts"] + 1
                ids = {h["amz-sdk-invocation-id"] for h in sent}
                assert len(ids) == 1 and UUID4.fullmatch(ids.pop())
                seen.append(sent[0]["amz-sdk-invocation-id"])
                retried += len(sent) - 1
        assert seen[0] != seen[1] and retried > 0
        c.close()


@pytest.mark.parametrize("retries,usable", [
    ({"mode": "standard"}, True), ({"mode": "legacy"}, True),
    ({"mode": "adaptive"}, False), ({"mode": "standard", "total_max_attempts": 1}, False)])
def test_the_getter_makes_first_attempts_only_where_they_are_the_whole_story(retries, usable):
    with EBSServer() as s:
        c = client_for(s, retries=retries)
        data = block(45)
        snap, token = one_block_snapshot(c, data)
        assert c._getter()[1] is usable
        out = np.zeros(BLOCK_SIZE, np.uint8)
        r = c.get_snapshot_block_into(SnapshotId=snap, BlockIndex=0, BlockToken=token, Out=out)
        assert out.tobytes() == data and r["ResponseMetadata"]["RetryAttempts"] == 0
        # one attempt of at most one: botocore's standard mode flags it
        assert r["ResponseMetadata"].get("MaxAttemptsReached", False) is (
            retries.get("total_max_attempts") == 1)
        c.close()


def test_no_connection_on_the_first_attempt_is_retried_then_raised():
    # the getter cannot connect: nothing was sent, the attempt loop retries, then raises as
    # botocore does
    from ebsfast import exceptions as exc

    c = ebsfast.client("ebs", endpoint_url=f"http://127.0.0.1:{unused_port()}", region_name="us-east-1",
                       aws_access_key_id="a", aws_secret_access_key="b",
                       config=ebsfast.Config(retries={"mode": "standard",
                                                      "total_max_attempts": 3}))
    assert c._getter()[1]
    slept = []
    with mock.patch.object(c._retry, "_sleep", slept.append), \
            pytest.raises(exc.EndpointConnectionError):
        c.get_snapshot_block_into(SnapshotId="snap-1", BlockIndex=0, BlockToken="t",
                                  Out=bytearray(BLOCK_SIZE))
    assert len(slept) == 2  # three attempts, two waits between them


# -- verified blocks hashed in pairs across threads (native) --------------------------------

def _many_blocks(server, n=16):
    c = client_for(server, max_pool_connections=8)
    snap = c.start_snapshot(VolumeSize=1)["SnapshotId"]
    for i in range(n):
        c.put_snapshot_block(SnapshotId=snap, BlockIndex=i, BlockData=block(100 + i))
    c.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=n)
    return c, snap, c.list_snapshot_blocks(SnapshotId=snap)["Blocks"]


def _read_in_threads(c, snap, listed, threads=8, per_thread=12):
    import threading

    wrong, raised = [], []

    def work(k):
        out = np.empty(BLOCK_SIZE, np.uint8)
        for j in range(per_thread):
            e = listed[(k * 5 + j) % len(listed)]
            out[:] = 0x5A
            try:
                c.get_snapshot_block_into(SnapshotId=snap, BlockIndex=e["BlockIndex"],
                                          BlockToken=e["BlockToken"], Out=out)
            except Exception as exc:  # noqa: BLE001 - collected and judged by the test
                raised.append(exc)
                if out.tobytes() == block(100 + e["BlockIndex"]):
                    wrong.append(("kept after an error", e["BlockIndex"]))
                continue
            if out.tobytes() != block(100 + e["BlockIndex"]):
                wrong.append(("wrong bytes", e["BlockIndex"]))

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return wrong, raised


def _two_lane_or_skip():
    impl = load_http_impl("native")  # the twin hashes each block alone, as it arrives
    if ebsfast.show_config()["sha256_path"] != "sha-ni-x2":
        pytest.skip("pairs are hashed only with the two-lane SHA-NI kernel, not on this path")
    return impl


def _rounds_until_paired(impl, c, snap, listed, pairs=16, rounds=10):
    """Rounds of eight reading threads until ``pairs`` blocks were hashed in pairs (how many
    pair up in one round depends on timing, slower under a sanitizer); what went wrong."""
    before = impl.paired_hashes()
    wrong, raised = [], []
    for _ in range(rounds):
        w, r = _read_in_threads(c, snap, listed)
        wrong += w
        raised += r
        if impl.paired_hashes() - before >= pairs:
            break
    assert impl.paired_hashes() - before >= pairs, "threads never hashed in pairs"
    return wrong, raised


def test_threads_verify_blocks_in_pairs_and_each_lands_whole():
    impl = _two_lane_or_skip()
    with EBSServer() as s:
        c, snap, listed = _many_blocks(s)
        wrong, raised = _rounds_until_paired(impl, c, snap, listed)
        assert wrong == [] and raised == []


def test_one_thread_never_waits_for_a_partner():
    impl = _two_lane_or_skip()
    with EBSServer() as s:
        c, snap, listed = _many_blocks(s, 4)
        before = impl.paired_hashes()
        out = np.empty(BLOCK_SIZE, np.uint8)
        for e in listed * 3:
            c.get_snapshot_block_into(SnapshotId=snap, BlockIndex=e["BlockIndex"],
                                      BlockToken=e["BlockToken"], Out=out)
            assert out.tobytes() == block(100 + e["BlockIndex"])
        assert impl.paired_hashes() == before


def test_a_corrupt_block_hashed_in_a_pair_is_caught():
    import ebsfast.exceptions as exc

    impl = _two_lane_or_skip()
    with EBSServer() as s:
        c, snap, listed = _many_blocks(s)
        s.set_faults(corrupt_rate=0.5, seed=7, operations={"GetSnapshotBlock"})
        with mock.patch.object(c._retry, "_sleep", lambda _: None):
            wrong, raised = _rounds_until_paired(impl, c, snap, listed)
        assert wrong == []
        assert all(isinstance(e, exc.ChecksumMismatchError) for e in raised)
