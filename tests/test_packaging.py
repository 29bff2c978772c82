"""conf/ and kernels/ ship inside the wheel: a wheel installed into a fresh venv runs anywhere."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, TINY


@pytest.mark.subprocess
def test_wheel_in_a_fresh_venv_runs_from_an_unrelated_directory(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist), str(REPO)], check=True, timeout=300)
    (wheel,) = dist.glob("hpcbench_ml-*.whl")
    shipped = {Path(n).parent.as_posix() for n in zipfile.ZipFile(wheel).namelist() if n.endswith("/__init__.py")}
    packages = {p.parent.relative_to(REPO / "src").as_posix() for p in (REPO / "src").rglob("__init__.py")}
    assert packages <= shipped, f"packages missing from pyproject's list: {sorted(packages - shipped)}"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # dependencies come from the test environment (no network, no multi-GB torch download)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTHONPATH")}
    out = subprocess.run([str(venv / "bin" / "hpcbench"), *TINY, "gemm.dtypes=[bf16]"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "triton_bf16" in out.stdout
    where = subprocess.run([str(py), "-c", "import hpcbench.kernels.matmul as m, hpcbench.conf as c; "
                            "print(m.__file__); print(c.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert str(REPO) not in where and str(venv) in where  # really the installed copy
    assert list((elsewhere / "results").iterdir())
