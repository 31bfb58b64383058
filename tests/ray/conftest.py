"""One real local Ray cluster (2 CPUs, 200 MB object store) for every test in this folder.

Skipped when Ray is not installed (``pip install 'voxbox[ray]'``), unless ``VOXBOX_REQUIRE_RAY=1``
(set by ``.ci/run``), which turns the skip into a failure.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ray_harness import LocalCluster

# Ray reads its authentication mode when it is imported: set it before anything imports ray. The
# test cluster takes a token made for this run (never the user's ~/.ray/auth_token).
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    missing = [m for m in ("ray", "ray.serve", "ray.data") if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing:
        if os.environ.get("VOXBOX_REQUIRE_RAY") == "1":
            pytest.fail("Ray tests required (VOXBOX_REQUIRE_RAY=1) but ray is not installed")
        pytest.skip("ray is not installed (pip install 'voxbox[ray]')")
    c = LocalCluster(cpus=2, object_store_mb=200)
    try:
        c.connect()
        yield c
    finally:
        c.stop()
