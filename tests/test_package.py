"""The package as a user meets it: imports, show_config, ``python -m ebsfast info``."""
import json
import os
import subprocess
import sys

import ebsfast
from ebsfast import _backend

NO_EXTENSIONS = os.environ.get("EBSFAST_NO_EXTENSIONS", "") not in ("", "0")


def _run(args, **env):
    full_env = dict(os.environ)
    full_env.update(env)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env=full_env, timeout=120, check=True)


def test_show_config_describes_this_build():
    cfg = ebsfast.show_config()
    assert cfg["version"] == ebsfast.__version__
    assert set(cfg["modules"]) >= {"sha256", "sigv4"}
    expected = "python" if NO_EXTENSIONS else "native"
    assert {m["kind"] for m in cfg["modules"].values()} == {expected}
    assert cfg["sha256_path"] in cfg["sha256_supported_paths"]
    assert cfg["extensions_disabled"] is NO_EXTENSIONS


def test_info_command_prints_config_as_text_and_json():
    text = _run(["-m", "ebsfast", "info"]).stdout
    assert f"ebsfast {ebsfast.__version__}" in text
    assert "SHA-256 path:" in text
    cfg = json.loads(_run(["-m", "ebsfast", "info", "--json"]).stdout)
    assert cfg["version"] == ebsfast.__version__
    assert cfg["sha256_path"] == ebsfast.show_config()["sha256_path"]


def test_no_extensions_selects_every_twin():
    out = _run(["-c", "import ebsfast, json; print(json.dumps(ebsfast.show_config()))"],
               EBSFAST_NO_EXTENSIONS="1").stdout
    cfg = json.loads(out)
    assert cfg["extensions_disabled"] is True
    assert all(m["kind"] == "python" for m in cfg["modules"].values())
    assert all("EBSFAST_NO_EXTENSIONS" in m["reason"] for m in cfg["modules"].values())
    # The twin hashes the same as the native build would.
    digest = _run(["-c", "import ebsfast; print(ebsfast.sha256(b'abc').hex())"],
                  EBSFAST_NO_EXTENSIONS="1").stdout.strip()
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_backend_load_is_cached_and_reports_kind():
    mod = _backend.load("sha256")
    assert _backend.load("sha256") is mod
    assert _backend.status()["sha256"]["kind"] == ("python" if NO_EXTENSIONS else "native")


def test_console_script_entry_point_exists():
    from ebsfast.__main__ import main

    assert main(["info"]) == 0
    assert main([]) == 2
