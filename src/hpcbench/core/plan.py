"""The plan of one run: the composed Hydra config parsed once, at the entry, into typed values.

`plan_run(cfg)` is the only reader of the raw config on the way to a run: it checks everything a
run's config gets before anything is created (a run directory, a rank) and returns a `RunPlan`
(suite, device, world, timing policy, results place). The runner, the ranks it starts and
`hpcbench.testing` take the plan; a rank receives it pickled, its families looked up again by name.
Every failure is a UserError of one line.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hpcbench.api import registry
from hpcbench.api.errors import UserError
from hpcbench.api.family import Family
from hpcbench.core.config import TIMING_SECTIONS, DistConfig, family_config, parse_dist, parse_timing


@dataclass(frozen=True)
class Suite:
    """The families a run measures, in order, each with its validated config."""

    families: tuple[Family, ...]
    configs: dict  # family name -> its validated config dataclass

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.families]

    @property
    def distributed(self) -> bool:
        return any(f.distributed for f in self.families)

    def __reduce__(self):  # a rank gets the names and configs; its families come from its own registry
        return _suite_of_names, (tuple(self.names), self.configs)


def _suite_of_names(names: tuple[str, ...], configs: dict) -> Suite:
    return Suite(tuple(registry.get(n) for n in names), configs)


@dataclass(frozen=True)
class RunPlan:
    suite: Suite
    device: str  # as asked: auto | cpu | cuda (conf/device/)
    kind: str | None  # cuda | cpu on this machine; None when planned for a sweep job that runs elsewhere
    dist: DistConfig
    timing: dict  # device kind -> TimingPolicy
    results_root: Path
    force: bool  # measure the points an earlier attempt of this run stored again
    config_yaml: str  # the composed config, resolved: the run's config.yaml
    single_run: bool = False  # started alone by the command line (RunContext.single_run)
    # (file name, text) of Hydra's job record, written into the run's .hydra/ once the run is locked
    hydra_record: tuple = ()

    def timing_for(self, kind: str):
        return self.timing[kind]

    def local_world(self) -> int:
        """The ranks hpcbench starts itself when no launcher started them (dist.nproc)."""
        from hpcbench.runtime.launch import local_nproc

        return local_nproc(self.dist.nproc, self.kind)


def suite_of(cfg: DictConfig) -> Suite:
    """The families `cfg.suite` names, each with its validated config (a bad value is a UserError)."""
    fams = tuple(registry.get(str(name)) for name in cfg.suite)
    return Suite(fams, {f.name: family_config(f, cfg) for f in fams})


def plan_run(cfg: DictConfig, local: bool = True) -> RunPlan:
    """The run's plan, every check made. `local=False` (a sweep job another launcher runs
    elsewhere): only what does not depend on this machine's devices; the job plans again where it
    runs."""
    from hpcbench.measure.rank_timing import check_fault_env

    suite = suite_of(cfg)
    dist = parse_dist(cfg.get("dist"))  # a bad value is a mistake even where no family uses it
    timing = {kind: parse_timing(cfg.timing[name], name) for kind, name in TIMING_SECTIONS.items()}
    check_fault_env()  # a malformed HPCBENCH_INJECT_FAULT is a mistake whatever the suite
    force = cfg.get("force", False)
    if not isinstance(force, bool):
        raise UserError(f"force={force!r}: use true or false")
    plan = RunPlan(suite=suite, device=str(cfg.device.type), kind=None, dist=dist, timing=timing,
                   results_root=Path(str(cfg.results_root)), force=force,
                   config_yaml=OmegaConf.to_yaml(cfg, resolve=True))
    if not local:
        return plan
    from hpcbench.runtime.device import device_kind

    plan = replace(plan, kind=device_kind(plan.device))  # device=cuda without a GPU is refused here
    if suite.distributed and dist.backend == "nccl" and plan.kind != "cuda":
        raise UserError("dist.backend=nccl needs a CUDA device")
    check_local_world(plan)
    check_world(plan)
    return plan


def check_local_world(plan: RunPlan) -> None:
    """A world hpcbench would start itself must fit this machine (a launcher's ranks are its own)."""
    from hpcbench.runtime.launch import check_fits
    from hpcbench.runtime.ranks import launched_ranks

    if plan.suite.distributed and not launched_ranks():
        check_fits(plan.local_world(), plan.kind, plan.dist.max_ranks_per_core, plan.dist.rank_memory_mb)


def check_world(plan: RunPlan) -> None:
    """The families' checks that need the number of ranks, before any rank (or run directory) exists."""
    suite = plan.suite
    if not suite.distributed:
        return
    from hpcbench.measure.rank_timing import check_fault_env
    from hpcbench.runtime.ranks import launched_ranks, world_size

    world = world_size() if launched_ranks() else plan.local_world()
    check_fault_env(world)  # an injected fault on a rank the world does not have would go unseen
    for fam in suite.families:
        if fam.check_world is not None:
            fam.check_world(suite.configs[fam.name], plan.kind, world)
