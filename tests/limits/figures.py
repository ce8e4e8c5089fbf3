"""Measured figures of the stress suites, written to .work/limits/ for docs/failure-behaviour.md."""

import json
import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
OUT = REPO / ".work" / "limits"


def record(suite: str, case: str, **figures):
    OUT.mkdir(parents=True, exist_ok=True)
    version = os.environ.get("ENVOY_VERSION", "1.37.0") if suite == "envoy" else "cli"
    path = OUT / f"{suite}-{version}.jsonl"
    with path.open("a") as f:
        f.write(json.dumps({"case": case, **figures}) + "\n")
