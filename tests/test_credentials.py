"""ebsfast.credentials: each source against loopback fakes, the chain order, refresh timing,
and botocore as the reference for what the same files and environment resolve to.

Every test passes ``environ=``; instance metadata is disabled or pointed at loopback, and an
autouse guard fails any request to a host that is not loopback.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import shlex
import sys
import threading
from urllib.parse import urlsplit

import pytest

from _fake_metadata import SECRET_PREFIX, TOKEN_PREFIX, FakeContainer, FakeIMDS, iso
from ebsfast import credentials as C
from ebsfast.exceptions import (
    ConfigParseError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

UTC = dt.timezone.utc


def _now():
    return dt.datetime.now(UTC)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """Nothing in this module may reach a real metadata address (169.254.169.254 above all)."""
    real = C._http

    def guarded(method, url, headers, timeout_s):
        host = urlsplit(url).hostname
        assert host in ("127.0.0.1", "localhost", "::1"), f"test tried to contact {url}"
        return real(method, url, headers, timeout_s)

    monkeypatch.setattr(C, "_http", guarded)
    monkeypatch.setattr(C, "_sleep", lambda s: None)


@pytest.fixture
def env(tmp_path):
    """A minimal environment: no files, no instance metadata."""
    return {
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture
def imds():
    server = FakeIMDS()
    yield server
    server.close()


@pytest.fixture
def container():
    server = FakeContainer(auth="Bearer container-auth")
    yield server
    server.close()


def write(path, text):
    path.write_text(text)
    return str(path)


def process_command(tmp_path, payload=None, *, exit_code=0, stderr="", raw=None, name="proc.py"):
    """A credential_process: a small Python script printing ``payload`` as JSON."""
    out = raw if raw is not None else json.dumps(payload)
    script = tmp_path / name
    script.write_text(
        "import sys\n"
        f"sys.stdout.write({out!r})\n"
        f"sys.stderr.write({stderr!r})\n"
        f"sys.exit({exit_code})\n")
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"


def frozen(creds):
    return tuple(creds.get_frozen_credentials())


# --- explicit and partial ------------------------------------------------------------------

def test_explicit_keys(env):
    creds = C.resolve_credentials(aws_access_key_id="AKID", aws_secret_access_key="s",
                                  aws_session_token="t", environ=env)
    assert frozen(creds) == ("AKID", "s", "t")
    assert creds.method == "explicit"
    assert isinstance(creds.get_frozen_credentials(), C.ReadOnlyCredentials)


@pytest.mark.parametrize("kwargs, missing", [
    ({"aws_access_key_id": "AKID"}, "aws_secret_access_key"),
    ({"aws_secret_access_key": "s"}, "aws_access_key_id"),
])
def test_explicit_partial(env, kwargs, missing):
    with pytest.raises(PartialCredentialsError) as err:
        C.resolve_credentials(environ=env, **kwargs)
    assert err.value.kwargs == {"provider": "explicit", "cred_var": missing}


def test_session_token_alone_is_ignored(env):
    env.update(AWS_ACCESS_KEY_ID="AKENV", AWS_SECRET_ACCESS_KEY="senv")
    creds = C.resolve_credentials(aws_session_token="ignored", environ=env)
    assert frozen(creds) == ("AKENV", "senv", None)


# --- environment ---------------------------------------------------------------------------

def test_env(env):
    env.update(AWS_ACCESS_KEY_ID="AKENV", AWS_SECRET_ACCESS_KEY="senv", AWS_SESSION_TOKEN="tenv")
    creds = C.resolve_credentials(environ=env)
    assert frozen(creds) == ("AKENV", "senv", "tenv") and creds.method == "env"


def test_env_security_token_is_read_first(env):
    env.update(AWS_ACCESS_KEY_ID="A", AWS_SECRET_ACCESS_KEY="s", AWS_SESSION_TOKEN="session",
               AWS_SECURITY_TOKEN="security")
    assert frozen(C.resolve_credentials(environ=env))[2] == "security"


def test_env_partial(env):
    env.update(AWS_ACCESS_KEY_ID="AKENV")
    with pytest.raises(PartialCredentialsError) as err:
        C.resolve_credentials(environ=env)
    assert err.value.kwargs["cred_var"] == "AWS_SECRET_ACCESS_KEY"


def test_env_with_expiration_refreshes_from_env(env):
    soon = _now() + dt.timedelta(minutes=5)  # inside the mandatory window already
    env.update(AWS_ACCESS_KEY_ID="A1", AWS_SECRET_ACCESS_KEY="s1",
               AWS_CREDENTIAL_EXPIRATION=iso(soon))
    creds = C.resolve_credentials(environ=env)
    assert isinstance(creds, C.RefreshableCredentials)
    env.update(AWS_ACCESS_KEY_ID="A2", AWS_SECRET_ACCESS_KEY="s2",
               AWS_CREDENTIAL_EXPIRATION=iso(_now() + dt.timedelta(hours=1)))
    assert frozen(creds) == ("A2", "s2", None)


DEV_FILE_CREDS = "[dev]\naws_access_key_id = AKFILE\naws_secret_access_key = f\n"


def test_env_skipped_when_profile_named(env, tmp_path):
    write(tmp_path / "credentials", DEV_FILE_CREDS)
    env.update(AWS_ACCESS_KEY_ID="AKENV", AWS_SECRET_ACCESS_KEY="senv")
    assert C.resolve_credentials(profile_name="dev", environ=env).access_key == "AKFILE"
    # AWS_PROFILE does not disable the environment keys, as in botocore
    env["AWS_PROFILE"] = "dev"
    assert C.resolve_credentials(environ=env).access_key == "AKENV"


# --- shared files --------------------------------------------------------------------------

def test_shared_credentials_file_profiles(env, tmp_path):
    write(tmp_path / "credentials",
          "[default]\naws_access_key_id = AKDEF\naws_secret_access_key = d\n"
          "[dev]\naws_access_key_id = AKDEV\naws_secret_access_key = v\naws_session_token = tv\n"
          "[other]\naws_access_key_id = AKOTHER\naws_secret_access_key = o\n")
    assert frozen(C.resolve_credentials(environ=env)) == ("AKDEF", "d", None)
    assert frozen(C.resolve_credentials(profile_name="dev", environ=env)) == ("AKDEV", "v", "tv")
    env["AWS_PROFILE"] = "dev"
    assert C.resolve_credentials(environ=env).access_key == "AKDEV"
    env["AWS_DEFAULT_PROFILE"] = "other"  # botocore reads it before AWS_PROFILE
    creds = C.resolve_credentials(environ=env)
    assert creds.access_key == "AKOTHER" and creds.method == "shared-credentials-file"


def test_config_file_profile_and_precedence(env, tmp_path):
    write(tmp_path / "config",
          "[default]\naws_access_key_id = AKCFGDEF\naws_secret_access_key = c\n"
          "[profile dev]\naws_access_key_id = AKCFGDEV\naws_secret_access_key = c2\n"
          "region = eu-west-1\n")
    creds = C.resolve_credentials(profile_name="dev", environ=env)
    assert creds.access_key == "AKCFGDEV" and creds.method == "config-file"
    write(tmp_path / "credentials", DEV_FILE_CREDS)
    creds = C.resolve_credentials(profile_name="dev", environ=env)
    assert creds.method == "shared-credentials-file"


def test_shared_file_partial(env, tmp_path):
    write(tmp_path / "credentials", "[default]\naws_access_key_id = AK\n")
    with pytest.raises(PartialCredentialsError) as err:
        C.resolve_credentials(environ=env)
    assert err.value.kwargs == {"provider": "shared-credentials-file",
                                "cred_var": "aws_secret_access_key"}


def test_missing_profile(env, tmp_path):
    write(tmp_path / "config", "[profile dev]\nregion = us-east-1\n")
    with pytest.raises(ProfileNotFound):
        C.resolve_credentials(profile_name="nope", environ=env)
    env["AWS_PROFILE"] = "nope"
    with pytest.raises(ProfileNotFound):
        C.resolve_credentials(environ=env)
    with pytest.raises(ProfileNotFound):
        C.load_profile_config(environ=env)
    # "default" named explicitly must exist too; unnamed, its absence is fine
    with pytest.raises(ProfileNotFound):
        C.load_profile_config("default", environ={k: v for k, v in env.items()
                                                  if k != "AWS_PROFILE"})
    del env["AWS_PROFILE"]
    assert C.load_profile_config(environ=env) == {}
    with pytest.raises(NoCredentialsError):
        C.resolve_credentials(environ=env)


def test_malformed_config(env, tmp_path):
    write(tmp_path / "config", "not an ini file\n")
    with pytest.raises(ConfigParseError):
        C.load_profile_config(environ=env)


def test_load_profile_config(env, tmp_path):
    write(tmp_path / "config",
          "[default]\nregion = us-west-2\n"
          "[profile dev]\nregion = eu-west-1\nca_bundle = /etc/ca.pem\nuse_fips_endpoint = true\n"
          "retry_mode = adaptive\nmax_attempts = 7\nservices = local\n"
          "s3 =\n  addressing_style = path\n  signature_version = s3v4\n"
          '[profile "with space"]\nregion = ap-south-1\n'
          "[services local]\nebs =\n  endpoint_url = http://127.0.0.1:9999\n"
          "[unrelated]\nx = 1\n")
    write(tmp_path / "credentials", "[dev]\nregion = ca-central-1\naws_access_key_id = A\n")
    assert C.load_profile_config(environ=env) == {"region": "us-west-2"}
    dev = C.load_profile_config("dev", environ=env)
    assert dev["region"] == "ca-central-1"  # the credentials file overlays, as in botocore
    assert dev["s3"] == {"addressing_style": "path", "signature_version": "s3v4"}
    assert dev["max_attempts"] == "7" and dev["retry_mode"] == "adaptive"
    assert dev.services == {"ebs": {"endpoint_url": "http://127.0.0.1:9999"}}
    assert C.load_profile_config("with space", environ=env)["region"] == "ap-south-1"


# --- credential_process --------------------------------------------------------------------

PROC_CREDS = {"Version": 1, "AccessKeyId": "AKPROC", "SecretAccessKey": SECRET_PREFIX + "proc",
              "SessionToken": TOKEN_PREFIX + "proc"}


def test_process_static(env, tmp_path):
    cmd = process_command(tmp_path, PROC_CREDS)
    write(tmp_path / "config", f"[default]\ncredential_process = {cmd}\n")
    creds = C.resolve_credentials(environ=env)
    assert creds.method == "custom-process" and not isinstance(creds, C.RefreshableCredentials)
    assert frozen(creds) == ("AKPROC", SECRET_PREFIX + "proc", TOKEN_PREFIX + "proc")


def test_process_refreshes_after_expiration(env, tmp_path):
    counter = tmp_path / "n"
    counter.write_text("0")
    script = tmp_path / "rot.py"
    script.write_text(
        "import json, pathlib, datetime as dt\n"
        f"p = pathlib.Path({str(counter)!r}); n = int(p.read_text()) + 1; p.write_text(str(n))\n"
        "exp = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5 if n == 1 else 60)\n"
        "print(json.dumps({'Version': 1, 'AccessKeyId': f'AK{n}', 'SecretAccessKey': 's',\n"
        "                  'Expiration': exp.strftime('%Y-%m-%dT%H:%M:%SZ')}))\n")
    write(tmp_path / "credentials",
          f"[default]\ncredential_process = {shlex.quote(sys.executable)} "
          f"{shlex.quote(str(script))}\n")
    creds = C.resolve_credentials(environ=env)  # the process lives in the credentials file too
    assert isinstance(creds, C.RefreshableCredentials)
    assert creds.get_frozen_credentials().access_key == "AK2"  # 5 min left: refreshed at once
    assert creds.get_frozen_credentials().access_key == "AK2"


@pytest.mark.parametrize("kwargs, needle", [
    ({"payload": PROC_CREDS, "exit_code": 3, "stderr": "boom from process"}, "boom from process"),
    ({"payload": {**PROC_CREDS, "Version": 2}}, "Unsupported version '2'"),
    ({"payload": {"Version": 1, "SecretAccessKey": SECRET_PREFIX}}, "'AccessKeyId'"),
    ({"raw": f"not json {SECRET_PREFIX}"}, "not JSON"),
])
def test_process_errors(env, tmp_path, kwargs, needle):
    cmd = process_command(tmp_path, **kwargs)
    write(tmp_path / "config", f"[default]\ncredential_process = {cmd}\n")
    with pytest.raises(CredentialRetrievalError) as err:
        C.resolve_credentials(environ=env)
    assert needle in str(err.value)
    assert SECRET_PREFIX not in str(err.value) and err.value.__cause__ is None


def test_process_not_found(env, tmp_path):
    write(tmp_path / "config", f"[default]\ncredential_process = {tmp_path}/missing --flag\n")
    with pytest.raises(CredentialRetrievalError, match="cannot run"):
        C.resolve_credentials(environ=env)


# --- container credentials -----------------------------------------------------------------

def test_container_full_uri_with_token(env, container):
    env.update(AWS_CONTAINER_CREDENTIALS_FULL_URI=container.url + "/creds",
               AWS_CONTAINER_AUTHORIZATION_TOKEN="Bearer container-auth")
    creds = C.resolve_credentials(environ=env)
    assert creds.method == "container-role" and isinstance(creds, C.RefreshableCredentials)
    assert frozen(creds) == ("AKIDCONT1", SECRET_PREFIX + "cont1", TOKEN_PREFIX + "cont1")
    method, path, headers = container.requests[0]
    assert (method, path) == ("GET", "/creds")
    assert headers["authorization"] == "Bearer container-auth"
    assert headers["accept"] == "application/json"


def test_container_token_file_wins_and_is_reread(env, container, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("Bearer container-auth")
    env.update(AWS_CONTAINER_CREDENTIALS_FULL_URI=container.url + "/c",
               AWS_CONTAINER_AUTHORIZATION_TOKEN="wrong",
               AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token_file))
    container.expiration = _now() + dt.timedelta(minutes=1)
    creds = C.resolve_credentials(environ=env)
    container.auth = "Bearer rotated"
    token_file.write_text("Bearer rotated")
    container.expiration = _now() + dt.timedelta(hours=1)
    assert creds.get_frozen_credentials().access_key == "AKIDCONT2"


def test_container_bad_token_fails(env, container):
    env.update(AWS_CONTAINER_CREDENTIALS_FULL_URI=container.url + "/c",
               AWS_CONTAINER_AUTHORIZATION_TOKEN="Bearer wrong")
    with pytest.raises(CredentialRetrievalError, match="401"):
        C.resolve_credentials(environ=env)
    assert len(container.requests) == C._CONTAINER_ATTEMPTS


def test_container_token_with_newline_is_refused(env, container):
    env.update(AWS_CONTAINER_CREDENTIALS_FULL_URI=container.url + "/c",
               AWS_CONTAINER_AUTHORIZATION_TOKEN="Bearer x\r\nX-Evil: 1")
    with pytest.raises(CredentialRetrievalError, match="legal header"):
        C.resolve_credentials(environ=env)
    assert container.requests == []


@pytest.mark.parametrize("url, allowed", [
    ("http://127.0.0.1:1/x", True), ("http://127.9.9.9/x", True), ("http://[::1]/x", True),
    ("http://localhost/x", True), ("http://169.254.170.2/x", True),
    ("http://169.254.170.23/x", True), ("http://[fd00:ec2::23]/x", True),
    ("https://creds.example.com/x", True), ("http://creds.example.com/x", False),
    ("http://10.0.0.1/x", False), ("http://169.254.169.254/x", False),
])
def test_container_host_rule(url, allowed):
    assert C._container_url_allowed(url) is allowed


def test_container_disallowed_host_is_never_contacted(env, monkeypatch):
    monkeypatch.setattr(C, "_http", lambda *a: pytest.fail("contacted a disallowed host"))
    env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = "http://10.1.2.3/creds"
    with pytest.raises(CredentialRetrievalError, match="Unsupported host '10.1.2.3'"):
        C.resolve_credentials(environ=env)


def test_container_relative_uri(env, monkeypatch):
    seen = []

    def fake_http(method, url, headers, timeout_s):
        seen.append(url)
        return 200, json.dumps({"AccessKeyId": "AKREL", "SecretAccessKey": "s", "Token": "t",
                                "Expiration": iso(_now() + dt.timedelta(hours=1))}).encode()

    monkeypatch.setattr(C, "_http", fake_http)
    env.update(AWS_CONTAINER_CREDENTIALS_RELATIVE_URI="/v2/credentials/abc",
               AWS_CONTAINER_CREDENTIALS_FULL_URI="http://127.0.0.1:1/ignored")
    assert C.resolve_credentials(environ=env).access_key == "AKREL"
    assert seen == ["http://169.254.170.2/v2/credentials/abc"]


# --- instance metadata ---------------------------------------------------------------------

def imds_env(env, server):
    env = dict(env, AWS_EC2_METADATA_SERVICE_ENDPOINT=server.url + "/")
    del env["AWS_EC2_METADATA_DISABLED"]
    return env


def test_imds_v2(env, imds):
    creds = C.resolve_credentials(environ=imds_env(env, imds))
    assert creds.method == "iam-role" and isinstance(creds, C.RefreshableCredentials)
    assert frozen(creds) == ("AKIDIMDS1", SECRET_PREFIX + "imds1", TOKEN_PREFIX + "imds1")
    (m0, p0, h0), (_, p1, h1), (_, p2, h2) = imds.requests
    assert (m0, p0, h0["x-aws-ec2-metadata-token-ttl-seconds"]) == ("PUT", "/latest/api/token",
                                                                    "21600")
    assert p1 == "/latest/meta-data/iam/security-credentials/"
    assert p2 == "/latest/meta-data/iam/security-credentials/ebs-test-role"
    assert h1["x-aws-ec2-metadata-token"] == h2["x-aws-ec2-metadata-token"] == imds.issued_token


@pytest.mark.parametrize("status", [403, 404, 405])
def test_imds_v1_fallback(env, status):
    server = FakeIMDS(refuse_put=status)
    try:
        creds = C.resolve_credentials(environ=imds_env(env, server))
        assert creds.access_key == "AKIDIMDS1"
        assert all("x-aws-ec2-metadata-token" not in h for _, _, h in server.requests[1:])
    finally:
        server.close()


def test_imds_v1_disabled(env):
    server = FakeIMDS(refuse_put=403)
    try:
        e = dict(imds_env(env, server), AWS_EC2_METADATA_V1_DISABLED="true")
        with pytest.raises(CredentialRetrievalError, match="IMDSv1 has been disabled"):
            C.resolve_credentials(environ=e)
    finally:
        server.close()


def test_imds_endpoint_from_config_file(env, imds, tmp_path):
    write(tmp_path / "config", f"[default]\nec2_metadata_service_endpoint = {imds.url}\n")
    del env["AWS_EC2_METADATA_DISABLED"]
    assert C.resolve_credentials(environ=env).method == "iam-role"


def test_imds_disabled_sends_nothing(env, imds):
    e = dict(imds_env(env, imds), AWS_EC2_METADATA_DISABLED="TRUE")
    with pytest.raises(NoCredentialsError):
        C.resolve_credentials(environ=e)
    assert imds.requests == []


@pytest.mark.parametrize("kwargs", [
    {"role_status": 404},
    {"creds_body": json.dumps({"Code": "AssumeRoleUnauthorizedAccess", "Message": "no"})},
    {"creds_body": "not json"},
])
def test_imds_without_usable_credentials(env, kwargs):
    server = FakeIMDS(**kwargs)
    try:
        with pytest.raises(NoCredentialsError):
            C.resolve_credentials(environ=imds_env(env, server), attempts=2)
    finally:
        server.close()


def test_imds_unreachable_is_quick(env):
    # a closed loopback port: refused at once, then NoCredentialsError
    server = FakeIMDS()
    server.close()
    with pytest.raises(NoCredentialsError):
        C.resolve_credentials(environ=imds_env(env, server), timeout_s=0.5)


def test_imds_near_expiry_is_extended(env):
    server = FakeIMDS(expiration=_now() + dt.timedelta(minutes=2))
    try:
        creds = C.resolve_credentials(environ=imds_env(env, server))
        left = (creds.expiry_time - _now()).total_seconds()
        assert 15 * 60 + 100 <= left <= 25 * 60 + 5  # botocore: window + 2..10 min jitter
        assert creds.get_frozen_credentials().access_key == "AKIDIMDS1"
    finally:
        server.close()


def test_imds_refresh(env, imds, monkeypatch):
    clock = [_now()]
    monkeypatch.setattr(C, "_utcnow", lambda: clock[0])
    creds = C.resolve_credentials(environ=imds_env(env, imds))
    assert creds.access_key == "AKIDIMDS1"
    imds.expiration = clock[0] + dt.timedelta(hours=12)
    clock[0] += dt.timedelta(hours=6) - dt.timedelta(minutes=5)
    assert creds.get_frozen_credentials().access_key == "AKIDIMDS2"


# --- the chain's order ---------------------------------------------------------------------

def test_precedence(env, tmp_path, imds, container):
    """explicit > env > shared credentials file > credential_process > config file >
    container > instance metadata (botocore's order)."""
    e = imds_env(env, imds)
    e.update(AWS_ACCESS_KEY_ID="AKENV", AWS_SECRET_ACCESS_KEY="s",
             AWS_CONTAINER_CREDENTIALS_FULL_URI=container.url + "/c",
             AWS_CONTAINER_AUTHORIZATION_TOKEN="Bearer container-auth")
    creds_file = write(tmp_path / "credentials",
                       "[default]\naws_access_key_id = AKSHARED\naws_secret_access_key = s\n")
    cmd = process_command(tmp_path, PROC_CREDS)
    config = "[default]\naws_access_key_id = AKCONFIG\naws_secret_access_key = s\n"
    write(tmp_path / "config", config + f"credential_process = {cmd}\n")

    def first():
        return C.resolve_credentials(environ=e)

    assert C.resolve_credentials(aws_access_key_id="AKX", aws_secret_access_key="s",
                                 environ=e).method == "explicit"
    order = []
    order.append(first().method)
    del e["AWS_ACCESS_KEY_ID"], e["AWS_SECRET_ACCESS_KEY"]
    order.append(first().method)
    (tmp_path / "credentials").unlink()
    order.append(first().method)
    write(tmp_path / "config", config)
    order.append(first().method)
    (tmp_path / "config").unlink()
    order.append(first().method)
    del e["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
    order.append(first().method)
    assert order == ["env", "shared-credentials-file", "custom-process", "config-file",
                     "container-role", "iam-role"]
    assert creds_file


# --- refresh timing ------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = dt.datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self):
        return self.now


class Refresher:
    """A refresh callable that can be held mid-refresh, or made to fail."""

    def __init__(self, clock, lifetime=dt.timedelta(hours=1), as_text=False):
        self.clock = clock
        self.as_text = as_text  # botocore's RefreshableCredentials wants an ISO string
        self.lifetime = lifetime
        self.calls = 0
        self.fail = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self):
        self.calls += 1
        self.entered.set()
        assert self.release.wait(10)
        if self.fail:
            raise RuntimeError("refresh failed")
        expiry = self.clock.now + self.lifetime
        return {"access_key": f"AK{self.calls + 1}", "secret_key": "s", "token": "t",
                "expiry_time": expiry.isoformat() if self.as_text else expiry}


def refreshable(clock, refresher, left):
    return C.RefreshableCredentials("AK1", "s", "t", clock.now + left, refresher, "test",
                                    time_fetcher=clock)


def test_no_refresh_outside_windows():
    clock = Clock()
    r = Refresher(clock)
    creds = refreshable(clock, r, dt.timedelta(minutes=16))
    assert creds.get_frozen_credentials().access_key == "AK1" and r.calls == 0


def test_advisory_one_refreshes_others_do_not_block():
    clock = Clock()
    r = Refresher(clock)
    creds = refreshable(clock, r, dt.timedelta(minutes=12))
    r.release.clear()
    results = {}
    t = threading.Thread(target=lambda: results.update(a=creds.get_frozen_credentials()))
    t.start()
    assert r.entered.wait(5)
    # while the refresh is held, another caller gets the current keys at once
    assert creds.get_frozen_credentials().access_key == "AK1"
    r.release.set()
    t.join(5)
    assert results["a"].access_key == "AK2" and r.calls == 1
    assert creds.get_frozen_credentials().access_key == "AK2"


def test_mandatory_callers_wait():
    clock = Clock()
    r = Refresher(clock)
    creds = refreshable(clock, r, dt.timedelta(minutes=5))
    r.release.clear()
    results = {}
    a = threading.Thread(target=lambda: results.update(a=creds.get_frozen_credentials()))
    a.start()
    assert r.entered.wait(5)
    b = threading.Thread(target=lambda: results.update(b=creds.get_frozen_credentials()))
    b.start()
    b.join(0.2)
    assert b.is_alive()  # waiting for the refresh in flight
    r.release.set()
    a.join(5), b.join(5)
    assert results["a"].access_key == results["b"].access_key == "AK2"
    assert r.calls == 1


def test_advisory_failure_keeps_current(caplog):
    clock = Clock()
    r = Refresher(clock)
    r.fail = True
    creds = refreshable(clock, r, dt.timedelta(minutes=12))
    with caplog.at_level(logging.WARNING, logger="ebsfast.credentials"):
        assert creds.get_frozen_credentials().access_key == "AK1"
    assert "advisory" in caplog.text


def test_mandatory_failure_raises():
    clock = Clock()
    r = Refresher(clock)
    r.fail = True
    creds = refreshable(clock, r, dt.timedelta(minutes=5))
    with pytest.raises(RuntimeError):
        creds.get_frozen_credentials()


def test_refreshed_but_still_expired():
    clock = Clock()
    r = Refresher(clock, lifetime=dt.timedelta(seconds=-1))
    creds = refreshable(clock, r, dt.timedelta(minutes=5))
    with pytest.raises(CredentialRetrievalError, match="still expired"):
        creds.get_frozen_credentials()


def test_refresh_missing_keys():
    clock = Clock()
    creds = C.RefreshableCredentials("AK1", "s", None, clock.now, lambda: {"access_key": "x"},
                                     "test", time_fetcher=clock)
    with pytest.raises(CredentialRetrievalError, match="secret_key, token, expiry_time"):
        creds.get_frozen_credentials()


def test_no_expiry_never_refreshes():
    creds = C.RefreshableCredentials("AK1", "s", None, None, lambda: pytest.fail("refreshed"),
                                     "test")
    assert creds.access_key == "AK1" and not creds.refresh_needed()


# --- botocore objects ----------------------------------------------------------------------

def test_botocore_credentials_object_refresh_is_followed():
    import botocore.credentials

    clock = Clock()
    r = Refresher(clock, as_text=True)
    bc = botocore.credentials.RefreshableCredentials(
        "AK1", "s", "t", clock.now + dt.timedelta(minutes=5), r, "custom", time_fetcher=clock)
    creds = C.resolve_credentials(credentials=bc, environ={})
    assert creds.method == "botocore" and creds.source_method == "custom"
    assert frozen(creds) == ("AK2", "s", "t")  # botocore refreshed itself
    clock.now += dt.timedelta(minutes=55)
    assert creds.access_key == "AK3"


def test_boto3_session(env, monkeypatch):
    import boto3

    sess = boto3.Session(aws_access_key_id="AKSESS", aws_secret_access_key="s",
                         aws_session_token="t")
    creds = C.resolve_credentials(session=sess, environ=env)
    assert frozen(creds) == ("AKSESS", "s", "t") and creds.method == "botocore"


def test_explicit_beats_botocore_objects(env):
    import botocore.credentials

    bc = botocore.credentials.Credentials("AKBC", "s")
    creds = C.resolve_credentials(aws_access_key_id="AKX", aws_secret_access_key="s",
                                  credentials=bc, environ=env)
    assert creds.access_key == "AKX"


def test_assume_role_profile_is_delegated_to_botocore(env, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    write(tmp_path / "config", "[profile ar]\nrole_arn = arn:aws:iam::123456789012:role/r\n"
                               "source_profile = src\n"
                               "[profile src]\naws_access_key_id = AKSRC\n"
                               "aws_secret_access_key = s\n")
    creds = C.resolve_credentials(profile_name="ar", environ=env)
    # botocore defers the STS call until the keys are read; nothing is read here
    assert creds.method == "botocore" and creds.source_method == "assume-role"


# --- botocore as the reference -------------------------------------------------------------

FILE_CASES = {
    "default-in-credentials": ("", "[default]\naws_access_key_id = A1\naws_secret_access_key = s1\n"
                                   "aws_session_token = t1\n", None),
    "security-token-first": ("", "[default]\naws_access_key_id = A1\naws_secret_access_key = s1\n"
                                 "aws_session_token = t1\naws_security_token = t0\n", None),
    "named-in-config": ("[profile p]\naws_access_key_id = A2\naws_secret_access_key = s2\n", "",
                        "p"),
    "credentials-over-config": ("[profile p]\naws_access_key_id = A2\naws_secret_access_key = s2\n",
                                "[p]\naws_access_key_id = A3\naws_secret_access_key = s3\n", "p"),
    "default-both-sections": ("[profile default]\naws_access_key_id = A4\n"
                              "aws_secret_access_key = s\n"
                              "[default]\naws_access_key_id = A5\naws_secret_access_key = s\n",
                              "", None),
    "quoted-profile": ('[profile "a b"]\naws_access_key_id = A6\naws_secret_access_key = s\n',
                       "", "a b"),
    "nested-s3": ("[default]\ns3 =\n  addressing_style = path\naws_access_key_id = A7\n"
                  "aws_secret_access_key = s\n", "", None),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
@pytest.mark.parametrize("via", ["argument", "AWS_PROFILE"])
def test_files_match_botocore(case, via, tmp_path, monkeypatch):
    import botocore.session

    config, credentials, profile = FILE_CASES[case]
    env = {"AWS_CONFIG_FILE": write(tmp_path / "config", config),
           "AWS_SHARED_CREDENTIALS_FILE": write(tmp_path / "credentials", credentials),
           "AWS_EC2_METADATA_DISABLED": "true"}
    for name in list(__import__("os").environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if via == "AWS_PROFILE" and profile is not None:
        env["AWS_PROFILE"] = profile
        monkeypatch.setenv("AWS_PROFILE", profile)
        profile_arg = None
    else:
        profile_arg = profile
    ref_session = botocore.session.Session(profile=profile_arg)
    ref = ref_session.get_credentials()
    ours = C.resolve_credentials(profile_name=profile_arg, environ=env)
    assert frozen(ours) == tuple(ref.get_frozen_credentials())[:3]
    assert ours.method == ref.method
    assert dict(C.load_profile_config(profile_arg, environ=env)) == ref_session.get_scoped_config()


# --- secrets stay secret -------------------------------------------------------------------

def test_no_secrets_in_repr_logs_or_errors(env, tmp_path, imds, container, caplog):
    caplog.set_level(logging.DEBUG)
    seen = []
    # a full run through files, process, container and IMDS, plus failures of each
    e = imds_env(env, imds)
    seen.append(C.resolve_credentials(environ=e))
    seen.append(C.resolve_credentials(aws_access_key_id="AK", aws_secret_access_key=SECRET_PREFIX,
                                      aws_session_token=TOKEN_PREFIX, environ=env))
    seen.append(C.resolve_credentials(environ=dict(
        env, AWS_CONTAINER_CREDENTIALS_FULL_URI=container.url + "/c",
        AWS_CONTAINER_AUTHORIZATION_TOKEN="Bearer container-auth")))
    seen.append(C.resolve_credentials(environ=dict(
        env, AWS_ACCESS_KEY_ID="AKE", AWS_SECRET_ACCESS_KEY=SECRET_PREFIX + "e",
        AWS_SESSION_TOKEN=TOKEN_PREFIX + "e",
        AWS_CREDENTIAL_EXPIRATION=iso(_now() + dt.timedelta(hours=1)))))
    cmd = process_command(tmp_path, PROC_CREDS)
    write(tmp_path / "config", f"[default]\ncredential_process = {cmd}\n")
    seen.append(C.resolve_credentials(environ=env))
    errors = []
    for raw in (json.dumps({**PROC_CREDS, "Version": 9}), json.dumps(PROC_CREDS)[:-3]):
        write(tmp_path / "config",
              f"[default]\ncredential_process = {process_command(tmp_path, raw=raw)}\n")
        with pytest.raises(CredentialRetrievalError) as err:
            C.resolve_credentials(environ=env)
        errors.append(err.value)
    (tmp_path / "config").unlink()
    bad = FakeIMDS(creds_body=json.dumps({"AccessKeyId": "A", "SecretAccessKey": SECRET_PREFIX}))
    try:
        with pytest.raises(NoCredentialsError) as err:
            C.resolve_credentials(environ=imds_env(env, bad))
        errors.append(err.value)
    finally:
        bad.close()
    clock = Clock()
    r = Refresher(clock)
    r.fail = True
    rc = C.RefreshableCredentials("AK", SECRET_PREFIX, TOKEN_PREFIX, clock.now, r, "t",
                                  time_fetcher=clock)
    with pytest.raises(RuntimeError):
        rc.get_frozen_credentials()
    seen.append(rc)

    texts = [repr(c) for c in seen] + [str(x) for x in errors] + [repr(x) for x in errors]
    texts += [rec.getMessage() for rec in caplog.records]
    texts += [caplog.text]
    for text in texts:
        assert SECRET_PREFIX not in text and TOKEN_PREFIX not in text, text
    assert all("AK" in repr(c) or "botocore" in repr(c) for c in seen)
