"""``ebsfast.Config``: the botocore Config options that apply to an EBS client.

A botocore ``Config`` object is accepted wherever an ``ebsfast.Config`` is (its matching
attributes are read), so existing configuration carries over unchanged.
"""
from __future__ import annotations

from typing import Any

# name -> default; None means "resolved elsewhere" (environment, config file, built-in default)
_OPTIONS: dict[str, Any] = {
    "region_name": None,
    "connect_timeout": 60,
    "read_timeout": 60,
    "max_pool_connections": 10,
    "retries": None,  # {"max_attempts", "total_max_attempts", "mode"}
    "proxies": None,  # {"http": url, "https": url}
    "proxies_config": None,  # {"proxy_ca_bundle", "proxy_client_cert", ...}
    "use_fips_endpoint": None,
    "use_dualstack_endpoint": None,
    "user_agent": None,
    "user_agent_extra": None,
    "user_agent_appid": None,
    "parameter_validation": True,
    "tcp_keepalive": None,
    "client_cert": None,
    "signature_version": None,
    # botocore options that change nothing for EBS (no host prefix, no flexible checksums, no
    # request compression, no endpoint discovery, SigV4 only): taken, and left unused, as
    # botocore leaves them for this service
    "inject_host_prefix": True,
    "request_checksum_calculation": None,
    "response_checksum_validation": None,
    "disable_request_compression": None,
    "request_min_compression_size_bytes": None,
    "endpoint_discovery_enabled": None,
    "client_context_params": None,
    "account_id_endpoint_mode": None,
    "auth_scheme_preference": None,
    "sigv4a_signing_region_set": None,
    "s3": None,
}
_RETRY_KEYS = ("max_attempts", "mode", "total_max_attempts")  # botocore's order, in messages
_RETRY_MODES = ("legacy", "standard", "adaptive")


class Config:
    """Client options, as botocore's ``Config`` takes them (those that apply to EBS).

    ``Config(connect_timeout=5, read_timeout=30, max_pool_connections=64,
    retries={"mode": "adaptive", "max_attempts": 10})``
    """

    OPTION_DEFAULTS = dict(_OPTIONS)

    def __init__(self, *args: Any, **kwargs: Any):
        if args:
            raise TypeError("Config takes keyword arguments only")
        unknown = set(kwargs) - set(_OPTIONS)
        if unknown:
            raise TypeError(f"Got unexpected keyword argument(s) {sorted(unknown)}; Config "
                            f"accepts {sorted(_OPTIONS)}")
        self._user_provided = dict(kwargs)
        for name, default in _OPTIONS.items():
            setattr(self, name, kwargs.get(name, default))
        self._validate()

    def _validate(self) -> None:
        if self.retries is not None:
            if not isinstance(self.retries, dict):
                raise TypeError(f"Config retries must be a dict, not {type(self.retries).__name__}")
            from . import exceptions as _exc

            for key in self.retries:
                if key not in _RETRY_KEYS:
                    raise _exc.InvalidRetryConfigurationError(retry_config_option=key,
                                                              valid_options=_RETRY_KEYS)
            for key, least in (("max_attempts", 0), ("total_max_attempts", 1)):
                v = self.retries.get(key)
                if v is None:
                    continue
                if not isinstance(v, int) or isinstance(v, bool):
                    raise TypeError(f"Config retries {key} must be an integer, got {v!r}")
                if v < least:
                    raise _exc.InvalidMaxRetryAttemptsError(provided_max_attempts=v,
                                                            min_value=least)
            mode = self.retries.get("mode")
            if mode is not None and mode not in _RETRY_MODES:
                raise _exc.InvalidRetryModeError(provided_retry_mode=mode,
                                                 valid_modes=_RETRY_MODES)
        for key in ("connect_timeout", "read_timeout"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise ValueError(f"Config {key} must be a number of seconds >= 0, got {v!r}")
        v = self.max_pool_connections
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"Config max_pool_connections must be an integer >= 1, got {v!r}")

    def merge(self, other: "Config | None") -> "Config":
        """A new Config: this one's user-set options, overridden by ``other``'s."""
        if other is None:
            return self
        merged = dict(self._user_provided)
        merged.update(as_config(other)._user_provided)
        return Config(**merged)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._user_provided.items())
        return f"Config({opts})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self._user_provided == other._user_provided


def as_config(config: Any) -> Config:
    """An ``ebsfast.Config`` from None, an ``ebsfast.Config`` or a botocore ``Config``."""
    if config is None:
        return Config()
    if isinstance(config, Config):
        return config
    provided = getattr(config, "_user_provided_options", None)
    if provided is None:
        raise TypeError(f"config must be an ebsfast.Config or botocore Config, not "
                        f"{type(config).__name__}")
    return Config(**{k: v for k, v in provided.items() if k in _OPTIONS})
