import dataclasses

import pytest

from hpcbench.api import registry
from hpcbench.benchmarks import gemm
from hpcbench.core.config import compose, load_section
from hpcbench.core.plan import suite_of
from hpcbench.api.errors import UserError
from hpcbench.api.shapes import expand, load_preset, preset_names


def _compose(*overrides):
    return compose(list(overrides))


def test_default_config_composes_and_validates():
    cfg = _compose()
    assert list(cfg.suite) == ["gemm"] and cfg.device.type == "auto"
    gcfg = load_section("gemm", gemm.Config, cfg.gemm)
    assert isinstance(gcfg, gemm.Config) and gcfg.shapes == "auto"


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda"])
def test_device_group(device):
    assert _compose(f"device={device}").device.type == device


def test_every_family_has_a_yaml_that_fills_every_field_of_its_schema():
    for name, fam in registry.families().items():
        cfg = _compose(f"benchmark={name}")
        assert list(cfg.suite)[-1] == name  # a bundle (fingerprint) runs other families first
        section = set(cfg[name])
        assert section == {f.name for f in dataclasses.fields(fam.config)}, name  # defaults live in the YAML only
        suite_of(cfg)  # typed and checked


def test_schema_rejects_wrong_types_unknown_keys_and_values_outside_a_choice():
    defaults = dict(_compose().gemm)
    with pytest.raises(UserError, match="gemm.seed"):
        load_section("gemm", gemm.Config, {**defaults, "seed": "many"})
    with pytest.raises(UserError, match="nope"):
        load_section("gemm", gemm.Config, {**defaults, "nope": 1})
    with pytest.raises(UserError, match="custom"):
        load_section("gemm", gemm.Config, {**defaults, "custom": [[1.5, 2, 3]]})
    with pytest.raises(UserError, match=r"^gemm.dtypes\[1\]='fp4' \(available: bf16, fp8\)$"):
        load_section("gemm", gemm.Config, {**defaults, "dtypes": ["bf16", "fp4"]})
    with pytest.raises(UserError, match="gemm.seed: .*missing mandatory value: seed"):
        load_section("gemm", gemm.Config, {k: v for k, v in defaults.items() if k != "seed"})


def test_choices_read_and_serialise_as_their_plain_strings():
    import json

    cfg = suite_of(_compose("benchmark=overlap")).configs["overlap"]
    assert cfg.compute == "gemm" and f"{cfg.compute}" == "gemm" and str(cfg.compute) == "gemm"
    assert json.dumps({"c": cfg.compute}) == '{"c": "gemm"}' and {"gemm": 1}[cfg.compute] == 1


def test_shape_presets():
    assert set(preset_names("gemm")) >= {"smoke", "square", "k_sweep", "deepseek_v3", "llama3_70b"}
    square = load_preset("gemm", "square")
    assert [s[0] for s in square] == [1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384]
    assert all(m == n == k for m, n, k in square)
    ds = load_preset("gemm", "deepseek_v3")
    assert len(ds) == 28 and {m for m, _, _ in ds} == {1, 64, 128, 4096}
    assert (4096, 7168, 16384) in ds and (1, 576, 7168) in ds
    assert {(m, n) for m, n, _ in load_preset("gemm", "k_sweep")} == {(8192, 8192)}
    assert all(m == 16384 for m, _, _ in load_preset("gemm", "llama3_70b"))


@pytest.mark.parametrize("spec,match", [
    ({"mnk": [[0, 1, 1]]}, "positive"),
    ({"mnk": [[-4, 1, 1]]}, "positive"),
    ({"mnk": [[1.5, 1, 1]]}, "positive"),
    ({"mnk": [[1, 2]]}, "3 sizes"),
    ({"m": [1]}, "together"),
    ({"squares": [1]}, "unknown keys"),
    ({}, "no shapes"),
])
def test_bad_shapes(spec, match):
    with pytest.raises(UserError, match=match):
        expand(spec, where="test")


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(UserError, match="available: .*smoke"):
        load_preset("gemm", "nope")
