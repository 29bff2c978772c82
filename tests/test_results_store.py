import json
import os
import signal
import time

import pytest

from hpcbench.errors import UserError
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


def test_truncated_last_row_is_dropped_but_corrupt_middle_is_an_error(tmp_path):
    run = _write_run(tmp_path / "r", [{"v": 1}, {"v": 2}])
    with open(run / "rows.jsonl", "a") as f:
        f.write('{"v": 3, "samp')  # the write a SIGKILL interrupted
    with pytest.warns(UserWarning, match="truncated"):
        assert list(load_run(run)["v"]) == [1, 2]
    lines = (run / "rows.jsonl").read_text().splitlines()
    (run / "rows.jsonl").write_text("\n".join([lines[0], "garbage", lines[1]]) + "\n")
    with pytest.raises(UserError, match="corrupt"):
        load_run(run)


def test_schema_version_and_missing_metadata_are_user_errors(tmp_path):
    run = _write_run(tmp_path / "old", [], schema_version=0)
    meta = json.loads((run / "metadata.json").read_text())
    meta["schema_version"] = 0
    (run / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="schema version"):
        load_run(run)
    with pytest.raises(UserError, match="not a results run"):
        read_metadata(tmp_path)


def test_disabled_writer_writes_nothing(tmp_path):
    w = RunWriter(tmp_path / "rank1", enabled=False)
    w.write_metadata({"a": 1})
    w.append({"a": 1})
    assert not (tmp_path / "rank1").exists()


@pytest.mark.slow
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
