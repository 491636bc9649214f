"""ebsfast.client against boto3, both pointed at the same ebsfast.testing server.

For the same calls the server must record the same requests (all but the headers that carry
time, signature, user agent or a random id) and both clients must return equal dicts.
"""
from __future__ import annotations

import base64
import copy
import hashlib
import io
import logging
import threading
import time
from unittest import mock

import boto3
import botocore.config
import botocore.exceptions
import numpy as np
import pytest

import ebsfast
from ebsfast import exceptions as exc
from ebsfast.testing import BLOCK_SIZE, EBSServer, Faults

from _blockdata import unused_port

FIXED_NOW = 1_790_000_000.0
# Headers whose values legitimately differ between two clients.
VOLATILE = {"user-agent", "x-amz-date", "authorization", "content-length",
            "amz-sdk-invocation-id", "accept-encoding", "connection"}


def block(seed: int) -> bytes:
    unit = hashlib.sha256(seed.to_bytes(8, "little")).digest()
    return unit * (BLOCK_SIZE // 32)


def b64sha(data) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.fixture(scope="module", params=["http", "https"])
def server(request):
    with EBSServer(tls=request.param == "https", record_requests=True,
                   clock=lambda: FIXED_NOW) as s:
        yield s


def kwargs_for(server, **cfg):
    return dict(endpoint_url=server.endpoint_url, region_name=server.region,
                aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
                verify=server.ca_file if server.tls else None, **cfg)


@pytest.fixture(scope="module")
def ours(server):
    c = ebsfast.client("ebs", **kwargs_for(server))
    yield c
    c.close()


@pytest.fixture(scope="module")
def theirs(server):
    return boto3.client("ebs", **kwargs_for(server))


def normalize_response(resp: dict) -> dict:
    resp = copy.copy(resp)
    meta = dict(resp["ResponseMetadata"])
    meta["RequestId"] = "-"
    meta["HTTPHeaders"] = {k: v for k, v in meta["HTTPHeaders"].items()
                           if k not in ("date", "x-amzn-requestid")}
    resp["ResponseMetadata"] = meta
    return resp


def request_view(req: dict) -> dict:
    headers = {}
    for k, v in req["headers"]:
        lk = k.lower()
        if lk in VOLATILE:
            headers[lk] = "<present>"
        elif lk == "amz-sdk-request":
            headers[lk] = "; ".join("ttl=<t>" if p.startswith("ttl=") else p
                                    for p in v.split("; "))
        else:
            headers[lk] = v
    body = req["body"]
    if body and body.startswith(b"{"):
        import json

        doc = json.loads(body)
        if "ClientToken" in doc:
            doc["ClientToken"] = "<uuid>"
        body = doc
    return {"method": req["method"], "path": req["path"], "query": req["query"],
            "headers": headers, "body": body}


def both(server, ours, theirs, name: str, **kwargs):
    """Call ``name`` on both clients; return (ours, theirs, our request, their request)."""
    results = []
    for client in (ours, theirs):
        before = len(server.requests)
        try:
            out = getattr(client, name)(**kwargs)
        except Exception as e:  # noqa: BLE001 - compared below
            out = e
        results.append((out, server.requests[before:]))
    (a, ra), (b, rb) = results
    return a, b, ra, rb


@pytest.fixture(scope="module")
def snapshot(server, theirs):
    snap = theirs.start_snapshot(VolumeSize=1)["SnapshotId"]
    for i in (0, 3, 200):
        d = block(i)
        theirs.put_snapshot_block(SnapshotId=snap, BlockIndex=i, BlockData=d, DataLength=len(d),
                                  Checksum=b64sha(d), ChecksumAlgorithm="SHA256")
    theirs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=3)
    return snap


# -- on the wire and in the answers ---------------------------------------------------------

def test_headers_go_out_in_boto3s_order(server, ours, theirs, snapshot):
    token = theirs.list_snapshot_blocks(SnapshotId=snapshot)["Blocks"][0]["BlockToken"]
    d = block(5)
    calls = [("list_snapshot_blocks", dict(SnapshotId=snapshot, MaxResults=100)),
             ("get_snapshot_block", dict(SnapshotId=snapshot, BlockIndex=0, BlockToken=token)),
             ("start_snapshot", dict(VolumeSize=1, ClientToken="order-token")),
             ("put_snapshot_block", dict(SnapshotId=snapshot, BlockIndex=9, BlockData=d,
                                         DataLength=len(d), Checksum=b64sha(d),
                                         ChecksumAlgorithm="SHA256")),
             ("complete_snapshot", dict(SnapshotId=snapshot, ChangedBlocksCount=3))]
    names = {}
    for name, kwargs in calls:
        _, _, ra, rb = both(server, ours, theirs, name, **kwargs)
        names[name] = [k for k, _ in rb[0]["headers"]]
        assert [k for k, _ in ra[0]["headers"]] == names[name], name
    before = len(server.requests)  # and the block read into caller memory, the same as a get
    ours.get_snapshot_block_into(SnapshotId=snapshot, BlockIndex=0, BlockToken=token,
                                 Out=np.empty(BLOCK_SIZE, np.uint8))
    assert [k for k, _ in server.requests[before]["headers"]] == names["get_snapshot_block"]

def test_list_and_get_match_boto3(server, ours, theirs, snapshot):
    a, b, ra, rb = both(server, ours, theirs, "list_snapshot_blocks", SnapshotId=snapshot,
                        MaxResults=100, StartingBlockIndex=1)
    assert [request_view(r) for r in ra] == [request_view(r) for r in rb]
    assert normalize_response(a) == normalize_response(b)
    assert a["ExpiryTime"] == b["ExpiryTime"] and a["ExpiryTime"].tzinfo is not None
    token = a["Blocks"][0]["BlockToken"]
    a, b, ra, rb = both(server, ours, theirs, "get_snapshot_block", SnapshotId=snapshot,
                        BlockIndex=3, BlockToken=token)
    assert [request_view(r) for r in ra] == [request_view(r) for r in rb]
    da, db = a.pop("BlockData").read(), b.pop("BlockData").read()
    assert da == db == block(3)
    assert normalize_response(a) == normalize_response(b)


def test_changed_blocks_match_boto3(server, ours, theirs, snapshot):
    child = theirs.start_snapshot(VolumeSize=1, ParentSnapshotId=snapshot)["SnapshotId"]
    d = block(77)
    theirs.put_snapshot_block(SnapshotId=child, BlockIndex=3, BlockData=d, DataLength=len(d),
                              Checksum=b64sha(d), ChecksumAlgorithm="SHA256")
    theirs.complete_snapshot(SnapshotId=child, ChangedBlocksCount=1)
    a, b, ra, rb = both(server, ours, theirs, "list_changed_blocks", FirstSnapshotId=snapshot,
                        SecondSnapshotId=child, MaxResults=100)
    assert [request_view(r) for r in ra] == [request_view(r) for r in rb]
    assert normalize_response(a) == normalize_response(b)
    assert [c["BlockIndex"] for c in a["ChangedBlocks"]] == [3]


def test_writes_match_boto3(server, ours, theirs):
    a, b, ra, rb = both(server, ours, theirs, "start_snapshot", VolumeSize=2,
                        Description="nightly", Tags=[{"Key": "k", "Value": ""}], Timeout=60)
    assert [request_view(r) for r in ra] == [request_view(r) for r in rb]
    for r in (a, b):
        r.pop("SnapshotId")
    assert normalize_response(a) == normalize_response(b)
    snap_a = ours.start_snapshot(VolumeSize=1)["SnapshotId"]
    snap_b = theirs.start_snapshot(VolumeSize=1)["SnapshotId"]
    d = block(5)
    views = []
    outs = []
    for client, snap in ((ours, snap_a), (theirs, snap_b)):
        before = len(server.requests)
        outs.append(client.put_snapshot_block(SnapshotId=snap, BlockIndex=9, BlockData=d,
                                              DataLength=len(d), Checksum=b64sha(d),
                                              ChecksumAlgorithm="SHA256", Progress=10))
        outs.append(client.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=1,
                                             Checksum=ebsfast.linear_checksum(
                                                 [hashlib.sha256(d).digest()]),
                                             ChecksumAlgorithm="SHA256",
                                             ChecksumAggregationMethod="LINEAR"))
        views.append([request_view(r) for r in server.requests[before:]])
    for v in views:
        for r in v:
            r["path"] = r["path"].replace(snap_a, "<snap>").replace(snap_b, "<snap>")
    assert views[0] == views[1]
    assert normalize_response(outs[0]) == normalize_response(outs[2])
    assert normalize_response(outs[1]) == normalize_response(outs[3])
    assert outs[1]["Status"] == "completed"


@pytest.mark.parametrize("call", [
    dict(name="list_snapshot_blocks", SnapshotId="snap-0000000000000000f"),
    dict(name="get_snapshot_block", SnapshotId="snap-0000000000000000f", BlockIndex=0,
         BlockToken="AAAA"),
    dict(name="start_snapshot", VolumeSize=99999),
    dict(name="list_changed_blocks", SecondSnapshotId="snap-0000000000000000f"),
    dict(name="complete_snapshot", SnapshotId="snap-0000000000000000f", ChangedBlocksCount=0),
])
def test_errors_match_boto3(server, ours, theirs, call):
    call = dict(call)
    name = call.pop("name")
    a, b, ra, rb = both(server, ours, theirs, name, **call)
    assert isinstance(a, exc.ClientError) and isinstance(b, botocore.exceptions.ClientError)
    assert isinstance(a, botocore.exceptions.ClientError)  # drop-in for except clauses
    assert type(a).__name__ == type(b).__name__
    assert str(a) == str(b)
    assert a.operation_name == b.operation_name
    assert normalize_response(a.response) == normalize_response(b.response)
    assert isinstance(a, getattr(ours.exceptions, a.response["Error"]["Code"], exc.ClientError))


@pytest.mark.parametrize("name,kwargs", [
    ("get_snapshot_block", dict(SnapshotId="snap-1", BlockIndex="3", BlockToken="t")),
    ("get_snapshot_block", dict(SnapshotId="snap-1", BlockIndex=-1, BlockToken="t")),
    ("get_snapshot_block", dict(SnapshotId="snap-1", BlockToken="t")),
    ("list_snapshot_blocks", dict(SnapshotId="snap-1", MaxResults=5)),
    ("list_snapshot_blocks", dict(SnapshotId="", Bogus=1)),
    ("start_snapshot", dict(VolumeSize=1, Tags=[{"Key": 1}], Encrypted="yes")),
    ("start_snapshot", dict(VolumeSize=0, Timeout=1)),
    ("put_snapshot_block", dict(SnapshotId="snap-1", BlockIndex=0, BlockData=5,
                                DataLength=1, Checksum="x", ChecksumAlgorithm="SHA256")),
    ("put_snapshot_block", dict(SnapshotId="snap-1", BlockIndex=0, BlockData=b"x",
                                Checksum="x")),
    ("complete_snapshot", dict(SnapshotId="snap-1", ChangedBlocksCount=-1)),
])
def test_param_validation_matches_boto3(server, ours, theirs, name, kwargs):
    before = len(server.requests)
    with pytest.raises(botocore.exceptions.ParamValidationError) as want:
        getattr(theirs, name)(**kwargs)
    with pytest.raises(exc.ParamValidationError) as got:
        getattr(ours, name)(**kwargs)
    assert str(got.value) == str(want.value)
    assert isinstance(got.value, botocore.exceptions.ParamValidationError)
    assert len(server.requests) == before  # nothing was sent


def test_presigned_url_matches_botocore(server, ours, theirs, snapshot):
    fixed = "20261128T120000Z"
    import datetime

    when = datetime.datetime(2026, 11, 28, 12, 0, 0)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when), \
            mock.patch("ebsfast.client.amz_date", return_value=fixed):
        for method, params in [
            ("list_snapshot_blocks", {"SnapshotId": snapshot, "MaxResults": 100}),
            ("get_snapshot_block", {"SnapshotId": snapshot, "BlockIndex": 3,
                                    "BlockToken": "a+b/c=="}),
        ]:
            assert (ours.generate_presigned_url(method, Params=params, ExpiresIn=900)
                    == theirs.generate_presigned_url(method, Params=params, ExpiresIn=900))
    with pytest.raises(exc.UnknownClientMethodError):
        ours.generate_presigned_url("describe_snapshots")


# -- the rest of boto3's surface ---------------------------------------------------------------

def test_client_surface(server, ours, theirs):
    assert ours.meta.region_name == theirs.meta.region_name
    assert ours.meta.endpoint_url == theirs.meta.endpoint_url
    assert ours.meta.partition == theirs.meta.partition
    assert ours.meta.method_to_api_mapping == theirs.meta.method_to_api_mapping
    assert ours.meta.service_model.operation_names == theirs.meta.service_model.operation_names
    assert ours.meta.service_model.service_name == "ebs"
    assert ours.waiter_names == theirs.waiter_names == []
    with pytest.raises(ValueError, match="Waiter does not exist: x"):
        ours.get_waiter("x")
    with pytest.raises(TypeError, match="only accepts keyword arguments"):
        ours.get_snapshot_block("snap-1")
    assert ours.can_paginate("list_snapshot_blocks") and ours.can_paginate("list_changed_blocks")
    assert not ours.can_paginate("get_snapshot_block")
    with pytest.raises(exc.OperationNotPageableError):
        ours.get_paginator("get_snapshot_block")
    assert hasattr(theirs.exceptions, "ValidationException")
    for code in ("ValidationException", "ConflictException", "AccessDeniedException",
                 "RequestThrottledException", "ResourceNotFoundException"):
        assert issubclass(getattr(ours.exceptions, code), ours.exceptions.ClientError)
    assert ours.exceptions.from_code("Nope") is exc.ClientError
    with pytest.raises(exc.UnknownServiceError):
        ebsfast.client("s3")
    assert server.secret_key not in repr(ours)
    for name in theirs.meta.service_model.operation_names:
        mine = ours.meta.service_model.operation_model(name)
        peer = theirs.meta.service_model.operation_model(name)
        assert (mine.name, mine.http) == (peer.name, dict(peer.http))
        assert mine.has_streaming_input == peer.has_streaming_input
        assert mine.has_streaming_output == peer.has_streaming_output
        assert sorted(e.name for e in mine.error_shapes) == sorted(
            e.name for e in peer.error_shapes)


@pytest.mark.parametrize("given", [{}, {"region_name": "eu-west-1", "retries": {
    "max_attempts": 2}, "connect_timeout": 5, "user_agent_appid": "app1"}])
def test_meta_config_holds_what_was_resolved(server, given, monkeypatch):
    # the region argument wins over the Config's, the retry mode and signature version are
    # filled in, the User-Agent is the one sent: as botocore's meta.config
    monkeypatch.setenv("AWS_SDK_UA_APP_ID", "from-env")
    ours = ebsfast.client("ebs", config=ebsfast.Config(**given), **kwargs_for(server))
    theirs = boto3.client("ebs", config=botocore.config.Config(**given), **kwargs_for(server))
    for name in ("region_name", "retries", "signature_version", "connect_timeout",
                 "user_agent_appid", "read_timeout", "max_pool_connections"):
        assert getattr(ours.meta.config, name) == getattr(theirs.meta.config, name), name
    # the User-Agent sent (with the application id, from the Config or the environment) is
    # meta.config's and more, and a client made from meta.config sends the same one
    app = given.get("user_agent_appid", "from-env")
    before = len(server.requests)
    ours.start_snapshot(VolumeSize=1)
    again = ebsfast.client("ebs", config=ours.meta.config, **kwargs_for(server))
    again.start_snapshot(VolumeSize=1)
    sent = [dict(r["headers"])["User-Agent"] for r in server.requests[before:before + 2]]
    assert sent[0] == sent[1] and f" app/{app}" in sent[0]
    assert sent[0].startswith(ours.meta.config.user_agent)
    ours.close()
    again.close()


@pytest.mark.parametrize("retries", [{"mode": "bogus"}, {"max_attempts": -1},
                                     {"total_max_attempts": 0}, {"foo": 1}])
def test_bad_retry_settings_are_botocores_errors(retries):
    with pytest.raises(botocore.exceptions.BotoCoreError) as peer:
        botocore.config.Config(retries=retries)
    with pytest.raises(exc.InvalidRetryConfigurationError) as mine:
        ebsfast.Config(retries=retries)
    assert type(mine.value).__name__ == type(peer.value).__name__
    assert isinstance(mine.value, type(peer.value)) and isinstance(mine.value, ValueError)
    assert str(mine.value) == str(peer.value)


@pytest.mark.parametrize("env", [{"AWS_RETRY_MODE": "bogus"}, {"AWS_MAX_ATTEMPTS": "0"}])
def test_bad_retry_settings_from_the_environment_are_botocores_errors(env, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    kw = dict(region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
    with pytest.raises(botocore.exceptions.BotoCoreError) as peer:
        boto3.client("ebs", **kw)
    with pytest.raises(exc.InvalidRetryConfigurationError) as mine:
        ebsfast.client("ebs", **kw)
    assert type(mine.value).__name__ == type(peer.value).__name__
    assert str(mine.value) == str(peer.value)


def test_unsigned_requests_match_boto3(monkeypatch, tmp_path):
    # Config(signature_version=UNSIGNED): no credentials needed, nothing signed, and the
    # local server (which checks signatures) refuses both clients alike
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with EBSServer(record_requests=True) as s:
        kw = dict(endpoint_url=s.endpoint_url, region_name=s.region)
        cfg = dict(signature_version=botocore.UNSIGNED, retries={"total_max_attempts": 1})
        ours = ebsfast.client("ebs", config=ebsfast.Config(**cfg), **kw)
        theirs = boto3.client("ebs", config=botocore.config.Config(**cfg), **kw)
        d = bytes(BLOCK_SIZE)
        calls = [("list_snapshot_blocks", dict(SnapshotId="snap-0123456789abcdef0")),
                 ("get_snapshot_block", dict(SnapshotId="snap-0123456789abcdef0",
                                             BlockIndex=1, BlockToken="AAAB")),
                 ("start_snapshot", dict(VolumeSize=1, ClientToken="unsigned")),
                 ("put_snapshot_block", dict(SnapshotId="snap-0123456789abcdef0", BlockIndex=1,
                                             BlockData=d, DataLength=len(d),
                                             Checksum=b64sha(d), ChecksumAlgorithm="SHA256"))]
        for name, kwargs in calls:
            a, b, ra, rb = both(s, ours, theirs, name, **kwargs)
            if name == "put_snapshot_block":  # its own auth type in the model: still signed
                assert type(a).__name__ == type(b).__name__ == "NoCredentialsError"
                assert ra == rb == []
                continue
            assert type(a).__name__ == type(b).__name__ == "AccessDeniedException", name
            assert [k for k, _ in ra[0]["headers"]] == [k for k, _ in rb[0]["headers"]], name
            assert not {"authorization", "x-amz-date"} & {k.lower() for k, _ in ra[0]["headers"]}
        before = len(s.requests)
        with pytest.raises(ebsfast.exceptions.ClientError, match="AccessDenied"):
            ours.get_snapshot_block_into(SnapshotId="snap-0123456789abcdef0", BlockIndex=1,
                                         BlockToken="AAAB", Out=np.empty(BLOCK_SIZE, np.uint8))
        assert "authorization" not in {k.lower() for k, _ in s.requests[before]["headers"]}
        args = dict(ClientMethod="get_snapshot_block", Params=dict(
            SnapshotId="snap-0123456789abcdef0", BlockIndex=1, BlockToken="AAAB"))
        assert ours.generate_presigned_url(**args) == theirs.generate_presigned_url(**args)
        ours.close()
    with pytest.raises(ValueError, match="signature_version"):
        ebsfast.client("ebs", config=ebsfast.Config(signature_version="v2"), **kw)


def test_without_validation_odd_types_go_out_as_boto3_sends_them(server):
    # parameter_validation=False: what the caller gave is serialized as botocore does
    cfg = dict(parameter_validation=False, retries={"total_max_attempts": 1})
    ours = ebsfast.client("ebs", **kwargs_for(server, config=ebsfast.Config(**cfg)))
    theirs = boto3.client("ebs", **kwargs_for(server, config=botocore.config.Config(**cfg)))
    args = dict(SnapshotId="snap-0123456789abcdef0", BlockIndex=1.0, BlockToken=123)
    for name in ("get_snapshot_block", "get_snapshot_block_into"):
        before = len(server.requests)
        kw = dict(args, Out=np.empty(BLOCK_SIZE, np.uint8)) if name.endswith("into") else args
        with pytest.raises(exc.ClientError, match="ResourceNotFound"):
            getattr(ours, name)(**kw)
        with pytest.raises(botocore.exceptions.ClientError, match="ResourceNotFound"):
            theirs.get_snapshot_block(**args)
        mine, peer = server.requests[before:before + 2]
        assert (mine["method"], mine["path"], mine["query"]) == (
            peer["method"], peer["path"], peer["query"]), name
    ours.close()


def test_botocore_options_without_effect_on_ebs_are_taken():
    options = dict(inject_host_prefix=False, request_checksum_calculation="when_required",
                   response_checksum_validation="when_required",
                   disable_request_compression=True, endpoint_discovery_enabled=False)
    botocore.config.Config(**options)
    cfg = ebsfast.Config(**options)
    assert cfg.inject_host_prefix is False
    with pytest.raises(TypeError, match="bogus_option"):
        ebsfast.Config(bogus_option=1)


def test_no_region_is_an_error(monkeypatch, tmp_path):
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(exc.NoRegionError) as ei:
        ebsfast.client("ebs", aws_access_key_id="a", aws_secret_access_key="b")
    assert str(ei.value) == "You must specify a region."


def test_default_endpoint_is_botocores():
    for region, cfg in [("us-east-1", {}), ("eu-west-3", {"use_fips_endpoint": True}),
                        ("cn-north-1", {"use_dualstack_endpoint": True})]:
        ours = ebsfast.client("ebs", region_name=region, aws_access_key_id="a",
                              aws_secret_access_key="b", config=ebsfast.Config(**cfg))
        theirs = boto3.client("ebs", region_name=region, aws_access_key_id="a",
                              aws_secret_access_key="b",
                              config=botocore.config.Config(**cfg))
        assert ours.meta.endpoint_url == theirs.meta.endpoint_url


def test_credentials_from_environment(server, monkeypatch, snapshot):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", server.region)
    c = ebsfast.client("ebs", endpoint_url=server.endpoint_url,
                       verify=server.ca_file if server.tls else None)
    assert c.list_snapshot_blocks(SnapshotId=snapshot)["Blocks"]


def test_no_credentials_raises_at_call(monkeypatch, tmp_path, server):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    c = ebsfast.client("ebs", region_name="us-east-1", endpoint_url=server.endpoint_url)
    with pytest.raises(exc.NoCredentialsError) as ei:
        c.list_snapshot_blocks(SnapshotId="snap-1")
    assert str(ei.value) == "Unable to locate credentials"


def test_wrong_secret_is_a_signature_error(server):
    c = ebsfast.client("ebs", **dict(kwargs_for(server), aws_secret_access_key="wrong-secret"))
    with pytest.raises(exc.ClientError) as ei:
        c.list_snapshot_blocks(SnapshotId="snap-1")
    assert ei.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert "wrong-secret" not in str(ei.value) and "wrong-secret" not in repr(ei.value.response)


# -- ebsfast's additions -------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda d: d, lambda d: bytearray(d), lambda d: memoryview(d),
    lambda d: np.frombuffer(d, dtype=np.uint8), lambda d: io.BytesIO(d),
])
def test_put_accepts_buffers_and_computes_checksums(server, ours, make):
    snap = ours.start_snapshot(VolumeSize=1)["SnapshotId"]
    d = block(11)
    r = ours.put_snapshot_block(SnapshotId=snap, BlockIndex=0, BlockData=make(d))
    assert r["Checksum"] == b64sha(d)
    assert ours.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=1)["Status"] == "completed"
    token = ours.list_snapshot_blocks(SnapshotId=snap)["Blocks"][0]["BlockToken"]
    assert ours.get_snapshot_block(SnapshotId=snap, BlockIndex=0,
                                   BlockToken=token)["BlockData"].read() == d


def test_data_length_must_match_the_data(server, ours):
    before = len(server.requests)
    with pytest.raises(exc.ParamValidationError, match="DataLength"):
        ours.put_snapshot_block(SnapshotId="snap-1", BlockIndex=0, BlockData=b"abc",
                                DataLength=4, Checksum=b64sha(b"abc"),
                                ChecksumAlgorithm="SHA256")
    assert len(server.requests) == before


def test_streaming_body_interface(server, ours, snapshot):
    token = ours.list_snapshot_blocks(SnapshotId=snapshot)["Blocks"][0]["BlockToken"]
    with ours.get_snapshot_block(SnapshotId=snapshot, BlockIndex=0,
                                 BlockToken=token)["BlockData"] as body:
        assert body.read(10) == block(0)[:10]
        buf = bytearray(100)
        assert body.readinto(buf) == 100 and bytes(buf) == block(0)[10:110]
        assert body.tell() == 110
        rest = b"".join(body.iter_chunks(65536))
        assert rest == block(0)[110:]
        assert body.read() == b""
    assert body.closed
    with pytest.raises(ValueError):
        body.read()


def test_streaming_body_lines_match_boto3(server, ours, theirs):
    # lines of a block read as botocore's body reads them: readline, readlines (with a hint),
    # after a partial read, and the last piece without its line end
    data = (b"line one\nsecond, longer line\n\n" * 20000)[:BLOCK_SIZE - 5] + b"tail!"
    snap = ours.start_snapshot(VolumeSize=1)["SnapshotId"]
    ours.put_snapshot_block(SnapshotId=snap, BlockIndex=0, BlockData=data)
    ours.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=1)
    token = ours.list_snapshot_blocks(SnapshotId=snap)["Blocks"][0]["BlockToken"]

    def lines(c):
        got = []
        for steps in (["readlines"], ["read7", "readline", "readline4", "readlines"]):
            body = c.get_snapshot_block(SnapshotId=snap, BlockIndex=0, BlockToken=token)[
                "BlockData"]
            for step in steps:
                if step == "readlines":
                    got.append(body.readlines())
                elif step == "read7":
                    got.append(body.read(7))
                elif step == "readline":
                    got.append(body.readline())
                else:
                    got.append(body.readline(4))
        return got

    mine, peer = lines(ours), lines(theirs)
    assert mine == peer
    assert b"".join(mine[0]) == data and mine[0][-1].endswith(b"tail!")  # no line end
    body = ours.get_snapshot_block(SnapshotId=snap, BlockIndex=0, BlockToken=token)["BlockData"]
    assert body.readlines(20) == [b"line one\n", b"second, longer line\n"]  # io's hint


# -- paginators -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_snapshot(ours):
    snap = ours.start_snapshot(VolumeSize=1)["SnapshotId"]
    zero = bytes(BLOCK_SIZE)
    for i in range(250):
        ours.put_snapshot_block(SnapshotId=snap, BlockIndex=i * 2, BlockData=zero)
    ours.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=250)
    return snap


def test_paginator_pages_and_full_result(ours, big_snapshot):
    pages = list(ours.get_paginator("list_snapshot_blocks").paginate(
        SnapshotId=big_snapshot, PaginationConfig={"PageSize": 100}))
    assert [len(p["Blocks"]) for p in pages] == [100, 100, 50]
    full = ours.get_paginator("list_snapshot_blocks").paginate(
        SnapshotId=big_snapshot, PaginationConfig={"PageSize": 100}).build_full_result()
    assert [b["BlockIndex"] for b in full["Blocks"]] == list(range(0, 500, 2))
    assert full["VolumeSize"] == 1 and full["BlockSize"] == BLOCK_SIZE
    assert "NextToken" not in full


def test_paginator_max_items_and_resume(ours, big_snapshot):
    pag = ours.get_paginator("list_snapshot_blocks")
    first = pag.paginate(SnapshotId=big_snapshot,
                         PaginationConfig={"PageSize": 100, "MaxItems": 130}).build_full_result()
    assert len(first["Blocks"]) == 130 and "NextToken" in first
    second = pag.paginate(SnapshotId=big_snapshot, PaginationConfig={
        "PageSize": 100, "MaxItems": 60, "StartingToken": first["NextToken"]}
    ).build_full_result()
    third = pag.paginate(SnapshotId=big_snapshot, PaginationConfig={
        "PageSize": 100, "StartingToken": second["NextToken"]}).build_full_result()
    got = [b["BlockIndex"] for b in first["Blocks"] + second["Blocks"] + third["Blocks"]]
    assert got == list(range(0, 500, 2))
    with pytest.raises(exc.PaginationError):
        list(pag.paginate(SnapshotId=big_snapshot, PaginationConfig={"StartingToken": "junk"}))
    with pytest.raises(exc.PaginationError):
        pag.paginate(SnapshotId=big_snapshot, PaginationConfig={"Bogus": 1})


def test_changed_blocks_paginator(ours, big_snapshot):
    child = ours.start_snapshot(VolumeSize=1, ParentSnapshotId=big_snapshot)["SnapshotId"]
    for i in range(120):
        ours.put_snapshot_block(SnapshotId=child, BlockIndex=1000 + i, BlockData=block(i))
    ours.complete_snapshot(SnapshotId=child, ChangedBlocksCount=120)
    full = ours.get_paginator("list_changed_blocks").paginate(
        FirstSnapshotId=big_snapshot, SecondSnapshotId=child,
        PaginationConfig={"PageSize": 100}).build_full_result()
    assert [c["BlockIndex"] for c in full["ChangedBlocks"]] == list(range(1000, 1120))


# -- faults: no wrong data, no reused broken connection ---------------------------------------

@pytest.fixture()
def faulty():
    with EBSServer() as s:
        c = ebsfast.client("ebs", **kwargs_for(s, config=ebsfast.Config(
            retries={"mode": "standard", "total_max_attempts": 8}, read_timeout=1)))
        snap = c.start_snapshot(VolumeSize=1)["SnapshotId"]
        blocks = {i: block(300 + i) for i in range(4)}
        for i, d in blocks.items():
            c.put_snapshot_block(SnapshotId=snap, BlockIndex=i, BlockData=d)
        c.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=4)
        tokens = {b["BlockIndex"]: b["BlockToken"]
                  for b in c.list_snapshot_blocks(SnapshotId=snap)["Blocks"]}
        with mock.patch.object(c._retry, "_sleep", lambda s: None):
            yield s, c, snap, blocks, tokens


@pytest.mark.parametrize("knob", ["reset_rate", "truncate_rate", "corrupt_rate", "error_rate"])
def test_faults_are_retried_and_data_is_right(faulty, knob):
    s, c, snap, blocks, tokens = faulty
    s.set_faults(**{knob: 0.5, "seed": 3})
    retried = 0
    for _ in range(5):
        for i, d in blocks.items():
            r = c.get_snapshot_block(SnapshotId=snap, BlockIndex=i, BlockToken=tokens[i])
            assert r["BlockData"].read() == d
            retried += r["ResponseMetadata"]["RetryAttempts"]
    assert retried > 0  # the faults did hit, and were recovered from


@pytest.mark.parametrize("knob,error", [
    ("reset_rate", exc.ResponseStreamingError),
    ("truncate_rate", exc.ResponseStreamingError),
    ("corrupt_rate", exc.ChecksumMismatchError),
])
def test_faults_raise_when_retries_run_out(faulty, knob, error):
    s, c, snap, blocks, tokens = faulty
    s.set_faults(**{knob: 1.0})
    accepted = s.connections_accepted
    with pytest.raises((error, exc.ConnectionClosedError)) as ei:
        c.get_snapshot_block(SnapshotId=snap, BlockIndex=1, BlockToken=tokens[1])
    if knob == "corrupt_rate":
        assert "block 1" in str(ei.value) and snap in str(ei.value)
    else:
        # every broken body cost its connection: the first attempt reused a pooled one and
        # each of the other seven had to open a new one, none went back to the pool
        assert s.connections_accepted - accepted >= 7
    s.set_faults(**{knob: 0.0})
    assert c.get_snapshot_block(SnapshotId=snap, BlockIndex=1,
                                BlockToken=tokens[1])["BlockData"].read() == blocks[1]


def test_stall_is_a_read_timeout(faulty):
    s, c, snap, blocks, tokens = faulty
    s.set_faults(stall_rate=1.0, stall_s=3.0, operations={"GetSnapshotBlock"})
    one = ebsfast.client("ebs", **kwargs_for(s, config=ebsfast.Config(
        retries={"total_max_attempts": 1}, read_timeout=0.3)))
    with pytest.raises(exc.ReadTimeoutError):
        one.get_snapshot_block(SnapshotId=snap, BlockIndex=0, BlockToken=tokens[0])
    s.set_faults(stall_rate=0.0)


def test_throttling_is_retried_and_counted(faulty):
    s, c, snap, blocks, tokens = faulty
    s.set_faults(rate_limits={"ListSnapshotBlocks": 2})
    # real backoff here: the server's throttle window is one real second
    with mock.patch.object(c._retry, "_sleep", time.sleep):
        results = [c.list_snapshot_blocks(SnapshotId=snap) for _ in range(4)]
    assert all(len(r["Blocks"]) == 4 for r in results)
    assert sum(r["ResponseMetadata"]["RetryAttempts"] for r in results) >= 1
    s.set_faults(rate_limits={})


def test_other_4xx_is_not_retried(faulty):
    s, c, snap, blocks, tokens = faulty
    before = s.requests_served
    with pytest.raises(exc.ClientError) as ei:
        c.get_snapshot_block(SnapshotId=snap, BlockIndex=0, BlockToken="AAAA")
    assert ei.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    assert s.requests_served - before == 1


def test_connection_refused():
    c = ebsfast.client("ebs", endpoint_url=f"http://127.0.0.1:{unused_port()}", region_name="us-east-1",
                       aws_access_key_id="a", aws_secret_access_key="b",
                       config=ebsfast.Config(retries={"total_max_attempts": 1}))
    with pytest.raises(exc.EndpointConnectionError):
        c.list_snapshot_blocks(SnapshotId="snap-1")


def _raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - compared below
        return e
    raise AssertionError("no error")


@pytest.mark.parametrize("case", ["refused", "untrusted-certificate", "read-timeout"])
def test_transport_errors_match_boto3(case):
    # The same class and message as botocore's (the message naming the request's URL), after
    # the same number of attempts.
    faults = Faults(stall_rate=1.0, stall_s=3.0) if case == "read-timeout" else None
    with EBSServer(tls=case == "untrusted-certificate", faults=faults) as s:
        url = f"http://127.0.0.1:{unused_port()}" if case == "refused" else s.endpoint_url
        kw = dict(endpoint_url=url, region_name=s.region, aws_access_key_id=s.access_key,
                  aws_secret_access_key=s.secret_key)  # verify left on: the CA is unknown
        cfg = dict(retries={"mode": "standard", "total_max_attempts": 2}, read_timeout=0.3)
        ours = ebsfast.client("ebs", config=ebsfast.Config(**cfg), **kw)
        theirs = boto3.client("ebs", config=botocore.config.Config(**cfg), **kw)
        calls = {"list": lambda c: c.list_snapshot_blocks(SnapshotId="snap-0123456789abcdef0",
                                                          MaxResults=100),
                 "get": lambda c: c.get_snapshot_block(SnapshotId="snap-0123456789abcdef0",
                                                       BlockIndex=3, BlockToken="AAAB+/=")}
        for name, call in calls.items():
            with mock.patch("time.sleep"):
                before = s.connections_accepted
                mine = _raised(lambda: call(ours))
                mine_conns = s.connections_accepted - before
                before = s.connections_accepted
                peer = _raised(lambda: call(theirs))
                peer_conns = s.connections_accepted - before
            assert isinstance(mine, type(peer)), (name, mine, peer)
            assert str(mine) == str(peer), name
            assert mine_conns == peer_conns, name
        ours.close()


# -- threads, logs and secrets ---------------------------------------------------------------

def test_one_client_many_threads(server, ours, snapshot):
    listed = ours.list_snapshot_blocks(SnapshotId=snapshot)["Blocks"]
    errors = []

    def work():
        try:
            for b in listed * 5:
                data = ours.get_snapshot_block(SnapshotId=snapshot, BlockIndex=b["BlockIndex"],
                                               BlockToken=b["BlockToken"])["BlockData"].read()
                assert data == block(b["BlockIndex"])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_no_secret_in_logs_repr_or_errors(server, caplog, snapshot):
    token = "SESSIONTOKEN" + "x" * 20
    secret = "SECRETKEY" + "y" * 31
    c = ebsfast.client("ebs", **dict(kwargs_for(server), aws_session_token=token,
                                     aws_secret_access_key=secret))
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(exc.ClientError) as ei:
            c.list_snapshot_blocks(SnapshotId=snapshot)  # the server rejects the signature
    assert ei.value.response["Error"]["Code"] == "InvalidSignatureException"
    text = caplog.text + repr(c) + str(ei.value) + repr(ei.value.response) + repr(c._signer()[0])
    assert secret not in text and token not in text
    assert caplog.records  # DEBUG logging did happen


@pytest.mark.parametrize("mode", ["standard", "adaptive"])
def test_retry_mode_headers_match_boto3(server, snapshot, mode):
    ours = ebsfast.client("ebs", **kwargs_for(server, config=ebsfast.Config(
        retries={"mode": mode, "max_attempts": 6})))
    theirs = boto3.client("ebs", **kwargs_for(server, config=botocore.config.Config(
        retries={"mode": mode, "max_attempts": 6})))
    a, b, ra, rb = both(server, ours, theirs, "list_snapshot_blocks", SnapshotId=snapshot)
    assert [request_view(r) for r in ra] == [request_view(r) for r in rb]
    assert dict(ra[0]["headers"])["amz-sdk-request"] == "attempt=1"
    assert normalize_response(a) == normalize_response(b)


@pytest.mark.parametrize("operation", ["start_snapshot", "put_snapshot_block"])
def test_retried_requests_match_boto3(snapshot, operation):
    """The retry headers of a retried call, with the server failing every first attempt
    (an upload's retries carry a ttl too, as botocore's do)."""
    data = block(9)
    with EBSServer(record_requests=True, faults=Faults(error_rate=0.5, seed=11)) as s:
        s.set_faults(error_rate=0.0)
        snap = boto3.client("ebs", **kwargs_for(s)).start_snapshot(VolumeSize=1)["SnapshotId"]
        s.set_faults(error_rate=0.5)
        cfgs = [ebsfast.Config(retries={"mode": "standard", "max_attempts": 6}),
                botocore.config.Config(retries={"mode": "standard", "max_attempts": 6})]
        views = []
        for make, cfg in zip((ebsfast.client, boto3.client), cfgs):
            s.set_faults(seed=11)
            c = make("ebs", **kwargs_for(s, config=cfg))
            with mock.patch("time.sleep"), mock.patch.object(
                    getattr(c, "_retry", None) or mock.Mock(), "_sleep", lambda _: None):
                before = len(s.requests)
                if operation == "start_snapshot":
                    r = c.start_snapshot(VolumeSize=1, ClientToken="fixed-token")
                else:
                    r = c.put_snapshot_block(SnapshotId=snap, BlockIndex=1, BlockData=data,
                                             DataLength=len(data), Checksum=b64sha(data),
                                             ChecksumAlgorithm="SHA256")
            views.append(([request_view(x)["headers"]["amz-sdk-request"]
                           for x in s.requests[before:]], r["ResponseMetadata"]["RetryAttempts"]))
        assert views[0] == views[1]
        assert views[0][1] >= 1 and views[0][0][1] == "ttl=<t>; attempt=2; max=7"


@pytest.mark.parametrize("session", [False, True], ids=["keys", "session-token"])
def test_retried_block_reads_match_boto3(snapshot, session):
    """GetSnapshotBlock has its own attempt loop: its requests, retries included (the server
    failing about half of them), and with a session token, are boto3's."""
    token = "FwoGZXIvYXdzEXAMPLE" + "z" * 40
    with EBSServer(record_requests=True, session_token=token if session else None) as s:
        setup = boto3.client("ebs", **kwargs_for(s, aws_session_token=token if session else None))
        snap = setup.start_snapshot(VolumeSize=1)["SnapshotId"]
        data = block(7)
        setup.put_snapshot_block(SnapshotId=snap, BlockIndex=2, BlockData=data,
                                 DataLength=len(data), Checksum=b64sha(data),
                                 ChecksumAlgorithm="SHA256")
        setup.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=1)
        tok = setup.list_snapshot_blocks(SnapshotId=snap)["Blocks"][0]["BlockToken"]
        cfg = {"retries": {"mode": "standard", "max_attempts": 9}}
        seen = []
        for make, config in ((ebsfast.client, ebsfast.Config(**cfg)),
                             (boto3.client, botocore.config.Config(**cfg))):
            c = make("ebs", **kwargs_for(s, config=config,
                                         aws_session_token=token if session else None))
            s.set_faults(error_rate=0.5, seed=1)
            with mock.patch("time.sleep"), mock.patch.object(
                    getattr(c, "_retry", None) or mock.Mock(), "_sleep", lambda _: None):
                before = len(s.requests)
                r = c.get_snapshot_block(SnapshotId=snap, BlockIndex=2, BlockToken=tok)
                body = r["BlockData"].read()
            seen.append(([request_view(x) for x in s.requests[before:]],
                         r["ResponseMetadata"]["RetryAttempts"], body))
        assert seen[0] == seen[1]
        assert seen[0][1] >= 1 and seen[0][2] == data
        sent = seen[0][0][0]["headers"]
        assert ("x-amz-security-token" in sent) is session
