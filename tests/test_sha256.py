"""SHA-256 kernels (native and twin, every path) and the public ebsfast.checksums API, checked
against hashlib; plus argument validation, bounds checks, and path forcing and gating."""
from __future__ import annotations

import array
import base64
import hashlib
import mmap
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebsfast import checksums

# The fixtures only select a path; nothing in them is per-example state.
fast = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

SMALL_BS = 200  # not a multiple of 64, so block edges fall inside compression blocks
EBS_BS = 524288
PADDING_EDGES = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 191, 192, 193]


NO_EXTENSIONS = os.environ.get("EBSFAST_NO_EXTENSIONS", "") not in ("", "0")
SKIP_NATIVE = "EBSFAST_NO_EXTENSIONS=1: the native SHA-256 module is not under test"
NATIVE_PATHS = ("portable", "sha-ni", "sha-ni-x2")
B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def h(data) -> bytes:
    return hashlib.sha256(data).digest()


def expected_rows(data: bytes, bs: int) -> np.ndarray:
    n = -(-len(data) // bs)
    rows = [hashlib.sha256(data[i * bs:(i + 1) * bs]).digest() for i in range(n)]
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(n, 32)


def pattern(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def b64(rows: np.ndarray) -> list[str]:
    return [base64.b64encode(bytes(r)).decode() for r in rows]


# ---------------------------------------------------------------------------------------------
# Kernels: one-shot, pairwise, streaming


def test_fips_vectors(sha256_path):
    impl = sha256_path.impl
    vectors = {
        b"": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        b"abc": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq":
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        b"a" * 1_000_000: "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
    }
    for msg, hexd in vectors.items():
        assert impl.digest(msg).hex() == hexd
        assert impl.Hasher(msg).digest().hex() == hexd
        assert [d.hex() for d in impl.digest_pair(msg, msg)] == [hexd, hexd]


@fast
@given(data=st.binary(max_size=3 * SMALL_BS + 1))
def test_digest_matches_hashlib(sha256_path, data):
    assert sha256_path.impl.digest(data) == hashlib.sha256(data).digest()


@pytest.mark.parametrize("n", PADDING_EDGES)
def test_padding_edges(sha256_path, n):
    impl = sha256_path.impl
    a, b = pattern(n, 1), pattern(n + 7, 2)
    assert impl.digest(a) == hashlib.sha256(a).digest()
    assert impl.digest_pair(a, b) == (hashlib.sha256(a).digest(), hashlib.sha256(b).digest())
    assert impl.digest_pair(b[:n], a) == (hashlib.sha256(b[:n]).digest(),
                                          hashlib.sha256(a).digest())


def test_unaligned_starts(sha256_path):
    impl = sha256_path.impl
    buf = np.frombuffer(pattern(64 + 3 * 64 + 9, 3), dtype=np.uint8)
    for offset in range(1, 64):
        for length in (55, 64, 65, 3 * 64 + 9):
            piece = buf[offset:offset + length]
            assert impl.digest(piece) == hashlib.sha256(piece.tobytes()).digest(), (offset, length)
        a, b = buf[offset:offset + 150], buf[64 - offset:64 - offset + 150]
        assert impl.digest_pair(a, b) == (h(a), h(b))


@fast
@given(a=st.binary(max_size=400), b=st.binary(max_size=400))
def test_digest_pair_differs_per_lane(sha256_path, a, b):
    assert sha256_path.impl.digest_pair(a, b) == (hashlib.sha256(a).digest(),
                                                  hashlib.sha256(b).digest())


@fast
@given(chunks=st.lists(st.binary(max_size=150), max_size=8))
def test_streaming_matches_hashlib(sha256_path, chunks):
    hasher = sha256_path.impl.Hasher()
    ref = hashlib.sha256()
    for c in chunks:
        hasher.update(c)
        ref.update(c)
        assert hasher.digest() == ref.digest()  # digest() must not end the stream
    fork = hasher.copy()
    fork.update(b"x")
    assert hasher.digest() == ref.digest()
    assert fork.digest() == hashlib.sha256(b"".join(chunks) + b"x").digest()


def test_streaming_large_and_unaligned_updates(sha256_path):
    data = pattern(3 * 65536 + 77, 4)
    hasher = sha256_path.impl.Hasher()
    view = memoryview(data)
    pos = 0
    for size in (1, 63, 64, 65, 4095, 4096, 65537, 3):
        hasher.update(view[pos:pos + size])
        pos += size
    hasher.update(view[pos:])
    assert hasher.digest() == hashlib.sha256(data).digest()


def test_buffer_kinds(sha256_impl, tmp_path):
    raw = pattern(1000, 5)
    f = tmp_path / "blob"
    f.write_bytes(raw)
    with open(f, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert sha256_impl.digest(mm) == hashlib.sha256(raw).digest()
    floats = np.frombuffer(raw, dtype=np.float64)
    for obj in (raw, bytearray(raw), memoryview(raw), floats, floats.reshape(5, 25),
                floats.astype(">f8"), array.array("I", raw)):
        assert sha256_impl.digest(obj) == h(obj), type(obj)
    for empty in (b"", np.zeros((0, 3)), bytearray()):
        assert sha256_impl.digest(empty) == hashlib.sha256(b"").digest()


def test_large_message_releases_and_matches(sha256_path):
    data = pattern(EBS_BS + 13, 6)
    assert sha256_path.impl.digest(data) == hashlib.sha256(data).digest()


# ---------------------------------------------------------------------------------------------
# Kernels: digest_blocks / verify_digests


def _fresh(n: int) -> np.ndarray:
    return np.full((n, 32), 0xA5, dtype=np.uint8)


@fast
@given(data=st.binary(max_size=3 * SMALL_BS + 3), bs=st.sampled_from([1, 64, SMALL_BS, 256]),
       bounds=st.tuples(st.integers(0, 700), st.integers(0, 700)))
def test_digest_blocks_matches_hashlib(sha256_path, data, bs, bounds):
    impl = sha256_path.impl
    want = expected_rows(data, bs)
    n = len(want)
    out = _fresh(n)
    impl.digest_blocks(data, bs, out, 0, n)
    assert (out == want).all()
    start, stop = sorted(min(b, n) for b in bounds)
    out = _fresh(n)
    impl.digest_blocks(data, bs, out, start, stop)
    assert (out[start:stop] == want[start:stop]).all()
    assert (out[:start] == 0xA5).all() and (out[stop:] == 0xA5).all()


@pytest.mark.parametrize("nblocks,tail", [(1, 0), (2, 0), (3, 0), (2, 1000), (3, 64), (4, 1)])
def test_digest_blocks_real_block_size(sha256_path, nblocks, tail):
    """Odd and even counts of 512 KiB blocks with a short last block; every block differs, so
    both lanes of the two-lane path get their own data."""
    data = pattern(nblocks * EBS_BS + tail, 7 + nblocks)
    want = expected_rows(data, EBS_BS)
    out = _fresh(len(want))
    sha256_path.impl.digest_blocks(data, EBS_BS, out, 0, len(want))
    assert (out == want).all()
    for first in range(len(want)):  # ranges that start on an odd block pair differently
        out = _fresh(len(want))
        sha256_path.impl.digest_blocks(data, EBS_BS, out, first, len(want))
        assert (out[first:] == want[first:]).all() and (out[:first] == 0xA5).all()


def test_digest_blocks_unaligned(sha256_path):
    buf = np.frombuffer(pattern(4 * 300 + 64, 8), dtype=np.uint8)
    for offset in range(1, 64):
        piece = buf[offset:offset + 4 * 300 - offset]
        want = expected_rows(piece.tobytes(), 300)
        out = _fresh(len(want))
        sha256_path.impl.digest_blocks(piece, 300, out, 0, len(want))
        assert (out == want).all(), offset


@fast
@given(data=st.binary(min_size=1, max_size=3 * SMALL_BS), flips=st.sets(st.integers(0, 599)))
def test_verify_digests(sha256_path, data, flips):
    impl = sha256_path.impl
    want = expected_rows(data, SMALL_BS)
    n = len(want)
    bad_rows = {i % n for i in flips}
    expected = want.copy()
    for i in bad_rows:
        expected[i, i % 32] ^= 1
    for result in (np.zeros(n, dtype=np.bool_), np.full(n, 7, dtype=np.uint8)):
        assert impl.verify_digests(data, SMALL_BS, expected, result, 0, n) == len(bad_rows)
        assert [bool(r) for r in result] == [i not in bad_rows for i in range(n)]


@fast
@given(data=st.binary(max_size=2 * SMALL_BS + 5), start=st.integers(-3, 6),
       stop=st.integers(-3, 6), rows=st.integers(0, 5))
def test_native_and_twin_agree(data, start, stop, rows):
    """The twin is the specification: same rows written, same exception type, same argument."""
    if NO_EXTENSIONS:
        pytest.skip(SKIP_NATIVE)
    import ebsfast._sha256 as native
    import ebsfast._sha256_py as twin

    outcomes = []
    for impl in (native, twin):
        out = _fresh(rows)
        try:
            impl.digest_blocks(data, 100, out, start, stop)
            outcomes.append(("ok", out.tobytes()))
        except (ValueError, TypeError) as exc:
            outcomes.append((type(exc), str(exc).split()[0], out.tobytes()))
    assert outcomes[0] == outcomes[1]


# ---------------------------------------------------------------------------------------------
# Kernel argument checks, called directly


BAD_RANGES = [(-1, 1, "start"), (4, 4, "start"), (2, 1, "stop"), (0, 4, "stop"),
              (0, -1, "stop"), (2**70, 2**70, "start"), (0, 2**70, "stop"), (0, 2**64 - 1, "stop")]


@pytest.mark.parametrize("start,stop,name", BAD_RANGES)
def test_kernel_rejects_bad_ranges(sha256_impl, start, stop, name):
    data = bytes(250)  # 3 blocks of 100
    out = _fresh(3)
    with pytest.raises(ValueError, match=name):
        sha256_impl.digest_blocks(data, 100, out, start, stop)
    assert (out == 0xA5).all()
    result = np.zeros(3, dtype=np.bool_)
    with pytest.raises(ValueError, match=name):
        sha256_impl.verify_digests(data, 100, out, result, start, stop)
    assert not result.any()


def test_kernel_rejects_bad_arrays(sha256_impl):
    data = bytes(250)
    k = sha256_impl
    for out in (_fresh(2), _fresh(4), np.zeros((3, 31), np.uint8), np.zeros(96, np.uint8),
                np.zeros((3, 32), np.uint16), np.zeros((3, 32), np.float32)):
        with pytest.raises(ValueError, match="out"):
            k.digest_blocks(data, 100, out, 0, 3)
    with pytest.raises(ValueError, match="out"):
        k.digest_blocks(data, 100, np.zeros((32, 3), np.uint8).T, 0, 3)
    ro = _fresh(3)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="out"):
        k.digest_blocks(data, 100, ro, 0, 3)
    with pytest.raises(ValueError, match="out"):
        k.digest_blocks(data, 100, bytes(96), 0, 3)
    with pytest.raises(TypeError, match="out"):
        k.digest_blocks(data, 100, None, 0, 3)
    with pytest.raises(TypeError, match="data"):
        k.digest_blocks(None, 100, _fresh(3), 0, 3)
    with pytest.raises(ValueError, match="data"):
        k.digest_blocks(np.zeros(500, np.uint8)[::2], 100, _fresh(3), 0, 3)
    for bs, exc in ((0, ValueError), (-5, ValueError), (1.5, TypeError), (True, TypeError),
                    ("100", TypeError)):
        with pytest.raises(exc, match="block_size"):
            k.digest_blocks(data, bs, _fresh(3), 0, 3)
    with pytest.raises(TypeError, match="start"):
        k.digest_blocks(data, 100, _fresh(3), 0.0, 3)
    good = _fresh(3)
    for expected in (_fresh(2), np.zeros((3, 32), np.int16)):
        with pytest.raises(ValueError, match="expected"):
            k.verify_digests(data, 100, expected, np.zeros(3, np.bool_), 0, 3)
    for result in (np.zeros(2, np.bool_), np.zeros(3, np.int32), np.zeros((3, 1), np.bool_)):
        with pytest.raises(ValueError, match="result"):
            k.verify_digests(data, 100, good, result, 0, 3)
    with pytest.raises(ValueError, match="result"):
        k.verify_digests(data, 100, good, b"\0\0\0", 0, 3)
    # A huge block size is one block, not an overflow.
    out = _fresh(1)
    k.digest_blocks(data, 2**80, out, 0, 1)
    assert bytes(out[0]) == hashlib.sha256(data).digest()
    with pytest.raises(TypeError, match="data"):
        k.digest(12)
    with pytest.raises(ValueError, match="data"):
        k.digest(memoryview(bytes(10))[::2])


# ---------------------------------------------------------------------------------------------
# Paths: selection, gating, forcing


def test_paths_and_gating(sha256_impl):
    k = sha256_impl
    supported = k.supported_paths()
    assert k.get_path() in supported
    assert set(supported) <= set(k.all_paths())
    for p in supported:
        assert k.self_test(p)
    if k.IMPLEMENTATION == "native":
        assert k.all_paths() == ["portable", "sha-ni", "sha-ni-x2"]
        assert "portable" in supported
        feats = set(k.cpu_features())
        assert feats <= {"sha", "sse4.1", "ssse3", "avx2"}
        if not {"sha", "sse4.1", "ssse3"} <= feats:
            assert supported == ["portable"]
        # With no request, the fastest supported path is chosen.
        if os.environ.get("EBSFAST_SHA256", "") in ("", "auto"):
            assert k.PATH_WARNING is None
    else:
        assert supported == ["python"] and k.cpu_features() == []
    for bad in ("nonesuch", "SHA-NI", ""):
        with pytest.raises(ValueError, match="path"):
            k.set_path(bad)
    with pytest.raises(TypeError, match="name"):
        k.set_path(1)
    unsupported = [p for p in k.all_paths() if p not in supported]
    before = k.get_path()
    for p in unsupported:
        with pytest.raises(ValueError, match="not supported"):
            k.set_path(p)
    assert k.get_path() == before


def _run_child(env_extra: dict[str, str], code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("EBSFAST_SHA256", "EBSFAST_NO_EXTENSIONS")}
    env.update(env_extra)
    # conftest points PYTHONPATH at the ebsfast under test and runs from a scratch directory
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=60, check=True)


CHILD = """
    import hashlib
    import ebsfast._sha256{suffix} as m
    assert m.digest(b"abc" * 1000) == hashlib.sha256(b"abc" * 1000).digest()
    print(m.get_path(), m.PATH_WARNING is not None, ",".join(m.supported_paths()))
"""


def test_env_forces_each_path():
    if NO_EXTENSIONS:
        pytest.skip(SKIP_NATIVE)
    import ebsfast._sha256 as native

    supported = native.supported_paths()
    for p in NATIVE_PATHS:
        r = _run_child({"EBSFAST_SHA256": p}, CHILD.format(suffix=""))
        path, warned, _ = r.stdout.split()
        if p in supported:
            assert (path, warned) == (p, "False")
            assert "RuntimeWarning" not in r.stderr
        else:  # forced but unsupported: best supported path, and a warning saying so
            assert (path, warned) == (supported[-1], "True")
            assert "RuntimeWarning" in r.stderr and p in r.stderr


@pytest.mark.parametrize("value", ["nonesuch", "python"])
def test_env_unusable_request_warns_native(value):
    if NO_EXTENSIONS:
        pytest.skip(SKIP_NATIVE)
    r = _run_child({"EBSFAST_SHA256": value}, CHILD.format(suffix=""))
    path, warned, supported = r.stdout.split()
    assert path == supported.split(",")[-1] and warned == "True"
    assert "RuntimeWarning" in r.stderr and "EBSFAST_SHA256" in r.stderr


@pytest.mark.parametrize("value,warns", [("python", False), ("auto", False), ("sha-ni", True)])
def test_env_request_twin(value, warns):
    r = _run_child({"EBSFAST_SHA256": value, "EBSFAST_NO_EXTENSIONS": "1"},
                   CHILD.format(suffix="_py"))
    assert r.stdout.split()[:2] == ["python", str(warns)]
    assert ("RuntimeWarning" in r.stderr) == warns


# ---------------------------------------------------------------------------------------------
# Public API: ebsfast.checksums


def test_public_sha256(checksums_on_path):
    c = checksums_on_path
    for n in PADDING_EDGES:
        data = pattern(n, n)
        assert c.sha256(data) == hashlib.sha256(data).digest()
    with pytest.raises(TypeError, match="data"):
        c.sha256("text")
    with pytest.raises(ValueError, match="data"):
        c.sha256(np.zeros((4, 4), np.uint8)[:, 1])


@fast
@given(data=st.binary(max_size=3 * SMALL_BS + 1), threads=st.sampled_from([None, 1, 2, 3, 7]))
def test_sha256_blocks_matches_hashlib(checksums_on_path, data, threads):
    got = checksums_on_path.sha256_blocks(data, SMALL_BS, threads=threads)
    assert got.dtype == np.uint8 and got.shape == (-(-len(data) // SMALL_BS), 32)
    assert (got == expected_rows(data, SMALL_BS)).all()


def test_sha256_blocks_threads_equal(checksums_on_path):
    c = checksums_on_path
    data = np.frombuffer(pattern(5 * EBS_BS + 999, 9), dtype=np.uint8)
    one = c.sha256_blocks(data, threads=1)
    assert (one == expected_rows(data.tobytes(), EBS_BS)).all()
    for threads in (None, 2, 3, 4, 6, 16):
        assert (c.sha256_blocks(data, threads=threads) == one).all(), threads
    # Small blocks, many threads: ranges of whole pairs, last one odd.
    data = data[: 13 * 1000 + 1]
    one = c.sha256_blocks(data, 1000, threads=1)
    for threads in (2, 3, 5, 7):
        assert (c.sha256_blocks(data, 1000, threads=threads) == one).all(), threads


def test_sha256_blocks_out(checksums_on_path):
    c = checksums_on_path
    data = pattern(3 * 100 + 1, 10)
    out = np.zeros((4, 32), np.uint8)
    got = c.sha256_blocks(data, 100, out=out, threads=2)
    assert got is out and (out == expected_rows(data, 100)).all()
    assert c.sha256_blocks(b"", 100).shape == (0, 32)
    assert c.sha256_blocks(b"", 100, out=np.zeros((0, 32), np.uint8)).shape == (0, 32)
    ro = np.zeros((4, 32), np.uint8)
    ro.setflags(write=False)
    bad_outs = [np.zeros((3, 32), np.uint8), np.zeros((4, 32), np.int8), np.zeros((4, 33), np.uint8),
                np.zeros((32, 4), np.uint8).T, ro, bytearray(128), [[0] * 32] * 4]
    for bad in bad_outs:
        with pytest.raises(ValueError, match="out"):
            c.sha256_blocks(data, 100, out=bad)


def test_public_argument_errors(checksums_on_path):
    c = checksums_on_path
    for bs, exc in ((0, ValueError), (-1, ValueError), (1.0, TypeError), (True, TypeError),
                    (None, TypeError), ("512", TypeError)):
        for call in (lambda: c.sha256_blocks(b"abc", bs),
                     lambda: c.verify_blocks(b"abc", [bytes(32)], bs)):
            with pytest.raises(exc, match="block_size"):
                call()
    for threads, exc in ((0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="threads"):
            c.sha256_blocks(b"abc", 1, threads=threads)
    with pytest.raises(TypeError, match="data"):
        c.sha256_blocks(12345)
    with pytest.raises(TypeError, match="data"):
        c.sha256_blocks("a str is not bytes")
    with pytest.raises(ValueError, match="data"):
        c.sha256_blocks(np.zeros(100, np.uint8)[::2], 10)
    with pytest.raises(ValueError, match="data"):
        c.sha256_blocks(np.array([object()]), 10)
    with pytest.raises(TypeError, match="data"):
        c.verify_blocks(None, [])
    assert c.sha256_blocks(np.uint64(5).tobytes(), np.int64(3)).shape == (3, 32)


@pytest.mark.parametrize("data", [
    np.zeros(3, dtype=[("FOO", "i4"), ("Obj", "f8")]),  # field names with a capital O
    np.arange(5).astype("M8[s]"),  # datetimes and timedeltas cannot describe their items
    np.arange(6).astype("m8[ms]").reshape(2, 3),
], ids=["record-fields", "datetime64", "timedelta64"])
def test_numpy_arrays_hash_as_hashlib_reads_them(checksums_on_path, data):
    c = checksums_on_path
    want = hashlib.sha256(data).digest()
    assert bytes(c.sha256(data)) == want
    assert c.sha256_blocks(data, len(want) + 9)[0].tobytes() == hashlib.sha256(
        memoryview(data.reshape(-1).view(np.uint8))[:len(want) + 9]).digest()
    assert c.verify_blocks(data, [base64.b64encode(want).decode()], data.nbytes).all()


def test_arrays_holding_objects_are_refused(checksums_on_path):
    for data in (np.array([object()]), np.zeros(2, dtype=[("a", "i4"), ("b", "O")])):
        with pytest.raises(ValueError, match="Python objects"):
            checksums_on_path.sha256(data)


def test_verify_blocks_all_forms(checksums_on_path):
    c = checksums_on_path
    data = pattern(4 * 100 + 50, 11)
    rows = expected_rows(data, 100)
    forms = {
        "b64 str": b64(rows),
        "b64 bytes": [s.encode() for s in b64(rows)],
        "raw bytes": [bytes(r) for r in rows],
        "bytearray/memoryview": [bytearray(rows[0]), memoryview(bytes(rows[1]))] +
                                [bytes(r) for r in rows[2:]],
        "mixed": [b64(rows)[0], bytes(rows[1]), b64(rows)[2].encode(), bytes(rows[3]), b64(rows)[4]],
        "array": rows,
        "array non-contiguous": np.asfortranarray(rows),
        "tuple": tuple(b64(rows)),
    }
    for name, checks in forms.items():
        got = c.verify_blocks(data, checks, 100)
        assert got.dtype == np.bool_ and got.tolist() == [True] * 5, name
    corrupt = bytearray(data)
    corrupt[3 * 100 + 17] ^= 0x40
    for threads in (1, 2, None):
        assert c.verify_blocks(corrupt, b64(rows), 100, threads=threads).tolist() == \
            [True, True, True, False, True]
    assert c.verify_blocks(b"", [], 100).shape == (0,)


def test_verify_blocks_real_blocks(checksums_on_path):
    c = checksums_on_path
    data = bytearray(pattern(3 * EBS_BS + 5, 12))
    sums = b64(expected_rows(bytes(data), EBS_BS))
    assert c.verify_blocks(data, sums).all()
    data[EBS_BS + 1] ^= 1
    assert c.verify_blocks(data, sums).tolist() == [True, False, True, True]


def test_verify_blocks_bad_checksums(checksums_on_path):
    c = checksums_on_path
    data = pattern(300, 13)
    good = b64(expected_rows(data, 100))
    with pytest.raises(ValueError, match="checksums has 2 entries; data has 3 blocks"):
        c.verify_blocks(data, good[:2], 100)
    with pytest.raises(ValueError, match="checksums"):
        c.verify_blocks(data, good + good[:1], 100)
    canon = good[1]
    # 32 bytes fill 43 base64 digits but for 2 bits, which a canonical encoder leaves zero.
    non_canonical = canon[:42] + B64_ALPHABET[B64_ALPHABET.index(canon[42]) ^ 1] + "="
    malformed = [canon[:43], canon + "=", canon[:10] + "!" + canon[11:], canon[:43] + "A",
                 canon[:20] + " " + canon[21:], "é" * 44, canon[:42] + "==", b"\x00" * 31,
                 canon.encode()[:-1], non_canonical]
    for bad in malformed:
        checks = list(good)
        checks[1] = bad
        with pytest.raises(ValueError, match=r"checksums\[1\]"):
            c.verify_blocks(data, checks, 100)
    for bad in (None, 5, 1.0):
        with pytest.raises(TypeError, match=r"checksums\[2\]"):
            c.verify_blocks(data, good[:2] + [bad], 100)
    for bad in ("x" * 44, b"y" * 32, 7):
        with pytest.raises(TypeError, match="checksums"):
            c.verify_blocks(data, bad, 100)
    for bad in (np.zeros((3, 31), np.uint8), np.zeros((3, 32), np.int8), np.zeros(96, np.uint8)):
        with pytest.raises(ValueError, match="checksums"):
            c.verify_blocks(data, bad, 100)


def test_linear_checksum(checksums_on_path):
    c = checksums_on_path
    data = pattern(7 * 100 + 3, 14)
    rows = expected_rows(data, 100)
    want = base64.b64encode(hashlib.sha256(b"".join(
        hashlib.sha256(data[i:i + 100]).digest() for i in range(0, len(data), 100))).digest()
    ).decode()
    assert c.linear_checksum(rows) == want
    assert c.linear_checksum(c.sha256_blocks(data, 100)) == want
    assert c.linear_checksum([bytes(r) for r in rows]) == want
    assert c.linear_checksum(b64(rows)) == want
    assert c.linear_checksum(rows[::-1][::-1]) == want
    assert c.linear_checksum([]) == base64.b64encode(hashlib.sha256(b"").digest()).decode()
    assert c.linear_checksum(rows[::-1]) != want  # order matters
    with pytest.raises(ValueError, match=r"digests\[0\]"):
        c.linear_checksum(["not base64"])
    with pytest.raises(ValueError, match="digests"):
        c.linear_checksum(np.zeros((2, 16), np.uint8))
    with pytest.raises(TypeError, match="digests"):
        c.linear_checksum(bytes(64))


def test_public_api_is_backend_kernel():
    import ebsfast._backend as backend

    assert checksums._kernel is backend.load("sha256")
    assert checksums.DEFAULT_BLOCK_SIZE == 524288
