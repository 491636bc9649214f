"""ebsfast: the Amazon EBS direct APIs for Python, with the hot paths in C.

Public API so far: SHA-256 (``sha256``, ``sha256_blocks``, ``verify_blocks``,
``linear_checksum``), the SigV4 signer (``ebsfast.signing``) and ``show_config()``.
"""
from . import exceptions
from ._info import show_config
from .client import EBSClient, client
from .config import Config
from ._version import __version__
from .checksums import linear_checksum, sha256, sha256_blocks, verify_blocks

__all__ = [
    "Config",
    "EBSClient",
    "__version__",
    "client",
    "exceptions",
    "linear_checksum",
    "sha256",
    "sha256_blocks",
    "show_config",
    "verify_blocks",
]
