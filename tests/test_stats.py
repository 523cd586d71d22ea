"""Binned statistics against scipy and direct formulas on the same windows."""

import numpy as np
import pytest
from driftwire.detectors.profile import bin_numeric
from driftwire.detectors.stats import chi2, correct, js, ks, psi, wasserstein
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon


def _binned(ref_x, cur_x, bins=64):
    edges = np.unique(np.quantile(ref_x, np.linspace(0, 1, bins + 1)))
    edges[-1] = np.nextafter(edges[-1], np.inf)
    return edges, bin_numeric(ref_x, edges)[0], bin_numeric(cur_x, edges)[0]


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.3])
def test_ks_within_binning_error_of_scipy(shift):
    rng = np.random.default_rng(1)
    ref_x, cur_x = rng.normal(size=20_000), rng.normal(shift, 1.0, size=10_000)
    _, r, c = _binned(ref_x, cur_x)
    d, p = ks(r, c)
    exact = sps.ks_2samp(ref_x, cur_x)
    assert d[0] <= exact.statistic + 1e-12  # binning only drops points from the max
    assert exact.statistic - d[0] <= 2 / 64  # at most the mass of one bin (x2 for noise)
    if shift == 0.3:
        assert p[0] < 1e-10


def test_wasserstein_within_binning_error_of_scipy():
    rng = np.random.default_rng(2)
    ref_x, cur_x = rng.normal(size=20_000), rng.normal(0.4, 1.3, size=10_000)
    edges, r, c = _binned(ref_x, cur_x)
    w = wasserstein(edges, r, c, cur_x.min(), cur_x.max())
    # error comes from taking mass as uniform within a bin, mostly in the wide outer bins
    # (here ~10% of the window lies beyond the reference range)
    assert w == pytest.approx(sps.wasserstein_distance(ref_x, cur_x), rel=0.08)
    w_small = wasserstein(*_binned(ref_x, rng.normal(0.2, 1.0, 10_000))[:1], r, r, -4, 4)
    assert w_small == 0.0


def test_chi2_equals_scipy_contingency_including_empty_and_yates():
    ref = np.array([500, 300, 200, 0, 0])
    cur = np.array([450, 320, 180, 50, 0])  # a new category, an empty one
    stat, p = chi2(ref, cur)
    exp = sps.chi2_contingency(np.array([ref, cur])[:, :4])
    assert stat[0] == pytest.approx(exp.statistic) and p[0] == pytest.approx(exp.pvalue)
    two = np.array([[40, 60], [55, 45]])  # one degree of freedom: Yates
    stat, p = chi2(two[0], two[1])
    assert stat[0] == pytest.approx(sps.chi2_contingency(two).statistic)


def test_psi_and_js_against_direct_formulas_over_many_features():
    rng = np.random.default_rng(3)
    ref = [rng.integers(0, 100, k) for k in (5, 9, 3)]
    cur = [rng.integers(0, 100, k) for k in (5, 9, 3)]
    offsets = np.cumsum([0, 5, 9, 3])
    got_psi = psi(np.concatenate(ref), np.concatenate(cur), offsets, eps=1e-4)
    got_js = js(np.concatenate(ref), np.concatenate(cur), offsets)
    for i, (r, c) in enumerate(zip(ref, cur, strict=True)):
        p, q = np.maximum(r / r.sum(), 1e-4), np.maximum(c / c.sum(), 1e-4)
        assert got_psi[i] == pytest.approx(np.sum((q - p) * np.log(q / p)))
        assert got_js[i] == pytest.approx(jensenshannon(r, c, base=2) ** 2)


def test_corrections():
    p = np.array([0.001, 0.01, 0.02, 0.5])
    assert np.allclose(correct(p, "bh"), sps.false_discovery_control(p))
    assert np.allclose(correct(p, "bonferroni"), [0.004, 0.04, 0.08, 1.0])
