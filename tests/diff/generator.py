"""Seeded generator of kgateway TrafficPolicy transformations, requests and upstream replies.

A case is a policy (the JSON kgateway's control plane puts in the route's
`DynamicModuleFilterPerRoute`), a request and the reply the upstream gives. Policies cover the v2.3
CRD's whole `transformation` schema: both sides, `set`, `add`, `remove`, `body` with each
`parseAs` (and none), `dynamicMetadata`. Values mix text with templates using every kgateway
function, MiniJinja's builtin filters, tests, operators, conditionals, loops, `set`, macros,
whitespace control, raw blocks and JSON values of every type printed directly. Requests vary the
method, path and query, duplicated and mixed-case headers, and bodies (JSON with nested values,
booleans, nulls, numbers and unicode; plain text; invalid JSON; empty).

Against kgateway v2.4 (`release="v2.4"`) values also call `get_cookie` and `get_cookie_i`, and
requests carry `Cookie` headers against both (several headers, case variants, repeated names,
empty values, `=` inside values, spaces, pairs without `=`). Repeated headers appear on both sides;
slices and subscripts are taken of every kind of value (JSON strings and lists, `env()`, headers,
literals), with negative and out-of-range bounds, and JSON variables appear only inside a slice.

Features behind a deliberate difference (`differences.py`) are kept out, so every difference
the random cases show is unexplained:
- no `%...%` command operators (a lone `%20` stays, as both treat it as text);
- no header name that is not an HTTP token;
- `replace_with_random` only where its pattern does not occur (a random value differs between any
  two processes; where the pattern is absent the output is the input);
- no value that renders CR, LF or NUL into a header;
- `body()`/`context()` in a header or metadata value only where the side's body template calls
  the same function; JSON variables in a body template only where the body parses as a JSON
  object and the request side cannot fail with a 400 first;
- `substring` and negative-step slices only on non-empty ASCII text;
- no template text ending in `.html`, `.htm` or `.xml`;
- no `tojson` or `urlencode`;
- the marker header is switched off in our Envoy.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass, field

from pair import METADATA_NAMESPACES, Case, Request
from upstream import Reply

# Header names requests and replies carry; `x-case`, framing and hop-by-hop headers are never
# touched by a policy.
REQUEST_HEADER_NAMES = ["x-a", "x-b", "X-Mixed-Case", "x-dup", "x-uni", "x-num", "accept", "user-agent",
                        "content-type", "x-b64"]
REPLY_HEADER_NAMES = ["x-r", "x-dup", "content-type", "cache-control", "X-Reply-Case", "x-uni", "set-cookie"]
COOKIE_HEADER_NAMES = ["cookie", "Cookie", "COOKIE"]
COOKIE_PAIRS = ["session=abc123", "User=johndoe", "foo=bar", "test=123", "session=second", "SESSION=upper",
                "user=lower", "empty=", "tok=a=b=c", " spaced = v ", "  pad=1  ", "flag", "", "=novalue",
                "ünï=ü", "q=\"quoted\"", "session=", "a=1", "A=2"]
COOKIE_NAMES = ["session", "SESSION", "Session", "User", "user", "foo", "test", "missing", "empty", "tok",
                "spaced", " spaced ", "pad", "flag", "", "ünï", "q", "a", "A"]
# Slice and subscript bounds, with negative and out-of-range ones; no negative step (MiniJinja
# 2.12 panics on some: a difference of its own).
SLICES = ["[2:]", "[-3:]", "[:3]", "[1:3]", "[::2]", "[0]", "[-1]", "[1]", "[99]", "[-99]", "[5:2]", "[:-1]",
          "[100:]", "[-100:]", "[1:-1]", "[:0]"]
SETTABLE = ["x-a", "x-new", "X-Mixed-Case", "x-dup", "content-type", "x-r", "x-uni", "accept", "x-out",
            "cache-control"]
HEADER_VALUES = ["alpha", "Hello World", "ünïcödé ✓", "42", "-7", "3.5", "a,b,c", "in ner", "true", "none",
                 "%20x", "aGVsbG8gd29ybGQ=", "x y z", "{\"j\": 1}", "UPPER lower", "a=b&c=d", "🎉"]
ASCII_TEXTS = ["hello world", "abcdef", "a-b-c", "Mixed Case", "x", "12345", "one,two,three", "  pad  "]
STRINGS = ASCII_TEXTS + ["ünïcödé", "日本語", "", "quote'd", "42", "3.0", "true", "ab\u00e9cd", "emoji 🎉 ok"]
# Text around markup; no braces, which would fuse with the markup next to them.
TEXTS = ["", "", "pre-", "-post", " mid ", "ünï ", "%20", "a=b&c=d", "[x]", "'q'", "\"dq\" ", "v1.2 ", "(", ")"]
B64 = ["aGVsbG8=", "aGVsbG8gd29ybGQ=", "w7xuw68=", "not base64!", "", "YT9iPg==", "YT9iPg", "_-8=", "//8="]
ENV_NAMES = ["RF_DIFF_ENV", "RF_DIFF_MISSING"]
# Filters that keep a number a number (not `string`: `*` would then repeat it, and
# `(-4|string * (42 ** 3))` is 148 KB, past a value's output cap: the `budget` difference).
FILTERS_NUM = ["abs", "round", "int", "float", "round(1)", "round(0, 'floor')",
               "round(0, 'ceil')", "bool"]
TESTS = ["defined", "undefined", "none", "number", "string", "sequence", "mapping", "even", "odd",
         "divisibleby(3)", "true", "false", "boolean", "iterable", "startingwith('a')", "endingwith('c')",
         "integer", "float", "lower", "upper", "safe", "filter", "test", "eq(3)", "ne(3)", "lt(5)",
         "ge(0)", "in([1, 2, 3])", "sameas(none)"]
JSON_FIELDS = {
    "model": ["gpt-4", "gpt-4o-mini", "ünï-model", ""],
    "stream": [True, False],
    "n": [0, 1, 3, -5, 100],
    "temperature": [0.5, 1.0, 2.25, -0.75, 0.001, 1e21, 3.0],
    "big": [12345678901234567890, 9007199254740993, -9223372036854775808],
    "nothing": [None],
    "tags": [["a", "b", "ünï"], [], ["x"]],
    "messages": [[{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi ✓"}],
                 [{"role": "system", "content": ""}]],
    "meta": [{"a": 1, "b": [True, None], "c": {"d": "e"}}, {}, {"z": 1.5, "y": "ü"}],
    "text": ["line one", "ünïcödé", "", "with \"quotes\""],
    "ratio": [2.5, 0.1, -1.5, 1e-7],
    "flags": [[True, False, None, 1, 1.5, "s"]],
}
STRING_FIELDS = ["model", "text"]
# Not `big` (beyond i64): MiniJinja 2.12 panics ordering it against a float, which aborts Envoy
# with kgateway's module (a difference of its own, in differences.py).
NUMBER_FIELDS = ["n", "temperature", "ratio"]
SEQ_FIELDS = ["tags", "messages", "flags"]
MAP_FIELDS = ["meta"]


@dataclass
class SideInfo:
    """What a value being generated may read."""
    phase: str  # "request" or "response"
    parse_as: str | None  # "AsString", "AsJson", "None" or None (omitted)
    json_ok: bool  # JSON variables resolve (the body parses as a JSON object)
    body_fns: set = field(default_factory=set)  # body()/context() allowed here
    header: bool = True  # a header value: one line, no CR/LF
    uses_json: bool = False  # set when the value read a JSON variable


class Values:
    """Template text for one value."""

    def __init__(self, rng: random.Random, side: SideInfo, allow_json_vars: bool, release: str = "v2.3"):
        self.rng, self.side, self.allow_json, self.release = rng, side, allow_json_vars, release

    def pick(self, seq):
        return self.rng.choice(seq)

    def lit(self, s: str) -> str:
        return json.dumps(s, ensure_ascii=False) if self.rng.random() < 0.8 else "'" + s.replace("'", "") + "'"

    def json_var(self, kinds: list[str]) -> str | None:
        if not self.allow_json or not kinds:
            return None
        self.side.uses_json = True
        name = self.pick(kinds)
        r = self.rng.random()
        if r < 0.15 and "context" in self.side.body_fns:
            return f"context()[{json.dumps(name)}]" if self.rng.random() < 0.5 else f"context().{name}"
        return name

    def sliced(self, d: int) -> str:
        """A slice or subscript of any kind of value."""
        r = self.rng.randrange(6)
        if r == 0:
            target = self.json_var(STRING_FIELDS + SEQ_FIELDS) or self.lit(self.pick(ASCII_TEXTS))
        elif r == 1:
            target = f"env({json.dumps(self.pick(ENV_NAMES))})"
        elif r == 2:
            target = self.header_call()
        elif r == 3:
            target = self.lit(self.pick(STRINGS))
        elif r == 4:
            target = self.seq(max(d - 1, 0))
        else:
            nested = self.json_var(MAP_FIELDS)
            target = f"{nested}.{self.pick(['a', 'b', 'c', 'z', 'y'])}" if nested else self.lit("abc")
        if not target.isidentifier():
            target = f"({target})"
        return f"{target}{self.pick(SLICES)}"

    def header_call(self) -> str:
        name = self.pick(REQUEST_HEADER_NAMES + ["x-missing", "X-A", "cookie"])
        fn = "request_header" if self.rng.random() < 0.5 else "header"
        if self.side.phase == "response" and fn == "header":
            name = self.pick(REPLY_HEADER_NAMES + ["x-missing", ":status"])
        return f"{fn}({json.dumps(name)})"

    # Expressions by type --------------------------------------------------------------------
    def string(self, d: int) -> str:
        r = self.rng.randrange(24 if d > 0 else 6)
        if r == 22:
            return self.sliced(d)
        if r == 23:
            if self.release == "v2.4":
                return f"{self.pick(['get_cookie', 'get_cookie_i'])}({json.dumps(self.pick(COOKIE_NAMES), ensure_ascii=False)})"
            return self.sliced(d)
        if r == 0:
            return self.lit(self.pick(STRINGS))
        if r == 1:
            return self.header_call()
        if r == 2:
            return f"env({json.dumps(self.pick(ENV_NAMES))})"
        if r == 3:
            v = self.json_var(STRING_FIELDS)
            return v or self.lit(self.pick(ASCII_TEXTS))
        if r == 4 and "body" in self.side.body_fns and not self.side.header:
            return "body()"
        if r <= 5:
            return self.lit(self.pick(ASCII_TEXTS))
        if r == 6:
            s = self.lit(self.pick([t for t in ASCII_TEXTS if t]))
            a = self.rng.randrange(0, 8)
            return f"substring({s}, {a})" if self.rng.random() < 0.3 else f"substring({s}, {a}, {self.rng.randrange(0, 6)})"
        if r == 7:
            fn = self.pick(["base64_encode", "base64url_encode"])
            return f"{fn}({self.string(d - 1)})"
        if r == 8:
            fn = self.pick(["base64_decode", "base64url_decode"])
            return f"{fn}({self.lit(self.pick(B64))})"
        if r == 9:
            return f"replace_with_string({self.string(d - 1)}, {self.lit(self.pick(['a', 'l', ' ', 'ü', 'x']))}, {self.lit(self.pick(['', 'Z', '--']))})"
        if r == 10:
            return f"raw_string({self.string(d - 1)})"
        if r == 11:
            return f"replace_with_random({self.lit(self.pick(ASCII_TEXTS))}, \"@@NOPE@@\")"
        if r == 12:
            f = self.pick(["upper", "lower", "title", "capitalize", "trim", "string", "escape", "safe",
                           "replace('a', 'A')", "default('dflt')", "center(9)" if not self.side.header else "trim"])
            return f"{self.string(d - 1)}|{f}"
        if r == 13:
            return f"{self.string(d - 1)} ~ {self.any(d - 1)}"
        if r == 14:
            s = self.lit(self.pick([t for t in ASCII_TEXTS if t]))
            return f"{s}[{self.pick(['1:3', '::2', '::-1', '-2:', ':1', '2'])}]"
        if r == 15:
            return f"{self.seq(d - 1)}|join({self.lit(self.pick([',', '-', '', ' | ']))})"
        if r == 16:
            return f"{self.lit('%s=%s')}|format({self.string(d - 1)}, {self.number(d - 1)})"
        if r == 17:
            return f"({self.string(d - 1)} if {self.boolean(d - 1)} else {self.string(d - 1)})"
        if r == 18:
            return f"{self.any(d - 1)}|string"
        if r == 19:
            return f"{self.string(d - 1)} + {self.string(d - 1)}"
        if r == 20:
            return f"({self.number(d - 1)})|string"
        return f"{self.lit(self.pick(ASCII_TEXTS))}|{self.pick(['upper', 'title', 'length', 'wordcount'])}"

    def number(self, d: int) -> str:
        r = self.rng.randrange(14 if d > 0 else 4)
        if r == 0:
            return str(self.pick([0, 1, 2, 3, 7, -4, 10, 255]))
        if r == 1:
            return self.pick(["0.5", "2.5", "-1.5", "1.0", "3.14159", "1e3", "0.1", "100.0"])
        if r == 2:
            return self.json_var(NUMBER_FIELDS) or "42"
        if r == 3:
            return f"{self.string(0)}|length"
        if r <= 8:
            op = self.pick(["+", "-", "*", "/", "//", "%", "**"])
            rhs = self.number(d - 1)
            if op in ("//", "%"):
                rhs = self.pick(["2", "3", "-3", "0.5", "7"])
            if op == "**":
                rhs = self.pick(["2", "0", "3", "0.5"])
            if op == "/" and self.rng.random() < 0.2:
                rhs = self.pick(["0", "0.0"])
            return f"({self.number(d - 1)} {op} {rhs})"
        if r == 9:
            return f"{self.number(d - 1)}|{self.pick(FILTERS_NUM)}"
        if r == 10:
            return f"{self.seq(d - 1)}|length"
        if r == 11:
            return f"[{self.number(0)}, {self.number(0)}, {self.number(0)}]|{self.pick(['sum', 'min', 'max', 'first', 'last'])}"
        if r == 12:
            return f"{self.lit(self.pick(['12', '-3', '4.5', 'x', '']))}|{self.pick(['int', 'float'])}"
        return f"range({self.rng.randrange(0, 5)})|{self.pick(['sum', 'length', 'last', 'first'])}"

    def boolean(self, d: int) -> str:
        r = self.rng.randrange(10 if d > 0 else 3)
        if r == 0:
            return self.pick(["true", "false", "True", "none"])
        if r == 1:
            return f"{self.number(0)} {self.pick(['<', '>', '==', '!=', '<=', '>='])} {self.number(0)}"
        if r == 2:
            return self.json_var(["stream", "nothing"]) or "false"
        if r == 3:
            return f"{self.string(d - 1)} == {self.string(d - 1)}"
        if r == 4:
            return f"{self.string(d - 1)} in {self.string(d - 1)}"
        if r == 5:
            return f"{self.any(d - 1)} is {self.pick(['not ', ''])}{self.pick(TESTS)}"
        if r == 6:
            # In parentheses: after a binary operator (`x ~ not y`) MiniJinja reads `not` as a name.
            return f"(not {self.boolean(d - 1)})"
        if r == 7:
            return f"({self.boolean(d - 1)} {self.pick(['and', 'or'])} {self.boolean(d - 1)})"
        if r == 8:
            return f"{self.number(d - 1)} in {self.seq(d - 1)}"
        return f"{self.pick(['x', 'zzz', 'nothing', 'stream'])} is defined" if self.allow_json else "true"

    def seq(self, d: int) -> str:
        r = self.rng.randrange(12 if d > 0 else 3)
        if r == 0:
            return "[" + ", ".join(self.scalar(0) for _ in range(self.rng.randrange(0, 4))) + "]"
        if r == 1:
            return self.json_var(SEQ_FIELDS) or "[1, 2, 3]"
        if r == 2:
            return f"range({self.rng.randrange(0, 5)})"
        if r == 3:
            how = self.pick(["", '(" ")', '("b")'])
            return f"{self.lit(self.pick(['a b c', 'one two', '', 'x']))}|split{how}"
        if r == 4:
            return f"{self.seq(d - 1)}|{self.pick(['sort', 'reverse', 'unique', 'list', 'batch(2)', 'slice(2)'])}"
        if r == 5:
            how = self.pick(['map("string")', 'select("odd")', 'reject("none")', "select", 'map("upper")'])
            return f"{self.seq(d - 1)}|{how}"
        if r == 6:
            return f"{self.mapping(d - 1)}|{self.pick(['items', 'dictsort', 'list'])}"
        if r == 7:
            return f"{self.lit(self.pick(ASCII_TEXTS))}|list"
        if r == 8:
            return f"({self.any(d - 1)}, {self.any(d - 1)})"
        if r == 9:
            return f"{self.seq(d - 1)} + {self.seq(d - 1)}"
        if r == 10:
            v = self.json_var(["messages"])
            return f"{v}|map(attribute=\"role\")" if v else "[]"
        return f"[{self.any(d - 1)}, {self.seq(d - 1)}]"

    def mapping(self, d: int) -> str:
        r = self.rng.randrange(4 if d > 0 else 2)
        if r == 0:
            items = [f"{json.dumps(self.pick(['a', 'b', 'Zed', 'ü', 'k1']))}: {self.scalar(0)}"
                     for _ in range(self.rng.randrange(0, 3))]
            return "{" + ", ".join(items) + "}"
        if r == 1:
            return self.json_var(MAP_FIELDS) or "{}"
        if r == 2:
            return f"dict({self.pick(['a', 'b'])}={self.any(d - 1)}, z={self.scalar(0)})"
        if "context" in self.side.body_fns:
            return "context()"
        return "{\"k\": [1, \"two\", none, true]}"

    def scalar(self, d: int) -> str:
        r = self.rng.randrange(5)
        return [lambda: self.string(d), lambda: self.number(d), lambda: self.boolean(d),
                lambda: self.pick(["none", "true", "false"]), lambda: self.lit(self.pick(STRINGS))][r]()

    def any(self, d: int) -> str:
        r = self.rng.randrange(6)
        return [self.string, self.number, self.boolean, self.seq, self.mapping, self.scalar][r](max(d, 0))

    # Markup -----------------------------------------------------------------------------------
    def ws(self) -> tuple[str, str]:
        return self.pick(["", "", "-"]), self.pick(["", "", "-"])

    def block(self, d: int) -> str:
        a, b = self.ws()
        r = self.rng.randrange(14)
        if r <= 4:
            return "{{" + a + " " + self.any(d) + " " + b + "}}"
        if r == 5:
            return (f"{{%{a} if {self.boolean(d)} {b}%}}{self.inner(d)}{{% elif {self.boolean(d - 1)} %}}"
                    f"{self.inner(d)}{{% else %}}{self.inner(d)}{{%{a} endif {b}%}}")
        if r == 6:
            sep = self.pick([",", " ", "|"])
            return (f"{{% for x in {self.seq(d)} {self.pick(['', 'if x'])} %}}{{{{ x }}}}{{% if not loop.last %}}{sep}"
                    f"{{% endif %}}{{% else %}}empty{{% endfor %}}")
        if r == 7:
            return (f"{{%{a} for x in {self.seq(d)} {b}%}}{{{{ loop.index }}}}:{{{{ x }}}};"
                    f"{{%{a} endfor {b}%}}")
        if r == 8:
            return f"{{% set v = {self.any(d)} %}}[{{{{ v }}}}]"
        if r == 9:
            return f"{{# note {self.pick(['a', '{{ x }}'])} #}}"
        if r == 10:
            return "{% raw %}{{ not rendered }}{% endraw %}"
        if r == 11:
            return f"{{% filter {self.pick(['upper', 'lower', 'trim', 'title'])} %}}{self.inner(d)}{{% endfilter %}}"
        if r == 12:
            return f"{{% with w = {self.any(d)} %}}<{{{{ w }}}}>{{% endwith %}}"
        return (f"{{% macro m(p, q='dq') %}}({{{{ p }}}}/{{{{ q }}}}){{% endmacro %}}"
                f"{{{{ m({self.any(d - 1)}) }}}}")

    def inner(self, d: int) -> str:
        if self.rng.random() < 0.5:
            return self.pick(TEXTS)
        return "{{ " + self.scalar(max(d - 1, 0)) + " }}"

    def value(self) -> str:
        parts = [self.pick(TEXTS)]
        for _ in range(self.rng.randrange(1, 4)):
            parts.append(self.block(self.rng.randrange(1, 4)))
            parts.append(self.pick(TEXTS))
        v = "".join(parts)
        if v.rstrip().endswith((".html", ".htm", ".xml")):
            v += "!"
        return v

    def body_value(self) -> str:
        """A body template: JSON-shaped text around expressions, or free text."""
        if self.rng.random() < 0.5:
            fields = []
            for key in self.rng.sample(["a", "b", "c", "model", "n"], self.rng.randrange(1, 4)):
                if self.rng.random() < 0.5:
                    fields.append(f"\"{key}\": {{{{ {self.any(2)} }}}}")
                else:
                    fields.append(f"\"{key}\": \"{{{{ {self.string(2)} }}}}\"")
            v = "{" + ", ".join(fields) + "}"
        else:
            v = self.value()
        if "body" in self.side.body_fns and self.rng.random() < 0.4:
            v += "{{ body() }}"
        if "context" in self.side.body_fns and self.rng.random() < 0.3:
            v += "{{ context() }}"
        if v.rstrip().endswith((".html", ".htm", ".xml")):
            v += "!"
        return v


# Requests and replies -------------------------------------------------------------------------
def json_body(rng: random.Random) -> object:
    r = rng.random()
    if r < 0.8:
        keys = rng.sample(sorted(JSON_FIELDS), rng.randrange(1, len(JSON_FIELDS)))
        return {k: rng.choice(JSON_FIELDS[k]) for k in keys}
    if r < 0.9:
        return rng.choice([[1, "two", None], [], [{"a": 1}]])
    return rng.choice([None, 7, "str", True])


def make_body(rng: random.Random, kind: str) -> bytes:
    if kind == "json":
        return json.dumps(json_body(rng), ensure_ascii=rng.random() < 0.5,
                          indent=rng.choice([None, 2])).encode()
    if kind == "text":
        return rng.choice(["plain text ünï", "a=b&c=d", "<p>html</p>", "line1\nline2"]).encode()
    if kind == "invalid":
        return rng.choice([b'{"a": ', b"{not json}", b"[1, 2", b'{"a": 1}x'])
    return b""


def body_parses_as_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False


def headers(rng: random.Random, names: list[str]) -> list[tuple[str, str]]:
    out = []
    for name in rng.sample(names, rng.randrange(1, min(6, len(names)))):
        if name == "x-b64":
            out.append((name, base64.b64encode(rng.choice(STRINGS).encode()).decode()))
            continue
        out.append((name, rng.choice(HEADER_VALUES)))
        if name.lower() == "x-dup" or rng.random() < 0.15:
            for _ in range(rng.choice([1, 1, 2])):
                out.append((rng.choice([name, name.upper()]), rng.choice(HEADER_VALUES)))
    return out


def cookie_headers(rng: random.Random) -> list[tuple[str, str]]:
    """One to three `Cookie` headers of a few pairs each. One header never spells a name two ways
    (`a=1; A=2`): there `get_cookie_i` of kgateway v2.4's module picks one at random (a
    difference of its own); the same spelling twice, and other spellings in other headers, are
    generated."""
    out = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        pairs: list[str] = []
        spellings: dict[str, str] = {}
        for _ in range(rng.randrange(1, 4)):
            pair = rng.choice(COOKIE_PAIRS)
            name = pair.split("=", 1)[0].strip() if "=" in pair else None
            if name is not None and spellings.setdefault(name.lower(), name) != name:
                continue
            pairs.append(pair)
        out.append((rng.choice(COOKIE_HEADER_NAMES), rng.choice([";", "; ", " ;"]).join(pairs)))
    return out


def make_request(rng: random.Random) -> Request:
    method = rng.choice(["GET", "POST", "POST", "PUT", "PATCH", "DELETE"])
    path = rng.choice(["/", "/v1/chat/completions", "/a/b/c", "/%C3%BCn%C3%AF", "/p%20q"])
    if rng.random() < 0.5:
        path += "?" + rng.choice(["q=1", "a=b&c=d", "x=%20y&x=2", "flag", "u=%C3%BC"])
    kind = rng.choice(["json", "json", "json", "text", "invalid", "empty"]) if method != "GET" else "empty"
    body = make_body(rng, kind)
    hs = headers(rng, REQUEST_HEADER_NAMES)
    if rng.random() < 0.35:
        hs += cookie_headers(rng)
    if kind == "json":
        hs.append(("content-type", "application/json"))
    return Request(method, path, hs, body if (body or method != "GET") else None)


def make_reply(rng: random.Random) -> Reply:
    kind = rng.choice(["json", "json", "text", "empty", "invalid"])
    return Reply(rng.choice([200, 200, 201, 404, 500]), headers(rng, REPLY_HEADER_NAMES), make_body(rng, kind))


# Policies -------------------------------------------------------------------------------------
def make_side(rng: random.Random, phase: str, message_body: bytes | None, json_vars_in_body: bool,
              release: str = "v2.3") -> tuple[dict, bool]:
    """One side's transformation, and whether its header values read JSON variables."""
    parse_as = rng.choice([None, "AsString", "AsJson", "AsJson", "None"])
    body_is_object = message_body is not None and body_parses_as_object(message_body)
    json_ok = parse_as == "AsJson" and body_is_object
    side: dict = {}
    info = SideInfo(phase, parse_as, json_ok)

    body_value = None
    if parse_as is not None or rng.random() < 0.3:
        body = {}
        if parse_as is not None:
            body["parseAs"] = parse_as
        if rng.random() < 0.75:
            bi = SideInfo(phase, parse_as, json_ok, body_fns={"body", "context"} if parse_as != "None" else set(),
                          header=False)
            # JSON variables in a body template: only where they resolve (see module docstring).
            gen = Values(rng, bi, allow_json_vars=json_ok and json_vars_in_body, release=release)
            body_value = gen.body_value()
            body["value"] = body_value
        side["body"] = body
    # body()/context() in other values only where the body template calls the same function.
    fns = {f for f in ("body", "context") if body_value and f + "()" in body_value and parse_as != "None"}
    info.body_fns = fns
    # JSON variables in header values: anywhere (a side whose body did not parse answers 400).
    gen = Values(rng, info, allow_json_vars=rng.random() < (0.9 if json_ok else 0.15), release=release)

    def nv(names):
        entry = {"name": rng.choice(names)}
        if rng.random() < 0.9:
            entry["value"] = gen.value()
        return entry

    names = SETTABLE + ([":status"] if phase == "response" else [])
    if rng.random() < 0.7:
        side["set"] = [nv(SETTABLE) for _ in range(rng.randrange(1, 4))]
        if phase == "response" and rng.random() < 0.1:
            side["set"].append({"name": ":status", "value": rng.choice(["201", "418", "{{ 200 + 3 }}"])})
    if rng.random() < 0.4:
        side["add"] = [nv(names[:-1] if phase == "response" else names) for _ in range(rng.randrange(1, 3))]
    if rng.random() < 0.3:
        side["remove"] = rng.sample(SETTABLE, rng.randrange(1, 3))
    if rng.random() < 0.35:
        side["dynamicMetadata"] = [
            {"namespace": rng.choice(METADATA_NAMESPACES), "key": rng.choice(["k1", "k2", "k3"]),
             "value": {"stringValue": gen.value()}}
            for _ in range(rng.randrange(1, 3))
        ]
    return side, info.uses_json


def request_may_fail(policy_request: dict, uses_json: bool, request: Request) -> bool:
    parse_as = (policy_request.get("body") or {}).get("parseAs")
    body = request.body or b""
    if parse_as == "AsJson" and body:
        try:
            json.loads(body)
        except ValueError:
            return True
    return uses_json and not (parse_as == "AsJson" and body_parses_as_object(body))


def make_case(rng: random.Random, case_id: str, release: str = "v2.3") -> Case:
    request = make_request(rng)
    reply = make_reply(rng)
    policy: dict = {}
    req_fails = False
    if rng.random() < 0.65:
        side, uses_json = make_side(rng, "request", request.body, True, release)
        policy["request"] = side
        req_fails = request_may_fail(side, uses_json, request)
    if rng.random() < 0.65 or not policy:
        side, _ = make_side(rng, "response", reply.body, not req_fails, release)
        policy["response"] = side
    return Case(case_id, json.dumps(policy, ensure_ascii=False), request, reply)


def make_cases(seed: int, count: int, prefix: str = "g", release: str = "v2.3") -> list[Case]:
    rng = random.Random(seed)
    return [make_case(rng, f"{prefix}{seed}-{i}", release) for i in range(count)]
