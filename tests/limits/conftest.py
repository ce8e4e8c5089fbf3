import pathlib
import sys

# The end-to-end harness (real Envoy, the built module, the upstream) and its fixtures.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "e2e"))

from harness_fixtures import envoys, pytest_sessionstart, upstream  # noqa: E402, F401
