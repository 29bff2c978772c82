import json
import os
import signal
import time

import pytest

from hpcbench.api.errors import UserError
from hpcbench.results import SCHEMA_VERSION, RunWriter, find_runs, load_run, load_runs, read_metadata


def _write_run(path, rows, **meta):
    w = RunWriter(path)
    w.write_config("a: 1\n")
    w.write_metadata({"schema_version": SCHEMA_VERSION, "run_id": path.name, **meta})
    for r in rows:
        w.append(r)
    w.close()
    return path


def test_roundtrip_to_dataframe(tmp_path):
    run = _write_run(tmp_path / "r1", [{"run_id": "r1", "x": 1.5, "samples_s": [1.0, 2.0]},
                                        {"run_id": "r1", "x": float("nan"), "samples_s": [3.0]}])
    df = load_run(run)
    assert list(df["x"].isna()) == [False, True]  # NaN is stored as null, never as a bare NaN token
    assert df["samples_s"][0] == [1.0, 2.0]
    assert df.attrs["metadata"]["run_id"] == "r1"
    assert "NaN" not in (run / "rows.jsonl").read_text()
    assert (run / "config.yaml").read_text() == "a: 1\n"


def test_load_runs_concatenates_and_find_runs_lists(tmp_path):
    _write_run(tmp_path / "a", [{"run_id": "a", "v": 1}])
    _write_run(tmp_path / "b", [{"run_id": "b", "v": 2}, {"run_id": "b", "v": 3}])
    (tmp_path / "not_a_run").mkdir()
    runs = find_runs(tmp_path)
    assert [p.name for p in runs] == ["a", "b"]
    df = load_runs(runs)
    assert sorted(df["run_id"]) == ["a", "b", "b"]


def test_truncated_last_row_and_corrupt_lines_are_skipped_and_reported(tmp_path):
    run = _write_run(tmp_path / "r", [{"v": 1}, {"v": 2}])
    with open(run / "rows.jsonl", "a") as f:
        f.write('{"v": 3, "samp')  # the write a SIGKILL interrupted
    with pytest.warns(UserWarning, match="truncated"):
        df = load_run(run)
    assert list(df["v"]) == [1, 2] and "truncated last row" in df.attrs["damage"][0]
    lines = (run / "rows.jsonl").read_text().splitlines()
    (run / "rows.jsonl").write_text("\n".join([lines[0], "garbage", "[1]", lines[1]]) + "\n")
    with pytest.warns(UserWarning, match="corrupt"):
        df = load_run(run)
    assert list(df["v"]) == [1, 2]  # what is readable is used
    assert df.attrs["damage"] == [f"{run / 'rows.jsonl'}: skipped 2 corrupt line(s): 2, 3"]


def test_schema_versions_upgrade_or_fail_clearly(tmp_path):
    run = _write_run(tmp_path / "v1", [{"benchmark": "pipeline", "schedule": "1f1b", "step_ms": 12.0},
                                       {"benchmark": "gemm", "median_s": 0.5}], schema_version=1)
    df = load_run(run)  # schema 1: pipeline rows had the median step only
    assert list(df["median_s"]) == [0.012, 0.5]
    for version, message in ((SCHEMA_VERSION + 1, "newer than this hpcbench"), (None, "no schema version")):
        meta = json.loads((run / "metadata.json").read_text())
        meta["schema_version"] = version
        (run / "metadata.json").write_text(json.dumps(meta))
        with pytest.raises(UserError, match=message):
            load_run(run)
    with pytest.raises(UserError, match="not a results run"):
        read_metadata(tmp_path)
    with pytest.raises(UserError, match="no such run"):
        load_run(tmp_path / "missing")
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="not a readable parquet"):
        load_run(tmp_path / "x.parquet")


def test_compacted_copy_is_used_only_while_it_matches_the_log(tmp_path):
    rows = [{"benchmark": "b", "v": i, "flag": i % 2 == 0, "name": f"n{i}", "samples_s": [0.1 * i, 0.2],
             "nested": {"a": [i]}, "mixed": [1, "x"] if i else None} for i in range(3)]
    run = _write_run(tmp_path / "r", rows)
    assert RunWriter(run).compact() and (run / "rows.arrow").is_file()
    from_log = load_run(run / "rows.jsonl")
    from_parquet = load_run(run)
    assert from_parquet.to_dict("records") == from_log.to_dict("records")
    arrays = load_run(run, as_lists=False)
    assert list(arrays["samples_s"][1]) == [0.1, 0.2]
    w = RunWriter(run)  # a resumed run appends: the log is newer than the copy
    w.append({"benchmark": "b", "v": 9})
    w.close()
    assert list(load_run(run)["v"]) == [0, 1, 2, 9]


def test_disabled_writer_writes_nothing(tmp_path):
    w = RunWriter(tmp_path / "rank1", enabled=False)
    w.write_metadata({"a": 1})
    w.append({"a": 1})
    assert not (tmp_path / "rank1").exists()


@pytest.mark.subprocess
def test_sigkill_mid_sweep_keeps_every_completed_row(tmp_path):
    """A real CLI run killed with SIGKILL mid-sweep: every row written before the kill loads."""
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("hpcbench")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    shapes = "[" + ",".join(["[64,64,128]"] * 40) + "]"  # long enough to be killed mid-way
    proc = subprocess.Popen([str(exe), "gemm.shapes=custom", f"gemm.custom={shapes}", "gemm.time_quantization=false",
                             "hydra.run.dir=run"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows_file = tmp_path / "run" / "rows.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if rows_file.exists() and len(rows_file.read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    written = len(rows_file.read_text().splitlines())
    df = load_run(tmp_path / "run")
    assert written >= 5 and len(df) >= written - 1  # at most the row being written is lost
    assert len(df) < 40 * 7  # it really was killed mid-sweep
    assert set(df["status"]) <= {"ok", "failed", "skipped"} and df["status"].notna().all()
    assert df.attrs["metadata"]["status"] == "running"  # never marked complete


def test_a_resumed_writer_cuts_the_half_row_a_kill_left(tmp_path):
    run = _write_run(tmp_path / "r", [{"v": 1}])
    with open(run / "rows.jsonl", "a") as f:
        f.write('{"v": 2, "samp')  # killed mid-write
    w = RunWriter(run)
    w.append({"v": 3})
    w.close()
    df = load_run(run)
    assert list(df["v"]) == [1, 3] and df.attrs["damage"] == []
    assert RunWriter(run).compact()  # a clean log again


def test_null_samples_survive_compaction_and_read_as_nan(tmp_path):
    from hpcbench.results.reader import load_run_samples

    run = _write_run(tmp_path / "r", [{"benchmark": "gemm", "samples_s": [1.0, float("nan"), 2.0]},
                                      {"benchmark": "gemm", "samples_s": [3.0]}])
    assert RunWriter(run).compact()
    _, samples = load_run_samples(run)
    assert list(samples.lengths) == [3, 1]
    assert samples.values[samples.starts[0] + 1] != samples.values[samples.starts[0] + 1]  # NaN
    assert load_run(run)["samples_s"][0][0] == 1.0


@pytest.mark.parametrize("damage,warning,rows_read", [
    ("emptied", "rows.jsonl: holds 0 row(s), the metadata counts 3: read the 3 row(s) of rows.arrow", 3),
    ("deleted", "rows.jsonl: missing, the metadata counts 3: read the 3 row(s) of rows.arrow", 3),
    ("cut, no copy", "rows.jsonl: holds 2 row(s), the metadata counts 3: 1 row(s) lost", 2),
    ("deleted, no copy", None, 0),
])
def test_rows_that_disagree_with_the_metadatas_counts_are_reported(damage, warning, rows_read, tmp_path, capsys):
    """`show` (and every reader) says when the log holds fewer rows than the metadata counts,
    reads the columnar copy where it holds them, and fails where nothing is left."""
    from hpcbench.core.cli import main

    rows = [{"benchmark": "other", "status": "ok", "M": i} for i in range(3)]  # a family without a table
    run = _write_run(tmp_path / "r", rows, points={"ok": 3, "failed": 0, "skipped": 0}, suite=["other"])
    assert RunWriter(run).compact()
    log = run / "rows.jsonl"
    if damage == "emptied":
        log.write_text("")
    elif damage.startswith("deleted"):
        log.unlink()
    else:
        log.write_text("".join(log.read_text().splitlines(keepends=True)[:2]))
    if damage.endswith("no copy"):
        (run / "rows.arrow").unlink()
    code = main(["show", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    if rows_read == 0:
        assert code == 2 and len(err) == 1 and "nothing of this run's rows is left to read" in err[0], err
        return
    assert code == 0 and err == [f"hpcbench: warning: {run / warning}"]
    with pytest.warns(UserWarning, match="the metadata counts 3"):
        assert list(load_run(run)["M"]) == list(range(rows_read))


def test_a_run_that_stored_nothing_reads_as_empty_without_a_warning(tmp_path, recwarn):
    run = _write_run(tmp_path / "r", [], points={"ok": 0, "failed": 0, "skipped": 0})
    assert load_run(run).empty and not [w for w in recwarn if "metadata counts" in str(w.message)]
