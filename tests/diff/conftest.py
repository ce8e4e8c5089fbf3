"""The differential suite needs the oracle's module: kgateway v2.3's (`KGATEWAY_REFERENCE_MODULE`) or
v2.4's (`KGATEWAY_V24_REFERENCE_MODULE`), by `DIFF_ORACLE`; both default to
`../shared/reference/kgateway-<release>/librust_module.so`. Where it is absent (a user's clone)
every test is skipped and says why; with `REQUIRE_KGATEWAY_REFERENCE=1` (CI) its absence is a
failure."""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from pair import ENVOY_VERSION, ORACLE, REFERENCE_MODULE  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if ENVOY_VERSION != ORACLE.envoy_version:
        raise pytest.UsageError(f"kgateway {ORACLE.release}'s module runs in Envoy {ORACLE.envoy_version}, "
                                f"not {ENVOY_VERSION}: set ENVOY_VERSION and ENVOY_BIN (make test-diff does)")
    if pathlib.Path(REFERENCE_MODULE).is_file():
        return
    reason = (f"kgateway {ORACLE.release}'s module is not at {REFERENCE_MODULE} "
              f"(set {ORACLE.module_variable} to its librust_module.so)")
    if os.environ.get("REQUIRE_KGATEWAY_REFERENCE") == "1":
        raise pytest.UsageError(reason)
    print(f"\ndifferential suite skipped: {reason}")
    for item in items:
        item.add_marker(pytest.mark.skip(reason=reason))
