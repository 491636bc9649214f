"""The snapshot jobs end to end against the local EBS server over real sockets: upload,
download (sparse, resumable, atomic), incremental upload, apply, verify, open, faults."""
from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import os
import random
import shutil
import time

import numpy as np
import pytest

import ebsfast
from ebsfast import snapshots
from ebsfast.manifest import Manifest, ManifestError, manifest_path
from ebsfast.snapshots import SnapshotError
from ebsfast.testing import BLOCK_SIZE, EBSServer

GIB = 1 << 30
N_FULL = 48  # whole blocks of the test image, plus a short last one: ~24.5 MiB
TAIL = 1000


def make_image(seed: int = 7) -> np.ndarray:
    """A realistic mix: random blocks, runs of zero blocks, a block zero but for one byte,
    a repetitive block, and a short last block."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=N_FULL * BLOCK_SIZE + TAIL, dtype=np.uint8)
    img[5 * BLOCK_SIZE:8 * BLOCK_SIZE] = 0
    img[30 * BLOCK_SIZE:33 * BLOCK_SIZE] = 0
    img[20 * BLOCK_SIZE:21 * BLOCK_SIZE] = 0
    img[20 * BLOCK_SIZE + 12345] = 1
    img[40 * BLOCK_SIZE:41 * BLOCK_SIZE] = np.frombuffer(b"ebsfast!" * (BLOCK_SIZE // 8),
                                                         dtype=np.uint8)
    return img


def padded(img: np.ndarray, nbytes: int = GIB) -> np.ndarray:
    out = np.zeros(nbytes, dtype=np.uint8)
    out[:len(img)] = img
    return out


def block_digest(img: np.ndarray, i: int) -> bytes:
    b = img[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE].tobytes()
    return hashlib.sha256(b.ljust(BLOCK_SIZE, b"\0")).digest()


def client_for(server, **retries):
    retries = retries or {"mode": "standard", "total_max_attempts": 5}
    return ebsfast.client("ebs", endpoint_url=server.endpoint_url, region_name=server.region,
                          aws_access_key_id=server.access_key,
                          aws_secret_access_key=server.secret_key,
                          config=ebsfast.Config(max_pool_connections=24, retries=retries,
                                                read_timeout=5))


def same_file(path: str, img: np.ndarray) -> bool:
    got = np.memmap(path, dtype=np.uint8, mode="r")  # holes cost nothing to map
    if len(got) < len(img):
        return False
    return bool(np.array_equal(got[:len(img)], img)) and not got[len(img):].any()


def server_blocks(server, snap_id: str) -> dict[int, bytes]:
    snap = server.service.snapshots[snap_id]
    return {i: server.service.store.read(b) for i, b in snap.blocks.items()}


@pytest.fixture(scope="module")
def server():
    with EBSServer(record_requests=True) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    c = client_for(server)
    yield c
    c.close()


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    img = make_image()
    path = str(tmp_path_factory.mktemp("src") / "disk.img")
    img.tofile(path)
    return path, img


@pytest.fixture(scope="module")
def uploaded(client, image, tmp_path_factory):
    path, img = image
    r = snapshots.upload(client, path, description="test image", tags={"k": "v"})
    return r


# -- upload and download ----------------------------------------------------------------------
def test_upload_writes_every_block_with_the_linear_checksum(server, uploaded, image):
    path, img = image
    n = N_FULL + 1
    assert uploaded.blocks_written == n and uploaded.blocks_skipped == 0
    assert uploaded.status == "completed" and uploaded.volume_size == 1
    snap = server.service.snapshots[uploaded.snapshot_id]
    assert snap.description == "test image" and snap.tags == [{"Key": "k", "Value": "v"}]
    got = server_blocks(server, uploaded.snapshot_id)
    assert sorted(got) == list(range(n))  # zero blocks written too (omit_zero_blocks=False)
    for i in range(n):
        assert hashlib.sha256(got[i]).digest() == block_digest(img, i)
    assert uploaded.checksum == ebsfast.linear_checksum([block_digest(img, i)
                                                         for i in range(n)])
    man = Manifest.load(uploaded.manifest)
    assert uploaded.manifest == manifest_path(path)
    assert man.snapshot_id == uploaded.snapshot_id and man.volume_size == 1
    assert man.indexes.tolist() == list(range(n))
    assert json.dumps(uploaded.to_dict())


def test_download_is_identical_sparse_and_has_a_manifest(client, uploaded, image, tmp_path):
    path, img = image
    dest = str(tmp_path / "out.img")
    seen = []
    r = snapshots.download(client, uploaded.snapshot_id, dest,
                           progress=lambda *a: seen.append(a))
    assert same_file(dest, img)
    st = os.stat(dest)
    assert st.st_size == GIB
    # only the non-zero blocks take space: 49 blocks less the 6 zero blocks
    assert st.st_blocks * 512 <= (N_FULL + 1 - 6) * BLOCK_SIZE + (1 << 20)
    assert r.blocks_total == N_FULL + 1 and r.blocks_zero == 6 and r.blocks_fetched == 49
    assert r.bytes == 49 * BLOCK_SIZE and r.mb_per_s > 0 and r.blocks_per_s > 0
    assert not os.path.exists(dest + ".partial") and not os.path.exists(dest + ".partial.state")
    man = Manifest.load(dest + ".manifest.json")
    assert r.manifest == dest + ".manifest.json"
    assert man.snapshot_id == uploaded.snapshot_id and man.block_size == BLOCK_SIZE
    assert man.indexes.tolist() == list(range(49))
    assert [bytes(d) for d in man.digests] == [block_digest(img, i) for i in range(49)]
    raw = json.load(open(dest + ".manifest.json"))
    assert raw["format"] == "ebsfast-manifest" and raw["block_count"] == 49
    assert seen and seen[-1] == (49, 49, 49 * BLOCK_SIZE)
    assert json.dumps(r.to_dict())


def test_download_into_numpy_and_over_an_existing_file(client, uploaded, image, tmp_path):
    path, img = image
    arr = np.zeros(GIB, dtype=np.uint8)
    arr[3 * BLOCK_SIZE:4 * BLOCK_SIZE] = 0xEE  # stale bytes must go, where data lands
    arr[700 * BLOCK_SIZE + 5] = 0xEE  # and where the snapshot has no block
    r = snapshots.download(client, uploaded.snapshot_id, arr)
    assert r.dest is None and np.array_equal(arr[:len(img)], img) and not arr[len(img):].any()
    with pytest.raises(ValueError, match="volume"):
        snapshots.download(client, uploaded.snapshot_id, np.zeros(BLOCK_SIZE, np.uint8))
    dest = tmp_path / "old.img"
    dest.write_bytes(b"old contents")
    snapshots.download(client, uploaded.snapshot_id, str(dest))
    assert same_file(str(dest), img)


def test_omit_zero_blocks(server, client, image):
    path, img = image
    r = snapshots.upload(client, img, omit_zero_blocks=True)
    assert r.blocks_written == 43 and r.blocks_skipped == 6 and r.manifest is None
    assert sorted(server_blocks(server, r.snapshot_id)) == [
        i for i in range(49) if i not in (5, 6, 7, 30, 31, 32)]


def test_parallel_listing_matches_one_listing(client, uploaded):
    whole = snapshots.list_blocks(client, uploaded.snapshot_id)
    parts = snapshots.list_blocks(client, uploaded.snapshot_id, page_size=100, workers=4)
    assert whole.indexes.tolist() == parts.indexes.tolist() == list(range(49))


def test_parallel_listing_of_many_blocks(server, client):
    # 450 blocks over a 1 GiB index space listed 100 at a time in ranges: the boundaries
    # must neither lose nor repeat a block.
    snap = client.start_snapshot(VolumeSize=1)["SnapshotId"]
    rng = random.Random(3)
    indexes = sorted(rng.sample(range(2048), 450))
    data = np.full(BLOCK_SIZE, 7, np.uint8)
    for i in indexes:
        client.put_snapshot_block(SnapshotId=snap, BlockIndex=i, BlockData=data)
    client.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=len(indexes))
    before = len(server.requests)
    got = snapshots.list_blocks(client, snap, page_size=100, workers=6)
    assert got.indexes.tolist() == indexes
    assert all(got.tokens[k] for k in range(len(got)))
    lists = [r for r in server.requests[before:] if r["path"].endswith("/blocks")]
    assert 5 <= len(lists) <= 6 + 6  # a first page, then about one page per range


# -- faults -------------------------------------------------------------------------------------
def test_download_with_faults_is_identical(uploaded, image, tmp_path):
    path, img = image
    with EBSServer() as s:
        c = client_for(s)
        r = snapshots.upload(c, img)
        s.set_faults(rate_limits={"GetSnapshotBlock": 400}, reset_rate=0.1,
                     truncate_rate=0.05, corrupt_rate=0.15, error_rate=0.05, seed=11)
        dest = str(tmp_path / "faulty.img")
        d = snapshots.download(c, r.snapshot_id, dest)
        assert same_file(dest, img)
        assert d.blocks_fetched == 49
        v = snapshots.verify(c, r.snapshot_id, image=dest)
        assert v.ok, v


def test_upload_with_faults_is_correct(image):
    path, img = image
    with EBSServer() as s:
        c = client_for(s)
        s.set_faults(rate_limits={"PutSnapshotBlock": 300}, error_rate=0.15, seed=5)
        r = snapshots.upload(c, img)
        s.set_faults(error_rate=0.0)
        assert r.status == "completed" and r.blocks_written == 49
        got = server_blocks(s, r.snapshot_id)
        for i in range(49):
            assert hashlib.sha256(got[i]).digest() == block_digest(img, i)


def test_throttling_backs_off_and_completes(image, tmp_path):
    path, img = image
    with EBSServer() as s:
        # one attempt per call: every throttle reaches the job's adaptive concurrency
        c = client_for(s, mode="standard", total_max_attempts=1)
        r = snapshots.upload(c, img)
        s.set_faults(rate_limits={"GetSnapshotBlock": 30})
        dest = str(tmp_path / "throttled.img")
        d = snapshots.download(c, r.snapshot_id, dest, workers=16)
        assert same_file(dest, img)
        assert d.throttled > 0
        assert d.min_concurrency < 16  # it backed off


# -- resume -------------------------------------------------------------------------------------
def test_interrupted_download_resumes_and_rechecks(client, uploaded, image, tmp_path):
    path, img = image
    dest = str(tmp_path / "resume.img")

    def stop(done, total, nbytes):
        if done >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        snapshots.download(client, uploaded.snapshot_id, dest, workers=4, progress=stop)
    assert not os.path.exists(dest)  # never an incomplete image under the final name
    assert os.path.exists(dest + ".partial") and os.path.exists(dest + ".partial.state")
    part = np.memmap(dest + ".partial", dtype=np.uint8, mode="r+")
    written = [i for i in range(49) if part[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE].any()]
    assert 0 < len(written) < 43
    victim = written[0]
    part[victim * BLOCK_SIZE + 100] ^= 0xFF  # the disk lost a write, say
    part.flush()
    del part
    r = snapshots.download(client, uploaded.snapshot_id, dest)
    assert same_file(dest, img)
    assert r.blocks_redone == 1
    assert r.blocks_resumed >= len(written) - 1
    assert r.blocks_fetched == 49 - r.blocks_resumed
    assert not os.path.exists(dest + ".partial")


def interrupted_at_the_end(client, snap_id: str, img: np.ndarray, dest: str) -> None:
    """``dest.partial`` and its journal as a download leaves them when stopped just before
    the rename: every block in and journaled."""
    from ebsfast._snapshots_io import Journal

    snapshots.download(client, snap_id, dest)
    os.replace(dest, dest + ".partial")
    ident = {"snapshot_id": snap_id, "volume_bytes": GIB, "block_size": BLOCK_SIZE}
    Journal.create(dest + ".partial.state", ident,
                   {i: block_digest(img, i) for i in range(N_FULL + 1)}).close()


def test_resume_zeroes_a_zero_block_that_failed_its_check(client, uploaded, image, tmp_path):
    path, img = image
    dest = str(tmp_path / "rz.img")
    interrupted_at_the_end(client, uploaded.snapshot_id, img, dest)
    with open(dest + ".partial", "r+b") as f:
        f.seek(6 * BLOCK_SIZE + 100)  # block 6 is zeros in the snapshot
        f.write(b"stray")
    r = snapshots.download(client, uploaded.snapshot_id, dest)
    assert r.blocks_redone == 1 and r.blocks_fetched == 1 and r.blocks_zero == 1
    with open(dest, "rb") as f:
        f.seek(6 * BLOCK_SIZE)
        assert f.read(BLOCK_SIZE) == bytes(BLOCK_SIZE)
    assert snapshots.verify(client, uploaded.snapshot_id, image=dest).ok


def test_resume_clears_bytes_where_the_snapshot_has_no_block(client, uploaded, image,
                                                             tmp_path):
    path, img = image
    dest = str(tmp_path / "ru.img")
    interrupted_at_the_end(client, uploaded.snapshot_id, img, dest)
    with open(dest + ".partial", "r+b") as f:
        for i in (49, 700, 701):  # the snapshot has no such blocks
            f.seek(i * BLOCK_SIZE + 9)
            f.write(b"stray")
    r = snapshots.download(client, uploaded.snapshot_id, dest)
    assert r.blocks_resumed == N_FULL + 1 and r.blocks_fetched == 0
    with open(dest, "rb") as f:
        for i in (49, 700, 701):
            f.seek(i * BLOCK_SIZE)
            assert f.read(BLOCK_SIZE) == bytes(BLOCK_SIZE)
    assert snapshots.verify(client, uploaded.snapshot_id, image=dest).ok


def test_state_of_another_snapshot_is_not_reused(client, uploaded, image, tmp_path):
    path, img = image
    other = snapshots.upload(client, img[:3 * BLOCK_SIZE], write_manifest=False)
    dest = str(tmp_path / "x.img")
    with pytest.raises(KeyboardInterrupt):
        snapshots.download(client, uploaded.snapshot_id, dest, workers=2,
                           progress=lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    r = snapshots.download(client, other.snapshot_id, dest)
    assert r.blocks_resumed == 0
    assert same_file(dest, img[:3 * BLOCK_SIZE])


# -- unwritable and full destinations -------------------------------------------------------------
def test_destination_in_a_missing_directory(client, uploaded, tmp_path):
    dest = str(tmp_path / "no" / "such" / "dir" / "x.img")
    with pytest.raises(SnapshotError, match="cannot write") as e:
        snapshots.download(client, uploaded.snapshot_id, dest)
    assert "directory" in str(e.value)
    assert not os.path.exists(dest)


def test_full_disk_stops_cleanly_and_resumes(client, uploaded, image, tmp_path, monkeypatch):
    path, img = image
    dest = str(tmp_path / "full.img")
    real = os.pwrite
    calls = [0]

    def pwrite(fd, data, offset):
        calls[0] += 1
        if calls[0] > 10:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    t0 = time.monotonic()
    with pytest.raises(SnapshotError, match="No space left") as e:
        snapshots.download(client, uploaded.snapshot_id, dest)
    assert time.monotonic() - t0 < 10
    assert e.value.snapshot_id == uploaded.snapshot_id and e.value.block_index is not None
    assert "resume" in str(e.value)
    assert not os.path.exists(dest) and os.path.exists(dest + ".partial")
    monkeypatch.setattr(os, "pwrite", real)
    r = snapshots.download(client, uploaded.snapshot_id, dest)
    assert same_file(dest, img) and r.blocks_resumed >= 10


def test_a_failing_block_stops_the_job_promptly(image, tmp_path):
    path, img = image
    with EBSServer() as s:
        c = client_for(s)
        r = snapshots.upload(c, img)
        s.set_faults(block_token_ttl_s=0)  # every token is stale when used
        dest = str(tmp_path / "stale.img")
        t0 = time.monotonic()
        with pytest.raises(SnapshotError) as e:
            snapshots.download(c, r.snapshot_id, dest)
        assert time.monotonic() - t0 < 10
        assert e.value.block_index is not None and "INVALID_BLOCK_TOKEN" in e.value.reason
        assert r.snapshot_id in str(e.value) and "again" in str(e.value)
        assert not os.path.exists(dest)


def test_errors_name_the_block_not_its_position(tmp_path, monkeypatch):
    # blocks at 1000, 1500 and 1900 only: the first item of every job is at position 0
    with EBSServer() as s:
        c = client_for(s)
        parent = c.start_snapshot(VolumeSize=1)["SnapshotId"]
        for i in (1000, 1500, 1900):
            c.put_snapshot_block(SnapshotId=parent, BlockIndex=i,
                                 BlockData=np.full(BLOCK_SIZE, 3, np.uint8))
        c.complete_snapshot(SnapshotId=parent, ChangedBlocksCount=3)
        child = c.start_snapshot(VolumeSize=1, ParentSnapshotId=parent)["SnapshotId"]
        c.put_snapshot_block(SnapshotId=child, BlockIndex=1700,
                             BlockData=np.full(BLOCK_SIZE, 4, np.uint8))
        c.complete_snapshot(SnapshotId=child, ChangedBlocksCount=1)
        base = str(tmp_path / "base.img")
        snapshots.download(c, parent, base)
        device = str(tmp_path / "device")
        with open(device, "wb") as f:
            f.truncate(GIB)
        # a regular file standing in for a device; its unlisted ranges need no zeroing here
        monkeypatch.setattr(snapshots, "is_device", lambda p: p == device)
        monkeypatch.setattr(snapshots, "zero_range", lambda *a, **k: None)
        s.set_faults(block_token_ttl_s=0)  # every block read fails, and is not retried
        jobs = [
            ("download", parent, 1000,
             lambda: snapshots.download(c, parent, str(tmp_path / "x.img"), workers=1)),
            ("download", parent, 1000, lambda: snapshots.download(c, parent, device, workers=1)),
            ("download", parent, 1000,
             lambda: snapshots.download(c, parent, np.zeros(GIB, np.uint8), workers=1)),
            ("apply", child, 1700, lambda: snapshots.apply(c, base, parent, child, workers=1)),
            ("verify", parent, 1000, lambda: snapshots.verify(c, parent, workers=1)),
        ]
        for what, snap, index, job in jobs:
            with pytest.raises(SnapshotError) as e:
                job()
            assert e.value.block_index == index, what
            assert f"{what} of {snap} failed at block {index}:" in e.value.message


def test_listing_errors_are_snapshot_errors(client, tmp_path):
    with pytest.raises(SnapshotError, match="ResourceNotFound"):
        snapshots.download(client, "snap-0123456789abcdef0", str(tmp_path / "x.img"))


# -- incremental upload, apply --------------------------------------------------------------------
def changed_image(img: np.ndarray) -> np.ndarray:
    new = img.copy()
    rng = np.random.default_rng(99)
    for i in (2, 6, 10):  # 6 was zeros
        new[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE] = rng.integers(0, 256, BLOCK_SIZE,
                                                                dtype=np.uint8)
    new[12 * BLOCK_SIZE:13 * BLOCK_SIZE] = 0  # had data: must be written as zeros
    return new


def puts_to(server, snap_id: str, start: int) -> list[int]:
    return sorted(int(r["path"].rsplit("/", 1)[1]) for r in server.requests[start:]
                  if r["method"] == "PUT" and f"/snapshots/{snap_id}/blocks/" in r["path"])


def test_incremental_upload_sends_only_changed_blocks(server, client, uploaded, image,
                                                      tmp_path):
    path, img = image
    new = changed_image(img)
    new_path = str(tmp_path / "disk2.img")
    new.tofile(new_path)
    before = len(server.requests)
    r = snapshots.upload(client, new_path, parent_snapshot_id=uploaded.snapshot_id,
                         manifest=uploaded.manifest)
    assert r.blocks_written == 4 and r.blocks_skipped == 45
    assert puts_to(server, r.snapshot_id, before) == [2, 6, 10, 12]
    assert sorted(server.service.snapshots[r.snapshot_id].written) == [2, 6, 10, 12]
    dest = str(tmp_path / "child.img")
    snapshots.download(client, r.snapshot_id, dest)
    assert same_file(dest, new)
    man = Manifest.load(r.manifest)
    assert man.snapshot_id == r.snapshot_id and man.parent_snapshot_id == uploaded.snapshot_id
    assert man.indexes.tolist() == list(range(49))
    assert bytes(man.digests[12]) == hashlib.sha256(bytes(BLOCK_SIZE)).digest()


def test_incremental_upload_refuses_another_snapshots_manifest(client, uploaded, image):
    path, img = image
    other = Manifest("snap-00000000000000001", 1)
    with pytest.raises(ManifestError, match="not of the parent"):
        snapshots.upload(client, img, parent_snapshot_id=uploaded.snapshot_id, manifest=other)


def test_incremental_upload_without_the_manifest_keeps_the_parents_volume_size(client, image):
    path, img = image
    parent = snapshots.upload(client, img[:BLOCK_SIZE], volume_size=2, write_manifest=False)
    assert parent.volume_size == 2
    child = snapshots.upload(client, img[:2 * BLOCK_SIZE], parent_snapshot_id=parent.snapshot_id,
                             write_manifest=False)
    assert child.status == "completed" and child.volume_size == 2


def test_apply_brings_an_image_up_to_date(server, client, image, tmp_path):
    path, img = image
    # the parent omits its zero blocks, so going back from the child removes block 6
    parent = snapshots.upload(client, img, omit_zero_blocks=True,
                              write_manifest=str(tmp_path / "parent.json"))
    new = changed_image(img)
    # zeros the parent lacks stay unwritten only when asked (encrypted volumes)
    assert snapshots.upload(client, new, parent_snapshot_id=parent.snapshot_id,
                            manifest=parent.manifest).blocks_written == 4 + 5
    child = snapshots.upload(client, new, parent_snapshot_id=parent.snapshot_id,
                             manifest=parent.manifest, omit_zero_blocks=True)
    assert child.blocks_written == 4
    base = str(tmp_path / "base.img")
    snapshots.download(client, parent.snapshot_id, base)
    r = snapshots.apply(client, base, parent.snapshot_id, child.snapshot_id)
    assert same_file(base, new)
    assert r.blocks_changed == 4 and r.blocks_zeroed == 1  # block 12, now zeros: a hole
    assert Manifest.load(r.manifest).snapshot_id == child.snapshot_id
    assert not os.path.exists(base + ".apply-state")
    # and back again: block 6 is absent from the parent (no SecondBlockToken)
    back = snapshots.apply(client, base, child.snapshot_id, parent.snapshot_id)
    assert same_file(base, img)
    assert back.blocks_zeroed >= 1
    v = snapshots.verify(client, parent.snapshot_id, image=base)
    assert v.ok, v


def test_apply_grows_and_refuses_a_mid_apply_image(server, client, image, tmp_path):
    path, img = image
    parent = snapshots.upload(client, img[:2 * BLOCK_SIZE], write_manifest=False)
    bigger = str(tmp_path / "bigger.img")  # sparse: its holes are not even read
    with open(bigger, "wb") as f:
        f.write(img[:2 * BLOCK_SIZE].tobytes())
        f.seek(GIB + 2 * BLOCK_SIZE)
        f.write(img[:BLOCK_SIZE].tobytes())
    child = snapshots.upload(client, bigger, parent_snapshot_id=parent.snapshot_id,
                             omit_zero_blocks=True, write_manifest=False)
    # without the parent's manifest its blocks cannot be compared, so they are sent again
    assert child.volume_size == 2 and child.blocks_written == 3
    base = str(tmp_path / "g.img")
    snapshots.download(client, parent.snapshot_id, base)
    r = snapshots.apply(client, base, parent.snapshot_id, child.snapshot_id)
    assert r.grown and os.path.getsize(base) == 2 * GIB
    got, want = np.memmap(base, np.uint8, mode="r"), np.memmap(bigger, np.uint8, mode="r")
    assert np.array_equal(got[:len(want)], want) and not got[len(want):].any()
    del got, want
    with open(base + ".apply-state", "w") as f:
        json.dump({"first": "snap-1", "second": "snap-2"}, f)
    with pytest.raises(SnapshotError, match="part-way"):
        snapshots.apply(client, base, parent.snapshot_id, child.snapshot_id)


# -- verify -------------------------------------------------------------------------------------
def test_verify_reports_modified_blocks(client, uploaded, image, tmp_path):
    path, img = image
    ok = snapshots.verify(client, uploaded.snapshot_id)
    assert ok.ok and ok.blocks_checked == 49 and ok.image is None
    dest = str(tmp_path / "v.img")
    snapshots.download(client, uploaded.snapshot_id, dest)
    assert snapshots.verify(client, uploaded.snapshot_id, image=dest).ok
    with open(dest, "r+b") as f:
        for i in (3, 31):
            f.seek(i * BLOCK_SIZE + 7)
            f.write(b"\x01")
        f.seek(700 * BLOCK_SIZE)  # the snapshot has no block 700
        f.write(b"stray")
    v = snapshots.verify(client, uploaded.snapshot_id, image=dest)
    assert not v.ok and v.mismatched == [3, 31, 700] and v.unexpected_data == [700]
    assert v.bad_blocks == [] and v.image_size_ok


def test_verify_reports_blocks_the_service_corrupts(uploaded):
    with EBSServer() as s:
        c = client_for(s, mode="standard", total_max_attempts=2)
        r = snapshots.upload(c, np.arange(3 * BLOCK_SIZE, dtype=np.uint8))
        s.set_faults(corrupt_rate=1.0)
        v = snapshots.verify(c, r.snapshot_id)
        assert not v.ok and v.bad_blocks == [0, 1, 2]


# -- open ---------------------------------------------------------------------------------------
def test_open_reads_like_the_image(client, uploaded, image):
    path, img = image
    full = padded(img)
    rng = random.Random(5)
    with snapshots.open(client, uploaded.snapshot_id, cache_blocks=8, read_ahead=4) as f:
        assert f.seekable() and f.readable() and not f.writable()
        assert len(f) == f.size == GIB
        for _ in range(200):
            pos = rng.randrange(0, 52 * BLOCK_SIZE)
            n = rng.choice([1, 100, 4096, BLOCK_SIZE - 3, 3 * BLOCK_SIZE])
            f.seek(pos)
            assert f.read(n) == full[pos:pos + n].tobytes()
            assert f.tell() == pos + n
        f.seek(-10, io.SEEK_END)
        assert f.read(100) == bytes(10)  # past the end: only what there is
        assert f.read(100) == b""
        f.seek(5 * GIB)
        assert f.read(10) == b""
        f.seek(800 * BLOCK_SIZE)  # a block the snapshot lacks reads as zeros
        assert f.read(BLOCK_SIZE) == bytes(BLOCK_SIZE)
        with pytest.raises(OSError):
            f.seek(-1)


def test_open_sequential_with_buffered_reader_and_copyfileobj(client, uploaded, image):
    path, img = image
    with snapshots.open(client, uploaded.snapshot_id, read_ahead=8) as raw:
        reader = io.BufferedReader(raw, buffer_size=64 * 1024)
        h, expected = hashlib.sha256(), hashlib.sha256()

        class Sink:
            n = 0

            def write(self, b):
                if Sink.n < 60 * BLOCK_SIZE:
                    h.update(b)
                Sink.n += len(b)
                if Sink.n >= 60 * BLOCK_SIZE:
                    raise StopIteration

        with pytest.raises(StopIteration):
            shutil.copyfileobj(reader, Sink(), 1 << 20)
        expected.update(padded(img, 60 * BLOCK_SIZE).tobytes())
        assert h.digest() == expected.digest()
        assert raw.blocks_fetched == 49  # read-ahead fetched each block once
    assert raw.closed


# -- results and manifests ----------------------------------------------------------------------
def test_manifest_round_trip_and_damage(tmp_path):
    digests = np.frombuffer(b"".join(hashlib.sha256(bytes([i])).digest() for i in range(5)),
                            np.uint8).reshape(5, 32)
    m = Manifest("snap-0abc", 8, [9, 1, 4, 2, 3], digests)
    assert m.indexes.tolist() == [1, 2, 3, 4, 9]
    p = m.save(str(tmp_path / "m.json"))
    back = Manifest.load(p)
    assert back.indexes.tolist() == m.indexes.tolist()
    assert np.array_equal(back.digests, m.digests) and back.volume_size == 8
    present, d = back.lookup([0, 1, 9, 10])
    assert present.tolist() == [False, True, True, False]
    assert bytes(d[1]) == bytes(m.digests[0]) and not d[0].any()
    raw = json.load(open(p))
    raw["sha256"] = base64.b64encode(b"\0" * 160).decode()
    with pytest.raises(ManifestError, match="damaged"):
        Manifest.from_dict(raw)
    with pytest.raises(ManifestError, match="not an ebsfast manifest"):
        Manifest.from_dict({"format": "other"})


def test_snapshot_error_pickles():
    import pickle

    e = SnapshotError("download of snap-1 failed at block 3: boom.", snapshot_id="snap-1",
                      block_index=3, reason="boom", advice="Run again.")
    back = pickle.loads(pickle.dumps(e))
    assert str(back) == str(e) and back.block_index == 3
    assert isinstance(e, ebsfast.exceptions.EbsfastError)
