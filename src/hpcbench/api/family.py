"""What a benchmark family declares about itself, once: the registry and every tool read this.

A family is one module (or package) under `hpcbench.benchmarks` holding `FAMILY = Family(...)`,
plus one YAML file `conf/benchmark/<name>.yaml` holding its defaults. The runner, the CLI's help,
`show`, `compare`, `report` and the pytest-benchmark cases iterate the registry
(`hpcbench.api.registry`); no other file names a family.
"""

from __future__ import annotations

import enum
import importlib
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


class Choice(str, enum.Enum):
    """A config value from a fixed set: OmegaConf rejects anything else when the config is merged
    ("section.key='x' (available: a, b)"). Members compare, hash, print and serialise as
    their plain string, so rows and tables never see the enum."""

    @staticmethod
    def _generate_next_value_(name, start, count, last_values):  # enum.auto() -> the member's name
        return name

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, spec: str) -> str:
        return str.__format__(str.__str__(self), spec)

    def __reduce_ex__(self, protocol):
        # A rank receives its run's plan pickled. An enum made by `choices` need not be bound to its
        # own name in its module (`ScheduleName = choices("Schedule", ...)`), so it is found again
        # through the module that made it, not by attribute lookup.
        key = (type(self).__module__, type(self).__name__)
        if _MADE.get(key) is type(self):
            return _member, (*key, self.value)
        return super().__reduce_ex__(protocol)


_MADE: dict[tuple[str, str], type[Choice]] = {}  # (module, name) -> the enum `choices` made there


def _member(module: str, name: str, value: str) -> Choice:
    importlib.import_module(module)  # makes the enum again, in a fresh process
    return _MADE[(module, name)](value)


def choices(name: str, values: Iterable[str]) -> type[Choice]:
    """A Choice enum whose members are `values` (which need not be identifiers, e.g. "1f1b")."""
    module = sys._getframe(1).f_globals.get("__name__", __name__)
    made = Choice(name, [(v, v) for v in values], module=module)
    _MADE[(module, name)] = made
    return made


@dataclass(frozen=True)
class ReportSpec:
    """A family's section of `hpcbench report`: data, not code paths in the report module."""

    title: str
    about: str  # what the plots show, one paragraph
    required: tuple[str, ...]  # columns without which nothing can be plotted
    plots: tuple[Callable, ...] = ()  # each (ok rows: DataFrame, out_dir) -> analysis.plotting.Plot | None
    tables: Callable | None = None  # (one run's ok rows: DataFrame) -> list[analysis.blocks.Table]
    plot_files: tuple[str, ...] = ()  # every PNG its plots may write (a stale one is removed)
    first: bool = False  # a summary of the other families (the fingerprint): its section comes before theirs


@dataclass(frozen=True)
class Family:
    """One benchmark family. Only `name`, `summary`, `config`, `run` and `params` are required."""

    name: str  # the `benchmark` column, the YAML file's name, the config section
    summary: str  # one line for `hpcbench --help`
    config: type  # a dataclass: the types of the `<name>:` section; its values come from the YAML
    run: Callable[[Any, Any], Iterator[dict]]  # (config, RunContext) -> one row per measured point
    params: tuple[str, ...]  # the row columns that identify a point (compare joins on them)
    distributed: bool = False  # runs on several ranks (launched or started locally)
    validate: Callable[[Any], None] | None = None  # value checks the types cannot express (UserError)
    # value checks that need the number of ranks: (config, device kind, world size); run before any
    # rank starts, with the world the launcher gave or the local ranks hpcbench will start
    check_world: Callable[[Any, str, int], None] | None = None
    table: Callable[[list[dict], bool], Any] | None = None  # (rows, fallback) -> a rich renderable
    report: ReportSpec | None = None
    smoke: tuple[str, ...] = ()  # config overrides that make it small enough for a 2-core CI machine
    planned: Callable[[Any, str], list[dict]] | None = None  # (config, device kind) -> its points' params
    case_id: Callable[[dict], str] | None = None  # a point's pytest id; default: its params joined
    # (column, value): rows with that column set to another value are derived records (fits,
    # projections), not points; they are not planned cases, compared or plotted
    points_are: tuple[str, str] | None = None
    commands: dict = field(default_factory=dict)  # `hpcbench <word> ...` subcommands: word -> main(argv) -> status
    # the value a param had before the family recorded it (gemm's `pass`: fprop), so that runs
    # made before the param existed still join the new ones in `compare`
    param_defaults: dict = field(default_factory=dict)

    def is_point(self, row: dict) -> bool:
        if self.points_are is None:
            return True
        column, value = self.points_are
        return row.get(column) in (None, value)

    def point_mask(self, df):
        """`is_point` over a DataFrame's rows, vectorised."""
        import pandas as pd

        if self.points_are is None or self.points_are[0] not in df.columns:
            return pd.Series(True, index=df.index)
        column, value = self.points_are
        return df[column].isna() | (df[column] == value)

    def point_id(self, row: dict) -> str:
        if self.case_id is not None:
            return self.case_id(row)
        return point_label(row, self.params, sep="-")


def point_label(row: dict, params: Iterable[str], sep: str = " ") -> str:
    """A point's identity as text: its parameters' values, in order, those it lacks left out."""
    from hpcbench.api.tables import fmt

    return sep.join(text for text in (fmt(row.get(k)) for k in params) if text)
