"""The mutation report's score and verdict matching (scripts/mutation_report.py), on hand-made runs."""

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import mutation_report as mr  # noqa: E402


def _survivor(original, mutated, line=10):
    return {"id": f"m{line}", "engine": "mutmut", "kind": "function", "file": "f.py", "line": line,
            "original": original, "mutated": mutated}


def _module(name="stats", sampled=10, killed=6, timeout=1, not_run=0, no_tests=0, survivors=()):
    counts = dict.fromkeys(mr.COUNTS, 0) | {"killed": killed, "timeout": timeout, "not_run": not_run,
                                            "no_tests": no_tests, "survived": len(survivors)}
    return {"name": name, "file": "f.py", "notes": [], "status": "ok", "pytest_args": ["t.py"], "sampled": sampled,
            "counts": counts, "survivors": list(survivors), "no_tests": {}, "others": []}


VERDICTS = {mr._key("stats", "    x = a < b", "    x = a <= b"): {"verdict": "equivalent", "reason": "a != b here"},
            mr._key("stats", "y = 1", "y = 2"): {"verdict": "left", "reason": "cosmetic"}}


def test_score_leaves_equivalent_out_and_counts_left_and_unexplained_as_not_killed():
    survivors = [_survivor("  x = a < b  ", "x = a <= b"),  # whitespace at the ends does not matter
                 _survivor("y = 1", "y = 2"), _survivor("z = 0", "z = 1")]
    c = mr.judge(_module(survivors=survivors), VERDICTS)
    assert (c["equivalent"], c["left"], c["unexplained"]) == (1, 1, 1)
    assert c["score"] == pytest.approx(7 / 9)  # (6 killed + 1 timeout) / (10 sampled - 1 equivalent)
    assert [s["verdict"] for s in survivors] == ["equivalent", "left", "unexplained"]


def test_a_verdict_is_for_its_module_and_its_exact_change_only():
    survivors = [_survivor("x = a < b", "x = a > b"), _survivor("y = 1", "y = 2")]
    c = mr.judge(_module(name="other", survivors=survivors), VERDICTS)
    assert (c["equivalent"], c["left"], c["unexplained"]) == (0, 0, 2)
    assert c["score"] == pytest.approx(7 / 10)


def test_not_run_leaves_the_denominator_and_fails_the_check():
    done = _module(sampled=10, killed=7, timeout=0, not_run=2, survivors=[_survivor("y = 1", "y = 2")])
    c = mr.judge(done, VERDICTS)
    assert c["score"] == pytest.approx(7 / 8)
    report = {"modules": [done, _module(name="full", sampled=20, killed=17, timeout=0)]}
    assert mr.below(report, VERDICTS, 85.0) == ["stats: score 0.875, 2 not run"]
    report["modules"] = report["modules"][1:]  # 17/20 = 85 %: at the bar is not below it
    assert mr.below(report, VERDICTS, 85.0) == []
    assert mr.below(report, VERDICTS, 85.1) == ["full: score 0.85, 0 not run"]


def test_markdown_shows_the_score_and_each_survivors_reason():
    run = {"started": "x", "seed": 0, "max_per_module": 200, "max_tables": 20, "timeout_factor": 10.0,
           "budget_min": 1.0, "wall_s": 3, "marker_expr": None}
    report = {"run": run, "modules": [_module(survivors=[_survivor("x = a < b", "x = a <= b")])]}
    text = mr.markdown(report, VERDICTS)
    row = next(line for line in text.splitlines() if line.startswith("| stats |"))
    assert row.split(" | ")[2:14] == ["10", "6", "1", "1", "0", "0", "0", "1", "0", "0", "77.8 %", "-"]
    assert "# equivalent: a != b here" in text and "Survivors: equivalent (1)" in text


def test_a_verdict_needs_a_known_kind_and_a_reason(tmp_path):
    bad = tmp_path / "v.toml"
    bad.write_text('[[mutant]]\nmodule = "m"\noriginal = "a"\nmutated = "b"\nverdict = "fine"\nreason = "r"\n')
    with pytest.raises(ValueError, match="verdict must be"):
        mr.load_verdicts(bad)
    bad.write_text('[[mutant]]\nmodule = "m"\noriginal = "a"\nmutated = "b"\nverdict = "left"\n')
    with pytest.raises(ValueError, match="with a reason"):
        mr.load_verdicts(bad)
    assert mr.load_verdicts(tmp_path / "absent.toml") == {}


def test_the_recorded_verdicts_load():
    assert all(v["verdict"] in ("equivalent", "left") for v in mr.load_verdicts().values())
