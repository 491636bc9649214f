"""The EBS direct API service model (API version 2019-11-02), as facts ebsfast serializes from.

Written out by hand from the model botocore ships (``data/ebs/2019-11-02/service-2.json``) so
ebsfast needs no botocore at run time; ``tests/test_model.py`` compares every fact here with
botocore's model, so the two cannot drift apart unnoticed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

API_VERSION = "2019-11-02"
SERVICE_NAME = "ebs"
SIGNING_NAME = "ebs"
SERVICE_ID = "EBS"
ENDPOINT_PREFIX = "ebs"

BLOCK_SIZE = 524288  # bytes in every EBS snapshot block

SNAPSHOT_ID = {"type": "string", "min": 1, "max": 64, "pattern": r"^snap-[0-9a-f]+$"}
TOKEN = {"type": "string", "max": 256, "pattern": r"^[A-Za-z0-9+/=]+$"}
CHECKSUM = {"type": "string", "max": 64, "pattern": r"^[A-Za-z0-9+/=]+$"}
ALGORITHM = {"type": "string", "max": 32, "pattern": r"^[A-Za-z0-9]+$", "enum": ["SHA256"]}
INDEX = {"type": "integer", "min": 0}


@dataclass(frozen=True)
class Member:
    name: str
    shape: dict
    location: str | None = None  # "uri" | "querystring" | "header" | None (JSON body / payload)
    location_name: str | None = None
    idempotency_token: bool = False


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    uri: str
    status: int
    input: tuple
    required: tuple
    payload: str | None = None  # the streaming blob member sent as the raw body
    unsigned_body: bool = False  # authtype v4-unsigned-body
    output_headers: dict = field(default_factory=dict)  # member -> (header, type)
    output_body: tuple = ()  # JSON members of the response
    errors: tuple = ()

    @property
    def members(self) -> dict:
        return {m.name: m for m in self.input}

    @property
    def python_name(self) -> str:
        out = []
        for i, c in enumerate(self.name):
            if c.isupper() and i:
                out.append("_")
            out.append(c.lower())
        return "".join(out)


COMMON_ERRORS = ("AccessDeniedException", "ValidationException", "ResourceNotFoundException",
                 "RequestThrottledException", "ServiceQuotaExceededException",
                 "InternalServerException")

OPERATIONS = {op.name: op for op in [
    Operation(
        "CompleteSnapshot", "POST", "/snapshots/completion/{snapshotId}", 202,
        input=(
            Member("SnapshotId", SNAPSHOT_ID, "uri", "snapshotId"),
            Member("ChangedBlocksCount", {"type": "integer", "min": 0}, "header",
                   "x-amz-ChangedBlocksCount"),
            Member("Checksum", CHECKSUM, "header", "x-amz-Checksum"),
            Member("ChecksumAlgorithm", ALGORITHM, "header", "x-amz-Checksum-Algorithm"),
            Member("ChecksumAggregationMethod",
                   {"type": "string", "max": 32, "pattern": r"^[A-Za-z0-9]+$",
                    "enum": ["LINEAR"]}, "header", "x-amz-Checksum-Aggregation-Method"),
        ),
        required=("SnapshotId", "ChangedBlocksCount"),
        output_body=("Status",),
        errors=COMMON_ERRORS,
    ),
    Operation(
        "GetSnapshotBlock", "GET", "/snapshots/{snapshotId}/blocks/{blockIndex}", 200,
        input=(
            Member("SnapshotId", SNAPSHOT_ID, "uri", "snapshotId"),
            Member("BlockIndex", INDEX, "uri", "blockIndex"),
            Member("BlockToken", TOKEN, "querystring", "blockToken"),
        ),
        required=("SnapshotId", "BlockIndex", "BlockToken"),
        output_headers={"DataLength": ("x-amz-Data-Length", "integer"),
                        "Checksum": ("x-amz-Checksum", "string"),
                        "ChecksumAlgorithm": ("x-amz-Checksum-Algorithm", "string")},
        errors=COMMON_ERRORS,
    ),
    Operation(
        "ListChangedBlocks", "GET", "/snapshots/{secondSnapshotId}/changedblocks", 200,
        input=(
            Member("FirstSnapshotId", SNAPSHOT_ID, "querystring", "firstSnapshotId"),
            Member("SecondSnapshotId", SNAPSHOT_ID, "uri", "secondSnapshotId"),
            Member("NextToken", TOKEN, "querystring", "pageToken"),
            Member("MaxResults", {"type": "integer", "min": 100, "max": 10000}, "querystring",
                   "maxResults"),
            Member("StartingBlockIndex", INDEX, "querystring", "startingBlockIndex"),
        ),
        required=("SecondSnapshotId",),
        output_body=("ChangedBlocks", "ExpiryTime", "VolumeSize", "BlockSize", "NextToken"),
        errors=COMMON_ERRORS,
    ),
    Operation(
        "ListSnapshotBlocks", "GET", "/snapshots/{snapshotId}/blocks", 200,
        input=(
            Member("SnapshotId", SNAPSHOT_ID, "uri", "snapshotId"),
            Member("NextToken", TOKEN, "querystring", "pageToken"),
            Member("MaxResults", {"type": "integer", "min": 100, "max": 10000}, "querystring",
                   "maxResults"),
            Member("StartingBlockIndex", INDEX, "querystring", "startingBlockIndex"),
        ),
        required=("SnapshotId",),
        output_body=("Blocks", "ExpiryTime", "VolumeSize", "BlockSize", "NextToken"),
        errors=COMMON_ERRORS,
    ),
    Operation(
        "PutSnapshotBlock", "PUT", "/snapshots/{snapshotId}/blocks/{blockIndex}", 201,
        input=(
            Member("SnapshotId", SNAPSHOT_ID, "uri", "snapshotId"),
            Member("BlockIndex", INDEX, "uri", "blockIndex"),
            Member("BlockData", {"type": "blob", "streaming": True}),
            Member("DataLength", {"type": "integer"}, "header", "x-amz-Data-Length"),
            Member("Progress", {"type": "integer", "min": 0, "max": 100}, "header",
                   "x-amz-Progress"),
            Member("Checksum", CHECKSUM, "header", "x-amz-Checksum"),
            Member("ChecksumAlgorithm", ALGORITHM, "header", "x-amz-Checksum-Algorithm"),
        ),
        required=("SnapshotId", "BlockIndex", "BlockData", "DataLength", "Checksum",
                  "ChecksumAlgorithm"),
        payload="BlockData",
        unsigned_body=True,
        output_headers={"Checksum": ("x-amz-Checksum", "string"),
                        "ChecksumAlgorithm": ("x-amz-Checksum-Algorithm", "string")},
        errors=COMMON_ERRORS,
    ),
    Operation(
        "StartSnapshot", "POST", "/snapshots", 201,
        input=(
            Member("VolumeSize", {"type": "long", "min": 1}),
            Member("ParentSnapshotId", SNAPSHOT_ID),
            Member("Tags", {"type": "list", "member": {
                "type": "structure", "members": {"Key": {"type": "string", "max": 127,
                                                         "pattern": r"^[\S\s]+$"},
                                                 "Value": {"type": "string", "max": 255,
                                                           "pattern": r"^[\S\s]*$"}}}}),
            Member("Description", {"type": "string", "max": 255, "pattern": r"^[\S\s]+$"}),
            Member("ClientToken", {"type": "string", "max": 255, "pattern": r"^[\S]+$"},
                   idempotency_token=True),
            Member("Encrypted", {"type": "boolean"}),
            Member("KmsKeyArn", {"type": "string", "min": 1, "max": 2048,
                                 "pattern": r"arn:aws[a-z\-]*:kms:.*:[0-9]{12}:key/.*",
                                 "sensitive": True}),
            Member("Timeout", {"type": "integer", "min": 10, "max": 4320}),
        ),
        required=("VolumeSize",),
        output_body=("Description", "SnapshotId", "OwnerId", "Status", "StartTime",
                     "VolumeSize", "BlockSize", "Tags", "ParentSnapshotId", "KmsKeyArn",
                     "SseType"),
        errors=COMMON_ERRORS + ("ConcurrentLimitExceededException", "ConflictException"),
    ),
]}

# Output members that are timestamps (epoch seconds on the wire).
TIMESTAMP_MEMBERS = frozenset({"ExpiryTime", "StartTime"})

# Every modeled error: code -> HTTP status.
ERRORS = {
    "AccessDeniedException": 403,
    "ConcurrentLimitExceededException": 400,
    "ConflictException": 409,
    "InternalServerException": 500,
    "RequestThrottledException": 400,
    "ResourceNotFoundException": 404,
    "ServiceQuotaExceededException": 402,
    "ValidationException": 400,
}

BY_PYTHON_NAME = {op.python_name: op for op in OPERATIONS.values()}
