"""The fast data path: blocks straight from the socket into caller memory, and back."""
from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
import tracemalloc
from unittest import mock

import numpy as np
import pytest

import ebsfast
from ebsfast import exceptions as exc
from ebsfast.testing import BLOCK_SIZE, EBSServer

from _blockdata import block, client_for, one_block_snapshot

N_BLOCKS = 6


@pytest.fixture(scope="module", params=["http", "https"])
def setup(request):
    with EBSServer(tls=request.param == "https") as s:
        c = client_for(s, retries={"mode": "standard", "total_max_attempts": 6},
                       read_timeout=2, max_pool_connections=16)
        snap = c.start_snapshot(VolumeSize=1)["SnapshotId"]
        blocks = {i: block(1000 + i) for i in range(N_BLOCKS)}
        for i, d in blocks.items():
            c.put_snapshot_block(SnapshotId=snap, BlockIndex=i, BlockData=d)
        c.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=N_BLOCKS)
        tokens = {b["BlockIndex"]: b["BlockToken"]
                  for b in c.list_snapshot_blocks(SnapshotId=snap)["Blocks"]}
        yield s, c, snap, blocks, tokens


@pytest.mark.parametrize("offset", [0, 1, 7, 4096 + 3, BLOCK_SIZE - 1])
def test_bytes_land_exactly_and_neighbours_untouched(setup, offset):
    s, c, snap, blocks, tokens = setup
    big = np.full(3 * BLOCK_SIZE, 0xA5, dtype=np.uint8)
    r = c.get_snapshot_block_into(SnapshotId=snap, BlockIndex=2, BlockToken=tokens[2],
                                  Out=big[offset:offset + BLOCK_SIZE])
    assert r["DataLength"] == BLOCK_SIZE and "BlockData" not in r
    assert big[offset:offset + BLOCK_SIZE].tobytes() == blocks[2]
    assert (big[:offset] == 0xA5).all() and (big[offset + BLOCK_SIZE:] == 0xA5).all()
    assert r["Checksum"] == base64.b64encode(hashlib.sha256(blocks[2]).digest()).decode()


@pytest.mark.parametrize("make", [
    lambda n: bytearray(n), lambda n: memoryview(bytearray(n)),
    lambda n: np.empty(n // 8, dtype=np.uint64), lambda n: np.zeros((2, n // 2), np.uint8),
])
def test_out_kinds_and_larger_out(setup, make):
    s, c, snap, blocks, tokens = setup
    out = make(BLOCK_SIZE + 4096 if not isinstance(make(8), np.ndarray) else BLOCK_SIZE)
    c.get_snapshot_block_into(SnapshotId=snap, BlockIndex=1, BlockToken=tokens[1], Out=out)
    assert memoryview(out).cast("B")[:BLOCK_SIZE].tobytes() == blocks[1]


def test_bad_out_is_refused_before_any_request(setup):
    s, c, snap, blocks, tokens = setup
    before = s.requests_served
    args = dict(SnapshotId=snap, BlockIndex=0, BlockToken=tokens[0])
    with pytest.raises(ValueError, match="read-only"):
        c.get_snapshot_block_into(Out=bytes(BLOCK_SIZE), **args)
    with pytest.raises(ValueError, match="524288"):
        c.get_snapshot_block_into(Out=bytearray(BLOCK_SIZE - 1), **args)
    with pytest.raises(ValueError, match="contiguous"):
        c.get_snapshot_block_into(Out=np.zeros(2 * BLOCK_SIZE, np.uint8)[::2], **args)
    with pytest.raises(TypeError, match="writable buffer"):
        c.get_snapshot_block_into(Out=object(), **args)
    with pytest.raises(exc.ParamValidationError):
        c.get_snapshot_block_into(SnapshotId=snap, BlockIndex=0, Out=bytearray(BLOCK_SIZE))
    with pytest.raises(TypeError, match="keyword"):
        c.get_snapshot_block_into(snap)
    assert s.requests_served == before


def test_get_snapshot_block_reads_through_the_same_path(setup):
    s, c, snap, blocks, tokens = setup
    c.get_snapshot_block(SnapshotId=snap, BlockIndex=3, BlockToken=tokens[3])  # warm
    # not through urllib3's request path, and into one block-sized buffer, nothing more
    with mock.patch.object(type(c._transport), "send",
                           side_effect=AssertionError("urllib3's request path was taken")):
        tracemalloc.start()
        try:
            r = c.get_snapshot_block(SnapshotId=snap, BlockIndex=3, BlockToken=tokens[3])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert BLOCK_SIZE <= peak < BLOCK_SIZE * 5 // 4, peak
    assert r["BlockData"].read() == blocks[3]


def test_without_verification(setup):
    s, c, snap, blocks, tokens = setup
    out = np.empty(BLOCK_SIZE, np.uint8)
    c.get_snapshot_block_into(SnapshotId=snap, BlockIndex=4, BlockToken=tokens[4], Out=out,
                              VerifyChecksum=False)
    assert out.tobytes() == blocks[4]


def test_many_threads_one_client(setup):
    s, c, snap, blocks, tokens = setup
    big = np.zeros((32, BLOCK_SIZE), np.uint8)
    errors = []

    def work(row):
        try:
            i = row % N_BLOCKS
            c.get_snapshot_block_into(SnapshotId=snap, BlockIndex=i, BlockToken=tokens[i],
                                      Out=big[row])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(r,)) for r in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for row in range(32):
        assert big[row].tobytes() == blocks[row % N_BLOCKS]


@pytest.fixture(scope="module", params=["http", "https"])
def server_process(request):
    """A server in its own process, so tracemalloc sees the client's allocations alone."""
    import subprocess
    import sys
    from types import SimpleNamespace

    tls = request.param == "https"
    proc = subprocess.Popen([sys.executable, "-m", "ebsfast.testing", "--port", "0"]
                            + (["--tls"] if tls else []), stdout=subprocess.PIPE, text=True)
    info = {}
    while "aws_secret_access_key" not in info or (tls and "ca_file" not in info):
        line = proc.stdout.readline()
        assert line, "the server exited before printing its endpoint"
        k, _, v = line.strip().partition("=")
        info[k] = v
    yield SimpleNamespace(endpoint_url=info["endpoint_url"], region=info["region"],
                          access_key=info["aws_access_key_id"],
                          secret_key=info["aws_secret_access_key"], tls=tls,
                          ca_file=info.get("ca_file"))
    proc.terminate()
    proc.wait(timeout=10)


def test_put_sends_from_the_callers_buffer(server_process):
    c = client_for(server_process)
    snap = c.start_snapshot(VolumeSize=1)["SnapshotId"]
    data = np.frombuffer(block(77), dtype=np.uint8).copy()
    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
    args = dict(SnapshotId=snap, BlockIndex=0, BlockData=data, DataLength=BLOCK_SIZE,
                Checksum=checksum, ChecksumAlgorithm="SHA256")
    c.put_snapshot_block(**args)
    tracemalloc.start()
    try:
        c.put_snapshot_block(**args)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < BLOCK_SIZE // 4, peak  # the block was sent from `data`, not a copy
    c.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=1)
    t = c.list_snapshot_blocks(SnapshotId=snap)["Blocks"][0]["BlockToken"]
    out = np.empty(BLOCK_SIZE, np.uint8)
    c.get_snapshot_block_into(SnapshotId=snap, BlockIndex=0, BlockToken=t, Out=out)
    assert (out == data).all()


def test_get_allocates_nothing_block_sized_in_the_client(server_process):
    c = client_for(server_process)
    snap = c.start_snapshot(VolumeSize=1)["SnapshotId"]
    c.put_snapshot_block(SnapshotId=snap, BlockIndex=0, BlockData=block(3))
    c.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=1)
    t = c.list_snapshot_blocks(SnapshotId=snap)["Blocks"][0]["BlockToken"]
    out = np.empty(BLOCK_SIZE, np.uint8)
    args = dict(SnapshotId=snap, BlockIndex=0, BlockToken=t, Out=out)
    c.get_snapshot_block_into(**args)
    tracemalloc.start()
    try:
        for _ in range(5):
            c.get_snapshot_block_into(**args)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < BLOCK_SIZE // 4, peak
    assert out.tobytes() == block(3)


# -- faults --------------------------------------------------------------------------------

@pytest.fixture()
def faulty():
    with EBSServer() as s:
        c = client_for(s, retries={"mode": "standard", "total_max_attempts": 5}, read_timeout=1)
        d = block(5)
        snap, token = one_block_snapshot(c, d)
        with mock.patch.object(c._retry, "_sleep", lambda _: None):
            yield s, c, snap, d, token


@pytest.mark.parametrize("knob", ["reset_rate", "truncate_rate", "corrupt_rate"])
def test_faults_retry_to_the_right_bytes(faulty, knob):
    s, c, snap, d, token = faulty
    s.set_faults(**{knob: 0.5, "seed": 5})
    retries = 0
    for _ in range(8):
        out = np.zeros(BLOCK_SIZE, np.uint8)
        r = c.get_snapshot_block_into(SnapshotId=snap, BlockIndex=0, BlockToken=token, Out=out)
        assert out.tobytes() == d
        retries += r["ResponseMetadata"]["RetryAttempts"]
    assert retries > 0


@pytest.mark.parametrize("knob,error", [
    ("reset_rate", (exc.ResponseStreamingError, exc.ConnectionClosedError)),
    ("truncate_rate", (exc.ResponseStreamingError, exc.ConnectionClosedError)),
    ("corrupt_rate", exc.ChecksumMismatchError),
])
def test_exhausted_faults_leave_no_unverified_bytes(faulty, knob, error):
    s, c, snap, d, token = faulty
    s.set_faults(**{knob: 1.0})
    out = np.full(BLOCK_SIZE, 0x5A, np.uint8)
    accepted = s.connections_accepted
    with pytest.raises(error):
        c.get_snapshot_block_into(SnapshotId=snap, BlockIndex=0, BlockToken=token, Out=out)
    # whatever arrived was zeroed (the last attempt's bytes, at most what the server sent: a
    # third of the block before a reset, half before a clean close, all of a corrupted one),
    # and nothing past it was touched
    landed = BLOCK_SIZE - len(out.tobytes().lstrip(b"\0"))
    sent = {"reset_rate": BLOCK_SIZE // 3, "truncate_rate": BLOCK_SIZE // 2,
            "corrupt_rate": BLOCK_SIZE}[knob]
    assert landed == sent if knob != "reset_rate" else landed <= sent
    assert (out[landed:] == 0x5A).all()
    if knob != "corrupt_rate":
        assert s.connections_accepted - accepted >= 4  # each retry came on a new connection
    s.set_faults(**{knob: 0.0})
    c.get_snapshot_block_into(SnapshotId=snap, BlockIndex=0, BlockToken=token, Out=out)
    assert out.tobytes() == d


@pytest.mark.parametrize("method", ["get_snapshot_block_into", "get_snapshot_block"])
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_body_paused_half_way_is_wiped_and_its_connection_never_reused(tls, method):
    # The server sends half a block, then pauses with the connection open before the rest.
    # Every attempt times out; what it wrote is zeroed, and its connection is closed. Put back
    # in the pool, such a connection would look clean (nothing more to read yet), so only the
    # number of connections the server accepted tells.
    with EBSServer(tls=tls) as s:
        d = block(8)
        snap, token = one_block_snapshot(client_for(s), d)
        s.set_faults(body_stall_rate=1.0, stall_s=10.0, operations={"GetSnapshotBlock"})
        attempts = 3
        c = client_for(s, retries={"mode": "standard", "total_max_attempts": attempts},
                       read_timeout=0.3)
        big = np.full(BLOCK_SIZE + 9000, 0x5A, np.uint8)
        out = big[7:]  # unaligned, and longer than a block
        accepted = s.connections_accepted
        with mock.patch.object(c._retry, "_sleep", lambda _: None), \
                pytest.raises(exc.ReadTimeoutError):
            if method == "get_snapshot_block":
                c.get_snapshot_block(SnapshotId=snap, BlockIndex=0, BlockToken=token)
            else:
                c.get_snapshot_block_into(SnapshotId=snap, BlockIndex=0, BlockToken=token,
                                          Out=out)
        assert s.connections_accepted - accepted == attempts
        if method == "get_snapshot_block_into":
            half = BLOCK_SIZE // 2  # what the server sent before pausing, all of which landed
            assert not big[7:7 + half].any()
            assert (big[:7] == 0x5A).all() and (big[7 + half:] == 0x5A).all()
        s.set_faults(body_stall_rate=0.0)
        c.get_snapshot_block_into(SnapshotId=snap, BlockIndex=0, BlockToken=token, Out=out)
        assert out[:BLOCK_SIZE].tobytes() == d and (big[7 + BLOCK_SIZE:] == 0x5A).all()


def test_stall_is_a_read_timeout(faulty):
    s, c, snap, d, token = faulty
    s.set_faults(stall_rate=1.0, stall_s=3.0, operations={"GetSnapshotBlock"})
    one = client_for(s, retries={"total_max_attempts": 1}, read_timeout=0.3)
    with pytest.raises(exc.ReadTimeoutError):
        one.get_snapshot_block_into(SnapshotId=snap, BlockIndex=0, BlockToken=token,
                                    Out=bytearray(BLOCK_SIZE))
    s.set_faults(stall_rate=0.0)


# -- a short last block (an image whose size is not a multiple of 512 KiB) -------------------

def test_short_block_from_a_minimal_server():
    data = block(9)[:4096 + 11]
    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nx-amzn-RequestId: r-1\r\nContent-Type: "
                b"application/octet-stream\r\nx-amz-Data-Length: " + str(len(data)).encode() +
                b"\r\nx-amz-Checksum: " + checksum.encode() +
                b"\r\nx-amz-Checksum-Algorithm: SHA256\r\nContent-Length: " +
                str(len(data)).encode() + b"\r\n\r\n" + data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    c = ebsfast.client("ebs", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                       aws_access_key_id="a", aws_secret_access_key="b")
    out = np.full(BLOCK_SIZE, 0x77, np.uint8)
    r = c.get_snapshot_block_into(SnapshotId="snap-1", BlockIndex=0, BlockToken="t", Out=out)
    t.join(5)
    listener.close()
    assert r["DataLength"] == len(data)
    assert out[:len(data)].tobytes() == data and (out[len(data):] == 0x77).all()


# -- columnar listing --------------------------------------------------------------------------

def test_columns_match_the_dict_pages():
    with EBSServer() as s:
        c = client_for(s)
        parent = c.start_snapshot(VolumeSize=1)["SnapshotId"]
        zero = bytes(BLOCK_SIZE)
        for i in range(0, 500, 2):
            c.put_snapshot_block(SnapshotId=parent, BlockIndex=i, BlockData=zero)
        c.complete_snapshot(SnapshotId=parent, ChangedBlocksCount=250)
        child = c.start_snapshot(VolumeSize=1, ParentSnapshotId=parent)["SnapshotId"]
        for i in list(range(0, 40, 2)) + [1001, 1003]:
            c.put_snapshot_block(SnapshotId=child, BlockIndex=i, BlockData=block(i))
        c.complete_snapshot(SnapshotId=child, ChangedBlocksCount=22)

        pag = c.get_paginator("list_snapshot_blocks")
        cols = pag.paginate(SnapshotId=parent, PaginationConfig={"PageSize": 100}).columns()
        full = pag.paginate(SnapshotId=parent,
                            PaginationConfig={"PageSize": 100}).build_full_result()
        assert cols.indexes.dtype == np.int64
        assert cols.indexes.tolist() == [b["BlockIndex"] for b in full["Blocks"]]
        assert len(cols) == 250 and cols.volume_size == 1 and cols.block_size == BLOCK_SIZE
        # tokens from the columns are valid tokens: read a block with one
        out = np.empty(BLOCK_SIZE, np.uint8)
        c.get_snapshot_block_into(SnapshotId=parent, BlockIndex=int(cols.indexes[3]),
                                  BlockToken=cols.tokens[3], Out=out)
        assert out.tobytes() == zero
        every = list(range(0, 500, 2))
        cut = {"PageSize": 100, "MaxItems": 130}
        it = pag.paginate(SnapshotId=parent, PaginationConfig=cut)
        some = it.columns()
        assert some.indexes.tolist() == every[:130]
        # the resume token is the one iterating the dict pages leaves, and resumes where
        # the columns stopped (inside a page, then at a page boundary)
        dicts = pag.paginate(SnapshotId=parent, PaginationConfig=cut).build_full_result()
        assert it.resume_token is not None and it.resume_token == dicts["NextToken"]
        it2 = pag.paginate(SnapshotId=parent, PaginationConfig={
            "PageSize": 100, "MaxItems": 70, "StartingToken": it.resume_token})
        assert it2.columns().indexes.tolist() == every[130:200]
        it3 = pag.paginate(SnapshotId=parent, PaginationConfig={
            "PageSize": 100, "StartingToken": it2.resume_token})
        assert it3.columns().indexes.tolist() == every[200:] and it3.resume_token is None

        changed = c.get_paginator("list_changed_blocks").paginate(
            FirstSnapshotId=parent, SecondSnapshotId=child,
            PaginationConfig={"PageSize": 100}).columns()
        assert changed.indexes.tolist() == list(range(0, 40, 2)) + [1001, 1003]
        assert changed.n_changed == 20 and changed.n_added == 2 and changed.n_removed == 0


# -- pooled connections: the idle stack and connections closed while idle ---------------------

def _get_answer(data: bytes) -> bytes:
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    return (f"HTTP/1.1 200 OK\r\nx-amzn-RequestId: r1\r\nContent-Length: {len(data)}\r\n"
            f"x-amz-Data-Length: {len(data)}\r\nx-amz-Checksum: {digest}\r\n"
            f"x-amz-Checksum-Algorithm: SHA256\r\n\r\n").encode() + data


@pytest.mark.parametrize("checksum_lines", [
    "",
    "x-amz-Checksum: {digest}\r\nx-amz-Checksum-Algorithm: CRC32\r\n",
    "x-amz-Checksum-Algorithm: SHA256\r\n",
], ids=["no-checksum", "other-algorithm", "algorithm-only"])
def test_a_block_without_its_checksum_is_never_returned_as_checked(raw_server, checksum_lines):
    data = block(78)
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    answer = (f"HTTP/1.1 200 OK\r\nx-amzn-RequestId: r1\r\nContent-Length: {len(data)}\r\n"
              f"x-amz-Data-Length: {len(data)}\r\n{checksum_lines.format(digest=digest)}"
              f"\r\n").encode() + data
    srv = raw_server([answer])
    c = ebsfast.client("ebs", endpoint_url=f"http://127.0.0.1:{srv.port}",
                       region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE",
                       aws_secret_access_key="secret",
                       config=ebsfast.Config(retries={"mode": "standard",
                                                      "total_max_attempts": 2}))
    args = dict(SnapshotId="snap-0123456789abcdef0", BlockIndex=1, BlockToken="t+/=")
    big = np.full(BLOCK_SIZE + 100, 0x5A, np.uint8)
    with mock.patch.object(c._retry, "_sleep", lambda _: None):
        with pytest.raises(exc.ChecksumMissingError) as info:
            c.get_snapshot_block_into(Out=big[3:], **args)
        assert isinstance(info.value, exc.ChecksumMismatchError)  # handled as one everywhere
        assert "block 1 of snap-0123456789abcdef0" in str(info.value).lower()
        assert len(srv.requests) == 2  # retried as a mismatch is
        assert not big[3:3 + BLOCK_SIZE].any()  # the unchecked bytes were zeroed
        assert (big[:3] == 0x5A).all() and (big[3 + BLOCK_SIZE:] == 0x5A).all()
        with pytest.raises(exc.ChecksumMissingError):
            c.get_snapshot_block(**args)
    # asked for unchecked, it is given as it came
    r = c.get_snapshot_block_into(Out=big[3:], VerifyChecksum=False, **args)
    assert big[3:3 + BLOCK_SIZE].tobytes() == data and r["DataLength"] == BLOCK_SIZE
    c.close()


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_connection_closed_while_idle_is_replaced_without_a_retry(raw_server, tls):
    data = block(77)
    # each connection answers its first request, then the server closes it while it is idle
    srv = raw_server([_get_answer(data), 0.05, "close"], tls=tls)
    c = ebsfast.client("ebs", endpoint_url=f"{'https' if tls else 'http'}://127.0.0.1:{srv.port}",
                       region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE",
                       aws_secret_access_key="secret", verify=srv.ca_file,
                       config=ebsfast.Config(retries={"mode": "standard"}))
    out = np.zeros(BLOCK_SIZE, np.uint8)
    args = dict(SnapshotId="snap-0123456789abcdef0", BlockIndex=1, BlockToken="t+/=", Out=out)
    for n in range(1, 4):
        r = c.get_snapshot_block_into(**args)
        assert r["ResponseMetadata"]["RetryAttempts"] == 0 and out.tobytes() == data
        assert srv.connections == n and len(srv.requests) == n  # nothing went to a dead one
        time.sleep(0.3)
    assert all(b"amz-sdk-request: attempt=1" in req for req in srv.requests)
    c.close()


def test_idle_connections_are_kept_up_to_max_pool_connections(setup):
    s, c, snap, blocks, tokens = setup
    c2 = client_for(s, max_pool_connections=3)
    out = np.zeros((8, BLOCK_SIZE), np.uint8)
    barrier = threading.Barrier(8)

    def fetch(i):
        barrier.wait()
        c2.get_snapshot_block_into(SnapshotId=snap, BlockIndex=i % N_BLOCKS,
                                   BlockToken=tokens[i % N_BLOCKS], Out=out[i])

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        assert out[i].tobytes() == blocks[i % N_BLOCKS]
    idle = c2._transport._idle
    assert 1 <= len(idle) <= 3
    conns = [conn for _, conn, _ in idle]
    c2.close()
    assert c2._transport._idle == [] and all(conn.sock is None for conn in conns)
    # and a closed client opens new connections on its next call
    r = c2.get_snapshot_block_into(SnapshotId=snap, BlockIndex=0, BlockToken=tokens[0],
                                   Out=out[0])
    assert r["DataLength"] == BLOCK_SIZE and out[0].tobytes() == blocks[0]


_FULL = {"x-amzn-requestid": "r1", "date": "d", "x-amz-data-length": "524288",
         "x-amz-checksum": "c=", "x-amz-checksum-algorithm": "SHA256"}


@pytest.mark.parametrize("headers", [
    _FULL,
    {**_FULL, "x-amz-id-2": "host"},
    {k: v for k, v in _FULL.items() if k != "x-amzn-requestid"},
    {k: v for k, v in _FULL.items() if k != "x-amzn-requestid"} | {"x-amz-request-id": "r2"},
    {**_FULL, "x-amzn-requestid": ""},
    {"x-amzn-requestid": "r1"},
])
@pytest.mark.parametrize("attempt,maxed", [(1, False), (2, False), (1, True)])
def test_block_result_is_the_general_one(headers, attempt, maxed):
    # the GetSnapshotBlock epilogue written out equals response_metadata + parse_output_headers
    from ebsfast import model, wire
    from ebsfast.client import _block_result
    from ebsfast.retries import RetryPolicy

    call = RetryPolicy("standard", 3).start("GetSnapshotBlock")
    for _ in range(attempt):
        call.before_attempt()
    call.max_attempts_reached = maxed
    expected = {"ResponseMetadata": wire.response_metadata(200, headers, call.metadata())}
    wire.parse_output_headers(model.OPERATIONS["GetSnapshotBlock"], headers, expected)
    expected["_length"] = 5
    got = _block_result(200, headers, call, 5)
    assert got == expected and list(got) == list(expected)
    assert list(got["ResponseMetadata"]) == list(expected["ResponseMetadata"])


def test_a_connection_in_use_while_the_client_closes_is_not_kept(setup):
    s, c, snap, blocks, tokens = setup
    c2 = client_for(s)
    out = np.zeros(BLOCK_SIZE, np.uint8)
    c2.get_snapshot_block_into(SnapshotId=snap, BlockIndex=0, BlockToken=tokens[0], Out=out)
    pool, conn, _ = c2._transport.checkout()  # as an exchange in flight holds it
    c2.close()
    c2._transport.checkin(pool, conn, True)  # the exchange ends after close()
    assert c2._transport._idle == [] and conn.sock is None
    r = c2.get_snapshot_block_into(SnapshotId=snap, BlockIndex=1, BlockToken=tokens[1], Out=out)
    assert r["DataLength"] == BLOCK_SIZE and out.tobytes() == blocks[1]
