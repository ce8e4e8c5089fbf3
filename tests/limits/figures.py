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


def table() -> str:
    """The last run's figures as a Markdown table: one row per case, one column group per suite."""
    runs = {}
    for path in sorted(OUT.glob("*.jsonl")):
        runs[path.stem] = {}
        for line in path.read_text().splitlines():
            row = json.loads(line)
            runs[path.stem][row.pop("case")] = row
    cases = []
    for rows in runs.values():
        cases += [c for c in rows if c not in cases]
    names = ["CLI" if r == "cli-cli" else r.replace("envoy-", "Envoy ") for r in runs]
    header = "| case | " + " | ".join(names) + " |"
    lines = [header, "|---|" + "---|" * len(runs)]
    for case in cases:
        cells = []
        for rows in runs.values():
            row = rows.get(case)
            if row is None:
                cells.append("")
            elif "heavy_s" in row:
                kept = f", {row['retained_mib']} MiB kept" if "retained_mib" in row else ""
                cells.append(f"{row['heavy_s']:.3f} s, plain {row['plain_s']:.3f} s, +{row['rss_growth_mib']} MiB{kept}")
            elif "refused_within_s" in row:
                cells.append(f"refused in {row['refused_within_s']} s, +{row['rss_growth_mib']} MiB")
            elif "peak_rss_mib" in row:
                cells.append(f"{row['seconds']:.3f} s, peak {row['peak_rss_mib']} MiB")
            else:
                cells.append(f"{row['seconds']:.3f} s")
        lines.append(f"| `{case}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
