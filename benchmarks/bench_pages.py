"""CPU time to parse one 10,000-entry ListSnapshotBlocks page, against botocore's parser.

    python benchmarks/bench_pages.py [--entries 10000] [--repeat 15]

The peer is ``botocore.parsers.RestJSONParser.parse`` with the EBS output shape, which is what a
boto3 ``list_snapshot_blocks`` call spends on the body (json.loads plus a walk of the model).
Each case runs once per round, round-robin, and the best round counts; the time is the
thread's CPU time, so other processes on a shared machine do not inflate it (they still
disturb caches: read ratios, not absolute numbers).
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ebsfast import _backend  # noqa: E402


def make_page(entries: int = 10000, seed: int = 0) -> bytes:
    """A ListSnapshotBlocks body as the service writes it: compact JSON, sparse ascending
    indexes, base64 tokens of 80 to 150 characters, a float ExpiryTime and a NextToken."""
    rng = random.Random(seed)
    index = 0
    blocks = []
    for _ in range(entries):
        index += rng.choice((1, 1, 1, 2, 7))
        raw = rng.randbytes(rng.randrange(60, 113))
        blocks.append({"BlockIndex": index, "BlockToken": base64.b64encode(raw).decode()})
    page = {"Blocks": blocks, "ExpiryTime": 1790604800.123, "VolumeSize": 16384,
            "BlockSize": 524288, "NextToken": base64.b64encode(rng.randbytes(96)).decode()}
    return json.dumps(page, separators=(",", ":")).encode()


def _botocore() -> Callable[[bytes], dict] | None:
    try:
        import botocore.session
        from botocore.parsers import RestJSONParser
    except ImportError:
        return None
    model = botocore.session.get_session().get_service_model("ebs")
    shape = model.operation_model("ListSnapshotBlocks").output_shape
    parser = RestJSONParser()
    return lambda body: parser.parse({"status_code": 200, "headers": {}, "body": body}, shape)


def run(entries: int = 10000, repeat: int = 15) -> list[dict]:
    """Rows of {"name", "value" (CPU ms per page), "unit", "peer", "ratio"}; ratio is how many
    times faster than botocore's parser (None when botocore is not installed)."""
    import ebsfast._pages_py as twin

    body = make_page(entries)
    cases: list[tuple[str, Callable[[], object]]] = []
    if not _backend.NO_EXTENSIONS:
        import ebsfast._pages as native

        cases += [("ebsfast parse_page (native)", lambda: native.parse_page(body, "blocks")),
                  ("ebsfast parse_columns (native)",
                   lambda: native.parse_columns(body, "blocks"))]
    cases += [("ebsfast parse_page (Python twin)", lambda: twin.parse_page(body, "blocks")),
              ("ebsfast parse_columns (Python twin)",
               lambda: twin.parse_columns(body, "blocks")),
              ("json.loads alone", lambda: json.loads(body))]
    try:
        import orjson
    except ImportError:
        pass
    else:
        cases.append(("orjson.loads alone", lambda: orjson.loads(body)))
    boto = _botocore()
    peer = "botocore RestJSONParser.parse"
    if boto is not None:
        cases.append((peer, lambda: boto(body)))
        expected = boto(body)
        expected.pop("ResponseMetadata")
        for name, fn in cases:
            if "parse_page" in name:
                got = fn()
                got["ExpiryTime"] = expected["ExpiryTime"]
                assert got == expected, f"{name} disagrees with botocore"

    best = {name: float("inf") for name, _ in cases}
    for _ in range(repeat):
        for name, fn in cases:
            t0 = time.thread_time()
            result = fn()
            del result  # freeing the page is part of its cost, for every case alike
            t1 = time.thread_time()
            best[name] = min(best[name], t1 - t0)

    ref = best.get(peer)
    return [{"name": f"{name}, {entries:,}-entry page ({len(body) / 1e6:.2f} MB)",
             "value": best[name] * 1e3, "unit": "CPU ms/page",
             "peer": peer if ref else None,
             "ratio": ref / best[name] if ref else None} for name, _ in cases]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)
    for row in run(args.entries, args.repeat):
        ratio = f"{row['ratio']:6.1f}x" if row["ratio"] else "       "
        print(f"{row['value']:8.2f} {row['unit']}  {ratio}  {row['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
