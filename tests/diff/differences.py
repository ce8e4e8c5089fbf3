"""Where we deliberately differ from kgateway's module: each row of the README's table, with the
differential case that shows exactly that difference and nothing else, and the releases whose
module it is measured against (the suite runs a row against each oracle it names).

The README's table is generated from `DIFFERENCES` (`tests/diff/run.py --table`) and a test
checks that the two agree. A behaviour row runs its case through both Envoys; its `check` gets
both outcomes and the fields that differ, and returns what is wrong (nothing, when the row holds).
A load row offers its policy to both Envoys and states both verdicts.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Callable

from pair import ENVOY_ENV, Case, Outcome, Request
from upstream import Reply

JSON_REPLY = Reply(200, [("content-type", "application/json"), ("x-r", "R")], b'{"reply": true}')
MARKER = ("x-custom-transformed", "true")


def header_values(outcome: Outcome, name: str) -> list[str]:
    return [v for k, v in outcome.headers if k == name]


def upstream_values(outcome: Outcome, name: str) -> list[str]:
    return [v for r in outcome.upstream for k, v in r["headers"] if k.lower() == name]


@dataclass
class Difference:
    key: str
    topic: str
    kgateway: str
    ours: str
    # A behaviour row: the case, and the check of both outcomes.
    case: Case | None = None
    check: Callable[[Outcome, Outcome, list[str]], list[str]] | None = None
    # A load row: the policy, the per-route config name, and both verdicts.
    policy: str | None = None
    config_name: str = "rustformation"
    verdicts: tuple[str, str] | None = None  # (kgateway, ours)
    # Our Envoy's whole environment for this row, where it is not the suite's `OURS_ENV`.
    ours_env: dict[str, str] | None = field(default=None)
    # The kgateway releases whose module the row is measured against.
    releases: tuple[str, ...] = ("v2.3", "v2.4")


def only(expected: set[str], fields: list[str]) -> list[str]:
    return [] if set(fields) == expected else [f"differs in {sorted(fields)}, expected exactly {sorted(expected)}"]


def expect(condition: bool, message: str) -> list[str]:
    return [] if condition else [message]


def request(method="GET", path="/", headers=(), body=None) -> Request:
    return Request(method, path, list(headers), body)


def case(key: str, policy: dict, req: Request | None = None, reply: Reply = JSON_REPLY) -> Case:
    return Case(f"d-{key}", json.dumps(policy), req or request(), reply)


def set_response(value: str, name: str = "x-v") -> dict:
    return {"response": {"set": [{"name": name, "value": value}]}}


def _operators(ours: Outcome, theirs: Outcome, fields: list[str]) -> list[str]:
    return (only({"headers"}, fields) + expect(header_values(theirs, "x-v") == ["%REQ(:method)% %%"], "kgateway literal")
            + expect(header_values(ours, "x-v") == ["GET %"], "ours resolved"))


def _crlf(ours: Outcome, theirs: Outcome, fields: list[str]) -> list[str]:
    return (only({"headers"}, fields) + expect(header_values(theirs, "x-injected") == ["1"], "kgateway injects")
            + expect(header_values(ours, "x-injected") == [] and header_values(ours, "x-v") == [], "ours sends neither"))


def _bad_name(ours: Outcome, theirs: Outcome, fields: list[str]) -> list[str]:
    return (expect(theirs.status == 503 and b"invalid header name" in theirs.body, f"kgateway: {theirs.status}")
            + expect(ours.status == 200 and upstream_values(ours, "x-good") == ["1"], f"ours: {ours.status}")
            + only({"status", "headers", "body", "upstream", "details"}, fields))


def _buffering(ours: Outcome, theirs: Outcome, fields: list[str]) -> list[str]:
    return (only({"status", "headers", "body", "upstream", "details"}, fields)
            + expect(theirs.status == 413 and theirs.upstream == [], f"kgateway buffers: {theirs.status}")
            + expect(ours.status == 200 and len(ours.upstream[0]["body"]) == 2 * 1024 * 1024, "ours streams it"))


def _body_undeclared(ours: Outcome, theirs: Outcome, fields: list[str]) -> list[str]:
    return (only({"status", "headers", "body", "upstream", "details"}, fields)
            + expect(theirs.status == 200 and theirs.upstream and theirs.upstream[0]["body"] == b"", "kgateway empties")
            + expect(ours.status == 400 and ours.upstream == []
                     and ours.details == "undeclared_json_variables_in_transformation_template", "ours answers 400"))


def _body_fns(ours: Outcome, theirs: Outcome, fields: list[str]) -> list[str]:
    return (only({"upstream"}, fields) + expect(upstream_values(theirs, "x-body") == [], "kgateway: empty, removed")
            + expect(upstream_values(ours, "x-body") == ['{"k": 1}'], "ours: the body"))


def _value_fails(name: str):
    def check(ours: Outcome, theirs: Outcome, fields: list[str]) -> list[str]:
        return (expect(theirs.aborted, "kgateway's module takes Envoy down") + expect(
            not ours.aborted and ours.status == 200 and header_values(ours, name) == []
            and header_values(ours, "x-after") == ["still here"], "ours drops that value only"))
    return check


def _substring(ours: Outcome, theirs: Outcome, fields: list[str]) -> list[str]:
    return (expect(theirs.aborted, "kgateway's module takes Envoy down")
            + expect(header_values(ours, "x-v") == ["\ufffd"] or header_values(ours, "x-v") == ["ï¿½"],
                     f"ours converts lossily: {header_values(ours, 'x-v')}"))


def _budget(ours: Outcome, theirs: Outcome, fields: list[str]) -> list[str]:
    return (only({"headers"}, fields) + expect(header_values(theirs, "x-v") == ["done"], "kgateway runs it through")
            + expect(header_values(ours, "x-v") == [] and header_values(ours, "x-after") == ["still here"],
                     "ours stops it: a render error"))


def _json_filters(ours: Outcome, theirs: Outcome, fields: list[str]) -> list[str]:
    return (only({"headers"}, fields) + expect(header_values(theirs, "x-v") == [], "kgateway: unknown filter")
            + expect(header_values(ours, "x-v") == ['{"a":[1,"b"]} a%20b'], f"ours: {header_values(ours, 'x-v')}"))


def _autoescape(ours: Outcome, theirs: Outcome, fields: list[str]) -> list[str]:
    return (only({"headers"}, fields)
            + expect(header_values(theirs, "x-v") == ["&lt;b&gt; &quot;q&quot; page.html"], "kgateway escapes")
            + expect(header_values(ours, "x-v") == ['<b> "q" page.html'], "ours: as written"))


def _extensions(ours: Outcome, theirs: Outcome, fields: list[str]) -> list[str]:
    return (only({"status", "headers", "body", "upstream", "details"}, fields)
            + expect(theirs.status == 400 and theirs.upstream == []
                     and theirs.details == "undeclared_json_variables_in_transformation_template", "kgateway: 400")
            + expect(ours.status == 200 and upstream_values(ours, "x-v") == ["1"], "ours: the parameter"))


def _cookie_v23(ours: Outcome, theirs: Outcome, fields: list[str]) -> list[str]:
    return (only({"status", "headers", "body", "upstream", "details"}, fields)
            + expect(theirs.status == 400 and theirs.upstream == []
                     and theirs.details == "undeclared_json_variables_in_transformation_template", "kgateway: 400")
            + expect(ours.status == 200 and upstream_values(ours, "x-session") == ["abc123"],
                     f"ours: the cookie {upstream_values(ours, 'x-session')}"))


def _cookie_spellings(ours: Outcome, theirs: Outcome, fields: list[str]) -> list[str]:
    return (expect(set(fields) <= {"upstream"}, f"differs in {sorted(fields)}")
            + expect(upstream_values(theirs, "x-a") in (["1"], ["2"]), f"kgateway: {upstream_values(theirs, 'x-a')}")
            + expect(upstream_values(ours, "x-a") == ["1"], f"ours: the first {upstream_values(ours, 'x-a')}"))


def _marker(ours: Outcome, theirs: Outcome, fields: list[str]) -> list[str]:
    return (only({"headers"}, fields) + expect(MARKER not in theirs.headers, "kgateway: none")
            + expect(ours.headers == theirs.headers[:-1] + [MARKER] + theirs.headers[-1:]
                     or ours.headers == theirs.headers + [MARKER], f"ours: only the marker added {ours.headers}"))


CRLF = base64.b64encode(b"a\r\nx-injected: 1").decode()
AFTER = {"name": "x-after", "value": "still here"}
DIFFERENCES = [
    Difference(
        "operators", "Envoy command operators (`%REQ(:METHOD)%`, `%RESP(h)%`, `%PROTOCOL%`, `%START_TIME%`, "
        "`%DOWNSTREAM_REMOTE_ADDRESS%`...) in values",
        "passed through as literal text",
        "resolved; `%%` is a literal `%`, a `%` that starts no operator (URL encoding) stays",
        case=case("operators", set_response("%REQ(:method)% %%")), check=_operators),
    Difference(
        "unknown-operator", "An unknown `%UPPER_CASE%` operator, or a literal CR/LF in a value",
        "loaded (the operator is text; the CR/LF is sent)",
        "the policy is refused, with a log line naming the field (as Envoy refuses an unknown operator)",
        policy=json.dumps(set_response("%NO_SUCH_OPERATOR%")), verdicts=("accepted", "refused")),
    Difference(
        "crlf", "Rendered header value with CR, LF or NUL (e.g. `base64_decode` of a client header)",
        "sent: a client can add headers", "never sent: `set` removes the header, `add` skips it, a warning is "
        "logged and counted (`rustformation.invalid_header_dropped`)",
        case=case("crlf", set_response('{{ base64_decode(request_header("x-b64")) }}'),
                  request(headers=[("x-b64", CRLF)])), check=_crlf),
    Difference(
        "header-name", "A `set`/`add` header name that is not an HTTP token (empty, `x y`, `x:y`, non-ASCII)",
        "handed to Envoy: a 503 on the request side, a malformed header line on the response side",
        "the policy loads (as kgateway's) and the entry is skipped, with a warning logged at load",
        case=case("header-name", {"request": {"set": [{"name": "x y", "value": "1"}, {"name": "x-good", "value": "1"}]}}),
        check=_bad_name),
    Difference(
        "buffering", "Buffering",
        "every side with work is buffered (a request over the buffer limit gets a 413)",
        "a side is buffered only when something reads or replaces its body (a body value, `AsJson`, "
        "`body()`/`context()`); header-only policies stream",
        case=case("buffering", {"request": {"set": [{"name": "x-v", "value": "1"}]}},
                  request("POST", "/", [("content-type", "application/octet-stream")], b"x" * (2 * 1024 * 1024))),
        check=_buffering),
    Difference(
        "filter-name", "Unknown filter name (e.g. `my-smart-header` in kgateway's image)",
        "panics: Envoy aborts", "refused cleanly: the config is rejected with `unknown filter name '...'`",
        policy="{}", config_name="no-such-filter", verdicts=("aborted", "refused")),
    Difference(
        "body-undeclared", "Undeclared JSON variable in the body template (the body is not parsed JSON)",
        "body emptied, request sent on", "the same 400 as in header values, before anything is changed",
        case=case("body-undeclared", {"request": {"body": {"value": '{"model": "{{ model }}"}'}}},
                  request("POST", "/", [("content-type", "text/plain")], b"not json")),
        check=_body_undeclared),
    Difference(
        "body-functions", "`body()` / `context()` in header and metadata values",
        "filled only when the body template calls the same function", "available in every value of a buffered side",
        case=case("body-functions", {"request": {"body": {"parseAs": "AsJson"},
                                                 "set": [{"name": "x-body", "value": "{{ body() }}"}]}},
                  request("POST", "/", [("content-type", "application/json")], b'{"k": 1}')),
        check=_body_fns),
    Difference(
        "substring", "`substring` with offsets inside a UTF-8 character",
        "panics: Envoy aborts", "bytes converted lossily",
        case=case("substring", set_response('{{ substring("é", 1, 1) }}')), check=_substring),
    Difference(
        "engine-panic", "A template on which MiniJinja 2.12 panics (`\"\"[::-1]`, ordering a number beyond "
        "64 bits against a float)",
        "Envoy aborts", "that value fails like any render error (header removed, counted); the rest applies",
        case=case("engine-panic", {"response": {"set": [{"name": "x-v", "value": '{{ ""[::-1] }}'}, AFTER]}}),
        check=_value_fails("x-v")),
    Difference(
        "budget", "Render effort",
        "unbounded: `\"a\" * 3000000000` aborts Envoy, a loop that copies a megabyte a turn stalls the worker "
        "for seconds, a constant-folded giant in a route update aborts every proxy that loads it",
        "a render budget per request side: bytes produced or copied (64 MiB, checked before allocating) and time "
        "(50 ms), plus MiniJinja fuel and output caps per value; exceeding it is a render error (header removed or "
        "skipped, body emptied), counted as `rustformation.render_errors` and `rustformation.budget_exceeded`; a "
        "config whose constants blow it is refused ([Limits](#limits))",
        case=case("budget", {"response": {"set": [
            {"name": "x-v", "value": "{% for i in range(1500) %}{% for j in range(1000) %}{% endfor %}{% endfor %}done"},
            AFTER]}}), check=_budget),
    Difference(
        "json-filters", "The `tojson` and `urlencode` filters",
        "not built in: a render error, the header is removed", "available",
        case=case("json-filters", set_response('{{ {"a": [1, "b"]}|tojson }} {{ "a b"|urlencode }}')),
        check=_json_filters),
    Difference(
        "autoescape", "A value whose text ends in `.html`, `.htm` or `.xml`",
        "HTML-escaped (the engine takes the template's text for its file name)", "never escaped: values are headers "
        "and bodies, not HTML",
        case=case("autoescape", set_response('{{ "<b>" }} {{ "\\"q\\"" }} page.html')), check=_autoescape),
    Difference(
        "extensions", "`regex_extract`, `query_param`, `set_query_param`, `remove_query_param`, `json_set`, "
        "`json_delete`, `metadata` (see [Functions beyond kgateway](#functions-beyond-kgateway))",
        "unknown: every request of the route is answered 400 (unless its body is parsed JSON)", "available",
        case=case("extensions", {"request": {"set": [{"name": "x-v", "value": '{{ query_param("a") }}'}]}},
                  request(path="/?a=1")), check=_extensions),
    Difference(
        "cookies", "`get_cookie(name)` and `get_cookie_i(name)` (kgateway v2.4's functions) under v2.3 semantics",
        "unknown in v2.3: every request of the route is answered 400 (unless its body is parsed JSON)",
        "available, as in v2.4",
        case=case("cookies", {"request": {"set": [{"name": "x-session", "value": '{{ get_cookie("session") }}'}]}},
                  request(headers=[("cookie", "session=abc123; User=johndoe")])),
        check=_cookie_v23, releases=("v2.3",)),
    Difference(
        "cookie-spellings", "`get_cookie_i(name)` where one `Cookie` header spells the name two ways (`a=1; A=2`)",
        "one of them, picked at random per process", "the first",
        case=case("cookie-spellings", {"request": {"set": [{"name": "x-a", "value": '{{ get_cookie_i("a") }}'}]}},
                  request(headers=[("cookie", "a=1; A=2")])),
        check=_cookie_spellings, releases=("v2.4",)),
    Difference(
        "marker", "The marker header",
        "none", "`X-Custom-Transformed: true` on every response the filter handled (the lab's requirement); "
        "`RUSTFORMATION_MARKER_HEADER` changes or removes it",
        case=case("marker", set_response("v")), check=_marker, ours_env=ENVOY_ENV),
]


def deliberate_refusal(policy: str) -> bool:
    """Whether we refuse this policy on purpose (the `unknown-operator` row): a literal value with
    CR, LF or NUL, or an `%UPPER_CASE%` Envoy operator we do not know."""
    try:
        doc = json.loads(policy)
    except ValueError:
        return False
    texts: list[str] = []

    def walk(v):
        if isinstance(v, str):
            texts.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(doc)
    return any(re.search(r"[\r\n\0]", t) and "{" not in t or re.search(r"%[A-Z_]", t) for t in texts)


def markdown_table() -> str:
    rows = ["| | kgateway's module | this module | measured against |", "|---|---|---|---|"]
    rows += [f"| {d.topic} | {d.kgateway} | {d.ours} | {' and '.join(d.releases)} |" for d in DIFFERENCES]
    return "\n".join(rows)
