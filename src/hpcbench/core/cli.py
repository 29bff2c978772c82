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

import argparse
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

from hpcbench.core.config import CONFIG_MODULE
from hpcbench.core.plan import plan_run
from hpcbench.api.errors import ReportedUserError, RunFailed, UserError

EXIT_USER_ERROR = 2

# plans: the precheck's plans by composed config, so that the task parses its config no second time
_state = {"task_started": False, "status": 0, "run_id": None, "plans": {}}


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


# resolvers the config uses: the run id, the families for --help, conf/hydra/launcher/slurm.yaml's site values
for _name, _fn in (("hpcbench_run_id", run_id), ("hpcbench_families_help", _families_help), ("hpcbench_gpus_per_node", _gpus_per_node),
                   ("hpcbench_ranks_per_node", _ranks_per_node), ("hpcbench_site", _site),
                   ("hpcbench_time_min", _time_min)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def _error(message: str) -> None:
    print(f"hpcbench: error: {message}", file=sys.stderr)


@hydra.main(config_path="pkg://" + CONFIG_MODULE, config_name="config", version_base="1.3")
def _hydra_app(cfg: DictConfig) -> None:
    from hpcbench.core import runner  # imports torch: keep `--help` and config errors fast
    from hpcbench.runtime.signals import Terminated

    _state["task_started"] = True
    hc = HydraConfig.get()
    try:
        plan = _state["plans"].get(OmegaConf.to_yaml(cfg)) or plan_run(cfg)  # a sweep's job plans here
        plan = replace(plan, single_run=hc.mode != RunMode.MULTIRUN)
        status = runner.run(plan, Path(hc.runtime.output_dir))
    except UserError as exc:
        if not isinstance(exc, ReportedUserError):
            _error(str(exc))
        if hc.mode != RunMode.MULTIRUN:
            raise SystemExit(EXIT_USER_ERROR)
        status = EXIT_USER_ERROR  # a bad point of a sweep must not cancel the other jobs
    except RunFailed as exc:  # a rank died or hung: completed rows are kept, the run is marked
        _error(str(exc))
        status = 1
    except Terminated:  # scancel / time limit: the runner kept the rows so far and said so
        # a sweep must not go on to its next job: the stop was for the whole process
        raise SystemExit(128 + signal.SIGTERM) from None
    _state["status"] = max(_state["status"], status)


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
        raise UserError(f"results_root={root}: cannot write there ({exc.strerror or exc})") from None


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


def show_main(argv: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from hpcbench.results import load_run
    from hpcbench.results.reader import quietly
    from hpcbench.core.runner import print_tables

    parser = argparse.ArgumentParser(prog="hpcbench show", description="Print a stored run's environment and tables.")
    parser.add_argument("run", type=Path, help="a results directory, its rows.jsonl, or an exported .parquet")
    parser.add_argument("--benchmark", action="append", help="only this family (repeatable)")
    args = parser.parse_args(argv)
    df = quietly(load_run, args.run)
    meta = df.attrs["metadata"]
    suite = [n for n in meta.get("suite") or sorted(set(df.get("benchmark", [])))]
    if args.benchmark:
        unknown = sorted(set(args.benchmark) - set(suite))
        if unknown:
            raise UserError(f"{args.run}: no {', '.join(unknown)} in this run (it has: {', '.join(suite)})")
        suite = [n for n in suite if n in args.benchmark]
    env = Table(title=f"run {meta.get('run_id')}", title_justify="left", show_header=False)
    for key in ("status", "error", "started_at", "finished_at", "device_name", "gpu_name", "gpu_count", "driver_version",
                "cuda_runtime", "nccl_version", "torch_version", "triton_version", "world_size", "hostname",
                "slurm_job_id", "git_sha", "points"):
        if meta.get(key) not in (None, ""):
            env.add_row(key, str(meta[key]))
    Console(width=200).print(env)
    records = df.astype(object).where(df.notna(), None).to_dict("records") if len(df) else []
    rows = {name: [r for r in records if r.get("benchmark") == name] for name in suite}
    print_tables(rows, bool(meta.get("fallback")))
    _print_anchors(df[df["benchmark"].isin(suite)] if "benchmark" in df.columns else df, meta)
    return 0


def _print_anchors(df, meta: dict) -> None:
    """After the family tables: the points that match a published anchor (device and configuration),
    with the figure, its source and the point's % of it. Nothing when no point matches."""
    from rich.console import Console
    from rich.table import Table

    from hpcbench.models import anchors

    from hpcbench.api import registry
    from hpcbench.api.tables import fmt

    # a family whose rows carry their own anchor columns (the fingerprint) showed them in its table
    own = [c for c in ("anchor_config", "pct_of_anchor") if c in df.columns]
    if own and "benchmark" in df.columns:
        judged = df.loc[df[own].notna().any(axis=1), "benchmark"].unique()
        df = df[~df["benchmark"].isin(judged)]
    params = {name: tuple(meta.get("params", {}).get(name) or registry.params_of(name) or ())
              for name in (df["benchmark"].dropna().unique() if "benchmark" in df.columns else ())}
    hits = anchors.listing(df, meta.get("gpu_name") or meta.get("device_name"), params)
    if not hits:
        return
    t = Table(title="published anchors (matched by device and configuration)", title_justify="left")
    for col in ("benchmark", "point", "metric", "measured", "anchor", "unit", "% of anchor", "source"):
        t.add_column(col, justify="right" if col in ("measured", "anchor", "% of anchor") else "left")
    for h in hits:
        t.add_row(h["benchmark"], h["point"], h["metric"], fmt(h["measured"], ".4g"), fmt(h["anchor"], ".4g"), h["unit"],
                  fmt(h["pct"], ".1f"), h["source"] + (f" ({h['note']})" if h["note"] else ""))
    Console(width=200).print(t)


def export_main(argv: list[str]) -> int:
    from hpcbench.results import columnar, load_run
    from hpcbench.results.reader import quietly
    from hpcbench.results.schema import SCHEMA_VERSION

    parser = argparse.ArgumentParser(prog="hpcbench export",
                                     description="Write a run (rows and metadata) as one .parquet file that "
                                                 "compare, report and show read like the run itself.")
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path, help="the file to write (.parquet)")
    args = parser.parse_args(argv)
    if args.out.suffix != ".parquet" or args.out.is_dir():
        raise UserError(f"{args.out}: name a .parquet file to write (exports are single .parquet files)")
    if not args.out.parent.is_dir():
        raise UserError(f"{args.out}: its folder {args.out.parent} does not exist (create it, or name a file in "
                        "an existing folder)")
    df = quietly(load_run, args.run)
    rows = df.astype(object).where(df.notna(), None).to_dict("records")
    # the rows were upgraded on load: the file holds the current schema
    metadata = {**df.attrs["metadata"], "schema_version": SCHEMA_VERSION}
    columnar.write_table(columnar.rows_table(rows, metadata=metadata), args.out)
    print(f"{args.out}: {len(rows)} rows of run {df.attrs['metadata'].get('run_id')}")
    return 0


def compile_kernels_main(argv: list[str]) -> int:
    from hpcbench.kernelcheck import cli as kernelcheck_cli

    return kernelcheck_cli.main(argv)


def compare_main(argv: list[str]) -> int:
    from hpcbench.analysis import compare_cli

    return compare_cli.main(argv)


def report_main(argv: list[str]) -> int:
    from hpcbench.analysis import report

    return report.main(argv)


SUBCOMMANDS = {"show": show_main, "compare": compare_main, "report": report_main, "export": export_main,
               "compile-kernels": compile_kernels_main}


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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _state.update(task_started=False, status=0, run_id=None, plans={})
    try:
        command = _subcommand(argv[0]) if argv else None
        if command is not None:
            return command(argv[1:])
        _precheck(argv)
        sys.argv = [sys.argv[0], *argv, *_search_path_overrides(), *_rank_overrides()]
        _hydra_app()
    except UserError as exc:
        _error(str(exc))
        return EXIT_USER_ERROR
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
