"""Helpers shared by the block-reading tests: a block's bytes from a seed, and an ebsfast client
for an ``ebsfast.testing`` server."""
from __future__ import annotations

import hashlib
import socket

import ebsfast
from ebsfast.testing import BLOCK_SIZE


def block(seed: int) -> bytes:
    """A block of 524288 bytes, different for each seed."""
    unit = hashlib.sha256(seed.to_bytes(8, "little")).digest()
    return unit * (BLOCK_SIZE // 32)


def client_for(server, **cfg):
    """An ebsfast client for ``server`` with its credentials; ``cfg`` as ``ebsfast.Config``."""
    return ebsfast.client("ebs", endpoint_url=server.endpoint_url, region_name=server.region,
                          aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key,
                          verify=server.ca_file if server.tls else None,
                          config=ebsfast.Config(**cfg) if cfg else None)


def one_block_snapshot(c, data: bytes, index: int = 0) -> tuple[str, str]:
    """A completed snapshot holding ``data`` at ``index``: its id and the block's token."""
    snap = c.start_snapshot(VolumeSize=1)["SnapshotId"]
    c.put_snapshot_block(SnapshotId=snap, BlockIndex=index, BlockData=data)
    c.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=1)
    return snap, c.list_snapshot_blocks(SnapshotId=snap)["Blocks"][0]["BlockToken"]


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections to it are refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port
