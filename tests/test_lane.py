"""The local server's GetSnapshotBlock lane (ebsfast._lane and its twin ebsfast._lane_py).

The lane may only take over requests the server's general path would have served the same way:
what it accepts, native or twin, the general path parses to the same GET and its signature check
passes; the native module accepts exactly what the twin accepts, on signed heads and on heads
broken in every way we could think of. Blocks of completed snapshots are found without the
server (``find``) only where the service's own reading of the path and token names the same
block, and answered with a head shaped as the general path's. Through a running server the lane
serves boto3 and ebsfast, and hands back (with nothing sent) every request that is not plainly
its own.
"""
from __future__ import annotations

import importlib
import socket
import time

import boto3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ebsfast
from ebsfast import _backend, signing
from ebsfast.testing import BLOCK_SIZE, EBSServer
from ebsfast.testing import _auth

from _blockdata import block, client_for, one_block_snapshot

AK = "AKIDEXAMPLELANE00001"
SK = "lane/secret+key/for/the/tests/0123456789"
REGION = "us-east-1"
TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


def load_lane(kind: str):
    if kind == "native":
        if _backend.NO_EXTENSIONS:
            pytest.skip("EBSFAST_NO_EXTENSIONS=1: the native lane is not under test")
        return importlib.import_module("ebsfast._lane")
    return importlib.import_module("ebsfast._lane_py")


TOKEN_KEY = bytes(range(32))
HEAD_PIECES = (b"HTTP/1.1 200 OK\r\nid: ", b"\r\nDate: ", b"\r\nx-amz-Checksum: ", b"\r\n\r\n")


def make_lane(kind: str, **kw):
    args = dict(access_key=AK, secret_key=SK, session_token=None, region=REGION, verify=True,
                max_skew_s=900.0, block_size=BLOCK_SIZE, lookup=lambda path, query: None,
                token_key=TOKEN_KEY, request_id_prefix="01234567-89ab-cdef-0123-",
                head_pieces=HEAD_PIECES)
    args.update(kw)
    return load_lane(kind).BlockLane(**args)


def amz_now(offset_s: float = 0.0) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() + offset_s))


def signed_head(path: str = "/snapshots/snap-0123456789abcdef0/blocks/7",
                query: str = "blockToken=AAUBAQ%2Bx%2F%3D", *, amz_date: str | None = None,
                access_key: str = AK, secret_key: str = SK, region: str = REGION,
                service: str = "ebs", extra: list | None = None, token: str | None = None,
                payload_hash: str | None = None, host: str = "127.0.0.1:8333") -> bytes:
    """A GetSnapshotBlock head as a SigV4 client sends it (without the final CRLF CRLF)."""
    amz_date = amz_date or amz_now()
    headers = [("Host", host), ("User-Agent", "tests/lane"),
               ("X-Amz-Date", amz_date)]
    if token is not None:
        headers.append(("X-Amz-Security-Token", token))
    if payload_hash is not None:
        headers.append(("X-Amz-Content-SHA256", payload_hash))
    headers += extra or []
    signed = [(n.lower(), v) for n, v in headers if n.lower() != "user-agent"]
    creq, names = signing.canonical_request("GET", path, query, signed,
                                            payload_hash or _auth._EMPTY_SHA256)
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    key = signing.derive_signing_key(secret_key, amz_date[:8], region, service)
    sig = signing.signature(key, signing.string_to_sign(amz_date, scope, creq))
    headers.append(("Authorization", f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                                     f"SignedHeaders={names}, Signature={sig}"))
    target = f"{path}?{query}" if query else path
    return "\r\n".join([f"GET {target} HTTP/1.1"] + [f"{n}: {v}" for n, v in headers]).encode()


def general_path_serves(head: bytes, *, session_token: str | None = None) -> bool:
    """Whether the server's general path parses ``head`` as a keep-alive GET with no body and
    its signature check passes."""
    server = EBSServer(access_key=AK, secret_key=SK)
    try:
        req = server._read_request(None, bytearray(head + b"\r\n\r\n"))
    except Exception:
        return False
    if req.method != "GET" or not req.keep_alive or req.body:
        return False
    try:
        _auth.verify(req, access_key=AK, secret_key=SK, session_token=session_token,
                     region=REGION, max_skew_s=900.0)
    except Exception:
        return False
    return True


# -- what the lane accepts -----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["native", "python"])
def test_a_signed_get_is_accepted(kind):
    lane = make_lane(kind)
    head = signed_head()
    assert lane.accepts(head) == ("/snapshots/snap-0123456789abcdef0/blocks/7",
                                  "blockToken=AAUBAQ%2Bx%2F%3D")
    assert general_path_serves(head)
    # announced payload hashes: the empty body's, or UNSIGNED-PAYLOAD signed as announced
    assert lane.accepts(signed_head(payload_hash=_auth._EMPTY_SHA256))
    assert lane.accepts(signed_head(payload_hash="UNSIGNED-PAYLOAD"))
    assert lane.accepts(signed_head(extra=[("Connection", "Keep-Alive"),
                                           ("Content-Length", "0")]))


@pytest.mark.parametrize("kind", ["native", "python"])
def test_the_lane_caches_one_key_per_day_and_follows_the_date(kind):
    lane = make_lane(kind, max_skew_s=3 * 86400.0)
    for offset in (0, -86400, 0, 86400, -86400):
        assert lane.accepts(signed_head(amz_date=amz_now(offset))), offset


@pytest.mark.parametrize("kind", ["native", "python"])
@pytest.mark.parametrize("amz_date", ["20000229T123456Z", "19700101T000000Z", "20991231T235959Z",
                                      "20260231T000000Z", "16000301T000000Z"])
def test_the_skew_bound_is_measured_from_the_signed_time(kind, amz_date):
    import calendar

    d = amz_date
    signed_at = calendar.timegm((int(d[:4]), int(d[4:6]), int(d[6:8]), int(d[9:11]),
                                 int(d[11:13]), int(d[13:15]), 0, 0, 0))
    skew = abs(time.time() - signed_at)
    head = signed_head(amz_date=amz_date)
    assert make_lane(kind, max_skew_s=skew + 60).accepts(head)
    assert make_lane(kind, max_skew_s=skew - 60).accepts(head) is None


@pytest.mark.parametrize("kind", ["native", "python"])
@pytest.mark.parametrize("amz_date", ["20260100T000000Z", "20261301T000000Z", "20260132T000000Z",
                                      "20260101T240000Z", "20260101T006000Z", "20260101T000060Z",
                                      "00000101T000000Z", "2026010lT000000Z", "20260101 000000Z"])
def test_dates_out_of_their_calendar_range_go_to_the_general_path(kind, amz_date):
    lane = make_lane(kind, max_skew_s=1e12)
    if amz_date[:4].isdigit() and amz_date[4:8].isdigit() and amz_date[8] == "T":
        head = signed_head(amz_date=amz_date)  # signed as it stands
    else:  # not a date a signer takes: signed with another, then swapped in
        head = signed_head(amz_date="20260101T000000Z").replace(b"20260101T000000Z",
                                                                amz_date.encode(), 1)
    assert lane.accepts(head) is None


REFUSED = {
    "wrong secret": lambda: signed_head(secret_key="not-the-secret"),
    "other access key": lambda: signed_head(access_key="AKIDSOMEONEELSE00000"),
    "other region": lambda: signed_head(region="eu-west-1"),
    "other service": lambda: signed_head(service="s3"),
    "skewed 16 minutes": lambda: signed_head(amz_date=amz_now(-16 * 60)),
    "ahead 16 minutes": lambda: signed_head(amz_date=amz_now(16 * 60)),
    "session token not expected is fine, but a missing one is not": None,
    "no authorization": lambda: signed_head().split(b"\r\nAuthorization")[0],
    "POST": lambda: b"POST" + signed_head()[3:],
    "HTTP/1.0": lambda: signed_head().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    "connection close": lambda: signed_head(extra=[("Connection", "close")]),
    "a body": lambda: signed_head(extra=[("Content-Length", "5")]),
    "chunked": lambda: signed_head(extra=[("Transfer-Encoding", "chunked")]),
    "expect": lambda: signed_head(extra=[("Expect", "100-continue")]),
    "repeated header": lambda: signed_head() + b"\r\nhost: 127.0.0.1:8333",
    "folded line": lambda: signed_head() + b"\r\n  folded",
    "no colon": lambda: signed_head() + b"\r\nNoColonHere",
    "space in name": lambda: signed_head() + b"\r\nBad Name: x",
    "latin-1 value": lambda: signed_head() + b"\r\nX-Note: caf\xe9",
    "control byte": lambda: signed_head() + b"\r\nX-Note: a\x01b",
    "bare LF": lambda: signed_head() + b"\r\nX-Note: a\nb",
    "tampered path": lambda: signed_head().replace(b"blocks/7", b"blocks/8", 1),
    "tampered query": lambda: signed_head().replace(b"AAUBAQ", b"AAUBAR", 1),
    "upper-case signed name": lambda: signed_head().replace(b"SignedHeaders=host",
                                                            b"SignedHeaders=Host", 1),
    "presigned": lambda: (b"GET /snapshots/s/blocks/1?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                          b"&X-Amz-Signature=00 HTTP/1.1\r\nHost: h"),
}


@pytest.mark.parametrize("kind", ["native", "python"])
@pytest.mark.parametrize("case", [k for k, v in REFUSED.items() if v is not None])
def test_refused_heads_go_to_the_general_path(kind, case):
    assert make_lane(kind).accepts(REFUSED[case]()) is None


@pytest.mark.parametrize("kind", ["native", "python"])
def test_session_token_must_match_the_servers(kind):
    lane = make_lane(kind, session_token="the-session-token")
    assert lane.accepts(signed_head(token="the-session-token"))
    assert lane.accepts(signed_head(token="another-token")) is None
    assert lane.accepts(signed_head()) is None
    assert general_path_serves(signed_head(token="the-session-token"),
                               session_token="the-session-token")


@pytest.mark.parametrize("kind", ["native", "python"])
def test_without_verification_any_plain_get_is_the_lanes(kind):
    lane = make_lane(kind, verify=False)
    assert lane.accepts(b"GET /snapshots/s/blocks/1?blockToken=t HTTP/1.1\r\nHost: h") == (
        "/snapshots/s/blocks/1", "blockToken=t")
    assert lane.accepts(b"GET /x HTTP/1.1") == ("/x", "")
    assert lane.accepts(b"GET /x HTTP/1.1\r\nConnection: close") is None


@pytest.mark.parametrize("kind", ["native", "python"])
def test_repr_shows_no_secret(kind):
    lane = make_lane(kind, session_token="the-session-token")
    assert SK not in repr(lane) and "the-session-token" not in repr(lane)
    assert AK in repr(lane)


def _mutate(head: bytes, data) -> bytes:
    kind = data.draw(st.sampled_from(["flip", "insert", "delete", "header", "date", "spaces"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(head) - 1))
        return head[:i] + bytes([data.draw(st.integers(0, 255))]) + head[i + 1:]
    if kind == "insert":
        i = data.draw(st.integers(0, len(head)))
        return head[:i] + data.draw(st.sampled_from([b" ", b"\t", b"\r\n", b";", b",", b"/",
                                                     b"A", b":", b"%2F"])) + head[i:]
    if kind == "delete":
        i = data.draw(st.integers(0, len(head) - 1))
        n = data.draw(st.integers(1, 8))
        return head[:i] + head[i + n:]
    if kind == "header":
        name = data.draw(st.sampled_from([b"Host", b"host", b"X-Amz-Date", b"Authorization",
                                          b"Connection", b"Content-Length", b"X-Other"]))
        value = data.draw(st.sampled_from([b"", b"0", b"keep-alive", b"close", b"x y",
                                           b"  padded  "]))
        return head + b"\r\n" + name + b":" + value
    if kind == "date" and b"X-Amz-Date: " in head:
        days = data.draw(st.sampled_from(["00", "31", "32", "99"]))
        month = data.draw(st.sampled_from(["00", "02", "12", "13"]))
        return head.replace(b"X-Amz-Date: " + head.split(b"X-Amz-Date: ")[1][:16],
                            f"X-Amz-Date: 2026{month}{days}T000000Z".encode(), 1)
    if kind == "spaces":
        return head.replace(b", ", data.draw(st.sampled_from([b",", b",  ", b", \t", b" , "])))
    return head


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(),
       token=st.text(TOKEN_CHARS, min_size=1, max_size=120),
       index=st.integers(0, 2**31),
       skew=st.sampled_from([0, -300, 300, -86400]),
       payload=st.sampled_from([None, _auth._EMPTY_SHA256, "UNSIGNED-PAYLOAD"]),
       mutations=st.integers(0, 3))
def test_native_accepts_what_the_twin_accepts_and_the_twin_only_what_the_server_would(
        data, token, index, skew, payload, mutations):
    from urllib.parse import quote

    head = signed_head(path=f"/snapshots/snap-0abc/blocks/{index}",
                       query=f"blockToken={quote(token, safe='')}",
                       amz_date=amz_now(skew), payload_hash=payload)
    for _ in range(mutations):
        head = _mutate(head, data)
    twin = make_lane("python").accepts(head)
    if twin is not None:
        assert general_path_serves(head)
    if not _backend.NO_EXTENSIONS:
        assert make_lane("native").accepts(head) == twin


# -- through a running server --------------------------------------------------------------

@pytest.fixture
def served():
    with EBSServer() as server:
        if server._lane is None:
            pytest.skip("no vmsplice here (not Linux, or EBSFAST_TESTING_NO_SPLICE=1): the "
                        "server sends every block through its general path")
        snap, tok = one_block_snapshot(client_for(server), block(11))
        yield server, snap, tok


def _raw(server, payload: bytes, responses: int) -> list[tuple[bytes, bytes]]:
    """Send ``payload`` on one connection; read ``responses`` answers as (head, body)."""
    out = []
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(payload)
        buf = b""
        for _ in range(responses):
            while b"\r\n\r\n" not in buf:
                data = s.recv(65536)
                assert data, "the server closed early"
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            while len(buf) < length:
                data = s.recv(1 << 20)
                assert data, "the server closed inside a body"
                buf += data
            out.append((head, buf[:length]))
            buf = buf[length:]
    return out


def _server_head(server, snap: str, tok: str, index: int = 0) -> bytes:
    from urllib.parse import quote

    return _lane_signed(server, f"/snapshots/{snap}/blocks/{index}",
                        f"blockToken={quote(tok, safe='')}")


def _lane_signed(server, path: str, query: str) -> bytes:
    return signed_head(path, query, access_key=server.access_key, secret_key=server.secret_key,
                       host=f"{server.host}:{server.port}")


def test_boto3_and_ebsfast_reads_are_served_by_the_lane(served):
    server, snap, tok = served
    kw = dict(endpoint_url=server.endpoint_url, region_name=server.region,
              aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key)
    before = server._lane.served
    b = boto3.client("ebs", **kw)
    assert b.get_snapshot_block(SnapshotId=snap, BlockIndex=0,
                                BlockToken=tok)["BlockData"].read() == block(11)
    e = ebsfast.client("ebs", **kw)
    out = np.zeros(BLOCK_SIZE + 10, np.uint8)
    r = e.get_snapshot_block_into(SnapshotId=snap, BlockIndex=0, BlockToken=tok,
                                  Out=out[5:5 + BLOCK_SIZE])
    assert r["DataLength"] == BLOCK_SIZE and out[5:5 + BLOCK_SIZE].tobytes() == block(11)
    assert e.get_snapshot_block(SnapshotId=snap, BlockIndex=0,
                                BlockToken=tok)["BlockData"].read() == block(11)
    assert server._lane.served == before + 3


def test_pipelined_and_interleaved_requests_on_one_connection(served):
    server, snap, tok = served
    get = _server_head(server, snap, tok) + b"\r\n\r\n"
    listing = _lane_signed(server, f"/snapshots/{snap}/blocks", "") + b"\r\n\r\n"
    before, counted = server._lane.served, server.requests_served
    answers = _raw(server, get + listing + get + get, 4)
    assert [h.split(b" ")[1] for h, _ in answers] == [b"200"] * 4
    assert answers[0][1] == answers[2][1] == answers[3][1] == block(11)
    assert b'"BlockToken"' in answers[1][1]
    assert server._lane.served == before + 3
    assert server.requests_served == counted + 4


def test_a_head_arriving_byte_by_byte_is_served(served):
    server, snap, tok = served
    payload = _server_head(server, snap, tok) + b"\r\n\r\n"
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(payload)):
            s.send(payload[i:i + 1])
        got = b""
        while len(got) < BLOCK_SIZE or b"\r\n\r\n" not in got:
            data = s.recv(1 << 20)
            assert data
            got += data
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == block(11)


def test_errors_come_from_the_general_path(served):
    server, snap, tok = served
    before = server._lane.served
    bad_token = _server_head(server, snap, tok[:-4] + "AAAA") + b"\r\n\r\n"
    bad_sig = _server_head(server, snap, tok).replace(b"Signature=", b"Signature=0", 1)
    bad_sig = bad_sig[:-1] + b"\r\n\r\n"
    missing = _server_head(server, snap, tok, index=1) + b"\r\n\r\n"
    answers = _raw(server, bad_token + missing + bad_sig, 3)
    assert answers[0][0].startswith(b"HTTP/1.1 400 ") and b"INVALID_BLOCK_TOKEN" in answers[0][1]
    assert answers[1][0].startswith(b"HTTP/1.1 400 ")
    assert answers[2][0].startswith(b"HTTP/1.1 403 ")
    assert b"InvalidSignatureException" in answers[2][0]
    assert server._lane.served == before


def test_faults_turn_the_lane_off_while_set(served):
    server, snap, tok = served
    get = _server_head(server, snap, tok) + b"\r\n\r\n"
    before = server._lane.served
    server.set_faults(error_rate=1.0)
    assert _raw(server, get, 1)[0][0].startswith(b"HTTP/1.1 500 ")
    server.set_faults(error_rate=0.0, corrupt_rate=1.0)
    head, body = _raw(server, get, 1)[0]
    assert head.startswith(b"HTTP/1.1 200 ") and body != block(11)
    assert server._lane.served == before
    server.set_faults(corrupt_rate=0.0)
    assert _raw(server, get, 1)[0][1] == block(11)
    assert server._lane.served == before + 1


def test_a_client_gone_mid_block_ends_only_its_connection(served):
    server, snap, tok = served
    get = _server_head(server, snap, tok) + b"\r\n\r\n"
    for _ in range(3):
        s = socket.create_connection((server.host, server.port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(get * 4)
        s.recv(100)
        s.close()
    assert _raw(server, get, 1)[0][1] == block(11)


def test_no_lane_where_it_cannot_serve(tmp_path):
    with EBSServer(record_requests=True) as server:
        assert server._lane is None
    with EBSServer(data_dir=str(tmp_path)) as server:
        assert server._lane is None
    with EBSServer(tls=True) as server:
        assert server._lane is None


# -- direct answers: published blocks found without the server's lookup -------------------

def _token(index: int, snapshot_id: str, expiry: int, key: bytes = TOKEN_KEY) -> str:
    """A block token as the service makes one."""
    import base64
    import struct

    from ebsfast import _lane_py

    payload = b"B" + struct.pack(">QQ", index, expiry) + snapshot_id.encode()
    return base64.b64encode(payload + _lane_py.token_mac(key, payload)).decode()


@pytest.mark.parametrize("kind", ["native", "python"])
def test_token_mac_and_http_date_are_the_twins(kind):
    import email.utils
    import hashlib
    import hmac

    mod = load_lane(kind)
    for payload in (b"", b"B" + bytes(16) + b"snap-1", bytes(range(256)) * 3):
        assert mod.token_mac(TOKEN_KEY, payload) == hmac.new(TOKEN_KEY, payload,
                                                             hashlib.sha256).digest()[:16]
    for t in (0, 59, 86399, 951782400, 1_000_000_000, int(time.time()), 4102444800,
              253402300799):
        assert mod.http_date(t) == email.utils.formatdate(t, usegmt=True), t
    with pytest.raises(ValueError):
        mod.http_date(-1)


@settings(max_examples=300, deadline=None)
@given(t=st.integers(0, 253402300799))
def test_native_http_date_matches_the_email_module(t):
    import email.utils

    mod = load_lane("native") if not _backend.NO_EXTENSIONS else load_lane("python")
    assert mod.http_date(t) == email.utils.formatdate(t, usegmt=True)


def _published(kind):
    lane = make_lane(kind)
    lane.publish("snap-0abc", [3, 1, 2**40], [4096, 8192, 12288],
                 ["A" * 43 + "=", "B" * 43 + "=", "C" * 43 + "="])
    return lane


@pytest.mark.parametrize("kind", ["native", "python"])
def test_find_names_a_published_block_by_a_valid_token(kind):
    from urllib.parse import quote

    lane = _published(kind)
    later = int(time.time()) + 600
    for index, found in ((3, ("A" * 43 + "=", 4096)), (1, ("B" * 43 + "=", 8192)),
                         (2**40, ("C" * 43 + "=", 12288))):
        tok = _token(index, "snap-0abc", later)
        assert lane.find(f"/snapshots/snap-0abc/blocks/{index}",
                         "blockToken=" + quote(tok, safe="")) == found
        assert lane.find(f"/snapshots/snap-0abc/blocks/{index}",
                         "blockToken=" + quote(tok, safe="/=")) == found
    good = "blockToken=" + quote(_token(3, "snap-0abc", later), safe="")
    refused = [
        ("/snapshots/snap-0abc/blocks/3", "blockToken=" + quote(_token(3, "snap-0abc", 5),
                                                                safe="")),  # expired
        ("/snapshots/snap-0abc/blocks/4", good),  # another index
        ("/snapshots/snap-0abd/blocks/3", good),  # another snapshot
        ("/snapshots/snap-0abc/blocks/03x", good),
        ("/snapshots/snap-0abc/blocks/", good),
        ("/snapshots/snap%2D0abc/blocks/3", good),
        ("/snapshots/snap-0abc/blocks/3", good + "&x=1"),
        ("/snapshots/snap-0abc/blocks/3", good.lower()),
        ("/snapshots/snap-0abc/blocks/3", "blockToken=" + quote(
            _token(3, "snap-0abc", later, key=b"another key"), safe="")),
        ("/snapshots/snap-0abc/blocks/5", "blockToken=" + quote(_token(5, "snap-0abc", later),
                                                                safe="")),  # not published
    ]
    for path, query in refused:
        assert lane.find(path, query) is None, (path, query)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), index=st.sampled_from([1, 3, 2**40, 7]),
       expiry=st.sampled_from([0, 2**33, 2**64 - 1]))
def test_native_find_is_the_twins_and_the_services(data, index, expiry):
    from urllib.parse import quote

    tok = _token(index, "snap-0abc", expiry)
    query = "blockToken=" + quote(tok, safe=data.draw(st.sampled_from(["", "/", "=", "/="])))
    path = f"/snapshots/snap-0abc/blocks/{index}"
    for _ in range(data.draw(st.integers(0, 2))):
        which = data.draw(st.sampled_from(["path", "query"]))
        text = path if which == "path" else query
        i = data.draw(st.integers(0, len(text) - 1))
        c = data.draw(st.sampled_from(list("/%+=&?0139aAbB-_ ")))
        text = text[:i] + c + text[i + data.draw(st.integers(0, 1)):]
        path, query = (text, query) if which == "path" else (path, text)
    twin = _published("python").find(path, query)
    if not _backend.NO_EXTENSIONS:
        assert _published("native").find(path, query) == twin
    if twin is not None:  # the service's own reading of the same request agrees
        from ebsfast.testing._server import _parse_query, _route
        from ebsfast.testing._service import _int_param

        op, (snapshot_id, index_s) = _route("GET", path)
        # the index as the service reads it ("01" is 1 there too)
        assert (op, snapshot_id) == ("GetSnapshotBlock", "snap-0abc")
        assert _int_param(index_s, "blockIndex") == index
        assert _parse_query(query)["blockToken"] == tok


def test_direct_answers_look_like_the_general_paths(served):
    import re

    server, snap, tok = served
    get = _server_head(server, snap, tok) + b"\r\n\r\n"
    lane = server._lane
    assert lane.direct
    direct, counted = lane.direct_served, server.requests_served
    sent_at = int(time.time())
    answers = _raw(server, get * 3, 3)
    received_by = time.time()
    assert lane.direct_served == direct + 3 and server.requests_served == counted + 3
    server.set_faults(corrupt_rate=1.0, operations=["PutSnapshotBlock"])  # any fault: off
    assert not lane.direct
    general = _raw(server, get, 1)[0]
    server.set_faults(corrupt_rate=0.0)
    assert lane.direct and lane.direct_served == direct + 3

    def shape(head):
        return re.sub(rb"(x-amzn-RequestId: )[0-9a-f-]{36}|(Date: )[^\r]+", rb"\1\2*", head)

    for head, body in answers:
        assert shape(head) == shape(general[0]) and body == general[1] == block(11)
    ids = [re.search(rb"x-amzn-RequestId: (\S+)", h).group(1) for h, _ in answers + [general]]
    assert len(set(ids)) == 4 and all(re.fullmatch(rb"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}",
                                                   i) for i in ids)
    import email.utils

    for head, _ in answers:  # the second the answer was written
        date = re.search(rb"Date: ([^\r]+)", head).group(1).decode()
        assert sent_at <= email.utils.parsedate_to_datetime(date).timestamp() <= received_by


def test_an_expired_token_is_refused_by_the_general_path(served):
    server, snap, _ = served
    c = client_for(server)
    server.set_faults(block_token_ttl_s=1)
    tok = c.list_snapshot_blocks(SnapshotId=snap)["Blocks"][0]["BlockToken"]
    server.set_faults(block_token_ttl_s=None)
    assert server._lane.direct
    time.sleep(2.2)
    head, body = _raw(server, _server_head(server, snap, tok) + b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 400 ") and b"expired" in body


def test_zero_blocks_and_children_are_served(served):
    server, snap, tok = served
    c = client_for(server)
    child = c.start_snapshot(VolumeSize=1, ParentSnapshotId=snap)["SnapshotId"]
    c.put_snapshot_block(SnapshotId=child, BlockIndex=1, BlockData=bytes(BLOCK_SIZE))
    c.put_snapshot_block(SnapshotId=child, BlockIndex=2, BlockData=block(12))
    c.complete_snapshot(SnapshotId=child, ChangedBlocksCount=2)
    before = server._lane.direct_served
    got = {}
    for b in c.list_snapshot_blocks(SnapshotId=child)["Blocks"]:
        head, body = _raw(server, _server_head(server, child, b["BlockToken"],
                                               index=b["BlockIndex"]) + b"\r\n\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 200 ")
        got[b["BlockIndex"]] = body
    assert got == {0: block(11), 1: bytes(BLOCK_SIZE), 2: block(12)}
    assert server._lane.direct_served == before + 2  # the zero block took the general path


def test_no_direct_answers_on_a_server_clock():
    with EBSServer(clock=lambda: time.time() + 3600) as server:
        if server._lane is None:
            pytest.skip("no vmsplice here: no lane")
        assert not server._lane.direct
