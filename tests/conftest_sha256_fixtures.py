"""pytest plugin: fixtures that run the SHA-256 tests against every implementation and path.

``sha256_impl``      each kernel module: native ``ebsfast._sha256`` and the twin ``ebsfast._sha256_py``.
``sha256_path``      each (kernel, path) pair this machine supports, with that path selected for the
                     test and the previous one restored afterwards.
``checksums_on_path`` the public ``ebsfast.checksums`` module routed through ``sha256_path``'s
                     kernel and path.

``EBSFAST_NO_EXTENSIONS=1`` skips every native parameter, with that reason.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import NamedTuple

import pytest

NO_EXTENSIONS = os.environ.get("EBSFAST_NO_EXTENSIONS", "") not in ("", "0")

NATIVE_PATHS = ("portable", "sha-ni", "sha-ni-x2")
PATH_PARAMS = [("native", p) for p in NATIVE_PATHS] + [("python", "python")]


class Sha256Path(NamedTuple):
    impl: ModuleType
    path: str


def load_sha256_impl(kind: str) -> ModuleType:
    if kind == "native":
        if NO_EXTENSIONS:
            pytest.skip("EBSFAST_NO_EXTENSIONS=1: the native SHA-256 module is not under test")
        return importlib.import_module("ebsfast._sha256")
    return importlib.import_module("ebsfast._sha256_py")


@pytest.fixture(params=["native", "python"])
def sha256_impl(request: pytest.FixtureRequest) -> ModuleType:
    return load_sha256_impl(request.param)


@pytest.fixture(params=PATH_PARAMS, ids=[f"{k}-{p}" for k, p in PATH_PARAMS])
def sha256_path(request: pytest.FixtureRequest) -> Iterator[Sha256Path]:
    kind, path = request.param
    impl = load_sha256_impl(kind)
    if path not in impl.supported_paths():
        pytest.skip(f"SHA-256 path {path!r} is not supported on this CPU "
                    f"(cpu features: {', '.join(impl.cpu_features()) or 'none'})")
    before = impl.get_path()
    impl.set_path(path)
    try:
        yield Sha256Path(impl, path)
    finally:
        impl.set_path(before)


@pytest.fixture
def checksums_on_path(sha256_path: Sha256Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    from ebsfast import checksums

    monkeypatch.setattr(checksums, "_kernel", sha256_path.impl)
    return checksums
