"""Snapshot manifests: which blocks a snapshot holds and the SHA-256 of each, beside an image.

``download`` writes one next to the image it makes and ``upload`` one for the snapshot it
creates; an incremental ``upload`` reads the parent's to send only the blocks that differ.

Format (JSON, UTF-8, one object)::

    {
      "format": "ebsfast-manifest",
      "version": 1,
      "snapshot_id": "snap-0123456789abcdef0",
      "parent_snapshot_id": null,            # or the snapshot it was uploaded on top of
      "volume_size": 8,                      # GiB, as the EBS APIs count it
      "block_size": 524288,
      "block_count": 3,
      "indexes": "<base64>",                 # block indexes, ascending, little-endian uint32
      "sha256": "<base64>",                  # the 32-byte digests, same order, concatenated
      "linear_checksum": "<base64>",         # LINEAR aggregate of the digests (a self-check)
      "created": "2026-11-28T12:00:00Z"
    }

Every block the snapshot holds is listed, blocks of zeros included (a snapshot that holds a
block of zeros differs from one that lacks it: on an encrypted volume the latter does not read
back as zeros). An index fits uint32 (a 64 TiB volume has 2**27 blocks); the digests are the
SHA-256 of the 512 KiB block as the service checksums it. Packed arrays keep a manifest of a
16 TiB volume near 1.8 GB rather than the 4 GB of a JSON list, and load in one numpy call.
"""
from __future__ import annotations

import base64
import datetime
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .checksums import linear_checksum

__all__ = ["FORMAT", "Manifest", "ManifestError", "manifest_path"]

FORMAT = "ebsfast-manifest"
VERSION = 1
BLOCK_SIZE = 524288


class ManifestError(ValueError):
    """A manifest that cannot be read, or that does not belong where it was given."""


def manifest_path(image: str | os.PathLike) -> str:
    """Where the manifest of an image lives: beside it, ``<image>.manifest.json``."""
    return os.fspath(image) + ".manifest.json"


def _empty_digests() -> np.ndarray:
    return np.empty((0, 32), dtype=np.uint8)


@dataclass
class Manifest:
    snapshot_id: str
    volume_size: int
    indexes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    digests: np.ndarray = field(default_factory=_empty_digests)
    block_size: int = BLOCK_SIZE
    parent_snapshot_id: str | None = None
    created: str | None = None

    def __post_init__(self) -> None:
        self.indexes = np.ascontiguousarray(self.indexes, dtype=np.int64)
        self.digests = np.ascontiguousarray(self.digests, dtype=np.uint8).reshape(-1, 32)
        if len(self.indexes) != len(self.digests):
            raise ManifestError(f"{len(self.indexes)} indexes for {len(self.digests)} digests")
        if len(self.indexes) > 1 and not np.all(self.indexes[1:] > self.indexes[:-1]):
            order = np.argsort(self.indexes, kind="stable")
            self.indexes, self.digests = self.indexes[order], self.digests[order]
            if np.any(self.indexes[1:] == self.indexes[:-1]):
                raise ManifestError("a block index appears twice")

    def __len__(self) -> int:
        return len(self.indexes)

    @property
    def linear_checksum(self) -> str:
        return linear_checksum(self.digests)

    def lookup(self, indexes: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(present, digests)`` for the given block indexes: a bool per index, and the
        manifest's digest where present (zeros elsewhere)."""
        want = np.asarray(indexes, dtype=np.int64)
        pos = np.searchsorted(self.indexes, want)
        pos_c = np.minimum(pos, max(len(self.indexes) - 1, 0))
        present = (pos < len(self.indexes)) & (self.indexes[pos_c] == want) if len(self) \
            else np.zeros(len(want), dtype=bool)
        out = np.zeros((len(want), 32), dtype=np.uint8)
        if len(self):
            out[present] = self.digests[pos_c[present]]
        return present, out

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "snapshot_id": self.snapshot_id,
            "parent_snapshot_id": self.parent_snapshot_id,
            "volume_size": int(self.volume_size),
            "block_size": int(self.block_size),
            "block_count": len(self),
            "indexes": base64.b64encode(self.indexes.astype("<u4").tobytes()).decode("ascii"),
            "sha256": base64.b64encode(self.digests.tobytes()).decode("ascii"),
            "linear_checksum": self.linear_checksum,
            "created": self.created or datetime.datetime.now(datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ManifestError("not an ebsfast manifest (no \"format\": \"ebsfast-manifest\")")
        if d.get("version") != VERSION:
            raise ManifestError(f"manifest version {d.get('version')!r} is not supported "
                                f"(this ebsfast reads version {VERSION})")
        try:
            indexes = np.frombuffer(base64.b64decode(d["indexes"], validate=True),
                                    dtype="<u4").astype(np.int64)
            digests = np.frombuffer(base64.b64decode(d["sha256"], validate=True),
                                    dtype=np.uint8).reshape(-1, 32)
            m = cls(snapshot_id=d["snapshot_id"], volume_size=int(d["volume_size"]),
                    indexes=indexes, digests=digests.copy(),
                    block_size=int(d.get("block_size", BLOCK_SIZE)),
                    parent_snapshot_id=d.get("parent_snapshot_id"), created=d.get("created"))
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"malformed manifest: {e}") from None
        if d.get("block_count") not in (None, len(m)):
            raise ManifestError(f"manifest says {d['block_count']} blocks but holds {len(m)}")
        if d.get("linear_checksum") not in (None, m.linear_checksum):
            raise ManifestError("manifest digests do not match its linear_checksum "
                                "(the file is damaged)")
        return m

    @classmethod
    def load(cls, path: str | os.PathLike) -> Manifest:
        try:
            with open(path, "rb") as f:
                data = json.load(f)
        except ValueError as e:
            raise ManifestError(f"{os.fspath(path)}: not JSON ({e})") from None
        try:
            return cls.from_dict(data)
        except ManifestError as e:
            raise ManifestError(f"{os.fspath(path)}: {e}") from None

    def save(self, path: str | os.PathLike) -> str:
        """Write atomically (a temporary file, fsync, rename): a reader never sees half."""
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path
