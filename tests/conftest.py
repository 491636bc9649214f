"""Shared test setup.

The suite runs against both the native modules and their pure-Python twins: the fixtures in the
plugin modules below are parametrized over the two. ``EBSFAST_NO_EXTENSIONS=1`` skips the native
parameters (with that reason) and makes the public API use the twins.
"""
import os
import signal

import pytest

pytest_plugins = ["conftest_sha256_fixtures", "conftest_sigv4_fixtures",
                  "conftest_http_fixtures"]

NO_EXTENSIONS = os.environ.get("EBSFAST_NO_EXTENSIONS", "") not in ("", "0")


def pytest_configure(config):
    # A suite started in the background by a non-interactive shell inherits SIGINT ignored,
    # and then neither this process nor the CLI processes it starts ever see a Ctrl-C: the
    # tests of what Ctrl-C does need it delivered as a terminal delivers it. (A handled
    # signal is reset to its default in a child, where Python installs its own handler.)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_report_header(config):
    import ebsfast

    cfg = ebsfast.show_config()
    kinds = ", ".join(f"{k}={v['kind']}" for k, v in cfg["modules"].items())
    return [f"ebsfast {cfg['version']} from {os.path.dirname(ebsfast.__file__)}: {kinds}; "
            f"sha256 path {cfg['sha256_path']}"]


@pytest.fixture(scope="session", autouse=True)
def _outside_the_checkout(tmp_path_factory):
    """Run from a scratch directory: a subprocess started with ``python -m`` puts its working
    directory first on sys.path, and from the checkout it would import the unbuilt source tree
    instead of the installed package under test. PYTHONPATH names the ebsfast this session
    imported, so subprocesses test the same build (installed, in-place or sanitized)."""
    import ebsfast

    home = os.path.dirname(os.path.dirname(os.path.abspath(ebsfast.__file__)))
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = home + (os.pathsep + old_path if old_path else "")
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(old)
    if old_path is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old_path


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
