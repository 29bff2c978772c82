"""Autotune configs pruned by shared memory, and `hpcbench compile-kernels` (ahead-of-time compilation
for sm_90/sm_80 with the Triton wheel's own ptxas, no GPU)."""

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import triton

from hpcbench.kernelcheck import check as kernelcheck, cli as kernelcheck_cli
from hpcbench.kernels import tuning
from hpcbench.kernels.matmul import _matmul_kernel
from hpcbench.kernels.matmul_fp8_block import _matmul_fp8_block_kernel, _matmul_fp8_block_tma_kernel
from hpcbench.kernels.matmul_tma import _matmul_tma_kernel

H100 = (9, 0)
SM90_SMEM = 232448  # 227 KB per block, opt-in


def _tile(cfg):
    kw = cfg.kwargs
    return kw["BLOCK_M"], kw["BLOCK_N"], kw["BLOCK_K"], cfg.num_stages, cfg.num_warps


def test_arch_names_and_limits():
    assert tuning.parse_arch("sm_90") == tuning.parse_arch("sm_90a") == tuning.parse_arch("90") == H100
    assert tuning.parse_arch("sm_100") == (10, 0) and tuning.parse_arch("sm_89") == (8, 9)
    with pytest.raises(ValueError):
        tuning.parse_arch("hopper")
    assert tuning.smem_limit(H100) == SM90_SMEM
    assert tuning.smem_limit((8, 0)) == 166912 and tuning.smem_limit((8, 9)) == 101376
    assert tuning.smem_limit((9, 5)) == SM90_SMEM  # unknown minor: the major's smallest


def test_hopper_bf16_configs_that_cannot_fit_are_pruned():
    configs = tuning.matmul_configs(capability=H100)
    assert len(configs) == 12
    kept = tuning.prune_by_smem(configs, in_bytes=2, limit=SM90_SMEM)
    dropped = [c for c in configs if c not in kept]
    assert len(kept) == 7 and len(dropped) == 5
    # the five that need 240-288 KB: every BLOCK_K=128 tile but 64x128
    assert all(_tile(c)[2] == 128 for c in dropped)
    assert sorted(tuning.smem_estimate(c, 2) - tuning.SMEM_SLACK_BYTES for c in dropped) == [
        245760, 262144, 262144, 294912, 294912]
    assert all(tuning.smem_estimate(c, 2) <= SM90_SMEM for c in kept)
    # FP8 operands are half the bytes: all twelve fit
    assert tuning.prune_by_smem(configs, in_bytes=1, limit=SM90_SMEM) == configs
    # never empty: the smallest survives when nothing fits
    assert [_tile(c) for c in tuning.prune_by_smem(configs, 2, limit=1024)] == [(64, 128, 64, 4, 4)]


def test_autotuners_prune_by_the_launch_devices_shared_memory(monkeypatch):
    """The run-time hook: element sizes from the actual tensors, limit from their device."""
    configs = tuning.matmul_configs(capability=H100)
    prune = _matmul_kernel.early_config_prune
    assert prune is not None and _matmul_fp8_block_kernel.early_config_prune is not None
    bf16, fp8 = torch.empty(1, dtype=torch.bfloat16), torch.empty(1, dtype=torch.float8_e4m3fn)
    assert prune(configs, {"a_ptr": bf16, "c_ptr": bf16}) == configs  # CPU tensors: no device, no pruning
    monkeypatch.setattr(tuning, "_launch_smem_limit", lambda t: SM90_SMEM)
    assert len(prune(configs, {"a_ptr": bf16, "c_ptr": bf16})) == 7
    assert len(prune(configs, {"a_ptr": fp8, "c_ptr": bf16})) == 12


def test_tma_kernel_configs_follow_the_operand_dtype_and_fit(monkeypatch):
    """The persistent TMA kernel is decorated with the BF16 and FP8 lists together; at launch the
    pruner keeps the operand's own (BLOCK_K 64 for BF16, 128 for FP8), all of which fit on sm_90
    with the separate epilogue buffer counted."""
    union = tuning.tma_matmul_configs(H100)
    assert len(union) == 12 and {c.kwargs["BLOCK_K"] for c in union} == {64, 128}
    prune = _matmul_tma_kernel.early_config_prune
    bf16, fp8 = torch.empty(1, dtype=torch.bfloat16), torch.empty(1, dtype=torch.float8_e4m3fn)
    monkeypatch.setattr(tuning, "_launch_smem_limit", lambda t: SM90_SMEM)
    for operand, bk in ((bf16, 64), (fp8, 128)):
        kept = prune(union, {"a_ptr": operand, "c_ptr": bf16})
        assert len(kept) == 6 and {c.kwargs["BLOCK_K"] for c in kept} == {bk}
    assert all(tuning.smem_estimate(c, b) <= SM90_SMEM for b in (1, 2) for c in tuning.tma_matmul_configs(H100, b))
    assert all(tuning.smem_estimate(c, 1) <= SM90_SMEM for c in tuning.tma_block_configs(H100))
    # warp specialization takes num_warps as one consumer warpgroup and splits BLOCK_M between two
    for c in union + tuning.tma_block_configs(H100):
        if c.kwargs["WARP_SPECIALIZE"]:
            assert c.num_warps == 4 and c.kwargs["BLOCK_M"] == 128
    assert all(128 % c.kwargs["BLOCK_N"] == 0 for c in tuning.tma_block_configs(H100))
    assert _matmul_fp8_block_tma_kernel.early_config_prune is not None


def test_device_limit_asks_torch_then_the_table(monkeypatch):
    tuning.device_smem_limit.cache_clear()
    props = SimpleNamespace(major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    assert tuning.device_smem_limit(0) == SM90_SMEM  # torch without the attribute: table
    tuning.device_smem_limit.cache_clear()
    props.shared_memory_per_block_optin = 101376
    assert tuning.device_smem_limit(0) == 101376
    tuning.device_smem_limit.cache_clear()


def test_block_scaled_kernel_drops_tiles_that_spill():
    all_tiles = tuning.matmul_configs(block_k=128, fp8=True, capability=H100)
    kept = tuning.fp8_block_configs(H100)
    assert [_tile(c) for c in kept] == [(128, 128, 128, 4, 8), (64, 128, 128, 4, 4), (64, 256, 128, 3, 8)]
    assert sorted(_tile(c) for c in all_tiles if c not in kept) == [
        (128, 128, 128, 4, 4), (128, 256, 128, 3, 8), (256, 128, 128, 3, 8)]
    assert all(tuning.acc_regs_per_thread(c) <= 64 for c in kept)


def test_full_sm90_enumeration_fits_after_pruning():
    jobs = kernelcheck.jobs_for("sm_90")
    tried = [j for j in jobs if not j.skip]
    assert {j.kernel for j in tried} == {"_matmul_kernel", "_matmul_tma_kernel", "_matmul_fp8_block_kernel",
                                         "_matmul_fp8_block_tma_kernel", "_row_amax_kernel", "_amax_cast_kernel",
                                         "_group_quant_kernel", "_transpose_group_quant_kernel",
                                         "_matmul_fp8_1d1d_kernel", "_matmul_fp8_1d1d_tma_kernel",
                                         "_grouped_contiguous_kernel", "_grouped_masked_kernel", "_grouped_k_kernel"}
    for kernel in ("_matmul_kernel", "_matmul_tma_kernel"):
        assert {j.variant for j in tried if j.kernel == kernel} == {"bf16", "fp8 tensor", "fp8 row"}
    assert all(j.smem_estimate is None or j.smem_estimate <= SM90_SMEM for j in tried)
    pruned = [j for j in jobs if j.skip and j.skip.startswith("pruned")]
    assert len(pruned) == 5 + 16 and {j.variant for j in pruned} == {"bf16"}  # 16: grouped BF16 tiles
    # the Hopper-path kernels must show wgmma and TMA, and warp specialization where asked for
    hopper = [j for j in tried if j.kernel.endswith("tma_kernel")]
    assert len(hopper) == 18 + 5 + 4 and all(j.requires[:2] == ("wgmma", "tma") for j in hopper)
    assert {("ws" in j.requires) == bool(j.constexprs["WARP_SPECIALIZE"]) for j in hopper} == {True}
    assert not any(j.requires for j in tried if not j.kernel.endswith("tma_kernel"))
    # FP8 kernels are not offered below sm_89, nor the Hopper path off Hopper
    sm80 = kernelcheck.jobs_for("sm_80")
    assert {j.variant for j in sm80 if not j.skip} == {"bf16"}
    assert {j.skip for j in sm80 if j.kernel == "_matmul_tma_kernel"} == {
        f"Hopper path: the pointer kernel runs on sm_80 with triton {triton.__version__}"}


PTX_32 = """
    ld.param.b32 	%r55, [k_param_8];
    mov.b32 	%r60, %r55;
    mul.lo.s32 	%r97, %r84, %r60;
"""
PTX_64 = """
    ld.param.b32 	%r55, [k_param_8];
    mul.wide.s32 	%rd20, %r84, %r55;
    ld.param.s32 	%rd1, [k_param_9];
    mul.lo.s64 	%rd6, %rd1, %rd5;
"""


def test_stride_product_width_from_ptx():
    assert kernelcheck.stride_products(PTX_32, "k", 8) == "32"
    assert kernelcheck.stride_products(PTX_64, "k", 8) == "64"
    assert kernelcheck.stride_products(PTX_64, "k", 9) == "64"  # sign-extending load into %rd
    assert kernelcheck.stride_products(PTX_64, "k", 3) is None


@pytest.mark.compile
@pytest.mark.subprocess
def test_reruns_itself_without_the_interpreter(tmp_path):
    """Under TRITON_INTERPRET=1 (set by conftest) the kernels here are interpreted: the command
    must rerun in a clean process rather than fail or compile nothing."""
    out = tmp_path / "list.json"
    assert kernelcheck_cli.main(["--arch", "sm_90", "--list", "--kernel", "fp8 block", "--json", str(out)]) == 0
    entries = json.loads(out.read_text())["entries"]
    assert [e["status"] for e in entries] == ["listed"] * (3 + 5)  # pointer and TMA block-scaled kernels


def _assert_version_line(stdout: str, report: dict, site: str | None = None) -> None:
    """The command's first line names the Triton it compiled with and the folder of the ptxas and
    cuobjdump that Triton's wheel ships, and the JSON names the same version: this environment's
    Triton, or the one installed into the folder `site`."""
    if site is None:
        version, package = triton.__version__, Path(triton.__file__).parent
    else:
        (dist,) = [d for d in importlib.metadata.distributions(path=[site]) if d.metadata["Name"] == "triton"]
        version, package = dist.version, Path(site) / "triton"
    tools = package / "backends" / "nvidia" / "bin"
    assert (tools / "ptxas").is_file() and (tools / "cuobjdump").is_file(), f"{tools} holds no ptxas or cuobjdump"
    if site is None:  # the lookup the command uses finds the wheel's own tools
        assert kernelcheck.nvidia_tool("ptxas") == str(tools / "ptxas")
    assert version and report["triton"] == version
    want = f"triton {version} (ASTSource API: {report['astsource_api']}), ptxas and cuobjdump from {tools}"

    def squeeze(text: str) -> str:  # a narrow console may wrap the line
        return re.sub(r"\s+", "", text)

    # the whole line: the first architecture's table follows it
    assert squeeze(stdout).startswith(squeeze(want + "sm_90: Triton kernels compiled")), (want, stdout[:500])


@pytest.fixture(scope="module")
def sm90(tmp_path_factory):
    """The whole sm_90 check with this environment's Triton, compiled once into a Triton cache that
    the other compile tests of this module reuse (`cache`): the same kernel compiled for the same
    target is read back from Triton's on-disk cache, not compiled again."""
    where = tmp_path_factory.mktemp("sm90")
    cache, out = where / "triton-cache", where / "sm90.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"TRITON_CACHE_DIR": str(cache)}
    # --no-sass: the disassembly of the kernels that cannot spill is a third of the time; the MMA SASS
    # instruction is read by test_compile_kernels_for_sm90_and_sm80, spills stay exact
    r = subprocess.run([sys.executable, "-m", "hpcbench.kernelcheck.cli", "--arch", "sm_90", "-j", "2", "--no-sass",
                        "--json", str(out)], env=env, capture_output=True, text=True, timeout=900)
    return SimpleNamespace(result=r, json=out, cache=cache)


@pytest.mark.compile
@pytest.mark.subprocess
def test_compile_kernels_for_sm90_and_sm80(cli, tmp_path, sm90):
    out = tmp_path / "kernels.json"
    r = cli("compile-kernels", "--arch", "sm_90,sm_80", "--kernel", "_matmul_kernel bf16", "--kernel", "fp8 block",
            "--kernel", "_matmul_tma_kernel fp8 row", "--first", "2", "--json", str(out),
            env={"TRITON_CACHE_DIR": str(sm90.cache)})  # its sm_90 kernels: compiled by `sm90`
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wgmma" in r.stdout and "HGMMA" in r.stdout
    report = json.loads(out.read_text())
    _assert_version_line(r.stdout, report)
    assert report["astsource_api"] in ("constexprs", "constants")
    compiled = [e for e in report["entries"] if e["status"] == "ok"]
    by = {(e["arch"], e["kernel"], e["config"]): e for e in compiled}
    # sm_90: 2 bf16 + 2 block-scaled pointer + 2 block-scaled TMA + 2 TMA row-scaled; sm_80: 2 bf16
    assert len(compiled) == 10
    assert {e["mma"] for e in compiled if e["arch"] == "sm_90"} == {"wgmma"}
    assert by["sm_90", "_matmul_kernel", "128x256x64 g8"]["mma_sass"].startswith("HGMMA")
    assert by["sm_90", "_matmul_fp8_block_kernel", "128x128x128 g8"]["mma_sass"].startswith("QGMMA")  # FP8 wgmma
    assert by["sm_80", "_matmul_kernel", "128x128x64 g8"]["mma"] == "mma"
    assert {e["status"] for e in report["entries"] if e["arch"] == "sm_80" and "block" in e["kernel"]} == {"skipped"}
    # the Hopper path: TMA and wgmma on sm_90, and two consumer warpgroups behind a producer where asked
    hopper = [e for e in compiled if e["kernel"].endswith("tma_kernel")]
    assert {(e["kernel"], e["config"]) for e in hopper} == {
        ("_matmul_tma_kernel", "128x256x128 g8 ws"), ("_matmul_tma_kernel", "128x128x128 g8 ws"),
        ("_matmul_fp8_block_tma_kernel", "128x128x128 g8 ws")}
    assert all(e["tma"] and e["ws"] and e["warps_total"] == 12 and e["mma_sass"].startswith("QGMMA") for e in hopper)
    assert not any(e["tma"] or e["ws"] for e in compiled if not e["kernel"].endswith("tma_kernel"))
    assert "yes (12 warps)" in r.stdout
    for e in compiled:
        assert 0 < e["shared"] <= e["smem_limit"] and e["shared"] <= e["smem_estimate"]
        assert 0 < e["regs"] <= 255 and e["spill_stores"] == e["spill_loads"] == 0
        assert e["addr64"] is True and e["problems"] == []
    assert all(e["shared"] <= SM90_SMEM for e in compiled if e["arch"] == "sm_90")


_SPILLING = '''
import sys
from hpcbench.kernelcheck import check as kernelcheck, cli as kernelcheck_cli
from hpcbench.kernels import tuning

# put back the block-scaled 128x256 tile that fp8_block_configs drops: it spills on sm_90
tuning.fp8_block_configs = lambda capability=None: tuning.matmul_configs(128, True, capability)[:1]
args = ["--arch", "sm_90", "--kernel", "_matmul_fp8_block_kernel"]
# with and without disassembling every kernel: a spill is found either way (the second compile is
# read back from Triton's cache)
codes = [kernelcheck_cli.main([*args, "--json", sys.argv[1]]), kernelcheck_cli.main([*args, "--no-sass", "--json", sys.argv[2]])]
sys.exit(max(codes))
'''


@pytest.mark.compile
@pytest.mark.subprocess
def test_a_config_that_spills_fails_the_check(tmp_path):
    script, out, out_no_sass = tmp_path / "spilling.py", tmp_path / "spilling.json", tmp_path / "no-sass.json"
    script.write_text(_SPILLING)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"} | {"TRITON_CACHE_DIR": str(tmp_path / "c")}
    r = subprocess.run([sys.executable, str(script), str(out), str(out_no_sass)], env=env, capture_output=True,
                       text=True, timeout=300, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    [entry] = json.loads(out.read_text())["entries"]
    assert entry["config"] == "128x256x128 g8" and entry["status"] == "failed"
    assert entry["regs"] == 255 and entry["spill_stores"] > 0 and entry["problems"][0].startswith("spills")
    assert entry["mma_sass"].startswith("QGMMA")
    [same] = json.loads(out_no_sass.read_text())["entries"]
    assert {k: same[k] for k in ("status", "spill_stores", "spill_loads", "problems", "mma_sass")} == {
        k: entry[k] for k in ("status", "spill_stores", "spill_loads", "problems", "mma_sass")}
    assert r.stdout.count("spills") >= 2


_MISSING = '''
import json, sys
from hpcbench.kernelcheck import check as kernelcheck
from hpcbench.kernels import tuning

out = {}
# the pointer kernel held to the Hopper path's requirements: no TMA
pointer = [j for j in kernelcheck.jobs_for("sm_90") if j.kernel == "_matmul_kernel" and j.variant == "fp8 row"][0]
pointer.requires = ("wgmma", "tma")
# a warp-specialized config at num_warps=8: Triton's Hopper warp specialization quietly does nothing
ws8 = [j for j in kernelcheck.jobs_for("sm_90") if j.kernel == "_matmul_tma_kernel" and j.variant == "bf16"
       and j.constexprs["WARP_SPECIALIZE"]][0]
ws8.num_warps = 8
for name, job in (("pointer", pointer), ("ws8", ws8)):
    e = kernelcheck.compile_job(job)
    out[name] = {"status": e.status, "problems": e.problems, "tma": e.tma, "ws": e.ws}
print(json.dumps(out))
'''


@pytest.mark.compile
@pytest.mark.subprocess
def test_the_hopper_path_check_fails_without_tma_or_warp_specialization(tmp_path):
    """Negative controls: an entry held to the Hopper path's requirements fails when its kernel
    has no TMA, or when a warp-specialized config did not come out warp-specialized."""
    script = tmp_path / "missing.py"
    script.write_text(_MISSING)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["pointer"] == {"status": "failed", "problems": ["no TMA (cp.async.bulk.tensor)"], "tma": False,
                              "ws": False}
    assert out["ws8"] == {"status": "failed", "problems": ["not warp-specialized"], "tma": True, "ws": False}


def test_missing_facts_and_tma_detection():
    entry = kernelcheck.Entry("sm_90", "k", "v", "c", 4, 3, "ok", mma="mma", tma=False, ws=False)
    assert kernelcheck.missing_facts(entry, ("wgmma", "tma", "ws")) == [
        "no wgmma", "no TMA (cp.async.bulk.tensor)", "not warp-specialized"]
    assert kernelcheck.missing_facts(entry, ()) == []
    ptx = "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%r1], [%rd2, {%r3, %r4}], [%r5];"
    assert kernelcheck.uses_tma(ptx) and not kernelcheck.uses_tma("cp.async.cg.shared.global [%r1], [%rd2], 16;")


def _gpu_host_triton() -> str | None:
    """Triton 3.6 (what GPU host images carry with torch 2.11), installed by .ci/run into a folder."""
    path = os.environ.get("HPCBENCH_TRITON36")
    if path is None:
        return None
    assert (Path(path) / "triton").is_dir(), f"HPCBENCH_TRITON36={path} holds no triton package"
    return str(Path(path).resolve())


@pytest.mark.compile
@pytest.mark.subprocess
@pytest.mark.parametrize("which", ["this triton", "triton 3.6"])
def test_every_kernel_and_config_compiles_for_sm90(which, tmp_path, sm90):
    """The whole sm_90 check, as CI must pass it: every kernel x variant x config the autotuner would
    try compiles, fits, does not spill and computes 64-bit offsets, with this environment's Triton
    and with the Triton of a GPU host. (Both cases take `sm90`, so that they share its xdist group
    and the whole compile is made once.)"""
    path = None
    if which == "this triton":
        r, out = sm90.result, sm90.json
    else:
        path = _gpu_host_triton()
        if path is None:
            pytest.skip("set HPCBENCH_TRITON36 to a folder holding triton 3.6 (.ci/run does)")
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env["PYTHONPATH"] = os.pathsep.join([path, env.get("PYTHONPATH", "")])
        env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")  # not the cache of the other Triton
        out = tmp_path / "sm90.json"
        r = subprocess.run([sys.executable, "-m", "hpcbench.kernelcheck.cli", "--arch", "sm_90", "-j", "2", "--no-sass",
                            "--json", str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    report = json.loads(out.read_text())
    _assert_version_line(r.stdout, report, path)
    assert report["triton"].startswith("3.6") if which == "triton 3.6" else report["triton"] == triton.__version__
    compiled = [e for e in report["entries"] if e["status"] == "ok"]
    assert len(compiled) >= 60 and all(e["spill_stores"] == 0 and e["addr64"] for e in compiled)
    assert {e["mma"] for e in compiled if "matmul" in e["kernel"]} == {"wgmma"}
    hopper = [e for e in compiled if e["kernel"].endswith("tma_kernel")]
    assert len(hopper) == 27 and all(e["tma"] and e["shared"] <= e["smem_limit"] for e in hopper)
    # every FP8 kernel with scales (block, 1D1D, grouped): the next step's scales are loaded a step
    # ahead, carried into the next iteration; warp-specialized ones, which Triton cannot carry a
    # load in, and the 128x128 tile of the kernels with a column of B scales (it would spill under
    # triton 3.6), at the start of their step, before its wgmma
    scaled = [e for e in compiled if "block" in e["variant"] or "1d1d" in e["variant"]
              or (e["kernel"].startswith("_grouped") and e["variant"] == "fp8")]
    assert len(scaled) >= 20
    column_scales = ("_matmul_fp8_1d1d_kernel", "_grouped_k_kernel")
    for e in scaled:
        in_step = e["ws"] or (e["kernel"] in column_scales and e["config"].startswith("128x128x"))
        want = kernelcheck.BEFORE if in_step else kernelcheck.PREFETCHED
        assert e["scale_loads"] == want.format("wgmma"), (e["kernel"], e["config"], e["scale_loads"])
    assert all(e["scale_loads"] is None for e in compiled if e["variant"] in ("bf16", "bf16 none"))


_TTGIR_LOOP = """
    %r:3 = scf.for %k = %c0 to %n step %c1 iter_args(%acc = %z, %as = %as0, %bs = %bs0) -> (...) : i32 {{
      {before}
      %p = ttng.warp_group_dot %a, %b, %z {{inputPrecision = 0 : i32}} : !ttg.memdesc<128x128xf8E4M3FN> -> tensor<128x128xf32, #mma>
      %acc2 = arith.addf %acc, %p : tensor<128x128xf32, #mma>
      {after}
      scf.yield %acc2, {carried} : tensor<128x128xf32, #mma>, tensor<128xf32>, f32
    }}
"""
_LOAD = "%{name} = tt.load %ptr_{name}, %m : tensor<128x!tt.ptr<f32>, #ttg.slice<{{dim = 1, parent = #mma}}>>"


def test_scale_loads_are_placed_from_the_ttgir():
    place = kernelcheck.scale_load_placement
    ahead = _TTGIR_LOOP.format(before="", after=_LOAD.format(name="as1") + "\n" + _LOAD.format(name="bs1"),
                               carried="%as1, %bs1")
    assert place(ahead) == "prefetched a step ahead, before the wgmma"
    in_step = _TTGIR_LOOP.format(before=_LOAD.format(name="as1"), after="", carried="%as, %bs")
    assert place(in_step) == "in its step, before the wgmma"
    late = _TTGIR_LOOP.format(before="", after=_LOAD.format(name="as1"), carried="%as, %bs")
    assert place(late, "mma") == "in its step, after the mma"
    # a flattened persistent loop: the next tile's first scales come through an scf.if at the boundary
    via_if = _TTGIR_LOOP.format(before="", after="%t:2 = scf.if %edge -> (tensor<128xf32>, f32) {\n"
                                + _LOAD.format(name="as1") + "\nscf.yield %as1, %x : tensor<128xf32>, f32\n"
                                "} else {\nscf.yield %as, %y : tensor<128xf32>, f32\n}", carried="%t#0, %t#1")
    assert place(via_if) == "prefetched a step ahead, before the wgmma"
    mixed = ahead + in_step  # the worst loop decides (a warp-specialized kernel has one per partition)
    assert place(mixed) == "in its step, before the wgmma"
    assert place(_TTGIR_LOOP.format(before="", after="", carried="%as, %bs")) is None  # no f32 loads: BF16
