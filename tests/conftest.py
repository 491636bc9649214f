"""Shared test setup.

The suite runs against both the native modules and their pure-Python twins: the fixtures in the
plugin modules below are parametrized over the two. ``EBSFAST_NO_EXTENSIONS=1`` skips the native
parameters (with that reason) and makes the public API use the twins.
"""
import os

import pytest

pytest_plugins = ["conftest_sha256_fixtures", "conftest_sigv4_fixtures"]

NO_EXTENSIONS = os.environ.get("EBSFAST_NO_EXTENSIONS", "") not in ("", "0")


def pytest_report_header(config):
    import ebsfast

    cfg = ebsfast.show_config()
    kinds = ", ".join(f"{k}={v['kind']}" for k, v in cfg["modules"].items())
    return [f"ebsfast {cfg['version']} from {os.path.dirname(ebsfast.__file__)}: {kinds}; "
            f"sha256 path {cfg['sha256_path']}"]


@pytest.fixture(scope="session", autouse=True)
def _native_build_is_present():
    """In a native run a missing extension is a broken build, not a reason to test the twin."""
    if NO_EXTENSIONS:
        return
    import ebsfast

    broken = {k: v["reason"] for k, v in ebsfast.show_config()["modules"].items()
              if v["kind"] != "native"}
    if broken:
        pytest.fail(f"native modules did not load: {broken}", pytrace=False)
