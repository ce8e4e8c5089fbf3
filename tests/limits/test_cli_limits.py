"""The stress cases through the CLI (`rustformations render` and `validate`): the same code as the
module, so the same bounds: each answers within seconds, with bounded peak memory, never a crash."""

import json
import os
import pathlib
import subprocess
import tempfile
import time

import pytest
import yaml

from cases import CASES, CONSTANT_GIANTS
from envoy_harness import MODULE_DIR
from figures import record

CLI = os.path.join(MODULE_DIR, "rustformations")
MIB = 1024 * 1024
# Peak RSS allowed for one CLI run (it holds the request, a 1 MB body and the work).
MAX_PEAK_RSS = 256 * MIB
MAX_SECONDS = 5.0  # the bound is 2 s; the margin is for shared, noisy machines


def run(args: list[str]) -> tuple[int, str, float, int]:
    """Runs the CLI: exit status, output, seconds, peak RSS in bytes."""
    started = time.monotonic()
    proc = subprocess.Popen([CLI] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out, time.monotonic() - started, usage.ru_maxrss * 1024


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_render_is_bounded(case):
    work = pathlib.Path(tempfile.mkdtemp(prefix="limits-cli-"))
    policy = work / "policy.json"
    policy.write_text(json.dumps(case.transformation()))
    args = ["render", str(policy), "/heavy", "-X", "POST"]
    for name, value in case.headers.items():
        args += ["-H", f"{name}: {value}"]
    if case.body:
        (work / "body").write_bytes(case.body)
        args += ["-d", f"@{work / 'body'}"]
        if case.parse_as == "AsJson":
            args += ["-H", "content-type: application/json"]
    code, out, seconds, peak = run(args)
    record("cli", case.name, seconds=round(seconds, 3), peak_rss_mib=round(peak / MIB, 1), status=code)
    assert code == 0, out[-2000:]
    assert seconds < MAX_SECONDS, f"{seconds:.2f}s"
    assert peak < MAX_PEAK_RSS, f"{peak / MIB:.0f} MiB"
    # The value failed to render (budget, or a plain render error), or rendered within bounds.
    assert "x-out" in out or "warning" in out, out[-2000:]


@pytest.mark.parametrize("name", sorted(CONSTANT_GIANTS))
def test_cli_validate_refuses_a_constant_giant(name):
    work = pathlib.Path(tempfile.mkdtemp(prefix="limits-cli-"))
    policy = work / "policy.yaml"
    policy.write_text(yaml.safe_dump({
        "apiVersion": "gateway.kgateway.dev/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": {"name": "giant"},
        "spec": {"transformation": {"request": {"set": [{"name": "x-out", "value": CONSTANT_GIANTS[name]}]}}},
    }))
    for command in (["validate", str(policy)], ["render", str(policy), "/"]):
        code, out, seconds, peak = run(command)
        record("cli", f"{name} {command[0]}", seconds=round(seconds, 3), peak_rss_mib=round(peak / MIB, 1),
               status=code)
        assert code != 0, out
        assert "request.set[0].value" in out and "render budget" in out, out
        assert seconds < MAX_SECONDS and peak < MAX_PEAK_RSS, (seconds, peak)


def test_cli_exits_quietly_on_a_closed_pipe():
    work = pathlib.Path(tempfile.mkdtemp(prefix="limits-cli-"))
    policy = work / "policy.json"
    policy.write_text(json.dumps({"request": {"set": [{"name": "x-out", "value": "v"}]}}))
    request = work / "request.http"
    request.write_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(
        f"x-h{i}: value-{i}\r\n".encode() for i in range(2000)) + b"\r\n")
    proc = subprocess.run(f"'{CLI}' render '{policy}' '{request}' | head -1", shell=True,
                          capture_output=True, text=True, timeout=30,
                          executable="/bin/bash")
    assert proc.returncode == 0
    assert proc.stdout.startswith("#"), proc.stdout
    assert proc.stderr == "", proc.stderr  # no panic message


def test_cli_reads_many_headers_in_linear_time():
    work = pathlib.Path(tempfile.mkdtemp(prefix="limits-cli-"))
    policy = work / "policy.json"
    policy.write_text(json.dumps({"request": {"set": [{"name": "x-out", "value": "v"}]}}))
    timings = {}
    for n in (2_000, 20_000):
        request = work / f"request-{n}.http"
        request.write_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(
            f"x-h{i}: value-{i}\r\n".encode() for i in range(n)) + b"\r\n")
        code, out, seconds, _ = run(["render", str(policy), str(request)])
        assert code == 0, out[-500:]
        timings[n] = seconds
    record("cli", "20000-headers", seconds=round(timings[20_000], 3))
    # Quadratic took 2.5 s for 20,000; linear is well under a second (wide margin).
    assert timings[20_000] < 1.5, timings
