"""The composed config is parsed once, at the entry, into a RunPlan; the ranks get the plan."""

import ast
import dataclasses
import pickle
import subprocess
import sys

import pytest

from conftest import REPO
from hpcbench.api import registry
from hpcbench.api.errors import UserError
from hpcbench.core.config import compose
from hpcbench.core.plan import RunPlan, plan_run

_LOAD_IN_A_FRESH_PROCESS = """
import dataclasses, pickle, sys
plans = pickle.loads(sys.stdin.buffer.read())
print(repr([(p.suite.names, [dataclasses.asdict(p.suite.configs[n]) for n in p.suite.names],
             [type(v).__name__ for n in p.suite.names for v in dataclasses.asdict(p.suite.configs[n]).values()],
             p.dist, p.timing, p.kind, p.force) for p in plans]))
"""


def _summary(plans: list[RunPlan]) -> str:
    return repr([(p.suite.names, [dataclasses.asdict(p.suite.configs[n]) for n in p.suite.names],
                  [type(v).__name__ for n in p.suite.names for v in dataclasses.asdict(p.suite.configs[n]).values()],
                  p.dist, p.timing, p.kind, p.force) for p in plans])


@pytest.mark.subprocess
def test_every_familys_plan_reaches_a_fresh_process_unchanged():
    """A rank is a fresh interpreter that receives the plan pickled: every family's typed config,
    its Choice members included (some are not bound to their own name in their module), arrives
    equal and of the same types."""
    plans = [plan_run(compose([f"benchmark={name}"])) for name in registry.names()]
    r = subprocess.run([sys.executable, "-c", _LOAD_IN_A_FRESH_PROCESS], input=pickle.dumps(plans),
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    assert r.stdout.decode().strip() == _summary(plans)


def test_the_plan_holds_what_the_run_needs():
    plan = plan_run(compose(["benchmark=collectives", "dist.nproc=3", "dist.timeout_s=7", "force=true",
                             "timing.cpu.max_reps=4", "results_root=elsewhere", "device=cpu"]))
    assert plan.suite.names == ["collectives"] and plan.suite.distributed
    assert (plan.dist.nproc, plan.dist.timeout_s, plan.force, plan.kind) == ("3", 7.0, True, "cpu")
    assert plan.local_world() == 3 and plan.timing_for("cpu").max_reps == 4
    assert str(plan.results_root) == "elsewhere" and "max_reps: 4" in plan.config_yaml


def test_a_sweep_job_is_planned_without_this_machines_devices():
    """device=cuda on a machine without a GPU is refused for a local run, not for a sweep job
    that runs elsewhere (its job plans again where it runs)."""
    cfg = compose(["device=cuda"])
    assert plan_run(cfg, local=False).kind is None
    with pytest.raises(UserError, match="device=cuda"):
        plan_run(cfg)


@pytest.mark.parametrize("override, message", [
    ("dist.nproc=0", "dist.nproc='0': use auto or a positive integer"),
    ("dist.timeout_s=0", "dist.timeout_s=0.0: use a positive number of seconds"),
    ("timing.cpu.max_reps=0", "max_reps"),
])
def test_bad_sections_are_one_line_errors(override, message):
    with pytest.raises(UserError, match=message):
        plan_run(compose([override]), local=False)


def test_below_the_entry_nothing_reads_the_raw_config():
    """Only the entry (cli), the parser (config) and the plan touch OmegaConf's config objects;
    families import only MISSING, the marker of a schema field whose value comes from the YAML."""
    readers = set()
    for path in (REPO / "src" / "hpcbench").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("omegaconf", "hydra"):
                if {a.name for a in node.names} - {"MISSING"}:
                    readers.add(path.relative_to(REPO / "src").as_posix())
            elif isinstance(node, ast.Import) and any(a.name.split(".")[0] in ("omegaconf", "hydra") for a in node.names):
                readers.add(path.relative_to(REPO / "src").as_posix())
    assert readers == {"hpcbench/core/cli.py", "hpcbench/core/config.py", "hpcbench/core/plan.py"}
