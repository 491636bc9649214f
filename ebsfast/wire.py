"""rest-json for the EBS direct APIs: validate and serialize requests, parse responses and
errors, byte for byte as botocore does (its ``validate.py``, ``serialize.py``, ``parsers.py``).

Transport-free and signer-free: the client adds endpoint, signature and retries.
"""
from __future__ import annotations

import datetime
import http.client
import json
import time
import uuid
from urllib.parse import quote

from . import model
from .signing import uri_encode as _uri_encode
from .exceptions import ParamValidationError

_SAFE = "-._~"  # botocore's percent_encode keeps exactly the RFC 3986 unreserved set

# Python types botocore's validator accepts per model type
_TYPES = {
    "string": (str,),
    "integer": (int,),
    "long": (int,),
    "boolean": (bool,),
    "list": (list, tuple),
    "structure": (dict,),
}

# Members of nested output structures, by list member name.
_NESTED = {
    "Blocks": ("BlockIndex", "BlockToken"),
    "ChangedBlocks": ("BlockIndex", "FirstBlockToken", "SecondBlockToken"),
    "Tags": ("Key", "Value"),
}


def percent_encode(value) -> str:
    """botocore's percent_encode: UTF-8, every byte but A-Z a-z 0-9 - . _ ~ as %XX."""
    if type(value) is int:
        return str(value)
    if not isinstance(value, (str, bytes)):
        value = str(value)
    if isinstance(value, str):
        return _uri_encode(value)  # the signer's C encoder: the same rule, faster
    return quote(value, safe=_SAFE)


# -- validation --------------------------------------------------------------------------------

def is_blob(value) -> bool:
    if isinstance(value, (bytes, bytearray, str, memoryview)) or hasattr(value, "read"):
        return True
    # ebsfast also takes any object exporting the buffer protocol (numpy arrays, mmap).
    try:
        memoryview(value)
    except TypeError:
        return False
    return True


def _validate(value, shape: dict, name: str, errors: list) -> None:
    kind = shape["type"]
    if kind == "blob":
        if not is_blob(value):
            errors.append(f"Invalid type for parameter {name}, value: {value}, type: "
                          f"{type(value)}, valid types: {bytes}, {bytearray}, file-like object")
        return
    valid = _TYPES[kind]
    if not isinstance(value, valid):
        names = ", ".join(str(t) for t in valid)
        errors.append(f"Invalid type for parameter {name}, value: {value}, type: {type(value)}, "
                      f"valid types: {names}")
        return
    minimum = shape.get("min")
    if kind in ("integer", "long"):
        if minimum is not None and value < minimum:
            errors.append(f"Invalid value for parameter {name}, value: {value}, valid min value: "
                          f"{minimum}")
    elif kind in ("string", "list"):
        if minimum is not None and len(value) < minimum:
            errors.append(f"Invalid length for parameter {name}, value: {len(value)}, valid min "
                          f"length: {minimum}")
        if kind == "list":
            for i, item in enumerate(value):
                _validate(item, shape["member"], f"{name}[{i}]", errors)
    elif kind == "structure":
        _validate_structure(value, shape["members"], (), name, errors)


def _validate_structure(params: dict, members: dict, required, name: str, errors: list) -> None:
    label = name or "input"
    for req in required:
        if req not in params:
            errors.append(f'Missing required parameter in {label}: "{req}"')
    known = []
    for param in params:
        if param not in members:
            errors.append(f'Unknown parameter in {label}: "{param}", must be one of: '
                          f"{', '.join(members)}")
        else:
            known.append(param)
    for param in known:
        _validate(params[param], members[param], f"{name}.{param}".lstrip("."), errors)


# Per operation, the scalar members a quick check can clear: name -> (exact type, min). The
# quick check only ever says "valid"; anything it is unsure of (a bool for an integer, a str
# subclass, a list, a blob, an unknown name) goes to the full validator, which has the last word.
_QUICK = {op.name: {m.name: ({"string": str, "integer": int, "long": int}[m.shape["type"]],
                             m.shape.get("min"))
                    for m in op.input if m.shape["type"] in ("string", "integer", "long")}
          for op in model.OPERATIONS.values()}
_IDEMPOTENT = {op.name: tuple(m.name for m in op.input if m.idempotency_token)
               for op in model.OPERATIONS.values()}


def _quick_valid(op: model.Operation, params: dict, required) -> bool:
    quick = _QUICK[op.name]
    for name in required:
        if name not in params:
            return False
    for name, value in params.items():
        spec = quick.get(name)
        if spec is None or type(value) is not spec[0]:
            return False
        minimum = spec[1]
        if minimum is not None and (len(value) if spec[0] is str else value) < minimum:
            return False
    return True


def quick_minimums(op: model.Operation) -> dict[str, int | None]:
    """The minimum (length of a string, value of a number; None: none) that :func:`quick_valid`
    checks for each string and number member of ``op``."""
    return {name: spec[1] for name, spec in _QUICK[op.name].items()}


def quick_valid(op: model.Operation, params: dict) -> bool:
    """True when ``params`` is certainly valid for ``op`` by the quick check; False means
    only "ask :func:`validate`"."""
    return _quick_valid(op, params, op.required)


def validate(op: model.Operation, params: dict, *, required=None) -> None:
    """Raise ParamValidationError listing every problem, as botocore's validator does."""
    if _quick_valid(op, params, op.required if required is None else required):
        return
    errors: list[str] = []
    members = {m.name: m.shape for m in op.input}
    _validate_structure(params, members, op.required if required is None else required, "",
                        errors)
    if errors:
        raise ParamValidationError(report="\n".join(errors))


# -- serialization -----------------------------------------------------------------------------

def fill_idempotency_token(op: model.Operation, params: dict) -> dict:
    """botocore fills an absent idempotency token with a fresh UUID4 before validating."""
    for name in _IDEMPOTENT[op.name]:
        if name not in params:
            params = dict(params)
            params[name] = str(uuid.uuid4())
    return params


def _header_value(value, kind: str) -> str:
    """A header's text as botocore writes it: lower case for a boolean member, else ``str``
    of the value, so a bool given for an integer member goes out as ``True``/``False``."""
    if kind == "boolean":
        return str(value).lower()
    return str(value)


# Per operation: where each member goes (location, wire name with a query name already
# percent-encoded, model type), and whether the other members form a JSON body.
_PLACES = {op.name: {m.name: (m.location, percent_encode(m.location_name)
                              if m.location == "querystring" else m.location_name,
                              m.shape["type"])
                     for m in op.input}
           for op in model.OPERATIONS.values()}
_JSON_BODY = {op.name: op.payload is None and any(m.location is None for m in op.input)
              for op in model.OPERATIONS.values()}


def serialize(op: model.Operation, params: dict) -> tuple[str, str, list, bytes | object]:
    """(path, query string, headers, body) for validated ``params``.

    Query parameters and headers come in the order the caller gave the arguments, as in
    botocore; the JSON body uses botocore's ``json.dumps`` defaults so the bytes are equal.
    """
    places = _PLACES[op.name]
    uri_params = {}
    query = []
    headers = []
    body_params = {}
    for name, value in params.items():
        location, wire_name, kind = places[name]
        if location == "uri":
            uri_params[wire_name] = percent_encode(value)
        elif location == "querystring":
            query.append(f"{wire_name}={percent_encode(value)}")
        elif location == "header":
            headers.append((wire_name, _header_value(value, kind)))
        elif name != op.payload:
            body_params[name] = value
    path = op.uri.format_map(uri_params)
    qs = "&".join(query)
    if op.payload is not None:
        body = params.get(op.payload, b"")
        if isinstance(body, str):
            body = body.encode("utf-8")
    elif _JSON_BODY[op.name]:
        body = json.dumps(body_params).encode("utf-8") if body_params else b"{}"
        headers.append(("Content-Type", "application/json"))
    else:
        body = b""
    return path, qs, headers, body


assert model.OPERATIONS["GetSnapshotBlock"].uri == "/snapshots/{snapshotId}/blocks/{blockIndex}"
# -- parsing -----------------------------------------------------------------------------------

_EPOCH = datetime.datetime(1970, 1, 1)
_SECOND = datetime.timedelta(seconds=1)
_DAY = 86400


def _local_offset(moment: int) -> int:
    """Seconds east of UTC of local time at ``moment`` (epoch seconds)."""
    return time.localtime(moment).tm_gmtoff


class LocalTimezone(datetime.tzinfo):
    """Local time as the ``time`` module knows it: every moment gets the offset, DST flag and
    zone name in force then, so a datetime moved across a DST change (``+ timedelta``) shows
    that day's offset, as boto3's datetimes (dateutil's ``tzlocal()``) do.

    A wall time that happens twice (clocks going back) is its first occurrence with
    ``fold=0`` and its second with ``fold=1``; a wall time that clocks going forward skip is
    read with the offset from before the change, which lands after it and so gives the new
    offset. Instances are all equal, but :func:`parse_timestamp` gives each datetime its own,
    so that subtracting two of them counts the real time between them, as boto3's do.
    """

    __slots__ = ()

    @staticmethod
    def _wall(dt: datetime.datetime) -> int:
        return (dt.replace(tzinfo=None, fold=0) - _EPOCH) // _SECOND

    def _local(self, dt: datetime.datetime) -> time.struct_time:
        """``time.localtime`` of the moment ``dt``'s wall time stands for."""
        wall = self._wall(dt)
        before = _local_offset(wall - _DAY)
        after = _local_offset(wall + _DAY)
        fits = sorted({o for o in (before, after) if _local_offset(wall - o) == o}, reverse=True)
        if not fits:  # skipped by clocks going forward
            return time.localtime(wall - before)
        # Twice over: the larger offset is the earlier moment.
        offset = fits[-1] if dt.fold else fits[0]
        return time.localtime(wall - offset)

    def utcoffset(self, dt):
        if dt is None:
            return None if time.daylight else datetime.timedelta(seconds=-time.timezone)
        return datetime.timedelta(seconds=self._local(dt).tm_gmtoff)

    def dst(self, dt):
        if dt is None:
            return None if time.daylight else datetime.timedelta(0)
        local = self._local(dt)
        if local.tm_isdst > 0:
            return datetime.timedelta(seconds=local.tm_gmtoff + time.timezone)
        return datetime.timedelta(0)

    def tzname(self, dt):
        if dt is None:
            return None if time.daylight else time.tzname[0]
        return self._local(dt).tm_zone

    def fromutc(self, dt):
        if not isinstance(dt, datetime.datetime):
            raise TypeError("fromutc() requires a datetime argument")
        if dt.tzinfo is not self:
            raise ValueError("fromutc: dt.tzinfo is not self")
        offset = _local_offset(self._wall(dt))
        local = dt + datetime.timedelta(seconds=offset)
        if self._local(local).tm_gmtoff != offset:  # the second time this wall time comes round
            local = local.replace(fold=1)
        return local

    def __eq__(self, other):
        if isinstance(other, LocalTimezone):
            return True
        return NotImplemented

    def __hash__(self):
        return hash(LocalTimezone)

    def __repr__(self):
        return "LocalTimezone()"

    def __reduce__(self):
        return LocalTimezone, ()


def parse_timestamp(value) -> datetime.datetime:
    """Epoch seconds to an aware datetime in local time (a fresh :class:`LocalTimezone`), as
    botocore gives them: ints and floats as they are, anything else through ``float``."""
    if not isinstance(value, (int, float)):
        value = float(value)
    try:
        return datetime.datetime.fromtimestamp(value, LocalTimezone())
    except (OverflowError, OSError):
        # beyond what the platform's localtime takes: count from the epoch instead
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
        return epoch.astimezone(LocalTimezone()) + datetime.timedelta(seconds=value)


def response_metadata(status: int, headers: dict, retry: dict) -> dict:
    """boto3's ResponseMetadata; ``headers`` (names lower-case, repeated fields joined, as the
    client's exchanges give them) becomes HTTPHeaders as it is; ``retry`` holds RetryAttempts
    (and MaxAttemptsReached or RetryQuotaReached when they apply).

    RequestId is x-amzn-RequestId when sent; otherwise, below status 301 only,
    x-amz-request-id with HostId (x-amz-id-2, or ''). With neither there is no RequestId. An
    error response whose body is empty or HTML at status 500 or more has none either: its
    metadata comes from :func:`parse_error`.
    """
    meta = {}
    request_id = headers.get("x-amzn-requestid")
    if request_id is not None:
        meta["RequestId"] = request_id
    elif status < 301:
        request_id = headers.get("x-amz-request-id")
        if request_id is not None:
            meta["RequestId"] = request_id
            meta["HostId"] = headers.get("x-amz-id-2", "")
    meta["HTTPStatusCode"] = status
    meta["HTTPHeaders"] = headers
    meta.update(retry)
    return meta


_OUTPUT_HEADERS = {op.name: tuple((name, header.lower(), kind)
                                  for name, (header, kind) in op.output_headers.items())
                   for op in model.OPERATIONS.values()}


def parse_output_headers(op: model.Operation, headers: dict, out: dict) -> dict:
    """Adds to ``out`` the operation's output members that come in headers (``headers`` with
    lower-case names); returns ``out``."""
    for name, header, kind in _OUTPUT_HEADERS[op.name]:
        value = headers.get(header)
        if value is not None:
            out[name] = int(value) if kind == "integer" else value
    return out


def get_block_output(headers: dict, out: dict) -> dict:
    """``parse_output_headers`` for GetSnapshotBlock written out, for the call made once per
    block: DataLength, Checksum and ChecksumAlgorithm as the headers give them."""
    value = headers.get("x-amz-data-length")
    if value is not None:
        out["DataLength"] = int(value)
    value = headers.get("x-amz-checksum")
    if value is not None:
        out["Checksum"] = value
    value = headers.get("x-amz-checksum-algorithm")
    if value is not None:
        out["ChecksumAlgorithm"] = value
    return out


def parse_output(op: model.Operation, headers: dict, body: bytes | None) -> dict:
    """The operation's output members (without BlockData and ResponseMetadata); ``headers``
    with lower-case names."""
    out = parse_output_headers(op, headers, {})
    if op.output_body and body:
        doc = json.loads(body)
        if isinstance(doc, dict):
            parse_output_doc(op, doc, out)
    return out


def parse_output_doc(op: model.Operation, doc: dict, out: dict) -> dict:
    for name in op.output_body:
        if name not in doc or doc[name] is None:
            continue
        value = doc[name]
        if name in model.TIMESTAMP_MEMBERS:
            value = parse_timestamp(value)
        elif name in _NESTED and isinstance(value, list):
            keys = _NESTED[name]
            value = [{k: item[k] for k in keys if k in item and item[k] is not None}
                     for item in value]
        out[name] = value
    return out


# Each modeled error's members, which boto3 copies from a JSON error body to the top level
# of ClientError.response when they are there and not null.
_ERROR_MEMBERS = {
    "AccessDeniedException": ("Message", "Reason"),
    "ConcurrentLimitExceededException": ("Message",),
    "ConflictException": ("Message",),
    "InternalServerException": ("Message",),
    "RequestThrottledException": ("Message", "Reason"),
    "ResourceNotFoundException": ("Message", "Reason"),
    "ServiceQuotaExceededException": ("Message", "Reason"),
    "ValidationException": ("Message", "Reason"),
}
assert set(_ERROR_MEMBERS) == set(model.ERRORS)


def _generic_error(status: int, body) -> bool:
    """A 5xx answer with nothing to parse (empty, or an HTML page from a proxy or balancer)."""
    if status < 500:
        return False
    if body is None:
        return True
    body = bytes(body).strip()
    return not body or body.startswith(b"<html>")


def _error_doc(body):
    """An error body as boto3 reads it: {} when empty, the JSON value when it parses (of any
    type), else {"message": the text}. A body that is not UTF-8 raises UnicodeDecodeError."""
    if not body:
        return {}
    text = bytes(body).decode("utf-8")
    try:
        return json.loads(text)
    except ValueError:
        return {"message": text}


def parse_error(status: int, headers: dict, body: bytes) -> dict:
    """The dict boto3 puts in ``ClientError.response`` for an error answer, but for the retry
    keys of its ResponseMetadata (RetryAttempts, MaxAttemptsReached, RetryQuotaReached), which
    the caller adds; ``headers`` with lower-case names.

    Code: x-amzn-ErrorType, else the body's ``code``/``Code``, else its ``__type``, else the
    status, each cut at ``:`` and after ``#``. Message: the body's ``message``/``Message``,
    the body text when it is not JSON, else ''. A 5xx with an empty or HTML body gives the
    status and its reason phrase, and no RequestId. A JSON body that is not an object raises
    AttributeError, as it does in boto3.
    """
    if _generic_error(status, body):
        error = {"Code": str(status), "Message": http.client.responses.get(status, "")}
        return {"Error": error, "ResponseMetadata": {"HTTPStatusCode": status,
                                                     "HTTPHeaders": headers}}
    doc = _error_doc(body)
    # a JSON body that is not an object raises AttributeError here, as in boto3
    error = {"Message": doc.get("message", doc.get("Message", "")), "Code": ""}
    code = doc.get("__type", str(status))
    if code is not None:
        if ":" in code:
            code = code.split(":", 1)[0]
        if "#" in code:
            code = code.rsplit("#", 1)[1]
        query_error = headers.get("x-amzn-query-error")
        if query_error is not None:
            parts = query_error.split(";")
            if len(parts) == 2 and parts[0]:
                error["QueryErrorCode"] = code
                error["Type"] = parts[1]
                code = parts[0]
        error["Code"] = code
    if "x-amzn-errortype" in headers:
        named = headers["x-amzn-errortype"]
    elif "code" in doc or "Code" in doc:
        named = doc.get("code", doc.get("Code", ""))
    else:
        named = None
    if named is not None:
        if isinstance(named, str):
            named = named.split(":", 1)[0].rsplit("#", 1)[-1]
        error["Code"] = named
    meta = {}
    if "x-amzn-requestid" in headers:
        meta["RequestId"] = headers["x-amzn-requestid"]
    meta["HTTPStatusCode"] = status
    meta["HTTPHeaders"] = headers
    out = {"Error": error, "ResponseMetadata": meta}
    for member in _ERROR_MEMBERS.get(error["Code"], ()):
        value = doc.get(member)
        if value is not None:
            out[member] = value
    return out
