"""One command, one table: every ebsfast benchmark beside its peer, measured in the same run.

    python benchmarks/run.py            # Markdown table (what README shows)
    python benchmarks/run.py --json     # rows as JSON

Wall-clock best-of-N on a shared, noisy machine: read ratios, not absolute numbers, and rerun
before believing a small difference. Nothing here is asserted by the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_client  # noqa: E402
import bench_exchange  # noqa: E402
import bench_pages  # noqa: E402
import bench_server  # noqa: E402
import bench_sha256  # noqa: E402
import bench_sigv4  # noqa: E402
import bench_snapshots  # noqa: E402

# group name -> rows; each group runs its peer in the same run
GROUPS = {
    "sha256": lambda: bench_sha256.run(),
    "sigv4": lambda: bench_sigv4.run(),
    "server": lambda: bench_server.run(),
    "exchange": lambda: bench_exchange.run(),
    "pages": lambda: bench_pages.run(),
    "client": lambda: bench_client.run(tls=False),
    "client-https": lambda: bench_client.run(tls=True),
    "snapshots": lambda: bench_snapshots.run(),
}


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", choices=sorted(GROUPS), action="append",
                    help="run only this group (repeatable)")
    args = ap.parse_args(argv)

    import ebsfast

    rows = []
    for name, fn in GROUPS.items():
        if args.only is None or name in args.only:
            rows += [dict(r, group=name) for r in fn()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cfg = ebsfast.show_config()
    print(f"ebsfast {cfg['version']}, SHA-256 path {cfg['sha256_path']}, "
          f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"Python {cfg['python']}\n")
    print("| benchmark | value | unit | peer | ratio |")
    print("|---|---:|---|---|---:|")
    for r in rows:
        ratio = r.get("ratio")
        print(f"| {r['name']} | {_fmt(r['value'])} | {r['unit']} | {r.get('peer') or ''} | "
              f"{'' if ratio is None else f'{ratio:.2f}x'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
