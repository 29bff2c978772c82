"""A run started again under the same run id measures only what it lacks; SIGTERM marks a run cut short."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpcbench.results import load_run


TWO_SHAPES = ["gemm.shapes=custom", "gemm.custom=[[48,40,160],[32,32,128]]", "gemm.backends=[torch]"]


@pytest.mark.subprocess
def test_second_attempt_skips_stored_points_and_force_remeasures(cli, tmp_path):
    env = {"HPCBENCH_RUN_ID": "sweep-a_0"}
    first = cli(*TWO_SHAPES, env=env)
    assert first.returncode == 0, first.stderr
    run = tmp_path / "results" / "sweep-a_0"
    n_first = len(load_run(run))
    again = cli(*TWO_SHAPES, env=env)
    assert again.returncode == 0, again.stderr
    assert f"resumed: {n_first} point(s) already in this run" in again.stderr
    df = load_run(run)
    meta = df.attrs["metadata"]
    assert len(df) == n_first and meta["resumed"] and len(meta["attempts"]) == 1
    assert meta["attempts"][0]["status"] == "complete"
    wider = cli(*TWO_SHAPES[:1], "gemm.custom=[[48,40,160],[32,32,128],[16,16,128]]", TWO_SHAPES[2], env=env)
    df = load_run(run)
    assert wider.returncode == 0 and len(df) == n_first * 3 // 2  # only the new shape was measured
    assert list(df.point) == list(range(len(df)))
    forced = cli(*TWO_SHAPES, "force=true", env=env)
    assert forced.returncode == 0 and "resumed" not in forced.stderr
    assert len(load_run(run)) == n_first * 3 // 2 + n_first


@pytest.mark.subprocess
def test_sigterm_keeps_rows_and_marks_the_run_cut_short(tmp_path):
    exe = Path(sys.executable).with_name("hpcbench")
    proc = subprocess.Popen([str(exe), "gemm.shapes=smoke", "timing.cpu.min_reps=20", "timing.cpu.max_reps=20"],
                            cwd=tmp_path, env={**__import__("os").environ, "HPCBENCH_RUN_ID": "cut"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rows = tmp_path / "results" / "cut" / "rows.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not rows.is_file() or rows.read_text().count("\n") < 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "cut short" in err and "Traceback" not in err
    df = load_run(tmp_path / "results" / "cut")
    meta = json.loads((tmp_path / "results" / "cut" / "metadata.json").read_text())
    assert meta["status"] == "terminated" and meta["cut_short"] and len(df) >= 2
    assert meta["points"]["ok"] == len(df)


def test_a_run_is_written_by_one_process_at_a_time(tmp_path):
    from hpcbench.api.errors import UserError
    from hpcbench.core.resume import lock_run

    held = lock_run(tmp_path / "run")
    with pytest.raises(UserError, match="another hpcbench process is writing this run"):
        lock_run(tmp_path / "run")
    held.close()
    lock_run(tmp_path / "run").close()


@pytest.mark.subprocess
@pytest.mark.world
def test_a_resumed_collectives_run_fits_over_every_stored_point(cli, tmp_path):
    env = {"HPCBENCH_RUN_ID": "coll"}
    base = ["benchmark=collectives", "collectives.collectives=[all_reduce]", "collectives.iters=5",
            "collectives.warmup_iters=3", "collectives.step_factor=8", "collectives.min_bytes=256K"]
    first = cli(*base, "collectives.max_bytes=2M", env=env)
    assert first.returncode == 0, first.stderr
    again = cli(*base, "collectives.max_bytes=16M", env=env)  # one new size
    assert again.returncode == 0, again.stderr
    df = load_run(tmp_path / "results" / "coll")
    m = df[df.record == "measurement"]
    assert sorted(m.size_bytes) == [262144, 2097152, 16777216]  # each size measured once
    fits = df[df.record == "alpha_beta_fit"]
    assert len(fits) == 2  # one per attempt (the first, on two sizes, may find no bandwidth term)
    last = fits.iloc[-1]
    assert last.status == "ok" and int(last.fit_points) == 3  # the second covers the earlier sizes too
