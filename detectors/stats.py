"""Two-sample drift statistics on binned counts, for many features at once.

Every function takes reference and current counts as flat arrays holding one segment per
feature, delimited by ``offsets`` (``offsets[i]:offsets[i+1]`` is feature i), and returns one
value per feature. With a single feature pass ``offsets=None``. The reference is a sample too,
so every test is two-sample.

>>> import numpy as np
>>> ref = np.array([25, 25, 25, 25]); cur = np.array([10, 20, 30, 40])
>>> round(float(psi(ref, cur)[0]), 4), round(float(ks(ref, cur)[0][0]), 2)
(0.2282, 0.2)
>>> stat, p = chi2(ref, cur)
>>> round(float(stat[0]), 3), p[0] < 0.05
(10.9, np.True_)
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps


def _offsets(counts: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
    return np.array([0, len(counts)]) if offsets is None else np.asarray(offsets)


def _totals(counts: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.add.reduceat(counts, offsets[:-1]).astype(np.float64)


def _expand(per_feature: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.repeat(per_feature, np.diff(offsets))


def probabilities(counts: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """Counts normalised within each feature (all zeros where a feature has no count)."""
    offsets = _offsets(counts, offsets)
    totals = _totals(counts, offsets)
    safe = np.where(totals > 0, totals, 1.0)
    return counts / _expand(safe, offsets)


def psi(
    ref: np.ndarray, cur: np.ndarray, offsets: np.ndarray | None = None, eps: float = 1e-4
) -> np.ndarray:
    """Population stability index, sum((q - p) ln(q / p)), probabilities floored at `eps`
    so an empty bin gives a large but finite term."""
    offsets = _offsets(ref, offsets)
    p = np.maximum(probabilities(ref, offsets), eps)
    q = np.maximum(probabilities(cur, offsets), eps)
    return np.add.reduceat((q - p) * np.log(q / p), offsets[:-1])


def js(ref: np.ndarray, cur: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """Jensen-Shannon divergence, base 2: 0 (same) .. 1 (disjoint)."""
    offsets = _offsets(ref, offsets)
    p, q = probabilities(ref, offsets), probabilities(cur, offsets)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(p / m), 0.0) + np.where(q > 0, q * np.log2(q / m), 0.0)
    return np.clip(0.5 * np.add.reduceat(terms, offsets[:-1]), 0.0, 1.0)


def _segment_cumsum(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each feature."""
    total = np.cumsum(x)
    before = np.concatenate([[0.0], total[offsets[1:-1] - 1]])
    return total - _expand(before, offsets)


def ks(
    ref: np.ndarray, cur: np.ndarray, offsets: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Kolmogorov-Smirnov on the binned CDFs: (max |F_ref - F_cur| over bin edges, p-value).

    The p-value is the asymptotic Kolmogorov one, kstwobign.sf(D * sqrt(n_eff)) with
    n_eff = n*m/(n+m) (10x cheaper than the exact kstwo; they agree to 3 digits at n_eff in
    the thousands). Binning only removes points from the
    max, so the statistic is <= the exact one and the p-value is conservative."""
    offsets = _offsets(ref, offsets)
    gap = np.abs(
        _segment_cumsum(probabilities(ref, offsets), offsets)
        - _segment_cumsum(probabilities(cur, offsets), offsets)
    )
    d = np.maximum.reduceat(gap, offsets[:-1])
    n, m = _totals(ref, offsets), _totals(cur, offsets)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where((n > 0) & (m > 0), n * m / (n + m), 0.0)
    p = np.where(n_eff > 0, sps.kstwobign.sf(d * np.sqrt(n_eff)), 1.0)
    return d, np.clip(p, 0.0, 1.0)


def chi2(
    ref: np.ndarray, cur: np.ndarray, offsets: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Chi-square test of homogeneity on the 2 x K table (reference row, current row), as
    `scipy.stats.chi2_contingency` computes it: categories empty in both rows are dropped,
    Yates' correction when one degree of freedom is left."""
    offsets = _offsets(ref, offsets)
    ref, cur = ref.astype(np.float64), cur.astype(np.float64)
    n, m = _totals(ref, offsets), _totals(cur, offsets)
    col = ref + cur
    grand = _expand(n + m, offsets)
    safe_grand = np.where(grand > 0, grand, 1.0)
    e_ref, e_cur = col * _expand(n, offsets) / safe_grand, col * _expand(m, offsets) / safe_grand
    dof = np.add.reduceat((col > 0).astype(np.int64), offsets[:-1]) - 1
    dof = np.where((n > 0) & (m > 0), dof, 0)
    yates = _expand(dof == 1, offsets)
    stat = _chi_terms(ref, e_ref, yates) + _chi_terms(cur, e_cur, yates)
    total = np.where(dof > 0, np.add.reduceat(stat, offsets[:-1]), 0.0)
    p = np.where(dof > 0, sps.chi2.sf(total, np.maximum(dof, 1)), 1.0)
    return total, p


def _chi_terms(obs: np.ndarray, exp: np.ndarray, yates: np.ndarray) -> np.ndarray:
    diff = exp - obs
    adj = np.where(yates, obs + np.sign(diff) * np.minimum(0.5, np.abs(diff)), obs)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(exp > 0, (adj - exp) ** 2 / exp, 0.0)


def wasserstein(
    edges: np.ndarray,
    ref: np.ndarray,
    cur: np.ndarray,
    lo: float,
    hi: float,
) -> float:
    """Earth mover's distance between two binned distributions of one numeric feature.

    ``ref``/``cur`` are counts in [below edges[0], inner bins, above edges[-1]]; the outer
    bins span [lo, edges[0]] and [edges[-1], hi] (the window's observed min/max)."""
    positions = np.concatenate([[min(lo, edges[0])], edges, [max(hi, edges[-1])]])
    return float(wasserstein_flat(positions, ref, cur, np.array([0, len(ref)]))[0])


def wasserstein_flat(
    positions: np.ndarray, ref: np.ndarray, cur: np.ndarray, offsets: np.ndarray
) -> np.ndarray:
    """`wasserstein` for many features: ``positions`` holds, per feature, the len(bins) + 1
    bin boundaries (outer ones included). Mass is taken as uniform within a bin, so both
    CDFs are piecewise linear and |F - G| is integrated exactly between boundaries."""
    d = _segment_cumsum(probabilities(ref, offsets), offsets) - _segment_cumsum(
        probabilities(cur, offsets), offsets
    )
    d = np.insert(d, offsets[:-1], 0.0)  # both CDFs are 0 at each feature's lowest boundary
    starts = offsets[:-1] + np.arange(len(offsets) - 1)  # feature starts in `positions`
    d0, d1 = d[:-1], d[1:]
    width = np.diff(positions)
    width[starts[1:] - 1] = 0.0  # the step from one feature to the next is not a bin
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = (d0 * d0 + d1 * d1) / (2 * (np.abs(d0) + np.abs(d1)))
    area = np.where(d0 * d1 >= 0, 0.5 * (np.abs(d0) + np.abs(d1)), np.nan_to_num(crossing))
    return np.add.reduceat(area * width, starts)


def correct(p_values: np.ndarray, method: str) -> np.ndarray:
    """Multiple-testing adjusted p-values across one window's features.

    "bh" (Benjamini-Hochberg) controls the false discovery rate (and, when nothing drifts,
    the chance of any false alarm) at alpha; "bonferroni" the family-wise error rate."""
    p = np.asarray(p_values, dtype=np.float64)
    if len(p) == 0 or method == "none":
        return p
    if method == "bonferroni":
        return np.minimum(p * len(p), 1.0)
    if method == "bh":
        return sps.false_discovery_control(p, method="bh")
    raise ValueError(f"unknown correction {method!r}")


def probit(p_values: np.ndarray) -> np.ndarray:
    """p-value -> z = Phi^-1(1 - p): a scale-free drift score, N(0, 1) when nothing drifts
    (a bit lower for the conservative binned KS), capped so a vanishing p stays finite."""
    return np.minimum(sps.norm.isf(np.clip(p_values, 1e-300, 1.0)), 37.0)
