"""ListSnapshotBlocks / ListChangedBlocks pages: ebsfast._pages and its twin, against botocore's
parser and each other, on pages from the local server, synthetic pages, Hypothesis-made pages
and malformed bodies; then the columnar BlockList / ChangedBlockList built from them."""
from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import importlib
import json
import os
import random

import boto3
import botocore.config
import botocore.session
import numpy as np
import pytest
import urllib3
from botocore.parsers import RestJSONParser
from botocore.utils import parse_timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebsfast.blocklist import BlockList, ChangedBlockList, TokenColumn
from ebsfast.testing import BLOCK_SIZE, EBSServer

NO_EXTENSIONS = os.environ.get("EBSFAST_NO_EXTENSIONS", "") not in ("", "0")
LIST_KEY = {"blocks": "Blocks", "changed": "ChangedBlocks"}
TOKEN_KEYS = {"blocks": ("BlockToken",), "changed": ("FirstBlockToken", "SecondBlockToken")}
OPERATION = {"blocks": "ListSnapshotBlocks", "changed": "ListChangedBlocks"}


def _load(kind: str):
    if kind == "twin":
        return importlib.import_module("ebsfast._pages_py")
    if NO_EXTENSIONS:
        pytest.skip("EBSFAST_NO_EXTENSIONS=1: the native module is not under test")
    return importlib.import_module("ebsfast._pages")


@pytest.fixture(params=["native", "twin"], scope="module")
def pages(request):
    """``ebsfast._pages`` or ``ebsfast._pages_py``: these tests run against both."""
    return _load(request.param)


def _impls():
    """Every implementation under test, for differential checks inside Hypothesis tests (which
    cannot take function-scoped parametrized fixtures twice)."""
    mods = [importlib.import_module("ebsfast._pages_py")]
    if not NO_EXTENSIONS:
        mods.insert(0, importlib.import_module("ebsfast._pages"))
    return mods


IMPLS = _impls()
_MODEL = botocore.session.get_session().get_service_model("ebs")
_PARSER = RestJSONParser()


def botocore_parse(body: bytes, kind: str) -> dict:
    shape = _MODEL.operation_model(OPERATION[kind]).output_shape
    out = _PARSER.parse({"status_code": 200, "headers": {}, "body": body}, shape)
    out.pop("ResponseMetadata")
    return out


def same_as_botocore(ours: dict, body: bytes, kind: str) -> None:
    theirs = botocore_parse(body, kind)
    if "ExpiryTime" in ours:
        assert parse_timestamp(ours["ExpiryTime"]) == theirs["ExpiryTime"]
        ours = dict(ours, ExpiryTime=theirs["ExpiryTime"])
    assert ours == theirs
    assert list(ours) == list(theirs)  # the model's member order


def expected_page(obj: dict, kind: str) -> dict:
    """What a page object means, written out once more by hand."""
    out = {}
    entries = obj.get(LIST_KEY[kind])
    if entries is not None:
        out[LIST_KEY[kind]] = [
            None if e is None else {k: e[k] for k in ("BlockIndex",) + TOKEN_KEYS[kind]
                                    if e.get(k) is not None}
            for e in entries]
    for k in ("ExpiryTime", "VolumeSize", "BlockSize", "NextToken"):
        if obj.get(k) is not None:
            out[k] = obj[k]
    return out


def columns_agree(cols, page: dict, kind: str) -> None:
    """parse_columns holds exactly what parse_page does."""
    entries = page.get(LIST_KEY[kind], [])
    assert len(cols) == len(entries) and cols.kind == kind
    assert cols.indexes.dtype == np.int64
    assert cols.indexes.tolist() == [e["BlockIndex"] for e in entries]
    for key, blob, offsets in (
            [("BlockToken", cols.tokens, cols.offsets)] if kind == "blocks" else
            [("FirstBlockToken", cols.first, cols.first_offsets),
             ("SecondBlockToken", cols.second, cols.second_offsets)]):
        assert isinstance(blob, bytes) and offsets.dtype == np.int64
        assert offsets[0] == 0 and offsets[-1] == len(blob) and len(offsets) == len(entries) + 1
        assert TokenColumn(blob, offsets).tolist() == [e.get(key, "") for e in entries]
    if kind == "changed":
        assert cols.has_first.dtype == np.bool_ and cols.has_second.dtype == np.bool_
        assert cols.has_first.tolist() == ["FirstBlockToken" in e for e in entries]
        assert cols.has_second.tolist() == ["SecondBlockToken" in e for e in entries]
    else:
        assert cols.first is cols.second is cols.has_first is cols.has_second is None
    assert cols.expiry_time == page.get("ExpiryTime")
    assert type(cols.expiry_time) is type(page.get("ExpiryTime"))
    assert cols.volume_size == page.get("VolumeSize")
    assert cols.block_size == page.get("BlockSize")
    assert cols.next_token == page.get("NextToken")


def columns_possible(page: dict, kind: str) -> bool:
    entries = page.get(LIST_KEY[kind], [])
    need = ("BlockIndex", "BlockToken") if kind == "blocks" else ("BlockIndex",)
    return all(e is not None and all(k in e for k in need) for e in entries)


def token(rng: random.Random) -> str:
    return base64.b64encode(rng.randbytes(rng.randrange(60, 113))).decode()


def synthetic(kind: str, n: int, *, seed: int = 0, next_token: bool = True) -> dict:
    rng = random.Random(seed)
    entries = []
    for i in range(n):
        e: dict = {"BlockIndex": i * 3 + rng.randrange(3)}
        if kind == "blocks":
            e["BlockToken"] = token(rng)
        else:
            shape = rng.randrange(5)
            if shape in (0, 1, 3):
                e["FirstBlockToken"] = token(rng)
            if shape in (0, 2, 3):
                e["SecondBlockToken"] = token(rng)
            if shape == 3:
                e[rng.choice(["FirstBlockToken", "SecondBlockToken"])] = None
        entries.append(e)
    obj = {LIST_KEY[kind]: entries, "ExpiryTime": 1790604800.5, "VolumeSize": 8,
           "BlockSize": 524288}
    if next_token:
        obj["NextToken"] = token(rng)
    return obj


# -- synthetic pages ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["blocks", "changed"])
@pytest.mark.parametrize("n", [0, 1, 10000])
@pytest.mark.parametrize("next_token", [False, True])
def test_synthetic_page(pages, kind, n, next_token):
    obj = synthetic(kind, n, seed=n, next_token=next_token)
    body = json.dumps(obj, separators=(",", ":")).encode()
    page = pages.parse_page(body, kind)
    assert page == expected_page(obj, kind)
    same_as_botocore(page, body, kind)
    columns_agree(pages.parse_columns(body, kind), page, kind)


def test_the_documented_example(pages):
    body = (b'{"Blocks":[{"BlockIndex":0,"BlockToken":"AAUBAQ=="}],"ExpiryTime":1.790604800E9,'
            b'"VolumeSize":8,"BlockSize":524288,"NextToken":"n/t+="}')
    page = pages.parse_page(body, "blocks")
    assert page == {"Blocks": [{"BlockIndex": 0, "BlockToken": "AAUBAQ=="}],
                    "ExpiryTime": 1790604800.0, "VolumeSize": 8, "BlockSize": 524288,
                    "NextToken": "n/t+="}
    assert type(page["ExpiryTime"]) is float


@pytest.mark.parametrize("body", [bytearray, memoryview, lambda b: np.frombuffer(b, np.uint8)])
def test_any_bytes_like_body(pages, body):
    raw = json.dumps(synthetic("changed", 20)).encode()
    assert pages.parse_page(body(raw), "changed") == pages.parse_page(raw, "changed")
    assert len(pages.parse_columns(body(raw), "changed")) == 20


def test_str_body_and_unknown_kind_are_refused(pages):
    with pytest.raises(TypeError):
        pages.parse_page('{"Blocks": []}', "blocks")
    with pytest.raises(ValueError, match="kind"):
        pages.parse_page(b"{}", "snapshots")
    with pytest.raises(ValueError, match="kind"):
        pages.parse_columns(b"{}", "Blocks")


@pytest.mark.parametrize("body, page", [
    # null is absent, at both levels; a null entry stays None, as botocore leaves it
    (b'{"Blocks":null,"ExpiryTime":null,"VolumeSize":null,"BlockSize":null,"NextToken":null}',
     {}),
    (b'{"Blocks":[{"BlockIndex":null,"BlockToken":null},null]}', {"Blocks": [{}, None]}),
    # the last of repeated keys wins, as in json.loads; a repeated list replaces the first
    (b'{"VolumeSize":1,"VolumeSize":2,"Blocks":[{"BlockIndex":1}],"Blocks":[]}',
     {"Blocks": [], "VolumeSize": 2}),
    (b'{"Blocks":[{"BlockToken":"a","BlockIndex":1,"BlockToken":"bb"}]}',
     {"Blocks": [{"BlockIndex": 1, "BlockToken": "bb"}]}),
    (b'{"Blocks":[{"BlockToken":"a","BlockIndex":1,"BlockToken":null}]}',
     {"Blocks": [{"BlockIndex": 1}]}),
    (b'{"NextToken":"x","NextToken":null}', {}),
    # keys are compared after unescaping
    (b'{"Bl\\u006fcks":[{"Block\\u0049ndex":7,"\\u0042lockToken":"t"}]}',
     {"Blocks": [{"BlockIndex": 7, "BlockToken": "t"}]}),
    # escapes in tokens, every kind
    (b'{"NextToken":"\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\u20ac\\ud83d\\ude00\\u0000"}',
     {"NextToken": "\"\\/\b\f\n\r\t\u00e9\u20ac\U0001F600\x00"}),
    # raw UTF-8 in tokens and keys; lone surrogates are fine in values nobody keeps
    ('{"NextToken":"é€😀","ünknown":"\\udc00\\ud800"}'.encode(), {"NextToken": "é€😀"}),
    # the other kind's keys are unknown ones
    (b'{"ChangedBlocks":5,"Blocks":[{"BlockIndex":1,"FirstBlockToken":5,"BlockToken":"x"}]}',
     {"Blocks": [{"BlockIndex": 1, "BlockToken": "x"}]}),
    # numbers: ints stay ints, any float form is a float, -0 is 0
    (b'{"ExpiryTime":17}', {"ExpiryTime": 17}),
    (b'{"ExpiryTime":-0,"VolumeSize":-0}', {"ExpiryTime": 0, "VolumeSize": 0}),
    (b'{"ExpiryTime":1E400}', {"ExpiryTime": float("inf")}),
    (b'{"ExpiryTime":123456789012345678901234567890}',
     {"ExpiryTime": 123456789012345678901234567890}),
    (b'{"BlockSize":9223372036854775807,"VolumeSize":-9223372036854775808}',
     {"BlockSize": 2**63 - 1, "VolumeSize": -2**63}),
    # whitespace anywhere JSON allows it
    (b' \r\n\t{ "Blocks" :\n[ { "BlockIndex" : 2 , "BlockToken" : "t" } ] }\n ',
     {"Blocks": [{"BlockIndex": 2, "BlockToken": "t"}]}),
    (b'{}', {}),
    (b'{"Blocks":[]}', {"Blocks": []}),
    # unknown members of every JSON type, nested, at both levels
    (b'{"x":{"a":[1,-2.5e-3,true,false,null,{"b":"\\u1234"}],"c":{}},"Blocks":[{"y":[[]],'
     b'"BlockIndex":3,"z":"\\"}"}],"w":[]}', {"Blocks": [{"BlockIndex": 3}]}),
])
def test_json_corners(pages, body, page):
    got = pages.parse_page(body, "blocks")
    assert got == page
    if 0 <= got.get("ExpiryTime", 0) < 4e9:  # what botocore can make a datetime of
        same_as_botocore(got, body, "blocks")


def test_float_expiry_is_exactly_pythons(pages):
    for text in ["1.790604800E9", "0.1", "1790604800.123456789", "5e-324", "1.7976931348623157e308",
                 "2.4703282292062328e-324", "-0.0", "123456789012345678901234567890.5"]:
        got = pages.parse_page(b'{"ExpiryTime":' + text.encode() + b"}", "blocks")["ExpiryTime"]
        assert got == float(text) and str(got) == str(float(text))


# -- pages from the local server ----------------------------------------------------------

def _b(seed: int) -> bytes:
    unit = hashlib.sha256(seed.to_bytes(8, "little")).digest()
    return unit * (BLOCK_SIZE // len(unit))


@pytest.fixture(scope="module")
def served():
    """Raw bodies of paginated ListSnapshotBlocks and ListChangedBlocks, fetched with urllib3
    from the server (which does not check signatures here), snapshots made by boto3."""
    zero = bytes(BLOCK_SIZE)
    with EBSServer(verify_signatures=False) as server:
        ebs = boto3.client("ebs", endpoint_url=server.endpoint_url, region_name=server.region,
                           aws_access_key_id=server.access_key,
                           aws_secret_access_key=server.secret_key,
                           config=botocore.config.Config(retries={"total_max_attempts": 1}))

        def upload(blocks, parent=None):
            kw = {"ParentSnapshotId": parent} if parent else {}
            snap = ebs.start_snapshot(VolumeSize=1, **kw)["SnapshotId"]
            for i, data in blocks.items():
                ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=i, BlockData=data,
                                       DataLength=len(data), ChecksumAlgorithm="SHA256",
                                       Checksum=base64.b64encode(
                                           hashlib.sha256(data).digest()).decode())
            ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=len(blocks))
            return snap

        # Zero blocks cost the server no memory; a few carry data.
        first = upload({i: (_b(i) if i % 40 == 0 else zero) for i in range(0, 300, 2)})
        second = upload({i: zero for i in range(1, 240, 3)}, parent=first)
        http = urllib3.PoolManager()

        def bodies(path, query):
            out, token = [], None
            while True:
                q = dict(query, maxResults="100", **({"pageToken": token} if token else {}))
                r = http.request("GET", server.endpoint_url + path, fields=q)
                assert r.status == 200, r.data
                out.append(r.data)
                token = json.loads(r.data).get("NextToken")
                if not token:
                    return out

        yield {
            "blocks": bodies(f"/snapshots/{first}/blocks", {}),
            # first -> second: changed and added blocks; second -> first: also removed ones
            "changed": (bodies(f"/snapshots/{second}/changedblocks", {"firstSnapshotId": first})
                        + bodies(f"/snapshots/{first}/changedblocks",
                                 {"firstSnapshotId": second})),
        }


@pytest.mark.parametrize("kind", ["blocks", "changed"])
def test_server_pages(pages, served, kind):
    assert len(served[kind]) >= 2
    for body in served[kind]:
        page = pages.parse_page(body, kind)
        same_as_botocore(page, body, kind)
        assert page == expected_page(json.loads(body), kind)
        columns_agree(pages.parse_columns(body, kind), page, kind)


def test_server_pages_make_lists(pages, served):
    blocks = BlockList.from_pages(pages.parse_columns(b, "blocks") for b in served["blocks"])
    assert blocks.indexes.tolist() == list(range(0, 300, 2))
    assert blocks.as_dicts() == sum((pages.parse_page(b, "blocks")["Blocks"]
                                     for b in served["blocks"]), [])
    assert blocks.volume_size == 1 and blocks.block_size == BLOCK_SIZE
    assert blocks.bytes_total == 150 * BLOCK_SIZE
    changed = ChangedBlockList.from_pages(pages.parse_columns(b, "changed")
                                          for b in served["changed"])
    assert changed.n_removed > 0 and changed.n_added > 0 and changed.n_changed > 0


# -- Hypothesis: random pages, serialized every way JSON allows ---------------------------

_KNOWN = {"Blocks", "ChangedBlocks", "ExpiryTime", "VolumeSize", "BlockSize", "NextToken",
          "BlockIndex", "BlockToken", "FirstBlockToken", "SecondBlockToken"}
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="

unknown_keys = st.text(max_size=12).filter(lambda k: k not in _KNOWN)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(unknown_keys, inner,
                                                                   max_size=3),
    max_leaves=8)
tokens = st.text(_B64, min_size=1, max_size=150) | st.text(max_size=20)
_ABSENT = object()


def maybe(values):
    """A member that is absent, null or one of values."""
    return st.one_of(st.just(_ABSENT), st.none(), values)


def _fields(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not _ABSENT}


@st.composite
def entries(draw, kind):
    if draw(st.integers(0, 30)) == 0:
        return None
    e = {"BlockIndex": draw(maybe(st.integers(-2**63, 2**63 - 1)
                                  | st.integers(0, 40000)))}
    for key in TOKEN_KEYS[kind]:
        e[key] = draw(maybe(tokens))
    e.update(draw(st.dictionaries(unknown_keys, json_values, max_size=2)))
    return _fields(e)


@st.composite
def page_objects(draw, kind):
    obj = {
        LIST_KEY[kind]: draw(maybe(st.lists(entries(kind), max_size=8))),
        # within what botocore's timestamp parser turns into a datetime
        "ExpiryTime": draw(maybe(st.integers(0, 2**32)
                                 | st.floats(0, 4e9, allow_nan=False))),
        "VolumeSize": draw(maybe(st.integers(-2**63, 2**63 - 1))),
        "BlockSize": draw(maybe(st.integers(0, 2**31 - 1))),
        "NextToken": draw(maybe(tokens)),
    }
    obj.update(draw(st.dictionaries(unknown_keys, json_values, max_size=3)))
    return _fields(obj)


@st.composite
def serialized(draw, obj):
    """JSON text of obj with random whitespace, key order and ensure_ascii."""
    ascii_ = draw(st.booleans())
    ws = st.sampled_from(["", "", " ", "\n", "\t", "\r\n  "])

    def dump(v) -> str:
        if isinstance(v, dict):
            items = list(v.items())
            order = draw(st.permutations(range(len(items))))
            parts = [f"{draw(ws)}{json.dumps(items[i][0], ensure_ascii=ascii_)}{draw(ws)}:"
                     f"{draw(ws)}{dump(items[i][1])}{draw(ws)}" for i in order]
            return "{" + ",".join(parts) + draw(ws) + "}"
        if isinstance(v, list):
            return "[" + ",".join(draw(ws) + dump(x) + draw(ws) for x in v) + draw(ws) + "]"
        return json.dumps(v, ensure_ascii=ascii_)

    return (draw(ws) + dump(obj) + draw(ws)).encode()


@st.composite
def bodies(draw):
    kind = draw(st.sampled_from(["blocks", "changed"]))
    obj = draw(page_objects(kind))
    return kind, obj, draw(serialized(obj))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_random_pages_agree_with_botocore(case):
    kind, obj, body = case
    want = expected_page(obj, kind)
    results = [m.parse_page(body, kind) for m in IMPLS]
    for got in results:
        assert got == want
    same_as_botocore(results[0], body, kind)
    for m in IMPLS:
        if columns_possible(want, kind):
            columns_agree(m.parse_columns(body, kind), want, kind)
        else:
            with pytest.raises(ValueError):
                m.parse_columns(body, kind)


def _outcome(m, body, kind, fn):
    try:
        return getattr(m, fn)(body, kind)
    except ValueError:
        return ValueError


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies(), st.lists(st.tuples(st.sampled_from(["set", "insert", "delete"]),
                                    st.integers(0, 10**6), st.binary(min_size=1, max_size=3)),
                          min_size=1, max_size=3))
def test_mutated_pages_native_and_twin_agree(case, edits):
    """Bytes flipped, inserted or deleted: both accept or both refuse, and agree on what they
    accept."""
    kind, _, body = case
    b = bytearray(body)
    for op, at, data in edits:
        at %= len(b) + 1
        if op == "set" and at < len(b):
            b[at:at + 1] = data[:1]
        elif op == "insert":
            b[at:at] = data
        else:
            del b[at:at + len(data)]
    body = bytes(b)
    pages_ = [_outcome(m, body, kind, "parse_page") for m in IMPLS]
    assert all(p == pages_[0] for p in pages_)
    cols = [_outcome(m, body, kind, "parse_columns") for m in IMPLS]
    assert all((c is ValueError) == (cols[0] is ValueError) for c in cols)
    if cols[0] is not ValueError:
        for c in cols:
            columns_agree(c, pages_[0], kind)


# -- entries as the service writes them: the native scanner's fast path ------------------
# The native scanner reads {"BlockIndex": N, "BlockToken": "..."} (and the changed form) in
# one pass and hands anything else back to its general path, which reads the entry again from
# its '{'. These pin down both sides of that line: every near miss must come out as the twin
# (and json.loads) make of it, errors included.

def _outcomes(body: bytes, kind: str) -> list:
    return [(_outcome(m, body, kind, "parse_page"), _outcome(m, body, kind, "parse_columns"))
            for m in IMPLS]


def _check_entries(kind: str, entry_texts: list[str]) -> None:
    body = f'{{"{LIST_KEY[kind]}":[{",".join(entry_texts)}],"VolumeSize":8}}'.encode()
    got = _outcomes(body, kind)
    page, cols = got[0]
    for other in got[1:]:
        assert other[0] == page
        assert (other[1] is ValueError) == (cols is ValueError)
    try:
        obj = json.loads(body)
    except ValueError:
        assert page is ValueError
        return
    if page is ValueError:  # only what ebsfast refuses on purpose: wrong types, beyond int64
        return
    assert page == expected_page(obj, kind)
    same_as_botocore(page, body, kind)
    for m in IMPLS:
        if cols is not ValueError:
            columns_agree(m.parse_columns(body, kind), page, kind)


_FAST_INDEXES = ["0", "7", "10", "1234567", "12345678", "99999999", "100000000",
                 "123456789012345678", "999999999999999999", "1000000000000000000",
                 "9223372036854775807", "9223372036854775808", "18446744073709551616",
                 "-1", "-0", "-9223372036854775808", "00", "01", "0.5", "1.0", "1e3", "1E3",
                 "12e", "5.", "null", '"5"', "true", "[]", "+1", "0x10", "1\x00"]


@pytest.mark.parametrize("index", _FAST_INDEXES)
@pytest.mark.parametrize("kind", ["blocks", "changed"])
def test_fast_path_indexes(kind, index):
    key = "BlockToken" if kind == "blocks" else "FirstBlockToken"
    _check_entries(kind, [f'{{"BlockIndex":1,"{key}":"t"}}',
                          f'{{"BlockIndex":{index},"{key}":"AAAA"}}',
                          f'{{"BlockIndex":{index}, "{key}" : "AAAA" }}',
                          f'{{"BlockIndex":2,"{key}":"u"}}'])


@pytest.mark.parametrize("entry", [
    # whitespace of every kind, everywhere JSON allows it
    '{ "BlockIndex" : 5 , "BlockToken" : "t" }',
    '{\n\t"BlockIndex":\r\n5,\n"BlockToken":\t"t"\n}',
    # tokens the fast path leaves to scan_string, and some it takes
    '{"BlockIndex":5,"BlockToken":""}',
    '{"BlockIndex":5,"BlockToken":"a\\/b"}',
    '{"BlockIndex":5,"BlockToken":"\\u0041\\n"}',
    '{"BlockIndex":5,"BlockToken":"\u00e9t\u00e9"}',
    '{"BlockIndex":5,"BlockToken":"' + "Q" * 31 + '"}',
    '{"BlockIndex":5,"BlockToken":"' + "Q" * 32 + '"}',
    '{"BlockIndex":5,"BlockToken":"' + "Q" * 47 + '\u00e9"}',
    '{"BlockIndex":5,"BlockToken":"' + "Q" * 40 + '\\"q"}',
    '{"BlockIndex":5,"BlockToken":"tab\there"}',
    '{"BlockIndex":5,"BlockToken":"\\ud800"}',
    '{"BlockIndex":5,"BlockToken":null}',
    '{"BlockIndex":5,"BlockToken":5}',
    '{"BlockIndex":5,"BlockToken":"t"',
    # members in another order, repeated, unknown, missing, keys escaped
    '{"BlockToken":"t","BlockIndex":5}',
    '{"BlockIndex":5,"BlockToken":"t","BlockToken":"u"}',
    '{"BlockIndex":5,"BlockIndex":6,"BlockToken":"t"}',
    '{"BlockIndex":5,"BlockToken":"t","x":[1,{"y":"}"}]}',
    '{"x":1,"BlockIndex":5,"BlockToken":"t"}',
    '{"BlockIndex":5}',
    '{"BlockIndex":5,}',
    '{"BlockIndex":5 "BlockToken":"t"}',
    '{"BlockIndex"5,"BlockToken":"t"}',
    '{"BlockIndex":5,"BlockToken""t"}',
    '{"BlockIndex":5,"BlockTokenX":"t"}',
    '{"BlockIndexX":5,"BlockToken":"t"}',
    '{"Block\\u0049ndex":5,"BlockToken":"t"}',
    '{"BlockIndex":5,"FirstBlockToken":"t"}',
    '{}',
    'null',
])
def test_fast_path_blocks_entries(entry):
    _check_entries("blocks", ['{"BlockIndex":1,"BlockToken":"t"}', entry,
                              '{"BlockIndex":2,"BlockToken":"u"}'])


@pytest.mark.parametrize("entry", [
    '{"BlockIndex":5}',
    '{"BlockIndex":5,"FirstBlockToken":"f"}',
    '{"BlockIndex":5,"SecondBlockToken":"s"}',
    '{"BlockIndex":5,"FirstBlockToken":"f","SecondBlockToken":"s"}',
    '{ "BlockIndex" : 5 , "FirstBlockToken" : "f" , "SecondBlockToken" : "s" }',
    '{"BlockIndex":5,"SecondBlockToken":"s","FirstBlockToken":"f"}',
    '{"BlockIndex":5,"FirstBlockToken":"f","FirstBlockToken":"g"}',
    '{"BlockIndex":5,"SecondBlockToken":"s","SecondBlockToken":"t"}',
    '{"BlockIndex":5,"FirstBlockToken":"f","SecondBlockToken":"s","FirstBlockToken":null}',
    '{"BlockIndex":5,"FirstBlockToken":null,"SecondBlockToken":"s"}',
    '{"BlockIndex":5,"FirstBlockToken":"f","SecondBlockToken":null}',
    '{"BlockIndex":5,"FirstBlockToken":"\\u00e9","SecondBlockToken":"s"}',
    '{"BlockIndex":5,"FirstBlockToken":"f","SecondBlockToken":"s","x":0}',
    '{"BlockIndex":5,"BlockToken":"b","SecondBlockToken":"s"}',
    '{"BlockIndex":5,"FirstBlockToken":"f",}',
    '{"BlockIndex":5,"FirstBlockToken":"f","SecondBlockToken":"s"',
    '{"FirstBlockToken":"f","BlockIndex":5}',
    'null',
])
def test_fast_path_changed_entries(entry):
    _check_entries("changed", ['{"BlockIndex":1,"FirstBlockToken":"f","SecondBlockToken":"s"}',
                               entry, '{"BlockIndex":2,"SecondBlockToken":"t"}'])


def test_fast_path_near_the_end_of_the_body(pages):
    """Numbers and tokens within a few bytes of the end, where the scanner cannot read a whole
    word or vector ahead: every truncation of a blocks page is an error, in both forms."""
    body = b'{"Blocks":[{"BlockIndex":1234567,"BlockToken":"%s"}]}' % (b"Q" * 40)
    assert pages.parse_page(body, "blocks")["Blocks"][0]["BlockIndex"] == 1234567
    for n in range(len(body)):
        for fn in (pages.parse_page, pages.parse_columns):
            with pytest.raises(ValueError):
                fn(body[:n], "blocks")


@st.composite
def service_pages(draw):
    """Pages in the service's member order, entries mostly as the fast path takes them."""
    kind = draw(st.sampled_from(["blocks", "changed"]))
    ws = st.sampled_from(["", "", "", " ", "\n"])
    index = (st.integers(0, 10**9) | st.integers(0, 2**64)
             | st.sampled_from([0, 9, 10, 99999999, 10**8, 10**17, 10**18, 2**63 - 1]))
    text = st.text(_B64, max_size=160) | tokens
    ascii_ = draw(st.booleans())
    out = []
    for _ in range(draw(st.integers(0, 6))):
        members = [("BlockIndex", draw(index))]
        for key in TOKEN_KEYS[kind]:
            if kind == "blocks" or draw(st.booleans()):
                members.append((key, draw(text)))
        out.append("{" + ",".join(f"{draw(ws)}{json.dumps(k)}{draw(ws)}:{draw(ws)}"
                                  f"{json.dumps(v, ensure_ascii=ascii_)}{draw(ws)}"
                                  for k, v in members) + "}")
    return kind, out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(service_pages())
def test_service_pages_agree(case):
    kind, entry_texts = case
    _check_entries(kind, entry_texts)


def test_pages_share_nothing_mutable(pages):
    body = json.dumps(synthetic("changed", 300)).encode()
    a, b = pages.parse_page(body, "changed"), pages.parse_page(body, "changed")
    assert a == b
    for x, y in zip(a["ChangedBlocks"], b["ChangedBlocks"]):
        assert x is not y
    a["ChangedBlocks"][0]["BlockIndex"] = -1
    a["ChangedBlocks"].append(None)
    assert b == pages.parse_page(body, "changed")


@pytest.mark.parametrize("enabled", [True, False])
def test_gc_setting_is_left_as_it_was(pages, enabled):
    import gc
    body = json.dumps(synthetic("blocks", 3000)).encode()
    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        page = pages.parse_page(body, "blocks")
        assert gc.isenabled() is enabled
        # what keeps the GC cheap while a page is made: its entry dicts are never tracked
        assert not any(gc.is_tracked(e) for e in page["Blocks"])
        with pytest.raises(ValueError):
            pages.parse_page(body[:-1], "blocks")
        assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()


# -- malformed bodies ---------------------------------------------------------------------

SMALL = (b'{"ChangedBlocks":[{"BlockIndex":3,"FirstBlockToken":"AA\\u00e9==","SecondBlockToken'
         b'":null,"x":[1.5e3,true,{"y":"\\ud83d\\ude00"}]}],"ExpiryTime":1.7906048E9,"VolumeSi'
         b'ze":8,"BlockSize":524288,"NextToken":"tok"}')


def test_every_truncation_is_an_error(pages):
    assert pages.parse_page(SMALL, "changed")["ChangedBlocks"][0]["FirstBlockToken"] == "AAé=="
    for n in range(len(SMALL)):
        for fn in (pages.parse_page, pages.parse_columns):
            with pytest.raises(ValueError):
                fn(SMALL[:n], "changed")
            with pytest.raises(ValueError):
                fn(bytearray(SMALL[:n]), "changed")


@pytest.mark.parametrize("body, why", [
    (b"", "end"),
    (b"[]", "object"),
    (b"null", "object"),
    (b'"Blocks"', "object"),
    (b"{} {}", "extra data"),
    (b"{}x", "extra data"),
    (b"\xef\xbb\xbf{}", ""),  # a BOM is not JSON (botocore's json.loads refuses it too)
    (b'{"a":1,}', ""),
    (b'{,}', ""),
    (b'{"a" 1}', ""),
    (b'{"a":1 "b":2}', ""),
    (b'{"a":[1 2]}', ""),
    (b'{"a":[1,]}', ""),
    (b"{'a':1}", ""),
    (b'{"a":tru}', ""),
    (b'{"a":nul}', ""),
    (b'{"a":NaN}', ""),
    (b'{"a":Infinity}', ""),
    (b'{"a":-Infinity}', ""),
    (b'{"a":01}', ""),
    (b'{"a":-}', ""),
    (b'{"a":1.}', ""),
    (b'{"a":.5}', ""),
    (b'{"a":1e}', ""),
    (b'{"a":+1}', ""),
    (b'{"a":"\\x"}', "escape"),
    (b'{"a":"\\u12"}', ""),
    (b'{"a":"\\u12G4"}', "escape"),
    (b'{"a":"\\ud800\\uZZZZ"}', "escape"),
    (b'{"a":"tab\there"}', "control"),
    (b'{"a":"nl\nhere"}', "control"),
    (b'{"a":"\x00"}', "control"),
    (b'{"a":"\xff"}', "UTF-8"),
    (b'{"a":"\xc3"}', ""),
    (b'{"a":"\xc0\xaf"}', "UTF-8"),  # overlong '/'
    (b'{"a":"\xed\xa0\x80"}', "UTF-8"),  # an encoded surrogate
    (b'{"a":"\xf4\x90\x80\x80"}', "UTF-8"),  # above U+10FFFF
    (b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}", "deep"),
    (b'{"NextToken":"\\ud800"}', "surrogate"),
    (b'{"Blocks":[{"BlockToken":"\\udc00x"}]}', "surrogate"),
    (b'{"Blocks":{}}', "Blocks"),
    (b'{"Blocks":"x"}', "Blocks"),
    (b'{"Blocks":[1]}', "Blocks"),
    (b'{"Blocks":[[]]}', "Blocks"),
    (b'{"Blocks":[{"BlockIndex":"1"}]}', "BlockIndex"),
    (b'{"Blocks":[{"BlockIndex":1.0}]}', "BlockIndex"),
    (b'{"Blocks":[{"BlockIndex":1e2}]}', "BlockIndex"),
    (b'{"Blocks":[{"BlockIndex":true}]}', "BlockIndex"),
    (b'{"Blocks":[{"BlockIndex":9223372036854775808}]}', "BlockIndex"),
    (b'{"Blocks":[{"BlockIndex":-9223372036854775809}]}', "BlockIndex"),
    (b'{"Blocks":[{"BlockToken":5}]}', "BlockToken"),
    (b'{"Blocks":[{"BlockToken":["a"]}]}', "BlockToken"),
    (b'{"ExpiryTime":"2026-01-01"}', "ExpiryTime"),
    (b'{"ExpiryTime":false}', "ExpiryTime"),
    (b'{"VolumeSize":8.5}', "VolumeSize"),
    (b'{"BlockSize":"524288"}', "BlockSize"),
    (b'{"NextToken":12}', "NextToken"),
    # a wrong type is an error in any occurrence of a key, even one a later value replaces
    (b'{"VolumeSize":"8","VolumeSize":8}', "VolumeSize"),
    (b'{"Blocks":[{"BlockIndex":"1"}],"Blocks":[]}', "BlockIndex"),
])
@pytest.mark.parametrize("fn", ["parse_page", "parse_columns"])
def test_malformed_body(pages, body, why, fn):
    # Both name the key of a wrong-typed value; the twin's syntax errors are json's words.
    if pages.IMPLEMENTATION != "native" and why not in _KNOWN | {"surrogate"}:
        why = ""
    with pytest.raises(ValueError, match=f"(?i)invalid blocks page.*{why}"):
        getattr(pages, fn)(body, "blocks")


def test_native_errors_name_the_byte():
    native = _load("native")
    with pytest.raises(ValueError, match="at byte 25: BlockIndex must be an integer"):
        native.parse_page(b'{"Blocks":[{"BlockIndex":"1"}]}', "blocks")
    with pytest.raises(ValueError, match="at byte 7: expected a string as object key"):
        native.parse_page(b'{"a":1,}', "blocks")
    with pytest.raises(ValueError, match="at byte 11: unexpected end"):
        native.parse_page(b'{"Blocks":[', "blocks")


@pytest.mark.parametrize("body, what", [
    (b'{"Blocks":[null]}', "null"),
    (b'{"Blocks":[{"BlockToken":"t"}]}', "BlockIndex"),
    (b'{"Blocks":[{"BlockIndex":1}]}', "BlockToken"),
    (b'{"Blocks":[{"BlockIndex":1,"BlockToken":null}]}', "BlockToken"),
])
def test_columns_need_what_pages_may_lack(pages, body, what):
    pages.parse_page(body, "blocks")  # fine as a page: botocore would take it too
    with pytest.raises(ValueError, match=what):
        pages.parse_columns(body, "blocks")


def test_changed_columns_allow_absent_tokens(pages):
    body = b'{"ChangedBlocks":[{"BlockIndex":1},{"BlockIndex":2,"SecondBlockToken":"s"}]}'
    cols = pages.parse_columns(body, "changed")
    assert cols.has_first.tolist() == [False, False]
    assert cols.has_second.tolist() == [False, True]
    assert cols.first_offsets.tolist() == [0, 0, 0] and cols.second == b"s"
    with pytest.raises(ValueError, match="BlockIndex"):
        pages.parse_columns(b'{"ChangedBlocks":[{"FirstBlockToken":"f"}]}', "changed")


def test_native_from_many_threads():
    """The scan runs without the GIL and shares one set of scan buffers between calls."""
    native = _load("native")
    bodies_ = [(k, json.dumps(synthetic(k, 2000, seed=s)).encode())
               for s, k in enumerate(["blocks", "changed"] * 4)]
    want = [(native.parse_page(b, k), native.parse_columns(b, k).indexes) for k, b in bodies_]

    def one(i):
        k, b = bodies_[i % len(bodies_)]
        page = native.parse_page(b, k) if i % 2 else None
        cols = native.parse_columns(b, k)
        return i, page, cols.indexes

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for i, page, idx in pool.map(one, range(64)):
            w_page, w_idx = want[i % len(bodies_)]
            assert page is None or page == w_page
            assert np.array_equal(idx, w_idx)


# -- BlockList / ChangedBlockList / TokenColumn -------------------------------------------

def test_token_column_basics():
    col = TokenColumn.from_strings(["ab", "", "cde", None, "é"])
    assert len(col) == 5 and col.tolist() == ["ab", "", "cde", "", "é"]
    assert col[0] == "ab" and col[-1] == "é" and col[np.int64(2)] == "cde"
    assert col.nbytes == 7 and col.lengths.tolist() == [2, 0, 3, 0, 2]
    view = col[1:4]
    assert view.blob is col.blob and view.tolist() == ["", "cde", ""] and view.nbytes == 3
    assert col[::2].tolist() == ["ab", "cde", "é"]
    assert col[np.array([4, 0, 0])].tolist() == ["é", "ab", "ab"]
    assert col[[True, False, True, False, False]].tolist() == ["ab", "cde"]
    assert col[3:1].tolist() == [] and len(col[10:]) == 0
    assert view.compact().blob == b"cde" and view.compact() == view
    with pytest.raises(IndexError):
        col[5]
    with pytest.raises(IndexError):
        col[np.array([5])]
    with pytest.raises(ValueError):
        TokenColumn(b"abc", np.array([0, 2, 1]))
    with pytest.raises(ValueError):
        TokenColumn(b"abc", np.array([0, 4]))


def test_token_column_concat_and_take_at_scale(monkeypatch):
    import ebsfast.blocklist as bl

    rng = random.Random(5)
    strings = [token(rng) for _ in range(3000)]
    cols = [TokenColumn.from_strings(strings[i:i + 97]) for i in range(0, 3000, 97)]
    cols[3] = cols[3][5:50]  # a view with offsets not from 0
    want = sum((c.tolist() for c in cols), [])
    cat = TokenColumn.concat(cols)
    assert cat.tolist() == want and cat.offsets[0] == 0 and len(cat.blob) == cat.nbytes
    assert TokenColumn.concat([]).tolist() == []
    monkeypatch.setattr(bl, "_GATHER_CHUNK", 7)  # many chunks
    order = np.random.default_rng(1).permutation(len(cat))
    assert cat.take(order).tolist() == [want[i] for i in order]


def _columns(pages_mod, kind, obj):
    return pages_mod.parse_columns(json.dumps(obj).encode(), kind)


def test_block_list_from_pages(pages):
    objs = [synthetic("blocks", n, seed=n) for n in (3, 0, 1000, 10)]
    objs[1].pop("NextToken")
    objs[2]["ExpiryTime"] = 1790000000
    cols = [_columns(pages, "blocks", o) for o in objs]
    bl = BlockList.from_pages(cols)
    want = sum((o["Blocks"] for o in objs), [])
    assert len(bl) == 1013 and bl.as_dicts() == want
    assert bl.indexes.dtype == np.int64 and bl.tokens[1004] == want[1004]["BlockToken"]
    assert bl.expiry_time == 1790000000 and bl.volume_size == 8 and bl.block_size == 524288
    assert bl.bytes_total == 1013 * 524288
    assert bl.tokens.nbytes == sum(len(e["BlockToken"]) for e in want)
    # pages listed in parallel come in any order
    shuffled = BlockList.from_pages(cols[::-1]).sorted()
    assert shuffled.as_dicts() == sorted(sum((o["Blocks"] for o in objs[::-1]), []),
                                         key=lambda e: e["BlockIndex"])
    assert BlockList.from_pages([]).as_dicts() == []
    with pytest.raises(ValueError, match="blocks"):
        BlockList.from_pages([_columns(pages, "changed", synthetic("changed", 2))])
    other = synthetic("blocks", 2)
    other["VolumeSize"] = 16
    with pytest.raises(ValueError, match="volume_size"):
        BlockList.from_pages([cols[0], _columns(pages, "blocks", other)])


def test_changed_block_list(pages):
    # first snapshot: blocks 0-5; second: 0, 1 rewritten, 2-3 kept (not listed), 4-5 gone,
    # 6-8 new.
    entries = ([{"BlockIndex": i, "FirstBlockToken": f"f{i}", "SecondBlockToken": f"s{i}"}
                for i in (0, 1)]
               + [{"BlockIndex": i, "FirstBlockToken": f"f{i}"} for i in (4, 5)]
               + [{"BlockIndex": i, "SecondBlockToken": f"s{i}"} for i in (6, 7, 8)])
    body = {"ChangedBlocks": entries, "ExpiryTime": 5, "VolumeSize": 1, "BlockSize": 524288}
    halves = [dict(body, ChangedBlocks=entries[:3]), dict(body, ChangedBlocks=entries[3:])]
    cbl = ChangedBlockList.from_pages(_columns(pages, "changed", h) for h in halves)
    assert len(cbl) == 7 and cbl.as_dicts() == entries
    assert (cbl.n_changed, cbl.n_removed, cbl.n_added) == (2, 2, 3)
    assert cbl.bytes_added == 3 * 524288 and cbl.bytes_total == 7 * 524288
    assert cbl.changed.indexes.tolist() == [0, 1]
    assert cbl.removed.first.tolist() == ["f4", "f5"]
    assert cbl.removed.second.tolist() == ["", ""]
    assert cbl.added.second.tolist() == ["s6", "s7", "s8"]
    assert cbl.added.as_dicts() == entries[4:]
    assert ChangedBlockList.from_pages([]).n_added == 0


@pytest.mark.parametrize("fn", ["parse_page", "parse_columns"])
@pytest.mark.parametrize("where", ["member", "entry"])
@pytest.mark.parametrize("opener", ["[", '{"k":'])
def test_nesting_limit_is_the_same_in_both(pages, fn, where, opener):
    # 512 levels, the page's own object counted, whatever json.loads itself would take
    closer = "]" if opener == "[" else "}"
    leaf = "" if opener == "[" else "1"

    def body(levels_inside: int) -> bytes:
        inner = opener * levels_inside + leaf + closer * levels_inside
        if where == "member":
            return ('{"a":' + inner + ',"Blocks":[]}').encode()
        return ('{"Blocks":[{"BlockIndex":1,"BlockToken":"t","x":' + inner + "}]}").encode()

    most = 511 if where == "member" else 509  # page, Blocks, entry: three levels already
    getattr(pages, fn)(body(most), "blocks")
    with pytest.raises(ValueError, match="(?i)invalid blocks page.*deep"):
        getattr(pages, fn)(body(most + 1), "blocks")
