import os
import subprocess
import sys
from pathlib import Path

import pytest

# Tests run on the CPU: Triton kernels must be decorated in interpreter mode, so this is set
# before anything imports hpcbench.kernels.
os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the installed `hpcbench` console script (the way a user does) in `cwd`."""
    exe = Path(sys.executable).with_name("hpcbench")
    full_env = {**os.environ, **(env or {})}
    full_env.pop("TRITON_INTERPRET", None)  # the CLI must enable it by itself on CPU
    return subprocess.run([str(exe), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli(tmp_path):
    return lambda *args, **kw: run_cli(*args, cwd=tmp_path, **kw)


TINY = ["gemm.shapes=custom", "gemm.custom=[[48,40,160]]"]


def processes_of_run(run_id: str) -> list[int]:
    """Pids of the processes whose environment names this HPCBENCH_RUN_ID (a run's launcher and ranks)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if f"HPCBENCH_RUN_ID={run_id}".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found
