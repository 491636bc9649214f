"""``ebsfast demo``: the README's main-job command, on a machine with no AWS configuration."""
import json
import os
import subprocess
import sys

import numpy as np

from ebsfast import cli, demo

BLOCK = 524288
STEPS = {"make images (local disk)", "upload base", "upload child (incremental)",
         "diff (listing only)", "download child", "verify child against image",
         "read: ebsfast.client, boto3-style code", "read: boto3, same blocks"}


def clean_env(home):
    """What a fresh machine has: no AWS variables, and a home without ~/.aws."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = str(home)
    return env


def test_demo_in_a_subprocess_with_no_aws_configuration(tmp_path):
    p = subprocess.run([sys.executable, "-m", "ebsfast", "demo", "--size-mib", "32", "--json"],
                       capture_output=True, text=True, env=clean_env(tmp_path), timeout=120)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)  # nothing but the JSON on stdout
    assert report["ok"] is True
    assert all(report["checks"].values()) and len(report["checks"]) >= 6
    assert {s["step"] for s in report["steps"]} == STEPS
    assert "subprocess" in report["server"]
    for s in report["steps"]:
        assert set(s) >= {"blocks", "bytes", "seconds", "blocks_per_s", "mb_per_s", "ok"}
    changed = report["image"]["changed_blocks"]
    child = next(s for s in report["steps"] if s["step"] == "upload child (incremental)")
    assert child["blocks"] == changed  # only the changed blocks were sent
    c = report["comparison"]
    assert c["boto3_mb_per_s"] > 0 and c["ebsfast_download_mb_per_s"] > 0
    assert not os.path.exists(tmp_path / ".aws")


def test_demo_table_in_process(capsys, tmp_path):
    code = cli.main(["demo", "--size-mib", "8", "--in-process", "--rounds", "2",
                     "--keep", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "all checks passed" in out
    assert "read: boto3, same blocks" in out and "MB/s" in out
    assert "read throughput: ebsfast download" in out
    assert "local EBS server: this process" in err  # notes go to stderr
    assert (tmp_path / "base.img.manifest.json").exists()


def test_demo_without_boto3_says_so(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 now raises ImportError
    code = cli.main(["demo", "--size-mib", "4", "--in-process", "--rounds", "1", "--json"])
    out, _ = capsys.readouterr()
    assert code == 0
    report = json.loads(out)
    assert report["ok"] is True
    assert "not installed" in report["comparison"]["boto3_skipped"]
    assert "read: boto3, same blocks" not in {s["step"] for s in report["steps"]}
    assert "boto3 comparison skipped" in demo.format_report(report)


def test_a_failed_check_exits_1(capsys, monkeypatch):
    monkeypatch.setattr(demo, "_same_bytes", lambda *a, **k: False)
    code = cli.main(["demo", "--size-mib", "4", "--in-process", "--rounds", "1"])
    out, _ = capsys.readouterr()
    assert code == cli.EXIT_MISMATCH
    assert "CHECKS FAILED: download_identical" in out


def test_image_mix_and_changes(tmp_path):
    base, child = tmp_path / "a.img", tmp_path / "b.img"
    info = demo.make_image(str(base), 64, seed=3)
    n = info["blocks"]
    assert n == 128 and base.stat().st_size == 64 << 20
    for kind in ("data_blocks", "zero_blocks", "repeated_blocks"):
        assert info[kind] >= n // 10
    # Zeros are holes: the file takes less disk than its length.
    assert base.stat().st_blocks * 512 < base.stat().st_size
    changed = demo.mutate_image(str(base), str(child), info["kinds"], seed=4)
    a = np.fromfile(base, dtype=np.uint8).reshape(n, BLOCK)
    b = np.fromfile(child, dtype=np.uint8).reshape(n, BLOCK)
    differs = np.flatnonzero(np.any(a != b, axis=1))
    assert np.array_equal(differs, changed)
    assert abs(len(changed) - n // 10) <= 2
    kinds = info["kinds"]
    assert np.any(~b[changed].any(axis=1))  # some blocks were zeroed
    assert np.any(kinds[changed] == 0)  # some zero blocks were filled
