import importlib.util
import pathlib
import sys

# The end-to-end harness (real Envoy, the built module, the upstream) and its fixtures.
E2E = pathlib.Path(__file__).resolve().parents[1] / "e2e"
sys.path.insert(0, str(E2E))

_spec = importlib.util.spec_from_file_location("e2e_conftest", E2E / "conftest.py")
_e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_e2e)

pytest_sessionstart = _e2e.pytest_sessionstart
upstream = _e2e.upstream
envoys = _e2e.envoys
