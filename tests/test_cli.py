"""The ``ebsfast`` command line: every command against a local EBS server, exit codes, error
advice, JSON output and the progress display.

Most tests run ``ebsfast.cli.main([...])`` in this process (fast, and capsys sees the output);
a few run ``python -m ebsfast`` for real, where exit codes and the split between stdout and
stderr are what a script sees.
"""
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from ebsfast import cli
from ebsfast._progress import Progress, format_bytes, format_duration
from ebsfast.testing import EBSServer

BLOCK = 524288
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
           "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_DEFAULT_REGION",
           "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EBS", "AWS_CA_BUNDLE",
           "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
           "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS")


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server():
    with EBSServer() as srv:
        yield srv


def _isolate(monkeypatch, tmp_path):
    """No AWS configuration from this machine: empty config files, no metadata service."""
    for name in AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("EBSFAST_DEBUG_CLI", raising=False)


@pytest.fixture
def aws(monkeypatch, tmp_path, server):
    """The environment of someone pointed at the local server, and the flags they pass."""
    _isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", server.region)
    return ["--endpoint-url", server.endpoint_url, "--workers", "4"]


def run(capsys, *argv):
    """cli.main in this process: (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def subprocess_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in AWS_ENV}
    env.update(extra)
    return env


def run_module(*argv, env, timeout=60):
    return subprocess.run([sys.executable, "-m", "ebsfast", *map(str, argv)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def write_image(path, n_blocks, seed=0, zero_every=3):
    """An image with data blocks and, every ``zero_every``-th block, zeros."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, n_blocks * BLOCK, dtype=np.uint8)
    for i in range(0, n_blocks, zero_every):
        data[i * BLOCK:(i + 1) * BLOCK] = 0
    data.tofile(path)
    return data


def head(path, nbytes):
    """The first bytes of a file (a downloaded image is as long as its 1 GiB volume)."""
    with open(path, "rb") as f:
        return f.read(nbytes)


def overwrite_blocks(path, indexes, seed):
    rng = np.random.default_rng(seed)
    with open(path, "r+b") as f:
        for i in indexes:
            f.seek(i * BLOCK)
            f.write(rng.bytes(BLOCK))


# -- the progress display ----------------------------------------------------------------------
class FakeTTY(io.StringIO):
    def isatty(self):
        return True


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def frames(stream):
    return [f.rstrip() for f in stream.getvalue().replace("\n", "\r").split("\r") if f.strip()]


def test_progress_shows_blocks_rate_throughput_and_eta():
    stream, clock = FakeTTY(), FakeClock()
    p = Progress("download snap-1", stream=stream, clock=clock, width=200)
    for i in range(1, 11):
        clock.t += 0.5
        p(i * 10, 200, i * 10 * BLOCK)
    line = frames(stream)[-1]
    assert "download snap-1" in line
    assert "100/200 blocks" in line and " 50%" in line
    assert "20 blocks/s" in line  # 10 blocks every 0.5 s
    assert f"{20 * BLOCK / 1e6:.1f} MB/s" in line
    assert "ETA 0:05" in line  # 100 blocks left at 20 a second
    p.close()
    final = frames(stream)[-1]
    assert "200/200" not in final and "100/200 blocks" in final and "in 5.0 s" in final
    assert stream.getvalue().endswith("\n")


def test_progress_redraws_at_most_every_interval():
    stream, clock = FakeTTY(), FakeClock()
    p = Progress("x", stream=stream, clock=clock, interval_s=0.1, width=200)
    for i in range(1000):  # 1000 calls over 1 s: about 10 draws, not 1000
        clock.t += 0.001
        p(i, 1000, i * BLOCK)
    assert 9 <= len(frames(stream)) <= 12


def test_progress_is_silent_when_not_a_tty():
    stream = io.StringIO()
    with Progress("x", stream=stream) as p:
        for i in range(100):
            p(i, 100, i * BLOCK)
    assert stream.getvalue() == ""
    assert p.done_blocks == 99  # still counts


def test_progress_wipes_its_line_on_error():
    stream, clock = FakeTTY(), FakeClock()
    with pytest.raises(RuntimeError):
        with Progress("x", stream=stream, clock=clock, width=200) as p:
            p(5, 10, 5 * BLOCK)
            raise RuntimeError("boom")
    tail = stream.getvalue().rsplit("\r", 2)
    assert tail[-1] == "" and tail[-2].strip() == ""  # blanked, cursor back at column 0


def test_progress_never_goes_backwards_and_fits_the_terminal():
    stream, clock = FakeTTY(), FakeClock()
    p = Progress("a-very-long-label-" * 5, stream=stream, clock=clock, width=40)
    p(50, 100, 50 * BLOCK)
    clock.t += 1
    p(40, 100, 40 * BLOCK)  # a late report from a slower worker
    assert p.done_blocks == 50
    assert all(len(f) <= 39 for f in frames(stream))


def test_progress_unknown_total_and_zero_elapsed():
    stream, clock = FakeTTY(), FakeClock()
    p = Progress("ls", stream=stream, clock=clock, width=200)
    p(7, None, 0)
    assert "7 blocks" in frames(stream)[-1] and "-- blocks/s" in frames(stream)[-1]


def test_progress_is_thread_safe():
    stream = FakeTTY()
    p = Progress("x", stream=stream, interval_s=0.0, width=200)
    lock = threading.Lock()
    count = [0]

    def work():
        for _ in range(500):
            with lock:
                count[0] += 1
                n = count[0]
            p(n, 4000, n * BLOCK)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p.close()
    pattern = re.compile(r"^x  \[[#.]{20}\] +\d+%  [\d,]+/4,000 blocks  ")
    assert all(pattern.match(f) for f in frames(stream))
    assert "4,000/4,000 blocks" in frames(stream)[-1]


def test_formatters():
    assert format_duration(5) == "0:05"
    assert format_duration(3723) == "1:02:03"
    assert format_bytes(512) == "512 B"
    assert format_bytes(268_435_456) == "268 MB"
    assert cli.format_ranges(np.array([0, 1, 2, 5, 7, 8])) == "0-2,5,7-8"
    assert cli.format_ranges([]) == ""


# -- usage errors: exit 2 ----------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    [], ["nope"], ["ls"], ["ls", "snap-1", "--workers", "0"], ["ls", "snap-1", "--workers", "x"],
    ["upload", "f.img", "--tag", "novalue"], ["diff", "snap-1"], ["serve", "--port", "70000"],
])
def test_bad_arguments_exit_2(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == cli.EXIT_USAGE
    assert "usage: ebsfast" in err
    assert out == ""


def test_help_and_version_exit_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "Exit codes" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("ebsfast ")


def test_info_text_and_json(capsys):
    code, out, _ = run(capsys, "info")
    assert code == 0 and "SHA-256 path:" in out
    assert "version" in run_json(capsys, "info")


def test_manifest_needs_parent(capsys, aws, tmp_path):
    img = tmp_path / "a.img"
    write_image(img, 2)
    (tmp_path / "m.json").write_text("{}")
    code, out, err = run(capsys, "upload", img, "--manifest", tmp_path / "m.json", *aws)
    assert code == cli.EXIT_USAGE and out == ""
    assert "needs --parent" in err and "hint:" in err


# -- error descriptions ------------------------------------------------------------------------
def test_service_errors_are_advice_with_exit_3():
    from ebsfast.exceptions import ClientError

    exc = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "denied"}},
                      "GetSnapshotBlock")
    code, msg, hint = cli.describe_error(exc)
    assert code == cli.EXIT_SERVICE and "AccessDeniedException" in msg
    assert "ebs:GetSnapshotBlock" in hint
    exc = ClientError({"Error": {"Code": "RequestThrottledException", "Message": "slow"}},
                      "GetSnapshotBlock")
    assert "--workers" in cli.describe_error(exc)[2]


@pytest.mark.parametrize("name, kwargs, code, words", [
    ("NoCredentialsError", {}, 4, "aws configure"),
    ("NoRegionError", {}, 4, "--region"),
    ("ProfileNotFound", {"profile": "work"}, 4, "list-profiles"),
    ("EndpointConnectionError", {"endpoint_url": "http://x"}, 5, "--endpoint-url"),
    ("ReadTimeoutError", {"endpoint_url": "http://x"}, 5, "--workers"),
    ("SSLError", {"endpoint_url": "https://x", "error": "bad"}, 5, "--ca-bundle"),
    ("HTTPClientError", {"error": "[SSL: CERTIFICATE_VERIFY_FAILED] self-signed"}, 5,
     "--ca-bundle"),
    ("ChecksumMismatchError", {"snapshot_id": "snap-1", "block_index": 3, "expected": "a",
                               "actual": "b", "length": 4}, 5, "damaged in transit"),
    ("ChecksumMissingError", {"snapshot_id": "snap-1", "block_index": 3, "algorithm": "absent",
                              "length": 4}, 5, "without the checksums EBS sends"),
])
def test_configuration_and_network_errors(name, kwargs, code, words):
    from ebsfast import exceptions

    got_code, msg, hint = cli.describe_error(getattr(exceptions, name)(**kwargs))
    assert got_code == code
    assert words in msg + hint


def test_local_io_errors_exit_6():
    import errno

    code, msg, hint = cli.describe_error(OSError(errno.ENOSPC, "No space left", "/d/x.img"))
    assert code == cli.EXIT_IO and "No space left" in msg and "/d/x.img" in msg
    code, msg, _ = cli.describe_error(PermissionError(errno.EACCES, "denied", "/root/x"))
    assert code == cli.EXIT_IO and "Permission denied: /root/x" in msg


def test_interrupt_and_unexpected_errors():
    import argparse

    code, msg, hint = cli.describe_error(KeyboardInterrupt(),
                                         argparse.Namespace(command="download"))
    assert code == cli.EXIT_INTERRUPTED and "resume" in hint
    code, msg, hint = cli.describe_error(ZeroDivisionError("x"))
    assert code == cli.EXIT_INTERNAL and "EBSFAST_DEBUG_CLI" in hint


def test_a_wrapped_cause_decides_the_exit_code():
    from ebsfast import exceptions

    try:
        try:
            raise exceptions.EndpointConnectionError(endpoint_url="http://x")
        except Exception as inner:
            raise RuntimeError("block 7 of snap-1 failed") from inner
    except RuntimeError as exc:
        assert cli.describe_error(exc)[0] == cli.EXIT_NETWORK


def test_no_credentials_exit_4_with_advice(capsys, monkeypatch, tmp_path, server):
    _isolate(monkeypatch, tmp_path)
    code, out, err = run(capsys, "ls", "snap-0123456789abcdef0", "--region", "us-east-1",
                         "--endpoint-url", server.endpoint_url)
    assert code == cli.EXIT_CONFIG
    assert out == ""
    assert "No AWS credentials found" in err and "ebsfast demo" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 2


def test_no_region_exit_4(capsys, monkeypatch, tmp_path):
    _isolate(monkeypatch, tmp_path)
    code, _, err = run(capsys, "ls", "snap-0123456789abcdef0")
    assert code == cli.EXIT_CONFIG and "--region" in err


def test_unknown_profile_exit_4(capsys, monkeypatch, tmp_path):
    _isolate(monkeypatch, tmp_path)
    code, _, err = run(capsys, "ls", "snap-0123456789abcdef0", "--profile", "nosuch",
                       "--region", "us-east-1")
    assert code == cli.EXIT_CONFIG and "'nosuch'" in err


def test_refused_endpoint_exit_5(capsys, aws, monkeypatch):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    code, out, err = run(capsys, "ls", "snap-0123456789abcdef0",
                         "--endpoint-url", f"http://127.0.0.1:{port}")
    assert code == cli.EXIT_NETWORK and out == ""
    assert f"127.0.0.1:{port}" in err and "hint:" in err


def test_debug_env_prints_the_traceback(capsys, monkeypatch, tmp_path):
    _isolate(monkeypatch, tmp_path)
    monkeypatch.setenv("EBSFAST_DEBUG_CLI", "1")
    code, _, err = run(capsys, "ls", "snap-0123456789abcdef0")
    assert code == cli.EXIT_CONFIG and "Traceback" in err


def test_errors_never_print_the_secret(capsys, aws, server, monkeypatch):
    # Wrong secret: the service refuses the signature; the message must not echo the secret.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-0123456789")
    code, out, err = run(capsys, "ls", "snap-0123456789abcdef0", *aws)
    assert code == cli.EXIT_SERVICE
    assert "InvalidSignatureException" in err and "secret key" in err
    assert "wrong-secret-0123456789" not in err + out
    assert server.secret_key not in err + out


# -- serve -------------------------------------------------------------------------------------
def test_serve_prints_credentials_and_serves_boto3(tmp_path):
    boto3 = pytest.importorskip("boto3")
    proc = subprocess.Popen([sys.executable, "-m", "ebsfast", "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env())
    try:
        info = {}
        for line in proc.stdout:
            if line.startswith("serving"):
                break
            key, _, value = line.strip().partition("=")
            info[key] = value
        assert {"endpoint_url", "region", "aws_access_key_id",
                "aws_secret_access_key"} <= set(info)
        ebs = boto3.client("ebs", endpoint_url=info["endpoint_url"], region_name=info["region"],
                           aws_access_key_id=info["aws_access_key_id"],
                           aws_secret_access_key=info["aws_secret_access_key"])
        snap = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
        assert snap.startswith("snap-")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)  # generous: the machine may be shared
    assert proc.returncode == 0
    assert "Traceback" not in err


def test_serve_stops_on_sigterm():
    proc = subprocess.Popen([sys.executable, "-m", "ebsfast", "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env())
    for line in proc.stdout:
        if line.startswith("serving"):
            break
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err


def test_serve_port_in_use_exit_6(capsys, server):
    code, _, err = run(capsys, "serve", "--port", server.port)
    assert code == cli.EXIT_IO and "--port 0" in err


# -- the whole cycle against the local server --------------------------------------------------
def test_upload_ls_download_verify_change_upload_diff_apply_verify(capsys, aws, tmp_path):
    img = tmp_path / "disk.img"
    write_image(img, 12)  # blocks 0, 3, 6, 9 are zeros
    up = run_json(capsys, "upload", img, "--omit-zero-blocks", "--description", "cli test",
                  "--tag", "team=storage", "--tag", "empty=", *aws)
    base = up["snapshot_id"]
    assert base.startswith("snap-") and up["blocks_written"] == 8
    manifest = up["manifest"]
    assert os.path.exists(manifest)

    ls = run_json(capsys, "ls", base, "--blocks", *aws)
    assert ls["blocks"] == 8 and ls["volume_size_gib"] == 1 and ls["block_size"] == BLOCK
    assert ls["indexes"] == [1, 2, 4, 5, 7, 8, 10, 11]
    code, out, err = run(capsys, "ls", base, "--blocks", *aws)
    assert code == 0 and "8 blocks" in out and "1 GiB" in out
    assert "indexes: 1-2,4-5,7-8,10-11" in out
    assert err == ""  # capsys is no TTY: no progress

    dest = tmp_path / "copy.img"
    dl = run_json(capsys, "download", base, dest, *aws)
    assert dl["blocks_fetched"] == 8
    assert head(dest, 12 * BLOCK) == img.read_bytes()
    code, out, _ = run(capsys, "verify", base, img, *aws)
    assert code == 0 and out.startswith("ok: ")

    overwrite_blocks(img, [1, 3], seed=7)  # change a data block, fill a zero one
    with open(img, "r+b") as f:  # and zero a data block
        f.seek(5 * BLOCK)
        f.write(bytes(BLOCK))
    code, out, _ = run(capsys, "verify", base, img, *aws)
    assert code == cli.EXIT_MISMATCH
    assert out.startswith("MISMATCH") and "1,3,5" in out
    vj = json.loads(run(capsys, "verify", base, img, "--json", *aws)[1])
    assert vj["ok"] is False and vj["mismatched"] == [1, 3, 5]

    child = run_json(capsys, "upload", img, "--parent", base, "--manifest", manifest,
                     "--omit-zero-blocks", *aws)
    assert child["blocks_written"] == 3 and child["parent_snapshot_id"] == base
    second = child["snapshot_id"]

    d = run_json(capsys, "diff", base, second, "--blocks", *aws)
    assert d["blocks"] == 3
    assert d["added"]["indexes"] == [3] and d["changed"]["indexes"] == [1, 5]
    assert d["removed"] == {"blocks": 0, "bytes": 0, "indexes": []}
    code, out, _ = run(capsys, "diff", base, second, *aws)
    assert code == 0 and "3 blocks differ" in out and "added" in out

    ap = run_json(capsys, "apply", dest, base, second, *aws)
    assert ap["blocks_changed"] == 3
    assert head(dest, 12 * BLOCK) == img.read_bytes()
    code, out, _ = run(capsys, "verify", second, dest, *aws)
    assert code == 0


def test_human_output_and_quiet_upload(capsys, aws, tmp_path):
    img = tmp_path / "q.img"
    write_image(img, 3)
    code, out, err = run(capsys, "upload", img, "-q", *aws)
    assert code == 0 and re.fullmatch(r"snap-[0-9a-f]+\n", out) and err == ""
    code, out, _ = run(capsys, "upload", img, *aws)
    assert code == 0 and out.startswith(f"uploaded {img} as snap-")
    assert "blocks written" in out and "manifest:" in out


def test_unknown_snapshot_exit_3(capsys, aws):
    code, out, err = run(capsys, "ls", "snap-0123456789abcdef0", "--json", *aws)
    assert code == cli.EXIT_SERVICE and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "snap-0123456789abcdef0" in lines[0]
    assert lines[1].startswith("hint:") and "--region" in lines[1]


def test_unwritable_destination_exit_6(capsys, aws, tmp_path):
    img = tmp_path / "u.img"
    write_image(img, 2)
    snap = run_json(capsys, "upload", img, *aws)["snapshot_id"]
    code, out, err = run(capsys, "download", snap, tmp_path / "no" / "such" / "dir.img", *aws)
    assert code == cli.EXIT_IO and out == ""
    assert "No such file or directory" in err and "hint:" in err
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        code, _, err = run(capsys, "download", snap, ro / "x.img", *aws)
        assert code == cli.EXIT_IO and "Permission denied" in err


def test_upload_of_missing_file_exit_6(capsys, aws, tmp_path):
    code, _, err = run(capsys, "upload", tmp_path / "missing.img", *aws)
    assert code == cli.EXIT_IO and "missing.img" in err


# -- for real, in a subprocess: what a script sees ---------------------------------------------
def _real_env(server, tmp_path, **extra):
    empty = tmp_path / "aws-empty"
    empty.write_text("")
    return subprocess_env(AWS_ACCESS_KEY_ID=server.access_key,
                          AWS_SECRET_ACCESS_KEY=server.secret_key,
                          AWS_DEFAULT_REGION=server.region, AWS_CONFIG_FILE=str(empty),
                          AWS_SHARED_CREDENTIALS_FILE=str(empty),
                          AWS_EC2_METADATA_DISABLED="true", **extra)


def test_subprocess_json_upload_and_disk_full(server, tmp_path):
    img = tmp_path / "s.img"
    write_image(img, 4)
    env = _real_env(server, tmp_path)
    p = run_module("upload", img, "--endpoint-url", server.endpoint_url, "--json", env=env)
    assert p.returncode == 0, p.stderr
    snap = json.loads(p.stdout)["snapshot_id"]  # stdout is the JSON and nothing else
    assert p.stderr == ""
    # A file size limit stands in for a full disk: the write fails part-way, for real.
    limit = ("import resource, signal, runpy, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
             "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20));"
             "sys.argv = ['ebsfast'] + sys.argv[1:]; runpy.run_module('ebsfast', "
             "run_name='__main__')")
    p = subprocess.run([sys.executable, "-c", limit, "download", snap, str(tmp_path / "d.img"),
                        "--endpoint-url", server.endpoint_url], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == cli.EXIT_IO, p.stderr
    assert p.stdout == ""
    assert "File too large" in p.stderr and "Traceback" not in p.stderr


def test_subprocess_exit_codes(server, tmp_path):
    env = _real_env(server, tmp_path, AWS_MAX_ATTEMPTS="1")
    p = run_module("ls", "--workers", "0", "snap-1", env=env)
    assert p.returncode == 2 and p.stdout == "" and "usage:" in p.stderr
    p = run_module("ls", "snap-0123456789abcdef0", "--endpoint-url", server.endpoint_url,
                   env=env)
    assert p.returncode == 3 and p.stdout == ""
    p = run_module("ls", "snap-0123456789abcdef0", "--endpoint-url", "http://127.0.0.1:9",
                   env=env)
    assert p.returncode == 5 and "Could not connect" in p.stderr
    bare = subprocess_env(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
                          AWS_EC2_METADATA_DISABLED="true", AWS_DEFAULT_REGION="us-east-1")
    p = run_module("ls", "snap-0123456789abcdef0", "--endpoint-url", server.endpoint_url,
                   env=bare)
    assert p.returncode == 4 and p.stdout == ""
    assert "No AWS credentials found" in p.stderr and "ebsfast demo" in p.stderr
    assert "Traceback" not in p.stderr and server.secret_key not in p.stderr


def test_ctrl_c_exits_130_and_the_rerun_resumes(tmp_path):
    from ebsfast.testing import Faults

    img = tmp_path / "i.img"
    write_image(img, 48, zero_every=1000)
    # Throttled reads make the download last about five seconds, so Ctrl-C lands in the middle
    # even when this machine is busy with other work.
    with EBSServer(faults=Faults(rate_limits={"GetSnapshotBlock": 10})) as srv:
        env = _real_env(srv, tmp_path)
        flags = ["--endpoint-url", srv.endpoint_url]
        p = run_module("upload", img, "-q", *flags, env=env)
        snap = p.stdout.strip()
        assert p.returncode == 0 and snap.startswith("snap-"), p.stderr
        dest = tmp_path / "d.img"
        proc = subprocess.Popen([sys.executable, "-m", "ebsfast", "download", snap, str(dest),
                                 *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        state = tmp_path / "d.img.partial.state"
        deadline = time.monotonic() + 30
        while not (state.exists() and state.stat().st_size > 200):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == cli.EXIT_INTERRUPTED, err
        assert out == "" and "Interrupted download" in err and "resume" in err
        assert "Traceback" not in err
        assert not dest.exists() and (tmp_path / "d.img.partial").exists()
        srv.set_faults(rate_limits={})
        p = run_module("download", snap, dest, "--json", *flags, env=env)
        assert p.returncode == 0, p.stderr
        result = json.loads(p.stdout)
        assert result["blocks_resumed"] > 0 and result["blocks_fetched"] < 48
        assert head(dest, 48 * BLOCK) == img.read_bytes()


def test_ctrl_c_during_a_stalled_download_exits_130_at_once(tmp_path):
    # Every block read stalls for 60 s, the client's read timeout: Ctrl-C must not wait that
    # out (nor the retries after it).
    img = tmp_path / "st.img"
    data = write_image(img, 8)
    with EBSServer(record_requests=True) as srv:
        env = _real_env(srv, tmp_path)
        flags = ["--endpoint-url", srv.endpoint_url]
        p = run_module("upload", img, "-q", *flags, env=env)
        snap = p.stdout.strip()
        assert p.returncode == 0 and snap.startswith("snap-"), p.stderr
        srv.set_faults(stall_rate=1.0, stall_s=60, operations={"GetSnapshotBlock"})
        dest = tmp_path / "st-out.img"
        proc = subprocess.Popen([sys.executable, "-m", "ebsfast", "download", snap, str(dest),
                                 "--workers", "2", *flags], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        try:
            deadline = time.monotonic() + 30
            while sum(1 for r in srv.requests
                      if r["method"] == "GET" and "/blocks/" in r["path"]) < 2:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=15)  # generous; the stall lasts 60 s
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == cli.EXIT_INTERRUPTED, err
        assert out == "" and "Interrupted download" in err and "resume" in err
        assert "Traceback" not in err
        assert not dest.exists() and (tmp_path / "st-out.img.partial").exists()
        srv.set_faults(stall_rate=0.0)
        p = run_module("download", snap, dest, "--json", *flags, env=env)
        assert p.returncode == 0, p.stderr
        assert head(dest, 8 * BLOCK) == data.tobytes()


def test_tls_server_needs_its_ca_bundle(capsys, monkeypatch, tmp_path):
    pytest.importorskip("cryptography")
    _isolate(monkeypatch, tmp_path)
    img = tmp_path / "t.img"
    write_image(img, 2)
    with EBSServer(tls=True) as srv:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", srv.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", srv.secret_key)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        flags = ["--endpoint-url", srv.endpoint_url, "--region", srv.region]
        code, out, err = run(capsys, "upload", img, "-q", *flags)
        assert code == cli.EXIT_NETWORK and out == ""
        assert "TLS certificate verification failed" in err and "--ca-bundle" in err
        code, out, err = run(capsys, "upload", img, "-q", "--ca-bundle", srv.ca_file, *flags)
        assert code == 0 and out.startswith("snap-"), err
