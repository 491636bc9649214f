"""ebsfast.regions against botocore: every region botocore knows, in every partition, with each
FIPS/dual-stack combination, resolves to the URL botocore sends EBS requests to; region and
endpoint settings take the same precedence."""
from __future__ import annotations

import json
import os

import pytest

from ebsfast import regions as R
from ebsfast.config import Config
from ebsfast.credentials import load_profile_config
from ebsfast.exceptions import InvalidRegionError, NoRegionError

pytest.importorskip("botocore")
import botocore  # noqa: E402
import botocore.config  # noqa: E402
import botocore.endpoint_provider  # noqa: E402
import botocore.exceptions  # noqa: E402
import botocore.session  # noqa: E402

DATA = os.path.join(os.path.dirname(botocore.__file__), "data")


def _botocore_regions():
    found = []
    for name in ("partitions.json", "endpoints.json"):
        with open(os.path.join(DATA, name)) as f:
            for p in json.load(f)["partitions"]:
                found += [r for r in p["regions"] if r not in found]
    return found


KNOWN = _botocore_regions()
# Well-formed names botocore has no entry for, resolved by partition regex or the aws fallback,
# plus the fips pseudo regions botocore rewrites.
EXTRA = ["us-foo-9", "eu-newplace-3", "cn-foo-1", "us-gov-foo-1", "us-iso-foo-1",
         "us-isob-foo-1", "us-isof-foo-1", "eu-isoe-foo-1", "eusc-de-foo-1", "xx-east-1", "foo",
         "US-EAST-1", "fips-us-east-1", "us-east-1-fips", "fips-us-gov-west-1",
         "us-gov-west-1-fips", "fips-ca-central-1", "us-fips-east-1", "fips-aws-global", "fips",
         "", "us-east-1\n"]
INVALID = ["us east 1", "-us-east-1", "us-east-1-", "12345", "a" * 64, "us_east_1",
           "us-east-1.evil.com", "-fips-", "us-east-1/x"]
FLAGS = [(False, False), (False, True), (True, False), (True, True)]


class _Sent(Exception):
    def __init__(self, url):
        self.url = url


@pytest.fixture(scope="module")
def bc_session(tmp_path_factory):
    """One botocore session, with an environment that names no files, region or endpoint."""
    empty = tmp_path_factory.mktemp("aws")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("AWS_"):
                mp.delenv(name)
        mp.setenv("AWS_CONFIG_FILE", str(empty / "config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "credentials"))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield botocore.session.get_session()


def _botocore_urls(session, region, fips, dualstack):
    """(client.meta.endpoint_url, the URL a request is sent to) or the exception raised."""
    try:
        client = session.create_client(
            "ebs", region_name=region, aws_access_key_id="x", aws_secret_access_key="y",
            config=botocore.config.Config(use_fips_endpoint=fips, use_dualstack_endpoint=dualstack))
    except Exception as exc:  # compared with ours below
        return exc

    def capture(request, **kwargs):
        raise _Sent(request.url)

    client.meta.events.register("before-send.ebs", capture)
    try:
        client.list_snapshot_blocks(SnapshotId="snap-0123456789abcdef0")
    except _Sent as sent:
        return client.meta.endpoint_url, sent.url.split("/snapshots/")[0]
    raise AssertionError("request was not captured")


def _ours(region, fips, dualstack):
    try:
        return R.resolve_endpoint(region, use_fips=fips, use_dualstack=dualstack)
    except Exception as exc:
        return exc


def _partitions_without_legacy_dualstack():
    with open(os.path.join(DATA, "endpoints.json")) as f:
        return {p["partition"] for p in json.load(f)["partitions"]
                if not any("dualstack" in v["tags"] for v in p["defaults"].get("variants", []))}


NO_LEGACY_DUALSTACK = _partitions_without_legacy_dualstack()


def _legacy_quirk(region, dualstack):
    """Where botocore's ``client.meta.endpoint_url`` comes from its legacy endpoints.json and is
    not the URL its requests go to (the rule set's): the partition-global pseudo regions outside
    "aws", and dual-stack in partitions whose endpoints.json has no dual-stack hostnames (there
    botocore either shows an api.aws URL or refuses to create the client). ebsfast follows the
    rule set, which is where botocore's requests are actually sent."""
    part = R.partition_for_region(R.normalize_fips_region(region)[0]).id
    if region.endswith("-global") and part != "aws":
        return True
    return dualstack and part in NO_LEGACY_DUALSTACK


@pytest.fixture(scope="module")
def rule_set():
    import gzip

    from botocore.endpoint_provider import EndpointProvider

    with gzip.open(os.path.join(DATA, "ebs", "2019-11-02", "endpoint-rule-set-1.json.gz")) as f:
        rules = json.load(f)
    with open(os.path.join(DATA, "partitions.json")) as f:
        partitions = json.load(f)
    provider = EndpointProvider(rules, partitions)

    def resolve(region, fips, dualstack):
        region, forced = R.normalize_fips_region(region)
        return provider.resolve_endpoint(Region=region, UseFIPS=fips or forced,
                                         UseDualStack=dualstack).url
    return resolve


@pytest.mark.parametrize("region", KNOWN + EXTRA)
def test_endpoint_matches_botocore(bc_session, rule_set, region):
    for fips, dualstack in FLAGS:
        case = (region, fips, dualstack)
        ref = _botocore_urls(bc_session, region, fips, dualstack)
        ours = _ours(region, fips, dualstack)
        if isinstance(ref, Exception):
            if _legacy_quirk(region, dualstack):
                assert isinstance(ref, botocore.exceptions.EndpointVariantError), case
                assert ours == rule_set(region, fips, dualstack), case
                continue
            assert isinstance(ours, Exception), (case, ref, ours)
            assert isinstance(ours, type(ref)), (case, ref, ours)
            continue
        meta, sent = ref
        assert ours == sent == rule_set(region, fips, dualstack), case
        if not _legacy_quirk(region, dualstack):
            assert ours == meta, case


@pytest.mark.parametrize("region", INVALID + [None])
def test_invalid_and_missing_regions_match_botocore(bc_session, region):
    ref = _botocore_urls(bc_session, region, False, False)
    assert isinstance(ref, Exception)
    with pytest.raises(type(ref)):
        R.resolve_endpoint(region)
    if region is not None:
        with pytest.raises(InvalidRegionError):
            R.resolve_region(region, environ={})


def test_every_partition_is_covered():
    with open(os.path.join(DATA, "partitions.json")) as f:
        data = json.load(f)["partitions"]
    ours = {p.id: p for p in R.PARTITIONS}
    assert [p["id"] for p in data] == [p.id for p in R.PARTITIONS]
    for p in data:
        mine = ours[p["id"]]
        out = p["outputs"]
        assert (mine.region_regex, mine.dns_suffix, mine.dualstack_dns_suffix,
                mine.supports_fips, mine.supports_dualstack) == (
            p["regionRegex"], out["dnsSuffix"], out["dualStackDnsSuffix"], out["supportsFIPS"],
            out["supportsDualStack"])
        assert mine.regions == frozenset(p["regions"])


def test_fips_pseudo_region_normalization():
    assert R.normalize_fips_region("fips-us-gov-west-1") == ("us-gov-west-1", True)
    assert R.normalize_fips_region("us-east-1-fips") == ("us-east-1", True)
    assert R.normalize_fips_region("us-east-1") == ("us-east-1", False)


# --- region precedence ---------------------------------------------------------------------

def test_region_precedence():
    env = {"AWS_DEFAULT_REGION": "eu-west-1", "AWS_REGION": "ap-south-1"}
    profile = {"region": "ca-central-1"}
    cfg = Config(region_name="us-west-2")
    assert R.resolve_region("us-east-2", cfg, profile, env) == "us-east-2"
    assert R.resolve_region(None, cfg, profile, env) == "us-west-2"
    assert R.resolve_region(None, botocore.config.Config(region_name="sa-east-1"), profile,
                            env) == "sa-east-1"
    assert R.resolve_region(None, Config(), profile, env) == "eu-west-1"
    del env["AWS_DEFAULT_REGION"]
    assert R.resolve_region(None, None, profile, env) == "ca-central-1"
    # AWS_REGION only where botocore would find nothing
    assert R.resolve_region(None, None, {}, env) == "ap-south-1"
    assert R.resolve_region(None, None, None, {}) is None


def test_no_region_is_none_and_endpoint_raises():
    assert R.resolve_region(environ={}) is None
    with pytest.raises(NoRegionError):
        R.resolve_endpoint_url(None, None, environ={})


def test_invalid_region_from_environment():
    with pytest.raises(InvalidRegionError):
        R.resolve_region(environ={"AWS_DEFAULT_REGION": "not a region"})


# --- flags and endpoint_url against a botocore session with the same files and environment ---

SCENARIOS = {
    "nothing": ({}, "", None),
    "env-fips": ({"AWS_USE_FIPS_ENDPOINT": "TRUE"}, "", None),
    "env-dualstack": ({"AWS_USE_DUALSTACK_ENDPOINT": "true"}, "", None),
    "env-false-beats-profile": ({"AWS_USE_FIPS_ENDPOINT": "false"},
                                "[default]\nuse_fips_endpoint = true\n", None),
    "profile-flags": ({}, "[default]\nuse_fips_endpoint = true\nuse_dualstack_endpoint = true\n",
                      None),
    "config-beats-env": ({"AWS_USE_FIPS_ENDPOINT": "true"}, "",
                         botocore.config.Config(use_fips_endpoint=False)),
    "config-dualstack": ({}, "", botocore.config.Config(use_dualstack_endpoint=True)),
    "env-service-url": ({"AWS_ENDPOINT_URL_EBS": "http://127.0.0.1:1111",
                         "AWS_ENDPOINT_URL": "http://127.0.0.1:2222"}, "", None),
    "env-global-url": ({"AWS_ENDPOINT_URL": "http://127.0.0.1:2222"},
                       "[default]\nendpoint_url = http://127.0.0.1:3333\n", None),
    "profile-url": ({}, "[default]\nendpoint_url = http://127.0.0.1:3333\n", None),
    "services-url": ({}, "[default]\nendpoint_url = http://127.0.0.1:3333\nservices = dev\n"
                         "[services dev]\nebs =\n  endpoint_url = http://127.0.0.1:4444\n", None),
    "services-other-service": ({}, "[default]\nservices = dev\n"
                                   "[services dev]\ns3 =\n  endpoint_url = http://127.0.0.1:5\n",
                               None),
    "ignored-by-env": ({"AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true",
                        "AWS_ENDPOINT_URL": "http://127.0.0.1:2222"}, "", None),
    "ignored-by-profile": ({"AWS_ENDPOINT_URL": "http://127.0.0.1:2222"},
                           "[default]\nignore_configured_endpoint_urls = true\n", None),
    "url-with-fips-env": ({"AWS_ENDPOINT_URL": "https://ebs.example.com",
                           "AWS_USE_FIPS_ENDPOINT": "true"}, "", None),
}


@pytest.fixture(scope="module")
def fresh_session(bc_session):
    """A botocore Session that reads files and environment anew, sharing the parsed model data
    of the module's session (loading it is most of a Session's cost)."""
    loader = bc_session.get_component("data_loader")

    def make():
        session = botocore.session.Session()
        session.register_component("data_loader", loader)
        return session
    return make


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("region", ["us-east-1", "cn-north-1", "us-gov-west-1"])
def test_settings_match_botocore(name, region, tmp_path, monkeypatch, fresh_session):
    extra_env, config_text, bc_config = SCENARIOS[name]
    (tmp_path / "config").write_text(config_text)
    env = {"AWS_CONFIG_FILE": str(tmp_path / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
           "AWS_EC2_METADATA_DISABLED": "true", **extra_env}
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    client = fresh_session().create_client(
        "ebs", region_name=region, config=bc_config, aws_access_key_id="x",
        aws_secret_access_key="y")
    profile = load_profile_config(environ=env)
    assert R.resolve_endpoint_url(None, region, bc_config, profile, env) == client.meta.endpoint_url
    # an endpoint_url argument beats everything and switches the variants off, as in botocore
    arg_client = fresh_session().create_client(
        "ebs", region_name=region, config=bc_config, endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="x", aws_secret_access_key="y")
    assert R.resolve_endpoint_url("http://127.0.0.1:9", region, bc_config, profile,
                                  env) == arg_client.meta.endpoint_url


def test_flags_from_ebsfast_config():
    assert R.resolve_endpoint_flags(Config(use_fips_endpoint=True), {}, {}) == (True, False)
    assert R.resolve_endpoint_flags(None, {"use_dualstack_endpoint": "True"}, {}) == (False, True)
    assert R.resolve_endpoint_flags(None, None, {"AWS_USE_FIPS_ENDPOINT": "yes"}) == (False, False)


@pytest.mark.parametrize("url", ["localhost:8080", "http://", "http://bad host/",
                                 "http://exa\nmple.com"])
def test_invalid_endpoint_url(url):
    with pytest.raises(ValueError, match="Invalid endpoint"):
        R.resolve_endpoint_url(url, "us-east-1", environ={})
