"""The run's config, validated before anything is created: each family's section against its typed
schema (`Family.config`, values from its YAML), the `dist:` and `timing:` sections, and the suite.
Every failure is a UserError of one line."""

from __future__ import annotations

import dataclasses
import typing
import re
from dataclasses import dataclass

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpcbench import registry
from hpcbench.errors import UserError
from hpcbench.family import Choice, Family, choices

Backend = choices("Backend", ("auto", "nccl", "gloo"))


_NOT_A_CHOICE = re.compile(r"Invalid value '(?P<value>.*)', expected one of \[(?P<choices>.*)\]")


def _one_line(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    msg = (getattr(exc, "msg", None) or str(exc)).splitlines()[0]
    choice = _NOT_A_CHOICE.match(msg)
    if key and choice:  # the wording hpcbench has always used for a value outside a choice
        return f"{key}={choice['value']!r} (available: {choice['choices']})"
    return f"{key}: {msg}" if key else msg


def _words_for_booleans(schema: type, section):
    """YAML and Hydra's command line read `true`/`false` as booleans, which OmegaConf refuses for
    an enumeration: a Choice field with members named "true"/"false" (e.g. auto | true | false)
    takes them as those words."""
    if not (dataclasses.is_dataclass(schema) and isinstance(section, dict)):
        return section
    hints = typing.get_type_hints(schema)
    out = dict(section)
    for key, value in section.items():
        hint = hints.get(key)
        word = str(value).lower()
        if isinstance(value, bool) and isinstance(hint, type) and issubclass(hint, Choice) and word in hint.__members__:
            out[key] = word
        elif dataclasses.is_dataclass(hint):
            out[key] = _words_for_booleans(hint, value)
    return out


def load_section(name: str, schema: type, section) -> object:
    """The `<name>:` section as an instance of the dataclass `schema`: unknown keys, wrong types,
    values outside an enumeration and missing values are one-line user errors."""
    try:
        if OmegaConf.is_config(section):
            section = OmegaConf.to_container(section)
        section = _words_for_booleans(schema, section)
        merged = OmegaConf.merge(OmegaConf.structured(schema), section or {})
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise UserError(f"{name}.{_one_line(exc)}") from None


@dataclass(frozen=True)
class DistConfig:
    """Types of the `dist:` section; defaults and their documentation: conf/config.yaml."""

    nproc: str = MISSING
    backend: Backend = MISSING
    timeout_s: float = MISSING
    env: dict = MISSING


def dist_config(cfg: DictConfig) -> DistConfig:
    dc = load_section("dist", DistConfig, cfg.get("dist"))
    if dc.nproc != "auto" and (not str(dc.nproc).isdigit() or int(dc.nproc) < 1):
        raise UserError(f"dist.nproc={dc.nproc!r}: use auto or a positive integer")
    if not dc.timeout_s > 0:
        raise UserError("dist.timeout_s must be positive")
    return dc


def timing_policy(cfg: DictConfig, kind: str):
    from hpcbench.timing import TimingPolicy

    name = "gpu" if kind == "cuda" else "cpu"
    try:
        return TimingPolicy(**OmegaConf.to_container(cfg.timing[name]))
    except TypeError as exc:  # an unknown key
        raise UserError(f"timing.{name}: {str(exc).split('() ', 1)[-1]}") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None


def family_config(fam: Family, cfg: DictConfig):
    """A family's validated config: typed by its schema, then its own value checks."""
    out = load_section(fam.name, fam.config, cfg.get(fam.name))
    if fam.validate is not None:
        fam.validate(out)
    return out


@dataclass(frozen=True)
class Suite:
    families: list[Family]
    configs: dict  # family name -> its validated config dataclass

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.families]

    @property
    def distributed(self) -> bool:
        return any(f.distributed for f in self.families)


def check_world(suite: Suite, cfg: DictConfig) -> None:
    """The families' checks that need the number of ranks, before any rank (or run directory) exists."""
    if not suite.distributed or not any(f.check_world for f in suite.families):
        return
    from hpcbench.runtime.device import device_kind
    from hpcbench.runtime.launch import local_nproc
    from hpcbench.runtime.ranks import launched_ranks, world_size

    kind = device_kind(cfg.device.type)
    world = world_size() if launched_ranks() else local_nproc(dist_config(cfg).nproc, kind)
    for fam in suite.families:
        if fam.check_world is not None:
            fam.check_world(suite.configs[fam.name], kind, world)


def check_run(cfg: DictConfig, local: bool = True) -> Suite:
    """Every check a run's config gets before anything is created (a run directory, a rank).
    `local=False` (a sweep job another launcher runs elsewhere): only what does not depend on
    this machine's devices."""
    suite = suite_of(cfg)
    for kind in ("cuda", "cpu"):
        timing_policy(cfg, kind)
    from hpcbench.rank_timing import check_fault_env

    check_fault_env()  # a malformed HPCBENCH_INJECT_FAULT is a mistake whatever the suite
    if local:
        from hpcbench.runtime.device import device_kind

        kind = device_kind(cfg.device.type)  # device=cuda without a GPU
        if suite.distributed and dist_config(cfg).backend == "nccl" and kind != "cuda":
            raise UserError("dist.backend=nccl needs a CUDA device")
        check_world(suite, cfg)
    return suite


def suite_of(cfg: DictConfig) -> Suite:
    """The families `cfg.suite` names, each with its validated config (a bad value is a UserError)."""
    fams = [registry.get(str(name)) for name in cfg.suite]
    suite = Suite(fams, {f.name: family_config(f, cfg) for f in fams})
    dist_config(cfg)  # a bad value is a mistake even where no family uses it
    return suite


CONFIG_MODULE = "hpcbench.conf"


def compose(overrides=()) -> DictConfig:
    """The config the CLI composes for these overrides (plugin families' conf/ included)."""
    from hydra import compose as hydra_compose, initialize_config_module

    paths = registry.config_search_paths()
    extra = [f"hydra.searchpath=[{','.join(paths)}]"] if paths else []
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[*overrides, *extra])
