"""ebsfast.model against the service model botocore ships: every fact must agree."""
import gzip
import json
import os

import botocore
import pytest

from ebsfast import model

_PATH = os.path.join(os.path.dirname(botocore.__file__), "data", "ebs", model.API_VERSION,
                     "service-2.json.gz")
_CONSTRAINTS = ("type", "min", "max", "pattern", "enum", "streaming")


@pytest.fixture(scope="module")
def botocore_model():
    with gzip.open(_PATH) as f:
        return json.load(f)


def _shape_facts(shapes, name):
    shape = shapes[name]
    facts = {k: shape[k] for k in _CONSTRAINTS if k in shape}
    if shape["type"] == "list":
        facts["member"] = _shape_facts(shapes, shape["member"]["shape"])
    if shape["type"] == "structure":
        facts["members"] = {m: _shape_facts(shapes, v["shape"])
                            for m, v in shape["members"].items()}
    return facts


def _ours(shape):
    facts = {k: shape[k] for k in _CONSTRAINTS if k in shape}
    if "member" in shape:
        facts["member"] = _ours(shape["member"])
    if "members" in shape:
        facts["members"] = {k: _ours(v) for k, v in shape["members"].items()}
    return facts


def test_metadata(botocore_model):
    meta = botocore_model["metadata"]
    assert meta["apiVersion"] == model.API_VERSION
    assert meta["endpointPrefix"] == model.ENDPOINT_PREFIX
    assert meta["serviceId"] == model.SERVICE_ID
    assert meta.get("signingName", meta["endpointPrefix"]) == model.SIGNING_NAME
    assert meta["protocol"] == "rest-json"


def test_same_operations(botocore_model):
    assert set(botocore_model["operations"]) == set(model.OPERATIONS)


@pytest.mark.parametrize("name", sorted(model.OPERATIONS))
def test_operation_facts(botocore_model, name):
    ours = model.OPERATIONS[name]
    theirs = botocore_model["operations"][name]
    shapes = botocore_model["shapes"]
    assert theirs["http"]["method"] == ours.method
    assert theirs["http"]["requestUri"] == ours.uri
    assert theirs["http"].get("responseCode", 200) == ours.status
    assert (theirs.get("authtype") == "v4-unsigned-body") == ours.unsigned_body
    assert sorted(e["shape"] for e in theirs.get("errors", [])) == sorted(ours.errors)
    inp = shapes[theirs["input"]["shape"]]
    assert inp.get("payload") == ours.payload
    assert sorted(inp.get("required", [])) == sorted(ours.required)
    assert list(inp["members"]) == [m.name for m in ours.input]
    for m in ours.input:
        spec = inp["members"][m.name]
        assert spec.get("location") == m.location, m.name
        assert spec.get("locationName") == m.location_name, m.name
        assert bool(spec.get("idempotencyToken")) == m.idempotency_token, m.name
        assert _shape_facts(shapes, spec["shape"]) == _ours(m.shape), m.name
    out = shapes[theirs["output"]["shape"]]
    headers = {k: (v["locationName"], shapes[v["shape"]]["type"])
               for k, v in out["members"].items() if v.get("location") == "header"}
    assert headers == ours.output_headers
    body = [k for k, v in out["members"].items()
            if "location" not in v and not shapes[v["shape"]].get("streaming")]
    assert body == list(ours.output_body)
    timestamps = {k for k, v in out["members"].items()
                  if shapes[v["shape"]]["type"] == "timestamp"}
    assert timestamps <= model.TIMESTAMP_MEMBERS


def test_errors(botocore_model):
    shapes = botocore_model["shapes"]
    theirs = {k: v["error"]["httpStatusCode"] for k, v in shapes.items() if v.get("exception")}
    assert theirs == model.ERRORS


def test_python_names():
    assert sorted(model.BY_PYTHON_NAME) == [
        "complete_snapshot", "get_snapshot_block", "list_changed_blocks", "list_snapshot_blocks",
        "put_snapshot_block", "start_snapshot"]
