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


# ---- what a row and the metadata look like on disk ------------------------------------------------------

def _log(run_dir: Path) -> str:
    return (run_dir / ROWS_FILE).read_text()


def test_numpy_scalars_nan_and_tuples_are_written_as_plain_json(tmp_path):
    import numpy as np

    w = RunWriter(tmp_path / "run")
    w.append({"i": np.int64(3), "f32": np.float32(0.25), "f64": np.float64(1.5), "nan": np.float64("nan"),
              "nan32": np.float32("nan"), "t": (1, np.int32(2)), "nested": {"x": [np.float64(0.5), float("nan")]}})
    w.close()
    assert _log(tmp_path / "run") == ('{"i": 3, "f32": 0.25, "f64": 1.5, "nan": null, "nan32": null, "t": [1, 2], '
                                      '"nested": {"x": [0.5, null]}}\n')


def test_metadata_is_indented_json_ending_in_a_newline(tmp_path):
    w = RunWriter(tmp_path / "run")
    w.write_metadata({"status": "running", "points": {"ok": 1}, "p": float("nan")})
    assert (tmp_path / "run" / METADATA_FILE).read_text() == (
        '{\n  "status": "running",\n  "points": {\n    "ok": 1\n  },\n  "p": null\n}\n')


def test_the_writer_makes_missing_parent_directories(tmp_path):
    w = RunWriter(tmp_path / "results" / "2024" / "run")
    assert (tmp_path / "results" / "2024" / "run").is_dir()
    w.append({"n": 1})
    w.close()
    assert _log(tmp_path / "results" / "2024" / "run") == '{"n": 1}\n'


def test_close_is_safe_before_any_row_and_twice_and_a_closed_writer_appends_again(tmp_path):
    w = RunWriter(tmp_path / "run")
    w.close()  # nothing opened yet
    w.append({"n": 1})
    w.close()
    w.close()
    w.append({"n": 2})  # reopens the log
    w.close()
    assert _log(tmp_path / "run") == '{"n": 1}\n{"n": 2}\n' and w.rows_written == 2


# ---- a log cut mid-write is cut back to its last full line before a resumed run appends ----------------

@pytest.mark.parametrize("before,after", [
    ("", ""),                                                   # an empty log: nothing to cut
    ("{", ""),                                                  # cut after its first byte
    ('{"n": 1}\n', '{"n": 1}\n'),                               # complete: kept
    ('{"n": 1}\n{', '{"n": 1}\n'),                              # the next row cut after one byte
    ('{"n": 1}\n{"n": 2}\n{"n": 3, "sta', '{"n": 1}\n{"n": 2}\n'),  # two full rows kept
    ('{}\n{"n": 2', '{}\n'),                                    # an empty row, then a cut one
], ids=["empty", "first-byte", "complete", "next-row-one-byte", "two-rows-then-cut", "empty-row-then-cut"])
def test_a_cut_last_line_is_dropped_before_the_next_row(tmp_path, before, after):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ROWS_FILE).write_text(before)
    w = RunWriter(run_dir)
    w.append({"n": 9})
    w.close()
    assert _log(run_dir) == after + '{"n": 9}\n'
    rows, damaged = w.stored()
    assert not damaged and rows[-1] == {"n": 9}


# ---- stored() and compact() ------------------------------------------------------------------------

def test_stored_reports_a_corrupt_line_and_compact_then_leaves_the_log_alone(tmp_path):
    from hpcbench.results.schema import ROWS_ARROW

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ROWS_FILE).write_text('{"n": 1}\nnot json\n{"n": 3}\n')
    w = RunWriter(run_dir)
    assert w.stored() == ([{"n": 1}, {"n": 3}], True)
    assert w.compact() is False and not (run_dir / ROWS_ARROW).exists()


def test_compact_writes_the_columnar_copy_stamped_with_the_log_size(tmp_path):
    from hpcbench.results import columnar
    from hpcbench.results.schema import ROWS_ARROW

    run_dir = tmp_path / "run"
    w = RunWriter(run_dir)
    assert w.compact() is False and not (run_dir / ROWS_ARROW).exists()  # no log yet
    w.append({"n": 1})
    w.append({"n": 2})
    w.close()
    assert w.compact() is True
    # '{"n": 1}\n{"n": 2}\n': 18 bytes, which the reader compares to tell a current copy from a stale one
    meta = columnar.schema_of(run_dir / ROWS_ARROW).metadata
    assert meta[columnar.SOURCE_BYTES_KEY] == b"18"
    assert columnar.read_table(run_dir / ROWS_ARROW).to_pydict() == {"n": [1, 2]}
    # with the rows given, the same stamp
    (run_dir / ROWS_ARROW).unlink()
    assert w.compact([{"n": 1}, {"n": 2}]) is True
    assert columnar.schema_of(run_dir / ROWS_ARROW).metadata[columnar.SOURCE_BYTES_KEY] == b"18"


def test_a_disabled_writer_neither_reads_nor_compacts_an_existing_log(tmp_path):
    from hpcbench.results.schema import ROWS_ARROW

    run_dir = tmp_path / "run"
    w = RunWriter(run_dir)
    w.append({"status": "ok"})
    w.close()
    other = RunWriter(run_dir, enabled=False)  # another rank, same directory
    assert other.stored() == ([], False)
    assert other.compact() is False and not (run_dir / ROWS_ARROW).exists()


# ---- record_failure -------------------------------------------------------------------------------

def _metadata(run_dir: Path) -> dict:
    return json.loads((run_dir / METADATA_FILE).read_text())


def test_record_failure_marks_an_unfinished_run_and_keeps_rank0_s_own_error(tmp_path):
    from hpcbench.results.writer import record_failure

    run_dir = tmp_path / "run"
    RunWriter(run_dir).write_metadata({"status": "running", "error": "rank 0: CUDA out of memory", "points": 3})
    record_failure(run_dir, "rank 1 exited with signal 9")
    assert _metadata(run_dir) == {"status": "error", "error": "rank 1 exited with signal 9",
                                  "rank0_error": "rank 0: CUDA out of memory", "points": 3}


def test_record_failure_without_an_earlier_error_adds_no_rank0_error(tmp_path):
    from hpcbench.results.writer import record_failure

    run_dir = tmp_path / "run"
    RunWriter(run_dir).write_metadata({"status": "running", "error": None})
    record_failure(run_dir, "launcher: timed out")
    assert _metadata(run_dir) == {"status": "error", "error": "launcher: timed out"}


def test_record_failure_leaves_a_complete_run_and_a_run_without_metadata_alone(tmp_path):
    from hpcbench.results.writer import record_failure

    done = tmp_path / "done"
    RunWriter(done).write_metadata({"status": "complete"})
    before = (done / METADATA_FILE).read_text()
    record_failure(done, "rank 1 exited 1")
    assert (done / METADATA_FILE).read_text() == before
    empty = tmp_path / "empty"
    empty.mkdir()
    record_failure(empty, "rank 1 exited 1")  # no metadata: nothing to mark, nothing written
    assert list(empty.iterdir()) == []
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / METADATA_FILE).write_text("{not json")
    record_failure(corrupt, "rank 1 exited 1")
    assert (corrupt / METADATA_FILE).read_text() == "{not json"
