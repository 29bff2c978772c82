"""The statistics of matched points, vectorised over points: the ratio of medians with its
Bonett-Price confidence interval, and the two-sided Mann-Whitney U p-value.

Points are grouped by their sample counts and taken a block at a time; one integer sort of each
point's merged samples serves the U statistic and both medians (`_SortedBlock`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import special

from hpcbench.results.reader import Samples


def _log_median_var(low: np.ndarray, high: np.ndarray, n: int) -> np.ndarray:
    """Bonett-Price variance of the log sample median, per row of n sorted samples, from its order
    statistics x_(c) (`low`) and x_(n-c+1) (`high`); `_order_pair(n)` says which."""
    c = _order_pair(n)[0] + 1
    tail = special.bdtr(c - 1, n, 0.5)  # P(the median lies outside [x_(c), x_(n-c+1)]) / 2
    z = special.ndtri(1 - tail) if tail > 0 else np.inf
    if not z > 0:
        return np.full(len(low), np.nan)
    spread = np.log(high) - np.log(low)
    return (spread / (2 * z)) ** 2


def _order_pair(n: int) -> tuple[int, int]:
    """0-based positions of the order statistics around the median that Bonett-Price use."""
    c = max(1, round(n / 2 - math.sqrt(n)))  # as in Bonett & Price's own implementation
    return c - 1, n - c


def _min_p(n_a: int, n_b: int, exact: bool) -> float:
    """The smallest two-sided Mann-Whitney p, reached when A and B are completely separated."""
    if exact:
        return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))
    n = n_a + n_b
    sigma = math.sqrt(n_a * n_b * (n + 1) / 12)
    return float(min(1.0, 2 * special.ndtr(-(n_a * n_b / 2 - 0.5) / sigma)))


STAT_BLOCK = 1 << 14  # points per block in point_statistics: a block's 20 + 20 samples stay in cache


def _all_positive(samples: Samples) -> bool:
    """Whether every sample of the run is a positive time (NaN fails too): then no point is damaged."""
    return bool(len(samples.values) == 0 or samples.values.min() > 0)


def point_statistics(rows_a: np.ndarray, rows_b: np.ndarray, samples_a: Samples, samples_b: Samples,
                     confidence: float) -> dict[str, np.ndarray]:
    """Per matched point: sample counts, the CI of the ratio of medians, the Mann-Whitney p.
    A point whose samples hold a zero, negative or missing time is flagged `damaged`, not tested."""
    n = len(rows_a)
    out = {k: np.full(n, np.nan) for k in ("ci_low", "ci_high", "p_value", "min_p")}
    damaged = np.zeros(n, dtype=bool)
    len_a, len_b = samples_a.lengths[rows_a].copy(), samples_b.lengths[rows_b].copy()
    z = special.ndtri(1 - (1 - confidence) / 2)
    positive = _all_positive(samples_a) and _all_positive(samples_b)
    if n and len_a.min() == len_a.max() and len_b.min() == len_b.max():
        groups = {(len_a[0], len_b[0]): np.arange(n)}  # every point has the same counts: one group
    else:
        groups = pd.DataFrame({"na": len_a, "nb": len_b}).groupby(["na", "nb"]).indices
    # a block of points at a time: its samples and their sort stay small and in cache, where a
    # million points' would be hundreds of MB of fresh memory to fault in (slower than the statistics)
    blocks = ((na, nb, idx[lo:lo + STAT_BLOCK]) for (na, nb), idx in groups.items() for lo in range(0, len(idx), STAT_BLOCK))
    for na, nb, idx in blocks:
        na, nb = int(na), int(nb)
        if na == 0 or nb == 0:
            continue
        xa, xb = samples_a.matrix(rows_a[idx], na, copy=False), samples_b.matrix(rows_b[idx], nb, copy=False)
        if not positive:
            bad = ~((xa > 0).all(axis=1) & (xb > 0).all(axis=1))  # NaN fails the comparison too
            if bad.any():
                damaged[idx[bad]] = True
                idx, xa, xb = idx[~bad], xa[~bad], xb[~bad]
        block = _SortedBlock(xa, xb)
        # each side's two middle samples and the pair around them that bounds the median's CI
        a = block.order_statistics("a", [(na - 1) // 2, na // 2, *_order_pair(na)])
        b = block.order_statistics("b", [(nb - 1) // 2, nb // 2, *_order_pair(nb)])
        log_ratio = np.log(_median(b[:, 0], b[:, 1])) - np.log(_median(a[:, 0], a[:, 1]))
        half = z * np.sqrt(_log_median_var(a[:, 2], a[:, 3], na) + _log_median_var(b[:, 2], b[:, 3], nb))
        out["ci_low"][idx] = np.exp(log_ratio - half)
        out["ci_high"][idx] = np.exp(log_ratio + half)
        p, exact = block.mann_whitney_p()
        out["p_value"][idx] = p
        out["min_p"][idx] = np.where(exact, _min_p(na, nb, True), _min_p(na, nb, False))
    return {"n_a": len_a, "n_b": len_b, "damaged": damaged, **out}


def _median(middle_low: np.ndarray, middle_high: np.ndarray) -> np.ndarray:
    """The sample median from the two middle order statistics (the same one for an odd count)."""
    return (middle_low + middle_high) / 2


class _SortedBlock:
    """Points' positive samples of A (g x na) and B (g x nb), sorted once, merged: what the medians,
    their CIs and the Mann-Whitney U all read. A positive double's bits, read as an unsigned
    integer, order as the double does; shifted left one bit, with that bit saying which run the
    sample came from (B: 1), one integer sort of each merged row orders the samples and puts an A
    sample before a B sample of the same time (see `_u_by_sorting`). Each run's samples, in order,
    are then the merged row's entries with its flag (no second sort)."""

    def __init__(self, xa: np.ndarray, xb: np.ndarray):
        self.na, self.nb = xa.shape[1], xb.shape[1]
        one = np.uint64(1)
        merged = np.empty((len(xa), self.na + self.nb), dtype=np.uint64)
        np.left_shift(np.ascontiguousarray(xa).view(np.uint64), one, out=merged[:, :self.na])
        np.left_shift(np.ascontiguousarray(xb).view(np.uint64), one, out=merged[:, self.na:])
        merged[:, self.na:] |= one
        merged.sort(axis=1)
        self.merged = merged
        self.flag = merged & one
        from_b = self.flag.astype(bool).ravel()
        flat = merged.ravel()
        self._sorted = {"a": np.compress(~from_b, flat).reshape(len(xa), self.na),
                        "b": np.compress(from_b, flat).reshape(len(xa), self.nb)}

    def order_statistics(self, side: str, ranks: list[int]) -> np.ndarray:
        """The samples of each point on one side ("a", "b") at these 0-based ranks, as columns."""
        return (self._sorted[side][:, ranks] >> np.uint64(1)).view(np.float64)

    def sorted(self, side: str) -> np.ndarray:
        """Each point's samples on one side, sorted."""
        return (self._sorted[side] >> np.uint64(1)).view(np.float64)

    def ties(self) -> np.ndarray:
        """Which points have two equal samples (equal times differ by at most the flag bit)."""
        g, n = self.merged.shape
        flat = self.merged.ravel()
        close = np.flatnonzero(flat[1:] - flat[:-1] <= np.uint64(1))  # wraps to huge where it falls
        close = close[close % n != n - 1]  # a pair across two rows is no tie
        tied = np.zeros(g, dtype=bool)
        tied[close // n] = True
        return tied

    def mann_whitney_p(self) -> tuple[np.ndarray, np.ndarray]:
        """`mann_whitney_p` of the block's points, from the one merged sort."""
        na, nb = self.na, self.nb
        g, n = self.merged.shape
        if na == 1 and nb == 1:
            return np.ones(g), np.zeros(g, dtype=bool)
        # positions of the b's (flag 1) summed; the a's hold the rest of 0 + 1 + ... + (na + nb - 1)
        b_positions = self.flag.astype(np.float64) @ np.arange(n, dtype=np.float64)
        u = (n * (n - 1) / 2 - b_positions) - na * (na - 1) / 2
        tied = self.ties()
        ties = np.zeros(g)
        if tied.any():  # half of each equal a-b pair, and the tie correction, for the rows with ties
            a, b = self.sorted("a")[tied], self.sorted("b")[tied]
            u[tied] += 0.5 * np.count_nonzero(a[:, :, None] == b[:, None, :], axis=(1, 2))
            ties[tied] = _tie_term(np.concatenate([a, b], axis=1))
        return _p_from_u(u, ties, na, nb, lambda rows: (self.sorted("a")[rows], self.sorted("b")[rows]))


def mann_whitney_p(xa: np.ndarray, xb: np.ndarray, chunk: int = 1 << 14) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Mann-Whitney U p-value per row of sorted samples (xa: g x na, xb: g x nb), and
    whether it is exact.

    Rows with 8 or fewer samples on a side and no ties use scipy's exact distribution. The others
    use the normal approximation with tie and continuity corrections, as scipy's asymptotic method
    does, computed here for all rows at once (scipy ranks row by row through a general routine that
    takes minutes on a million points; tests check both agree)."""
    na, nb = xa.shape[1], xb.shape[1]
    g = len(xa)
    if na == 1 and nb == 1:
        return np.ones(g), np.zeros(g, dtype=bool)
    u, ties = np.empty(g), np.zeros(g)
    for lo in range(0, g, chunk):
        a, b = xa[lo:lo + chunk], xb[lo:lo + chunk]
        u[lo:lo + chunk], tied = _u_statistic(a, b)
        if tied.any():  # the tie correction, for the rows that have ties (timer ticks make them)
            ties[lo:lo + chunk][tied] = _tie_term(np.concatenate([a[tied], b[tied]], axis=1))
    return _p_from_u(u, ties, na, nb, lambda rows: (xa[rows], xb[rows]))


def _p_from_u(u: np.ndarray, ties: np.ndarray, na: int, nb: int, samples) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided p of each row's U (normal approximation with tie and continuity corrections;
    scipy's exact distribution for untied rows with 8 or fewer samples on a side, whose samples
    `samples(rows)` gives), and whether it is exact."""
    n = na + nb
    sigma = np.sqrt(na * nb / 12 * ((n + 1) - ties / (n * (n - 1))))
    dev = np.abs(u - na * nb / 2) - 0.5
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(sigma > 0, np.minimum(1.0, 2 * special.ndtr(-np.maximum(dev, 0) / sigma)), 1.0)
    exact = np.zeros(len(u), dtype=bool)
    if min(na, nb) <= 8:
        untied = ties == 0
        if untied.any():
            from scipy.stats import mannwhitneyu

            xa, xb = samples(untied)
            p[untied] = mannwhitneyu(xa, xb, axis=1, alternative="two-sided", method="exact").pvalue
            exact[untied] = True
    return p, exact


def _u_statistic(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """U of A per row (pairs a > b count 1, ties 1/2) and which rows have any tie. Times (all
    positive) take one integer sort per row (`_u_by_sorting`); other values the pairwise
    comparison while na x nb is small, ranks of the merged row (n log n) beyond that."""
    na, nb = a.shape[1], b.shape[1]
    if a.dtype == np.float64 and b.dtype == np.float64 and (a > 0).all() and (b > 0).all():
        return _u_by_sorting(a, b)
    if na * nb <= 1024:
        equal = np.count_nonzero(a[:, :, None] == b[:, None, :], axis=(1, 2))
        u = np.count_nonzero(a[:, :, None] > b[:, None, :], axis=(1, 2)) + 0.5 * equal
        tied = (equal > 0) | (a[:, 1:] == a[:, :-1]).any(axis=1) | (b[:, 1:] == b[:, :-1]).any(axis=1)
        return u, tied
    merged = np.concatenate([a, b], axis=1)
    order = np.argsort(merged, axis=1, kind="stable")
    ordered = np.take_along_axis(merged, order, axis=1)
    g, n = ordered.shape
    starts = np.ones(ordered.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    run = (np.cumsum(starts, axis=1) - 1 + (np.arange(g) * n)[:, None]).ravel()
    length = np.bincount(run, minlength=g * n)
    first = np.zeros(g * n, dtype=np.int64)
    flat_starts = np.flatnonzero(starts.ravel())
    first[run[flat_starts]] = flat_starts % n
    rank = first[run] + (length[run] + 1) / 2  # 1-based average rank of each sorted element
    rank_a = np.where((order < na).ravel(), rank, 0.0).reshape(g, n).sum(axis=1)
    return rank_a - na * (na + 1) / 2, ~starts[:, 1:].all(axis=1)


def _u_by_sorting(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_u_statistic` for positive samples. A positive double's bits, read as an unsigned integer,
    order as the double does; shifted left one bit, with that bit saying which run the sample
    came from, an A sample sorts before a B sample of the same time. One integer sort of the
    merged row then puts every a after exactly the b's below it: U is the sum of the a's positions
    less their own, plus half of each equal a-b pair, counted only in the rows that have a tie
    (rare: timer ticks). 20 against 20 samples: one sort of 40 integers instead of 400 pairwise
    comparisons, about a fifth of the time."""
    na, nb = a.shape[1], b.shape[1]
    one = np.uint64(1)
    merged = np.concatenate([np.ascontiguousarray(a).view(np.uint64) << one,
                             (np.ascontiguousarray(b).view(np.uint64) << one) | one], axis=1)
    merged.sort(axis=1)
    # positions of the b's (flag 1) summed; the a's hold the rest of 0 + 1 + ... + (na + nb - 1)
    n = na + nb
    b_positions = (merged & one).astype(np.float64) @ np.arange(n, dtype=np.float64)
    u = (n * (n - 1) / 2 - b_positions) - na * (na - 1) / 2
    tied = (np.diff(merged, axis=1) <= one).any(axis=1)  # equal times differ by at most the flag bit
    if tied.any():
        u[tied] += 0.5 * np.count_nonzero(a[tied][:, :, None] == b[tied][:, None, :], axis=(1, 2))
    return u, tied


def _tie_term(x: np.ndarray) -> np.ndarray:
    """Sum over groups of equal values of t^3 - t, per row."""
    g, n = x.shape
    merged = np.sort(x, axis=1)
    starts = np.ones(merged.shape, dtype=bool)
    starts[:, 1:] = merged[:, 1:] != merged[:, :-1]
    run = np.cumsum(starts, axis=1) - 1 + (np.arange(g) * n)[:, None]
    t = np.bincount(run.ravel(), minlength=g * n).astype(np.float64)
    return (t ** 3 - t).reshape(g, n).sum(axis=1)
