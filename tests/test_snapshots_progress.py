"""Progress and error wording of the snapshot jobs."""
import numpy as np

import ebsfast
from ebsfast import snapshots
from ebsfast.testing import BLOCK_SIZE, EBSServer


def test_upload_progress_reaches_the_total_when_blocks_are_skipped(tmp_path):
    image = np.zeros(8 * BLOCK_SIZE, np.uint8)
    image[3 * BLOCK_SIZE:4 * BLOCK_SIZE] = 7
    path = tmp_path / "disk.img"
    image.tofile(path)
    calls = []
    with EBSServer() as s:
        ebs = ebsfast.client("ebs", endpoint_url=s.endpoint_url, region_name=s.region,
                             aws_access_key_id=s.access_key,
                             aws_secret_access_key=s.secret_key,
                             config=snapshots.client_config(workers=2))
        r = snapshots.upload(ebs, str(path), omit_zero_blocks=True, workers=2,
                             progress=lambda *a: calls.append(a))
        assert r.blocks_written == 1 and r.blocks_skipped == 7
    done, total, _ = calls[-1]
    assert done == total == 8


def test_error_message_has_one_full_stop():
    with EBSServer() as s:
        ebs = ebsfast.client("ebs", endpoint_url=s.endpoint_url, region_name=s.region,
                             aws_access_key_id=s.access_key,
                             aws_secret_access_key=s.secret_key)
        try:
            snapshots.list_blocks(ebs, "snap-0000000000000000f")
        except snapshots.SnapshotError as e:
            assert ".." not in str(e) and "snap-0000000000000000f" in str(e)
        else:
            raise AssertionError("listing a missing snapshot must fail")
