"""Config acceptance parity: does each module's Envoy take the same policies?

Policies are the generator's valid ones plus seeded mutations of every field of the v2.3 CRD's
`transformation` schema into shapes kgateway's control plane would not emit but a hand-written
config or a future control plane might: wrong types, `null`, missing fields, odd header names,
unknown `parseAs`, templates that do not compile or use what kgateway's engine lacks. Each policy
is offered to both Envoys as a route update (`pair.ConfigProbe`); the verdicts must agree, except
where `differences.py` says we refuse on purpose.
"""

from __future__ import annotations

import json
import random

from differences import deliberate_refusal
from generator import SETTABLE, make_case
from pair import probe_pair

BAD_TEMPLATES = [
    "{{ x", "{% if %}x{% endif %}", "{% for x in [1] %}{% break %}{% endfor %}",
    "{% for x in [1] %}{% continue %}{% endfor %}", "{{ 'a'|no_such_filter }}", "{{ 1 is no_such_test }}",
    "{{ no_such_fn() }}", "{{ no_such_var }}", "{% include 'x' %}", "{% extends 'x' %}", "{% import 'x' as y %}",
    "{{ }}", "{# unclosed", "{% raw %}x", "{%- endif %}", "{% set x = 1 %}{{ x }}", "{% call m() %}{% endcall %}",
    "{% macro m() %}{% endmacro %}{{ m() }}", "{{ 1 + }}", "{{ [1, 2 }}", "{{ x.y.z }}", "{{ 'a' ~ }}",
    "{% filter upper %}x{% endfilter %}", "{% autoescape true %}x{% endautoescape %}", "100%", "%%", "{{ '%' }}",
    "{{ 1/0 }}", "{% if true %}x{% elif %}y{% endif %}", "{% with %}{% endwith %}", "{{ loop.index }}",
    "{{ self }}", "{{ namespace() }}", "{{ range(10000000)|length }}", "{{ debug() }}", "{{ 'x'|tojson }}",
    "{{ 'x'|urlencode }}", "{{ 'x'|format }}", "é{{ 'ü' }}", "{{ get_cookie() }}", "{{ get_cookie_i(1, 2) }}",
    "{{ 'abc'[1:] }}", "{{ x[::0] }}",
    # Refused by ours on purpose (the `unknown-operator` row): both only differ there.
    "%NO_SUCH_OPERATOR%", "%REQ(x-a%", "a\r\nx-injected: 1", "%REQ(:method)%",
]
ODD_NAMES = ["", "x y", "x/y", "X-Upper", ":path", ":status", "ü", "x:y", "x\ty", "a" * 300, ":", "x-ok"]
JSON_SHAPES = [None, 1, "str", True, [], [1], [{}], {}, {"x": 1}]


def mutate(rng: random.Random) -> str:
    """One policy, usually not valid."""
    side = rng.choice(["request", "response"])
    r = rng.randrange(12)
    if r == 0:
        return rng.choice(["[]", "{}", "null", '"str"', "1", "[{}]", "{} x", '{"request": {}, "request": {}}',
                           '{"request": {"set": [{"name": "a", "value": "1"}]}} ', '{"foo": 1}', "  {}  "])
    if r == 1:
        return json.dumps({side: rng.choice(JSON_SHAPES)})
    if r == 2:
        field = rng.choice(["set", "add", "remove", "body", "dynamicMetadata", "unknown"])
        return json.dumps({side: {field: rng.choice(JSON_SHAPES)}})
    if r == 3:
        entry = rng.choice([{}, {"name": None}, {"name": 1}, {"name": "x", "value": None}, {"name": "x", "value": 1},
                            {"value": "v"}, {"name": "x", "value": "v", "extra": 1}, None, "x"])
        return json.dumps({side: {rng.choice(["set", "add"]): [entry]}})
    if r == 4:
        entry = {"name": rng.choice(ODD_NAMES)}
        if rng.random() < 0.8:
            entry["value"] = "v"
        return json.dumps({side: {rng.choice(["set", "add"]): [entry]}})
    if r == 5:
        return json.dumps({side: {"remove": [rng.choice(ODD_NAMES + [None, 1])]}})
    if r == 6:
        body = rng.choice([{"parseAs": None}, {"parseAs": "asjson"}, {"parseAs": "AsXml"}, {"parseAs": 1},
                           {"value": None}, {"value": 1}, {"parseAs": "None", "value": "{{ x"},
                           {"parseAs": "AsJson", "value": None}, {"parseAs": "AsString", "extra": 1}])
        return json.dumps({side: {"body": body}})
    if r == 7:
        entry = {"namespace": "diff.a", "key": "k", "value": {"stringValue": "v"}}
        what = rng.choice(["namespace", "key", "value", "stringValue"])
        how = rng.choice(["drop", "null", "empty", "number"])
        target = entry["value"] if what == "stringValue" else entry
        if how == "drop":
            del target[what]
        else:
            target[what] = {"null": None, "empty": "" if what != "value" else {}, "number": 3}[how]
        return json.dumps({side: {"dynamicMetadata": [entry]}})
    # A template that may not compile, in any value.
    template = rng.choice(BAD_TEMPLATES)
    where = rng.choice(["set", "add", "body", "dynamicMetadata"])
    if where == "body":
        spec = {"body": {"parseAs": rng.choice(["AsString", "AsJson", "None"]), "value": template}}
    elif where == "dynamicMetadata":
        spec = {"dynamicMetadata": [{"namespace": "diff.a", "key": "k", "value": {"stringValue": template}}]}
    else:
        spec = {where: [{"name": rng.choice(SETTABLE), "value": template}]}
    return json.dumps({side: spec})


def make_policies(seed: int, count: int, release: str = "v2.3") -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        out.append(make_case(rng, f"c{i}", release).policy if rng.random() < 0.2 else mutate(rng))
    return out


def compare_acceptance(policies: list[str]) -> tuple[list[tuple[str, str, str]], int]:
    """Offers each policy to both Envoys: (unexplained disagreements, deliberate ones)."""
    ours, theirs = probe_pair()
    unexplained, deliberate = [], 0
    verdicts: dict[str, tuple[str, str]] = {}
    try:
        for policy in dict.fromkeys(policies):
            verdicts[policy] = (ours.offer(policy), theirs.offer(policy))
    finally:
        ours.close()
        theirs.close()
    for policy, (a, b) in verdicts.items():
        if a == b:
            continue
        if a == "refused" and b == "accepted" and deliberate_refusal(policy):
            deliberate += 1
        else:
            unexplained.append((policy, b, a))
    return unexplained, deliberate


def run_acceptance(seed: int, count: int, release: str = "v2.3") -> int:
    policies = make_policies(seed, count, release)
    unexplained, deliberate = compare_acceptance(policies)
    for policy, kgateway, ours in unexplained:
        print(f"policy {policy}\n  kgateway: {kgateway}\n  ours:     {ours}")
    distinct = len(set(policies))
    print(f"acceptance against kgateway {release}: seed {seed}: {distinct} distinct policies offered to both, {deliberate} refused on purpose "
          f"by ours alone, {len(unexplained)} unexplained differences")
    return len(unexplained)
