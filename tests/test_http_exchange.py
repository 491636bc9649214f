"""ebsfast._http.exchange and its twin ebsfast._http_py.exchange, over real sockets.

Every test runs against both implementations (the ``http_impl`` fixture); the Hypothesis tests
run both on the same byte streams and compare them with each other and with the expected result.
"""
from __future__ import annotations

import base64
import gc
import hashlib
import json
import signal
import socket
import struct
import threading
import time
import tracemalloc
from urllib.parse import quote

import boto3
import numpy as np
import pytest
from conftest_http_fixtures import (
    NO_EXTENSIONS,
    ScriptedSocket,
    block,
    get,
    load_http_impl,
    ok_head,
    reset,
    segments,
    spins_while_waiting,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebsfast import _http_py
from ebsfast.testing import BLOCK_SIZE, EBSServer

B = BLOCK_SIZE
SENTINEL = 0xA5


def b64sha(data) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def chunked(data: bytes, sizes) -> bytes:
    out, i = [], 0
    for n in sizes:
        piece = data[i:i + n]
        if not piece:
            break
        out.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
        i += len(piece)
    if i < len(data):
        out.append(b"%x\r\n" % (len(data) - i) + data[i:] + b"\r\n")
    return b"".join(out) + b"0\r\n\r\n"


def sentinel_array(n: int) -> np.ndarray:
    return np.full(n, SENTINEL, dtype=np.uint8)


def untouched(a: np.ndarray) -> bool:
    return bool((a == SENTINEL).all())


# -- against the local EBS server, over HTTP and HTTPS -----------------------------------------

@pytest.fixture(scope="module", params=["http", "https"])
def ebs_server(request):
    with EBSServer(verify_signatures=False, tls=request.param == "https") as s:
        ebs = boto3.client("ebs", endpoint_url=s.endpoint_url, region_name=s.region,
                           aws_access_key_id=s.access_key, aws_secret_access_key=s.secret_key,
                           verify=s.ca_file if s.tls else None)
        blocks = {0: block(1), 3: block(2)}
        snap = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
        for i, data in blocks.items():
            ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=i, BlockData=data,
                                   DataLength=B, Checksum=b64sha(data),
                                   ChecksumAlgorithm="SHA256")
        cat = b"".join(hashlib.sha256(blocks[i]).digest() for i in sorted(blocks))
        ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=len(blocks),
                              Checksum=b64sha(cat), ChecksumAlgorithm="SHA256",
                              ChecksumAggregationMethod="LINEAR")
        tokens = {b["BlockIndex"]: b["BlockToken"]
                  for b in ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]}
        s.snap, s.blocks, s.tokens, s.ebs = snap, blocks, tokens, ebs
        yield s


def connect(s: EBSServer, timeout: float | None = 10.0) -> socket.socket:
    sock = socket.create_connection((s.host, s.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if s.tls:
        import ssl

        ctx = ssl.create_default_context(cafile=s.ca_file)
        sock = ctx.wrap_socket(sock, server_hostname=s.host)
    return sock


def block_target(s: EBSServer, index: int, token: str | None = None) -> str:
    token = s.tokens[index] if token is None else token
    return f"/snapshots/{s.snap}/blocks/{index}?blockToken={quote(token, safe='')}"


@pytest.mark.parametrize("offset", [0, 1, 7, 4093])
def test_block_lands_exactly_in_an_unaligned_slice(http_impl, ebs_server, offset):
    s = ebs_server
    big = sentinel_array(B + 8192)
    with connect(s) as sock:
        r = http_impl.exchange(sock, get(block_target(s, 3)), out=big[offset:offset + B])
    assert (r.status, r.reason, r.body, r.body_length, r.keep_alive) == (200, "OK", None, B, True)
    assert bytes(big[offset:offset + B]) == s.blocks[3]
    assert untouched(big[:offset]) and untouched(big[offset + B:])
    assert r.digest == hashlib.sha256(s.blocks[3]).digest()
    assert r.header("x-amz-checksum") == b64sha(s.blocks[3])
    assert r.header("CONTENT-LENGTH") == str(B) and r.header("nope", "d") == "d"
    assert ("Content-Length", str(B)) in r.headers


def test_out_larger_than_the_block_and_keep_alive(http_impl, ebs_server):
    s = ebs_server
    big = sentinel_array(3 * B)
    before = s.connections_accepted
    with connect(s) as sock:
        r1 = http_impl.exchange(sock, get(block_target(s, 0)), out=big[5:5 + B + 1000])
        r2 = http_impl.exchange(sock, get(block_target(s, 3)), out=big[B + 2000:],
                                hash_body=False)
    assert r1.body_length == B and r1.keep_alive
    assert r2.body_length == B and r2.digest is None
    assert bytes(big[5:5 + B]) == s.blocks[0] and untouched(big[5 + B:B + 2000])
    assert bytes(big[B + 2000:2 * B + 2000]) == s.blocks[3]
    assert untouched(big[:5]) and untouched(big[2 * B + 2000:])
    assert s.connections_accepted - before == 1


def test_error_status_returns_the_json_body_and_leaves_out_alone(http_impl, ebs_server):
    s = ebs_server
    out = sentinel_array(B)
    with connect(s) as sock:
        r = http_impl.exchange(sock, get(block_target(s, 0, token="AAAA")), out=out)
        assert r.status == 400 and r.digest is None and r.keep_alive
        assert json.loads(r.body)["Reason"] == "INVALID_BLOCK_TOKEN"
        assert r.body_length == len(r.body)
        assert r.header("x-amzn-ErrorType").startswith("ValidationException")
        assert untouched(out)
        r = http_impl.exchange(sock, get(f"/snapshots/{s.snap}/blocks"))  # no out: bytes
        assert r.status == 200 and len(json.loads(r.body)["Blocks"]) == 2


def test_put_a_numpy_block(http_impl, ebs_server):
    s = ebs_server
    data = np.frombuffer(block(9), dtype=np.uint8)
    with connect(s) as sock:
        r = http_impl.exchange(sock, b"POST /snapshots HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Length: 17\r\n\r\n", b'{"VolumeSize": 1}')
        assert r.status == 201
        snap = json.loads(r.body)["SnapshotId"]
        head = (f"PUT /snapshots/{snap}/blocks/7 HTTP/1.1\r\nHost: x\r\n"
                f"Content-Length: {B}\r\nx-amz-Data-Length: {B}\r\n"
                f"x-amz-Checksum: {b64sha(data)}\r\nx-amz-Checksum-Algorithm: SHA256\r\n\r\n")
        r = http_impl.exchange(sock, head.encode(), data.reshape(512, 1024))
        assert r.status == 201 and r.header("x-amz-Checksum") == b64sha(data)
    s.ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=1,
                            Checksum=b64sha(hashlib.sha256(data).digest()),
                            ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    token = s.ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"][0]["BlockToken"]
    got = s.ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=7, BlockToken=token)
    assert got["BlockData"].read() == data.tobytes()


def test_server_faults(http_impl, ebs_server):
    s = ebs_server
    out = np.empty(B, np.uint8)
    try:
        s.set_faults(corrupt_rate=1.0)
        with connect(s) as sock:
            r = http_impl.exchange(sock, get(block_target(s, 0)), out=out)
        assert r.digest != hashlib.sha256(s.blocks[0]).digest()
        assert r.digest == hashlib.sha256(out).digest()
        s.set_faults(corrupt_rate=0.0, truncate_rate=1.0)
        with connect(s) as sock, pytest.raises(http_impl.IncompleteBody) as ei:
            http_impl.exchange(sock, get(block_target(s, 0)), out=out)
        assert (ei.value.received, ei.value.expected) == (B // 2, B)
        s.set_faults(truncate_rate=0.0, reset_rate=1.0)
        with connect(s) as sock, pytest.raises(http_impl.IncompleteBody) as ei:
            http_impl.exchange(sock, get(block_target(s, 0)), out=out)
        assert ei.value.received <= B // 3 and ei.value.expected == B
        s.set_faults(reset_rate=0.0, stall_rate=1.0, stall_s=2.0)
        with connect(s) as sock, pytest.raises(socket.timeout):
            t0 = time.monotonic()
            http_impl.exchange(sock, get(block_target(s, 0)), out=out, timeout_s=0.3)
        assert 0.25 < time.monotonic() - t0 < 1.5
    finally:
        s.set_faults(corrupt_rate=0.0, truncate_rate=0.0, reset_rate=0.0, stall_rate=0.0)


# -- byte-exact cases against tiny raw servers -----------------------------------------------

def test_body_in_many_small_segments(http_impl, raw_server):
    data = block(3, 200_000)
    srv = raw_server(segments(ok_head(len(data)), 7) + segments(data, 1000, 0.0))
    out = sentinel_array(B)
    with srv.connect() as sock:
        r = http_impl.exchange(sock, get("/"), out=out)
    assert r.body_length == len(data) and bytes(out[:len(data)]) == data
    assert untouched(out[len(data):]) and r.digest == hashlib.sha256(data).digest()


def test_head_and_body_in_one_segment(http_impl, raw_server):
    data = block(4, 3000)
    srv = raw_server([ok_head(len(data)) + data])
    out = sentinel_array(10_000)
    with srv.connect() as sock:
        r = http_impl.exchange(sock, get("/"), out=out)
        r2 = http_impl.exchange(sock, get("/"), out=out[1:])  # same answer, kept alive
    assert r.body_length == r2.body_length == len(data) and r.keep_alive
    assert bytes(out[1:1 + len(data)]) == data and out[0] == data[0]
    assert srv.connections == 1 and len(srv.requests) == 2


def test_last_block_of_an_odd_image_is_short(http_impl, raw_server):
    data = block(5, B - 12345)
    srv = raw_server([ok_head(len(data)), data])
    big = sentinel_array(B + 2)
    with srv.connect() as sock:
        r = http_impl.exchange(sock, get("/"), out=big[1:1 + B])
    assert r.body_length == len(data) and bytes(big[1:1 + len(data)]) == data
    assert untouched(big[1 + len(data):]) and untouched(big[:1])


@pytest.mark.parametrize("to_out", [True, False])
def test_chunked_bodies(http_impl, raw_server, to_out):
    data = block(6, 300_001)
    wire = chunked(data, [1, 65536, 3, 100_000, 17])
    srv = raw_server([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                      *segments(wire, 50_000)])
    out = sentinel_array(B) if to_out else None
    with srv.connect() as sock:
        r = http_impl.exchange(sock, get("/"), out=out)
    assert r.body_length == len(data) and r.keep_alive
    if to_out:
        assert bytes(out[:len(data)]) == data and untouched(out[len(data):])
        assert r.digest == hashlib.sha256(data).digest() and r.body is None
    else:
        assert r.body == data and r.digest is None


def test_chunk_extensions_and_trailers(http_impl, raw_server):
    wire = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip-not, chunked\r\n\r\n")
    srv = raw_server([wire])
    with srv.connect() as sock, pytest.raises(http_impl.ProtocolError, match="Transfer-Enc"):
        http_impl.exchange(sock, get("/"))
    wire = (b"HTTP/1.1 200 OK\r\ntransfer-encoding:  Chunked \r\n\r\n"
            b"5 ; name=value\r\nhello\r\n6\nworld!\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n")
    srv = raw_server([wire])
    with srv.connect() as sock:
        r = http_impl.exchange(sock, get("/"))
    assert r.body == b"helloworld!" and r.keep_alive


def test_100_continue_is_skipped(http_impl, raw_server):
    data = block(7, 5000)
    srv = raw_server([b"HTTP/1.1 100 Continue\r\n\r\n", 0.02,
                      b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + ok_head(len(data)),
                      data])
    out = np.empty(len(data), np.uint8)
    with srv.connect() as sock:
        r = http_impl.exchange(sock, b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\n"
                               b"Content-Length: 3\r\n\r\n", b"abc", out)
    assert r.status == 200 and bytes(out) == data
    assert [k for k, _ in r.headers] == ["Content-Length"]
    assert srv.requests[0].endswith(b"\r\n\r\nabc")


@pytest.mark.parametrize("head,keep_alive", [
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc", False),
    (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\nContent-Length: 3\r\n\r\nabc", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc", False),
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc", True),
    (b"HTTP/1.1 200\r\ncontent-length: 3\r\n\r\nabc", True),
    (b"HTTP/1.1 200 OK\nContent-Length: 3\n\nabc", True),
])
def test_keep_alive_rules(http_impl, raw_server, head, keep_alive):
    srv = raw_server([head, "close"])
    with srv.connect() as sock:
        r = http_impl.exchange(sock, get("/"))
    assert r.body == b"abc" and r.keep_alive is keep_alive


@pytest.mark.parametrize("to_out", [True, False])
def test_body_delimited_by_eof(http_impl, raw_server, to_out):
    data = block(8, 70_000)
    srv = raw_server([b"HTTP/1.1 200 OK\r\n\r\n", *segments(data, 30_000), "close"])
    out = sentinel_array(B) if to_out else None
    with srv.connect() as sock:
        r = http_impl.exchange(sock, get("/"), out=out)
    assert r.body_length == len(data) and not r.keep_alive
    assert (bytes(out[:len(data)]) if to_out else r.body) == data
    # exactly full: EOF right after the last byte that fits is fine; one more is too many
    srv = raw_server([b"HTTP/1.1 200 OK\r\n\r\n", data, "close"])
    with srv.connect() as sock:
        assert http_impl.exchange(sock, get("/"), out=np.empty(len(data), np.uint8)) \
            .body_length == len(data)
    with srv.connect() as sock, pytest.raises(http_impl.BodyTooLarge):
        http_impl.exchange(sock, get("/"), out=np.empty(len(data) - 1, np.uint8))


@pytest.mark.parametrize("head,status", [
    (b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", 204),
    (b"HTTP/1.1 304 Not Modified\r\n\r\n", 304),
])
def test_responses_without_a_body(http_impl, raw_server, head, status):
    srv = raw_server([head])
    with srv.connect() as sock:
        r = http_impl.exchange(sock, get("/"))
        assert (r.status, r.body, r.keep_alive) == (status, b"", True)


def test_head_request_has_no_body(http_impl, raw_server):
    srv = raw_server([ok_head(B)])
    out = sentinel_array(B)
    with srv.connect() as sock:
        r = http_impl.exchange(sock, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", out=out)
    assert r.body_length == 0 and r.digest == hashlib.sha256(b"").digest() and untouched(out)


def test_truncated_body(http_impl, raw_server):
    srv = raw_server([ok_head(B), block(1, 1000), "close"])
    with srv.connect() as sock, pytest.raises(http_impl.IncompleteBody) as ei:
        http_impl.exchange(sock, get("/"), out=np.empty(B, np.uint8))
    assert (ei.value.received, ei.value.expected) == (1000, B)
    assert isinstance(ei.value, ConnectionError) and "1000 of 524288" in str(ei.value)
    srv = raw_server([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",
                      "close"])
    with srv.connect() as sock, pytest.raises(http_impl.IncompleteBody) as ei:
        http_impl.exchange(sock, get("/"))
    assert (ei.value.received, ei.value.expected) == (3, None)


def test_reset_mid_body(http_impl, raw_server):
    srv = raw_server([ok_head(B), block(1, 5000), 0.05, "reset"])
    with srv.connect() as sock, pytest.raises(http_impl.IncompleteBody) as ei:
        http_impl.exchange(sock, get("/"), out=np.empty(B, np.uint8))
    assert (ei.value.received, ei.value.expected) == (5000, B)


@pytest.mark.parametrize("script,started", [
    (["close"], False),
    (["reset"], False),
    ([b"HTTP/1.1 200 OK\r\nContent-Le", "close"], True),
    ([b"HTTP/1.1 100 Continue\r\n\r\n", 0.02, "reset"], True),
])
def test_connection_ends_before_a_head(http_impl, raw_server, script, started):
    srv = raw_server(script)
    with srv.connect() as sock, pytest.raises(http_impl.ConnectionClosed) as ei:
        http_impl.exchange(sock, get("/"))
    assert ei.value.response_started is started
    assert isinstance(ei.value, ConnectionError)


def test_peer_gone_while_sending(http_impl):
    # The peer resets as soon as it accepts; a 16 MiB body cannot all fit in socket buffers,
    # so the send (or the read after it) meets the reset.
    listener = socket.create_server(("127.0.0.1", 0))
    connected = threading.Event()

    def kill():
        conn, _ = listener.accept()
        connected.wait(10)  # a reset racing connect() would fail the connect instead
        reset(conn)

    t = threading.Thread(target=kill)
    t.start()
    with listener, socket.create_connection(listener.getsockname()[:2], timeout=10) as sock:
        connected.set()
        t.join()
        time.sleep(0.05)
        with pytest.raises(http_impl.ConnectionClosed) as ei:
            http_impl.exchange(sock, b"PUT / HTTP/1.1\r\nContent-Length: 16777216\r\n\r\n",
                               np.zeros(1 << 24, np.uint8))
    assert ei.value.response_started is False


def test_stall_times_out_per_wait(http_impl, raw_server):
    srv = raw_server([ok_head(1000), block(1, 500), 0.3, block(2, 400), 5.0])
    t0 = time.monotonic()
    with srv.connect() as sock, pytest.raises(socket.timeout):
        # each pause is shorter than timeout_s (progress resets it); the last one is not
        http_impl.exchange(sock, get("/"), out=np.empty(1000, np.uint8), timeout_s=0.5)
    assert 0.75 < time.monotonic() - t0 < 2.0
    # None means the socket's own timeout
    srv = raw_server([5.0])
    with srv.connect(timeout=0.2) as sock, pytest.raises(socket.timeout):
        t0 = time.monotonic()
        http_impl.exchange(sock, get("/"))
    assert time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_body_larger_than_out(http_impl, raw_server, framing):
    data = block(1, 4096)
    if framing == "length":
        wire = ok_head(len(data)) + data
    else:
        wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(data, [3000])
    srv = raw_server([wire])
    big = sentinel_array(8192)
    with srv.connect() as sock, pytest.raises(http_impl.BodyTooLarge):
        http_impl.exchange(sock, get("/"), out=big[100:100 + 4095])
    if framing == "length":
        assert untouched(big)  # refused from Content-Length, before any write
    else:  # the first chunk landed, and was zeroed when the second did not fit
        assert not big[100:3100].any() and untouched(big[:100]) and untouched(big[3100:])


def test_other_body_bounds(http_impl, raw_server):
    srv = raw_server([b"HTTP/1.1 404 Not Found\r\nContent-Length: 5000\r\n\r\n" + bytes(5000)])
    with srv.connect() as sock, pytest.raises(http_impl.BodyTooLarge):
        http_impl.exchange(sock, get("/"), out=np.empty(B, np.uint8), max_other_body=4999)
    with srv.connect() as sock:
        assert http_impl.exchange(sock, get("/"), max_other_body=5000).body == bytes(5000)
    srv = raw_server([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      + chunked(bytes(40_000), [20_000])])
    with srv.connect() as sock, pytest.raises(http_impl.BodyTooLarge):
        http_impl.exchange(sock, get("/"), max_other_body=30_000)


MALFORMED = [
    b"HTTP/2 200 OK\r\n\r\n",
    b"HTTP/2.0 200 OK\r\n\r\n",
    b"ICY 200 OK\r\n\r\n",
    b"<html>hello</html>",
    b"HTTP/1.1 20 OK\r\n\r\n",
    b"HTTP/1.1 099 Low\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 200OK\r\n\r\n",
    b"HTTP/1.1 200 O\x00K\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n: empty\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nName : x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nA: x\ry\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nA: \x7f\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1,1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 9223372036854775808\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3 x\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\rx",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8000000000000000\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\rX",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * 5000 + b"1\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + b"X: y\r\n" * 11000,
    b"HTTP/1.1 100 Continue\r\n\r\n" * 17 + b"HTTP/1.1 200 OK\r\n\r\n",
]


@pytest.mark.parametrize("wire", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_responses(http_impl, wire):
    sock = ScriptedSocket([wire, b"\r\n\r\n"])
    with pytest.raises(http_impl.ProtocolError):
        http_impl.exchange(sock, get("/"))


def test_malformed_over_tcp_and_waiting_for_no_more(http_impl, raw_server):
    # A peer that is not speaking HTTP is caught from its first bytes, not after a timeout.
    srv = raw_server([b"SSH-2.0-OpenSSH\r\n", 5.0])
    with srv.connect() as sock, pytest.raises(http_impl.ProtocolError, match="HTTP/"):
        http_impl.exchange(sock, get("/"), timeout_s=3)


def test_head_size_limit(http_impl, raw_server):
    def head_of(total: int) -> bytes:
        base = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: \r\n\r\n"
        return base.replace(b"X: ", b"X: " + b"a" * (total - len(base)))

    srv = raw_server([head_of(65536)])
    with srv.connect() as sock:
        r = http_impl.exchange(sock, get("/"))
    assert len(head_of(65536)) == 65536 and r.header("X") == "a" * (65536 - 43)
    srv = raw_server([head_of(65537), 5.0])
    with srv.connect() as sock, pytest.raises(http_impl.ProtocolError, match="64 KiB"):
        http_impl.exchange(sock, get("/"), timeout_s=3)
    many = b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * 10000 + b"Content-Length: 2\r\n\r\nok"
    srv = raw_server([many])
    with srv.connect() as sock:
        r = http_impl.exchange(sock, get("/"))
    assert len(r.headers) == 10001 and r.body == b"ok"


def test_header_values_are_latin1_and_trimmed(http_impl):
    wire = b"HTTP/1.1 200 Caf\xe9\r\nX-A: \t caf\xe9 \t\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n"
    r = http_impl.exchange(ScriptedSocket([wire]), get("/"))
    assert r.reason == "Caf\xe9" and r.headers[:2] == [("X-A", "caf\xe9"), ("X-Empty", "")]


def test_arguments_are_checked(http_impl):
    sock = ScriptedSocket([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    with pytest.raises(ValueError, match="out"):
        http_impl.exchange(sock, get("/"), out=b"read-only")
    with pytest.raises(ValueError, match="out"):
        http_impl.exchange(sock, get("/"), out=np.zeros((4, 4), np.uint8)[:, 1])
    with pytest.raises(TypeError, match="head"):
        http_impl.exchange(sock, "GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(ValueError, match="timeout_s"):
        http_impl.exchange(sock, get("/"), timeout_s=-1)
    with pytest.raises(ValueError, match="max_other_body"):
        http_impl.exchange(sock, get("/"), max_other_body=-1)
    for out in (bytearray(4), memoryview(bytearray(4)), np.zeros(2, np.uint16), bytearray()):
        r = http_impl.exchange(ScriptedSocket([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]),
                               get("/"), out=out)
        assert r.body_length == 0


def test_errors_are_shared_and_pickle(http_impl):
    import pickle

    for name in ("ConnectionClosed", "IncompleteBody", "ProtocolError", "BodyTooLarge",
                 "ExchangeError", "Response"):
        assert getattr(http_impl, name) is getattr(_http_py, name)
    assert issubclass(_http_py.ConnectionClosed, ConnectionError)
    assert issubclass(_http_py.ProtocolError, OSError)
    e = pickle.loads(pickle.dumps(_http_py.IncompleteBody(5, 10)))
    assert (e.received, e.expected, e.errno) == (5, 10, None)
    e = pickle.loads(pickle.dumps(_http_py.ConnectionClosed("x", response_started=True)))
    assert e.response_started and str(e) == "x"


def test_mmap_destination(http_impl, raw_server, tmp_path):
    import mmap

    data = block(11, 100_000)
    srv = raw_server([ok_head(len(data)), data])
    with mmap.mmap(-1, 200_000) as m, srv.connect() as sock:
        r = http_impl.exchange(sock, get("/"), out=m)
        assert r.body_length == len(data) and m[:len(data)] == data


# -- the two implementations agree -----------------------------------------------------------

def _both():
    kinds = ["python"] if NO_EXTENSIONS else ["native", "python"]
    return [load_http_impl(k) for k in kinds]


@st.composite
def streams(draw):
    length = draw(st.sampled_from([0, 1, 100, B - 1, B, B + 1, 3 * B])
                  | st.integers(0, 3 * B))
    seed = draw(st.integers(0, 2**32 - 1))
    data = np.random.default_rng(seed).bytes(length)
    framing = draw(st.sampled_from(["length", "chunked", "eof"]))
    if framing == "length":
        wire = ok_head(length) + data
    elif framing == "chunked":
        sizes = draw(st.lists(st.integers(1, B), max_size=6))
        wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(data, sizes)
    else:
        wire = b"HTTP/1.1 200 OK\r\n\r\n" + data
    if draw(st.booleans()):
        wire = b"HTTP/1.1 100 Continue\r\n\r\n" + wire
    cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    parts = [wire[a:b] for a, b in zip([0] + cuts, cuts + [len(wire)])]
    return data, framing, parts


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.integers(0, 4096), st.integers(0, 1000), st.booleans())
def test_native_and_twin_agree_on_random_streams(stream, offset, slack, hash_body):
    data, framing, parts = stream
    results = []
    for impl in _both():
        big = sentinel_array(offset + len(data) + slack + 64)
        out = big[offset:offset + len(data) + slack]
        r = impl.exchange(ScriptedSocket(parts), get("/"), out=out, hash_body=hash_body)
        assert bytes(out[:len(data)]) == data
        assert untouched(big[:offset]) and untouched(big[offset + len(data):])
        results.append(r)
    r = results[0]
    assert r.body_length == len(data) and r.keep_alive is (framing != "eof")
    assert r.digest == (hashlib.sha256(data).digest() if hash_body else None)
    assert all(x == r for x in results)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2 * B), st.lists(st.integers(1, 200_000), min_size=1, max_size=8),
       st.integers(0, 100))
def test_native_and_twin_agree_over_a_socketpair(length, sizes, offset):
    data = block(length, length)
    wire = ok_head(length) + data
    for impl in _both():
        a, b = socket.socketpair()
        with a, b:
            def write(b=b):
                i = 0
                for n in sizes * (len(wire) // sum(sizes) + 1):
                    b.sendall(wire[i:i + n])
                    i += n
                    if i >= len(wire):
                        return
            t = threading.Thread(target=write)
            t.start()
            big = sentinel_array(offset + length + 10)
            r = impl.exchange(a, get("/"), out=big[offset:], timeout_s=10)
            t.join()
        assert r.body_length == length and bytes(big[offset:offset + length]) == data
        assert untouched(big[:offset]) and untouched(big[offset + length:])


def test_native_and_twin_agree_on_malformed_and_error_answers():
    for wire in MALFORMED + [b"HTTP/1.1 404 Nope\r\nContent-Length: 2\r\n\r\n{}",
                             b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"]:
        bytewise = [wire[i:i + 1] for i in range(len(wire))] if len(wire) < 4000 else [wire]
        for parts in ([wire], bytewise):
            outcomes = []
            for impl in _both():
                try:
                    outcomes.append(impl.exchange(ScriptedSocket(parts), get("/")))
                except OSError as exc:
                    outcomes.append((type(exc), str(exc)))
            assert all(o == outcomes[0] for o in outcomes), wire[:80]


# -- memory, the GIL and signals -------------------------------------------------------------

@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_block_get_allocates_no_body_sized_python_memory(http_impl, raw_server, tls):
    # A raw server, not EBSServer: tracemalloc counts every thread, and EBSServer's 64 KiB
    # request reads would be measured instead of the client.
    if http_impl is _http_py and tls:
        pytest.skip("the twin is measured on plain sockets only (ssl.recv_into is its cost)")
    data = block(13)
    srv = raw_server([ok_head(B, "x-amz-Checksum: abc\r\nDate: today\r\n") + data], tls=tls)
    out = np.empty(B, np.uint8)
    with srv.connect() as sock:
        http_impl.exchange(sock, get("/"), out=out)  # warm up
        gc.collect()
        tracemalloc.start()
        try:
            for _ in range(3):
                tracemalloc.reset_peak()
                r = http_impl.exchange(sock, get("/"), out=out)
                peak = tracemalloc.get_traced_memory()[1]
                assert peak < 64 * 1024, peak
        finally:
            tracemalloc.stop()
    assert bytes(out) == data and r.digest == hashlib.sha256(data).digest()


def test_known_length_bodies_are_whole_and_cut_ones_leak_nothing(http_impl, raw_server):
    # A body with a Content-Length (a 1 MB list page) is received into one bytes object of
    # that length; when the connection cuts it short, that object is dropped, never returned.
    n = 1_200_000
    data = bytes(range(256)) * (n // 256) + b"x" * (n % 256)
    whole = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n + data
    srv = raw_server([whole])
    with srv.connect() as sock:
        r = http_impl.exchange(sock, get("/"), max_other_body=2 * n)
        assert type(r.body) is bytes and r.body == data and r.body_length == n
        assert http_impl.exchange(sock, get("/"), max_other_body=2 * n).body == data
    cut = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n + data[:n // 2], "close"]
    srv = raw_server(cut)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(8):
            with srv.connect() as sock, pytest.raises(http_impl.IncompleteBody) as ei:
                http_impl.exchange(sock, get("/"), max_other_body=2 * n)
            assert (ei.value.received, ei.value.expected) == (n // 2, n)
            del ei
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < n // 2, grown


def test_other_threads_run_while_waiting(http_impl, raw_server):
    data = block(12, B)
    srv = raw_server([0.6, ok_head(B) + data])
    out = np.empty(B, np.uint8)
    result = {}

    def fetch():
        with srv.connect() as sock:
            result["r"] = http_impl.exchange(sock, get("/"), out=out)

    assert spins_while_waiting(fetch) > 10_000  # the blocked exchange did not hold the GIL
    assert result["r"].body_length == B and bytes(out) == data


class Interrupted(Exception):
    pass


def _interrupted_within(exchange, seconds: float = 2.0) -> None:
    """Runs ``exchange()`` with a SIGALRM handler raising Interrupted armed for 0.3 s, and
    checks that the handler's exception ends it within ``seconds``."""
    def handler(signum, frame):
        raise Interrupted

    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        t0 = time.monotonic()
        with pytest.raises(Interrupted):
            exchange()
        assert time.monotonic() - t0 < seconds
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_signal_handler_interrupts_a_blocked_exchange(http_impl, raw_server):
    srv = raw_server([30.0])
    with srv.connect(timeout=None) as sock:
        _interrupted_within(lambda: http_impl.exchange(sock, get("/")))


# -- sockets in blocking mode (how the client's transport leaves plain connections) ----------

def _blocking(srv):
    sock = srv.connect(timeout=None)
    assert sock.gettimeout() is None
    return sock


@pytest.mark.parametrize("hash_body", [True, False])
def test_blocking_socket_reads_a_block_in_segments(http_impl, raw_server, hash_body):
    data = block(21, B)
    # the body in uneven pieces with pauses, so whole-part reads come back short and resume
    srv = raw_server(segments(ok_head(B), 5) + segments(data[:300_000], 70_001, 0.01)
                     + [0.05, data[300_000:]])
    out = sentinel_array(B + 9)
    with _blocking(srv) as sock:
        r = http_impl.exchange(sock, get("/"), out=out[3:], timeout_s=5, hash_body=hash_body)
    assert r.body_length == B and bytes(out[3:3 + B]) == data
    assert untouched(out[:3]) and untouched(out[3 + B:])
    assert r.digest == (hashlib.sha256(data).digest() if hash_body else None)


def test_blocking_socket_times_out_per_wait(http_impl, raw_server):
    srv = raw_server([ok_head(1000), block(1, 500), 0.3, block(2, 400), 5.0])
    t0 = time.monotonic()
    with _blocking(srv) as sock, pytest.raises(socket.timeout):
        http_impl.exchange(sock, get("/"), out=np.empty(1000, np.uint8), timeout_s=0.5)
    assert 0.75 < time.monotonic() - t0 < 2.0
    srv = raw_server([5.0])  # no head at all
    t0 = time.monotonic()
    with _blocking(srv) as sock, pytest.raises(socket.timeout):
        http_impl.exchange(sock, get("/"), timeout_s=0.2)
    assert time.monotonic() - t0 < 1.0


def _rcvtimeo_us(sock) -> int:
    sec, usec = struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
    return sec * 1_000_000 + usec


def _set_rcvtimeo_us(sock, us: int) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                    struct.pack("ll", us // 1_000_000, us % 1_000_000))


def test_blocking_socket_receive_slice_is_set_when_it_differs():
    # The native reader waits in 250 ms SO_RCVTIMEO slices; a pooled connection keeps its slice,
    # so it is read back first and set only when it differs (the kernel keeps it in clock ticks,
    # rounded up: up to 10 ms more than was set counts as the same).
    impl = load_http_impl("native")
    answer = ok_head(3) + b"abc"
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        with client, server:
            for before, after in ((0, (250_000, 260_000)), (256_000, (256_000, 256_000)),
                                  (400_000, (250_000, 260_000)), (100_000, (250_000, 260_000))):
                if before:
                    _set_rcvtimeo_us(client, before)
                    before = _rcvtimeo_us(client)  # as the kernel rounded it
                server.sendall(answer)
                r = impl.exchange(client, get("/"), timeout_s=5)
                assert r.body == b"abc" and server.recv(4096).startswith(b"GET / ")
                got = _rcvtimeo_us(client)
                if after[0] == after[1]:
                    assert got == before  # within a tick of the slice: left alone
                else:
                    assert after[0] <= got < after[1]


class _Alarm(Exception):
    pass


_CHUNKED_200 = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("how", ["timeout", "blocking", "tls"])
@pytest.mark.parametrize("script,error,landed", [
    ([ok_head(B), block(1, 5000), 0.05, "reset"], "IncompleteBody", 5000),
    ([ok_head(B), block(1, 1000), "close"], "IncompleteBody", 1000),
    ([ok_head(B), block(1, 3000), 5.0], "timeout", 3000),  # stalls mid-body
    ([ok_head(B), block(1, 3000), 5.0], "signal", 3000),  # a handler raises mid-body
    ([_CHUNKED_200 + b"bb8\r\n" + block(1, 3000) + b"XX"], "ProtocolError", 3000),
    ([_CHUNKED_200 + b"bb8\r\n" + block(1, 3000) + b"\r\n", "close"], "IncompleteBody",
     3000),
], ids=["reset", "close", "stall", "signal", "bad-framing", "chunked-close"])
def test_a_cut_body_leaves_zeros_where_it_landed_and_nothing_else(
        http_impl, raw_server, how, script, error, landed):
    # Whatever ends a 200 body early, the bytes it wrote into out are zeroed before the error
    # leaves, and the memory around them (out continues past the block) is left as it was.
    srv = raw_server(script, tls=how == "tls")
    big = sentinel_array(B + 9000)
    out = big[7:7 + B + 4000]
    sock = srv.connect(timeout=None) if how == "blocking" else srv.connect()
    expected = {"timeout": socket.timeout, "signal": _Alarm}.get(error) or getattr(http_impl,
                                                                                 error)
    old = None
    if error == "signal":
        def alarm(signum, frame):
            raise _Alarm()
        old = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, 0.4)
    try:
        with sock, pytest.raises(expected):
            http_impl.exchange(sock, get("/"), out=out,
                               timeout_s=0.4 if error == "timeout" else 10)
    finally:
        if old is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    assert not big[7:7 + landed].any()
    assert untouched(big[:7]) and untouched(big[7 + landed:])


@pytest.mark.parametrize("script,error,got", [
    ([ok_head(B), block(1, 5000), 0.05, "reset"], "IncompleteBody", 5000),
    ([ok_head(B), block(1, 1000), "close"], "IncompleteBody", 1000),
    (["close"], "ConnectionClosed", None),
])
def test_blocking_socket_cut_bodies(http_impl, raw_server, script, error, got):
    srv = raw_server(script)
    with _blocking(srv) as sock, pytest.raises(getattr(http_impl, error)) as ei:
        http_impl.exchange(sock, get("/"), out=np.empty(B, np.uint8), timeout_s=5)
    if got is not None:
        assert ei.value.received == got


def test_blocking_socket_chunked_and_eof_bodies(http_impl, raw_server):
    data = block(5, 100_000)
    srv = raw_server([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      + chunked(data, [1, 40_000, 7, 59_992])])
    out = sentinel_array(B)
    with _blocking(srv) as sock:
        r = http_impl.exchange(sock, get("/"), out=out, timeout_s=5)
    assert bytes(out[:len(data)]) == data and untouched(out[len(data):]) and r.keep_alive
    srv = raw_server([b"HTTP/1.1 200 OK\r\n\r\n", data[:50_000], 0.02, data[50_000:], "close"])
    with _blocking(srv) as sock:
        r = http_impl.exchange(sock, get("/"), out=out, timeout_s=5)
    assert r.body_length == len(data) and bytes(out[:len(data)]) == data
    assert not r.keep_alive


def test_blocking_python_socket_with_a_nonblocking_fd(http_impl, raw_server):
    # Python thinks the socket blocks, but its fd was switched behind its back: the exchange
    # must neither spin nor fail, and must still honour timeout_s.
    import fcntl
    import os

    data = block(6, 200_000)
    srv = raw_server([ok_head(len(data)), 0.1, data], [5.0])
    with _blocking(srv) as sock:
        fd = sock.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        out = np.empty(B, np.uint8)
        r = http_impl.exchange(sock, get("/"), out=out, timeout_s=5)
        assert bytes(out[:len(data)]) == data and r.digest == hashlib.sha256(data).digest()
        t0 = time.monotonic()
        with pytest.raises(socket.timeout):
            http_impl.exchange(sock, get("/"), timeout_s=0.3)
        assert 0.25 < time.monotonic() - t0 < 1.5


def test_blocking_socket_signal_during_a_body(http_impl, raw_server):
    srv = raw_server([ok_head(B), block(1, 1000), 30.0])
    with _blocking(srv) as sock:
        _interrupted_within(lambda: http_impl.exchange(sock, get("/"), out=np.empty(B, np.uint8),
                                                       timeout_s=60))


# -- lower_headers and idle_check ---------------------------------------------------------------

def test_lower_headers(http_impl, raw_server):
    srv = raw_server([b"HTTP/1.1 200 OK\r\nX-Amz-Checksum: abc\r\nSet-Thing: 1\r\n"
                      b"set-thing:  2 \r\nContent-Length: 3\r\nX-Latin: \xe9\r\n\r\nxyz"])
    with srv.connect() as sock:
        r = http_impl.exchange(sock, get("/"), lower_headers=True)
        r2 = http_impl.exchange(sock, get("/"))
    assert r.headers == {"x-amz-checksum": "abc", "set-thing": "1, 2", "content-length": "3",
                         "x-latin": "\xe9"}
    assert list(r.headers) == ["x-amz-checksum", "set-thing", "content-length", "x-latin"]
    assert r.headers == _http_py.lower_fields(r2.headers)
    assert r.header("SET-THING") == "1, 2" and r2.header("set-thing") == "1"
    assert r.body == r2.body == b"xyz"


def test_lower_headers_known_names_in_any_case_and_near_misses(http_impl, raw_server):
    # the names every EBS answer carries, in odd cases, beside names of the same lengths that
    # differ in one character (the native module keeps the known ones as ready-made str)
    fields = [("X-AMZN-REQUESTID", "r"), ("x-amzn-requestix", "n1"), ("DaTe", "d"),
              ("datf", "n2"), ("Content-Length", "2"), ("X-Amz-Checksum-Algorithm", "SHA256"),
              ("x-amz-checksum-algorithM", "again"), ("Connection", "keep-alive"),
              ("x-amz-checksun", "n3")]
    head = "HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields) + "\r\nok"
    srv = raw_server([head.encode()])
    with srv.connect() as sock:
        r = http_impl.exchange(sock, get("/"), lower_headers=True)
    assert r.headers == _http_py.lower_fields(fields) == {
        "x-amzn-requestid": "r", "x-amzn-requestix": "n1", "date": "d", "datf": "n2",
        "content-length": "2", "x-amz-checksum-algorithm": "SHA256, again",
        "connection": "keep-alive", "x-amz-checksun": "n3"}
    assert all(type(k) is str and k.islower() for k in r.headers) and r.body == b"ok"


def test_idle_check_finds_a_connection_closed_while_idle(http_impl, raw_server):
    srv = raw_server([ok_head(3) + b"abc", 0.05, "close"])
    with srv.connect() as sock:
        r = http_impl.exchange(sock, get("/"), idle_check=True)  # healthy: no effect
        assert r.body == b"abc" and r.keep_alive
        time.sleep(0.3)  # the server closes the connection it kept alive
        with pytest.raises(http_impl.StaleConnection) as ei:
            http_impl.exchange(sock, get("/again"), idle_check=True)
    assert isinstance(ei.value, http_impl.ConnectionClosed)
    assert ei.value.response_started is False
    assert len(srv.requests) == 1  # nothing was sent on the stale connection
    assert http_impl.StaleConnection is _http_py.StaleConnection
