"""``ebsfast.client("ebs")``: boto3's EBS client surface, identical on the wire and in answers.

Same methods, keyword arguments, response dicts and errors as ``boto3.client("ebs")``, plus
ebsfast's own additions, named as such: paginators for the two List operations (botocore has
none for EBS), and checksums computed for ``put_snapshot_block`` when all three of
``Checksum``, ``ChecksumAlgorithm`` and ``DataLength`` are left out.

Every ``get_snapshot_block`` body is read whole and checked against ``x-amz-Checksum`` before
the call returns; a mismatch is retried like a broken connection, and raises
``ChecksumMismatchError`` once retries run out, so no unverified byte reaches the caller.
"""
from __future__ import annotations

import base64
import datetime
import email.utils
import functools
import logging
import os
import platform
import threading
from typing import Any
from urllib.parse import urlsplit

from . import _backend
from . import exceptions as _exc
from . import model, wire
from ._version import __version__
from .checksums import sha256
from .config import Config, as_config
from .credentials import Credentials, load_profile_config, resolve_credentials
from .paginate import PAGINATORS, Paginator
from .regions import normalize_fips_region, resolve_endpoint_url, resolve_region
from .response import StreamingBody
from .retries import make_retry_policy
from .signing import UNSIGNED_PAYLOAD, Signer, amz_date, canonical_headers
from .signing import canonical_query as _canonical_query
from .transport import Transport

logger = logging.getLogger("ebsfast.client")

_DEFAULT_PORTS = {"http": 80, "https": 443}


class ServiceModel:
    """What boto3 code reads from ``client.meta.service_model``."""

    service_name = model.SERVICE_NAME
    api_version = model.API_VERSION
    signing_name = model.SIGNING_NAME
    endpoint_prefix = model.ENDPOINT_PREFIX
    protocol = "rest-json"
    signature_version = "v4"

    @property
    def service_id(self) -> str:
        return model.SERVICE_ID

    @property
    def operation_names(self) -> list[str]:
        return sorted(model.OPERATIONS)

    @property
    def error_shapes(self) -> list[str]:
        return sorted(model.ERRORS)

    def operation_model(self, operation_name: str) -> "OperationModel":
        op = model.OPERATIONS.get(operation_name)
        if op is None:
            raise KeyError(f"no operation {operation_name!r} in ebs; "
                           f"operations: {', '.join(sorted(model.OPERATIONS))}")
        return OperationModel(op, self)

    def __repr__(self) -> str:
        return "ServiceModel(ebs)"


class _ErrorShape:
    """An error of an operation, by name (as botocore's shapes are read: ``.name``)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<ErrorShape({self.name})>"


class OperationModel:
    """What boto3 code reads from ``service_model.operation_model(name)``: the name, the
    HTTP binding, the modeled errors."""

    def __init__(self, op: model.Operation, service_model: ServiceModel):
        self.name = op.name
        self.service_model = service_model
        self.http = {"method": op.method, "requestUri": op.uri}
        if op.status != 200:  # the model names the code only where it is not 200
            self.http["responseCode"] = op.status
        self.has_streaming_input = op.payload is not None
        self.has_streaming_output = op.name == "GetSnapshotBlock"
        self.error_shapes = [_ErrorShape(name) for name in op.errors]

    def __repr__(self) -> str:
        return f"OperationModel(name={self.name})"


class ClientMeta:
    def __init__(self, region_name: str, endpoint_url: str, config: Config, partition: str):
        self.region_name = region_name
        self.endpoint_url = endpoint_url
        self.config = config
        self.partition = partition
        self.service_model = ServiceModel()
        self.method_to_api_mapping = {py: op.name for py, op in
                                      sorted(model.BY_PYTHON_NAME.items())}


def _make_exceptions():
    classes = {}
    for code in model.ERRORS:
        classes[code] = type(code, (_exc.ClientError,), {
            "__module__": "ebsfast.exceptions",
            "__doc__": f"The service answered {code} (HTTP {model.ERRORS[code]}).",
        })
    return classes


# One class per modeled error for the whole process, so ``except`` clauses written against one
# client's ``exceptions`` catch errors from any client.
_MODELED = _make_exceptions()


class ClientExceptions:
    """``client.exceptions``: ``ClientError`` and one subclass per modeled error code."""

    ClientError = _exc.ClientError

    def __init__(self):
        for code, cls in _MODELED.items():
            setattr(self, code, cls)

    def from_code(self, error_code: str) -> type:
        return _MODELED.get(error_code, _exc.ClientError)


def _user_agent(config: Config, retry_mode: str, app_id: str | None = None) -> str:
    """``app_id``: the application id from the environment or profile, used when ``config``
    names none (``user_agent_appid`` first, as botocore)."""
    if config.user_agent:
        base = config.user_agent
    else:
        base = (f"ebsfast/{__version__} ua/2.1 os/{platform.system().lower()}#"
                f"{platform.release()} md/arch#{platform.machine().lower()} lang/python#"
                f"{platform.python_version()} md/pyimpl#{platform.python_implementation()} "
                f"cfg/retry-mode#{retry_mode}")
    app_id = config.user_agent_appid or app_id
    if app_id:
        base += f" app/{app_id}"
    if config.user_agent_extra:
        base += f" {config.user_agent_extra}"
    return base


def _block_typed(params: dict) -> bool:
    """Whether GetSnapshotBlock's parameters have the types its own request builder takes;
    with validation off, others go the general way, serialized as botocore serializes them."""
    return (type(params.get("SnapshotId")) is str and type(params.get("BlockIndex")) is int
            and type(params.get("BlockToken")) is str)


def _host_header(endpoint_url: str) -> str:
    parts = urlsplit(endpoint_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def _block_bytes(data) -> bytes | memoryview:
    """The bytes to send for BlockData: buffers as they are (no copy), files read once."""
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray)):
        return data
    if hasattr(data, "read"):
        content = data.read()
        return content.encode("utf-8") if isinstance(content, str) else content
    view = memoryview(data)
    if not view.c_contiguous:
        raise _exc.ParamValidationError(report="Invalid value for parameter BlockData: a "
                                        "buffer must be C-contiguous")
    return view.cast("B")


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# A 10,000-entry list page is about 1.5 MB of JSON; anything far beyond that is not EBS.
_MAX_JSON_BODY = 64 << 20
_PAGE_KINDS = {"ListSnapshotBlocks": "blocks", "ListChangedBlocks": "changed"}
_GET_BLOCK = model.OPERATIONS["GetSnapshotBlock"]
_debug = functools.partial(logger.isEnabledFor, logging.DEBUG)


def _http():
    global _HTTP
    if _HTTP is None:
        _HTTP = _backend.load("http")
    return _HTTP


_HTTP = None


def _pages():
    return _backend.load("pages")


_EMPTY_SHA256 = sha256(b"").hex()
_UNSET = object()


def _block_result(status: int, headers: dict, call, length: int) -> dict:
    """GetSnapshotBlock's response dict (without BlockData; ``_length`` for the caller):
    ``response_metadata`` and ``parse_output_headers`` written out for the usual first-attempt
    answer, and those functions themselves for anything else."""
    request_id = headers.get("x-amzn-requestid")
    if (call.attempt == 1 and request_id and not call.max_attempts_reached
            and "x-amz-id-2" not in headers):
        result = {"ResponseMetadata": {"RequestId": request_id, "HTTPStatusCode": status,
                                       "HTTPHeaders": headers, "RetryAttempts": 0}}
    else:
        result = {"ResponseMetadata": wire.response_metadata(status, headers, call.metadata())}
    wire.get_block_output(headers, result)
    result["_length"] = length
    return result


def _writable_view(out) -> memoryview:
    """A flat writable byte view of ``Out``, or ValueError/TypeError before anything is sent."""
    if out is None:
        raise _exc.ParamValidationError(report='Missing required parameter in input: "Out"')
    try:
        view = memoryview(out)
    except TypeError:
        raise TypeError(f"Out must be a writable buffer (numpy array, bytearray, memoryview, "
                        f"mmap), not {type(out).__name__}") from None
    if view.readonly:
        raise ValueError("Out is read-only; pass a writable buffer")
    if not view.c_contiguous:
        raise ValueError("Out must be C-contiguous (a contiguous slice of an array)")
    view = view.cast("B") if view.format != "B" or view.ndim != 1 else view
    if len(view) < model.BLOCK_SIZE:
        raise ValueError(f"Out holds {len(view)} bytes; a block needs {model.BLOCK_SIZE}")
    return view


def _retry_ttl(date_header: str | None, read_timeout_s: float | None) -> str | None:
    """The ``ttl`` botocore puts in ``amz-sdk-request`` on a retry: the server's clock when it
    answered, plus the read timeout, in the form of X-Amz-Date."""
    if not date_header or read_timeout_s is None:
        return None
    try:
        server = email.utils.parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return None
    if server.tzinfo is None:
        server = server.replace(tzinfo=datetime.timezone.utc)
    return (server + datetime.timedelta(seconds=read_timeout_s)).strftime("%Y%m%dT%H%M%SZ")


class EBSClient:
    """An EBS direct API client; build it with :func:`ebsfast.client`. Safe to share between
    threads, as boto3's clients are."""

    def __init__(self, *, region_name: str | None = None, endpoint_url: str | None = None,
                 verify: bool | str | None = None, aws_access_key_id: str | None = None,
                 aws_secret_access_key: str | None = None, aws_session_token: str | None = None,
                 config: Any = None, profile_name: str | None = None, credentials: Any = None,
                 session: Any = None, environ: dict | None = None):
        env = os.environ if environ is None else environ
        cfg = as_config(config)
        if session is not None and profile_name is None:
            profile_name = getattr(session, "profile_name", None)
            if profile_name == "default":
                profile_name = None
        self._profile = load_profile_config(profile_name, environ=env)
        if region_name is None and session is not None:
            region_name = getattr(session, "region_name", None)
        region = resolve_region(region_name, cfg, self._profile, environ=env)
        if region is None:
            raise _exc.NoRegionError()
        url = resolve_endpoint_url(endpoint_url, region, cfg, self._profile, environ=env)
        self._signing_region, _ = normalize_fips_region(region)
        self._retry = make_retry_policy(cfg, profile_config=self._profile, environ=env)
        self._transport = Transport(url, verify=verify, config=cfg, environ=env,
                                    profile_config=self._profile)
        try:
            self._credentials = resolve_credentials(
                aws_access_key_id=aws_access_key_id,
                aws_secret_access_key=aws_secret_access_key,
                aws_session_token=aws_session_token, profile_name=profile_name,
                credentials=credentials, session=session, environ=env)
        except _exc.NoCredentialsError:
            self._credentials = None  # as botocore: the first call raises NoCredentialsError
        from .regions import partition_for_region

        try:
            partition = partition_for_region(self._signing_region).name
        except Exception:  # noqa: BLE001 - an unknown region still has an endpoint_url
            partition = "aws"
        app_id = (cfg.user_agent_appid or env.get("AWS_SDK_UA_APP_ID")
                  or self._profile.get("sdk_ua_app_id"))
        self._user_agent = _user_agent(cfg, self._retry.mode, app_id)
        # meta.config holds what was resolved, as botocore's does: the region in use, the
        # signature version, the retry mode when none was given, the User-Agent's base
        resolved = {"region_name": region,
                    "user_agent": _user_agent(Config(user_agent=cfg.user_agent),
                                              self._retry.mode),  # without app id and extra
                    "signature_version": cfg.signature_version or "v4"}
        if app_id:
            resolved["user_agent_appid"] = app_id
        if cfg.retries is None:
            resolved["retries"] = {"mode": self._retry.mode}
        self.meta = ClientMeta(region, url, cfg.merge(Config(**resolved)), partition)
        self.exceptions = ClientExceptions()
        self._host = _host_header(url)
        parts = urlsplit(url)
        self._path_prefix = parts.path.rstrip("/")
        self._origin = f"{parts.scheme}://{parts.netloc}"  # before a request's path, in errors
        # The first headers of every request with none of its own (Host, User-Agent).
        self._fixed_head = (f"Host: {self._host}\r\nAccept-Encoding: identity\r\n"
                            f"User-Agent: {self._user_agent}\r\n")
        self._validate = cfg.parameter_validation is not False
        # Config(signature_version=UNSIGNED) (botocore's): requests go out with no signature
        signature_version = cfg.signature_version
        self._unsigned = type(signature_version).__name__ == "UNSIGNED"
        if not (signature_version is None or self._unsigned
                or signature_version in ("v4", "s3v4")):
            raise ValueError(f"Config signature_version must be 'v4' or botocore.UNSIGNED "
                             f"(EBS is signed with SigV4), not {signature_version!r}")
        self._read_timeout = cfg.read_timeout
        # The native exchange reads and writes the socket itself; urllib3 keeps the pool.
        self._native_io = True
        self._signers: dict = {}
        self._prepared_cache: dict = {}
        self._signer_lock = threading.Lock()
        self._last_signer = None  # (access key, secret key, token, signer, frozen): static keys
        self._last_block_signing = None  # (signer, (prepared GET, session token))
        self._block_getter = _UNSET  # made at the first block read (see _getter)

    def __repr__(self) -> str:
        return f"<ebsfast.EBSClient region={self.meta.region_name} endpoint={self.meta.endpoint_url}>"

    # -- credentials and signing -----------------------------------------------------------
    def _signer(self) -> tuple[Signer, Any]:
        creds = self._credentials
        if type(creds) is Credentials:
            # Static keys: the triple read straight from the object, no frozen copy made.
            last = self._last_signer
            if (last is not None and last[0] is creds.access_key
                    and last[1] is creds.secret_key and last[2] is creds.token):
                return last[3], last[4]
        if creds is None:
            raise _exc.NoCredentialsError()
        frozen = creds.get_frozen_credentials()
        key = (frozen.access_key, frozen.secret_key, frozen.token)
        signer = self._signers.get(key)
        if signer is None:
            with self._signer_lock:
                # Credentials rotate rarely; keep only the current signer.
                self._signers = {key: Signer(frozen.access_key, frozen.secret_key,
                                             self._signing_region, model.SIGNING_NAME,
                                             session_token=frozen.token)}
                signer = self._signers[key]
        if type(creds) is Credentials:
            self._last_signer = (frozen.access_key, frozen.secret_key, frozen.token, signer,
                                 frozen)
        return signer, frozen

    def _prepared(self, signer: Signer, method: str, payload_hash: str):
        """The signer's prepared request for a call with no headers of its own to sign."""
        key = (id(signer), method, payload_hash)
        prepared = self._prepared_cache.get(key)
        if prepared is None or prepared[0] is not signer:
            block, names = canonical_headers([("host", self._host)])
            prepared = (signer, signer.prepare(method, block, names, payload_hash))
            self._prepared_cache[key] = prepared
        return prepared[1]

    def _block_signing(self) -> tuple:
        """GetSnapshotBlock's signing now: (prepared GET with no payload, session token)."""
        signer, frozen = self._signer()
        last = self._last_block_signing
        if last is None or last[0] is not signer:
            last = self._last_block_signing = (
                signer, (self._prepared(signer, "GET", _EMPTY_SHA256), frozen.token))
        return last[1]

    # -- the call --------------------------------------------------------------------------
    def _prepare(self, op: model.Operation, params: dict) -> tuple[dict, Any]:
        params = wire.fill_idempotency_token(op, params)
        block = None
        has_payload = op.payload is not None and op.payload in params
        if (op.name == "PutSnapshotBlock" and has_payload
                and wire.is_blob(params[op.payload])
                and not any(k in params for k in ("Checksum", "ChecksumAlgorithm",
                                                 "DataLength"))):
            # ebsfast's extension: the three values boto3 makes the caller compute.
            block = _block_bytes(params[op.payload])
            params = dict(params)
            params["DataLength"] = len(block)
            params["Checksum"] = base64.b64encode(sha256(block)).decode("ascii")
            params["ChecksumAlgorithm"] = "SHA256"
        if self._validate:
            wire.validate(op, params)
        if has_payload and block is None:
            block = _block_bytes(params[op.payload])
        if block is not None and op.name == "PutSnapshotBlock":
            length = params.get("DataLength")
            if isinstance(length, int) and length != len(block):
                raise _exc.ParamValidationError(
                    report=f"Invalid value for parameter DataLength, value: {length}: "
                           f"BlockData holds {len(block)} bytes")
        return params, block

    def _make_api_call(self, op: model.Operation, params: dict, *, out=None,
                       verify: bool = True, raw: bool = False) -> dict:
        """One API call with retries. ``out``: GetSnapshotBlock's body goes straight into this
        writable byte view (``get_snapshot_block_into``). ``raw``: the JSON body is returned
        unparsed under ``"Body"`` (columnar listing)."""
        if op is _GET_BLOCK and self._direct() and not self._unsigned and (
                wire.quick_valid(op, params) if self._validate else _block_typed(params)):
            return self._get_block(params, out, verify)
        params, block = self._prepare(op, params)
        path, query, op_headers, body = wire.serialize(op, params)
        if block is not None:
            body = block
        target = self._path_prefix + path + ("?" + query if query else "")
        # the query as sent (in argument order, as botocore sends it), sorted for signing
        canonical_query = _canonical_query(query) if "&" in query else query
        payload_hash = (UNSIGNED_PAYLOAD if op.unsigned_body else
                        _EMPTY_SHA256 if not body else sha256(body).hex())
        is_get = op is _GET_BLOCK
        if is_get and out is None:
            out = memoryview(bytearray(model.BLOCK_SIZE))
        call = self._retry.start(op.name)
        invocation_id = _http().invocation_id()
        served_date = None  # the server's Date, for botocore's retry ttl
        fixed = ([("Host", self._host), ("Accept-Encoding", "identity")] + op_headers
                 + [("User-Agent", self._user_agent)])
        sign_path = self._path_prefix + path
        signed_headers = bool(op_headers or op.unsigned_body)
        # UNSIGNED leaves requests unsigned, but for PutSnapshotBlock: botocore signs an
        # operation whose model names its own auth type (v4-unsigned-body) whatever the Config
        unsigned = self._unsigned and not op.unsigned_body
        while True:
            call.before_attempt()
            headers = list(fixed)
            if unsigned:
                pass  # no date, token or signature: botocore's UNSIGNED sends none
            elif signed_headers:
                signer, frozen = self._signer()
                date = amz_date()
                headers += signer.sign(op.method, sign_path, canonical_query,
                                       [("host", self._host)] + op_headers, payload_hash, date,
                                       content_sha256=op.unsigned_body).items()
            else:
                # No per-call headers to sign: the prepared hot path (same signature).
                signer, frozen = self._signer()
                date = amz_date()
                headers.append(("X-Amz-Date", date))
                if frozen.token:
                    headers.append(("X-Amz-Security-Token", frozen.token))
                headers.append(("Authorization", self._prepared(signer, op.method, payload_hash)
                                .authorization(sign_path, canonical_query, date)))
            headers.append(("amz-sdk-invocation-id", invocation_id))
            # botocore learns the attempt limit when it judges the first response, so only
            # retries carry it, and a ttl once the server has answered
            headers.append(("amz-sdk-request", self._sdk_request(call, served_date)))
            if _debug():
                logger.debug("%s %s attempt %d", op.name, op.method, call.attempt)
            try:
                status, resp_headers, data, digest, length = self._exchange(
                    op.method, target, headers, body, out if is_get else None,
                    hash_body=is_get and verify)
            except (_exc.HTTPClientError, _exc.ConnectionError) as exc:
                call.sleep(self._exception_delay(call, exc, self._origin + target))
                continue
            # botocore means to leave the ttl off retried uploads, but looks for the flag where
            # it is never set and sends one for every operation: so does ebsfast
            served_date = resp_headers.get("date")
            if status >= 300:
                call.sleep(self._error_delay(op, call, status, resp_headers, data))
                continue
            if is_get and verify:
                mismatch = self._checksum_mismatch(params, resp_headers, digest, length)
                if mismatch is not None:
                    call.sleep(self._mismatch_delay(call, status, mismatch, out, length))
                    continue
            call.after_success()
            result = {"ResponseMetadata": wire.response_metadata(status, resp_headers,
                                                                 call.metadata())}
            if raw:
                result["Body"] = data
                return result
            wire.parse_output_headers(op, resp_headers, result)
            if op.output_body and data:
                result.update(self._parse_body(op, data))
            if is_get:
                result["_length"] = length
            return result

    def _sdk_request(self, call, served_date: str | None) -> str:
        """amz-sdk-request: botocore learns the attempt limit when it judges the first
        response, so only retries carry it, and a ttl once the server has answered."""
        if call.attempt == 1:
            return "attempt=1"
        ttl = _retry_ttl(served_date, self._read_timeout)
        return (f"{'ttl=' + ttl + '; ' if ttl else ''}"
                f"attempt={call.attempt}; max={self._retry.max_attempts}")

    @staticmethod
    def _exception_delay(call, exc: Exception, url: str) -> float:
        """After an attempt that ended in ``exc`` (no usable response): the wait before the
        next attempt, or ``exc`` raised again when there is none, naming the request's ``url``
        where it names a URL (as botocore's do)."""
        delay = call.decide(exception=exc)
        if delay is None:
            kwargs = getattr(exc, "kwargs", None)
            if (isinstance(exc, _exc.EbsfastError) and kwargs
                    and kwargs.get("endpoint_url") not in (None, url)):
                named = type(exc)(**{**kwargs, "endpoint_url": url})
                raise named.with_traceback(exc.__traceback__) from exc.__cause__
            raise exc
        return delay

    @staticmethod
    def _error_delay(op: model.Operation, call, status: int, headers: dict, data) -> float:
        """After an error response: the wait before the next attempt, or the modeled error
        raised when there is none."""
        error = wire.parse_error(status, headers, data)
        code = error["Error"]["Code"]
        delay = call.decide(status=status, error_code=code,
                            error_message=error["Error"]["Message"], headers=headers)
        if delay is not None:
            return delay
        error["ResponseMetadata"].update(call.metadata())
        raise _MODELED.get(code, _exc.ClientError)(error, op.name)

    @staticmethod
    def _mismatch_delay(call, status: int, mismatch: Exception, out, length: int) -> float:
        """After a block that failed its checksum: its bytes zeroed (they never stay where a
        caller may use them), then the wait before the next attempt, or ``mismatch`` raised."""
        out[:length] = bytes(length)
        delay = call.decide(status=status, checksum_mismatch=True)
        if delay is None:
            raise mismatch
        return delay

    def _direct(self) -> bool:
        """True when requests go straight to the endpoint (or through a CONNECT tunnel), so
        the native exchange writes them; False behind a plain HTTP proxy."""
        direct = self.__dict__.get("_direct_route")
        if direct is None:
            direct = self._direct_route = self._native_io and self._transport.direct()
        return direct

    def _getter(self):
        """``(BlockGetter, usable)``: this client's GetSnapshotBlock request builder and usual
        attempt in one call, and whether that attempt is the whole story. It is not behind a
        plain HTTP proxy (no getter), nor with retry settings whose first attempt has work of
        its own: adaptive mode's rate limiter, a single attempt (flagged MaxAttemptsReached)."""
        made = self._block_getter
        if made is _UNSET:
            policy = self._retry
            quick = wire.quick_minimums(_GET_BLOCK) if self._validate else {}
            quota = policy.quota
            getter = _http().BlockGetter(
                self._transport, self._block_signing, self._path_prefix, self._fixed_head,
                timeout_s=self._read_timeout, max_other_body=_MAX_JSON_BODY,
                on_success=None if quota is None else functools.partial(
                    quota.release, policy.NO_RETRY_INCREMENT),
                min_snapshot_id=quick.get("SnapshotId"),
                min_block_index=quick.get("BlockIndex"),
                min_block_token=quick.get("BlockToken"))
            usable = (self._direct() and policy.rate_limiter is None
                      and policy.max_attempts > 1 and not self._unsigned)
            made = self._block_getter = (getter, usable)
        return made

    def _first_block_attempt(self, snapshot_id, block_index, block_token, out, verify: bool):
        """The getter's attempt: the response dict (with ``_length``), None (nothing sent), or
        ``(invocation id or None, Response or exception)`` for the attempt loop to judge."""
        getter, usable = self._getter()
        if not usable or _debug():
            return None
        try:
            return getter.get(snapshot_id, block_index, block_token, out, verify)
        except (_exc.HTTPClientError, _exc.ConnectionError) as exc:
            return None, exc  # no connection to the endpoint: nothing was sent

    def _get_block(self, params: dict, out, verify: bool, first=_UNSET) -> dict:
        """GetSnapshotBlock, the call made once per block: ``_make_api_call``'s loop for
        parameters the quick check has cleared, on a direct route, its usual first attempt one
        call to the ``BlockGetter``, the request head written in one piece. The same requests on
        the wire, the same retries and errors. ``first``: the getter's outcome when the caller
        has asked it already (None: it sent nothing)."""
        if out is None:
            out = memoryview(bytearray(model.BLOCK_SIZE))
        if first is _UNSET:
            first = self._first_block_attempt(params.get("SnapshotId"), params.get("BlockIndex"),
                                              params.get("BlockToken"), out, verify)
            if type(first) is dict:
                return first
        http = _http()
        invocation_id = first[0] if first is not None else None
        if invocation_id is None:
            invocation_id = http.invocation_id()
        path, query, request_line = self._getter()[0].request_line(
            params["SnapshotId"], params["BlockIndex"], params["BlockToken"])
        call = self._retry.start("GetSnapshotBlock")
        served_date = None
        while True:
            call.before_attempt()
            if first is not None:
                outcome, first = first[1], None
            else:
                prepared, session_token = self._block_signing()
                date = amz_date()
                head = http.block_head(request_line, date, session_token,
                                       prepared.authorization(path, query, date), invocation_id,
                                       self._sdk_request(call, served_date))
                if _debug():
                    logger.debug("GetSnapshotBlock GET attempt %d", call.attempt)
                try:
                    outcome = self._exchange_head(head, None, out, verify)
                except (_exc.HTTPClientError, _exc.ConnectionError) as exc:
                    outcome = exc
            if isinstance(outcome, BaseException):
                exc = self._exchange_error(outcome)
                call.sleep(self._exception_delay(
                    call, exc, f"{self._origin}{path}{'?' + query if query else ''}"))
                continue
            status, headers, data, digest, length = (
                outcome.status, outcome.headers, outcome.body, outcome.digest,
                outcome.body_length)
            served_date = headers.get("date")
            if status >= 300:
                call.sleep(self._error_delay(_GET_BLOCK, call, status, headers, data))
                continue
            if verify:
                mismatch = self._checksum_mismatch(params, headers, digest, length)
                if mismatch is not None:
                    call.sleep(self._mismatch_delay(call, status, mismatch, out, length))
                    continue
            call.after_success()
            return _block_result(status, headers, call, length)

    def _parse_body(self, op: model.Operation, data: bytes) -> dict:
        kind = _PAGE_KINDS.get(op.name)
        if kind is None:
            return wire.parse_output(op, {}, data)
        page = _pages().parse_page(data, kind)
        if "ExpiryTime" in page:
            page["ExpiryTime"] = wire.parse_timestamp(page["ExpiryTime"])
        return page

    def _exchange(self, method: str, target: str, headers: list, body, out, *,
                  hash_body: bool):
        """One HTTP request/response: ``(status, headers, body bytes, digest, length)``, the
        headers a dict with lower-case names. With ``out``, a 200 body lands in ``out`` (and
        ``digest`` is its SHA-256 when ``hash_body``); other bodies come back as bytes."""
        if not self._direct():
            return self._exchange_urllib3(method, target, headers, body, out, hash_body)
        parts = [f"{method} {target} HTTP/1.1\r\n"]
        parts += [f"{k}: {v}\r\n" for k, v in headers]
        if body or method in _BODY_METHODS:
            parts.append(f"Content-Length: {len(body) if body else 0}\r\n")
        parts.append("\r\n")
        r = self._exchange_head("".join(parts).encode("latin-1"), body, out, hash_body)
        return r.status, r.headers, r.body, r.digest, r.body_length

    def _exchange_head(self, head: bytes, body, out, hash_body: bool):
        """``_exchange`` with the request head already written, on a direct route; the
        exchange's ``Response``."""
        transport = self._transport
        http = _http()
        checked_out = transport.checkout()
        while True:
            pool, conn, was_idle = checked_out
            reusable = False
            try:
                r = http.exchange(conn.sock, head, body if body else None, out,
                                  timeout_s=self._read_timeout, hash_body=hash_body,
                                  max_other_body=_MAX_JSON_BODY, lower_headers=True,
                                  idle_check=was_idle)
                reusable = r.keep_alive
                return r
            except http.StaleConnection:
                pass  # closed by the server while idle, nothing sent: take another below
            except OSError as e:  # the exchange's own errors and the socket's
                raise self._exchange_error(e) from e  # (a cut body's bytes are zeroed)
            finally:
                transport.checkin(pool, conn, reusable)
            # Only idle connections are checked, and at most max_pool_connections wait, so
            # this ends.
            checked_out = transport.checkout()

    def _exchange_error(self, e: BaseException) -> BaseException:
        """botocore's error for an exchange that failed with ``e`` (the native exchange's or
        the socket's); the client's own errors as they are."""
        if isinstance(e, _exc.EbsfastError) or not isinstance(e, OSError):
            return e
        http = _http()
        if isinstance(e, TimeoutError):
            mapped = _exc.ReadTimeoutError(endpoint_url=self.meta.endpoint_url, error=e)
        elif isinstance(e, http.IncompleteBody):
            mapped = _exc.ResponseStreamingError(error=e)
        elif isinstance(e, (http.ProtocolError, http.BodyTooLarge)):
            mapped = _exc.HTTPClientError(error=e)
        else:  # closed, reset, or any other socket error
            mapped = _exc.ConnectionClosedError(endpoint_url=self.meta.endpoint_url, error=e)
        mapped.__cause__ = e
        return mapped

    def _exchange_urllib3(self, method, target, headers, body, out, hash_body):
        """The same exchange through urllib3's request path (used behind an HTTP proxy)."""
        response = None
        try:
            response = self._transport.send(method, target, dict(headers), body or None)
            data = self._transport.read(response)
            status = response.status
            lower = {k.lower(): v for k, v in response.headers.items()}
        finally:
            self._transport.discard(response)
        if out is not None and status == 200:
            if len(data) > len(out):
                raise _exc.HTTPClientError(error=f"a block of {len(data)} bytes does not fit "
                                           f"the {len(out)}-byte destination")
            out[:len(data)] = data
            return status, lower, None, sha256(data) if hash_body else None, len(data)
        return status, lower, data, None, len(data)

    @staticmethod
    def _checksum_mismatch(params: dict, headers: dict, digest: bytes | None, length: int):
        """None when the block's bytes hash to its x-amz-Checksum; else the error to retry
        on, and raise once retries run out (a block without a SHA256 checksum is not
        returned either: it could not be checked)."""
        expected = headers.get("x-amz-checksum")
        algorithm = headers.get("x-amz-checksum-algorithm", "SHA256")
        if not expected or algorithm.upper() != "SHA256" or digest is None:
            return _exc.ChecksumMissingError(snapshot_id=params.get("SnapshotId"),
                                             block_index=params.get("BlockIndex"),
                                             algorithm=headers.get("x-amz-checksum-algorithm",
                                                                   "absent"),
                                             length=length)
        actual = base64.b64encode(digest).decode("ascii")
        if actual == expected:
            return None
        return _exc.ChecksumMismatchError(snapshot_id=params.get("SnapshotId"),
                                          block_index=params.get("BlockIndex"),
                                          expected=expected, actual=actual, length=length)

    # -- ebsfast's own calls -------------------------------------------------------------------
    def get_snapshot_block_into(self, *args, SnapshotId=None, BlockIndex=None, BlockToken=None,
                                Out=None, VerifyChecksum: bool = True, **kwargs) -> dict:
        """GetSnapshotBlock with the block written straight into ``Out`` (a writable,
        contiguous buffer of at least 524288 bytes: a numpy array or a slice of one, a
        bytearray, a memoryview, an mmap), no intermediate bytes, the GIL released while bytes
        move and are hashed. Returns boto3's response dict without ``BlockData``. With
        ``VerifyChecksum`` (the default) the block is checked against ``x-amz-Checksum``; a
        mismatch is retried, and once retries run out the bytes written are zeroed and
        ``ChecksumMismatchError`` is raised."""
        if args:
            raise TypeError("get_snapshot_block_into() only accepts keyword arguments.")
        if kwargs:
            raise _exc.ParamValidationError(report="\n".join(
                f'Unknown parameter in input: "{k}", must be one of: SnapshotId, BlockIndex, '
                f"BlockToken, Out, VerifyChecksum" for k in kwargs))
        view = _writable_view(Out)
        verify = bool(VerifyChecksum)
        first = self._first_block_attempt(SnapshotId, BlockIndex, BlockToken, view, verify)
        if type(first) is dict:
            del first["_length"]
            return first
        params = {}
        if SnapshotId is not None:
            params["SnapshotId"] = SnapshotId
        if BlockIndex is not None:
            params["BlockIndex"] = BlockIndex
        if BlockToken is not None:
            params["BlockToken"] = BlockToken
        if first is not None or (self._direct() and not self._unsigned and (
                wire.quick_valid(_GET_BLOCK, params) if self._validate
                else _block_typed(params))):
            result = self._get_block(params, view, verify, first)
        else:
            result = self._make_api_call(_GET_BLOCK, params, out=view, verify=verify)
        result.pop("_length", None)
        return result

    # -- boto3's other client methods -------------------------------------------------------
    def can_paginate(self, operation_name: str) -> bool:
        return operation_name in PAGINATORS

    def get_paginator(self, operation_name: str) -> Paginator:
        if operation_name not in PAGINATORS:
            raise _exc.OperationNotPageableError(operation_name=operation_name)
        op = model.BY_PYTHON_NAME[operation_name]

        def raw(**params):
            return self._make_api_call(op, params, raw=True)["Body"]

        return Paginator(getattr(self, operation_name), operation_name, raw)

    @property
    def waiter_names(self) -> list[str]:
        return []

    def get_waiter(self, waiter_name: str):
        raise ValueError(f"Waiter does not exist: {waiter_name}")

    def generate_presigned_url(self, ClientMethod: str, Params: dict | None = None,
                               ExpiresIn: int = 3600, HttpMethod: str | None = None) -> str:
        op = model.BY_PYTHON_NAME.get(ClientMethod)
        if op is None:
            raise _exc.UnknownClientMethodError(method_name=ClientMethod)
        params, block = self._prepare(op, dict(Params or {}))
        path, query, op_headers, _ = wire.serialize(op, params)
        url = self.meta.endpoint_url.rstrip("/") + path + ("?" + query if query else "")
        if self._unsigned:
            return url  # as botocore: nothing to sign, the plain URL
        signer, _ = self._signer()
        return signer.presign(HttpMethod or op.method, url, int(ExpiresIn), amz_date(),
                              headers=[(k, v) for k, v in op_headers])

    def close(self) -> None:
        """Close every pooled connection."""
        self._transport.close()

    def __enter__(self) -> "EBSClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _operation_method(op: model.Operation):
    if op.name == "GetSnapshotBlock":
        def method(self, *args, **kwargs):
            if args:
                raise TypeError(f"{op.python_name}() only accepts keyword arguments.")
            view = memoryview(bytearray(model.BLOCK_SIZE))
            result = self._make_api_call(op, kwargs, out=view)
            result["BlockData"] = StreamingBody(view[:result.pop("_length")])
            return result
    else:
        def method(self, *args, **kwargs):
            if args:
                raise TypeError(f"{op.python_name}() only accepts keyword arguments.")
            return self._make_api_call(op, kwargs)

    method.__name__ = op.python_name
    method.__qualname__ = f"EBSClient.{op.python_name}"
    method.__doc__ = (f"{op.name}: {op.method} {op.uri}. Same arguments and response as "
                      f"boto3's ``{op.python_name}``.")
    return method


for _op in model.OPERATIONS.values():
    setattr(EBSClient, _op.python_name, _operation_method(_op))


def client(service_name: str = "ebs", region_name: str | None = None,
           api_version: str | None = None, use_ssl: bool = True,
           verify: bool | str | None = None, endpoint_url: str | None = None,
           aws_access_key_id: str | None = None, aws_secret_access_key: str | None = None,
           aws_session_token: str | None = None, config: Any = None, *,
           profile_name: str | None = None, credentials: Any = None,
           session: Any = None) -> EBSClient:
    """An EBS client, taking ``boto3.client``'s arguments (``service_name`` must be "ebs").

    ebsfast additions: ``profile_name``, and ``credentials=`` (a botocore Credentials object)
    or ``session=`` (a boto3 or botocore Session) for SSO and assume-role setups.
    """
    if service_name != model.SERVICE_NAME:
        raise _exc.UnknownServiceError(service_name=service_name,
                                       known_service_names=model.SERVICE_NAME)
    if api_version not in (None, model.API_VERSION):
        raise ValueError(f"api_version {api_version!r} is not available; ebsfast speaks "
                         f"{model.API_VERSION}")
    if endpoint_url is None and not use_ssl:
        cfg = as_config(config)
        region = resolve_region(region_name, cfg, None)
        if region is not None:
            endpoint_url = resolve_endpoint_url(None, region, cfg, None).replace("https://",
                                                                                  "http://", 1)
    return EBSClient(region_name=region_name, endpoint_url=endpoint_url, verify=verify,
                     aws_access_key_id=aws_access_key_id,
                     aws_secret_access_key=aws_secret_access_key,
                     aws_session_token=aws_session_token, config=config,
                     profile_name=profile_name, credentials=credentials, session=session)
