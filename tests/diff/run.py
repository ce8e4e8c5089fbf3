#!/usr/bin/env python3
"""Hand runs of the differential suite (make test-diff runs it through pytest).

    tests/diff/run.py --seed 7 --cases 20000     generated cases through both modules
    (DIFF_ORACLE=v2.4 with ENVOY_VERSION/ENVOY_BIN of Envoy 1.38.3: against kgateway v2.4's module)
    tests/diff/run.py --configs 400 --seed 3     config acceptance only
    tests/diff/run.py --table                    the README's difference table, from differences.py
"""

from __future__ import annotations

import argparse
import sys
import time

from compare import differing_fields, reproduction
from generator import make_cases
from pair import ORACLE, run_pair


def run_generated(seed: int, count: int, show: int = 10) -> int:
    """Runs `count` generated cases; prints the unexplained differences; returns their number."""
    t0 = time.time()
    cases = make_cases(seed, count, release=ORACLE.release)
    ours, theirs = run_pair(cases)
    diffs = [c for c in cases if differing_fields(ours[c.id], theirs[c.id])]
    for c in diffs[:show]:
        print(reproduction(c, ours[c.id], theirs[c.id]), "\n")
    print(f"differential against kgateway {ORACLE.release}: seed {seed}: {count} cases compared in {time.time() - t0:.0f}s, "
          f"{len(diffs)} unexplained differences")
    return len(diffs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--show", type=int, default=10, help="reproductions to print")
    ap.add_argument("--configs", type=int, help="config acceptance mode: this many policies")
    ap.add_argument("--table", action="store_true", help="print the README's difference table")
    args = ap.parse_args()
    if args.table:
        from differences import markdown_table
        print(markdown_table())
        return 0
    if args.configs:
        from acceptance import run_acceptance
        return 1 if run_acceptance(args.seed, args.configs, ORACLE.release) else 0
    return 1 if run_generated(args.seed, args.cases, args.show) else 0


if __name__ == "__main__":
    sys.exit(main())
