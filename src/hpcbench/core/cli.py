"""`hpcbench` entry point.

  hpcbench [OVERRIDE ...]          run the configured suite (a Hydra app: -m, --cfg, --help, ...)
  hpcbench show RUN [--benchmark B]  print a stored run's environment and tables
  hpcbench compare RUN_A RUN_B     point-by-point comparison with statistics (--fail-on-regression PCT)
  hpcbench report RUN [RUN ...]    a Markdown/HTML report with plots
  hpcbench export RUN OUT.parquet  one file holding a whole run
  hpcbench compile-kernels --arch sm_90   compile every Triton kernel and config ahead of time
  hpcbench WORD ...                a family's own subcommand (`Family.commands`: project, simulate)

Subcommands are plain argparse programs dispatched on the first word; everything else goes to
Hydra. Errors a user can cause print one line and exit with status 2.
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from hpcbench.core import read_commands
from hpcbench.core.config import CONFIG_MODULE
from hpcbench.runtime.signals import Terminated, arm_stops, stops_deferred
from hpcbench.core.plan import plan_run
from hpcbench.api.errors import CommandParser, ReportedUserError, RunFailed, UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, as a shell reports a command Ctrl-C stopped

# plans: the precheck's plans by composed config, so that the task parses its config no second time
_state = {"task_started": False, "status": 0, "run_id": None, "plans": {}, "argv": [], "console": False}


def run_id() -> str:
    """One id per invocation, shared by every rank and array task of a job so they never race:
    HPCBENCH_RUN_ID if set, else the SLURM job (and array task), else a timestamp."""
    if _state["run_id"] is None:
        if os.environ.get("HPCBENCH_RUN_ID"):
            rid = os.environ["HPCBENCH_RUN_ID"]
        elif os.environ.get("SLURM_JOB_ID"):
            job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ["SLURM_JOB_ID"]
            task = os.environ.get("SLURM_ARRAY_TASK_ID")
            rid = f"slurm-{job}" + (f"_{task}" if task else "")
        else:
            rid = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        _state["run_id"] = rid
    return _state["run_id"]


def _gpus_per_node() -> int | None:
    gpus = int(os.environ.get("GPUS_PER_NODE") or 0)
    return gpus or None


def _ranks_per_node() -> int:
    return _gpus_per_node() or int(os.environ.get("TASKS_PER_NODE") or 1)


def _site(name: str) -> str | None:
    return os.environ.get(name) or None


def _time_min() -> int:
    """HPCBENCH_TIME, in sbatch's formats (minutes, H:MM:SS, D-HH:MM:SS), as whole minutes."""
    text = os.environ.get("HPCBENCH_TIME") or "60"
    days, _, clock = text.rpartition("-")
    parts = [int(x) for x in clock.split(":")]
    if len(parts) == 1:
        minutes = parts[0] if not days else parts[0] * 60  # "D-HH" is days and hours
    else:
        hours, mins, secs = ([0] * (3 - len(parts)) + parts) if len(parts) < 3 else parts
        minutes = hours * 60 + mins + (secs > 0)
    return int(days or 0) * 1440 + minutes


def _families_help() -> str:
    """One line per registered family, for `hpcbench --help`."""
    from hpcbench.api import registry

    fams = registry.families().values()
    width = max((len(f.name) for f in fams), default=0)
    return "\n".join(f"  benchmark={f.name:<{width}}  {f.summary}" for f in fams)


def _commands_help() -> str:
    """One line per subcommand, built-in and declared by a family, for `hpcbench --help`."""
    from hpcbench.api import registry

    lines = [(f"{word} {args}", summary) for word, (args, summary) in SUBCOMMAND_HELP.items()]
    for fam in registry.families().values():
        for word, command in fam.commands.items():
            args, _, summary = (command.__doc__ or "").strip().splitlines()[0].partition(": ")
            lines.append((f"{word} {args}".strip(), summary or f"a command of benchmark={fam.name}"))
    width = max(len(usage) for usage, _ in lines)
    return "\n".join(f"  hpcbench {usage:<{width}}  {summary}" for usage, summary in lines)


# resolvers the config uses: the run id, the families and subcommands for --help, conf/hydra/launcher/slurm.yaml's site values
for _name, _fn in (("hpcbench_run_id", run_id), ("hpcbench_families_help", _families_help),
                   ("hpcbench_commands_help", _commands_help), ("hpcbench_gpus_per_node", _gpus_per_node),
                   ("hpcbench_ranks_per_node", _ranks_per_node), ("hpcbench_site", _site),
                   ("hpcbench_time_min", _time_min)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def _error(message: str) -> None:
    print(f"hpcbench: error: {message}", file=sys.stderr)


@hydra.main(config_path="pkg://" + CONFIG_MODULE, config_name="config", version_base="1.3")
def _hydra_app(cfg: DictConfig) -> None:
    with stops_deferred():  # a stop lands after the import, not inside it (runtime.signals)
        from hpcbench.core import runner  # imports torch: keep `--help` and config errors fast
        from hpcbench.runtime.ranks import is_rank0

    _state["task_started"] = True
    started = _dt.datetime.now(_dt.timezone.utc)
    hc = HydraConfig.get()
    run_dir, sweep = Path(hc.runtime.output_dir), hc.mode == RunMode.MULTIRUN
    _arm_stops()  # a sweep's next job: stops count again
    try:
        plan = _state["plans"].get(OmegaConf.to_yaml(cfg)) or plan_run(cfg)  # a sweep's job plans here
        plan = replace(plan, single_run=not sweep, hydra_record=_hydra_record(cfg, hc))
        status = runner.run(plan, run_dir)
    except UserError as exc:
        if not isinstance(exc, ReportedUserError):
            _error(str(exc))
        if not sweep:
            raise SystemExit(EXIT_USER_ERROR)
        status = EXIT_USER_ERROR  # a bad point of a sweep must not cancel the other jobs
    except RunFailed as exc:  # a rank died or hung: completed rows are kept, the run is marked
        _error(str(exc))
        status = 1
    except (Terminated, KeyboardInterrupt) as exc:  # the runner recorded the run as cut short
        status = _completed_status(run_dir, started)
        if status is None or sweep:
            code = EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else 128 + signal.SIGTERM
            if is_rank0():  # srun starts this command on every rank: one line for all
                what = ("interrupted" if isinstance(exc, KeyboardInterrupt)
                        else f"stopped ({exc}): the run is marked cut short")
                print(_stopped_line(what, run_dir, sweep), file=sys.stderr)
            # a sweep must not go on to its next job: the stop was for the whole process
            raise SystemExit(code) from None
        # else the stop came once this attempt had stored every point and recorded the run complete
    if not sweep:  # the run is recorded: a stop from here on changes nothing (a sweep's next job
        _ignore_stops()  # starts under the same handlers: a stop between jobs ends the sweep)
    _state["status"] = max(_state["status"], status)


def _arm_stops() -> None:
    """The console script's process (not a Python caller's): Ctrl-C and SIGTERM stop the run."""
    if _state["console"]:
        arm_stops()


def _ignore_stops() -> None:
    if _state["console"]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def _completed_status(run_dir: Path, started: _dt.datetime) -> int | None:
    """The exit status of a run this attempt recorded complete (1 if a point failed), or None: not
    complete, or complete from an earlier attempt under the same run id (re-run, resubmitted)."""
    import json

    from hpcbench.results.schema import METADATA_FILE

    try:
        meta = json.loads((run_dir / METADATA_FILE).read_text())
        if meta.get("status") != "complete" or _dt.datetime.fromisoformat(meta["finished_at"]) < started:
            return None
        return 1 if (meta.get("points") or {}).get("failed") else 0
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None


def _stopped_line(what: str, run_dir: Path, sweep: bool) -> str:
    """One line for a run a stop ended (Ctrl-C, SIGTERM): the rows it kept and the command that
    resumes it (the same command under the same run id measures only what the run lacks)."""
    import json
    import shlex

    from hpcbench.results.schema import METADATA_FILE

    run_id = run_dir.parent.name if sweep else run_dir.name
    try:
        points = json.loads((run_dir / METADATA_FILE).read_text()).get("points") or {}
        kept = f"{sum(points.values())} row(s) kept in {run_dir}"
    except (OSError, ValueError, AttributeError, TypeError):
        kept = "nothing stored yet"
    return (f"hpcbench: {what}: {kept}; resume with: HPCBENCH_RUN_ID={shlex.quote(run_id)} "
            + shlex.join(["hpcbench", *_state["argv"]]))


def _hydra_record(cfg: DictConfig, hc) -> tuple:
    """What Hydra writes into a job's `.hydra/` (conf/config.yaml sets `hydra.output_subdir: null`):
    the runner writes it once it holds the run's lock, so that a run refused because another
    process is writing the same run id changes nothing of that run."""
    hydra_node = OmegaConf.create({"hydra": OmegaConf.to_container(hc, resolve=False)})
    return (("config.yaml", OmegaConf.to_yaml(cfg)), ("hydra.yaml", OmegaConf.to_yaml(hydra_node)),
            ("overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(hc.overrides.task)))))


def _precheck(overrides: list[str]) -> None:
    """Compose and check the config up front, so that a bad override is a one-line error that
    leaves nothing behind (Hydra creates the run directory before the task starts). A sweep
    (-m) has each of its jobs checked, except what depends on this machine's devices: its jobs
    may run elsewhere (SLURM)."""
    if "hydra/launcher=slurm" in overrides:
        import importlib.util

        if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
            raise UserError("hydra/launcher=slurm needs the submitit launcher: pip install 'hpcbench-ml[slurm]'")
    flags = [a for a in overrides if a.startswith("-")]
    sweep = bool(flags) and set(flags) <= {"-m", "--multirun"}
    if flags and not sweep:  # other Hydra flags (--help, --cfg, ...) run nothing
        return
    from hpcbench.core.config import compose

    user = [o for o in overrides if not o.startswith("-") and not o.lstrip("+~").startswith("hydra")]
    try:
        jobs = _sweep_jobs(user) if sweep else [user]
        configs = [compose(job) for job in jobs]
    except HydraException as exc:
        raise UserError(_hydra_error_line(exc)) from None
    plans = [plan_run(cfg, local=not sweep) for cfg in configs]  # every check a run's config gets
    if not sweep:
        _state["plans"] = {OmegaConf.to_yaml(configs[0]): plans[0]}
    _check_results_root(plans[0].results_root)


def _sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The override lists of a sweep's jobs, as Hydra's basic sweeper expands them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, max_batch_size=None) for job in batch]


def _check_results_root(root: str) -> None:
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        probe = Path(root) / f".hpcbench-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise UserError(f"results_root={root}: cannot write there ({exc.strerror or exc}); use a folder this user "
                        "can create or write") from None


def _search_path_overrides() -> list[str]:
    """Plugin families that ship their own conf/ (hpcbench.api.registry)."""
    from hpcbench.api import registry

    paths = registry.config_search_paths()
    return [f"hydra.searchpath=[{','.join(paths)}]"] if paths else []


def _hydra_error_line(exc: BaseException) -> str:
    """Hydra's multi-line composition errors, folded into one line."""
    text = str(exc) + ("\n" + str(exc.__cause__) if exc.__cause__ else "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if any(ln.startswith("Available options") for ln in lines):
        start = next(i for i, ln in enumerate(lines) if ln.startswith("Available options")) + 1
        end = next((i for i, ln in enumerate(lines) if ln.startswith("Config search path")), len(lines))
        return f"{lines[0]} (available: {', '.join(lines[start:end])})"
    detail = next((ln for ln in lines[1:] if ln.startswith(("Key ", "Value ", "Could not", "mismatched"))), "")
    return " ".join(filter(None, [lines[0], detail]))


def _rank_overrides() -> list[str]:
    """Ranks other than 0 of a launched job write nothing: no Hydra output directory or log of their own."""
    from hpcbench.runtime.ranks import is_rank0, launched_ranks

    if not launched_ranks() or is_rank0():
        return []
    return ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra.sweep.dir=.", "hydra.sweep.subdir=.",
            "hydra/job_logging=none", "hydra/hydra_logging=none"]


def compile_kernels_main(argv: list[str]) -> int:
    from hpcbench.kernelcheck import cli as kernelcheck_cli

    return kernelcheck_cli.main(argv)


def compare_main(argv: list[str]) -> int:
    from hpcbench.analysis import compare_cli

    return compare_cli.main(argv)


def report_main(argv: list[str]) -> int:
    from hpcbench.analysis import report

    return report.main(argv)


SUBCOMMANDS = {"show": read_commands.show_main, "compare": compare_main, "report": report_main,
               "export": read_commands.export_main,
               "compile-kernels": compile_kernels_main}
# `hpcbench --help`: what each built-in subcommand takes and does (a family's commands say it in
# their docstring's first line)
SUBCOMMAND_HELP = {
    "show": ("RUN", "print a stored run's environment and tables"),
    "compare": ("RUN_A RUN_B", "point-by-point statistics; --fail-on-regression PCT gates CI"),
    "report": ("RUN [RUN ...]", "a Markdown/HTML report with plots; several runs are overlaid"),
    "export": ("RUN OUT.parquet", "one file holding a whole run, read by show, compare and report"),
    "compile-kernels": ("--arch sm_90", "compile every Triton kernel and config without a GPU; "
                                        "shared memory, registers, spills"),
}


def _subcommand(word: str):
    """A built-in subcommand, or one a family declares (e.g. `project`)."""
    if word in SUBCOMMANDS:
        return SUBCOMMANDS[word]
    if word.startswith("-") or "=" in word:
        return None
    from hpcbench.api import registry

    for fam in registry.families().values():
        if word in fam.commands:
            return fam.commands[word]
    return None


def main(argv: list[str] | None = None, *, console: bool = False) -> int:
    """The command line; `console`: this process is the `hpcbench` command (hpcbench.core.entry),
    whose signal handling it may own."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _state.update(task_started=False, status=0, run_id=None, plans={}, argv=list(argv), console=console)
    try:
        with stops_deferred():  # both may import the families, torch with them (runtime.signals)
            command = _subcommand(argv[0]) if argv else None
            if command is None:
                _precheck(argv)
        if command is not None:
            return command(argv[1:])
        sys.argv = [sys.argv[0], *argv, *_search_path_overrides(), *_rank_overrides()]
        _hydra_app()
    except UserError as exc:
        _error(str(exc))
        return EXIT_USER_ERROR
    except (KeyboardInterrupt, Terminated) as exc:  # before a run started, in a subcommand, or
        # between the jobs of a sweep (each job's run is whole: written complete, or not begun)
        kept = ("between the jobs of a sweep: the runs written so far are complete" if _state["task_started"]
                else "no run was started, nothing was written")
        if isinstance(exc, KeyboardInterrupt):
            print(f"hpcbench: interrupted: {kept}", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"hpcbench: stopped ({exc}): {kept}", file=sys.stderr)  # SIGTERM, armed by hpcbench.core.entry
        return 128 + signal.SIGTERM
    except BrokenPipeError:  # `hpcbench compare ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except SystemExit as exc:
        # Hydra exits with 1 on configuration errors it finds before the task starts: user errors
        if exc.code == 1 and not _state["task_started"]:
            return EXIT_USER_ERROR
        raise
    return _state["status"]


if __name__ == "__main__":
    sys.exit(main())
