"""``python -m ebsfast.testing``: run the local EBS server until interrupted."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ebsfast.testing",
                                 description="A local EBS direct API server over real HTTP.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8333, help="0 picks a free port (default 8333)")
    ap.add_argument("--tls", action="store_true", help="serve HTTPS with a self-signed "
                    "certificate; its path is printed as ca_file")
    ap.add_argument("--data-dir", help="keep blocks on disk here instead of in memory")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--access-key", help="default: a fresh random key")
    ap.add_argument("--secret-key", help="default: a fresh random secret")
    ap.add_argument("--no-verify-signatures", action="store_true",
                    help="accept requests without checking their SigV4 signature")
    return ap


def main(argv: list[str] | None = None) -> int:
    from . import EBSServer

    args = build_parser().parse_args(argv)
    server = EBSServer(host=args.host, port=args.port, tls=args.tls, data_dir=args.data_dir,
                       region=args.region, access_key=args.access_key,
                       secret_key=args.secret_key,
                       verify_signatures=not args.no_verify_signatures)
    server.start()
    # A server started in the background of a non-interactive shell ignores SIGINT; let a
    # plain `kill` stop it cleanly too.
    import signal

    signal.signal(signal.SIGTERM, lambda *_: server._stopping.set())
    # The credentials are printed on purpose: this is a throwaway local server and the
    # person who started it needs them to connect.
    print(f"endpoint_url={server.endpoint_url}")
    print(f"region={server.region}")
    print(f"aws_access_key_id={server.access_key}")
    print(f"aws_secret_access_key={server.secret_key}")
    if server.ca_file:
        print(f"ca_file={server.ca_file}")
    print("serving; press Ctrl-C to stop", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
