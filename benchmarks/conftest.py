"""pytest-benchmark cases for every hpcbench family (see hpcbench.core.testing).

    pytest benchmarks/                                          smoke: each point checked once
    pytest benchmarks/ --benchmark-enable --benchmark-json out.json   each point's samples reported

The numbers in the JSON are hpcbench's own measurements (CUDA events on a GPU, the host clock on
the CPU fallback), one round per raw sample; machine_info["hpcbench"] is the environment the CLI
records with a run.
"""

import os

import pytest

from hpcbench.core import testing
from hpcbench.runtime.device import device_kind, enable_triton_interpreter

# On the CPU fallback Triton kernels run in the interpreter, which must be on before they are imported.
if device_kind("auto") == "cpu":
    enable_triton_interpreter()
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo's hostname lookup fails on some CI machines


@pytest.fixture(scope="session")
def smoke(request, tmp_path_factory):
    """Each family run once at smoke size; the multi-rank families this session selects run together."""

    def wanted() -> set[str]:
        return {getattr(item, "callspec", None) and item.callspec.params.get("family")
                for item in request.session.items} - {None}

    return testing.SmokeRuns(tmp_path_factory.mktemp("hpcbench-runs"), wanted)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["hpcbench"] = testing.machine_info()
