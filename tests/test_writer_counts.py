"""A run's metadata counts its stored points by status: ok, failed and skipped, in-process through
the runner (the toy plugin family with a scripted outcome per point), and across a resumed
attempt, where the counts cover every point stored by either attempt."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hpcbench.api import registry
from hpcbench.results.schema import METADATA_FILE, ROWS_FILE, STATUS_FAILED, STATUS_OK, STATUS_SKIPPED
from hpcbench.results.writer import RunWriter, status_counts

PLUGINS = Path(__file__).resolve().parent / "plugins"


# the scripted outcome of each toy size: n < 100 ok, 100 <= n < 200 skipped, n >= 200 failed
def _outcome(n: int) -> str:
    return STATUS_OK if n < 100 else STATUS_SKIPPED if n < 200 else STATUS_FAILED


def _scripted_run(cfg, ctx):
    ctx.set_total(len(cfg.sizes))
    for n in cfg.sizes:
        row = {"n": n, "order": str(cfg.order)}
        if ctx.already_measured(row):
            continue
        status = _outcome(n)
        if status == STATUS_OK:
            yield {**row, "status": STATUS_OK, "median_s": 1e-6 * n, "samples_s": [1e-6 * n] * 3}
        elif status == STATUS_SKIPPED:
            yield {**row, "status": STATUS_SKIPPED, "reason": "not on this machine"}
        else:
            yield {**row, "status": STATUS_FAILED, "reason": "wrong sum"}


@pytest.fixture
def scripted_toy(monkeypatch, tmp_path):
    """The toy family found as a plugin, its run() replaced by the scripted one."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("HPCBENCH_FAMILIES", "toyfamily")
    monkeypatch.chdir(tmp_path)
    import toyfamily

    # only the toy family: importing every built-in family would cost seconds
    fams = {"toy": dataclasses.replace(toyfamily.FAMILY, run=_scripted_run)}
    monkeypatch.setattr(registry, "families", lambda: fams)
    return tmp_path


def _attempt(run_dir: Path, sizes: list[int]) -> tuple[int, dict, list[dict]]:
    from hpcbench.core import runner
    from hpcbench.core.plan import plan_run
    from hpcbench.testing import compose

    cfg = compose(["toy"], [f"toy.sizes=[{','.join(map(str, sizes))}]", "device=cpu"])
    code = runner.run_rank(plan_run(cfg), run_dir)
    meta = json.loads((run_dir / METADATA_FILE).read_text())
    rows = [json.loads(line) for line in (run_dir / ROWS_FILE).read_text().splitlines() if line.strip()]
    return code, meta, rows


def test_first_attempt_counts_ok_failed_and_skipped_points(scripted_toy):
    # sizes 1, 2, 3 ok; 150, 160 skipped; 250 failed
    run_dir = scripted_toy / "run"
    code, meta, rows = _attempt(run_dir, [1, 150, 2, 250, 3, 160])
    assert [r["status"] for r in rows] == ["ok", "skipped", "ok", "failed", "ok", "skipped"]
    assert meta["status"] == "complete"
    assert meta["points"] == {"ok": 3, "failed": 1, "skipped": 2}
    assert code == 1  # a failed point fails the run


def test_a_run_with_no_failure_exits_0_and_counts_its_skips(scripted_toy):
    code, meta, _ = _attempt(scripted_toy / "run", [1, 150, 160, 170])
    assert meta["points"] == {"ok": 1, "failed": 0, "skipped": 3}
    assert code == 0


def test_a_resumed_attempt_counts_every_stored_point(scripted_toy):
    run_dir = scripted_toy / "run"
    # attempt 1: ok 1, 2; skipped 150; failed 250
    _, first, _ = _attempt(run_dir, [1, 2, 150, 250])
    assert first["points"] == {"ok": 2, "failed": 1, "skipped": 1}
    # attempt 2 asks for 1, 2 and 150 again (stored ok/skipped: not measured again) and new points 3
    # (ok) and 160 (skipped); it no longer asks for 250, whose failed row stays stored
    _, second, rows = _attempt(run_dir, [1, 2, 150, 3, 160])
    assert [(r["n"], r["status"]) for r in rows] == [(1, "ok"), (2, "ok"), (150, "skipped"), (250, "failed"),
                                                     (3, "ok"), (160, "skipped")]
    # distinct stored points: ok 1, 2, 3; skipped 150, 160; failed 250
    assert second["points"] == {"ok": 3, "failed": 1, "skipped": 2}
    assert second["resumed"] is True and len(second["attempts"]) == 1
    assert second["attempts"][0]["points"] == {"ok": 2, "failed": 1, "skipped": 1}
    assert second["status"] == "complete"


def test_status_counts_counts_each_status_and_nothing_else():
    rows = [{"status": "ok"}, {"status": "skipped"}, {"status": "failed"}, {"status": "ok"},
            {"status": "skipped"}, {"status": "skipped"}, {}, {"status": "running"}]
    assert status_counts(rows) == {"ok": 2, "failed": 1, "skipped": 3}
    assert status_counts([]) == {"ok": 0, "failed": 0, "skipped": 0}


def test_writer_stored_rows_give_the_counts(tmp_path):
    """Driven directly: the rows written come back from stored(), every one of them."""
    w = RunWriter(tmp_path / "run")
    for status in ("ok", "skipped", "failed", "skipped", "ok", "ok"):
        w.append({"status": status})
    w.close()
    rows, damaged = w.stored()
    assert not damaged and w.rows_written == 6
    assert status_counts(rows) == {"ok": 3, "failed": 1, "skipped": 2}
    # a second writer on the same run appends after the first's rows
    w2 = RunWriter(tmp_path / "run")
    w2.append({"status": "skipped"})
    w2.close()
    assert status_counts(w2.stored()[0]) == {"ok": 3, "failed": 1, "skipped": 3}
    # a disabled writer (ranks other than 0) stores nothing
    assert RunWriter(tmp_path / "other", enabled=False).stored() == ([], False)
