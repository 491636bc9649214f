"""ebsfast.testing: a local EBS direct API server over real HTTP, for tests and benchmarks.

    from ebsfast.testing import EBSServer, Faults

    with EBSServer() as server:          # 127.0.0.1, a free port, fresh credentials
        server.endpoint_url, server.access_key, server.secret_key, server.region
        server.set_faults(error_rate=0.05)

Also ``python -m ebsfast.testing --port 8333 [--tls] [--data-dir DIR]``.
"""
from ._faults import Faults
from ._server import EBSServer
from ._store import BLOCK_SIZE

__all__ = ["BLOCK_SIZE", "EBSServer", "Faults"]
