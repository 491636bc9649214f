"""Loopback stand-ins for the EC2 instance metadata service and the container credentials
endpoint, for tests/test_credentials.py. Each is a threaded ``http.server`` on 127.0.0.1 with
an OS-chosen port; every request is recorded."""
from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET_PREFIX = "SECRETfake"  # every secret and token served contains this, so leaks are greppable
TOKEN_PREFIX = "TOKENfake"


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Server:
    """Starts a server whose handler calls ``self.handle(method, path, headers)``."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                owner.requests.append((self.command, self.path, headers))
                status, body = owner.handle(self.command, self.path, headers)
                data = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = _serve

            def log_message(self, *args):  # keep pytest output clean
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def handle(self, method, path, headers):  # pragma: no cover - every fake defines its own
        raise TypeError(f"{type(self).__name__} answers no requests: define handle()")

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()


class FakeIMDS(_Server):
    """IMDS with the token PUT, the role listing and the role's credentials.

    ``refuse_put``: answer the token PUT with that status (403/404/405 make clients fall back to
    IMDSv1). Without it, GETs must carry the issued token. Each credentials fetch serves a new
    generation of keys (``AKIDIMDS1``, ``AKIDIMDS2``, ...) expiring at ``expiration``.
    """

    ROLE = "ebs-test-role"

    def __init__(self, *, refuse_put: int | None = None, expiration: dt.datetime | None = None,
                 role_status: int = 200, creds_body: str | None = None):
        self.refuse_put = refuse_put
        self.expiration = expiration or dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=6)
        self.role_status = role_status
        self.creds_body = creds_body
        self.generation = 0
        self.issued_token = "imds-session-token-abc"
        super().__init__()

    def handle(self, method, path, headers):
        if path == "/latest/api/token":
            if method != "PUT":
                return 405, ""
            if self.refuse_put:
                return self.refuse_put, ""
            if "x-aws-ec2-metadata-token-ttl-seconds" not in headers:
                return 400, ""
            return 200, self.issued_token
        if method != "GET":
            return 405, ""
        if not self.refuse_put and headers.get("x-aws-ec2-metadata-token") != self.issued_token:
            return 401, ""
        base = "/latest/meta-data/iam/security-credentials/"
        if path == base:
            return self.role_status, self.ROLE if self.role_status == 200 else ""
        if path == base + self.ROLE:
            if self.creds_body is not None:
                return 200, self.creds_body
            self.generation += 1
            return 200, json.dumps({
                "Code": "Success", "Type": "AWS-HMAC",
                "AccessKeyId": f"AKIDIMDS{self.generation}",
                "SecretAccessKey": f"{SECRET_PREFIX}imds{self.generation}",
                "Token": f"{TOKEN_PREFIX}imds{self.generation}",
                "Expiration": iso(self.expiration),
            })
        return 404, ""


class FakeContainer(_Server):
    """The ECS / EKS Pod Identity credentials endpoint; demands ``auth`` (if set) as the
    Authorization header, answering 401 otherwise."""

    def __init__(self, *, auth: str | None = None, expiration: dt.datetime | None = None,
                 status: int = 200):
        self.auth = auth
        self.status = status
        self.expiration = expiration or dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=6)
        self.generation = 0
        super().__init__()

    def handle(self, method, path, headers):
        if self.auth is not None and headers.get("authorization") != self.auth:
            return 401, '{"message": "bad token"}'
        if self.status != 200:
            return self.status, "nope"
        self.generation += 1
        return 200, json.dumps({
            "AccessKeyId": f"AKIDCONT{self.generation}",
            "SecretAccessKey": f"{SECRET_PREFIX}cont{self.generation}",
            "Token": f"{TOKEN_PREFIX}cont{self.generation}",
            "Expiration": iso(self.expiration),
            "RoleArn": "arn:aws:iam::123456789012:role/x",
        })
