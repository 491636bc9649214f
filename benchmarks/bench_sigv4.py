"""Microseconds per SigV4 signature of a GetSnapshotBlock-shaped request.

GET /snapshots/snap-0123456789abcdef0/blocks/12345?blockToken=<150-char token, encoded>
with Host and User-Agent (excluded from signing) headers, X-Amz-Date added by the signer.

Rows: ebsfast's hot path (``Signer.authorization``), ebsfast's general ``Signer.sign``, the
pure-Python twin, botocore ``SigV4Auth.add_auth`` (the peer: every ratio is botocore's time
over the row's time) and awscrt ``aws_sign_request`` when awscrt is importable.

    python benchmarks/bench_sigv4.py            # prints a table
    from benchmarks.bench_sigv4 import run      # -> list of row dicts
"""
from __future__ import annotations

import datetime
import importlib
import os
import sys
import timeit
from urllib.parse import quote

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
REGION, SERVICE = "us-east-1", "ebs"
HOST = f"ebs.{REGION}.amazonaws.com"
PATH = "/snapshots/snap-0123456789abcdef0/blocks/12345"
BLOCK_TOKEN = ("AAUBAX" + "Zm9vYmFyYmF6cXV4" * 9)[:146] + "+/=="
QUERY = f"blockToken={quote(BLOCK_TOKEN, safe='-_.~')}"
USER_AGENT = "ebsfast/0.1 Python/3.11"
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
PEER = "botocore SigV4Auth.add_auth"


def _time_us(fn, number: int, repeat: int = 7) -> float:
    """Best of `repeat` runs: the least disturbed estimate of the per-call cost."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def _time_call_us(fn, args: tuple, number: int, repeat: int = 7) -> float:
    """Like _time_us for ``fn(*args)``, timed as a statement so that no wrapper function's
    call is counted: at about 1 µs a lambda around the call is 5% of the number."""
    names = {f"a{i}": a for i, a in enumerate(args)}
    stmt = f"fn({', '.join(names)})"
    return min(timeit.repeat(stmt, globals={"fn": fn, **names}, number=number,
                             repeat=repeat)) / number * 1e6


def _ebsfast_rows(module_name: str, label: str, number: int) -> list[tuple[str, float]]:
    mod = importlib.import_module(module_name)
    signer = mod.Signer(ACCESS_KEY, SECRET_KEY, REGION, SERVICE)
    amz_date = mod.amz_date()
    block, names = mod.canonical_headers([("host", HOST)])
    headers = {"Host": HOST, "User-Agent": USER_AGENT}
    authz = signer.authorization
    sign = signer.sign
    prepared = signer.prepare("GET", block, names, EMPTY).authorization
    rows = [
        (f"{label} PreparedRequest.authorization (client hot path)",
         _time_call_us(prepared, (PATH, QUERY, amz_date), number)),
        (f"{label} Signer.authorization (hot path)",
         _time_call_us(authz, ("GET", PATH, QUERY, block, names, EMPTY, amz_date), number)),
        (f"{label} Signer.sign",
         _time_call_us(sign, ("GET", PATH, QUERY, headers, EMPTY, amz_date), number // 4)),
    ]
    return rows


def _botocore_us(number: int) -> float:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    auth = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), SERVICE, REGION)
    url = f"https://{HOST}{PATH}?{QUERY}"
    # Built beforehand: only add_auth is timed (it mutates the request, so one each).
    requests = [AWSRequest(method="GET", url=url, headers={"User-Agent": USER_AGENT})
                for _ in range(number)]
    it = iter(requests)
    t = timeit.timeit(lambda: auth.add_auth(next(it)), number=number)
    return t / number * 1e6


def _awscrt_us(number: int) -> float | None:
    try:
        from awscrt import auth as crt_auth
        from awscrt.http import HttpHeaders, HttpRequest
    except ImportError:
        return None
    config = crt_auth.AwsSigningConfig(
        algorithm=crt_auth.AwsSigningAlgorithm.V4,
        signature_type=crt_auth.AwsSignatureType.HTTP_REQUEST_HEADERS,
        credentials_provider=crt_auth.AwsCredentialsProvider.new_static(ACCESS_KEY,
                                                                        SECRET_KEY),
        region=REGION, service=SERVICE,
        date=datetime.datetime.now(datetime.timezone.utc),
        should_sign_header=lambda name: name.lower() != "user-agent",
    )

    def one():
        req = HttpRequest("GET", f"{PATH}?{QUERY}",
                          HttpHeaders([("Host", HOST), ("User-Agent", USER_AGENT)]))
        crt_auth.aws_sign_request(req, config).result()

    return _time_us(one, number, repeat=3)


def run(number: int = 20000) -> list[dict]:
    """Time every signer; rows are {"name", "value", "unit", "peer", "ratio"}."""
    timings: list[tuple[str, float | None, str]] = []
    try:
        importlib.import_module("ebsfast._sigv4")
        native = _ebsfast_rows("ebsfast._sigv4", "ebsfast native", number)
        timings += [(n, v, "") for n, v in native]
    except ImportError as exc:
        timings.append(("ebsfast native", None, f"not built: {exc}"))
    timings += [(n, v, "") for n, v in _ebsfast_rows("ebsfast._sigv4_py", "ebsfast twin",
                                                      number // 10)]
    boto = _botocore_us(max(number // 20, 200))
    timings.append((PEER, boto, "fresh AWSRequest per call; add_auth only is timed"))
    crt = _awscrt_us(max(number // 10, 200))
    timings.append(("awscrt aws_sign_request",
                    crt, "" if crt is not None else "awscrt not installed: row skipped"))
    rows = []
    for name, value, note in timings:
        row = {"name": name, "value": value, "unit": "us/signature", "peer": PEER,
               "ratio": (boto / value) if value else None}
        if note:
            row["note"] = note
        rows.append(row)
    return rows


def main() -> None:
    rows = run()
    print(f"{'signer':<48} {'us/signature':>13} {'x faster than botocore':>23}")
    for r in rows:
        value = f"{r['value']:.3f}" if r["value"] is not None else "-"
        ratio = f"{r['ratio']:.1f}" if r["ratio"] is not None else "-"
        note = f"  ({r['note']})" if r.get("note") else ""
        print(f"{r['name']:<48} {value:>13} {ratio:>23}{note}")


if __name__ == "__main__":
    main()
