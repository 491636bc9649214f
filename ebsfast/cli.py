"""The ``ebsfast`` command line (also ``python -m ebsfast``).

Commands::

    ebsfast ls SNAP [--blocks]                  blocks of a snapshot
    ebsfast diff SNAP1 SNAP2 [--blocks]         blocks added, changed, removed from SNAP1 to SNAP2
    ebsfast download SNAP FILE                  a snapshot into a disk image (and its manifest)
    ebsfast upload FILE [--parent SNAP --manifest M] [--description D] [--tag K=V ...]
                        [--omit-zero-blocks] [--encrypted [--kms-key-arn ARN]]
    ebsfast apply FILE SNAP1 SNAP2              bring FILE, an image of SNAP1, to SNAP2
    ebsfast verify SNAP [FILE]                  check every block's checksum (and FILE's bytes)
    ebsfast info                                version, native modules, SHA-256 path
    ebsfast serve [--port 8333] [--tls] [--data-dir D]   a local EBS server, until Ctrl-C
    ebsfast demo [--size-mib 256]               the whole cycle against a local server

Every command that talks to EBS takes ``--endpoint-url``, ``--region``, ``--profile``,
``--ca-bundle``, ``--workers N``, ``--json`` (only the result, as JSON, on stdout) and
``--quiet`` / ``--no-progress``. Progress goes to stderr, and only when stderr is a terminal.

Exit codes, for scripts:

====  =====================  ===============================================================
code  constant               meaning
====  =====================  ===============================================================
0     EXIT_OK                success
1     EXIT_MISMATCH          ``verify`` found bad blocks; a ``demo`` check failed
2     EXIT_USAGE             bad arguments (argparse), or parameters the service model refuses
3     EXIT_SERVICE           the service answered with an error (ClientError: unknown snapshot,
                             access denied, throttling, rejected credentials, ...)
4     EXIT_CONFIG            credentials, region or profile configuration (NoCredentialsError,
                             NoRegionError, ProfileNotFound, ...)
5     EXIT_NETWORK           the endpoint could not be reached, timed out, or broke off
6     EXIT_IO                a local file could not be read or written (missing, permission,
                             disk full)
70    EXIT_INTERNAL          a bug in ebsfast (set ``EBSFAST_DEBUG_CLI=1`` for the traceback)
130   EXIT_INTERRUPTED       Ctrl-C; workers are stopped and the hint says how to resume
====  =====================  ===============================================================

Errors are one line on stderr saying what failed, plus a hint line saying what to do; a
traceback only with ``EBSFAST_DEBUG_CLI=1``. No secret is ever printed, except by ``serve``,
which prints the credentials it generated for its own throwaway server.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import ssl
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from ._progress import MB, Progress, format_bytes

__all__ = [
    "EXIT_CONFIG", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_IO", "EXIT_MISMATCH",
    "EXIT_NETWORK", "EXIT_OK", "EXIT_SERVICE", "EXIT_USAGE", "build_parser", "describe_error",
    "main",
]

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_USAGE = 2
EXIT_SERVICE = 3
EXIT_CONFIG = 4
EXIT_NETWORK = 5
EXIT_IO = 6
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

NO_AWS_HINT = "To try ebsfast without AWS: `ebsfast demo` or `ebsfast serve`."

# How many bad block indexes a human-readable verify report lists before "and N more".
_SHOW_BAD = 20


class CLIError(Exception):
    """A failure the command itself detected, already phrased for the user."""

    def __init__(self, message: str, hint: str | None = None, code: int = EXIT_USAGE):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code


# -- output ------------------------------------------------------------------------------------
def _emit_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=_json_default))


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if hasattr(o, "isoformat"):
        return o.isoformat()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _note(args: argparse.Namespace, text: str) -> None:
    """Informational text for people: stderr, so stdout stays the result."""
    if not getattr(args, "quiet", False):
        print(text, file=sys.stderr)


def format_ranges(indexes: Any) -> str:
    """``0-99,120,130-140``: block indexes as runs, which is how snapshots tend to look."""
    import numpy as np

    a = np.asarray(indexes, dtype=np.int64)
    if a.size == 0:
        return ""
    breaks = np.flatnonzero(np.diff(a) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks - 1, [a.size - 1]))
    return ",".join(str(a[s]) if s == e else f"{a[s]}-{a[e]}"
                    for s, e in zip(starts, ends, strict=True))


def _progress(args: argparse.Namespace, label: str) -> Progress:
    quiet = getattr(args, "quiet", False) or getattr(args, "no_progress", False)
    return Progress(label, stream=sys.stderr, enabled=False if quiet else None)


def _run_with_progress(args: argparse.Namespace, label: str, fn: Callable[..., Any],
                       *fargs: Any, **fkw: Any) -> Any:
    with _progress(args, label) as progress:
        return fn(*fargs, progress=progress, **fkw)


# -- the client --------------------------------------------------------------------------------
def make_client(args: argparse.Namespace):
    """An ebsfast client from the common flags; boto3's chain fills in what they leave out."""
    import ebsfast

    from . import snapshots

    overrides: dict[str, Any] = {}
    if os.environ.get("AWS_MAX_ATTEMPTS") or os.environ.get("AWS_RETRY_MODE"):
        # The user chose their retries; the snapshot tools' choice would override theirs.
        overrides["retries"] = None
    config = snapshots.client_config(args.workers, **overrides)
    return ebsfast.client("ebs", region_name=args.region, endpoint_url=args.endpoint_url,
                          profile_name=args.profile, verify=args.ca_bundle, config=config)


# -- commands ----------------------------------------------------------------------------------
def _cmd_info(args: argparse.Namespace) -> int:
    from ._info import format_config, show_config

    cfg = show_config()
    print(json.dumps(cfg, indent=2) if args.json else format_config(cfg))
    return EXIT_OK


def _cmd_ls(args: argparse.Namespace) -> int:
    from . import snapshots

    client = make_client(args)
    blocks = _run_with_progress(args, f"ls {args.snapshot}", snapshots.list_blocks, client,
                                args.snapshot, workers=args.workers)
    block_size = int(blocks.block_size or 524288)
    n = len(blocks)
    out = {"snapshot_id": args.snapshot, "blocks": n, "bytes": n * block_size,
           "volume_size_gib": blocks.volume_size, "block_size": block_size}
    if args.blocks:
        out["indexes"] = blocks.indexes.tolist()
    if args.json:
        _emit_json(out)
        return EXIT_OK
    print(f"{args.snapshot}: {n:,} blocks ({format_bytes(n * block_size)}) in a "
          f"{blocks.volume_size} GiB volume, {block_size} bytes per block")
    if args.blocks:
        print(f"indexes: {format_ranges(blocks.indexes)}")
    return EXIT_OK


def _cmd_diff(args: argparse.Namespace) -> int:
    from . import snapshots

    client = make_client(args)
    changed = _run_with_progress(args, f"diff {args.first}..{args.second}", snapshots.diff,
                                 client, args.first, args.second, workers=args.workers)
    kinds = [("added", changed.n_added, changed.bytes_added, lambda: changed.added),
             ("changed", changed.n_changed, changed.bytes_changed, lambda: changed.changed),
             ("removed", changed.n_removed, changed.bytes_removed, lambda: changed.removed)]
    out: dict[str, Any] = {"first_snapshot_id": args.first, "second_snapshot_id": args.second,
                           "blocks": len(changed), "bytes": int(changed.bytes_total)}
    for name, count, nbytes, _ in kinds:
        out[name] = {"blocks": int(count), "bytes": int(nbytes)}
    if args.blocks:
        for name, _, _, subset in kinds:
            out[name]["indexes"] = subset().indexes.tolist()
    if args.json:
        _emit_json(out)
        return EXIT_OK
    print(f"{args.first} -> {args.second}: {len(changed):,} blocks differ "
          f"({format_bytes(changed.bytes_total)})")
    for name, count, nbytes, subset in kinds:
        line = f"  {name:<8} {count:>10,} blocks  {format_bytes(nbytes):>9}"
        if args.blocks and count:
            line += f"  {format_ranges(subset().indexes)}"
        print(line)
    return EXIT_OK


def _rate(blocks: int, nbytes: int, seconds: float) -> str:
    if seconds <= 0:
        return f"{format_bytes(nbytes)}"
    return (f"{format_bytes(nbytes)} in {seconds:.2f} s: {blocks / seconds:,.0f} blocks/s, "
            f"{nbytes / seconds / MB:,.1f} MB/s")


def _extras(result: Any) -> str:
    """Throttling and retries, which explain a slow run, when there were any."""
    parts = []
    if getattr(result, "throttled", 0):
        parts.append(f"throttled {result.throttled} times")
    if getattr(result, "retries", 0):
        parts.append(f"{result.retries} blocks retried")
    return f" ({', '.join(parts)})" if parts else ""


def _finish(args: argparse.Namespace, result: Any, headline: str, details: list[str]) -> None:
    if args.json:
        _emit_json(result.to_dict())
        return
    print(headline)
    if not args.quiet:
        for line in details:
            print(f"  {line}")


def _cmd_download(args: argparse.Namespace) -> int:
    from . import snapshots

    _check_writable(args.file)
    client = make_client(args)
    result = _run_with_progress(args, f"download {args.snapshot}", snapshots.download, client,
                                args.snapshot, args.file, workers=args.workers)
    r = result
    details = [f"{r.blocks_fetched:,} of {r.blocks_total:,} blocks fetched ({r.blocks_zero:,} "
               f"of them zeros, left as holes), {_rate(r.blocks_fetched, r.bytes, r.seconds)}"
               + _extras(r)]
    if r.blocks_resumed or r.blocks_redone:
        details.append(f"resumed: {r.blocks_resumed:,} blocks were already there, "
                       f"{r.blocks_redone:,} fetched again")
    if r.manifest:
        details.append(f"manifest: {r.manifest}")
    _finish(args, result, f"downloaded {args.snapshot} ({r.volume_size} GiB volume) to "
            f"{args.file}", details)
    return EXIT_OK


def _parse_tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"tag {text!r} is not KEY=VALUE")
    return key, value


def _cmd_upload(args: argparse.Namespace) -> int:
    from . import snapshots

    if args.manifest and not args.parent:
        raise CLIError("--manifest describes the parent snapshot's image; it needs --parent.",
                       "Pass --parent SNAP together with --manifest M, as printed by the "
                       "parent's upload or download.")
    if (args.encrypted or args.kms_key_arn) and args.parent:
        raise CLIError("--encrypted and --kms-key-arn cannot be combined with --parent: a "
                       "child snapshot inherits its parent's encryption.",
                       "Drop them, or upload a full snapshot without --parent.")
    _check_readable(args.file)
    if args.manifest:
        _check_readable(args.manifest)
    tags = dict(args.tag) if args.tag else None
    encrypted = True if (args.encrypted or args.kms_key_arn) else None
    client = make_client(args)
    result = _run_with_progress(
        args, f"upload {os.path.basename(args.file)}", snapshots.upload, client, args.file,
        parent_snapshot_id=args.parent, manifest=args.manifest, description=args.description,
        tags=tags, encrypted=encrypted, kms_key_arn=args.kms_key_arn,
        omit_zero_blocks=args.omit_zero_blocks, workers=args.workers)
    r = result
    if args.quiet and not args.json:
        print(r.snapshot_id)  # SNAP=$(ebsfast upload disk.img -q)
        return EXIT_OK
    details = [f"{r.blocks_written:,} blocks written, {r.blocks_skipped:,} skipped "
               f"({'unchanged or ' if r.parent_snapshot_id else ''}zeros), "
               f"{_rate(r.blocks_written, r.bytes, r.seconds)}" + _extras(r),
               f"volume {r.volume_size} GiB, status {r.status or 'unknown'}"
               + (f", parent {r.parent_snapshot_id}" if r.parent_snapshot_id else "")]
    if r.manifest:
        details.append(f"manifest: {r.manifest} (pass it as --manifest with --parent "
                       f"{r.snapshot_id} for the next incremental upload)")
    _finish(args, result, f"uploaded {args.file} as {r.snapshot_id}", details)
    return EXIT_OK


def _cmd_apply(args: argparse.Namespace) -> int:
    from . import snapshots

    _check_readable(args.file)
    _check_writable(args.file)
    client = make_client(args)
    result = _run_with_progress(args, f"apply {args.second}", snapshots.apply, client,
                                args.file, args.first, args.second, workers=args.workers)
    r = result
    details = [f"{r.blocks_changed:,} blocks changed: {r.blocks_written:,} written, "
               f"{r.blocks_zeroed:,} zeroed; {_rate(r.blocks_written, r.bytes, r.seconds)}"
               + _extras(r)]
    if r.grown:
        details.append(f"the image grew to {r.volume_size} GiB")
    if r.manifest:
        details.append(f"manifest: {r.manifest}")
    _finish(args, result, f"applied {args.first} -> {args.second} to {args.file}", details)
    return EXIT_OK


def _bad_indexes(result: Any) -> list[int]:
    """Blocks that failed their checksum from the service, or differ from the image."""
    return sorted({int(i) for i in result.bad_blocks} | {int(i) for i in result.mismatched})


def _cmd_verify(args: argparse.Namespace) -> int:
    from . import snapshots

    if args.file:
        _check_readable(args.file)
    client = make_client(args)
    result = _run_with_progress(args, f"verify {args.snapshot}", snapshots.verify, client,
                                args.snapshot, args.file, workers=args.workers)
    code = EXIT_OK if result.ok else EXIT_MISMATCH
    if args.json:
        _emit_json(result.to_dict())
        return code
    what = f"{args.snapshot}" + (f" against {args.file}" if args.file else "")
    if result.ok:
        print(f"ok: {what}")
    else:
        bad = _bad_indexes(result)
        shown = format_ranges(sorted(bad)[:_SHOW_BAD])
        more = f" and {len(bad) - _SHOW_BAD:,} more" if len(bad) > _SHOW_BAD else ""
        print(f"MISMATCH: {what}: {len(bad):,} blocks do not match: {shown}{more}")
    if not args.quiet:
        r = result
        print(f"  {r.blocks_checked:,} blocks checked in {r.seconds:.2f} s" + _extras(r))
        if r.bad_blocks:
            print(f"  {len(r.bad_blocks):,} failed the service's checksum on every read: "
                  f"{format_ranges(r.bad_blocks[:_SHOW_BAD])}")
        if r.unexpected_data:
            print(f"  {len(r.unexpected_data):,} hold data in the image where the snapshot "
                  f"has no block: {format_ranges(r.unexpected_data[:_SHOW_BAD])}")
        if r.image_size_ok is False:
            print(f"  note: {args.file} is not the volume's size; blocks beyond its end "
                  f"count as zeros")
    return code


def _cmd_serve(args: argparse.Namespace) -> int:
    from .testing import EBSServer

    server = EBSServer(host=args.host, port=args.port, tls=args.tls, data_dir=args.data_dir,
                       region=args.region)
    try:
        server.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CLIError(f"Port {args.port} on {args.host} is already in use.",
                           "Pass another --port, or --port 0 for any free one.",
                           EXIT_IO) from exc
        raise
    # The credentials are printed on purpose: they are this throwaway server's own, made up
    # at start, and whoever started it needs them to connect.
    lines = [f"endpoint_url={server.endpoint_url}", f"region={server.region}",
             f"aws_access_key_id={server.access_key}",
             f"aws_secret_access_key={server.secret_key}"]
    if server.ca_file:
        lines.append(f"ca_file={server.ca_file}")
    print("\n".join(lines), flush=True)
    ca = f" --ca-bundle {server.ca_file}" if server.ca_file else ""
    _note(args, f"try: AWS_ACCESS_KEY_ID={server.access_key} "
                f"AWS_SECRET_ACCESS_KEY={server.secret_key} ebsfast upload disk.img "
                f"--endpoint-url {server.endpoint_url} --region {server.region}{ca}")
    print("serving; press Ctrl-C to stop", flush=True)
    previous = _stop_on_sigterm()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return EXIT_OK


def _stop_on_sigterm() -> Any:
    """``kill PID`` stops the server as Ctrl-C does. A shell starts ``ebsfast serve &`` with
    SIGINT ignored, so SIGTERM is how scripts stop it; the handler is installed only where
    Python allows one (the main thread)."""
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, stop)


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    report = demo.run(size_mib=args.size_mib, workers=args.workers,
                      endpoint_url=args.endpoint_url, region=args.region,
                      profile=args.profile, ca_bundle=args.ca_bundle,
                      in_process=args.in_process, seed=args.seed, keep=args.keep,
                      rounds=args.rounds,
                      progress=lambda label: _progress(args, label),
                      log=(lambda text: None) if args.json else (lambda text: _note(args, text)))
    if args.json:
        _emit_json(report)
    else:
        print(demo.format_report(report))
    return EXIT_OK if report["ok"] else EXIT_MISMATCH


# -- local file checks: fail before any network work, with the file named ----------------------
def _check_readable(path: str) -> None:
    with open(path, "rb"):
        pass


def _check_writable(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), parent)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    target = path if os.path.exists(path) else parent
    if not os.access(target, os.W_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), target)


# -- the parser --------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0 to 65535, got {n}")
    return n


def _common(*, aws: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    if aws:
        g = p.add_argument_group("AWS connection")
        g.add_argument("--endpoint-url", help="send requests here instead of the region's "
                       "EBS endpoint (e.g. an `ebsfast serve` server)")
        g.add_argument("--region", help="AWS region (default: AWS_DEFAULT_REGION or the "
                       "profile's)")
        g.add_argument("--profile", help="a profile from ~/.aws/config or ~/.aws/credentials")
        g.add_argument("--ca-bundle", help="CA certificate file for verifying the endpoint's "
                       "TLS certificate (e.g. the ca_file `ebsfast serve --tls` prints)")
        g.add_argument("--workers", type=_positive_int, metavar="N",
                       help="concurrent requests (default: the snapshot tools' default)")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true",
                   help="print only the result, as JSON, on stdout")
    o.add_argument("-q", "--quiet", action="store_true",
                   help="no progress and no notes on stderr; results only")
    o.add_argument("--no-progress", action="store_true", help="no progress display")
    return p


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="ebsfast", description="Fast Amazon EBS direct APIs: read, write, compare and "
        "check EBS snapshots.",
        epilog="Exit codes: 0 ok, 1 verify mismatch or demo check failed, 2 usage, 3 service "
        "error, 4 credentials/region configuration, 5 network, 6 local file, 130 interrupted. "
        "Try it without AWS: ebsfast demo")
    parser.add_argument("--version", action="version", version=f"ebsfast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    aws = [_common(aws=True)]

    p = sub.add_parser("info", parents=[_common(aws=False)],
                       help="version, native modules, SHA-256 path, CPU features")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("ls", parents=aws, help="count (and list) the blocks of a snapshot")
    p.add_argument("snapshot", metavar="SNAP")
    p.add_argument("--blocks", action="store_true", help="also print the block indexes")
    p.set_defaults(func=_cmd_ls)

    p = sub.add_parser("diff", parents=aws,
                       help="blocks added, changed and removed between two snapshots")
    p.add_argument("first", metavar="SNAP1")
    p.add_argument("second", metavar="SNAP2")
    p.add_argument("--blocks", action="store_true", help="also print the block indexes")
    p.set_defaults(func=_cmd_diff)

    p = sub.add_parser("download", parents=aws,
                       help="write a snapshot to a disk image file (and a manifest beside it)")
    p.add_argument("snapshot", metavar="SNAP")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("upload", parents=aws, help="make a snapshot from a disk image file")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--parent", metavar="SNAP",
                   help="upload incrementally on top of this snapshot (with --manifest only "
                   "changed blocks are sent; without it, all data blocks are sent again)")
    p.add_argument("--manifest", metavar="M", help="the parent's manifest (written by its "
                   "upload or download): only blocks that differ from it are sent")
    p.add_argument("--description", metavar="D")
    p.add_argument("--tag", action="append", type=_parse_tag, metavar="K=V",
                   help="a snapshot tag; repeat for more")
    p.add_argument("--omit-zero-blocks", action="store_true",
                   help="do not send blocks that are all zeros (they read back as zeros)")
    p.add_argument("--encrypted", action="store_true", help="encrypt the snapshot")
    p.add_argument("--kms-key-arn", metavar="ARN",
                   help="the KMS key to encrypt with (implies --encrypted)")
    p.set_defaults(func=_cmd_upload)

    p = sub.add_parser("apply", parents=aws,
                       help="update FILE, an image of SNAP1, in place to SNAP2")
    p.add_argument("file", metavar="FILE")
    p.add_argument("first", metavar="SNAP1")
    p.add_argument("second", metavar="SNAP2")
    p.set_defaults(func=_cmd_apply)

    p = sub.add_parser("verify", parents=aws, help="check a snapshot's blocks against their "
                       "checksums, and against FILE if given (exit 1 on a mismatch)")
    p.add_argument("snapshot", metavar="SNAP")
    p.add_argument("file", metavar="FILE", nargs="?")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("serve", parents=[_common(aws=False)],
                       help="run a local EBS server until Ctrl-C (prints its endpoint and "
                       "throwaway credentials)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8333, help="0 picks a free port "
                   "(default 8333)")
    p.add_argument("--tls", action="store_true",
                   help="HTTPS with a self-signed certificate (its path is printed as ca_file)")
    p.add_argument("--data-dir", metavar="D", help="keep blocks on disk here, not in memory")
    p.add_argument("--region", default="us-east-1")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("demo", parents=aws, help="upload, change, upload incrementally, "
                       "diff, download and verify a disk image against a local server, "
                       "and compare read speed with boto3")
    p.add_argument("--size-mib", type=_positive_int, default=256, metavar="N",
                   help="size of the demo disk image (default 256)")
    p.add_argument("--in-process", action="store_true", help="run the local server in "
                   "this process (it then shares the GIL with the client: slower numbers)")
    p.add_argument("--seed", type=int, default=1, help="seed for the image's contents")
    p.add_argument("--keep", metavar="DIR", help="keep the images and manifests in DIR")
    p.add_argument("--rounds", type=_positive_int, default=3, metavar="N",
                   help="time the reads N times, in turns, and keep each one's best "
                   "(default 3)")
    p.set_defaults(func=_cmd_demo)
    return parser


# -- errors ------------------------------------------------------------------------------------
def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    # Service messages end in a period and get another from the sentence quoting them.
    while text.endswith(".."):
        text = text[:-1]
    return text


def _secrets_in_env() -> list[str]:
    return [v for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
            if len(v := os.environ.get(k, "")) >= 8]


def _scrub(text: str) -> str:
    # Defence in depth: no message ebsfast writes holds a secret, but a service or OS message
    # might echo one back.
    for secret in _secrets_in_env():
        text = text.replace(secret, "****")
    return text


_SERVICE_HINTS = {
    "AccessDeniedException": "Your credentials lack permission for this EBS direct API call: "
    "check the IAM policy (ebs:ListSnapshotBlocks, ebs:ListChangedBlocks, ebs:GetSnapshotBlock, "
    "ebs:StartSnapshot, ebs:PutSnapshotBlock, ebs:CompleteSnapshot) and the KMS key policy.",
    "UnrecognizedClientException": "The service does not know this access key: check "
    "AWS_ACCESS_KEY_ID / --profile and that the endpoint and region are right.",
    "InvalidSignatureException": "The request signature was refused: check the secret key "
    "for this access key, refresh expired session credentials, and check the machine's clock.",
    "ExpiredTokenException": "The session credentials have expired: refresh them "
    "(e.g. `aws sso login`) and rerun.",
    "ResourceNotFoundException": "Check the snapshot id and the region (--region): snapshots "
    "are regional.",
    "RequestThrottledException": "The service is throttling: rerun with fewer --workers, or "
    "later.",
    "ThrottlingException": "The service is throttling: rerun with fewer --workers, or later.",
    "ConcurrentLimitExceededException": "Too many snapshots are being written at once in this "
    "account: wait for some to complete and rerun.",
    "ServiceQuotaExceededException": "An account quota was reached: wait, or ask AWS for a "
    "higher quota.",
    "InternalServerException": "The service failed; rerun the command (it is safe to retry).",
    "ConflictException": "Another request with the same client token differs; rerun the "
    "command.",
}

_REASON_HINTS = {
    "INVALID_SNAPSHOT_ID": "Check the snapshot id and the region (--region): the snapshot must "
    "exist there and be completed for reads (pending, for writes).",
    "UNRELATED_SNAPSHOTS": "The two snapshots are not of the same volume lineage; diff and "
    "apply need a snapshot and one of its descendants.",
    "INVALID_BLOCK_TOKEN": "A block token expired or did not match; rerun the command.",
    "INVALID_PAGE_TOKEN": "A listing token expired; rerun the command.",
    "INVALID_VOLUME_SIZE": "The image is too large or too small for an EBS volume "
    "(1 GiB to 64 TiB).",
    "WRITE_REQUEST_TIMEOUT": "The snapshot timed out while being written; rerun the upload.",
    "INVALID_CUSTOMER_KEY": "Check --kms-key-arn: the key must exist, be enabled, and be usable "
    "by these credentials.",
    "INVALID_TAG": "Check the --tag values: keys may not start with aws: and have length "
    "limits.",
}


def _context(args: argparse.Namespace | None) -> str:
    if args is None:
        return ""
    snaps = [str(s) for k in ("snapshot", "first", "second", "parent")
             if (s := getattr(args, k, None))]
    return f" (snapshot {', '.join(snaps)})" if snaps else ""


def _kw(exc: BaseException, name: str) -> Any:
    """A field of an ebsfast exception's message (they keep them in ``kwargs``)."""
    return getattr(exc, "kwargs", {}).get(name)


def _describe_one(exc: BaseException, args: argparse.Namespace | None
                  ) -> tuple[int, str, str | None] | None:
    """(exit code, message, hint) for an exception we know, else None."""
    from . import exceptions as ex

    endpoint = getattr(args, "endpoint_url", None) if args is not None else None
    if isinstance(exc, CLIError):
        return exc.code, exc.message, exc.hint
    if isinstance(exc, ex.ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "Unknown")
        reason = exc.response.get("Reason") or err.get("Reason")
        message = _one_line(err.get("Message") or exc)
        where = f"{exc.operation_name}{_context(args)}"
        text = f"EBS refused {where}: {code}" + (f" ({reason})" if reason else "") \
            + f": {message}"
        hint = _REASON_HINTS.get(reason or "") or _SERVICE_HINTS.get(code) \
            or f"See the EBS direct APIs documentation for {code}."
        return EXIT_SERVICE, text, hint
    if isinstance(exc, ex.NoCredentialsError):
        return (EXIT_CONFIG, "No AWS credentials found. Set AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, run `aws configure`, or pass --profile.", NO_AWS_HINT)
    if isinstance(exc, ex.PartialCredentialsError):
        return (EXIT_CONFIG, f"Incomplete AWS credentials: {exc}.",
                "Set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or fix the profile.")
    if isinstance(exc, ex.NoRegionError):
        return (EXIT_CONFIG, "No AWS region configured.",
                "Pass --region (e.g. --region us-east-1), set AWS_DEFAULT_REGION, or run "
                "`aws configure`.")
    if isinstance(exc, ex.ProfileNotFound):
        return (EXIT_CONFIG, f"AWS profile {_kw(exc, 'profile')!r} not found in "
                "~/.aws/config or ~/.aws/credentials.",
                "Check the name (`aws configure list-profiles`), or drop --profile / "
                "AWS_PROFILE.")
    if isinstance(exc, (ex.CredentialRetrievalError, ex.ConfigParseError,
                        ex.InvalidRegionError)):
        return (EXIT_CONFIG, f"AWS configuration error: {_one_line(str(exc))}",
                "Fix the AWS configuration (`aws configure list` shows what is in use).")
    if isinstance(exc, ex.SSLError) or (isinstance(exc, (ex.HTTPClientError, ssl.SSLError))
                                        and "CERTIFICATE_VERIFY_FAILED" in str(exc)):
        url = _kw(exc, "endpoint_url") or endpoint
        return (EXIT_NETWORK, f"TLS certificate verification failed for {url}{_context(args)}.",
                "For a server with a self-signed certificate pass --ca-bundle FILE (`ebsfast "
                "serve --tls` prints it as ca_file); otherwise check AWS_CA_BUNDLE and proxies.")
    if isinstance(exc, (ex.ConnectTimeoutError, ex.ReadTimeoutError)):
        url = _kw(exc, "endpoint_url") or endpoint
        return (EXIT_NETWORK, f"Timed out talking to {url}{_context(args)}.",
                "The network or the service is slow: rerun, or rerun with fewer --workers.")
    if isinstance(exc, ex.ChecksumMissingError):
        return (EXIT_NETWORK, _one_line(str(exc)),
                "The endpoint answers without the checksums EBS sends: check --endpoint-url "
                "and any proxy between.")
    if isinstance(exc, ex.ChecksumMismatchError):
        return (EXIT_NETWORK, _one_line(str(exc)),
                "The data was damaged in transit on every retry: check the network path "
                "(proxies, middleboxes) and rerun.")
    if isinstance(exc, ex.ConnectionError):  # EndpointConnectionError, ProxyConnectionError
        url = _kw(exc, "endpoint_url") or _kw(exc, "proxy_url") or endpoint
        return (EXIT_NETWORK, f"Could not connect to {url}.",
                "Check the network, --endpoint-url and --region (for a local server, is "
                "`ebsfast serve` running?).")
    if isinstance(exc, ex.HTTPClientError):  # closed connections, broken bodies
        return (EXIT_NETWORK, f"The connection failed{_context(args)}: "
                f"{_one_line(str(exc))}", "Rerun the command; check the network if it "
                "keeps happening.")
    if isinstance(exc, ex.ParamValidationError):
        return (EXIT_USAGE, f"Invalid argument: {_one_line(str(exc))}",
                "Snapshot ids look like snap-0123456789abcdef0; see `ebsfast COMMAND --help`.")
    if isinstance(exc, (TimeoutError, ConnectionError)):  # the builtins, from sockets
        return (EXIT_NETWORK, f"Network error{_context(args)}: {_one_line(str(exc))}",
                "Check the network and --endpoint-url, and rerun.")
    if isinstance(exc, OSError):
        return (EXIT_IO,) + _describe_os_error(exc)
    import urllib3.exceptions  # a dependency of ebsfast

    if isinstance(exc, urllib3.exceptions.HTTPError):
        return (EXIT_NETWORK, f"Network error{_context(args)}: {_one_line(str(exc))}",
                "Check the network and --endpoint-url, and rerun.")
    return None


def _describe_os_error(exc: OSError) -> tuple[str, str]:
    name = exc.filename if exc.filename is not None else "a local file"
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return (f"No space left on the device holding {name}.",
                "Free some space or choose another destination, then rerun.")
    if exc.errno == errno.EFBIG:
        return (f"File too large: {name}.",
                "The file system or a limit (`ulimit -f`) caps file size; choose another "
                "destination.")
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM,
                                                         errno.EROFS):
        return (f"Permission denied: {name}.",
                "Choose a path you can write (or read), or fix its permissions.")
    if isinstance(exc, FileNotFoundError):
        return (f"No such file or directory: {name}.",
                "Check the path; a destination's directory must exist.")
    if isinstance(exc, IsADirectoryError):
        return (f"{name} is a directory.", "Give a file path, not a directory.")
    return (f"Local I/O error on {name}: {exc.strerror or exc}.",
            "Check the disk and the path, then rerun.")


def _interrupt_hint(args: argparse.Namespace | None) -> str:
    cmd = getattr(args, "command", None)
    if cmd == "download":
        return (f"Rerun the same command to resume: the blocks already in "
                f"{getattr(args, 'file', 'FILE')}.partial "
                "are checked and kept, not fetched again.")
    if cmd == "upload":
        return ("The snapshot being written was left pending and EBS discards it when it "
                "times out; rerun the same command to upload again.")
    if cmd == "apply":
        return ("The image is part-way between the two snapshots; rerun the same command "
                "to finish (blocks are rewritten whole, so rerunning is safe).")
    return "Nothing was changed that needs cleaning up; rerun the command."


# A SnapshotError with no underlying exception is about the inputs or local files.
_SNAPSHOT_REASON_CODES = {
    "image mid-apply": EXIT_USAGE,
    "wrong image": EXIT_USAGE,
    "no image": EXIT_IO,
    "device too small": EXIT_IO,
}


def describe_error(exc: BaseException, args: argparse.Namespace | None = None
                   ) -> tuple[int, str, str | None]:
    """The exit code, one-line message and hint line for an exception from a command."""
    if isinstance(exc, KeyboardInterrupt):
        cmd = getattr(args, "command", None)
        what = f" {cmd}{_context(args)}" if cmd else ""
        return (EXIT_INTERRUPTED, f"Interrupted{what}; the workers were stopped.",
                _interrupt_hint(args))
    snap_error = _snapshot_error_type()
    wrapped = snap_error is not None and isinstance(exc, snap_error)
    for link in _chain(exc):
        found = _describe_one(link, args)
        if found is None:
            continue
        code, message, hint = found
        if wrapped and link is not exc:
            detail = _snapshot_detail(exc)
            # The snapshot tools' message names the snapshot, the block and the reason; the
            # cause decides the exit code, and the advice where ours is only generic.
            message = _one_line(detail["message"])
            if hint is None or hint.startswith("See the EBS"):
                hint = detail["advice"] or hint
        return code, message, hint
    if wrapped:
        detail = _snapshot_detail(exc)
        hint = detail["advice"]
        if detail["reason"] == "device too small":
            hint = "Use a device at least as large as the volume, or give a file path."
        return (_SNAPSHOT_REASON_CODES.get(detail["reason"] or "", EXIT_SERVICE),
                _one_line(detail["message"]), hint)
    if isinstance(exc, ValueError):  # ManifestError included: the inputs do not fit together
        return (EXIT_USAGE, f"Invalid input: {_one_line(str(exc))}",
                "See `ebsfast COMMAND --help`; a manifest must be the one written for the "
                "--parent snapshot (<image>.manifest.json).")
    return (EXIT_INTERNAL, f"Internal error: {type(exc).__name__}: {_one_line(str(exc))}",
            "This is a bug in ebsfast; rerun with EBSFAST_DEBUG_CLI=1 for the traceback and "
            "report it.")


def _snapshot_detail(exc: BaseException) -> dict[str, Any]:
    """A SnapshotError's message (without its advice), reason and advice."""
    return {"message": getattr(exc, "message", None) or str(exc),
            "reason": getattr(exc, "reason", None), "advice": getattr(exc, "advice", None)}


def _snapshot_error_type() -> type | None:
    mod = sys.modules.get("ebsfast.snapshots")
    return getattr(mod, "SnapshotError", None) if mod is not None else None


def _report(exc: BaseException, args: argparse.Namespace | None) -> int:
    code, message, hint = describe_error(exc, args)
    if os.environ.get("EBSFAST_DEBUG_CLI", "") not in ("", "0"):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    print(f"ebsfast: error: {_scrub(message)}", file=sys.stderr)
    if hint:
        print(f"hint: {_scrub(hint)}", file=sys.stderr)
    sys.stderr.flush()
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help and --version exit 0, errors exit 2
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.func(args)
    except BrokenPipeError:
        # `ebsfast ls --blocks ... | head`: the reader left; that is not an error here.
        _silence_stdout()
        return EXIT_OK
    except BaseException as exc:  # every failure becomes an exit code
        if isinstance(exc, SystemExit):
            raise
        code = _report(exc, args)
        if code == EXIT_INTERRUPTED and argv is None:
            _exit_promptly(code)
        return code


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _exit_promptly(code: int) -> None:
    """After Ctrl-C, leave now rather than when stray worker threads drain their queues.

    The snapshot tools have already stopped and saved their resumable state by the time the
    interrupt reaches here, without waiting for the requests in flight: any worker still
    alive is abandoned in one, and its job's gate keeps it from writing anything when it
    ends. Python's exit would otherwise wait for such threads (a listing thread, say, and
    every request queued behind it); ``os._exit`` ends them and their sockets at once.
    """
    if threading.active_count() <= 1:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)
