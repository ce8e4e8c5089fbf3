"""tenant-router in the real Envoy, with the repository's end-to-end harness (tests/e2e)."""

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests/e2e"))

from harness_fixtures import envoys, pytest_sessionstart, upstream  # noqa: E402, F401
