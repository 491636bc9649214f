"""Download to and upload from a real block device (a loop device over a scratch file)."""
import os
import shutil
import subprocess

import numpy as np
import pytest

import ebsfast
from ebsfast import snapshots
from ebsfast.testing import BLOCK_SIZE, EBSServer

GIB = 1 << 30


@pytest.fixture()
def loop_device(tmp_path):
    """A 1 GiB loop device, or a skip saying why there cannot be one here."""
    if shutil.which("losetup") is None:
        pytest.skip("losetup is not installed: no loop device to test a block device with")
    backing = tmp_path / "backing.img"
    with open(backing, "wb") as f:
        f.truncate(GIB)
    r = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"no loop device available here (losetup: {r.stderr.strip()})")
    dev = r.stdout.strip()
    try:
        yield dev, backing
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)


def test_block_device_round_trip(loop_device, tmp_path):
    dev, backing = loop_device
    rng = np.random.default_rng(7)
    image = np.zeros(GIB, np.uint8)
    for i in (0, 5, 6, 900, 2047):
        image[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE] = rng.integers(0, 256, BLOCK_SIZE, np.uint8)
    src = tmp_path / "src.img"
    image.tofile(src)
    with EBSServer() as s:
        ebs = ebsfast.client("ebs", endpoint_url=s.endpoint_url, region_name=s.region,
                             aws_access_key_id=s.access_key,
                             aws_secret_access_key=s.secret_key,
                             config=snapshots.client_config(workers=4))
        snap = snapshots.upload(ebs, str(src), omit_zero_blocks=True, workers=4,
                                write_manifest=False).snapshot_id
        snapshots.download(ebs, snap, dev, workers=4)
        with open(dev, "rb") as f:
            assert f.read(GIB) == image.tobytes()
        # and back: a snapshot made from the device reads back the same
        again = snapshots.upload(ebs, dev, omit_zero_blocks=True, workers=4,
                                 write_manifest=False).snapshot_id
        out = tmp_path / "again.img"
        snapshots.download(ebs, again, str(out), workers=4)
        assert out.read_bytes() == image.tobytes()
    assert not os.path.exists(dev + ".partial")
