"""Two real Envoys side by side: one loads our module, the other kgateway's own (the oracle).

`DIFF_ORACLE` picks the oracle: `v2.3` (kgateway v2.3's module, `KGATEWAY_REFERENCE_MODULE`, in
Envoy 1.37.0) or `v2.4` (kgateway v2.4's module, `KGATEWAY_V24_REFERENCE_MODULE`, in Envoy 1.38.3);
both default to `../shared/reference/kgateway-<release>/librust_module.so`. Both Envoys are the
same binary (`ENVOY_BIN`), which must be the oracle's Envoy.

Both get the same routes, configured exactly as kgateway emits them (a disabled listener-level
`dynamic_modules/simple_mutations` filter, the policy as a `DynamicModuleFilterPerRoute` on the
route), and the same traffic. Every observable is recorded per case:

- the client's view: status, response header lines (in order), response body bytes;
- the upstream's view: what each request that reached it carried (method, path, header lines in
  order, body bytes);
- Envoy's view, through a JSON access log: response code details and the dynamic metadata of
  the namespaces the generator uses.

A case whose module aborts Envoy is recorded as such and the Envoy is started again. The config
mode loads one policy at a time through a file-based RDS update and reads whether Envoy took it.
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "e2e"))

from envoy_harness import (  # noqa: E402
    ENVOY_VERSION,
    MODULE_DIR,
    REPO,
    gateway_config,
    module_filter,
    per_route,
    request,
    start_envoy,
)
from upstream import CASE_HEADER, RecordingUpstream, Reply  # noqa: E402

FILTER = "dynamic_modules/simple_mutations"


@dataclass(frozen=True)
class Oracle:
    release: str  # "v2.3" or "v2.4"
    module_variable: str
    envoy_version: str  # the Envoy its module is built for

    @property
    def module(self) -> str:
        default = REPO.parent / f"shared/reference/kgateway-{self.release}/librust_module.so"
        return os.environ.get(self.module_variable, str(default))


ORACLES = {
    "v2.3": Oracle("v2.3", "KGATEWAY_REFERENCE_MODULE", "1.37.0"),
    "v2.4": Oracle("v2.4", "KGATEWAY_V24_REFERENCE_MODULE", "1.38.3"),
}
ORACLE = ORACLES[os.environ.get("DIFF_ORACLE", "v2.3")]
REFERENCE_MODULE = ORACLE.module
# The Envoy process environment of both sides (for `env()`), and ours without the marker header:
# the marker is a deliberate difference with its own case.
ENVOY_ENV = {"RF_DIFF_ENV": "from-envoy ünï"}
OURS_ENV = dict(ENVOY_ENV, RUSTFORMATION_MARKER_HEADER="off")
# The dynamic-metadata namespaces the generator writes to; the access log prints each whole.
METADATA_NAMESPACES = ("diff.a", "diff.b")
# Response headers that differ between two Envoys for reasons of their own.
VOLATILE_RESPONSE_HEADERS = {"date", "x-envoy-upstream-service-time"}


@dataclass
class Request:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes | None


@dataclass
class Case:
    id: str
    policy: str
    request: Request
    reply: Reply


@dataclass
class Outcome:
    status: int | str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    upstream: list[dict] = field(default_factory=list)
    details: str | None = None
    metadata: dict = field(default_factory=dict)
    aborted: bool = False

    def observable(self) -> dict:
        """Everything compared, as plain data."""
        return {
            "aborted": self.aborted,
            "status": self.status,
            "headers": self.headers,
            "body": self.body,
            "upstream": self.upstream,
            "details": self.details,
            "metadata": self.metadata,
        }


def access_log(path: str) -> dict:
    fmt = {"case": f"%REQ({CASE_HEADER})%", "details": "%RESPONSE_CODE_DETAILS%"}
    for ns in METADATA_NAMESPACES:
        fmt[ns] = f"%DYNAMIC_METADATA({ns})%"
    return {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path,
            "log_format": {"json_format": fmt},
        },
    }


def route_for(case_id: str, policy: str, config_name: str = "rustformation") -> dict:
    # From Envoy 1.38 `per_route` also sets `filter_name`, as kgateway v2.4's control plane does.
    config = per_route(config_name, policy)
    return {
        "match": {"prefix": "/", "headers": [{"name": CASE_HEADER, "string_match": {"exact": case_id}}]},
        "route": {"cluster": "httpbun", "timeout": "10s"},
        "typed_per_filter_config": {FILTER: config},
    }


HCM_EXTRA = {"generate_request_id": False}


class Side:
    """One Envoy with one module, its recording upstream, and the outcomes of its cases."""

    def __init__(self, name: str, module_dir: str, env: dict[str, str]):
        self.name, self.module_dir, self.env = name, module_dir, env
        self.upstream = RecordingUpstream()
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"diff-{name}-"))
        self.envoy = None
        self.logs: list[str] = []

    def _config(self, routes: list[dict], log_path: str) -> dict:
        config = gateway_config(
            self.upstream.port,
            [module_filter("rustformation", "{}", http_filter_name=FILTER, disabled=True)],
            routes,
            hcm_extra=dict(HCM_EXTRA, access_log=[access_log(log_path)]),
        )
        return config

    def start(self, cases: list[Case]):
        self.log_path = self.workdir / f"access-{len(self.logs)}.log"
        config = self._config([route_for(c.id, c.policy) for c in cases], str(self.log_path))
        self.envoy = start_envoy(config, env=self.env, module_dir=self.module_dir,
                                 extra_args=["--file-flush-interval-msec", "50"])

    def run(self, case: Case) -> Outcome:
        out = Outcome()
        # Header values go out as UTF-8 bytes (http.client would send text as Latin-1).
        headers = [("host", "diff.test"), (CASE_HEADER, case.id)] + [
            (k, v.encode()) for k, v in case.request.headers]
        try:
            resp = request(self.envoy.port, case.request.method, case.request.path,
                           headers=headers, body=case.request.body, timeout=15)
            out.status = resp.status
            out.headers = [(k.lower(), v) for k, v in resp.headers if k.lower() not in VOLATILE_RESPONSE_HEADERS]
            out.body = resp.body
        except (OSError, http.client.HTTPException) as e:
            # Either the module took Envoy down, or Envoy closed the stream without a (readable)
            # response; an aborting process may take a moment to exit.
            deadline = time.time() + 2
            while self.envoy.alive() and time.time() < deadline:
                time.sleep(0.05)
            out.aborted = not self.envoy.alive()
            if not out.aborted:
                out.status = f"no response ({type(e).__name__})"
        out.upstream = [
            {"method": r.method, "path": r.path, "headers": r.headers, "body": r.body}
            for r in self.upstream.take(case.id)
        ]
        return out

    def read_access_log(self) -> dict[str, list[dict]]:
        entries: dict[str, list[dict]] = {}
        for path in sorted(self.workdir.glob("access-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                entry = json.loads(line)
                entries.setdefault(entry.pop("case"), []).append(entry)
        return entries

    def stop(self):
        if self.envoy:
            self.logs.append(self.envoy.logs())
            self.envoy.stop()
            self.envoy = None

    def close(self):
        self.stop()
        self.upstream.stop()


# Cases (so routes) per Envoy start: an Envoy of tens of thousands of routes starts slowly on a
# busy machine, and a start that fails probes every policy of its batch.
BATCH = 2000


def run_cases(side: Side, cases: list[Case]) -> dict[str, Outcome]:
    """Every case through one side, sequentially, in batches of routes; an Envoy that aborts is
    started again."""
    outcomes: dict[str, Outcome] = {}
    for c in cases:
        side.upstream.replies[c.id] = c.reply
    pending = list(cases)
    while pending:
        batch = pending[:BATCH]
        try:
            side.start(batch)
        except RuntimeError:
            # Some policy was refused (or took Envoy down) at load: name it, then go on without.
            refused = find_refused(side, batch)
            if not refused:
                raise
            for case_id, verdict in refused.items():
                outcomes[case_id] = Outcome(details=f"config {verdict}")
            pending = [c for c in pending if c.id not in refused]
            continue
        done = 0
        for case in batch:
            outcomes[case.id] = side.run(case)
            done += 1
            if outcomes[case.id].aborted:
                break
        pending = pending[done:]
        time.sleep(0.2)  # the access log's flush interval is 50 ms
        side.stop()
    for case_id, entries in side.read_access_log().items():
        if case_id in outcomes:
            outcomes[case_id].details = "|".join(e["details"] or "" for e in entries)
            outcomes[case_id].metadata = {ns: [e.get(ns) for e in entries] for ns in METADATA_NAMESPACES}
    return outcomes


def find_refused(side: Side, cases: list[Case]) -> dict:
    """The ids of the cases whose policy this side's Envoy does not take: 'refused' or 'aborted'."""
    probe = ConfigProbe(side.name, side.module_dir, side.env)
    try:
        verdicts = {c.id: probe.offer(c.policy) for c in cases}
    finally:
        probe.close()
    return {c: v for c, v in verdicts.items() if v != "accepted"}


def run_pair(cases: list[Case], ours_env: dict[str, str] | None = None) -> tuple[dict[str, Outcome], dict[str, Outcome]]:
    """The cases through both modules at once (one thread per Envoy): (ours, kgateway's)."""
    ours = Side("ours", MODULE_DIR, ours_env or OURS_ENV)
    ref = Side("kgateway", str(pathlib.Path(REFERENCE_MODULE).parent), ENVOY_ENV)
    results: dict[str, dict[str, Outcome]] = {}
    errors: list[BaseException] = []

    def work(side: Side):
        try:
            results[side.name] = run_cases(side, cases)
        except BaseException as e:  # reported by the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in (ours, ref)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        ours.close()
        ref.close()
    if errors:
        raise errors[0]
    return results["ours"], results["kgateway"]


class ConfigProbe:
    """One Envoy per module whose route configuration comes from a watched file (RDS): each
    policy is offered as an update and Envoy's own counters say whether it was taken."""

    def __init__(self, name: str, module_dir: str, env: dict[str, str]):
        self.name, self.module_dir, self.env = name, module_dir, env
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"diff-load-{name}-"))
        self.rds_dir = self.workdir / "rds"
        self.rds_dir.mkdir()
        self.version = 0
        self.upstream = RecordingUpstream()
        self.envoy = None

    def _start(self):
        self._write([])
        config = gateway_config(self.upstream.port, [module_filter("rustformation", "{}", http_filter_name=FILTER,
                                                                   disabled=True)], [], hcm_extra=HCM_EXTRA)
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        del hcm["route_config"]
        hcm["rds"] = {
            "route_config_name": "diff",
            "config_source": {"path_config_source": {
                "path": str(self.rds_dir / "routes.json"),
                "watched_directory": {"path": str(self.rds_dir)},
            }},
        }
        config["node"] = {"id": "diff", "cluster": "diff"}  # xDS wants to know who asks
        self.envoy = start_envoy(config, env=self.env, module_dir=self.module_dir)

    def _write(self, routes: list[dict]):
        self.version += 1
        doc = {"version_info": str(self.version), "resources": [{
            "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            "name": "diff",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
        }]}
        tmp = self.workdir / "routes.json.tmp"
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.rds_dir / "routes.json")

    def _counters(self) -> tuple[int, int]:
        stats = self.envoy.stats()
        return (stats.get("http.e2e.rds.diff.update_success", 0), stats.get("http.e2e.rds.diff.update_rejected", 0))

    def offer(self, policy: str, config_name: str = "rustformation") -> str:
        """'accepted', 'refused' or 'aborted' (the module took Envoy down)."""
        if self.envoy is None:
            self._start()
        before = self._counters()
        self._write([route_for("probe", policy, config_name)])
        deadline = time.time() + 10
        while time.time() < deadline:
            if not self.envoy.alive():
                self.envoy.stop()
                self.envoy = None
                return "aborted"
            try:
                now = self._counters()
            except OSError:
                now = before
            if now[0] > before[0]:
                return "accepted"
            if now[1] > before[1]:
                return "refused"
            time.sleep(0.01)
        raise RuntimeError(f"{self.name}: Envoy neither took nor refused an RDS update in 10s")

    def close(self):
        if self.envoy:
            self.envoy.stop()
        self.upstream.stop()


def probe_pair() -> tuple[ConfigProbe, ConfigProbe]:
    return (ConfigProbe("ours", MODULE_DIR, OURS_ENV),
            ConfigProbe("kgateway", str(pathlib.Path(REFERENCE_MODULE).parent), ENVOY_ENV))
