"""tenant-router in the real Envoy, with the repository's end-to-end harness (tests/e2e)."""

import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests/e2e"))

from envoy_harness import ENVOY_BIN, MODULE_DIR, UPSTREAM_BIN, Upstream  # noqa: E402


def pytest_sessionstart(session):
    # A missing binary is a setup error, never a skipped test.
    for what, path in (("Envoy", ENVOY_BIN), ("upstream", UPSTREAM_BIN),
                       ("module", os.path.join(MODULE_DIR, "librust_module.so"))):
        if not pathlib.Path(path).exists():
            raise pytest.UsageError(f"{what} binary not found at {path}; run through `make test-own-filter`")


@pytest.fixture(scope="session")
def upstream():
    server = Upstream(extra_env={"HTTPBUN_STREAM_DELAY_MS": "0"})
    yield server
    server.stop()


@pytest.fixture
def envoys():
    """Collects Envoys a test starts, and stops them afterwards whatever happens."""
    started = []
    yield started
    for envoy in started:
        envoy.stop()
