"""The differential suite needs kgateway v2.3's own module (`KGATEWAY_REFERENCE_MODULE`, default
`../shared/reference/kgateway-v2.3/librust_module.so`). Where it is absent (a user's clone) every
test is skipped and says why; with `REQUIRE_KGATEWAY_REFERENCE=1` (CI) its absence is a failure."""

from __future__ import annotations

import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from pair import REFERENCE_MODULE  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if pathlib.Path(REFERENCE_MODULE).is_file():
        return
    reason = (f"kgateway v2.3's module is not at {REFERENCE_MODULE} "
              "(set KGATEWAY_REFERENCE_MODULE to its librust_module.so)")
    if os.environ.get("REQUIRE_KGATEWAY_REFERENCE") == "1":
        raise pytest.UsageError(reason)
    print(f"\ndifferential suite skipped: {reason}")
    for item in items:
        item.add_marker(pytest.mark.skip(reason=reason))
