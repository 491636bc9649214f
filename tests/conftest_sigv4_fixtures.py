"""Fixtures for the SigV4 tests: ``sigv4_impl`` is the native module and its pure-Python twin.

A pytest plugin module (listed in ``tests/conftest.py``'s ``pytest_plugins``) so the SigV4
tests can also run alone with ``-p tests.conftest_sigv4_fixtures``.
"""
from __future__ import annotations

import importlib
import os

import pytest

NO_EXTENSIONS = os.environ.get("EBSFAST_NO_EXTENSIONS", "") not in ("", "0")


def _load(kind: str):
    if kind == "twin":
        return importlib.import_module("ebsfast._sigv4_py")
    if NO_EXTENSIONS:
        pytest.skip("EBSFAST_NO_EXTENSIONS=1: the native module is not under test")
    # A native run with no native module is a broken build, not a skip.
    return importlib.import_module("ebsfast._sigv4")


@pytest.fixture(params=["native", "twin"], scope="session")
def sigv4_impl(request):
    """``ebsfast._sigv4`` or ``ebsfast._sigv4_py``: every SigV4 test runs against both."""
    return _load(request.param)


@pytest.fixture(scope="session")
def sigv4_native():
    """The native module alone (differential tests compare it with the twin)."""
    return _load("native")


@pytest.fixture(scope="session")
def sigv4_twin():
    return _load("twin")
