"""Comparing the two modules' outcomes, and printing a difference so it can be reproduced."""

from __future__ import annotations

import json

from pair import Case, Outcome


def differing_fields(ours: Outcome, theirs: Outcome) -> list[str]:
    a, b = ours.observable(), theirs.observable()
    return [k for k in a if a[k] != b[k]]


def _show(value) -> str:
    if isinstance(value, bytes):
        try:
            return json.dumps(value.decode())
        except UnicodeDecodeError:
            return repr(value)
    return json.dumps(value, ensure_ascii=False, default=lambda v: v.decode("utf-8", "replace"))


def reproduction(case: Case, ours: Outcome, theirs: Outcome) -> str:
    """The policy, the request, the upstream's reply and both outcomes where they differ."""
    lines = [
        f"case {case.id}",
        f"  policy:   {case.policy}",
        f"  request:  {case.request.method} {case.request.path} headers={_show(case.request.headers)} "
        f"body={_show(case.request.body or b'')}",
        f"  reply:    {case.reply.status} headers={_show(case.reply.headers)} body={_show(case.reply.body)}",
    ]
    a, b = ours.observable(), theirs.observable()
    for k in differing_fields(ours, theirs):
        lines.append(f"  {k}:")
        lines.append(f"    kgateway: {_show(b[k])}")
        lines.append(f"    ours:     {_show(a[k])}")
    return "\n".join(lines)
