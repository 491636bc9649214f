"""ebsfast.testing.EBSServer driven by boto3, the client nobody here wrote, over real sockets."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time

import boto3
import botocore.config
import pytest
import urllib3
from botocore.exceptions import ClientError

from ebsfast.testing import BLOCK_SIZE, EBSServer, Faults

ZERO = bytes(BLOCK_SIZE)


def block(seed: int) -> bytes:
    """A distinct, cheap-to-make 512 KiB block."""
    unit = hashlib.sha256(seed.to_bytes(8, "little")).digest()
    return unit * (BLOCK_SIZE // len(unit))


def b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def linear(blocks: dict[int, bytes]) -> str:
    cat = b"".join(hashlib.sha256(blocks[i]).digest() for i in sorted(blocks))
    return base64.b64encode(hashlib.sha256(cat).digest()).decode()


def make_client(server: EBSServer, *, secret: str | None = None, retries: int = 1, **cfg):
    config = botocore.config.Config(retries={"total_max_attempts": retries, "mode": "standard"},
                                    **cfg)
    return boto3.client("ebs", endpoint_url=server.endpoint_url, region_name=server.region,
                        aws_access_key_id=server.access_key,
                        aws_secret_access_key=secret or server.secret_key,
                        verify=server.ca_file if server.tls else None, config=config)


def pool_for(server: EBSServer) -> urllib3.PoolManager:
    return urllib3.PoolManager(ca_certs=server.ca_file) if server.tls else urllib3.PoolManager()


def put(ebs, snap: str, index: int, data: bytes, **overrides):
    args = dict(SnapshotId=snap, BlockIndex=index, BlockData=data, DataLength=len(data),
                Checksum=b64sha(data), ChecksumAlgorithm="SHA256")
    args.update(overrides)
    return ebs.put_snapshot_block(**args)


def upload(ebs, blocks: dict[int, bytes], *, volume_gib: int = 1, parent: str | None = None):
    kw = {"ParentSnapshotId": parent} if parent else {}
    snap = ebs.start_snapshot(VolumeSize=volume_gib, **kw)["SnapshotId"]
    for i, data in blocks.items():
        put(ebs, snap, i, data)
    done = ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=len(blocks),
                                 Checksum=linear(blocks), ChecksumAlgorithm="SHA256",
                                 ChecksumAggregationMethod="LINEAR")
    assert done["Status"] == "completed"
    return snap


def error_of(excinfo) -> tuple[str, str | None, int]:
    r = excinfo.value.response
    return r["Error"]["Code"], r.get("Reason"), r["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module", params=["http", "https"])
def server(request):
    with EBSServer(tls=request.param == "https") as s:
        yield s


@pytest.fixture(scope="module")
def ebs(server):
    return make_client(server, max_pool_connections=32)


# -- the happy paths, over HTTP and HTTPS --------------------------------------------------

def test_full_upload_then_read_back(server, ebs):
    blocks = {0: block(1), 5: block(2), 7: ZERO, 2047: block(3)}
    started = ebs.start_snapshot(VolumeSize=1, Description="base", Tags=[{"Key": "k",
                                                                          "Value": "v"}])
    assert started["Status"] == "pending"
    assert started["BlockSize"] == BLOCK_SIZE and started["VolumeSize"] == 1
    assert started["Tags"] == [{"Key": "k", "Value": "v"}]
    assert started["SnapshotId"].startswith("snap-")
    assert started["StartTime"].tzinfo is not None
    snap = started["SnapshotId"]
    for i, data in blocks.items():
        r = put(ebs, snap, i, data, Progress=50)
        assert r["Checksum"] == b64sha(data) and r["ChecksumAlgorithm"] == "SHA256"
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 201
    done = ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=len(blocks),
                                 Checksum=linear(blocks), ChecksumAlgorithm="SHA256",
                                 ChecksumAggregationMethod="LINEAR")
    assert done["Status"] == "completed"
    listed = ebs.list_snapshot_blocks(SnapshotId=snap)
    assert [b["BlockIndex"] for b in listed["Blocks"]] == sorted(blocks)
    assert listed["VolumeSize"] == 1 and listed["BlockSize"] == BLOCK_SIZE
    assert listed["ExpiryTime"].timestamp() > time.time() + 6 * 24 * 3600
    assert "NextToken" not in listed
    for entry in listed["Blocks"]:
        got = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=entry["BlockIndex"],
                                     BlockToken=entry["BlockToken"])
        data = got["BlockData"].read()
        assert data == blocks[entry["BlockIndex"]]
        assert got["DataLength"] == BLOCK_SIZE
        assert got["Checksum"] == b64sha(data) and got["ChecksumAlgorithm"] == "SHA256"


def test_pagination_over_several_pages(server, ebs):
    # 250 blocks, mostly zeros (which cost the server no memory), in pages of 100.
    blocks = {i: (block(i) if i % 50 == 0 else ZERO) for i in range(0, 500, 2)}
    snap = upload(ebs, blocks)
    pages, token = [], None
    while True:
        kw = {"NextToken": token} if token else {}
        page = ebs.list_snapshot_blocks(SnapshotId=snap, MaxResults=100, **kw)
        pages.append([b["BlockIndex"] for b in page["Blocks"]])
        token = page.get("NextToken")
        if not token:
            break
    assert [len(p) for p in pages] == [100, 100, 50]
    assert sum(pages, []) == sorted(blocks)
    # StartingBlockIndex skips what comes before it.
    page = ebs.list_snapshot_blocks(SnapshotId=snap, StartingBlockIndex=401, MaxResults=100)
    assert [b["BlockIndex"] for b in page["Blocks"]] == list(range(402, 500, 2))


def test_child_snapshot_and_changed_blocks(server, ebs):
    base = {0: block(10), 1: block(11), 2: block(12)}
    parent = upload(ebs, base)
    child = ebs.start_snapshot(VolumeSize=2, ParentSnapshotId=parent)
    assert child["ParentSnapshotId"] == parent
    cid = child["SnapshotId"]
    put(ebs, cid, 1, block(21))       # changed
    put(ebs, cid, 3000, block(22))    # new, beyond the parent's size
    ebs.complete_snapshot(SnapshotId=cid, ChangedBlocksCount=2)
    # The child starts with the parent's blocks.
    listed = ebs.list_snapshot_blocks(SnapshotId=cid)["Blocks"]
    assert [b["BlockIndex"] for b in listed] == [0, 1, 2, 3000]
    changed = ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=cid)
    entries = {c["BlockIndex"]: c for c in changed["ChangedBlocks"]}
    assert sorted(entries) == [1, 3000]
    assert set(entries[1]) == {"BlockIndex", "FirstBlockToken", "SecondBlockToken"}
    assert set(entries[3000]) == {"BlockIndex", "SecondBlockToken"}  # the first lacks it
    old = ebs.get_snapshot_block(SnapshotId=parent, BlockIndex=1,
                                 BlockToken=entries[1]["FirstBlockToken"])
    new = ebs.get_snapshot_block(SnapshotId=cid, BlockIndex=1,
                                 BlockToken=entries[1]["SecondBlockToken"])
    assert old["BlockData"].read() == block(11)
    assert new["BlockData"].read() == block(21)
    # Reversed: the block the child added is one the second (the parent) does not have.
    rev = ebs.list_changed_blocks(FirstSnapshotId=cid, SecondSnapshotId=parent)
    entries = {c["BlockIndex"]: c for c in rev["ChangedBlocks"]}
    assert set(entries[3000]) == {"BlockIndex", "FirstBlockToken"}
    assert rev["VolumeSize"] == 1


def test_changed_blocks_paginate(server, ebs):
    parent = upload(ebs, {0: block(30)})
    cid = ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=parent)["SnapshotId"]
    for i in range(150):
        put(ebs, cid, i, ZERO)
    ebs.complete_snapshot(SnapshotId=cid, ChangedBlocksCount=150)
    first = ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=cid,
                                    MaxResults=100)
    second = ebs.list_changed_blocks(FirstSnapshotId=parent, SecondSnapshotId=cid,
                                     MaxResults=100, NextToken=first["NextToken"])
    indexes = [c["BlockIndex"] for c in first["ChangedBlocks"] + second["ChangedBlocks"]]
    assert indexes == list(range(150)) and "NextToken" not in second


def test_many_concurrent_connections(server, ebs):
    from concurrent.futures import ThreadPoolExecutor

    blocks = {i: block(100 + i) for i in range(8)}
    snap = upload(ebs, blocks)
    listed = ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]

    def read(entry):
        r = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=entry["BlockIndex"],
                                   BlockToken=entry["BlockToken"])
        return entry["BlockIndex"], r["BlockData"].read()

    before = server.connections_accepted
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(read, listed * 16))
    assert all(data == blocks[i] for i, data in results) and len(results) == 128
    assert server.connections_accepted - before > 1  # served side by side, not one at a time


def test_idempotent_client_token(server, ebs):
    a = ebs.start_snapshot(VolumeSize=1, ClientToken="tok-1", Description="x")
    b = ebs.start_snapshot(VolumeSize=1, ClientToken="tok-1", Description="x")
    assert a["SnapshotId"] == b["SnapshotId"]
    with pytest.raises(ClientError) as ei:
        ebs.start_snapshot(VolumeSize=2, ClientToken="tok-1", Description="x")
    assert error_of(ei)[::2] == ("ConflictException", 409)


def test_encrypted_snapshot_records_key(server, ebs):
    arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    r = ebs.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=arn, Timeout=30)
    assert r["KmsKeyArn"] == arn and r["SseType"] == "sse-kms"


def test_repeated_client_token_returns_the_original_answer(server, ebs):
    first = ebs.start_snapshot(VolumeSize=1, ClientToken="tok-original", Tags=[
        {"Key": "k", "Value": "v"}])
    snap = first.pop("SnapshotId")
    put(ebs, snap, 0, block(1))
    assert ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=1)["Status"] == "completed"
    again = ebs.start_snapshot(VolumeSize=1, ClientToken="tok-original", Tags=[
        {"Key": "k", "Value": "v"}])
    assert again.pop("SnapshotId") == snap
    first.pop("ResponseMetadata"), again.pop("ResponseMetadata")
    assert again == first and again["Status"] == "pending"  # as first answered, not as now


def test_encrypted_false_with_a_parent_is_refused(server, done_snapshot):
    ebs = make_client(server)
    sent = []
    ebs.meta.events.register("before-send.ebs.StartSnapshot",
                             lambda request, **kw: sent.append(json.loads(request.body)))
    for encrypted in (False, True):
        with pytest.raises(ClientError) as ei:
            ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=done_snapshot, Encrypted=encrypted)
        assert error_of(ei) == ("ValidationException", "INVALID_PARAMETER_VALUE", 400)
        assert sent[-1]["Encrypted"] is encrypted  # boto3 sends false too
    assert ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=done_snapshot)["Status"] == "pending"


def test_start_snapshot_takes_the_model_limits(server, done_snapshot):
    # parameter_validation=False: what boto3 would otherwise refuse reaches the server
    ebs = make_client(server, parameter_validation=False)
    refused = [
        (dict(ClientToken="t" * 256), "INVALID_PARAMETER_VALUE"),
        (dict(ClientToken="a b"), "INVALID_PARAMETER_VALUE"),
        (dict(ClientToken="ab\n"), "INVALID_PARAMETER_VALUE"),
        (dict(ClientToken=""), "INVALID_PARAMETER_VALUE"),
        (dict(Description=""), "INVALID_PARAMETER_VALUE"),
        (dict(Description="d" * 256), "INVALID_PARAMETER_VALUE"),
        (dict(Tags=[{"Key": "k" * 128, "Value": "v"}]), "INVALID_TAG"),
        (dict(Tags=[{"Key": "k", "Value": "v" * 256}]), "INVALID_TAG"),
        (dict(Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)]), "INVALID_TAG"),
    ]
    for kw, reason in refused:
        with pytest.raises(ClientError) as ei:
            ebs.start_snapshot(VolumeSize=1, **kw)
        assert error_of(ei) == ("ValidationException", reason, 400), kw
    r = ebs.start_snapshot(VolumeSize=1, ClientToken="t" * 255, Description=" \n" + "d" * 253,
                           Tags=[{"Key": f"{i:03}" + "k" * 124, "Value": "v" * 255}
                                 for i in range(50)])
    assert r["Status"] == "pending" and len(r["Tags"]) == 50
    assert ebs.start_snapshot(VolumeSize=1, Tags=[{"Key": "k", "Value": ""}])["Tags"] == [
        {"Key": "k", "Value": ""}]


def test_an_empty_next_token_is_refused(server, done_snapshot):
    ebs = make_client(server, parameter_validation=False)
    for call in (lambda: ebs.list_snapshot_blocks(SnapshotId=done_snapshot, NextToken=""),
                 lambda: ebs.list_changed_blocks(FirstSnapshotId=done_snapshot,
                                                 SecondSnapshotId=done_snapshot, NextToken="")):
        with pytest.raises(ClientError) as ei:
            call()
        assert error_of(ei) == ("ValidationException", "INVALID_PAGE_TOKEN", 400)


# -- every error the service sends ----------------------------------------------------------

@pytest.fixture(scope="module")
def done_snapshot(ebs):
    return upload(ebs, {0: block(40), 1: block(41)})


def test_validation_reasons(server, ebs, done_snapshot):
    snap = done_snapshot
    tokens = {b["BlockIndex"]: b["BlockToken"]
              for b in ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]}
    pending = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    other = upload(ebs, {0: block(42)})
    cases = [
        # (call, expected code, expected reason)
        (lambda: ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=0, BlockToken="AAAA"),
         "ValidationException", "INVALID_BLOCK_TOKEN"),
        (lambda: ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=1, BlockToken=tokens[0]),
         "ValidationException", "INVALID_BLOCK_TOKEN"),
        (lambda: ebs.get_snapshot_block(SnapshotId=other, BlockIndex=0, BlockToken=tokens[0]),
         "ValidationException", "INVALID_BLOCK_TOKEN"),
        (lambda: ebs.list_snapshot_blocks(SnapshotId=snap, NextToken="bm9wZQ=="),
         "ValidationException", "INVALID_PAGE_TOKEN"),
        (lambda: ebs.list_snapshot_blocks(SnapshotId=pending),
         "ValidationException", "INVALID_SNAPSHOT_ID"),
        (lambda: ebs.list_changed_blocks(FirstSnapshotId=snap, SecondSnapshotId=other),
         "ValidationException", "UNRELATED_SNAPSHOTS"),
        (lambda: ebs.list_changed_blocks(SecondSnapshotId=snap),
         "ValidationException", "INVALID_SNAPSHOT_ID"),
        (lambda: put(ebs, pending, 2048, block(1)), "ValidationException", "INVALID_BLOCK"),
        (lambda: put(ebs, pending, 0, block(1), Checksum=b64sha(block(2))),
         "ValidationException", "INVALID_BLOCK"),
        (lambda: put(ebs, pending, 0, block(1)[:4096], DataLength=4096),
         "ValidationException", "INVALID_PARAMETER_VALUE"),
        (lambda: put(ebs, pending, 0, block(1), DataLength=BLOCK_SIZE - 1),
         "ValidationException", "INVALID_PARAMETER_VALUE"),
        (lambda: put(ebs, pending, 0, block(1), ChecksumAlgorithm="MD5"),
         "ValidationException", "INVALID_PARAMETER_VALUE"),
        (lambda: put(ebs, snap, 0, block(1)), "ValidationException", "INVALID_SNAPSHOT_ID"),
        (lambda: ebs.start_snapshot(VolumeSize=70000),
         "ValidationException", "INVALID_VOLUME_SIZE"),
        (lambda: ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=snap, Encrypted=True),
         "ValidationException", "INVALID_PARAMETER_VALUE"),
        (lambda: ebs.start_snapshot(VolumeSize=1, ParentSnapshotId="snap-0000000000000000f"),
         "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND"),
        (lambda: ebs.list_snapshot_blocks(SnapshotId="snap-0000000000000000f"),
         "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND"),
    ]
    for call, code, reason in cases:
        with pytest.raises(ClientError) as ei:
            call()
        got = error_of(ei)
        assert got[:2] == (code, reason), (code, reason, ei.value.response)
        status = {"ValidationException": 400, "ResourceNotFoundException": 404}[code]
        assert got[2] == status
        meta = ei.value.response["ResponseMetadata"]
        assert meta["RequestId"] and ei.value.response["Error"]["Message"]


def test_complete_checks_count_and_linear_checksum(server, ebs):
    blocks = {0: block(50), 3: block(51)}
    for count, checksum, status in [(2, linear(blocks), "completed"),
                                    (1, None, "error"),
                                    (2, linear({0: block(50)}), "error")]:
        snap = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
        for i, data in blocks.items():
            put(ebs, snap, i, data)
        kw = ({"Checksum": checksum, "ChecksumAlgorithm": "SHA256",
               "ChecksumAggregationMethod": "LINEAR"} if checksum else {})
        r = ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=count, **kw)
        assert r["Status"] == status
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 202


class _Clock:
    """The service's clock for a test: starts at the real time, moves when told."""

    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_timeout_counts_from_the_last_block_written():
    clock = _Clock()
    with EBSServer(clock=clock) as s:
        ebs = make_client(s)
        snap = ebs.start_snapshot(VolumeSize=1, Timeout=10)["SnapshotId"]
        for i in range(4):  # a block every 4 minutes: 16 minutes after the start in all
            clock.now += 4 * 60
            put(ebs, snap, i, block(i))
        clock.now += 9 * 60
        assert ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=4)["Status"] == \
            "completed"
        # 10 minutes with no block written, then without completing after the last one
        idle = ebs.start_snapshot(VolumeSize=1, Timeout=10)["SnapshotId"]
        late = ebs.start_snapshot(VolumeSize=1, Timeout=10)["SnapshotId"]
        clock.now += 5 * 60
        put(ebs, late, 0, block(5))
        clock.now += 5 * 60 + 1
        with pytest.raises(ClientError) as ei:
            put(ebs, idle, 0, block(6))
        assert error_of(ei) == ("ValidationException", "WRITE_REQUEST_TIMEOUT", 400)
        assert ebs.complete_snapshot(SnapshotId=late, ChangedBlocksCount=1)["Status"] == \
            "completed"
        late = ebs.start_snapshot(VolumeSize=1, Timeout=10)["SnapshotId"]
        clock.now += 5 * 60
        put(ebs, late, 0, block(5))
        clock.now += 10 * 60 + 1
        with pytest.raises(ClientError) as ei:
            ebs.complete_snapshot(SnapshotId=late, ChangedBlocksCount=1)
        assert error_of(ei) == ("ValidationException", "WRITE_REQUEST_TIMEOUT", 400)


def test_error_reason_says_why_the_snapshot_failed():
    clock = _Clock()
    with EBSServer(clock=clock) as s:
        ebs = make_client(s)
        # CompleteSnapshot found a mismatch: the snapshot is in error but did not time out
        failed = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
        put(ebs, failed, 0, block(1))
        assert ebs.complete_snapshot(SnapshotId=failed, ChangedBlocksCount=5)["Status"] == "error"
        timed_out = ebs.start_snapshot(VolumeSize=1, Timeout=10)["SnapshotId"]
        clock.now += 10 * 60 + 1
        for snap, reason in ((failed, "INVALID_SNAPSHOT_ID"),
                             (timed_out, "WRITE_REQUEST_TIMEOUT")):
            for call in (lambda: put(ebs, snap, 1, block(2)),
                         lambda: ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=1)):
                with pytest.raises(ClientError) as ei:
                    call()
                assert error_of(ei) == ("ValidationException", reason, 400), snap


def test_a_put_racing_complete_never_lands_in_the_completed_snapshot(monkeypatch):
    with EBSServer() as s:
        ebs, other = make_client(s), make_client(s)
        snap = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
        put(ebs, snap, 0, block(1))
        store = s.service.store
        stored = store.put
        answers = []

        def put_then_complete(data, digest):
            # The put has passed its checks and is storing its block: the snapshot completes
            # now, over another connection.
            kept = stored(data, digest)
            if data == block(2):
                answers.append(other.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=1))
            return kept

        monkeypatch.setattr(store, "put", put_then_complete)
        with pytest.raises(ClientError) as ei:
            put(ebs, snap, 1, block(2))
        assert error_of(ei) == ("ValidationException", "INVALID_SNAPSHOT_ID", 400)
        assert answers[0]["Status"] == "completed"
        listed = ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]
        assert [b["BlockIndex"] for b in listed] == [0]
        assert store.stored_bytes == BLOCK_SIZE  # the refused block was given back


def test_pending_snapshot_limit():
    with EBSServer(max_pending_snapshots=2) as s:
        ebs = make_client(s)
        ebs.start_snapshot(VolumeSize=1)
        ebs.start_snapshot(VolumeSize=1)
        with pytest.raises(ClientError) as ei:
            ebs.start_snapshot(VolumeSize=1)
        assert error_of(ei)[0] == "ConcurrentLimitExceededException"


def test_expired_tokens(server, ebs, done_snapshot):
    server.set_faults(block_token_ttl_s=-1, page_token_ttl_s=-1)
    try:
        listed = ebs.list_snapshot_blocks(SnapshotId=done_snapshot, MaxResults=100)
        token = listed["Blocks"][0]["BlockToken"]
        with pytest.raises(ClientError) as ei:
            ebs.get_snapshot_block(SnapshotId=done_snapshot, BlockIndex=0, BlockToken=token)
        assert error_of(ei)[:2] == ("ValidationException", "INVALID_BLOCK_TOKEN")
        assert "expired" in ei.value.response["Error"]["Message"]
    finally:
        server.set_faults(block_token_ttl_s=None, page_token_ttl_s=None)


def test_wrong_secret_and_clock_skew_are_refused(server):
    bad = make_client(server, secret="not-the-secret")
    with pytest.raises(ClientError) as ei:
        bad.start_snapshot(VolumeSize=1)
    assert error_of(ei)[::2] == ("InvalidSignatureException", 403)
    with EBSServer(access_key=server.access_key, secret_key=server.secret_key,
                   max_clock_skew_s=-1) as skewed:
        with pytest.raises(ClientError) as ei:
            make_client(skewed).start_snapshot(VolumeSize=1)
        assert error_of(ei)[0] == "InvalidSignatureException"
        assert "expired" in ei.value.response["Error"]["Message"]


def test_unsigned_request_is_refused_and_verification_can_be_off(server):
    http = pool_for(server)
    r = http.request("POST", server.endpoint_url + "/snapshots", body=b'{"VolumeSize": 1}')
    assert r.status == 403
    assert r.headers["x-amzn-ErrorType"].startswith("AccessDeniedException")
    with EBSServer(verify_signatures=False) as open_server:
        r = urllib3.PoolManager().request("POST", open_server.endpoint_url + "/snapshots",
                         body=b'{"VolumeSize": 1}')
        assert r.status == 201 and json.loads(r.data)["Status"] == "pending"


def test_presigned_url_is_accepted(server, ebs, done_snapshot):
    token = ebs.list_snapshot_blocks(SnapshotId=done_snapshot)["Blocks"][0]["BlockToken"]
    url = ebs.generate_presigned_url("get_snapshot_block", Params={
        "SnapshotId": done_snapshot, "BlockIndex": 0, "BlockToken": token}, ExpiresIn=60)
    r = pool_for(server).request("GET", url)
    assert r.status == 200 and r.data == block(40)
    tampered = url.replace("blocks/0", "blocks/1")
    assert pool_for(server).request("GET", tampered).status == 403


def test_expired_presigned_url_is_access_denied_with_a_reason(server, ebs, done_snapshot):
    import datetime
    from unittest import mock

    import botocore.auth

    token = ebs.list_snapshot_blocks(SnapshotId=done_snapshot)["Blocks"][0]["BlockToken"]
    signed_at = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=2)
    with mock.patch.object(botocore.auth, "get_current_datetime", lambda: signed_at):
        urls = [ebs.generate_presigned_url("get_snapshot_block", Params={
                    "SnapshotId": done_snapshot, "BlockIndex": 0, "BlockToken": token},
                    ExpiresIn=60),
                ebs.generate_presigned_url("list_snapshot_blocks", Params={
                    "SnapshotId": done_snapshot}, ExpiresIn=60)]
    for url in urls:
        r = pool_for(server).request("GET", url)
        assert r.status == 403
        assert r.headers["x-amzn-ErrorType"].startswith("AccessDeniedException:")
        assert json.loads(r.data)["Reason"] == "UNAUTHORIZED_ACCOUNT"


def _announce_body_hash(request, **kwargs):
    body = request.body if isinstance(request.body, bytes) else request.body.encode()
    request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()


def test_announced_payload_hash_must_be_the_bodys(server):
    ebs = make_client(server)
    # boto3 announcing and signing the hash of the body it sends: accepted
    ebs.meta.events.register("before-sign.ebs.StartSnapshot", _announce_body_hash)
    ebs.meta.events.register("before-sign.ebs.PutSnapshotBlock", _announce_body_hash)
    snap = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    assert put(ebs, snap, 0, block(1))["Checksum"] == b64sha(block(1))
    with pytest.raises(ClientError) as ei:  # the block's own checksum is still checked
        put(ebs, snap, 0, block(1), Checksum=b64sha(block(2)))
    assert error_of(ei) == ("ValidationException", "INVALID_BLOCK", 400)

    # ... and the body changed on its way after signing: refused
    def tamper(request, **kwargs):
        request.body = json.dumps({"VolumeSize": 7, "Description": "changed"}).encode()
        request.headers["Content-Length"] = str(len(request.body))

    ebs.meta.events.register("before-send.ebs.StartSnapshot", tamper)
    before = len(server.service.snapshots)
    with pytest.raises(ClientError) as ei:
        ebs.start_snapshot(VolumeSize=1)
    assert error_of(ei)[::2] == ("InvalidSignatureException", 403)
    assert len(server.service.snapshots) == before


# -- bad bytes on the wire ------------------------------------------------------------------

def raw_exchange(server: EBSServer, payload: bytes) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


@pytest.mark.parametrize("payload,status", [
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
    (b"GET /snapshots HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", b"400"),
    (b"PUT /snapshots/snap-1/blocks/0 HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
     b"413"),
    (b"POST /snapshots HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", b"400"),
    (b"x" * 70000, b"431"),
])
def test_bad_requests_get_error_shape_and_server_keeps_serving(payload, status):
    with EBSServer(verify_signatures=False) as s:
        reply = raw_exchange(s, payload)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == status, reply[:200]
        assert b"x-amzn-RequestId" in head and b"x-amzn-ErrorType" in head
        assert "message" in json.loads(body)
        ok = raw_exchange(s, b'POST /snapshots HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n'
                             b'Connection: close\r\n\r\n{}')
        assert ok.split(b" ")[1] == b"400"  # VolumeSize missing: an answer, not a crash
        assert b"INVALID_VOLUME_SIZE" in ok


def test_malformed_json_body(server):
    with EBSServer(verify_signatures=False) as s:
        r = urllib3.PoolManager().request("POST", s.endpoint_url + "/snapshots", body=b"{nope")
        assert r.status == 400
        assert r.headers["x-amzn-ErrorType"].startswith("SerializationException")


def test_chunked_upload_and_keep_alive():
    with EBSServer(verify_signatures=False) as s:
        pool = urllib3.HTTPConnectionPool(s.host, s.port, maxsize=1)
        snap = json.loads(pool.request("POST", "/snapshots", body=b'{"VolumeSize": 1}').data)
        data = block(60)

        def gen():
            for i in range(0, len(data), 100000):
                yield data[i:i + 100000]
        r = pool.request("PUT", f"/snapshots/{snap['SnapshotId']}/blocks/0", body=gen(),
                         chunked=True, headers={"x-amz-Data-Length": str(BLOCK_SIZE),
                                                "x-amz-Checksum": b64sha(data),
                                                "x-amz-Checksum-Algorithm": "SHA256"})
        assert r.status == 201
        assert pool.num_connections == 1  # both requests went over one kept-alive connection


# -- faults ---------------------------------------------------------------------------------

def test_throttling_per_operation_and_account(server, ebs, done_snapshot):
    server.set_faults(rate_limits={"ListSnapshotBlocks": 2})
    try:
        codes = []
        for _ in range(6):
            try:
                ebs.list_snapshot_blocks(SnapshotId=done_snapshot)
                codes.append("ok")
            except ClientError as exc:
                codes.append(exc.response["Error"]["Code"])
                assert exc.response.get("Reason") == "RESOURCE_LEVEL_THROTTLE"
        assert "ok" in codes and "RequestThrottledException" in codes
    finally:
        server.set_faults(rate_limits={})
    server.set_faults(account_rate_limit=0)
    try:
        with pytest.raises(ClientError) as ei:
            ebs.list_snapshot_blocks(SnapshotId=done_snapshot)
        assert error_of(ei)[::2] == ("ThrottlingException", 400)
    finally:
        server.set_faults(account_rate_limit=None)


def test_injected_500s_are_retried_by_boto3():
    with EBSServer(faults=Faults(error_rate=1.0, operations={"StartSnapshot"})) as s:
        with pytest.raises(ClientError) as ei:
            make_client(s).start_snapshot(VolumeSize=1)
        assert error_of(ei)[::2] == ("InternalServerException", 500)
        assert ei.value.response["ResponseMetadata"]["RetryAttempts"] == 0
        s.set_faults(error_rate=0.5, seed=7)
        assert make_client(s, retries=20).start_snapshot(VolumeSize=1)["Status"] == "pending"


@pytest.fixture()
def body_fault_server():
    with EBSServer(verify_signatures=False) as s:
        upload(make_client(s), {0: block(70)})
        yield s


def _get_raw(s: EBSServer, target: str) -> tuple[bytes, dict, int]:
    """Read a response by hand: head, then as much body as arrives before EOF/reset."""
    with socket.create_connection((s.host, s.port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        try:
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
                head, sep, body = data.partition(b"\r\n\r\n")
                if sep:
                    headers = dict(line.split(": ", 1) for line in
                                   head.decode().split("\r\n")[1:])
                    if len(body) >= int(headers["Content-Length"]):
                        break
        except ConnectionResetError:
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    return body, headers, int(head.split(b" ")[1])


def test_body_faults(body_fault_server):
    from urllib.parse import quote

    s = body_fault_server
    ebs = make_client(s)
    sid = next(iter(s.service.snapshots))
    token = ebs.list_snapshot_blocks(SnapshotId=sid)["Blocks"][0]["BlockToken"]
    target = f"/snapshots/{sid}/blocks/0?blockToken={quote(token, safe='')}"
    body, headers, status = _get_raw(s, target)
    assert status == 200 and body == block(70)

    s.set_faults(corrupt_rate=1.0)
    body, headers, _ = _get_raw(s, target)
    assert len(body) == BLOCK_SIZE and body != block(70)
    assert headers["x-amz-Checksum"] == b64sha(block(70))  # the header still tells the truth
    s.set_faults(corrupt_rate=0.0, truncate_rate=1.0)
    body, headers, _ = _get_raw(s, target)
    assert int(headers["Content-Length"]) == BLOCK_SIZE and len(body) < BLOCK_SIZE
    s.set_faults(truncate_rate=0.0, reset_rate=1.0)
    body, headers, _ = _get_raw(s, target)
    assert len(body) < BLOCK_SIZE
    s.set_faults(reset_rate=0.0, stall_rate=1.0, stall_s=3.0)
    with pytest.raises(socket.timeout):
        with socket.create_connection((s.host, s.port), timeout=0.5) as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            sock.recv(10)
    s.set_faults(stall_rate=0.0)
    # boto3 with a short read timeout sees the stall as a ReadTimeoutError.
    from botocore.exceptions import ReadTimeoutError

    s.set_faults(stall_rate=1.0, stall_s=2.0)
    try:
        with pytest.raises(ReadTimeoutError):
            make_client(s, read_timeout=0.5).get_snapshot_block(
                SnapshotId=sid, BlockIndex=0, BlockToken=token)
    finally:
        s.set_faults(stall_rate=0.0)


def test_fault_knobs_are_validated(server):
    with pytest.raises(TypeError, match="unknown fault knob"):
        server.set_faults(nonsense=1)
    with pytest.raises(ValueError, match="error_rate"):
        server.set_faults(error_rate=2)


# -- storage -----------------------------------------------------------------------------------

def test_zero_blocks_cost_nothing_and_data_dir_keeps_blocks(tmp_path):
    with EBSServer(data_dir=str(tmp_path)) as s:
        ebs = make_client(s)
        snap = upload(ebs, {i: ZERO for i in range(20)} | {20: block(80)}, volume_gib=16)
        assert s.service.store.stored_bytes == BLOCK_SIZE
        assert (tmp_path / "blocks.bin").exists()
        listed = ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]
        got = {b["BlockIndex"]: ebs.get_snapshot_block(
            SnapshotId=snap, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"]
        )["BlockData"].read() for b in listed if b["BlockIndex"] in (0, 20)}
        assert got == {0: ZERO, 20: block(80)}


def test_data_dir_serves_a_zero_block_when_nothing_else_is_stored(tmp_path):
    # blocks.bin is empty then: the zero block cannot come from its first slot
    with EBSServer(data_dir=str(tmp_path)) as s:
        ebs = make_client(s)
        snap = upload(ebs, {0: ZERO})
        token = ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"][0]["BlockToken"]
        got = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=0, BlockToken=token)
        assert got["BlockData"].read() == ZERO


def test_repr_hides_the_secret(server):
    assert server.secret_key not in repr(server)
    assert server.access_key in repr(server)


def test_command_line_server():
    proc = subprocess.Popen([sys.executable, "-m", "ebsfast.testing", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        info = {}
        while "aws_secret_access_key" not in info:
            line = proc.stdout.readline()
            assert line, "the server exited before printing its endpoint"
            k, _, v = line.strip().partition("=")
            info[k] = v
        ebs = boto3.client("ebs", endpoint_url=info["endpoint_url"], region_name=info["region"],
                           aws_access_key_id=info["aws_access_key_id"],
                           aws_secret_access_key=info["aws_secret_access_key"])
        assert ebs.start_snapshot(VolumeSize=1)["Status"] == "pending"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- the GetSnapshotBlock hot path: the same bytes as the general path ---------------------

class _Capture:
    """A connection that keeps what is sent (for the server's _send paths)."""

    def __init__(self):
        self.sent = bytearray()

    def sendall(self, data, flags=0):
        self.sent += data

    def sendmsg(self, buffers, *args):
        n = 0
        for b in buffers:
            self.sent += b
            n += len(memoryview(b))
        return n


def _without_request_id(data: bytes) -> bytes:
    import re

    return re.sub(rb"x-amzn-RequestId: [^\r]+", b"x-amzn-RequestId: -", bytes(data))


@pytest.mark.parametrize("keep_alive", [True, False])
def test_block_head_is_what_the_general_path_sends(keep_alive):
    with EBSServer(verify_signatures=False) as s:
        snap = upload(make_client(s), {0: block(90), 1: ZERO})
        svc = s.service
        for index in (0, 1):
            blk = svc.snapshots[snap].blocks[index]
            resp = svc.get_snapshot_block(snap, str(index), {
                "blockToken": svc.block_token(svc.snapshots[snap], index, 2**40)})
            general, fast = _Capture(), _Capture()
            s._send_block = lambda conn, head, *a: conn.sendall(head) or True
            s._send(general, resp, keep_alive=keep_alive, op="GetSnapshotBlock")
            fast.sendall(s._block_head(blk.checksum, keep_alive))
            assert _without_request_id(fast.sent) == _without_request_id(general.sent)
            assert fast.sent.endswith(b"SHA256\r\n\r\n" if keep_alive
                                      else b"Connection: close\r\n\r\n")


def test_unquote_shortcut_matches_unquote():
    import random
    from urllib.parse import unquote

    from ebsfast.testing._server import _parse_query, _unquote

    rnd = random.Random(5)
    pieces = ["%2B", "%2F", "%3D", "%2b", "%2f", "%3d", "%", "%%", "%2", "%41", "%C3%A9", "%e9",
              "A", "z", "0", "+", "/", "=", " ", "\xe9", "&", "blockToken="]
    for _ in range(20000):
        s = "".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 8)))
        assert _unquote(s) == unquote(s), repr(s)
        for qs in ("blockToken=" + s, s):
            if "&" not in qs and qs.startswith("blockToken="):
                # the handler's shortcut for one blockToken parameter
                token = qs[11:]
                if "%" in token or "+" in token:
                    token = _unquote(token.replace("+", " "))
                assert token == _parse_query(qs).get("blockToken"), repr(qs)


def _signed_get(s: EBSServer, path: str, query: str, extra: str = "") -> bytes:
    from ebsfast.signing import Signer

    host = f"{s.host}:{s.port}"
    signed = Signer(s.access_key, s.secret_key, s.region, "ebs").sign(
        "GET", path, query, [("host", host)])
    head = "".join(f"{k}: {v}\r\n" for k, v in signed.items())
    return f"GET {path}?{query} HTTP/1.1\r\nHost: {host}\r\n{head}{extra}\r\n".encode()


def _read_response(sock) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = sock.recv(1 << 20)
        assert chunk
        body += chunk
    return head, body


@pytest.mark.parametrize("path", ["splice", "sendmsg", "sendfile"])
def test_every_send_path_serves_blocks_on_one_connection(path, tmp_path, monkeypatch):
    """A stored block leaves by vmsplice+splice (in memory, where available), by one sendmsg
    (in memory, without it) or by sendfile (a data directory); each is tested here."""
    from urllib.parse import quote

    from ebsfast.testing import _splice, _store

    if path == "splice" and not _splice.AVAILABLE:
        pytest.skip("vmsplice is not available here")
    if path == "sendmsg":
        monkeypatch.setattr(_store.BlockStore, "address", lambda self, block: None)
    kw = {"data_dir": str(tmp_path)} if path == "sendfile" else {}
    # 70 blocks: more than one in-memory chunk of slots
    blocks = {i: block(200 + i) for i in range(70)} | {70: ZERO}
    with EBSServer(**kw) as s:
        ebs = make_client(s)
        snap = upload(ebs, blocks, volume_gib=1)
        store = s.service.store
        if path == "splice":
            assert store.address(s.service.snapshots[snap].blocks[0]) is not None
        listed = ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]
        with socket.create_connection((s.host, s.port), timeout=10) as sock:
            for entry in listed[:3] + listed[-3:]:  # both chunks and the zero block
                i = entry["BlockIndex"]
                sock.sendall(_signed_get(s, f"/snapshots/{snap}/blocks/{i}",
                                         "blockToken=" + quote(entry["BlockToken"], safe="")))
                head, body = _read_response(sock)
                assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
                assert body == blocks[i]
                assert f"x-amz-Checksum: {b64sha(blocks[i])}".encode() in head
        assert store.read(s.service.snapshots[snap].blocks[69]) == blocks[69]


def test_a_connection_without_a_pipe_copies_instead(monkeypatch):
    from urllib.parse import quote

    from ebsfast.testing import _splice

    if not _splice.AVAILABLE:
        pytest.skip("vmsplice is not available here")

    def no_fds(size):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(_splice, "BlockPipe", no_fds)
    with EBSServer() as s:
        ebs = make_client(s)
        snap = upload(ebs, {0: block(95), 1: block(96)})
        listed = ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]
        with socket.create_connection((s.host, s.port), timeout=10) as sock:
            for entry in listed * 2:
                i = entry["BlockIndex"]
                sock.sendall(_signed_get(s, f"/snapshots/{snap}/blocks/{i}",
                                         "blockToken=" + quote(entry["BlockToken"], safe="")))
                head, body = _read_response(sock)
                assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == block(95 + i)


def test_block_pipe_smaller_than_a_block_sends_in_steps(monkeypatch):
    import threading

    from ebsfast.testing import _splice
    from ebsfast.testing._store import BlockStore

    if not _splice.AVAILABLE:
        pytest.skip("vmsplice is not available here")
    monkeypatch.setattr(_splice, "F_SETPIPE_SZ", -1)  # refused: the pipe keeps its 64 KiB
    store = BlockStore()
    blk = store.put(block(97), hashlib.sha256(block(97)).digest())
    pipe = _splice.BlockPipe(BLOCK_SIZE)
    assert pipe._capacity < BLOCK_SIZE
    a, b = socket.socketpair()
    got = bytearray()
    reader = threading.Thread(target=lambda: [got.extend(d) for d in iter(
        lambda: b.recv(1 << 20), b"")])
    reader.start()
    try:
        for _ in range(2):
            pipe.send(a, b"head", store.address(blk), BLOCK_SIZE)
    finally:
        a.close()
        reader.join()
        b.close()
        pipe.close()
        store.close()
    assert bytes(got) == (b"head" + block(97)) * 2


def test_store_reuses_slots_and_closes_with_views_alive():
    from ebsfast.testing._store import BlockStore

    store = BlockStore()
    a = store.put(block(1), hashlib.sha256(block(1)).digest())
    b = store.put(block(2), hashlib.sha256(block(2)).digest())
    assert bytes(store.view(a)) == block(1) and store.read(b) == block(2)
    store.release(a)
    c = store.put(block(3), hashlib.sha256(block(3)).digest())
    assert c.slot == a.slot and store.read(c) == block(3) and store.read(b) == block(2)
    assert store.stored_bytes == 2 * BLOCK_SIZE
    zero = store.put(ZERO, hashlib.sha256(ZERO).digest())
    assert zero.slot == -1 and store.address(zero) is None and store.read(zero) == ZERO
    held = store.view(b)  # a send still holding the block's memory
    store.close()
    assert bytes(held) == block(2)
    held.release()


def test_recorded_headers_keep_arrival_order_and_raw_names():
    with EBSServer(verify_signatures=False, record_requests=True) as s:
        raw_exchange(s, b"GET /snapshots/snap-1/blocks/0?blockToken=a%2Bb HTTP/1.1\r\n"
                        b"Host: x\r\nX-A:  v1 \t\r\nx-a: v2\r\nna\x0cme:\r\n\r\n")
        (rec,) = s.requests
        assert rec == {"method": "GET", "path": "/snapshots/snap-1/blocks/0",
                       "query": "blockToken=a%2Bb", "body": b"",
                       "headers": [("Host", "x"), ("X-A", "v1"), ("x-a", "v2"),
                                   ("na\x0cme", "")]}


@pytest.mark.parametrize("line", [b"Bad Header", b" Lead: x", b"a\tb: x", b"\x0cname: x",
                                  b"name\x85: x", b": x", b"a b: x"])
def test_malformed_header_names_are_refused(line):
    with EBSServer(verify_signatures=False) as s:
        reply = raw_exchange(s, b"GET /snapshots/snap-1/blocks/0 HTTP/1.1\r\nHost: x\r\n"
                                + line + b"\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400 "), reply[:100]
        assert b"Malformed header line" in reply


def test_no_fault_draws_while_every_knob_is_off(server, ebs, done_snapshot):
    token = ebs.list_snapshot_blocks(SnapshotId=done_snapshot)["Blocks"][0]["BlockToken"]
    state = server._faults._rng.getstate()
    for _ in range(3):
        ebs.get_snapshot_block(SnapshotId=done_snapshot, BlockIndex=0, BlockToken=token)
    assert server._faults._rng.getstate() == state


def test_block_token_decoding_needs_no_alphabet_regex():
    """_open relies on b64decode(validate=True) to refuse what a [A-Za-z0-9+/=] check would."""
    import random
    import re

    from ebsfast.testing._service import Service
    from ebsfast.testing._store import BlockStore

    svc = Service(BlockStore())
    alphabet_re = re.compile(r"^[A-Za-z0-9+/=]+$")
    payload = b"B" + bytes(16) + b"snap-0"
    valid = svc._seal(payload)
    assert svc._open(valid) == payload
    rnd = random.Random(3)
    chars = list("ABCxyz019+/=") + ["\n", " ", "\t", "-", "_", "\xe9", "\x00", "%", "\u0663"]
    for _ in range(20000):
        t = "".join(rnd.choice(chars) for _ in range(rnd.randint(0, 12)))
        if rnd.random() < 0.3:
            t = valid[:rnd.randrange(len(valid))] + t
        if not alphabet_re.match(t):
            assert svc._open(t) is None, repr(t)
    svc.store.close()
