"""How fast the local EBS server (ebsfast.testing) answers GetSnapshotBlock.

The server runs in its own process (``python -m ebsfast.testing``) so its CPU is measured alone,
from /proc: server CPU per GetSnapshotBlock and blocks/s with 1 and 8 keep-alive connections,
each driven by a minimal raw-socket client reading into a preallocated buffer. Every request is
signed (SigV4 Authorization headers), so the signature check is inside the number.

    python benchmarks/bench_server.py
"""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

try:
    import ebsfast
except ModuleNotFoundError:  # run from a checkout that is not installed: use the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import ebsfast

BLOCK = 524288
N_BLOCKS = 64


def _proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_server():
    # The server imports the ebsfast this script imported, wherever it is run from (`-m`
    # puts the working directory first on the server's path).
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(ebsfast.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen([sys.executable, "-m", "ebsfast.testing", "--port", "0"],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=root)
    info = {}
    while "aws_secret_access_key" not in info:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the server exited before printing its endpoint")
        k, _, v = line.strip().partition("=")
        info[k] = v
    return proc, info


def _prepare(info) -> list[str]:
    import base64

    import boto3

    ebs = boto3.client("ebs", endpoint_url=info["endpoint_url"], region_name=info["region"],
                       aws_access_key_id=info["aws_access_key_id"],
                       aws_secret_access_key=info["aws_secret_access_key"])
    snap = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    for i in range(N_BLOCKS):
        data = hashlib.sha256(i.to_bytes(4, "little")).digest() * (BLOCK // 32)
        ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=i, BlockData=data, DataLength=BLOCK,
                               Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(),
                               ChecksumAlgorithm="SHA256")
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=N_BLOCKS)
    blocks = ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]
    # Requests signed once, up front, the way every SDK signs (Authorization header): the
    # server checks each signature, and the client's signing cost stays out of the numbers.
    from ebsfast.signing import Signer, amz_date, uri_encode

    host = urlsplit(info["endpoint_url"]).netloc
    signer = Signer(info["aws_access_key_id"], info["aws_secret_access_key"], info["region"],
                    "ebs")
    date = amz_date()
    targets = []
    for b in blocks:
        path = f"/snapshots/{snap}/blocks/{b['BlockIndex']}"
        query = f"blockToken={uri_encode(b['BlockToken'])}"
        signed = signer.sign("GET", path, query, [("host", host)], None, date)
        head = "".join(f"{k}: {v}\r\n" for k, v in signed.items())
        targets.append((f"{path}?{query}", head))
    return targets


def _client(host, port, targets, count, errors):
    buf = bytearray(BLOCK + 65536)
    view = memoryview(buf)
    with socket.create_connection((host, port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for n in range(count):
            target, signed = targets[n % len(targets)]
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n{signed}\r\n"
                      .encode())
            got = 0
            while True:
                got += s.recv_into(view[got:])
                end = buf.find(b"\r\n\r\n", 0, got)
                if end >= 0:
                    break
            head = bytes(buf[:end]).decode("latin-1")
            if not head.startswith("HTTP/1.1 200"):
                errors.append(head.split("\r\n")[0])
                return
            length = int(head.lower().split("content-length: ")[1].split("\r\n")[0])
            want = end + 4 + length
            while got < want:
                got += s.recv_into(view[got:want])


def measure(proc, info, targets, connections: int, total: int) -> dict:
    host, port = urlsplit(info["endpoint_url"]).hostname, urlsplit(info["endpoint_url"]).port
    per = total // connections
    errors: list = []
    threads = [threading.Thread(target=_client, args=(host, port, targets, per, errors))
               for _ in range(connections)]
    cpu0, t0 = _proc_cpu_s(proc.pid), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, _proc_cpu_s(proc.pid) - cpu0
    if errors:
        raise RuntimeError(f"server answered {errors[0]}")
    n = per * connections
    return {"connections": connections, "blocks_per_s": n / wall,
            "server_cpu_us_per_block": cpu / n * 1e6}


def run() -> list[dict]:
    proc, info = _start_server()
    try:
        targets = _prepare(info)
        measure(proc, info, targets, 1, 100)  # warm up
        rows = []
        for conns, total in ((1, 1500), (8, 3000)):
            best = max((measure(proc, info, targets, conns, total) for _ in range(3)),
                       key=lambda r: r["blocks_per_s"])
            rows.append({"name": f"server GetSnapshotBlock, {conns} connection(s)",
                         "value": best["blocks_per_s"], "unit": "blocks/s", "peer": None,
                         "ratio": None})
            rows.append({"name": f"server CPU per GetSnapshotBlock, {conns} connection(s)",
                         "value": best["server_cpu_us_per_block"], "unit": "µs", "peer": None,
                         "ratio": None})
        return rows
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    for row in run():
        print(f"{row['name']:<50} {row['value']:>10.1f} {row['unit']}")
