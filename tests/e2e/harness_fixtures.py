"""The pytest fixtures and the start check of every suite that runs the real Envoy with the module
(tests/e2e, and the end-to-end tests of examples/own-filter), imported by their conftest.py."""

import os
import pathlib

import pytest

from envoy_harness import ENVOY_BIN, MODULE_DIR, UPSTREAM_BIN, Upstream


def pytest_sessionstart(session):
    # A missing binary is a setup error, never a skipped test.
    for what, path in (("Envoy", ENVOY_BIN), ("upstream", UPSTREAM_BIN),
                       ("module", os.path.join(MODULE_DIR, "librust_module.so"))):
        if not pathlib.Path(path).exists():
            raise pytest.UsageError(f"{what} binary not found at {path}; run through `make test-e2e` "
                                    "(or `make test-own-filter` for examples/own-filter)")


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
