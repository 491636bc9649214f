"""ebsfast's client next to boto3's, answering both from the same canned HTTP responses: error
dicts and messages, ResponseMetadata, request headers and timestamps must come out the same.

Also ebsfast.wire's error parsing against botocore's own parser, for bodies a client-level test
cannot reach cheaply."""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time

import boto3
import botocore.endpoint
import botocore.exceptions
import botocore.parsers
import botocore.session
import pytest
from botocore.awsrequest import HeadersDict
from botocore.config import Config
from botocore.utils import parse_timestamp as botocore_timestamp

import ebsfast
from ebsfast import exceptions, wire

SNAP = "snap-0123456789abcdef0"
RID = ("x-amzn-RequestId", "rid-1")
JSON = ("Content-Type", "application/json")
_SERVICE = botocore.session.get_session().get_service_model("ebs")


class _Stub:
    """An HTTP server on 127.0.0.1 that answers each request with the next of the canned
    ``(status, [(name, value)], body)`` it was given (the last one again once they run out),
    then closes the connection. ``requests`` holds ``(request line, headers, body)``."""

    def __init__(self):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint_url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._answers: list = [(200, [], b"")]
        self._next = 0
        self.requests: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def answer(self, *answers) -> None:
        with self._lock:
            self._answers = list(answers)
            self._next = 0
            self.requests = []

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, body = data.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
                length = int({k.lower(): v for k, v in headers}.get("content-length", 0))
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    body += chunk
                with self._lock:
                    self.requests.append((lines[0], headers, body))
                    status, extra, payload = self._answers[min(self._next,
                                                               len(self._answers) - 1)]
                    self._next += 1
                out = [f"HTTP/1.1 {status} Whatever"]
                out += [f"{k}: {v}" for k, v in extra]
                out += [f"Content-Length: {len(payload)}", "Connection: close", "", ""]
                conn.sendall("\r\n".join(out).encode("latin-1") + payload)
            except OSError:
                return


@pytest.fixture(scope="module")
def stub():
    server = _Stub()
    yield server
    server.close()


def _pair(stub, **retries):
    """(boto3 client, ebsfast client) for ``stub`` with the same settings."""
    config = Config(retries={"mode": "legacy", "total_max_attempts": 1, **retries})
    kwargs = dict(endpoint_url=stub.endpoint_url, region_name="us-east-1",
                  aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                  config=config)
    return boto3.client("ebs", **kwargs), ebsfast.client("ebs", **kwargs)


@pytest.fixture(scope="module")
def clients(stub):
    theirs, ours = _pair(stub)
    yield theirs, ours
    theirs.close()
    ours.close()


def _outcome(call):
    """What a call gave: ("ok", response) or (exception class name, message, response)."""
    try:
        return ("ok", call())
    except Exception as exc:  # noqa: BLE001 - any exception is part of the comparison
        return (type(exc).__name__, str(exc), getattr(exc, "response", None))


def _both(stub, clients, answer, method="list_snapshot_blocks", **params):
    theirs, ours = clients
    stub.answer(answer)
    got_theirs = _outcome(lambda: getattr(theirs, method)(**params))
    stub.answer(answer)
    got_ours = _outcome(lambda: getattr(ours, method)(**params))
    return got_theirs, got_ours


def _same(theirs, ours):
    assert ours == theirs
    if ours[0] != "ok" and ours[2] is not None:
        # key order too, as a caller printing the dict would see it
        assert list(ours[2]) == list(theirs[2])
        assert list(ours[2]["Error"]) == list(theirs[2]["Error"])


# -- errors ------------------------------------------------------------------------------------

_ERRORS = {
    "Reason on a shape without one": (500, [RID, ("x-amzn-ErrorType", "InternalServerException:http://x/")], b'{"message":"boom","Reason":"SOMETHING"}'),  # noqa: E501
    "ConflictException with Reason": (409, [RID, ("x-amzn-ErrorType", "ConflictException")], b'{"message":"c","Reason":"R"}'),  # noqa: E501
    "Reason null": (400, [RID, ("x-amzn-ErrorType", "ValidationException")], b'{"message":"m","Reason":null}'),  # noqa: E501
    "Reason and Message": (404, [RID, ("x-amzn-ErrorType", "ResourceNotFoundException")], b'{"Message":"M","Reason":"SNAPSHOT_NOT_FOUND"}'),  # noqa: E501
    "message and Message": (400, [RID, ("x-amzn-ErrorType", "ValidationException")], b'{"message":"m","Message":"M2"}'),  # noqa: E501
    "text 4xx": (400, [RID], b"Bad thing happened"),
    "empty 4xx": (403, [RID], b""),
    "{} 4xx": (400, [RID], b"{}"),
    "html 4xx": (404, [RID], b"<html><body>nope</body></html>"),
    "ErrorType with namespace": (400, [RID, ("x-amzn-ErrorType", "aws.ebs#ValidationException:http://x")], b'{"message":"m"}'),  # noqa: E501
    "__type and code": (400, [RID], b'{"__type":"ns#ValidationException","code":"OtherCode","message":"m"}'),  # noqa: E501
    "__type only": (400, [RID], b'{"__type":"ns#ValidationException:extra","message":"m"}'),
    "Code": (400, [RID], b'{"Code":"ValidationException","message":"m"}'),
    "code null": (400, [RID], b'{"__type":"ConflictException","code":null}'),
    "__type null": (400, [RID], b'{"__type":null,"message":"m"}'),
    "empty ErrorType": (400, [RID, ("x-amzn-ErrorType", "")], b'{"__type":"ConflictException"}'),  # noqa: E501
    "query error": (400, [RID, ("x-amzn-query-error", "AWS.Legacy;Sender")], b'{"message":"m"}'),  # noqa: E501
    "5xx JSON": (503, [RID, ("x-amzn-ErrorType", "ServiceUnavailable")], b'{"message":"later"}'),  # noqa: E501
    "x-amz-request-id and id-2": (400, [("x-amz-request-id", "r2"), ("x-amz-id-2", "hid"), ("x-amzn-ErrorType", "ValidationException")], b'{"message":"m"}'),  # noqa: E501
    "x-amzn-RequestId and id-2": (400, [RID, ("x-amz-id-2", "hid"), ("x-amzn-ErrorType", "ValidationException")], b'{"message":"m"}'),  # noqa: E501
    "no request id": (400, [("x-amzn-ErrorType", "ValidationException")], b'{"message":"m"}'),
    "unmodeled code": (400, [RID, ("x-amzn-ErrorType", "UnrecognizedClientException")], b'{"message":"m","Reason":"r"}'),  # noqa: E501
    "JSON list": (400, [RID], b"[1,2]"),
    "JSON string": (400, [RID], b'"no"'),
    "Reason a number": (400, [RID, ("x-amzn-ErrorType", "ValidationException")], b'{"message":"m","Reason":5}'),  # noqa: E501
    "message an object": (400, [RID, ("x-amzn-ErrorType", "ValidationException")], b'{"message":{"a":1}}'),  # noqa: E501
}
# 5xx answers with nothing to parse: boto3 uses the status and its reason phrase.
_GENERIC = {
    "5xx empty with ErrorType": (503, [RID, ("x-amzn-ErrorType", "ValidationException")], b""),  # noqa: E501
    "5xx html": (502, [RID], b"<html><body>bad gateway</body></html>"),
    "5xx blank": (500, [RID], b" \r\n "),
}
_WIRE_ONLY = {
    "not UTF-8": (400, [RID], b"\xff\xfe oops"),
    "UTF-8 BOM": (400, [RID], b'\xef\xbb\xbf{"message":"m"}'),
    "html 5xx with space first": (500, [RID], b"  <html>x</html>"),
    "HTML 5xx in capitals": (500, [RID], b"<HTML>x</HTML>"),
    "code a number": (400, [RID], b'{"code":5,"message":"m"}'),
    "JSON null": (400, [RID], b"null"),
}


@pytest.mark.parametrize("name", list(_ERRORS))
def test_error_responses_match_boto3(stub, clients, name):
    status, headers, body = _ERRORS[name]
    theirs, ours = _both(stub, clients, (status, headers + [JSON], body), SnapshotId=SNAP)
    assert theirs[0] != "ok"
    _same(theirs, ours)


@pytest.mark.parametrize("name", list(_GENERIC))
def test_generic_5xx_error_matches_boto3(stub, clients, name):
    # an empty or HTML 5xx body: the status as the code, its phrase, and no RequestId
    status, headers, body = _GENERIC[name]
    theirs, ours = _both(stub, clients, (status, headers + [JSON], body), SnapshotId=SNAP)
    assert theirs[0] == ours[0] == "ClientError"
    assert list(ours[2]["Error"]) == ["Code", "Message"]
    _same(theirs, ours)


def _botocore_error(status: int, headers: list, body: bytes) -> dict:
    """The dict botocore builds for an error answer to ListSnapshotBlocks, before the retry
    handler adds its keys: its rest-json parser, then its modeled error's fields."""
    op = _SERVICE.operation_model("ListSnapshotBlocks")
    parser = botocore.parsers.create_parser("rest-json")
    response = {"status_code": status, "headers": HeadersDict(headers), "body": body}
    parsed = parser.parse(response, op.output_shape)
    botocore.endpoint.Endpoint._add_modeled_error_fields(None, response, parsed, op, parser)
    return parsed


@pytest.mark.parametrize("name", list(_ERRORS) + list(_GENERIC) + list(_WIRE_ONLY))
def test_parse_error_matches_botocore(name):
    status, headers, body = {**_ERRORS, **_GENERIC, **_WIRE_ONLY}[name]
    headers = headers + [JSON]
    theirs = _outcome(lambda: _botocore_error(status, headers, body))
    ours = _outcome(lambda: wire.parse_error(status, {k.lower(): v for k, v in headers}, body))
    assert ours == theirs
    if ours[0] == "ok":
        assert list(ours[1]) == list(theirs[1])
        assert list(ours[1]["Error"]) == list(theirs[1]["Error"])
        assert list(ours[1]["ResponseMetadata"]) == list(theirs[1]["ResponseMetadata"])


def test_error_members_are_the_models():
    for shape in _SERVICE.error_shapes:
        assert wire._ERROR_MEMBERS[shape.name] == tuple(shape.members)
    assert len(wire._ERROR_MEMBERS) == len(_SERVICE.error_shapes)


# -- ResponseMetadata of answers that worked ---------------------------------------------------

_PAGE = b'{"Blocks":[],"VolumeSize":1}'
_METADATA = {
    "x-amzn-RequestId": [RID],
    "none": [],
    "x-amz-request-id": [("x-amz-request-id", "r2")],
    "x-amz-request-id and id-2": [("x-amz-request-id", "r2"), ("x-amz-id-2", "hid")],
    "x-amzn-RequestId and id-2": [RID, ("x-amz-id-2", "hid")],
    "empty x-amzn-RequestId": [("x-amzn-RequestId", ""), ("x-amz-request-id", "r2")],
}


@pytest.mark.parametrize("name", list(_METADATA))
def test_success_metadata_matches_boto3(stub, clients, name):
    answer = (200, _METADATA[name] + [JSON], _PAGE)
    theirs, ours = _both(stub, clients, answer, SnapshotId=SNAP)
    assert theirs[0] == "ok"
    assert ours == theirs
    assert list(ours[1]["ResponseMetadata"]) == list(theirs[1]["ResponseMetadata"])


@pytest.mark.parametrize("name", list(_METADATA))
def test_response_metadata_matches_botocore(name):
    headers = _METADATA[name] + [JSON]
    op = _SERVICE.operation_model("CompleteSnapshot")
    parser = botocore.parsers.create_parser("rest-json")
    response = {"status_code": 202, "headers": HeadersDict(headers), "body": b""}
    theirs = parser.parse(response, op.output_shape)["ResponseMetadata"]
    theirs["RetryAttempts"] = 0
    ours = wire.response_metadata(202, {k.lower(): v for k, v in headers}, {"RetryAttempts": 0})
    assert ours == theirs and list(ours) == list(theirs)


# -- the retry note in ClientError's message ---------------------------------------------------

@pytest.mark.parametrize("metadata", [
    None, {}, {"RetryAttempts": 0}, {"RetryAttempts": 2},
    {"RetryAttempts": 0, "MaxAttemptsReached": True},
    {"RetryAttempts": 4, "MaxAttemptsReached": True},
    {"RetryAttempts": 2, "MaxAttemptsReached": False},
    {"MaxAttemptsReached": True},
    {"RetryAttempts": 1, "RetryQuotaReached": True},
])
def test_client_error_message_matches_botocore(metadata):
    response = {"Error": {"Code": "ValidationException", "Message": "m"}}
    if metadata is not None:
        response["ResponseMetadata"] = metadata
    theirs = botocore.exceptions.ClientError(response, "ListSnapshotBlocks")
    ours = exceptions.ClientError(response, "ListSnapshotBlocks")
    assert str(ours) == str(theirs)


def test_retry_note_after_retries_then_a_final_error(stub, monkeypatch):
    # legacy mode: two retried 500s, then a 400 that is not retried; no attempt limit reached
    theirs, ours = _pair(stub, total_max_attempts=3)
    monkeypatch.setattr(botocore.endpoint.time, "sleep", lambda s: None)
    monkeypatch.setattr(ours._retry, "_sleep", lambda s: None)
    error = (500, [RID, JSON, ("x-amzn-ErrorType", "InternalServerException")],
             b'{"message":"m"}')
    final = (400, [RID, JSON, ("x-amzn-ErrorType", "ValidationException")], b'{"message":"v"}')
    for answers in ([error, error, final], [error]):
        stub.answer(*answers)
        got_theirs = _outcome(lambda: theirs.list_snapshot_blocks(SnapshotId=SNAP))
        stub.answer(*answers)
        got_ours = _outcome(lambda: ours.list_snapshot_blocks(SnapshotId=SNAP))
        assert got_ours == got_theirs
    theirs.close()
    ours.close()


# -- request headers ---------------------------------------------------------------------------

@pytest.mark.parametrize("method,params", [
    ("complete_snapshot", {"SnapshotId": SNAP, "ChangedBlocksCount": True}),
    ("complete_snapshot", {"SnapshotId": SNAP, "ChangedBlocksCount": False}),
    ("put_snapshot_block", {"SnapshotId": SNAP, "BlockIndex": 0, "BlockData": b"x",
                            "DataLength": 1, "Checksum": "A", "ChecksumAlgorithm": "SHA256",
                            "Progress": True}),
])
def test_bool_for_an_integer_header_matches_boto3(stub, clients, method, params):
    theirs, ours = clients
    sent = []
    for client in (theirs, ours):
        stub.answer((202, [RID, JSON], b"{}"))
        _outcome(lambda: getattr(client, method)(**params))
        (_, headers, _), = stub.requests
        sent.append({k.lower(): v for k, v in headers
                     if k.lower() in ("x-amz-changedblockscount", "x-amz-progress")})
    assert sent[0] and sent[1] == sent[0]


# -- timestamps --------------------------------------------------------------------------------

@pytest.fixture
def local_zone():
    """Call with a zone name to make it local time; the old setting comes back after."""
    saved = os.environ.get("TZ")

    def use(zone: str) -> None:
        os.environ["TZ"] = zone
        time.tzset()

    yield use
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


# Around New York's changes in 2024 (10 March 07:00 UTC, 3 November 06:00 UTC) and Sydney's
# (7 April 16:00 UTC, 5 October 16:00 UTC), and ordinary days.
_MOMENTS = [1710050400 + k * 900 + 0.25 for k in range(-6, 7)] + \
           [1730613600 + k * 900 for k in range(-6, 7)] + \
           [1712505600 + k * 1800 for k in range(-4, 5)] + \
           [1728144000 + k * 1800 for k in range(-4, 5)] + \
           [1700000000, 1733500000.5, 1750000000, 0, 2**31 + 7]
_SHIFTS = [dt.timedelta(0), dt.timedelta(days=182), dt.timedelta(days=-182),
           dt.timedelta(minutes=30), dt.timedelta(hours=1, minutes=15), dt.timedelta(hours=-2),
           dt.timedelta(days=45, seconds=7)]


def _view(moment: dt.datetime) -> tuple:
    return (moment.replace(tzinfo=None), moment.fold, moment.utcoffset(), moment.dst(),
            moment.tzname(), moment.timestamp())


@pytest.mark.parametrize("zone", ["America/New_York", "Australia/Sydney", "Asia/Kolkata",
                                  "UTC"])
def test_timestamps_follow_local_time_as_boto3s_do(local_zone, zone):
    local_zone(zone)
    for seconds in _MOMENTS:
        theirs, ours = botocore_timestamp(seconds), wire.parse_timestamp(seconds)
        assert ours.timestamp() == theirs.timestamp() and ours.fold == theirs.fold
        for shift in _SHIFTS:
            a, b = theirs + shift, ours + shift
            assert _view(b) == _view(a), (seconds, shift)
            # a wall time that is skipped or comes twice equals nothing in another zone
            plain = a.utcoffset() == a.replace(fold=1 - a.fold).utcoffset()
            assert (b == a) is plain and (b != a) is not plain
            if plain:
                assert not b < a and not b > a and b <= a <= b
            assert (b.astimezone(dt.timezone.utc) == a.astimezone(dt.timezone.utc))
        later = wire.parse_timestamp(seconds + 200 * 86400 + 3)
        assert later - ours == botocore_timestamp(seconds + 200 * 86400 + 3) - theirs
        assert ours < later and sorted([later, theirs]) == [theirs, later]


def test_timestamp_kinds_match_botocore(local_zone):
    local_zone("America/New_York")
    for value in (1700000000, 1700000000.123456, "1700000000.5", True, -86400.5):
        assert _view(wire.parse_timestamp(value)) == _view(botocore_timestamp(value))
    with pytest.raises(ValueError):
        wire.parse_timestamp("not a time")


def test_start_time_plus_half_a_year_matches_boto3(stub, clients, local_zone):
    local_zone("America/New_York")
    body = json.dumps({"SnapshotId": SNAP, "StartTime": 1733500000.5, "Status": "pending",
                       "VolumeSize": 1, "BlockSize": 524288}).encode()
    theirs, ours = _both(stub, clients, (201, [RID, JSON], body), "start_snapshot",
                         VolumeSize=1, ClientToken="t")
    assert ours == theirs
    a, b = theirs[1]["StartTime"], ours[1]["StartTime"]
    assert _view(b + dt.timedelta(days=182)) == _view(a + dt.timedelta(days=182))
    assert (b + dt.timedelta(days=182)).isoformat() == "2025-06-06T10:46:40.500000-04:00"


def test_local_timezone_copies_and_pickles(local_zone):
    import copy
    import pickle

    local_zone("America/New_York")
    moment = wire.parse_timestamp(1730611800)  # 01:30 EDT, the first of two
    again = wire.parse_timestamp(1730615400)   # 01:30 EST, the second
    assert moment.replace(tzinfo=None) == again.replace(tzinfo=None)
    assert (moment.fold, again.fold) == (0, 1)
    for value in (moment, again):
        for copied in (pickle.loads(pickle.dumps(value)), copy.deepcopy(value)):
            assert _view(copied) == _view(value)
    assert wire.LocalTimezone() == wire.LocalTimezone()
    assert hash(wire.LocalTimezone()) == hash(wire.LocalTimezone())
