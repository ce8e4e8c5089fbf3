"""The stress cases: policies and requests that, without the render budget, abort Envoy, stall
its worker or balloon its memory (issue 22's table, plus more). Shared by the Envoy suite and
the CLI suite.

Each case is one request-side value (`set` of `x-out`) and the request that meets it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

MB_BODY = b"a" * 1_000_000
HUNDRED = "x" * 100
THOUSAND = "r" * 1000


def many_keys(n: int) -> bytes:
    return json.dumps({f"k{i}": i for i in range(n)}).encode()


def wide_json(n: int) -> bytes:
    # About 1 MB of JSON: a list of small objects.
    return json.dumps({"items": [{"id": i, "name": f"item-{i}"} for i in range(n)]}).encode()


@dataclass
class Case:
    name: str
    value: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    parse_as: str | None = None  # "AsJson" where the body is JSON

    def transformation(self) -> dict:
        request = {"set": [{"name": "x-out", "value": self.value}]}
        if self.parse_as:
            request["body"] = {"parseAs": self.parse_as}
        return {"request": request}


CASES = [
    # The table.
    Case("repeat-1e9", '{{ ("a" * (request_header("x-n")|int))|length }}', {"x-n": "1000000000"}),
    Case("repeat-3e9", '{{ ("a" * (request_header("x-n")|int))|length }}', {"x-n": "3000000000"}),
    Case("body-times-1000", "{{ body() * 1000 }}", body=MB_BODY),
    Case(
        "concat-loop",
        '{% set ns = namespace(s="") %}{% for i in range(30000) %}'
        f'{{% set ns.s = ns.s ~ "{HUNDRED}" %}}{{% endfor %}}{{{{ ns.s|length }}}}',
    ),
    Case(
        "upper-loop",
        '{% set big = "a" * 10000000 %}{% for i in range(10000) %}{% set x = big|upper %}{% endfor %}done',
    ),
    Case("regex-1mb", '{{ regex_extract(body(), "(?s)^((?:[a-z]{1,20}){1,20})*$", 1) }}', body=MB_BODY),
    Case("indent-1e9", '{{ ("a\\nb"|indent(1000000000))|length }}'),
    Case("replace-empty", f'{{{{ replace_with_string(body(), "", "{THOUSAND}")|length }}}}', body=MB_BODY),
    Case(
        "doubling",
        '{% set ns = namespace(s="ab") %}{% for i in range(29) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}'
        "{{ ns.s|length }}",
    ),
    # Beyond the table.
    Case(
        "nested-loops-big-strings",
        "{% set big = body() %}{% for i in range(1000) %}{% for j in range(1000) %}"
        '{% set x = big ~ "" %}{% endfor %}{% endfor %}done',
        body=MB_BODY,
    ),
    Case("join-huge-list", '{{ ([body()] * 100000)|join(",")|length }}', body=MB_BODY),
    Case("join-repeated-range", '{{ ((range(100000)|list) * 1000)|join(",")|length }}'),
    Case("sort-huge", "{{ ((range(100000)|list) * 100)|sort|length }}"),
    Case("dictsort-100k-keys", "{{ context()|dictsort|length }}", body=many_keys(100_000), parse_as="AsJson"),
    Case("json-100k-keys", "{{ context()|length }}", body=many_keys(100_000), parse_as="AsJson"),
    Case(
        "tojson-deep",
        "{% set ns = namespace(v=[]) %}{% for i in range(100000) %}{% set ns.v = [ns.v] %}{% endfor %}"
        "{{ ns.v|tojson|length }}",
    ),
    Case("tojson-indent", "{{ context()|tojson(indent=100000)|length }}", body=wide_json(30_000), parse_as="AsJson"),
    Case(
        "huge-context-loop",
        "{% for i in range(1000) %}{% set x = context()|tojson %}{% endfor %}done",
        body=wide_json(30_000),
        parse_as="AsJson",
    ),
    Case("format", '{{ "%s"|format(body()) }}', body=MB_BODY),
    Case("macro-recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
    Case(
        "captured-output",
        '{% set x %}{% for i in range(100000) %}{{ body() }}{% endfor %}{% endset %}{{ x|length }}',
        body=MB_BODY,
    ),
    Case(
        "base64-loop",
        "{% for i in range(1000) %}{% set x = base64_encode(body()) %}{% endfor %}done",
        body=MB_BODY,
    ),
]

# A route update (or a validated file) whose constant parts MiniJinja folds at compile time.
CONSTANT_GIANTS = {
    "const-1e9": '{{ ("a" * 1000000000)|length }}',
    "const-3e9": '{{ ("a" * 3000000000)|length }}',
}
