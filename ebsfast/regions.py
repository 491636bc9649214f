"""Region, endpoint-variant and endpoint URL resolution for the EBS client.

Precedence and URLs follow botocore 1.43 so that ``ebsfast.client("ebs", ...)`` talks to the
host ``boto3.client("ebs", ...)`` would. The endpoint is what the EBS endpoint rule set
(``ebs/2019-11-02/endpoint-rule-set-1.json``) yields; the partition facts it needs are below as
data, taken from botocore's ``partitions.json``.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from .exceptions import InvalidRegionError, NoRegionError

logger = logging.getLogger(__name__)

__all__ = [
    "PARTITIONS", "Partition", "normalize_fips_region", "partition_for_region",
    "resolve_endpoint", "resolve_endpoint_flags", "resolve_endpoint_url", "resolve_region",
    "validate_region_name",
]


class Partition(NamedTuple):
    id: str
    region_regex: str
    regions: frozenset
    dns_suffix: str
    dualstack_dns_suffix: str
    supports_fips: bool
    supports_dualstack: bool


# Facts from botocore/data/partitions.json (botocore 1.43.11). Order matters: the rule set's
# aws.partition takes the first partition that lists the region or whose regex matches it, and
# falls back to the first partition ("aws") for anything else.
PARTITIONS: tuple[Partition, ...] = (
    Partition("aws", r"^(us|eu|ap|sa|ca|me|af|il|mx)\-\w+\-\d+$", frozenset({
        "af-south-1", "ap-east-1", "ap-east-2", "ap-northeast-1", "ap-northeast-2",
        "ap-northeast-3", "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2",
        "ap-southeast-3", "ap-southeast-4", "ap-southeast-5", "ap-southeast-6", "ap-southeast-7",
        "aws-global", "ca-central-1", "ca-west-1", "eu-central-1", "eu-central-2", "eu-north-1",
        "eu-south-1", "eu-south-2", "eu-west-1", "eu-west-2", "eu-west-3", "il-central-1",
        "me-central-1", "me-south-1", "mx-central-1", "sa-east-1", "us-east-1", "us-east-2",
        "us-west-1", "us-west-2"}),
        "amazonaws.com", "api.aws", True, True),
    Partition("aws-cn", r"^cn\-\w+\-\d+$",
              frozenset({"aws-cn-global", "cn-north-1", "cn-northwest-1"}),
              "amazonaws.com.cn", "api.amazonwebservices.com.cn", True, True),
    Partition("aws-eusc", r"^eusc\-(de)\-\w+\-\d+$", frozenset({"eusc-de-east-1"}),
              "amazonaws.eu", "api.amazonwebservices.eu", True, True),
    Partition("aws-iso", r"^us\-iso\-\w+\-\d+$",
              frozenset({"aws-iso-global", "us-iso-east-1", "us-iso-west-1"}),
              "c2s.ic.gov", "api.aws.ic.gov", True, True),
    Partition("aws-iso-b", r"^us\-isob\-\w+\-\d+$",
              frozenset({"aws-iso-b-global", "us-isob-east-1", "us-isob-west-1"}),
              "sc2s.sgov.gov", "api.aws.scloud", True, True),
    Partition("aws-iso-e", r"^eu\-isoe\-\w+\-\d+$",
              frozenset({"aws-iso-e-global", "eu-isoe-west-1"}),
              "cloud.adc-e.uk", "api.cloud-aws.adc-e.uk", True, True),
    Partition("aws-iso-f", r"^us\-isof\-\w+\-\d+$",
              frozenset({"aws-iso-f-global", "us-isof-east-1", "us-isof-south-1"}),
              "csp.hci.ic.gov", "api.aws.hci.ic.gov", True, True),
    Partition("aws-us-gov", r"^us\-gov\-\w+\-\d+$",
              frozenset({"aws-us-gov-global", "us-gov-east-1", "us-gov-west-1"}),
              "amazonaws.com", "api.aws", True, True),
)
_PARTITION_RES = tuple(re.compile(p.region_regex) for p in PARTITIONS)

# botocore.utils.validate_region_name: a host label that is not all digits. re.match with "$"
# is kept on purpose (it tolerates one trailing newline, as botocore does).
_VALID_REGION = re.compile(r"^(?![0-9]+$)(?!-)[a-zA-Z0-9-]{,63}(?<!-)$")
# botocore.utils.is_valid_endpoint_url's host check
_VALID_HOST = re.compile(r"^((?!-)[A-Z\d-]{1,63}(?<!-)\.)*((?!-)[A-Z\d-]{1,63}(?<!-))$",
                         re.IGNORECASE)
# Characters urlsplit silently strips since bpo-43882; botocore rejects URLs holding them.
_UNSAFE_URL_CHARS = frozenset("\t\r\n")
_SERVICE_ID = "ebs"
_ENDPOINT_ENV = "AWS_ENDPOINT_URL_EBS"


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _flag(value: Any) -> bool:
    # botocore.utils.ensure_boolean: only a bool or the string "true" (any case) is true.
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.lower() == "true"
    return False


def validate_region_name(region_name: str | None) -> None:
    """Raise InvalidRegionError unless ``region_name`` is None or a valid host label."""
    if region_name is None:
        return
    if not isinstance(region_name, str) or not _VALID_REGION.match(region_name):
        raise InvalidRegionError(region_name=region_name)


def resolve_region(region_name: str | None = None, config: Any = None,
                   profile_config: Mapping[str, Any] | None = None,
                   environ: Mapping[str, str] | None = None) -> str | None:
    """The client's region, or None when nothing names one (the client raises NoRegionError).

    Order: ``region_name``, ``config.region_name``, ``AWS_DEFAULT_REGION``, the profile's
    ``region`` (botocore's order), then ``AWS_REGION``. botocore 1.43 never reads
    ``AWS_REGION``; it is consulted only where botocore would have found no region at all, so it
    can never change a region boto3 would pick.
    """
    env = _env(environ)
    region = region_name
    if region is None:
        region = getattr(config, "region_name", None) if config is not None else None
    if region is None:
        # An empty AWS_DEFAULT_REGION still wins, as botocore's EnvironmentProvider has it.
        region = env.get("AWS_DEFAULT_REGION")
    if region is None and profile_config:
        region = profile_config.get("region")
    if region is None:
        region = env.get("AWS_REGION") or None
    validate_region_name(region)
    return region


def normalize_fips_region(region: str) -> tuple[str, bool]:
    """``(region, forces_fips)`` for a ``fips-`` / ``-fips`` pseudo region.

    botocore strips every ``fips-`` and ``-fips`` from the name (``str.replace``, anywhere in
    the name) and turns FIPS on; the stripped name is also the signing region.
    """
    normalized = region.replace("fips-", "").replace("-fips", "")
    return normalized, normalized != region


def partition_for_region(region: str) -> Partition:
    """The partition the rule set's ``aws.partition`` picks for ``region``."""
    for partition, regex in zip(PARTITIONS, _PARTITION_RES, strict=True):
        if region in partition.regions or regex.match(region):
            return partition
    return PARTITIONS[0]


def resolve_endpoint(region: str | None, *, use_fips: bool = False,
                     use_dualstack: bool = False) -> str:
    """The URL the EBS endpoint rule set gives for ``region`` and the two variant flags.

    A ``fips-``/``-fips`` pseudo region resolves as its real region with FIPS on, as botocore's
    client does before it consults the rule set.
    """
    if region is None:
        # botocore's legacy resolver refuses a client without a region before the rule set runs
        raise NoRegionError()
    validate_region_name(region)
    region, forced = normalize_fips_region(region)
    # botocore checks the URL the rule set built, which is how "" and "us-east-1\n" fail
    return _check_endpoint_url(_rule_set_url(region, bool(use_fips) or forced, bool(use_dualstack)))


def _rule_set_url(region: str, use_fips: bool, use_dualstack: bool) -> str:
    part = partition_for_region(region)
    if use_fips and use_dualstack:
        if not (part.supports_fips and part.supports_dualstack):
            raise ValueError("FIPS and DualStack are enabled, but this partition does not "
                             "support one or both")
        return f"https://ebs-fips.{region}.{part.dualstack_dns_suffix}"
    if use_fips:
        if not part.supports_fips:
            raise ValueError("FIPS is enabled but this partition does not support FIPS")
        return f"https://ebs-fips.{region}.{part.dns_suffix}"
    if use_dualstack:
        if not part.supports_dualstack:
            raise ValueError("DualStack is enabled but this partition does not support "
                             "DualStack")
        return f"https://ebs.{region}.{part.dualstack_dns_suffix}"
    return f"https://ebs.{region}.{part.dns_suffix}"


def _variant_flag(config: Any, name: str, env_var: str,
                  profile_config: Mapping[str, Any] | None, env: Mapping[str, str]) -> bool:
    value = getattr(config, name, None) if config is not None else None
    if value is not None:
        # botocore uses a Config value as given, truthiness and all
        return bool(value)
    if env_var in env:
        return _flag(env[env_var])
    if profile_config and profile_config.get(name) is not None:
        return _flag(profile_config[name])
    return False


def resolve_endpoint_flags(config: Any = None, profile_config: Mapping[str, Any] | None = None,
                           environ: Mapping[str, str] | None = None) -> tuple[bool, bool]:
    """``(use_fips, use_dualstack)`` from Config, then ``AWS_USE_FIPS_ENDPOINT`` /
    ``AWS_USE_DUALSTACK_ENDPOINT``, then the profile's ``use_fips_endpoint`` /
    ``use_dualstack_endpoint``; False when none is set."""
    env = _env(environ)
    fips = _variant_flag(config, "use_fips_endpoint", "AWS_USE_FIPS_ENDPOINT",
                         profile_config, env)
    dualstack = _variant_flag(config, "use_dualstack_endpoint", "AWS_USE_DUALSTACK_ENDPOINT",
                              profile_config, env)
    return fips, dualstack


def _ignore_configured(config: Any, profile_config: Mapping[str, Any] | None,
                       env: Mapping[str, str]) -> bool:
    value = getattr(config, "ignore_configured_endpoint_urls", None) if config else None
    if value is not None:
        return bool(value)
    if "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS" in env:
        return _flag(env["AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"])
    if profile_config and profile_config.get("ignore_configured_endpoint_urls") is not None:
        return _flag(profile_config["ignore_configured_endpoint_urls"])
    return False


def _configured_endpoint_url(profile_config: Mapping[str, Any] | None,
                             env: Mapping[str, str]) -> str | None:
    # botocore's ConfiguredEndpointProvider order; an empty value counts as unset.
    for value in (env.get(_ENDPOINT_ENV), env.get("AWS_ENDPOINT_URL")):
        if value:
            return value
    if profile_config:
        # load_profile_config attaches the profile's `services` section as `.services`
        services = getattr(profile_config, "services", None) or {}
        section = services.get(_SERVICE_ID)
        if isinstance(section, Mapping) and section.get("endpoint_url"):
            return section["endpoint_url"]
        value = profile_config.get("endpoint_url")
        if value and isinstance(value, str):
            return value
    return None


def _check_endpoint_url(url: str) -> str:
    # botocore's EndpointCreator refuses a URL without a usable host (ValueError too)
    host: str | None = None
    if isinstance(url, str) and not _UNSAFE_URL_CHARS.intersection(url):
        try:
            host = urlsplit(url).hostname
        except ValueError:
            host = None
    ok = False
    if host and len(host) <= 255:
        # ":" marks an IPv6 literal, which botocore checks separately and accepts
        ok = bool(_VALID_HOST.match(host.removesuffix("."))) or ":" in host
    if not ok:
        raise ValueError(f"Invalid endpoint: {url}")
    return url


def resolve_endpoint_url(endpoint_url: str | None, region: str | None, config: Any = None,
                         profile_config: Mapping[str, Any] | None = None,
                         environ: Mapping[str, str] | None = None) -> str:
    """The URL the client sends requests to.

    ``endpoint_url`` wins; then, unless ``ignore_configured_endpoint_urls`` is set (Config,
    ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`` or profile), ``AWS_ENDPOINT_URL_EBS``,
    ``AWS_ENDPOINT_URL``, the profile's ``services`` section ``ebs.endpoint_url``, the profile's
    ``endpoint_url``; else the rule set's URL for ``region`` and the FIPS/dual-stack flags. As in
    botocore, a given URL makes the rule set ignore the FIPS/dual-stack flags.
    """
    env = _env(environ)
    url = endpoint_url
    if url is None and not _ignore_configured(config, profile_config, env):
        url = _configured_endpoint_url(profile_config, env)
    if url is not None:
        return _check_endpoint_url(url)
    fips, dualstack = resolve_endpoint_flags(config, profile_config, env)
    return resolve_endpoint(region, use_fips=fips, use_dualstack=dualstack)
