"""Client CPU per 512 KiB GetSnapshotBlock: the native exchange, its twin, and urllib3.

The local EBS server runs in its own process (``python -m ebsfast.testing``, signatures off) so
only the client's CPU is counted (``time.process_time`` of this process). Every case reads the
same 64 blocks over one kept-alive connection; the native and twin exchanges write each block
into a preallocated numpy array, urllib3 returns ``pool.request(...).data`` (the peer). Rounds are
round-robin and the best round counts: these machines are shared and noisy.

    python benchmarks/bench_exchange.py [--repeat 7]
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import quote, urlsplit

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ebsfast import _backend

BLOCK = 524288
N_BLOCKS = 64
PEER = "urllib3 pool.request(...).data"


def _start_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "ebsfast.testing", "--port", "0",
                             "--no-verify-signatures"], stdout=subprocess.PIPE, text=True)
    while True:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError("the server exited before printing its endpoint")
        if line.startswith("endpoint_url="):
            return proc, line.strip().partition("=")[2]


def _b64sha(data) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _upload(endpoint: str) -> tuple[str, dict[int, str], dict[int, bytes]]:
    import boto3

    ebs = boto3.client("ebs", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="AKIDBENCH", aws_secret_access_key="bench")
    rng = np.random.default_rng(0)
    blocks = {i: rng.bytes(BLOCK) for i in range(N_BLOCKS)}
    snap = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    for i, data in blocks.items():
        ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=i, BlockData=data, DataLength=BLOCK,
                               Checksum=_b64sha(data), ChecksumAlgorithm="SHA256")
    cat = b"".join(hashlib.sha256(blocks[i]).digest() for i in sorted(blocks))
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=N_BLOCKS, Checksum=_b64sha(cat),
                          ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    tokens = {b["BlockIndex"]: b["BlockToken"]
              for b in ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]}
    return snap, tokens, blocks


def run(repeat: int = 7) -> list[dict]:
    """Rows of {"name", "value" (µs of client CPU per block), "unit", "peer", "ratio"}; ratio is
    the peer's CPU time over the case's (above 1: cheaper than urllib3)."""
    import urllib3

    native = _backend.load("http")
    twin = __import__("ebsfast._http_py", fromlist=["exchange"])
    proc, endpoint = _start_server()
    try:
        u = urlsplit(endpoint)
        host, port = u.hostname, u.port
        snap, tokens, blocks = _upload(endpoint)
        targets = [f"/snapshots/{snap}/blocks/{i}?blockToken={quote(tokens[i], safe='')}"
                   for i in range(N_BLOCKS)]
        heads = [f"GET {t} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode() for t in targets]
        out = np.empty((N_BLOCKS, BLOCK), np.uint8)

        def exchange_case(mod, hash_body: bool) -> Callable[[], None]:
            sock = socket.create_connection((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def go() -> None:
                for i, head in enumerate(heads):
                    r = mod.exchange(sock, head, out=out[i], hash_body=hash_body)
                    if r.status != 200 or r.body_length != BLOCK:
                        raise RuntimeError(f"unexpected answer {r}")
            return go

        pool = urllib3.HTTPConnectionPool(host, port, maxsize=1)

        def urllib3_case() -> None:
            for t in targets:
                r = pool.request("GET", t)
                if r.status != 200 or len(r.data) != BLOCK:
                    raise RuntimeError(f"unexpected answer {r.status}")

        cases: list[tuple[str, Callable[[], None]]] = [
            (PEER, urllib3_case),
            (f"exchange into numpy, no hash ({native.IMPLEMENTATION})",
             exchange_case(native, False)),
            (f"exchange into numpy + SHA-256 ({native.IMPLEMENTATION})",
             exchange_case(native, True)),
            ("exchange into numpy, no hash (python twin)", exchange_case(twin, False)),
            ("exchange into numpy + SHA-256 (python twin)", exchange_case(twin, True)),
        ]
        best = {name: float("inf") for name, _ in cases}
        wall = {name: float("inf") for name, _ in cases}
        for _ in range(repeat):
            for name, fn in cases:
                c0, w0 = time.process_time(), time.perf_counter()
                fn()
                c1, w1 = time.process_time(), time.perf_counter()
                best[name] = min(best[name], (c1 - c0) / N_BLOCKS * 1e6)
                wall[name] = min(wall[name], (w1 - w0) / N_BLOCKS * 1e6)
        # The result must be right before its speed means anything.
        for i in (0, N_BLOCKS - 1):
            if bytes(out[i]) != blocks[i]:
                raise RuntimeError(f"block {i} read back wrong")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    base = best[PEER]
    rows = []
    for name, _ in cases:
        rows.append({"name": name, "value": round(best[name], 1), "unit": "µs CPU/block",
                     "peer": None if name == PEER else PEER,
                     "ratio": None if name == PEER else round(base / best[name], 2),
                     "wall_us": round(wall[name], 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7, help="rounds; the best counts (default 7)")
    args = ap.parse_args(argv)
    print(f"{N_BLOCKS} x 512 KiB GetSnapshotBlock over one keep-alive connection, best of "
          f"{args.repeat}; {os.cpu_count()} CPUs; SHA-256 path "
          f"{_backend.load('sha256').get_path()}")
    rows = run(args.repeat)
    width = max(len(r["name"]) for r in rows)
    print(f"{'case':<{width}}  {'µs CPU/block':>12}  {'µs wall/block':>13}  {'vs urllib3':>10}")
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.1f}x"
        print(f"{r['name']:<{width}}  {r['value']:>12.1f}  {r['wall_us']:>13.1f}  {ratio:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
