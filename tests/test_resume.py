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


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_refused_second_run_writes_nothing_into_the_running_run(tmp_path, monkeypatch, capsys):
    """A run refused because another process holds the run id's lock leaves every file of that run
    as it was, Hydra's job record (.hydra/) included."""
    from hpcbench.core.cli import main
    from hpcbench.core.resume import lock_run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPCBENCH_RUN_ID", "shared")
    assert main(["gemm.shapes=custom", "gemm.custom=[[16,16,128]]", "gemm.backends=[torch]"]) == 0
    run = tmp_path / "results" / "shared"
    overrides = (run / ".hydra" / "overrides.yaml").read_text()
    assert "gemm.custom=[[16,16,128]]" in overrides and "gemm.backends=[torch]" in overrides
    assert (run / ".hydra" / "config.yaml").is_file() and "hydra:" in (run / ".hydra" / "hydra.yaml").read_text()
    before = _snapshot(run)
    capsys.readouterr()
    held = lock_run(run)  # the first run, still writing
    try:
        with pytest.raises(SystemExit) as stop:  # refused inside the Hydra task: the exit status rises from it
            main(["gemm.shapes=custom", "gemm.custom=[[32,32,128]]", "gemm.dtypes=[bf16]"])
        assert stop.value.code == 2
    finally:
        held.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "another hpcbench process is writing this run" in lines[0], lines
    assert _snapshot(run) == before


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


def _first_gemm_attempt(tmp_path, monkeypatch, run_id: str, shapes: str) -> tuple[list[str], Path]:
    """A torch-only GEMM run of these shapes under this run id, run in-process to the end."""
    from hpcbench.core.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPCBENCH_RUN_ID", run_id)
    args = ["gemm.shapes=custom", f"gemm.custom={shapes}", "gemm.backends=[torch]"]
    assert main(args) == 0
    return args, tmp_path / "results" / run_id


def test_a_shape_cut_mid_way_measures_only_its_missing_kernels(tmp_path, monkeypatch, capsys):
    """GEMM resumes per kernel, not per shape: the kernels of a shape the first attempt stored are
    not measured again, no point is stored twice, and the metadata counts the distinct points."""
    from hpcbench.core.cli import main
    from hpcbench.core.resume import point_key
    from hpcbench.api import registry

    args, run = _first_gemm_attempt(tmp_path, monkeypatch, "cut-mid-shape", "[[16,16,128],[32,16,128]]")
    full = load_run(run)
    per_shape = len(full) // 2
    assert per_shape >= 3 and len(full) == 2 * per_shape
    lines = (run / "rows.jsonl").read_text().splitlines(keepends=True)
    keep = per_shape + 1  # the first shape and the first kernel of the second
    (run / "rows.jsonl").write_text("".join(lines[:keep]))
    (run / "rows.arrow").unlink(missing_ok=True)
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"resumed: {keep} point(s) already in this run were not measured again (force" in err, err
    df = load_run(run)
    params = registry.params_of("gemm")
    keys = [point_key("gemm", params, r) for r in df.to_dict("records")]
    assert len(keys) == len(set(keys)) == 2 * per_shape
    assert list(df["point"]) == list(range(2 * per_shape))
    counts = df.attrs["metadata"]["points"]
    assert sum(counts.values()) == 2 * per_shape and counts["ok"] == int((df["status"] == "ok").sum())
    # the FP8 rows measured now still compare with the BF16 row the first attempt stored
    second = df[(df["M"] == 32) & (df["status"] == "ok") & (df["dtype"] == "fp8")]
    assert len(second) and second["speedup_vs_bf16"].notna().all()


def test_points_measured_again_with_their_group_are_not_stored_twice(tmp_path, monkeypatch, capsys):
    """The runner's guard for families that measure a partly stored group whole (their rows are
    measured against one another): the stored rows stay, the new ones of stored points are dropped."""
    from hpcbench.core.cli import main
    from hpcbench.core.context import RunContext

    args, run = _first_gemm_attempt(tmp_path, monkeypatch, "group", "[[16,16,128]]")
    first = load_run(run)
    capsys.readouterr()
    monkeypatch.setattr(RunContext, "already_measured", lambda self, *points: False)  # a family that re-measures
    assert main(args) == 0
    err = capsys.readouterr().err
    assert (f"resumed: 0 point(s) already in this run were not measured again; {len(first)} measured again "
            "with the rest of their group were not stored again") in err, err
    again = load_run(run)
    assert len(again) == len(first) and list(again["median_s"].fillna(-1)) == list(first["median_s"].fillna(-1))
    assert sum(again.attrs["metadata"]["points"].values()) == len(first)


# the multi-rank case is the ten-moment stop test below (each of its SIGINT stops is checked the same way)
CTRL_C_RUNS = {
    "one rank": (["gemm.shapes=smoke", "gemm.backends=[torch]", "timing.cpu.min_reps=20", "timing.cpu.max_reps=20"], 2),
}


@pytest.mark.subprocess
@pytest.mark.parametrize("which", sorted(CTRL_C_RUNS))
def test_ctrl_c_prints_one_line_that_resumes_the_run_and_exits_130(which, tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) in a single-rank run:
    exit 130, no traceback, one line naming what was kept and the command that resumes it; that
    command then completes the run."""
    import os
    import shlex

    from conftest import processes_of_run

    args, rows_first = CTRL_C_RUNS[which]
    run_id = f"ctrl-c-{which.replace(' ', '-')}"
    exe = Path(sys.executable).with_name("hpcbench")
    env = {**os.environ, "HPCBENCH_RUN_ID": run_id}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.Popen([str(exe), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    rows = tmp_path / "results" / run_id / "rows.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not rows.is_file() or rows.read_text().count("\n") < rows_first):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Error executing job" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[")]  # but the progress lines
    assert len(lines) == 1 and lines[0].startswith("hpcbench: interrupted: "), err
    meta = json.loads((tmp_path / "results" / run_id / "metadata.json").read_text())
    kept = sum(meta["points"].values())
    assert meta["status"] == "interrupted" and kept == len(load_run(tmp_path / "results" / run_id)) >= rows_first
    assert f"{kept} row(s) kept in {tmp_path / 'results' / run_id};" in lines[0]
    time.sleep(1)
    assert processes_of_run(run_id) == []
    command = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert command[0] == f"HPCBENCH_RUN_ID={run_id}" and command[1] == "hpcbench" and command[2:] == args
    again = subprocess.run([str(exe), *command[2:]], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and f"resumed: " in again.stderr, again.stderr
    done = json.loads((tmp_path / "results" / run_id / "metadata.json").read_text())
    assert done["status"] == "complete" and sum(done["points"].values()) > kept


STOP_RUN = ["benchmark=collectives", "collectives.collectives=[all_reduce,broadcast,all_gather]", "collectives.iters=30",
            "collectives.warmup_iters=2", "collectives.min_bytes=1K", "collectives.max_bytes=1M",
            "collectives.step_factor=4", "collectives.fit_model=false"]
STOP_POINTS = 24  # 6 sizes x (all_reduce and broadcast in place, all_gather in and out of place)


def _stored(run: Path) -> tuple[list[dict], dict]:
    from hpcbench.results.reader import read_jsonl

    return read_jsonl(run / "rows.jsonl", []), json.loads((run / "metadata.json").read_text())


def _handles_sigterm(pid: int) -> bool:
    """Whether the process has installed a SIGTERM handler (the console script's first act:
    hpcbench.core.entry); before that, a stop ends it by the default action, unannounced."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def test_a_second_stop_does_not_cut_short_the_recording_of_the_first():
    """Ctrl-C reaches a rank twice (the terminal's, then the one torchrun's agent forwards), SIGTERM
    too (scancel, then the agent): the second of each is ignored, so the first one's recording
    of the run's end (runner._record_end) is not cut short."""
    from hpcbench.runtime.signals import Terminated, arm_stops

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        arm_stops()
        for sig, raised in ((signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)):
            with pytest.raises(raised):
                signal.raise_signal(sig)
            signal.raise_signal(sig)  # the forwarded copy, while the first is being recorded
            assert signal.getsignal(sig) == signal.SIG_IGN
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@pytest.mark.subprocess
@pytest.mark.world
def test_a_two_rank_run_stopped_at_ten_seeded_moments_resumes_to_every_point_once(tmp_path):
    """SIGINT and SIGTERM to the whole process group (a terminal's Ctrl-C, scancel) at ten seeded
    moments over a two-rank run's phases (starting, measuring, recording its end), each attempt
    resuming the last: every time one line, the stored rows equal the metadata's counts with no
    point twice, and no rank left running; the last attempt completes the run."""
    import os
    import random
    import shlex

    from conftest import processes_of_run
    from hpcbench.api import registry
    from hpcbench.core.resume import point_key

    rng = random.Random(20261207)
    run_id, exe = "stopped-often", Path(sys.executable).with_name("hpcbench")
    run = tmp_path / "results" / run_id
    env = {**os.environ, "HPCBENCH_RUN_ID": run_id}
    env.pop("TRITON_INTERPRET", None)
    params = registry.params_of("collectives")
    moments = [("start", "measuring", "recording")[i % 3] for i in range(10)]
    rng.shuffle(moments)
    outcomes = []
    for i, phase in enumerate(moments):
        sig = (signal.SIGINT, signal.SIGTERM)[i % 2]
        before = len(_stored(run)[0]) if (run / "metadata.json").is_file() else 0
        proc = subprocess.Popen([str(exe), *STOP_RUN], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.monotonic() + 120
        if phase == "start":  # from the moment the console script handles stops: a signal before
            # that ends the interpreter by the default action, before any code could say a word
            while not _handles_sigterm(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 2.0))
        else:  # the moment this attempt stores a row (recording), or a little later (measuring the next)
            rows = run / "rows.jsonl"
            while time.monotonic() < deadline and proc.poll() is None and (
                    not rows.is_file() or rows.read_text().count("\n") <= before):
                time.sleep(0.005)
            if phase == "measuring":
                time.sleep(rng.uniform(0.02, 0.3))
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=120)
        said = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[")]
        where = (i, phase, sig.name, proc.returncode, said)
        outcomes.append((phase, before, proc.returncode))
        assert proc.returncode in (0, 128 + sig), where
        if proc.returncode:
            assert len(said) == 1 and said[0].startswith("hpcbench: "), where
            assert "Traceback" not in err, where
        if proc.returncode and sig == signal.SIGINT and "resume with: " in said[0]:  # as a terminal user reads it
            command = shlex.split(said[0].split("resume with: ", 1)[1])
            assert command == [f"HPCBENCH_RUN_ID={run_id}", "hpcbench", *STOP_RUN], where
            if "row(s) kept" in said[0]:
                kept = sum(_stored(run)[1]["points"].values())
                assert said[0].startswith(f"hpcbench: interrupted: {kept} row(s) kept in {run};"), where
        deadline = time.monotonic() + 15
        while processes_of_run(run_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_of_run(run_id) == [], where
        if (run / "metadata.json").is_file():
            rows, meta = _stored(run)
            keys = [point_key("collectives", params, r) for r in rows]
            assert len(keys) == len(set(keys)), where  # no point stored twice
            ended = {k: meta.get(k) for k in ("status", "error", "points")}
            assert sum((meta.get("points") or {"none": -1}).values()) == len(rows), (where, ended)  # the stored rows
    last = subprocess.run([str(exe), *STOP_RUN], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert last.returncode == 0, last.stderr
    rows, meta = _stored(run)
    keys = {point_key("collectives", params, r) for r in rows}
    assert len(rows) == len(keys) == STOP_POINTS and meta["status"] == "complete"
    assert meta["points"] == {"ok": STOP_POINTS, "failed": 0, "skipped": 0}
    assert all(code != 0 for _, _, code in outcomes), outcomes  # every stop landed before its attempt ended
    assert {phase for phase, before, _ in outcomes if before > 0} == {"start", "measuring", "recording"}, outcomes


def test_a_stop_counts_as_after_the_end_only_for_a_run_this_attempt_completed(tmp_path):
    """A stop that lands once the run is recorded complete exits with the run's status; a run id
    used again (a re-run, a resubmitted job) still shows the earlier attempt's "complete" until
    this attempt opens the run: a stop then is a stop, not a success."""
    import datetime as dt

    from hpcbench.core.cli import _completed_status

    started = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone.utc)

    def status(**meta):
        (tmp_path / "metadata.json").write_text(json.dumps(meta))
        return _completed_status(tmp_path, started)

    after, before = (started + dt.timedelta(seconds=s) for s in (5, -5))
    assert status(status="complete", finished_at=after.isoformat(), points={"ok": 3, "failed": 0}) == 0
    assert status(status="complete", finished_at=after.isoformat(), points={"ok": 2, "failed": 1}) == 1
    assert status(status="complete", finished_at=before.isoformat(), points={"ok": 3, "failed": 0}) is None
    assert status(status="complete", finished_at=started.isoformat(), points={"ok": 3, "failed": 0}) == 0
    assert status(status="interrupted", finished_at=after.isoformat(), points={"ok": 1, "failed": 0}) is None
    assert status(status="running") is None
    (tmp_path / "metadata.json").unlink()
    assert _completed_status(tmp_path, started) is None
