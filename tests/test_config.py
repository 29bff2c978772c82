import pytest
from hydra import compose, initialize_config_module

from hpcbench import benchmarks
from hpcbench.benchmarks import gemm
from hpcbench.errors import UserError
from hpcbench.runner import benchmark_config
from hpcbench.shapes import expand, load_preset, preset_names


def _compose(*overrides):
    with initialize_config_module(config_module="hpcbench.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_default_config_composes_and_validates():
    cfg = _compose()
    assert list(cfg.suite) == ["gemm"] and cfg.device.type == "auto"
    gcfg = benchmark_config("gemm", gemm.Config, cfg.gemm)
    assert isinstance(gcfg, gemm.Config) and gcfg.shapes == "auto"


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda"])
def test_device_group(device):
    assert _compose(f"device={device}").device.type == device


def test_every_benchmark_has_a_yaml_and_a_valid_section():
    for name in benchmarks.available():
        cfg = _compose(f"benchmark={name}")
        benchmark_config(name, benchmarks.load(name).Config, cfg[name])


def test_schema_rejects_wrong_types_and_unknown_keys():
    with pytest.raises(UserError, match="gemm.seed"):
        benchmark_config("gemm", gemm.Config, {"seed": "many"})
    with pytest.raises(UserError, match="nope"):
        benchmark_config("gemm", gemm.Config, {"nope": 1})
    with pytest.raises(UserError, match="custom"):
        benchmark_config("gemm", gemm.Config, {"custom": [[1.5, 2, 3]]})


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
