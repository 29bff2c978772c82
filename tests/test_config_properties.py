"""Property-based: a wrong value of any key of any family's config (wrong type, out of range,
unknown choice, an empty list where one is needed) is one line naming the key, exit 2, and
nothing in results/. Keys are found from the families' typed configs, so a key added later is
covered without a change here; the values are drawn by hypothesis. In-process through the CLI's
main function, with the runner replaced by one that fails the test: an accepted value never
starts a run."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import io
import os
import tempfile
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hpcbench.api import registry
from hpcbench.core import cli

# lists whose emptiness means something (auto, none, the preset's values), with what it means
EMPTY_MEANS = {
    "collectives.project_world_sizes": "no projection",
    "gemm.custom": "read only with shapes=custom, which refuses it empty",
    "gemm.fp8_scalings": "BF16 kernels only",
    "grouped_gemm.imbalance": "read only with routing=skewed, which refuses it empty",
    "moe_alltoall.imbalance": "read only with routing=skewed, which refuses it empty",
    "overlap.gemm_mnk": "the device's default GEMM",
    "overlap.comm_sizes": "the device's default sizes",
    "whatif.costs_from": "published figures only",
    **{f"mamf.{d}{r}": "the preset's values" for d in "mnk" for r in ("", "_range")},
    **{f"moe_alltoall.{k}": "the preset's values" for k in ("tokens_per_rank", "hidden", "num_experts", "top_k",
                                                            "dispatch_dtypes", "layouts")},
}
# words the config's parser reads as something other than an unknown word
RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "none", "nan", "inf", "auto", "y", "n"}


@dataclasses.dataclass(frozen=True)
class Key:
    family: str
    name: str
    kind: str  # int | float | bool | enum | list
    item: str | None = None  # the kind of a list's entries: int | float | enum
    choices: tuple[str, ...] = ()

    @property
    def dotted(self) -> str:
        return f"{self.family}.{self.name}"


def _kind(t) -> tuple[str, tuple[str, ...]] | None:
    if t is bool:
        return "bool", ()
    if t in (int, float):
        return t.__name__, ()
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return "enum", tuple(m.name for m in t)
    return None


def typed_keys() -> list[Key]:
    """Every scalar, enum and list key of every registered family (free text, maps and nested
    sections are left out: no value of them is wrong by its type alone)."""
    keys = []
    for fam in registry.families().values():
        if fam.config is None:
            continue
        hints = typing.get_type_hints(fam.config)
        for f in dataclasses.fields(fam.config):
            t = hints[f.name]
            if typing.get_origin(t) is list:
                item = _kind(typing.get_args(t)[0])
                if item is not None and item[0] != "bool":
                    keys.append(Key(fam.name, f.name, "list", item[0], item[1]))
            elif (kind := _kind(t)) is not None:
                keys.append(Key(fam.name, f.name, kind[0], choices=kind[1]))
    return keys


KEYS = typed_keys()
WORDS = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)


def wrong_kinds(key: Key) -> list[str]:
    """The kinds of wrong value each key is tried with."""
    if key.kind == "list":
        kinds = ["unknown choice" if key.item == "enum" else "wrong type", "not a list"]
        kinds += ["out of range"] if key.item in ("int", "float") else []
        return kinds + ([] if key.dotted in EMPTY_MEANS else ["empty list"])
    if key.kind == "enum":
        return ["unknown choice", "wrong type"]
    if key.kind == "bool":
        return ["wrong type"]
    return ["wrong type", "out of range"]  # every numeric key counts something, or is a tolerance, rate or seed


CASES = [(key, kind) for key in KEYS for kind in wrong_kinds(key)]


def values(key: Key, kind: str):
    """A strategy for the override's value of this kind of mistake."""
    word = WORDS.filter(lambda w: w not in RESERVED and w not in key.choices)
    negative = st.integers(max_value=-1)
    listed = key.kind == "list" and kind != "not a list"
    if kind == "empty list":
        return st.just("[]")
    if kind == "out of range":
        return negative.map(lambda n: f"[{n}]" if listed else str(n))
    if kind == "wrong type" and key.kind in ("enum", "bool"):
        return st.sampled_from(["[1,2]", "[yes]"]) if key.kind == "enum" else word
    return word.map(lambda w: f"[{w}]" if listed else w)


class Accepted(BaseException):
    """Raised where the run would start (a BaseException: Hydra's error handling lets it through)."""


def _refuse_to_run(*args, **kwargs):
    raise Accepted


def test_the_keys_cover_every_family():
    assert {k.family for k in KEYS} == set(registry.families())
    assert {k.kind for k in KEYS} == {"int", "float", "bool", "enum", "list"}
    assert len(KEYS) >= 80


@pytest.mark.parametrize("key,kind", CASES, ids=[f"{k.dotted}-{kind.replace(' ', '_')}" for k, kind in CASES])
@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_wrong_value_of_any_key_is_one_line_naming_it(key, kind, data, monkeypatch):
    value, why = data.draw(values(key, kind), label="value"), kind
    import hpcbench.core.runner as runner

    monkeypatch.setattr(runner, "run", _refuse_to_run)
    args = [f"benchmark={key.family}", f"{key.dotted}={value}"]
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        err = io.StringIO()
        os.chdir(tmp)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = cli.main(args)
        except Accepted:
            code = "accepted: a run would have started"
        finally:
            os.chdir(cwd)
        lines = err.getvalue().strip().splitlines()
        assert code == 2, (args, why, lines)
        assert len(lines) == 1 and lines[0].startswith("hpcbench: error: "), (args, why, lines)
        assert key.name in lines[0], (args, why, lines)  # the line names the key it refused
        assert not any(Path(tmp, "results").glob("*")), (args, why)
