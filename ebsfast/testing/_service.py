"""The EBS direct API operations, as the service behaves (see shared ebs-api.md and botocore's
service model): snapshots, lineage, block and page tokens, validation and its error reasons.

Transport-free: each operation takes parsed request parts and returns a Response or raises
ApiError; the HTTP layer turns both into bytes.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import re
import secrets
import struct
import threading
import time
from dataclasses import dataclass, field

from .. import _backend
from ..checksums import linear_checksum, sha256
from ._store import BLOCK_SIZE, Block, BlockStore

_token_mac = _backend.load("lane").token_mac

BLOCKS_PER_GIB = (1 << 30) // BLOCK_SIZE
MAX_VOLUME_GIB = 65536  # 64 TiB, the largest EBS snapshot
SNAPSHOT_ID_RE = re.compile(r"^snap-[0-9a-f]+$")
KMS_ARN_RE = re.compile(r"arn:aws[a-z\-]*:kms:.*:[0-9]{12}:key/.*")
# ClientToken (the model's IdempotencyToken, ^[\S]+$): 1 to 255 characters, none of them
# ASCII white space.
CLIENT_TOKEN_RE = re.compile(r"[\S]+", re.ASCII)
MAX_CLIENT_TOKEN = 255
MAX_DESCRIPTION = 255
MAX_TAG_KEY = 127
MAX_TAG_VALUE = 255
MAX_TAGS = 50  # "up to 50 tags per snapshot"
OWNER_ID = "111122223333"

BLOCK_TOKEN_TTL_S = 7 * 24 * 3600
PAGE_TOKEN_TTL_S = 3600
DEFAULT_MAX_RESULTS = 10000


class ApiError(Exception):
    """An error response in the service's rest-json shape."""

    def __init__(self, status: int, code: str, message: str, reason: str | None = None,
                 headers: dict | None = None):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.reason = reason
        self.headers = headers or {}


def validation(message: str, reason: str = "INVALID_PARAMETER_VALUE") -> ApiError:
    return ApiError(400, "ValidationException", message, reason)


def not_found(snapshot_id: str) -> ApiError:
    return ApiError(404, "ResourceNotFoundException",
                    f"The snapshot '{snapshot_id}' does not exist.", "SNAPSHOT_NOT_FOUND")


@dataclass
class Response:
    status: int
    json: dict | None = None
    headers: dict = field(default_factory=dict)
    body: bytes | None = None  # raw body (GetSnapshotBlock)
    block: Block | None = None


@dataclass
class Snapshot:
    id: str
    lineage: str
    volume_size: int  # GiB
    start_time: float
    timeout_s: int
    status: str = "pending"
    #: the Reason a call on the snapshot gets once it is in error: WRITE_REQUEST_TIMEOUT when
    #: it timed out, INVALID_SNAPSHOT_ID when CompleteSnapshot found a mismatch
    error_reason: str | None = None
    #: when the last block was written (start_time until then): Timeout counts from here
    last_write: float = 0.0
    parent_id: str | None = None
    description: str | None = None
    tags: list | None = None
    encrypted: bool = False
    kms_key_arn: str | None = None
    client_token: str | None = None
    fingerprint: str = ""
    started: dict | None = None  # the StartSnapshot answer, for a repeated ClientToken
    blocks: dict = field(default_factory=dict)   # index -> Block (own and inherited)
    written: dict = field(default_factory=dict)  # index -> Block written in this snapshot
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def max_blocks(self) -> int:
        return self.volume_size * BLOCKS_PER_GIB

    def describe(self) -> dict:
        out = {
            "SnapshotId": self.id,
            "OwnerId": OWNER_ID,
            "Status": self.status,
            "StartTime": self.start_time,
            "VolumeSize": self.volume_size,
            "BlockSize": BLOCK_SIZE,
            "SseType": "sse-kms" if self.kms_key_arn else ("sse-ebs" if self.encrypted else "none"),
        }
        if self.tags:
            out["Tags"] = self.tags
        if self.parent_id:
            out["ParentSnapshotId"] = self.parent_id
        if self.kms_key_arn:
            out["KmsKeyArn"] = self.kms_key_arn
        if self.description is not None:
            out["Description"] = self.description
        return out


def _int_param(value: str | None, name: str, *, minimum: int = 0, maximum: int | None = None,
               default: int | None = None) -> int | None:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise validation(f"Invalid value for {name}: {value!r} is not an integer.") from None
    if n < minimum or (maximum is not None and n > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise validation(f"Invalid value for {name}: {n}; it must be {bound}.")
    return n


class Service:
    """All snapshots of one fake account, and the operations on them."""

    def __init__(self, store: BlockStore, *, max_pending: int = 100, clock=time.time):
        self.store = store
        self.max_pending = max_pending
        self.clock = clock
        self.snapshots: dict[str, Snapshot] = {}
        self._tokens: dict[str, Snapshot] = {}
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)  # MACs the opaque tokens
        self.block_token_ttl_s = BLOCK_TOKEN_TTL_S
        self.page_token_ttl_s = PAGE_TOKEN_TTL_S
        #: called with each snapshot as it becomes completed (after which it never changes)
        self.on_completed = None

    # -- tokens: opaque base64, bound to a snapshot (and index), expiring, MAC'd ------------
    def _mac(self, payload: bytes) -> bytes:
        # HMAC-SHA256, first 16 bytes, computed by the server's lane module: the lane checks
        # block tokens itself, without Python, with the same function.
        return _token_mac(self._key, payload)

    def _seal(self, payload: bytes) -> str:
        return base64.b64encode(payload + self._mac(payload)).decode()

    def _open(self, token: str) -> bytes | None:
        if not token or len(token) > 256:
            return None
        try:  # validate=True refuses anything but base64's alphabet and padding
            raw = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) < 17:
            return None
        payload, mac = raw[:-16], raw[-16:]
        if not hmac.compare_digest(_token_mac(self._key, payload), mac):
            return None
        return payload

    def block_token(self, snap: Snapshot, index: int, expiry: int) -> str:
        return self._seal(b"B" + struct.pack(">QQ", index, expiry) + snap.id.encode())

    def _check_block_token(self, token: str, snap: Snapshot, index: int) -> None:
        payload = self._open(token)
        if payload is None or payload[:1] != b"B" or len(payload) < 17:
            raise validation("The block token is not valid.", "INVALID_BLOCK_TOKEN")
        tindex, expiry = struct.unpack(">QQ", payload[1:17])
        if payload[17:] != snap.id.encode() or tindex != index:
            raise validation("The block token does not belong to this snapshot and block index.",
                             "INVALID_BLOCK_TOKEN")
        if self.clock() > expiry:
            raise validation("The block token has expired.", "INVALID_BLOCK_TOKEN")

    def _page_token(self, key: str, next_index: int) -> str:
        expiry = int(self.clock()) + self.page_token_ttl_s
        return self._seal(b"P" + struct.pack(">QQ", next_index, expiry) + key.encode())

    def _check_page_token(self, token: str, key: str) -> int:
        payload = self._open(token)
        if payload is None or payload[:1] != b"P" or len(payload) < 17:
            raise validation("The pagination token is not valid.", "INVALID_PAGE_TOKEN")
        next_index, expiry = struct.unpack(">QQ", payload[1:17])
        if payload[17:] != key.encode():
            raise validation("The pagination token belongs to another request.",
                             "INVALID_PAGE_TOKEN")
        if self.clock() > expiry:
            raise validation("The pagination token has expired.", "INVALID_PAGE_TOKEN")
        return next_index

    # -- lookups ----------------------------------------------------------------------------
    def _snapshot_id(self, snapshot_id: str, name: str = "snapshotId") -> str:
        if not snapshot_id or len(snapshot_id) > 64 or not SNAPSHOT_ID_RE.match(snapshot_id):
            raise validation(f"Invalid {name}: {snapshot_id!r}.", "INVALID_SNAPSHOT_ID")
        return snapshot_id

    def _get(self, snapshot_id: str, name: str = "snapshotId") -> Snapshot:
        snap = self.snapshots.get(self._snapshot_id(snapshot_id, name))
        if snap is None:
            raise not_found(snapshot_id)
        self._expire(snap)
        return snap

    def _expire(self, snap: Snapshot) -> None:
        if snap.status == "pending":
            with snap.lock:
                self._expire_locked(snap)

    def _expire_locked(self, snap: Snapshot) -> None:
        """With ``snap.lock`` held: a pending snapshot with no block written, or not completed,
        within its Timeout of the last block written (of its start, before any) goes to
        error."""
        if snap.status == "pending" and self.clock() > snap.last_write + snap.timeout_s:
            snap.status = "error"
            snap.error_reason = "WRITE_REQUEST_TIMEOUT"

    @staticmethod
    def _not_pending(snap: Snapshot) -> ApiError:
        """The error of a write or completion to a snapshot no longer pending."""
        if snap.status == "error":
            why = ("it timed out" if snap.error_reason == "WRITE_REQUEST_TIMEOUT"
                   else "its completion found a mismatch")
            return validation(f"The snapshot '{snap.id}' is in error ({why}); blocks can only be "
                              "written to, and completed on, a pending snapshot.",
                              snap.error_reason or "INVALID_SNAPSHOT_ID")
        return validation(f"The snapshot '{snap.id}' is {snap.status}; blocks can only be "
                          "written to, and completed on, a pending snapshot.",
                          "INVALID_SNAPSHOT_ID")

    def _completed(self, snapshot_id: str, name: str = "snapshotId") -> Snapshot:
        snap = self._get(snapshot_id, name)
        if snap.status != "completed":
            raise validation(f"The snapshot '{snapshot_id}' is not in the completed state "
                             f"(it is {snap.status}).", "INVALID_SNAPSHOT_ID")
        return snap

    # -- operations -------------------------------------------------------------------------
    def start_snapshot(self, body: bytes) -> Response:
        try:
            req = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "SerializationException", "The request body is not valid JSON.")
        if not isinstance(req, dict):
            raise ApiError(400, "SerializationException", "The request body must be a JSON object.")
        size = req.get("VolumeSize")
        if not isinstance(size, int) or isinstance(size, bool):
            raise validation("VolumeSize is required and must be an integer.",
                             "INVALID_VOLUME_SIZE")
        if not 1 <= size <= MAX_VOLUME_GIB:
            raise validation(f"VolumeSize {size} GiB is outside 1..{MAX_VOLUME_GIB}.",
                             "INVALID_VOLUME_SIZE")
        parent_id = req.get("ParentSnapshotId")
        encrypted = req.get("Encrypted")
        kms = req.get("KmsKeyArn")
        timeout_min = req.get("Timeout", 60)
        description = req.get("Description")
        tags = req.get("Tags")
        if encrypted is not None and not isinstance(encrypted, bool):
            raise validation("Encrypted must be a boolean.")
        if "Encrypted" in req and parent_id:  # true or false: the model refuses both
            raise validation("Encrypted cannot be set together with ParentSnapshotId: a child "
                             "snapshot takes the encryption of its parent.")
        if kms is not None and (not isinstance(kms, str) or not KMS_ARN_RE.match(kms)):
            raise validation("KmsKeyArn is not a valid KMS key ARN.", "INVALID_CUSTOMER_KEY")
        if kms and not encrypted:
            raise validation("KmsKeyArn requires Encrypted=true.", "INVALID_CUSTOMER_KEY")
        if not isinstance(timeout_min, int) or not 10 <= timeout_min <= 4320:
            raise validation(f"Timeout {timeout_min!r} is outside 10..4320 minutes.")
        if description is not None and (not isinstance(description, str) or not description
                                        or len(description) > MAX_DESCRIPTION):
            raise validation(f"Description must be a string of 1 to {MAX_DESCRIPTION} "
                             "characters.")
        if tags is not None:
            if not isinstance(tags, list) or not all(
                    isinstance(t, dict) and isinstance(t.get("Key"), str) and t["Key"]
                    and isinstance(t.get("Value", ""), str) for t in tags):
                raise validation("Each tag needs a non-empty string Key and a string Value.",
                                 "INVALID_TAG")
            if len(tags) > MAX_TAGS:
                raise validation(f"{len(tags)} tags: a snapshot takes at most {MAX_TAGS}.",
                                 "INVALID_TAG")
            for t in tags:
                if len(t["Key"]) > MAX_TAG_KEY or len(t.get("Value", "")) > MAX_TAG_VALUE:
                    raise validation(f"A tag Key takes at most {MAX_TAG_KEY} characters and a "
                                     f"Value at most {MAX_TAG_VALUE}.", "INVALID_TAG")
        token = req.get("ClientToken")
        if token is not None and (not isinstance(token, str) or len(token) > MAX_CLIENT_TOKEN
                                  or not CLIENT_TOKEN_RE.fullmatch(token)):
            raise validation(f"ClientToken must be 1 to {MAX_CLIENT_TOKEN} characters without "
                             "white space.")
        fingerprint = json.dumps({k: v for k, v in req.items() if k != "ClientToken"},
                                 sort_keys=True)
        with self._lock:
            if token is not None:
                prior = self._tokens.get(token)
                if prior is not None:
                    if prior.fingerprint != fingerprint:
                        raise ApiError(409, "ConflictException",
                                       "The ClientToken was used before with other parameters.")
                    return Response(201, dict(prior.started))
            parent = None
            if parent_id:
                parent = self._completed(parent_id, "ParentSnapshotId")
                if size < parent.volume_size:
                    raise validation(f"VolumeSize {size} is smaller than the parent's "
                                     f"{parent.volume_size} GiB.", "INVALID_VOLUME_SIZE")
            pending = sum(1 for s in self.snapshots.values()
                          if (self._expire(s), s.status)[1] == "pending")
            if pending >= self.max_pending:
                raise ApiError(400, "ConcurrentLimitExceededException",
                               f"You have reached the limit of {self.max_pending} pending "
                               "snapshots.")
            while True:
                sid = "snap-" + secrets.token_hex(8) + "0"
                if sid not in self.snapshots:
                    break
            start = round(self.clock(), 3)
            snap = Snapshot(
                id=sid, lineage=parent.lineage if parent else sid, volume_size=size,
                start_time=start, timeout_s=timeout_min * 60, last_write=start,
                parent_id=parent_id or None, description=description, tags=tags or None,
                encrypted=bool(encrypted) or bool(parent and parent.encrypted),
                kms_key_arn=kms or (parent.kms_key_arn if parent else None),
                client_token=token, fingerprint=fingerprint,
                blocks=dict(parent.blocks) if parent else {},
            )
            snap.started = snap.describe()
            self.snapshots[sid] = snap
            if token is not None:
                self._tokens[token] = snap
        return Response(201, dict(snap.started))

    def put_snapshot_block(self, snapshot_id: str, index_s: str, headers: dict,
                           body: bytes) -> Response:
        snap = self._get(snapshot_id)
        index = _int_param(index_s, "blockIndex")
        length = headers.get("x-amz-data-length")
        checksum = headers.get("x-amz-checksum")
        algorithm = headers.get("x-amz-checksum-algorithm")
        if length is None or checksum is None or algorithm is None:
            raise validation("x-amz-Data-Length, x-amz-Checksum and x-amz-Checksum-Algorithm "
                             "are required.")
        length_n = _int_param(length, "x-amz-Data-Length")
        _int_param(headers.get("x-amz-progress"), "x-amz-Progress", maximum=100)
        if algorithm != "SHA256":
            raise validation(f"Unsupported checksum algorithm {algorithm!r}; only SHA256.")
        if length_n != BLOCK_SIZE:
            raise validation(f"x-amz-Data-Length must be {BLOCK_SIZE}, not {length_n}.")
        if len(body) != length_n:
            raise validation(f"The body has {len(body)} bytes but x-amz-Data-Length says "
                             f"{length_n}.")
        if snap.status != "pending":
            raise self._not_pending(snap)
        if index >= snap.max_blocks:
            raise validation(f"Block index {index} is beyond the volume size "
                             f"({snap.max_blocks} blocks).", "INVALID_BLOCK")
        digest = sha256(body)
        try:
            claimed = base64.b64decode(checksum, validate=True)
        except (binascii.Error, ValueError):
            claimed = b""
        if not hmac.compare_digest(claimed, digest):
            raise validation("The checksum does not match the block data.", "INVALID_BLOCK")
        block = self.store.put(body, digest)
        # Hashed and stored outside the lock; whether the snapshot still takes it is decided
        # under it, so a CompleteSnapshot sees the block in its count or the put is refused.
        with snap.lock:
            self._expire_locked(snap)
            taken = snap.status == "pending"
            if taken:
                old = snap.written.get(index)
                snap.blocks[index] = block
                snap.written[index] = block
                snap.last_write = self.clock()
        if not taken:
            self.store.release(block)
            raise self._not_pending(snap)
        if old is not None:
            self.store.release(old)
        return Response(201, {}, headers={"x-amz-Checksum": block.checksum,
                                          "x-amz-Checksum-Algorithm": "SHA256"})

    def complete_snapshot(self, snapshot_id: str, headers: dict) -> Response:
        snap = self._get(snapshot_id)
        count = headers.get("x-amz-changedblockscount")
        if count is None:
            raise validation("x-amz-ChangedBlocksCount is required.")
        count_n = _int_param(count, "x-amz-ChangedBlocksCount")
        checksum = headers.get("x-amz-checksum")
        algorithm = headers.get("x-amz-checksum-algorithm")
        method = headers.get("x-amz-checksum-aggregation-method")
        if checksum is not None:
            if algorithm not in (None, "SHA256"):
                raise validation(f"Unsupported checksum algorithm {algorithm!r}; only SHA256.")
            if method not in (None, "LINEAR"):
                raise validation(f"Unsupported aggregation method {method!r}; only LINEAR.")
        with snap.lock:
            self._expire_locked(snap)
            if snap.status == "completed":
                return Response(202, {"Status": "completed"})
            if snap.status != "pending":
                raise self._not_pending(snap)
            ok = count_n == len(snap.written)
            if ok and checksum is not None:
                expected = linear_checksum([snap.written[i].digest for i in sorted(snap.written)])
                ok = hmac.compare_digest(expected, checksum)
            snap.status = "completed" if ok else "error"
            if not ok:
                snap.error_reason = "INVALID_SNAPSHOT_ID"
        if ok and self.on_completed is not None:
            self.on_completed(snap)
        return Response(202, {"Status": snap.status})

    def _page_size(self, query: dict) -> int:
        return _int_param(query.get("maxResults"), "maxResults", minimum=100, maximum=10000,
                          default=DEFAULT_MAX_RESULTS)

    def _start_index(self, query: dict, key: str) -> int:
        token = query.get("pageToken")
        if token is not None:  # an empty one too: PageToken is ^[A-Za-z0-9+/=]+$
            return self._check_page_token(token, key)
        return _int_param(query.get("startingBlockIndex"), "startingBlockIndex", default=0)

    def list_snapshot_blocks(self, snapshot_id: str, query: dict) -> Response:
        snap = self._completed(snapshot_id)
        limit = self._page_size(query)
        start = self._start_index(query, "L" + snap.id)
        indexes = sorted(i for i in snap.blocks if i >= start)
        page, rest = indexes[:limit], indexes[limit:]
        expiry = int(self.clock()) + self.block_token_ttl_s
        out = {
            "Blocks": [{"BlockIndex": i, "BlockToken": self.block_token(snap, i, expiry)}
                       for i in page],
            "ExpiryTime": expiry,
            "VolumeSize": snap.volume_size,
            "BlockSize": BLOCK_SIZE,
        }
        if rest:
            out["NextToken"] = self._page_token("L" + snap.id, rest[0])
        return Response(200, out)

    def list_changed_blocks(self, second_id: str, query: dict) -> Response:
        first_id = query.get("firstSnapshotId")
        if not first_id:
            raise validation("firstSnapshotId is required together with the second snapshot.",
                             "INVALID_SNAPSHOT_ID")
        second = self._completed(second_id)
        first = self._completed(first_id, "firstSnapshotId")
        if first.lineage != second.lineage:
            raise validation("The two snapshots are not of the same lineage.",
                             "UNRELATED_SNAPSHOTS")
        limit = self._page_size(query)
        key = f"C{first.id}/{second.id}"
        start = self._start_index(query, key)
        fb, sb = first.blocks, second.blocks
        changed = sorted(i for i in set(fb) | set(sb)
                         if i >= start and (fb.get(i) is None or sb.get(i) is None
                                            or fb[i].gen != sb[i].gen))
        page, rest = changed[:limit], changed[limit:]
        expiry = int(self.clock()) + self.block_token_ttl_s
        entries = []
        for i in page:
            entry = {"BlockIndex": i}
            if i in fb:
                entry["FirstBlockToken"] = self.block_token(first, i, expiry)
            if i in sb:
                entry["SecondBlockToken"] = self.block_token(second, i, expiry)
            entries.append(entry)
        out = {"ChangedBlocks": entries, "ExpiryTime": expiry,
               "VolumeSize": second.volume_size, "BlockSize": BLOCK_SIZE}
        if rest:
            out["NextToken"] = self._page_token(key, rest[0])
        return Response(200, out)

    def block_for_get(self, snapshot_id: str, index_s: str, token: str | None) -> Block:
        """The block a GetSnapshotBlock asks for, after every check the operation makes; the
        server's hot path sends it without building a Response."""
        snap = self.snapshots.get(snapshot_id)
        if snap is None or snap.status != "completed":  # else _completed would return snap
            snap = self._completed(snapshot_id)
        index = _int_param(index_s, "blockIndex")
        if not token:
            raise validation("blockToken is required.", "INVALID_BLOCK_TOKEN")
        self._check_block_token(token, snap, index)
        block = snap.blocks.get(index)
        if block is None:  # a valid token always names a stored block; guard anyway
            raise validation(f"Block {index} is not in the snapshot.", "INVALID_BLOCK")
        return block

    def get_snapshot_block(self, snapshot_id: str, index_s: str, query: dict) -> Response:
        block = self.block_for_get(snapshot_id, index_s, query.get("blockToken"))
        return Response(200, None, headers={"x-amz-Data-Length": str(BLOCK_SIZE),
                                            "x-amz-Checksum": block.checksum,
                                            "x-amz-Checksum-Algorithm": "SHA256"},
                        block=block)
