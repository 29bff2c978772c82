#!/usr/bin/env python3
"""The Markdown report of a mutation run, with each survivor's verdict (scripts/mutation_verdicts.toml).

    python scripts/mutation_report.py /tmp/hpcbench-mutation-X.json            # re-render with today's verdicts
    python scripts/mutation_report.py RUN.json --check 85                      # exit 1 below 85 % on any module

A survivor is matched to a verdict by its module and its diff (the original and mutated lines, whitespace at
either end of each line ignored), not by mutant id or line number: ids and lines move when the file changes.
`equivalent` mutants cannot change anything observable and leave the score's denominator; `left` ones are real,
kept with a reason, and count as not killed. The score is what the issue asks for: (killed + timeout) / (sampled -
equivalent - not run); a mutant whose tests ran past the timeout was detected (a loop that no longer ends).
"""

from __future__ import annotations

import argparse, json, sys, tomllib  # noqa: E401
from pathlib import Path

COUNTS = ("killed", "survived", "timeout", "no_tests", "other", "not_run")
VERDICTS = Path(__file__).with_name("mutation_verdicts.toml")


def _key(module: str, original: str, mutated: str) -> tuple[str, str, str]:
    strip = lambda text: "\n".join(line.strip() for line in text.strip("\n").splitlines())  # noqa: E731
    return module, strip(original), strip(mutated)


def load_verdicts(path: Path = VERDICTS) -> dict[tuple[str, str, str], dict]:
    if not path.exists():
        return {}
    out = {}
    for entry in tomllib.loads(path.read_text())["mutant"]:
        if entry["verdict"] not in ("equivalent", "left") or not entry.get("reason"):
            raise ValueError(f"{path}: verdict must be 'equivalent' or 'left', with a reason: {entry}")
        out[_key(entry["module"], entry["original"], entry["mutated"])] = entry
    return out


def judge(module: dict, verdicts: dict) -> dict:
    """The module's counts with its survivors split by verdict, and its score (None when nothing was judged)."""
    counts = dict(module["counts"])
    for s in module["survivors"]:
        entry = verdicts.get(_key(module["name"], s["original"], s["mutated"]))
        s["verdict"], s["reason"] = (entry["verdict"], entry["reason"]) if entry else ("unexplained", "")
    for v in ("equivalent", "left", "unexplained"):
        counts[v] = sum(s["verdict"] == v for s in module["survivors"])
    judged = module.get("sampled", 0) - counts["equivalent"] - counts["not_run"]
    counts["score"] = (counts["killed"] + counts["timeout"]) / judged if judged > 0 else None
    return counts


def markdown(report: dict, verdicts: dict) -> str:
    r = report["run"]
    cols = (*COUNTS, "equivalent", "left", "unexplained")
    out = [f"# Mutation run {r['started']}", "", f"seed {r['seed']}, at most {r['max_per_module']} mutmut and "
           f"{r['max_tables']} module-level (AST) mutants per module, timeout {r['timeout_factor']}x the baseline, budget "
           f"{r['budget_min']} min, took {r['wall_s']} s; marker filter: {r['marker_expr'] or 'none (not registered)'}", "",
           "score = (killed + timeout) / (sampled - equivalent - not run); survivors' verdicts: scripts/mutation_verdicts.toml",
           "", "| module | generated ast/mutmut | sampled | " + " | ".join(k.replace("_", " ") for k in cols)
           + " | score | baseline s | status |", "|---" * (len(cols) + 6) + "|"]
    judged = {m["name"]: judge(m, verdicts) for m in report["modules"]}
    for m in report["modules"]:
        g, c = m.get("generated", {}), judged[m["name"]]
        score = "-" if c["score"] is None else f"{100 * c['score']:.1f} %"
        out.append(f"| {m['name']} | {g.get('ast', '-')}/{g.get('mutmut', '-')} | {m.get('sampled', '-')} | "
                   + " | ".join(str(c[k]) for k in cols) + f" | {score} | {m.get('baseline_s', '-')} | {m['status']} |")
    for m in report["modules"]:
        out += ["", f"## {m['name']} ({m['file']})", "", f"tests: `{' '.join(m['pytest_args'] or [])}`"]
        out += [f"- note: {n}" for n in m["notes"]]
        out += [line for key in ("baseline_output", "planted_output") if key in m for line in ("", "```", m[key], "```")]
        if m["no_tests"]:
            out += ["", "Functions that no selected test reaches (their mutants count as 'no tests'): "
                    + ", ".join(f"`{f}` ({n})" for f, n in sorted(m["no_tests"].items()))]
        groups = [(f"Survivors: {v}", [s for s in m["survivors"] if s["verdict"] == v])
                  for v in ("unexplained", "left", "equivalent")]
        for title, items in (*groups, ("Other outcomes", m["others"]), ("Mutants", m.get("mutants", []))):
            if items:
                out += ["", f"{title} ({len(items)}):", "", "```diff"]
                for s in items:
                    out += [f"# {s['file']}:{s['line']}  [{s['engine']} {s['kind']}]  {s['id']}"
                            + (f"  status: {s['status']}" if "status" in s else "")]
                    out += [f"# {s['verdict']}: {s['reason']}"] if s.get("reason") else []
                    out += ["- " + line for line in s["original"].splitlines() or [""]]
                    out += ["+ " + line for line in s["mutated"].splitlines() or [""]] + [""]
                out += ["```"]
    return "\n".join(out) + "\n"


def below(report: dict, verdicts: dict, percent: float) -> list[str]:
    """Modules whose score is under `percent`, or that left mutants not run."""
    bad = []
    for m in report["modules"]:
        c = judge(m, verdicts)
        if c["not_run"] or c["score"] is None or 100 * c["score"] < percent:
            bad.append(f"{m['name']}: score {c['score']}, {c['not_run']} not run")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path, help="the .json a mutation run wrote beside its Markdown")
    ap.add_argument("--verdicts", type=Path, default=VERDICTS)
    ap.add_argument("--out", type=Path, help="write the Markdown here (default: print it)")
    ap.add_argument("--check", type=float, metavar="PERCENT", help="exit 1 when a module scores below PERCENT")
    opts = ap.parse_args()
    report, verdicts = json.loads(opts.report.read_text()), load_verdicts(opts.verdicts)
    text = markdown(report, verdicts)
    opts.out.write_text(text) if opts.out else print(text)
    if opts.check is not None and (bad := below(report, verdicts, opts.check)):
        print("below the bar:\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
