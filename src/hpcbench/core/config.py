"""Parsing the composed Hydra config's sections into typed values: each family's section against
its schema (`Family.config`, values from its YAML), `dist:` and `timing:`; and composing the config
outside the CLI. Every failure is a UserError of one line. `hpcbench.core.plan` assembles the
parsed sections into the run's plan; nothing else reads the raw config."""

from __future__ import annotations

import dataclasses
import typing
import re
from dataclasses import dataclass

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpcbench.api import registry
from hpcbench.api.errors import UserError
from hpcbench.api.family import Choice, Family, choices

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
    max_ranks_per_core: int = MISSING
    rank_memory_mb: int = MISSING


def parse_dist(section) -> DistConfig:
    dc = load_section("dist", DistConfig, section)
    if dc.nproc != "auto" and (not str(dc.nproc).isdigit() or int(dc.nproc) < 1):
        raise UserError(f"dist.nproc={dc.nproc!r}: use auto or a positive integer")
    if not dc.timeout_s > 0:
        raise UserError(f"dist.timeout_s={dc.timeout_s!r}: use a positive number of seconds")
    for key in ("max_ranks_per_core", "rank_memory_mb"):
        if getattr(dc, key) < 1:
            raise UserError(f"dist.{key}={getattr(dc, key)!r}: use a positive integer")
    return dc


TIMING_SECTIONS = {"cuda": "gpu", "cpu": "cpu"}  # device kind -> its `timing:` section


# timing.<cpu|gpu>.<key>: (accepted, what the one line says is accepted); min_reps/max_reps against each other below
_TIMING_VALUES = {
    "warmup": (lambda v, t: _int(v) and v >= 0, "an integer >= 0"),
    "warmup_s": (lambda v, t: _real(v) and v >= 0, "a number of seconds >= 0"),
    "min_reps": (lambda v, t: _int(v) and v >= 1, "an integer >= 1"),
    "max_reps": (lambda v, t: _int(v) and v >= t.get("min_reps", 1), "an integer >= min_reps"),
    "budget_s": (lambda v, t: _real(v) and v > 0, "a number of seconds > 0"),
    "flush_l2": (lambda v, t: isinstance(v, bool), "true or false"),
    "cuda_graph": (lambda v, t: v in ("auto", True, False), "auto, true or false"),
    "graph_calls": (lambda v, t: _int(v) and v >= 1, "an integer >= 1"),
    "graph_below_us": (lambda v, t: _real(v) and v >= 0, "a number of microseconds >= 0"),
}


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_timing(section, name: str):
    """`timing.<name>` (gpu or cpu) as a TimingPolicy; a bad value is refused naming the key, the
    value and what is accepted."""
    from hpcbench.measure.timing import TimingPolicy

    values = OmegaConf.to_container(section)
    for key, value in values.items():
        if key not in _TIMING_VALUES:
            raise UserError(f"timing.{name}.{key}: no such key (known: {', '.join(_TIMING_VALUES)})")
        ok, accepted = _TIMING_VALUES[key]
        if not ok(value, values):
            shown = f"{value!r}" + (f" with min_reps={values.get('min_reps')}" if key == "max_reps" else "")
            raise UserError(f"timing.{name}.{key}={shown}: use {accepted}")
    try:
        return TimingPolicy(**values)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def family_config(fam: Family, cfg: DictConfig):
    """A family's validated config: typed by its schema, then its own value checks."""
    out = load_section(fam.name, fam.config, cfg.get(fam.name))
    if fam.validate is not None:
        fam.validate(out)
    return out


CONFIG_MODULE = "hpcbench.conf"


def compose(overrides=()) -> DictConfig:
    """The config the CLI composes for these overrides (plugin families' conf/ included)."""
    from hydra import compose as hydra_compose, initialize_config_module

    paths = registry.config_search_paths()
    extra = [f"hydra.searchpath=[{','.join(paths)}]"] if paths else []
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[*overrides, *extra])
