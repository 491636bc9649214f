"""``python -m ebsfast`` and the ``ebsfast`` console script."""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    from ._info import format_config, show_config

    cfg = show_config()
    print(json.dumps(cfg, indent=2) if args.json else format_config(cfg))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ebsfast", description="Fast Amazon EBS direct APIs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="version, native modules, SHA-256 path, CPU features")
    info.add_argument("--json", action="store_true", help="print JSON for scripts")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
