"""kgateway's own module (the oracle: v2.3's in Envoy 1.37.0 or v2.4's in Envoy 1.38.3, by
`DIFF_ORACLE`) and ours, side by side in two real Envoy processes of the oracle's release.

- generated cases (seeded; DIFF_CASES, DIFF_SEED): every observable must agree;
- config acceptance (DIFF_CONFIGS): both Envoys take or refuse the same policies;
- each row of the README's "Where we deliberately differ" table shows exactly its difference;
- the README's table is the one `differences.py` describes.

A failing case prints a reproduction: policy, request, upstream reply and both outcomes.
"""

from __future__ import annotations

import os
import pathlib

import pytest

from acceptance import compare_acceptance, make_policies
from compare import differing_fields, reproduction
from differences import DIFFERENCES, markdown_table
from generator import make_cases
from pair import ORACLE, probe_pair, run_pair

SEED = int(os.environ.get("DIFF_SEED", "20261201"))
CASES = int(os.environ.get("DIFF_CASES", "3000"))
CONFIGS = int(os.environ.get("DIFF_CONFIGS", "500"))
README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_generated_cases_agree():
    cases = make_cases(SEED, CASES, release=ORACLE.release)
    ours, theirs = run_pair(cases)
    diffs = [c for c in cases if differing_fields(ours[c.id], theirs[c.id])]
    for c in diffs[:10]:
        print(reproduction(c, ours[c.id], theirs[c.id]), "\n")
    upstream = sum(1 for c in cases if theirs[c.id].details == "via_upstream")
    print(f"differential against kgateway {ORACLE.release}: seed {SEED}: {len(cases)} cases compared ({upstream} answered by the upstream, the rest "
          f"by the filter or Envoy), "
          f"{len(diffs)} unexplained differences")
    assert not diffs, f"{len(diffs)} of {len(cases)} cases differ; reproductions above"


def test_config_acceptance_agrees():
    policies = make_policies(SEED, CONFIGS, release=ORACLE.release)
    unexplained, deliberate = compare_acceptance(policies)
    for policy, kgateway, ours in unexplained[:20]:
        print(f"policy {policy}\n  kgateway: {kgateway}\n  ours:     {ours}")
    print(f"acceptance against kgateway {ORACLE.release}: seed {SEED}: {len(set(policies))} distinct policies, {deliberate} refused on purpose by ours "
          f"alone, {len(unexplained)} unexplained differences")
    assert not unexplained


BEHAVIOUR_ROWS = [d for d in DIFFERENCES if d.case is not None and ORACLE.release in d.releases]
LOAD_ROWS = [d for d in DIFFERENCES if d.policy is not None and ORACLE.release in d.releases]


@pytest.fixture(scope="module")
def row_outcomes():
    """Every behaviour row through both Envoys; rows with an environment of their own apart."""
    outcomes = {}
    plain = [d for d in BEHAVIOUR_ROWS if d.ours_env is None]
    ours, theirs = run_pair([d.case for d in plain])
    outcomes.update({d.key: (ours[d.case.id], theirs[d.case.id]) for d in plain})
    for d in BEHAVIOUR_ROWS:
        if d.ours_env is not None:
            ours, theirs = run_pair([d.case], ours_env=d.ours_env)
            outcomes[d.key] = (ours[d.case.id], theirs[d.case.id])
    return outcomes


@pytest.mark.parametrize("row", BEHAVIOUR_ROWS, ids=lambda d: d.key)
def test_deliberate_difference_shows_exactly_itself(row, row_outcomes):
    ours, theirs = row_outcomes[row.key]
    problems = row.check(ours, theirs, differing_fields(ours, theirs))
    assert not problems, f"{problems}\n{reproduction(row.case, ours, theirs)}"


def test_deliberate_load_differences():
    ours, theirs = probe_pair()
    try:
        for row in LOAD_ROWS:
            got = (theirs.offer(row.policy, row.config_name), ours.offer(row.policy, row.config_name))
            assert got == row.verdicts, f"{row.key}: (kgateway, ours) = {got}, expected {row.verdicts}"
    finally:
        ours.close()
        theirs.close()


def test_readme_table_is_the_differences_table():
    assert markdown_table() in README.read_text(), (
        "README.md's table of deliberate differences is not the one tests/diff/differences.py describes; "
        "print it with tests/diff/run.py --table")
