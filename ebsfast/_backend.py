"""Chooses, once, between each native module and its pure-Python twin.

``EBSFAST_NO_EXTENSIONS=1`` selects the twins everywhere. Otherwise the native module is used;
if it cannot be imported (a broken build) the twin takes its place and ``show_config()`` says so,
because a slow ebsfast is better than none, but a silent one is not.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

NO_EXTENSIONS = os.environ.get("EBSFAST_NO_EXTENSIONS", "") not in ("", "0")

# module short name -> (module in use, "native" | "python", why the twin was used or None)
_loaded: dict[str, tuple[ModuleType, str, str | None]] = {}


def load(name: str) -> ModuleType:
    """Return ``ebsfast._<name>`` (native) or ``ebsfast._<name>_py`` (twin)."""
    hit = _loaded.get(name)
    if hit is not None:
        return hit[0]
    if NO_EXTENSIONS:
        mod = importlib.import_module(f"ebsfast._{name}_py")
        _loaded[name] = (mod, "python", "EBSFAST_NO_EXTENSIONS is set")
        return mod
    try:
        mod = importlib.import_module(f"ebsfast._{name}")
        _loaded[name] = (mod, "native", None)
    except ImportError as exc:
        mod = importlib.import_module(f"ebsfast._{name}_py")
        _loaded[name] = (mod, "python", f"native module failed to import: {exc}")
    return mod


def status() -> dict[str, dict[str, str | None]]:
    """What each loaded module is: {"sha256": {"kind": "native", "reason": None}, ...}."""
    return {k: {"kind": v[1], "reason": v[2]} for k, v in _loaded.items()}
