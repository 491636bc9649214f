"""Whole-snapshot jobs: ebsfast.snapshots beside a boto3 thread pool doing the same, same run.

The local server (``python -m ebsfast.testing``) runs in its own process with signature checks
off, so ``time.process_time`` of this process is the client's CPU alone. An image of random
data (no zero blocks, so every block moves) is uploaded and downloaded:

- ebsfast ``snapshots.upload`` / ``snapshots.download`` (16 workers, verified, sparse,
  journaled, manifest, fsync);
- the boto3 equivalent many scripts use: 16 threads, ``put_snapshot_block`` with a hashlib
  checksum per block / ``get_snapshot_block`` + ``read()`` + ``os.pwrite`` into a file
  (no verification, no journal, no fsync).

Rows: blocks/s and client CPU per block for each, and the ratios.

    python benchmarks/bench_snapshots.py [--mib 192] [--workers 16]
"""
from __future__ import annotations

import argparse
import base64
import concurrent.futures
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

BLOCK = 524288


def start_server():
    args = [sys.executable, "-m", "ebsfast.testing", "--port", "0", "--no-verify-signatures"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    info = {}
    while "aws_secret_access_key" not in info:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the server exited before printing its endpoint")
        k, _, v = line.strip().partition("=")
        info[k] = v
    return proc, info


def _kw(info):
    return dict(endpoint_url=info["endpoint_url"], region_name=info["region"],
                aws_access_key_id=info["aws_access_key_id"],
                aws_secret_access_key=info["aws_secret_access_key"])


def _timed(fn):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def boto3_upload(ebs, path: str, workers: int) -> str:
    size = os.path.getsize(path)
    n = -(-size // BLOCK)
    snap = ebs.start_snapshot(VolumeSize=max(1, -(-size // (1 << 30))))["SnapshotId"]
    digests = [b""] * n
    fd = os.open(path, os.O_RDONLY)

    def put(i):
        data = os.pread(fd, BLOCK, i * BLOCK).ljust(BLOCK, b"\0")
        d = hashlib.sha256(data).digest()
        digests[i] = d
        ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=i, BlockData=data,
                               DataLength=BLOCK, Checksum=base64.b64encode(d).decode(),
                               ChecksumAlgorithm="SHA256")

    try:
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            list(ex.map(put, range(n)))
    finally:
        os.close(fd)
    linear = base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=n, Checksum=linear,
                          ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
    return snap


def boto3_download(ebs, snap: str, dest: str, workers: int) -> int:
    blocks, token = [], None
    while True:
        kw = {"SnapshotId": snap, "MaxResults": 10000}
        if token:
            kw["NextToken"] = token
        page = ebs.list_snapshot_blocks(**kw)
        blocks += page["Blocks"]
        volume = page["VolumeSize"]
        token = page.get("NextToken")
        if not token:
            break
    fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.ftruncate(fd, volume << 30)

    def get(b):
        r = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=b["BlockIndex"],
                                   BlockToken=b["BlockToken"])
        os.pwrite(fd, r["BlockData"].read(), b["BlockIndex"] * BLOCK)

    try:
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            list(ex.map(get, blocks))
    finally:
        os.close(fd)
    return len(blocks)


def run(mib: int = 192, workers: int = 16, repeat: int = 2) -> list[dict]:
    import boto3
    import botocore.config

    import ebsfast
    from ebsfast import snapshots

    proc, info = start_server()
    tmp = tempfile.mkdtemp(prefix="ebsfast-bench-")
    try:
        n = mib * (1 << 20) // BLOCK
        src = os.path.join(tmp, "src.img")
        np.random.default_rng(1).integers(0, 256, n * BLOCK, dtype=np.uint8).tofile(src)
        ours = ebsfast.client("ebs", config=snapshots.client_config(workers), **_kw(info))
        theirs = boto3.client("ebs", config=botocore.config.Config(
            max_pool_connections=workers + 4, retries={"mode": "standard"}), **_kw(info))
        best = {}

        def keep(name, seconds, cpu):
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, cpu)

        snap = None
        for _ in range(repeat):
            r, s, c = _timed(lambda: snapshots.upload(ours, src, workers=workers,
                                                      write_manifest=False))
            keep("ebsfast upload", s, c)
            snap = r.snapshot_id
            _, s, c = _timed(lambda: boto3_upload(theirs, src, workers))
            keep("boto3 upload", s, c)
            dest = os.path.join(tmp, "ours.img")
            _, s, c = _timed(lambda snap=snap, dest=dest: snapshots.download(
                ours, snap, dest, workers=workers))
            keep("ebsfast download", s, c)
            for p in (dest, dest + ".manifest.json"):
                os.unlink(p)
            dest2 = os.path.join(tmp, "theirs.img")
            _, s, c = _timed(lambda snap=snap, dest2=dest2: boto3_download(theirs, snap, dest2,
                                                                        workers))
            keep("boto3 download", s, c)
            os.unlink(dest2)
        rows = []
        for job in ("download", "upload"):
            so, co = best[f"ebsfast {job}"]
            sb, cb = best[f"boto3 {job}"]
            peer = f"boto3, {workers} threads"
            rows.append({"name": f"snapshot {job}, {mib} MiB, {workers} workers",
                         "value": round(n / so, 1), "unit": "blocks/s",
                         "peer": f"{peer}: {n / sb:,.0f} blocks/s", "ratio": sb / so})
            rows.append({"name": f"snapshot {job}, client CPU per block",
                         "value": round(co / n * 1e6, 1), "unit": "µs",
                         "peer": f"{peer}: {cb / n * 1e6:,.0f} µs", "ratio": cb / co})
        return rows
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=192)
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)
    for r in run(args.mib, args.workers, args.repeat):
        print(f"{r['name']:45s} {r['value']:>10,.1f} {r['unit']:9s} {r['peer']:36s} "
              f"{r['ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
