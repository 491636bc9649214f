"""The request side of ebsfast.wire against botocore's own validator and serializer.

The client's quick parameter check may only ever clear input that botocore's validator also
accepts; everything else goes to the full validator. The serializer must give the URI, query,
headers and body botocore gives, for any valid input."""
from __future__ import annotations


import botocore.session
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebsfast import model, wire
from ebsfast.exceptions import ParamValidationError

_SESSION = botocore.session.get_session()
_BOTO_MODEL = _SESSION.get_service_model("ebs")

# Values of every kind a caller might pass, including the ones the quick check must not clear.
_values = st.one_of(
    st.text(max_size=12), st.text(alphabet="abcdef0123456789", min_size=1, max_size=8),
    st.integers(min_value=-3, max_value=2**40), st.booleans(), st.none(),
    st.binary(max_size=8), st.lists(st.text(max_size=3), max_size=2),
    st.builds(lambda s: type("S", (str,), {})(s), st.text(max_size=4)),
    st.floats(allow_nan=False, allow_infinity=False),
)


@st.composite
def _call(draw):
    op = draw(st.sampled_from([o for o in model.OPERATIONS.values() if o.payload is None]))
    names = [m.name for m in op.input] + ["Unknown"]
    keys = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    return op, {k: draw(_values) for k in keys}


def _botocore_errors(op, params) -> bool:
    from botocore.validate import ParamValidator

    shape = _BOTO_MODEL.operation_model(op.name).input_shape
    return ParamValidator().validate(params, shape).has_errors()


@settings(max_examples=400, deadline=None)
@given(_call())
def test_quick_check_clears_only_what_botocore_accepts(call):
    op, params = call
    if wire._quick_valid(op, params, op.required):
        assert not _botocore_errors(op, params)
    # and the full answer is botocore's either way
    try:
        wire.validate(op, params)
        ours = False
    except ParamValidationError:
        ours = True
    assert ours == _botocore_errors(op, params)


def _botocore_request(op, params) -> dict:
    from botocore.serialize import create_serializer

    return create_serializer("rest-json").serialize_to_request(
        params, _BOTO_MODEL.operation_model(op.name))


_token = st.text(alphabet="ABCDEFabcdef0123456789+/=", min_size=1, max_size=40)
_snap = st.text(alphabet="0123456789abcdef", min_size=1, max_size=17).map(lambda s: "snap-" + s)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_serialize_matches_botocore(data):
    op = data.draw(st.sampled_from([model.OPERATIONS[n] for n in (
        "GetSnapshotBlock", "ListSnapshotBlocks", "ListChangedBlocks", "CompleteSnapshot")]))
    values = {"SnapshotId": _snap, "SecondSnapshotId": _snap, "FirstSnapshotId": _snap,
              "BlockIndex": st.integers(0, 2**31), "BlockToken": _token, "NextToken": _token,
              "MaxResults": st.integers(100, 10000), "StartingBlockIndex": st.integers(0, 99),
              "ChangedBlocksCount": st.integers(0, 9), "Checksum": _token,
              "ChecksumAlgorithm": st.just("SHA256"),
              "ChecksumAggregationMethod": st.just("LINEAR")}
    names = data.draw(st.permutations([m.name for m in op.input]))
    params = {n: data.draw(values[n]) for n in names
              if n in op.required or data.draw(st.booleans())}
    path, query, headers, body = wire.serialize(op, params)
    theirs = _botocore_request(op, params)
    assert path == theirs["url_path"]
    assert query == "&".join(f"{k}={v}" for k, v in _encoded_query(theirs["query_string"]))
    assert dict(headers) == {k: v for k, v in theirs["headers"].items()}
    assert body == theirs["body"]


def _encoded_query(qs: dict):
    from botocore.utils import percent_encode

    return [(percent_encode(k), percent_encode(v)) for k, v in qs.items()]


def test_quick_minimums_are_the_models():
    shapes = _SESSION.get_service_model("ebs").shape_for("GetSnapshotBlockRequest").members
    got = wire.quick_minimums(model.OPERATIONS["GetSnapshotBlock"])
    assert got == {name: shapes[name].metadata.get("min") for name in got}
    assert set(got) == {"SnapshotId", "BlockIndex", "BlockToken"} and got["SnapshotId"] == 1


def test_quick_check_refuses_edge_values():
    op = model.OPERATIONS["GetSnapshotBlock"]
    good = {"SnapshotId": "snap-1", "BlockIndex": 0, "BlockToken": "t"}
    assert wire._quick_valid(op, good, op.required)
    for bad in ({"BlockIndex": True}, {"BlockIndex": -1}, {"SnapshotId": ""},
                {"BlockToken": None}, {"Extra": 1}):
        params = dict(good, **bad)
        assert not wire._quick_valid(op, params, op.required)
    assert not wire._quick_valid(op, {"SnapshotId": "snap-1", "BlockIndex": 0}, op.required)


@settings(max_examples=300, deadline=None)
@given(snapshot_id=st.text(min_size=1, max_size=70), index=st.integers(0, 2**40),
       token=st.text(min_size=1, max_size=200))
def test_quick_check_passes_what_the_model_allows(snapshot_id, index, token):
    op = model.OPERATIONS["GetSnapshotBlock"]
    params = {"SnapshotId": snapshot_id, "BlockIndex": index, "BlockToken": token}
    assert wire.quick_valid(op, params)
    assert not wire.quick_valid(op, {**params, "BlockIndex": True})
    assert not wire.quick_valid(op, {"SnapshotId": snapshot_id, "BlockIndex": index})


@pytest.mark.parametrize("headers", [
    {}, {"x-amz-data-length": "524288"},
    {"x-amz-checksum": "c=", "x-amz-checksum-algorithm": "SHA256"},
    {"x-amz-data-length": "7", "x-amz-checksum": "c=", "x-amz-checksum-algorithm": "SHA256",
     "x-amzn-requestid": "r"}])
def test_get_block_output_is_parse_output_headers(headers):
    op = model.OPERATIONS["GetSnapshotBlock"]
    got = wire.get_block_output(headers, {"x": 1})
    assert got == wire.parse_output_headers(op, headers, {"x": 1})
    assert list(got) == list(wire.parse_output_headers(op, headers, {"x": 1}))


_HEADER_MEMBERS = [(op, m.name) for op in model.OPERATIONS.values() for m in op.input
                   if m.location == "header"]


@pytest.mark.parametrize("op,name", _HEADER_MEMBERS, ids=lambda v: getattr(v, "name", v))
@pytest.mark.parametrize("value", [True, False, 0, 7, "SHA256", 1.5])
def test_header_values_are_botocores_for_any_value(op, name, value):
    # with parameter_validation off anything reaches the serializer: a bool for an integer
    # header goes out as True/False, as str() gives it
    params = {m: "snap-1" if m == "SnapshotId" else 0 for m in op.required if m != name}
    params[name] = value
    if op.payload is not None:
        params[op.payload] = b""
    from botocore.serialize import create_serializer

    _, _, headers, _ = wire.serialize(op, params)
    theirs = create_serializer("rest-json", include_validation=False).serialize_to_request(
        params, _BOTO_MODEL.operation_model(op.name))["headers"]
    wire_name = op.members[name].location_name
    assert dict(headers)[wire_name] == theirs[wire_name]
