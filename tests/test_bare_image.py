"""The GPU acceptance call as a bare GPU image runs it: a venv holding torch and the image's
packages but no Hydra, OmegaConf, antlr or hpcbench; the wheel folder installed with
`pip install --no-index --no-deps --target`; the call started from outside the checkout.

CI prepares the wheel folder once (`scripts/prepare_gpu_wheels.sh`, the only step that reaches a
package index) and names it in HPCBENCH_GPU_WHEELS. The image's packages come from this
environment through a folder of links, so nothing is downloaded here."""

import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from hpcbench.acceptance import plan

WHEELS_ENV = "HPCBENCH_GPU_WHEELS"
# what a GPU host image carries (the device tool's page), and what it does not
IMAGE = ["torch", "triton", "numpy", "pandas", "pyarrow", "scipy", "rich", "matplotlib", "PyYAML", "pytest",
         "pytest-benchmark", "hypothesis", "nvidia-ml-py", "pip"]
ABSENT = {"hydra-core", "omegaconf", "antlr4-python3-runtime", "hpcbench-ml"}


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _closure(names: list[str]) -> dict[str, md.Distribution]:
    """The installed distributions of `names` and everything they require (markers evaluated)."""
    found, todo = {}, list(names)
    while todo:
        name = _norm(todo.pop())
        if name in found:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # not installed here (nvidia-ml-py on a CPU machine): the dry run does not need it
        found[name] = dist
        for req in dist.requires or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return found


def _image_site(view: Path) -> None:
    """A folder of links to the image's packages as this environment has them."""
    dists = _closure(IMAGE)
    assert not ABSENT & set(dists), "the image's packages must not pull in what the image lacks"
    view.mkdir()
    for dist in dists.values():
        root = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if not (view / top).exists() and (root / top).exists():
                (view / top).symlink_to(root / top)


def _bare_venv(tmp: Path) -> Path:
    venv = tmp / "image"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    view = tmp / "image-packages"
    _image_site(view)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "image.pth").write_text(str(view) + "\n")
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def wheels():
    folder = os.environ.get(WHEELS_ENV)
    if not folder:
        pytest.skip(f"{WHEELS_ENV} is not set (.ci/run makes the wheel folder with scripts/prepare_gpu_wheels.sh)")
    names = sorted(p.name for p in Path(folder).glob("*.whl"))
    assert any(n.startswith("hpcbench_ml-") for n in names) and any(n.startswith("hydra_core-") for n in names), names
    return Path(folder)


@pytest.fixture(scope="module")
def image(tmp_path_factory, wheels):
    tmp = tmp_path_factory.mktemp("bare")
    python = _bare_venv(tmp)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET", "VIRTUAL_ENV")}
    probe = subprocess.run([str(python), "-c", "import torch, pandas, rich, yaml\n"
                            "for m in ('hydra', 'omegaconf', 'antlr4', 'hpcbench'):\n"
                            "    try:\n        __import__(m)\n        print('present', m)\n"
                            "    except ImportError:\n        pass"],
                           capture_output=True, text=True, env=env, cwd=tmp, check=False)
    assert probe.returncode == 0 and "present" not in probe.stdout, probe.stdout + probe.stderr
    script = tmp / "gpu_acceptance.py"  # the call started from a copy: nothing of the checkout is near it
    from conftest import REPO

    shutil.copy(REPO / "scripts" / "gpu_acceptance.py", script)
    return tmp, python, script, env


@pytest.mark.subprocess
def test_the_dry_run_works_in_a_bare_image_from_its_wheel_folder(image, wheels):
    tmp, python, script, env = image
    out, site = tmp / "out", tmp / "site"
    r = subprocess.run([str(python), str(script), "--wheels", str(wheels), "--site", str(site), "--out", str(out),
                        "--dry-run"], capture_output=True, text=True, env=env, cwd=tmp, timeout=1200, check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] and summary["done"] and summary["dry_run"] and not summary["gpu"]
    assert summary["budget_s"] == pytest.approx(plan.budget_s("default")) and summary["budget_s"] <= 300
    steps = {s["name"]: s for s in summary["steps"]}
    assert list(steps) == [s.name for s in plan.steps("default")]  # every step, in plan order
    assert all(s["slot_s"] > 0 and "s start" in s["derivation"] for s in steps.values())
    assert steps["install"]["status"] == "ok" and "hpcbench" in steps["install"]["detail"]
    for name in ("kernels-gemm", "kernels-grouped", "multirank", "accumulation"):
        assert steps[name]["status"] == "ok", steps[name]
    for name in ("timing", "nccl", "p2p", "nvml"):  # no GPU here: n/a, never ok
        assert steps[name]["status"] == "n/a", steps[name]
    assert {t["verdict"] for t in summary["targets"]} == {"n/a"}
    files = sorted(p.name for p in out.iterdir())
    assert set(files) == {"summary.json", "summary.md", "log.txt", "runs.parquet"}
    assert all(p.is_file() for p in out.iterdir())
    # hpcbench came from the installed wheel, Hydra with it
    where = subprocess.run([str(python), "-c", "import hpcbench, hydra; print(hpcbench.__file__, hydra.__file__)"],
                           capture_output=True, text=True, env={**env, "PYTHONPATH": str(site)}, cwd=tmp, check=True)
    assert all(p.startswith(str(site)) for p in where.stdout.split())
    import pandas as pd

    runs = pd.read_parquet(out / "runs.parquet")
    assert {"kernels-gemm", "kernels-grouped", "multirank", "gemm-square", "passes", "mamf-bf16"} <= set(runs["run"])
    assert set(runs.loc[runs["run"] == "passes", "pass"]) == {"fprop", "dgrad", "wgrad"}


@pytest.mark.subprocess
def test_the_call_fails_in_a_bare_image_when_hpcbench_is_left_out_of_the_wheels(image, wheels):
    tmp, python, script, env = image
    partial = tmp / "partial-wheels"
    partial.mkdir(exist_ok=True)
    for w in wheels.glob("*.whl"):
        if not w.name.startswith("hpcbench_ml-"):
            shutil.copy(w, partial)
    r = subprocess.run([str(python), str(script), "--wheels", str(partial), "--site", str(tmp / "site-partial"),
                        "--out", str(tmp / "out-partial"), "--dry-run"], capture_output=True, text=True, env=env,
                       cwd=tmp, timeout=300, check=False)
    assert r.returncode != 0 and "hpcbench" in r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
    assert not (tmp / "out-partial" / "summary.json").exists()
