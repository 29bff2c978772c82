"""The plain progress lines (stderr not a terminal): each family counts its own points."""

from hpcbench.core.progress import ProgressReporter


def test_each_family_counts_its_points_from_one(capsys):
    progress = ProgressReporter(enabled=True)
    with progress:
        progress.start_family(2)
        progress.advance("gemm a: ok")
        progress.advance("gemm b: ok")
        progress.start_family(3)
        progress.advance("collectives a: ok")
    assert capsys.readouterr().err.splitlines() == ["[1/2] gemm a: ok", "[2/2] gemm b: ok", "[1/3] collectives a: ok"]


def test_off_rank_0_nothing_is_printed(capsys):
    progress = ProgressReporter(enabled=False)
    progress.start_family(1)
    progress.advance("gemm a: ok")
    assert capsys.readouterr().err == ""
