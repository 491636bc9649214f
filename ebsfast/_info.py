"""What this ebsfast is running on: version, native modules, SHA-256 path, CPU features."""
from __future__ import annotations

import platform
import sys
from typing import Any

from . import _backend
from ._version import __version__

# Every accelerated module, by its short name (ebsfast._<name> / ebsfast._<name>_py).
NATIVE_MODULES = ("sha256", "sigv4", "http", "pages", "lane")


def show_config() -> dict[str, Any]:
    """Return a dict describing this installation (``python -m ebsfast info`` prints it)."""
    modules = {}
    for name in NATIVE_MODULES:
        _backend.load(name)
    for name, st in _backend.status().items():
        modules[name] = st
    sha = _backend.load("sha256")
    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()}-{platform.machine()}",
        "extensions_disabled": _backend.NO_EXTENSIONS,
        "modules": modules,
        "sha256_path": sha.get_path(),
        "sha256_supported_paths": list(sha.supported_paths()),
        "cpu_features": list(sha.cpu_features()),
    }


def format_config(cfg: dict[str, Any]) -> str:
    lines = [f"ebsfast {cfg['version']} (Python {cfg['python']}, {cfg['platform']})"]
    if cfg["extensions_disabled"]:
        lines.append("native extensions: disabled by EBSFAST_NO_EXTENSIONS")
    for name, st in cfg["modules"].items():
        extra = f" ({st['reason']})" if st["reason"] else ""
        lines.append(f"  {name:<8} {st['kind']}{extra}")
    lines.append(f"SHA-256 path: {cfg['sha256_path']} "
                 f"(supported here: {', '.join(cfg['sha256_supported_paths'])})")
    lines.append(f"CPU features: {', '.join(cfg['cpu_features']) or 'none detected'}")
    return "\n".join(lines)
