"""The sweep files shipped for slurm/sweep_array.sbatch are valid: each line plans as a run (the
same checks a run gets before anything starts), and the sweep commands of README and the docs
name one of them."""

import shlex
from pathlib import Path

import pytest

from hpcbench.core.config import compose
from hpcbench.core.plan import plan_run

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "slurm" / "sweeps").glob("*.txt"))


def _lines(path: Path) -> list[str]:
    """As the template reads them: blank lines and comments (whole-line or after ' #') dropped."""
    lines = [ln.split(" #")[0].strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_every_line_of_a_shipped_sweep_plans_as_a_run(path):
    lines = _lines(path)
    assert lines
    for line in lines:
        plan = plan_run(compose(shlex.split(line)), local=False)  # a sweep's jobs run elsewhere
        assert plan.suite.names, line


def test_the_sweep_files_readme_and_the_docs_name_are_shipped():
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    named = {word.split("=", 1)[1] for page in pages for line in page.read_text().splitlines()
             for word in line.split() if word.startswith("HPCBENCH_SWEEP=")}
    assert named and all((REPO / name).is_file() for name in named), named
