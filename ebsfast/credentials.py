"""AWS credentials for the EBS client, found the way botocore 1.43 finds them.

``resolve_credentials`` walks botocore's default chain: explicit keys, then the environment,
then the shared credentials file, ``credential_process`` and the config file (with a profile),
then container credentials, then EC2 instance metadata (IMDSv2, falling back to IMDSv1).
Profiles that need STS or SSO (``role_arn``, web identity, ``sso_*``, ``login_session``) are
handed to botocore when it is installed; ebsfast does not reimplement those flows.

Secret keys and session tokens never appear in a repr, a log record or an exception message:
reprs show the access key id at most, and fetch errors name the source and status, never a
response body.
"""
from __future__ import annotations

import configparser
import datetime as _dt
import ipaddress
import json
import logging
import os
import random
import shlex
import subprocess
import threading
import time
from collections import namedtuple
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from .exceptions import (
    ConfigParseError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

logger = logging.getLogger(__name__)

__all__ = [
    "Credentials", "ProfileConfig", "ReadOnlyCredentials", "RefreshableCredentials",
    "load_profile_config", "resolve_credentials",
]

ReadOnlyCredentials = namedtuple("ReadOnlyCredentials", ["access_key", "secret_key", "token"])

# botocore's windows: from 15 minutes before expiry one caller refreshes while the rest carry on
# with the current keys; from 10 minutes before, every caller waits for fresh keys.
ADVISORY_REFRESH_S = 15 * 60
MANDATORY_REFRESH_S = 10 * 60

_IMDS_V4 = "http://169.254.169.254/"
_IMDS_V6 = "http://[fd00:ec2::254]/"
_IMDS_TOKEN_TTL_S = "21600"  # six hours, botocore's value
_IMDS_ROLE_PATH = "latest/meta-data/iam/security-credentials/"
_CONTAINER_HOST = "169.254.170.2"
# ECS task metadata, EKS Pod Identity (IPv4 and IPv6); loopback is allowed separately.
_CONTAINER_ALLOWED_HOSTS = frozenset({_CONTAINER_HOST, "169.254.170.23", "fd00:ec2::23",
                                      "localhost"})
_CONTAINER_TIMEOUT_S = 2.0
_CONTAINER_ATTEMPTS = 3
_CONTAINER_RETRY_SLEEP_S = 1.0


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


# Indirection so tests can slow or speed time without patching the datetime module.
_sleep = time.sleep


def _parse_time(value: Any) -> _dt.datetime:
    """An aware datetime from an ISO 8601 string or datetime (naive means UTC)."""
    if isinstance(value, _dt.datetime):
        dt = value
    else:
        text = str(value).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        dt = _dt.datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.timezone.utc)
    return dt


def _mask(access_key: str | None) -> str:
    return repr(access_key)


class Credentials:
    """Static credentials. ``method`` names where they came from (botocore's names)."""

    def __init__(self, access_key: str, secret_key: str, token: str | None = None,
                 method: str | None = None):
        self.access_key = access_key
        self.secret_key = secret_key
        self.token = token
        self.method = method or "explicit"

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        return ReadOnlyCredentials(self.access_key, self.secret_key, self.token)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(access_key={_mask(self.access_key)}, "
                f"method={self.method!r})")


class RefreshableCredentials(Credentials):
    """Temporary credentials that renew themselves ahead of ``expiry_time``.

    ``refresh_using()`` returns a mapping with ``access_key``, ``secret_key``, ``token`` and
    ``expiry_time`` (ISO 8601 string or datetime). Inside the advisory window one thread
    refreshes while others keep the current keys without blocking, and a failed refresh keeps
    them; inside the mandatory window every caller waits and a failure is raised.
    Use ``get_frozen_credentials()`` to read a consistent triple.
    """

    def __init__(self, access_key: str, secret_key: str, token: str | None,
                 expiry_time: Any, refresh_using: Callable[[], Mapping[str, Any]],
                 method: str, *, time_fetcher: Callable[[], _dt.datetime] | None = None,
                 advisory_timeout_s: float | None = None,
                 mandatory_timeout_s: float | None = None):
        self._refresh_using = refresh_using
        self._time_fetcher = time_fetcher or _utcnow
        self._lock = threading.Lock()
        self.method = method
        self._advisory_s = ADVISORY_REFRESH_S if advisory_timeout_s is None else advisory_timeout_s
        self._mandatory_s = (MANDATORY_REFRESH_S if mandatory_timeout_s is None
                             else mandatory_timeout_s)
        self._expiry_time = None if expiry_time is None else _parse_time(expiry_time)
        # One tuple swapped in whole, so readers never see keys from two generations.
        self._frozen = ReadOnlyCredentials(access_key, secret_key, token)

    @classmethod
    def create_from_metadata(cls, metadata: Mapping[str, Any],
                             refresh_using: Callable[[], Mapping[str, Any]], method: str,
                             **kwargs: Any) -> RefreshableCredentials:
        return cls(metadata["access_key"], metadata["secret_key"], metadata.get("token"),
                   metadata["expiry_time"], refresh_using, method, **kwargs)

    # Each property refreshes first, like botocore; prefer get_frozen_credentials().
    @property
    def access_key(self) -> str:  # type: ignore[override]
        self._refresh()
        return self._frozen.access_key

    @property
    def secret_key(self) -> str:  # type: ignore[override]
        self._refresh()
        return self._frozen.secret_key

    @property
    def token(self) -> str | None:  # type: ignore[override]
        self._refresh()
        return self._frozen.token

    @property
    def expiry_time(self) -> _dt.datetime | None:
        return self._expiry_time

    def _seconds_remaining(self) -> float:
        assert self._expiry_time is not None
        return (self._expiry_time - self._time_fetcher()).total_seconds()

    def refresh_needed(self, refresh_in_s: float | None = None) -> bool:
        if self._expiry_time is None:
            return False
        if refresh_in_s is None:
            refresh_in_s = self._advisory_s
        return self._seconds_remaining() < refresh_in_s

    def _refresh(self) -> None:
        if not self.refresh_needed(self._advisory_s):
            return
        if self._lock.acquire(blocking=False):
            try:
                if self.refresh_needed(self._advisory_s):
                    self._protected_refresh(mandatory=self.refresh_needed(self._mandatory_s))
            finally:
                self._lock.release()
        elif self.refresh_needed(self._mandatory_s):
            with self._lock:
                # whoever held the lock may already have refreshed
                if self.refresh_needed(self._mandatory_s):
                    self._protected_refresh(mandatory=True)

    def _protected_refresh(self, mandatory: bool) -> None:
        try:
            data = self._refresh_using()
        except Exception as exc:
            window = "mandatory" if mandatory else "advisory"
            # The type only: a refresher's message could quote what it was parsing.
            logger.warning("Refreshing temporary credentials from %s failed during the %s "
                           "refresh period (%s)", self.method, window, type(exc).__name__)
            if mandatory:
                raise
            return
        missing = [k for k in ("access_key", "secret_key", "token", "expiry_time")
                   if not data or k not in data]
        if missing:
            raise CredentialRetrievalError(
                provider=self.method,
                error_msg="Credential refresh failed, response did not contain: "
                          + ", ".join(missing))
        self._frozen = ReadOnlyCredentials(data["access_key"], data["secret_key"], data["token"])
        self._expiry_time = _parse_time(data["expiry_time"])
        logger.debug("Refreshed %s credentials expire at %s", self.method, self._expiry_time)
        if self.refresh_needed(0):
            raise CredentialRetrievalError(
                provider=self.method,
                error_msg="Credentials were refreshed, but the refreshed credentials are still "
                          "expired.")

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        self._refresh()
        return self._frozen

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(access_key={_mask(self._frozen.access_key)}, "
                f"method={self.method!r}, expiry_time={self._expiry_time!r})")


class _BotocoreCredentials(Credentials):
    """A botocore credentials object, read afresh on every use so botocore's own refresh (and
    its locking) keeps working."""

    def __init__(self, wrapped: Any):
        self._wrapped = wrapped
        self.method = "botocore"

    @property
    def access_key(self) -> str:  # type: ignore[override]
        return self.get_frozen_credentials().access_key

    @property
    def secret_key(self) -> str:  # type: ignore[override]
        return self.get_frozen_credentials().secret_key

    @property
    def token(self) -> str | None:  # type: ignore[override]
        return self.get_frozen_credentials().token

    @property
    def source_method(self) -> str | None:
        """botocore's own name for where it found the credentials."""
        return getattr(self._wrapped, "method", None)

    def get_frozen_credentials(self) -> ReadOnlyCredentials:
        f = self._wrapped.get_frozen_credentials()
        return ReadOnlyCredentials(f.access_key, f.secret_key, f.token)

    def __repr__(self) -> str:
        # reading the key could trigger a refresh (network); show only what's already known
        return f"{type(self).__name__}(method='botocore', source={self.source_method!r})"


# --- shared config and credentials files ---------------------------------------------------

class ProfileConfig(dict):
    """A profile's merged settings (config file, overlaid by the credentials file section), as
    botocore's ``session.get_scoped_config()``. ``services`` holds the profile's ``services``
    section (service name -> settings), ``name`` the profile name."""

    def __init__(self, values: Mapping[str, Any] | None = None, *, name: str = "default",
                 services: Mapping[str, Any] | None = None):
        super().__init__(values or {})
        self.name = name
        self.services = dict(services or {})


def _expand(path: str) -> str:
    return os.path.expanduser(os.path.expandvars(path))


def _parse_nested(value: str) -> dict:
    out = {}
    for line in value.splitlines():
        line = line.strip()
        if line:
            key, val = line.split("=", 1)  # ValueError is a parse error, as in botocore
            out[key.strip()] = val.strip()
    return out


def _read_ini(path: str | None) -> dict | None:
    """Section -> settings, None if the file doesn't exist; indented ``s3 =`` blocks become
    dicts (botocore.configloader.raw_config_parse)."""
    if path is None:
        return None
    path = _expand(path)
    if not os.path.isfile(path):
        return None
    cp = configparser.RawConfigParser()
    try:
        cp.read([path])
    except (configparser.Error, UnicodeDecodeError):
        raise ConfigParseError(path=path) from None
    out: dict = {}
    for section in cp.sections():
        values = {}
        for option in cp.options(section):
            value = cp.get(section, option)
            if value.startswith("\n"):
                try:
                    value = _parse_nested(value)
                except ValueError:
                    raise ConfigParseError(path=path) from None
            values[option] = value
        out[section] = values
    return out


def _section_name(key: str) -> str | None:
    # "[profile  foo]" and '[profile "foo bar"]' both name one profile; anything else is ignored
    try:
        parts = shlex.split(key)
    except ValueError:
        return None
    return parts[1] if len(parts) == 2 else None


def _profile_map(parsed: Mapping[str, Any]) -> tuple[dict, dict]:
    """(profiles, services) from a parsed config file (botocore.configloader.build_profile_map)."""
    profiles: dict = {}
    services: dict = {}
    for key, values in parsed.items():
        if key.startswith("profile"):
            name = _section_name(key)
            if name is not None:
                profiles[name] = dict(values)
        elif key.startswith("services"):
            name = _section_name(key)
            if name is not None:
                services[name] = dict(values)
        elif key == "default":
            profiles[key] = dict(values)
    return profiles, services


class _Files:
    """Both shared files, read once per resolution."""

    def __init__(self, env: Mapping[str, str]):
        self.config_path = env.get("AWS_CONFIG_FILE", "~/.aws/config")
        self.creds_path = env.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")
        parsed = _read_ini(self.config_path)
        self.config_profiles, self.services = _profile_map(parsed or {})
        self.creds_sections = _read_ini(self.creds_path) or {}

    def merged_profiles(self) -> dict:
        # botocore's session.full_config: credentials-file sections overlay config profiles
        merged = {name: dict(values) for name, values in self.config_profiles.items()}
        for name, values in self.creds_sections.items():
            merged.setdefault(name, {}).update(values)
        return merged


def _selected_profile(profile_name: str | None, env: Mapping[str, str]) -> str | None:
    if profile_name is not None:
        return profile_name
    # botocore reads AWS_DEFAULT_PROFILE before AWS_PROFILE
    return env.get("AWS_DEFAULT_PROFILE", env.get("AWS_PROFILE"))


def _scoped(files: _Files, profile_name: str | None) -> ProfileConfig:
    merged = files.merged_profiles()
    if profile_name is None:
        name, values = "default", merged.get("default", {})
    elif profile_name not in merged:
        # a profile named explicitly (argument or environment) has to exist, even "default"
        raise ProfileNotFound(profile=profile_name)
    else:
        name, values = profile_name, merged[profile_name]
    services: dict = {}
    section = values.get("services")
    if isinstance(section, str):
        services = files.services.get(section) or {}
        if not services:
            # botocore raises InvalidConfigError here; ebsfast has no such class
            raise ConfigParseError(path=f"{_expand(files.config_path)} (profile {name!r} "
                                        f"names services section {section!r}, which is missing)")
    return ProfileConfig(values, name=name, services=services)


def load_profile_config(profile_name: str | None = None,
                        environ: Mapping[str, str] | None = None) -> ProfileConfig:
    """The selected profile's settings (``region``, ``ca_bundle``, ``use_fips_endpoint``,
    ``use_dualstack_endpoint``, ``retry_mode``, ``max_attempts``, ``endpoint_url``, ...), all
    values strings as in the file. The profile is ``profile_name``, else
    ``AWS_DEFAULT_PROFILE``, else ``AWS_PROFILE``, else ``default`` (empty if absent).
    Raises ProfileNotFound for a named profile in neither file, ConfigParseError for a
    malformed file."""
    env = os.environ if environ is None else environ
    return _scoped(_Files(env), _selected_profile(profile_name, env))


# --- HTTP for the metadata services --------------------------------------------------------

class _HTTPFailure(Exception):
    """A metadata request that got no HTTP response (refused, reset, timed out)."""

    def __init__(self, kind: str, read_timeout: bool = False):
        super().__init__(kind)
        self.read_timeout = read_timeout


def _http(method: str, url: str, headers: Mapping[str, str], timeout_s: float) -> tuple[int, bytes]:
    """One request, no retries, no proxy: the metadata services are link-local by design."""
    import urllib3

    pool = urllib3.PoolManager(num_pools=1, retries=False,
                               timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s))
    try:
        resp = pool.request(method, url, headers=dict(headers), redirect=False,
                            preload_content=True)
        return resp.status, resp.data
    except urllib3.exceptions.ReadTimeoutError:
        raise _HTTPFailure("read timeout", read_timeout=True) from None
    except urllib3.exceptions.LocationParseError:
        raise _HTTPFailure("invalid URL") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise _HTTPFailure(type(exc).__name__) from None
    finally:
        pool.clear()


# --- providers -----------------------------------------------------------------------------

def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.lower() == "true"


def _setting(name: str, env_var: str | None, env: Mapping[str, str],
             profile: Mapping[str, Any]) -> Any:
    if env_var is not None and env_var in env:
        return env[env_var]
    return profile.get(name)


def _from_env(env: Mapping[str, str]) -> Credentials | None:
    if not env.get("AWS_ACCESS_KEY_ID", ""):
        return None

    def fetch(require_expiry: bool = True) -> dict:
        access = env.get("AWS_ACCESS_KEY_ID", "")
        if not access:
            raise PartialCredentialsError(provider="env", cred_var="AWS_ACCESS_KEY_ID")
        secret = env.get("AWS_SECRET_ACCESS_KEY", "")
        if not secret:
            raise PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY")
        # AWS_SECURITY_TOKEN is boto2's name; botocore still reads it first
        token = env.get("AWS_SECURITY_TOKEN", "") or env.get("AWS_SESSION_TOKEN", "") or None
        expiry = env.get("AWS_CREDENTIAL_EXPIRATION", "") or None
        if require_expiry and not expiry:
            raise PartialCredentialsError(provider="env", cred_var="AWS_CREDENTIAL_EXPIRATION")
        return {"access_key": access, "secret_key": secret, "token": token,
                "expiry_time": expiry}

    logger.info("Found credentials in environment variables.")
    creds = fetch(require_expiry=False)
    if creds["expiry_time"] is not None:
        # A mapping like os.environ may be updated in place by whatever rotates the keys.
        return RefreshableCredentials.create_from_metadata(creds, fetch, "env")
    return Credentials(creds["access_key"], creds["secret_key"], creds["token"], method="env")


def _from_section(section: Mapping[str, Any] | None, method: str) -> Credentials | None:
    if not section or "aws_access_key_id" not in section:
        return None
    if "aws_secret_access_key" not in section:
        raise PartialCredentialsError(provider=method, cred_var="aws_secret_access_key")
    token = section.get("aws_security_token", section.get("aws_session_token"))
    return Credentials(section["aws_access_key_id"], section["aws_secret_access_key"], token,
                       method=method)


def _run_process(command: str) -> dict:
    method = "custom-process"
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise CredentialRetrievalError(
            provider=method, error_msg=f"cannot split credential_process: {exc}") from None
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, check=False)
    except OSError as exc:
        raise CredentialRetrievalError(provider=method,
                                       error_msg=f"cannot run {argv[0] if argv else command!r}: "
                                                 f"{exc.strerror or type(exc).__name__}") from None
    if proc.returncode != 0:
        # botocore reports the process's stderr; stdout, where the keys go, is never shown
        raise CredentialRetrievalError(provider=method,
                                       error_msg=proc.stderr.decode("utf-8", "replace"))
    try:
        parsed = json.loads(proc.stdout.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CredentialRetrievalError(provider=method,
                                       error_msg="credential_process output is not JSON") from None
    if not isinstance(parsed, dict):
        raise CredentialRetrievalError(provider=method,
                                       error_msg="credential_process output is not a JSON object")
    version = parsed.get("Version", "<Version key not provided>")
    if version != 1:
        raise CredentialRetrievalError(
            provider=method,
            error_msg=f"Unsupported version '{version}' for credential process provider, "
                      f"supported versions: 1")
    for key in ("AccessKeyId", "SecretAccessKey"):
        if key not in parsed:
            raise CredentialRetrievalError(provider=method,
                                           error_msg=f"Missing required key in response: '{key}'")
    return {"access_key": parsed["AccessKeyId"], "secret_key": parsed["SecretAccessKey"],
            "token": parsed.get("SessionToken"), "expiry_time": parsed.get("Expiration")}


def _from_process(profile: Mapping[str, Any]) -> Credentials | None:
    command = profile.get("credential_process")
    if command is None:
        return None
    creds = _run_process(command)
    if creds["expiry_time"] is not None:
        try:
            _parse_time(creds["expiry_time"])
        except ValueError:
            raise CredentialRetrievalError(provider="custom-process",
                                           error_msg="Expiration is not an ISO 8601 time") from None
        return RefreshableCredentials.create_from_metadata(
            creds, lambda: _run_process(command), "custom-process")
    return Credentials(creds["access_key"], creds["secret_key"], creds["token"],
                       method="custom-process")


def _container_url_allowed(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    host = parts.hostname
    try:
        if host is not None and ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    return host in _CONTAINER_ALLOWED_HOSTS


def _container_fetcher(url: str, env: Mapping[str, str]) -> Callable[[], dict]:
    method = "container-role"

    def auth_header() -> dict:
        token = None
        # the file wins and is re-read each time: EKS Pod Identity rotates it
        if "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" in env:
            try:
                with open(env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]) as f:
                    token = f.read()
            except OSError as exc:
                raise CredentialRetrievalError(
                    provider=method,
                    error_msg=f"cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: "
                              f"{exc.strerror or type(exc).__name__}") from None
        elif "AWS_CONTAINER_AUTHORIZATION_TOKEN" in env:
            token = env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
        if token is None:
            return {}
        if "\r" in token or "\n" in token:
            raise CredentialRetrievalError(provider=method,
                                           error_msg="Auth token value is not a legal header value")
        return {"Authorization": token}

    def fetch() -> dict:
        if not _container_url_allowed(url):
            host = urlsplit(url).hostname
            raise CredentialRetrievalError(
                provider=method,
                error_msg=f"Unsupported host '{host}'.  Can only retrieve metadata from a "
                          f"loopback address or one of these hosts: "
                          f"{', '.join(sorted(_CONTAINER_ALLOWED_HOSTS))}")
        headers = {"Accept": "application/json", **auth_header()}
        problem = "no attempt made"
        for attempt in range(_CONTAINER_ATTEMPTS):
            if attempt:
                _sleep(_CONTAINER_RETRY_SLEEP_S)
            try:
                status, body = _http("GET", url, headers, _CONTAINER_TIMEOUT_S)
            except _HTTPFailure as exc:
                problem = f"request failed ({exc})"
                logger.debug("Container credentials request failed: %s", exc)
                continue
            if status != 200:
                problem = f"Received non 200 response {status} from container metadata"
                logger.debug("%s", problem)
                continue
            try:
                data = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                problem = "Unable to parse JSON returned from container metadata services"
                logger.debug("%s", problem)
                continue
            missing = [k for k in ("AccessKeyId", "SecretAccessKey", "Token", "Expiration")
                       if not isinstance(data, dict) or k not in data]
            if missing:
                raise CredentialRetrievalError(
                    provider=method,
                    error_msg="container metadata response lacks " + ", ".join(missing))
            return {"access_key": data["AccessKeyId"], "secret_key": data["SecretAccessKey"],
                    "token": data["Token"], "expiry_time": data["Expiration"]}
        raise CredentialRetrievalError(provider=method, error_msg=problem)

    return fetch


def _from_container(env: Mapping[str, str]) -> Credentials | None:
    if "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" in env:
        url = f"http://{_CONTAINER_HOST}{env['AWS_CONTAINER_CREDENTIALS_RELATIVE_URI']}"
    elif "AWS_CONTAINER_CREDENTIALS_FULL_URI" in env:
        url = env["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
    else:
        return None
    fetch = _container_fetcher(url, env)
    creds = fetch()
    logger.info("Found credentials from the container credentials endpoint.")
    return RefreshableCredentials.create_from_metadata(creds, fetch, "container-role")


class _IMDSGiveUp(Exception):
    """Instance metadata has nothing to give: the chain moves on (botocore returns {})."""


class _IMDS:
    """EC2 instance metadata: IMDSv2 token, then role name, then the role's credentials."""

    def __init__(self, env: Mapping[str, str], profile: Mapping[str, Any],
                 timeout_s: float | None, attempts: int | None):
        self.disabled = env.get("AWS_EC2_METADATA_DISABLED", "false").lower() == "true"
        if timeout_s is None:
            timeout_s = float(_setting("metadata_service_timeout",
                                       "AWS_METADATA_SERVICE_TIMEOUT", env, profile) or 1)
        if attempts is None:
            attempts = int(_setting("metadata_service_num_attempts",
                                    "AWS_METADATA_SERVICE_NUM_ATTEMPTS", env, profile) or 1)
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.v1_disabled = _flag(_setting("ec2_metadata_v1_disabled",
                                          "AWS_EC2_METADATA_V1_DISABLED", env, profile))
        self._base = self._base_url(env, profile)

    @staticmethod
    def _base_url(env: Mapping[str, str], profile: Mapping[str, Any]) -> str:
        custom = _setting("ec2_metadata_service_endpoint", "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                          env, profile)
        if custom:
            return custom
        mode = _setting("ec2_metadata_service_endpoint_mode",
                        "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", env, profile)
        if mode is not None:
            if mode.lower() not in ("ipv4", "ipv6"):
                raise CredentialRetrievalError(
                    provider="iam-role",
                    error_msg=f"Invalid endpoint mode {mode!r}: use one of ipv4, ipv6")
            return _IMDS_V6 if mode.lower() == "ipv6" else _IMDS_V4
        if _flag(_setting("imds_use_ipv6", "AWS_IMDS_USE_IPV6", env, profile)):
            return _IMDS_V6
        return _IMDS_V4

    def _url(self, path: str) -> str:
        sep = "" if self._base.endswith("/") else "/"
        return f"{self._base}{sep}{path}"

    def _token(self) -> str | None:
        """An IMDSv2 token, or None to fall back to IMDSv1 (as botocore does on 403/404/405,
        a read timeout, or no answer at all)."""
        headers = {"x-aws-ec2-metadata-token-ttl-seconds": _IMDS_TOKEN_TTL_S}
        for _ in range(self.attempts):
            try:
                status, body = _http("PUT", self._url("latest/api/token"), headers,
                                     self.timeout_s)
            except _HTTPFailure as exc:
                if exc.read_timeout:
                    return None
                logger.debug("IMDS token request failed: %s", exc)
                continue
            if status == 200:
                return body.decode("utf-8", "replace")
            if status in (403, 404, 405):
                return None
            if status == 400:
                raise _IMDSGiveUp("token request rejected (400)")
        return None

    def _get(self, path: str, token: str | None, want_json: bool) -> Any:
        if not token and self.v1_disabled:
            raise CredentialRetrievalError(
                provider="iam-role",
                error_msg="Unable to retrieve token for use in IMDSv2 call and IMDSv1 has been "
                          "disabled")
        headers = {"x-aws-ec2-metadata-token": token} if token else {}
        for _ in range(self.attempts):
            try:
                status, body = _http("GET", self._url(path), headers, self.timeout_s)
            except _HTTPFailure as exc:
                logger.debug("IMDS request failed: %s", exc)
                continue
            if status != 200 or not body:
                logger.debug("IMDS returned status %s with %d bytes", status, len(body))
                continue
            text = body.decode("utf-8", "replace")
            if not want_json:
                return text
            try:
                return json.loads(text)
            except ValueError:
                logger.debug("IMDS returned a credentials document that is not JSON")
                continue
        raise _IMDSGiveUp(f"no usable answer after {self.attempts} attempt(s)")

    def fetch(self) -> dict:
        """The role's credentials, or {} when instance metadata has none to give."""
        if self.disabled:
            logger.debug("Access to EC2 metadata has been disabled.")
            return {}
        try:
            token = self._token()
            role = self._get(_IMDS_ROLE_PATH, token, want_json=False)
            data = self._get(_IMDS_ROLE_PATH + role, token, want_json=True)
        except _IMDSGiveUp as exc:
            logger.debug("No credentials from instance metadata: %s", exc)
            return {}
        fields = ("AccessKeyId", "SecretAccessKey", "Token", "Expiration")
        if not isinstance(data, dict) or any(k not in data for k in fields):
            # e.g. a 200 carrying {"Code": ..., "Message": ...} when the role can't be assumed
            logger.debug("Instance metadata credentials document lacks required fields "
                         "(code %r)", data.get("Code") if isinstance(data, dict) else None)
            return {}
        creds = {"role_name": role, "access_key": data["AccessKeyId"],
                 "secret_key": data["SecretAccessKey"], "token": data["Token"],
                 "expiry_time": data["Expiration"]}
        self._extend_if_stale(creds)
        return creds

    def refresh(self) -> dict:
        creds = self.fetch()
        if not creds:
            raise CredentialRetrievalError(provider="iam-role",
                                           error_msg="instance metadata returned no credentials")
        return creds

    @staticmethod
    def _extend_if_stale(creds: dict) -> None:
        # botocore's static stability: when IMDS hands back keys at or near expiry (it is
        # degraded), keep using them for a while instead of failing every call. The jitter
        # (2-10 min) spreads the next attempts of a fleet.
        try:
            expiry = _dt.datetime.strptime(creds["expiry_time"], "%Y-%m-%dT%H:%M:%SZ")
        except (TypeError, ValueError):
            return
        expiry = expiry.replace(tzinfo=_dt.timezone.utc)
        offset = _dt.timedelta(seconds=ADVISORY_REFRESH_S + random.randint(120, 600))
        now = _utcnow()
        if now >= expiry - offset:
            creds["expiry_time"] = (now + offset).strftime("%Y-%m-%dT%H:%M:%SZ")
            logger.info("Instance metadata credentials are at or near expiry; extending them "
                        "and retrying within %.0f minutes.", offset.total_seconds() / 60)


def _from_imds(env: Mapping[str, str], profile: Mapping[str, Any], timeout_s: float | None,
               attempts: int | None) -> Credentials | None:
    imds = _IMDS(env, profile, timeout_s, attempts)
    creds = imds.fetch()
    if not creds:
        return None
    logger.info("Found credentials from IAM Role: %s", creds["role_name"])
    return RefreshableCredentials.create_from_metadata(creds, imds.refresh, "iam-role")


# --- the chain -----------------------------------------------------------------------------

def _needs_botocore(kind: str, profile: Mapping[str, Any], env: Mapping[str, str],
                    env_allowed: bool) -> bool:
    if kind == "web-identity":
        return bool(profile.get("web_identity_token_file")
                    or (env_allowed and env.get("AWS_WEB_IDENTITY_TOKEN_FILE")))
    if kind == "assume-role":
        return "role_arn" in profile and "web_identity_token_file" not in profile
    if kind == "sso":
        return "sso_role_name" in profile or "sso_account_id" in profile
    if kind == "login":
        return "login_session" in profile
    raise AssertionError(kind)


def _delegate(kind: str, profile_name: str | None, files: _Files) -> Credentials:
    """Profiles that need STS, SSO or a login session: botocore does the work."""
    try:
        import botocore.session
    except ImportError:
        raise CredentialRetrievalError(
            provider=kind,
            error_msg="this profile needs botocore (pip install botocore): ebsfast does not "
                      "implement assume-role, web identity, SSO or login credentials") from None
    session = botocore.session.Session(profile=profile_name)
    session.set_config_variable("config_file", files.config_path)
    session.set_config_variable("credentials_file", files.creds_path)
    creds = session.get_credentials()
    if creds is None:
        raise NoCredentialsError()
    return _BotocoreCredentials(creds)


def resolve_credentials(*, aws_access_key_id: str | None = None,
                        aws_secret_access_key: str | None = None,
                        aws_session_token: str | None = None, profile_name: str | None = None,
                        credentials: Any = None, session: Any = None,
                        environ: Mapping[str, str] | None = None, timeout_s: float | None = None,
                        attempts: int | None = None) -> Credentials:
    """The first credentials found, in botocore's order:

    1. ``aws_access_key_id`` with ``aws_secret_access_key`` (one without the other:
       PartialCredentialsError);
    2. ``credentials`` (a botocore credentials object) or ``session`` (a boto3 or botocore
       Session), read through on every use;
    3. ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` (refreshable
       with ``AWS_CREDENTIAL_EXPIRATION``), skipped when ``profile_name`` is given, as boto3
       skips them for ``Session(profile_name=...)``;
    4. the profile (``profile_name``, ``AWS_DEFAULT_PROFILE``, ``AWS_PROFILE``, ``default``):
       the shared credentials file, then ``credential_process``, then the config file;
    5. container credentials (``AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`` / ``_FULL_URI``);
    6. EC2 instance metadata.

    ``timeout_s`` and ``attempts`` apply to instance metadata; None takes
    ``AWS_METADATA_SERVICE_TIMEOUT`` / ``AWS_METADATA_SERVICE_NUM_ATTEMPTS``, then the
    profile's ``metadata_service_timeout`` / ``metadata_service_num_attempts``, then 1 s / 1.
    Raises NoCredentialsError when nothing is found.
    """
    if aws_access_key_id is not None and aws_secret_access_key is not None:
        return Credentials(aws_access_key_id, aws_secret_access_key, aws_session_token,
                           method="explicit")
    if aws_access_key_id is not None:
        raise PartialCredentialsError(provider="explicit", cred_var="aws_secret_access_key")
    if aws_secret_access_key is not None:
        raise PartialCredentialsError(provider="explicit", cred_var="aws_access_key_id")
    if credentials is not None:
        if not callable(getattr(credentials, "get_frozen_credentials", None)):
            raise TypeError("credentials must have get_frozen_credentials(), like botocore's "
                            f"Credentials; got {type(credentials).__name__}")
        return _BotocoreCredentials(credentials)
    if session is not None:
        found = session.get_credentials()
        if found is None:
            raise NoCredentialsError()
        return _BotocoreCredentials(found)

    env = os.environ if environ is None else environ
    files = _Files(env)
    selected = _selected_profile(profile_name, env)
    profile = _scoped(files, selected)  # ProfileNotFound before any source is tried
    env_allowed = profile_name is None

    def delegated(kind: str) -> Callable[[], Credentials | None]:
        def load() -> Credentials | None:
            if _needs_botocore(kind, profile, env, env_allowed):
                return _delegate(kind, selected, files)
            return None
        return load

    chain: list[tuple[str, Callable[[], Credentials | None]]] = []
    if env_allowed:
        chain.append(("env", lambda: _from_env(env)))
    chain += [
        ("assume-role", delegated("assume-role")),
        ("assume-role-with-web-identity", delegated("web-identity")),
        ("sso", delegated("sso")),
        ("shared-credentials-file",
         lambda: _from_section(files.creds_sections.get(profile.name),
                               "shared-credentials-file")),
        ("login", delegated("login")),
        ("custom-process", lambda: _from_process(profile)),
        ("config-file",
         lambda: _from_section(files.config_profiles.get(profile.name), "config-file")),
        ("container-role", lambda: _from_container(env)),
        ("iam-role", lambda: _from_imds(env, profile, timeout_s, attempts)),
    ]
    for name, load in chain:
        logger.debug("Looking for credentials via: %s", name)
        creds = load()
        if creds is not None:
            return creds
    raise NoCredentialsError()
