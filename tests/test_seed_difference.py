"""Welch's t interval for "method minus control" over seeds (course_utils.metrics.seed_difference)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from course_utils import seed_difference, seed_summary


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_a, n_b", [(3, 3), (3, 5), (6, 2)])
def test_equals_scipy_welch(seed, n_a, n_b):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.80, 0.01, n_a), rng.normal(0.79, 0.02, n_b)
    ours = seed_difference(list(a), list(b), confidence=0.9)
    ref = stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence_level=0.9)
    assert ours["difference"] == pytest.approx(a.mean() - b.mean())
    assert (ours["low"], ours["high"]) == pytest.approx((ref.low, ref.high), rel=1e-9)
    assert ours["within_noise"] == (ref.low <= 0 <= ref.high)


def test_deterministic_control_and_exact_ties():
    # a start model scored three times gives the same number: only the method's spread counts
    out = seed_difference([0.85, 0.86, 0.87], [0.80, 0.80, 0.80])
    half = stats.t.ppf(0.975, 2) * np.std([0.85, 0.86, 0.87], ddof=1) / np.sqrt(3)
    assert (out["low"], out["high"]) == pytest.approx((0.06 - half, 0.06 + half))
    assert not out["within_noise"]
    # identical floats whose mean does not round-trip still count as deterministic (np.var gives ~1e-32 there)
    same = [0.7487766124524613] * 3
    assert np.var(same, ddof=1) != 0.0
    assert seed_summary(same)["std"] == 0.0
    ref = seed_difference([0.70, 0.71, 0.72], same)
    assert ref["df"] == pytest.approx(2.0)  # only the method's spread counts: n - 1 degrees of freedom
    with pytest.raises(ValueError, match="paired_bootstrap_map"):
        seed_difference(same, [0.5, 0.5, 0.5])


def test_within_noise_when_spread_swamps_the_difference():
    assert seed_difference([0.70, 0.75, 0.80], [0.74, 0.76, 0.72])["within_noise"]
    assert not seed_difference([0.90, 0.91, 0.92], [0.70, 0.71, 0.72])["within_noise"]


@pytest.mark.parametrize("a, b, match", [([0.5], [0.5, 0.6], ">= 2 runs"), ([0.5, float("nan")], [0.5, 0.6], "non-finite")])
def test_bad_input_names_the_problem(a, b, match):
    with pytest.raises(ValueError, match=match):
        seed_difference(a, b)
    with pytest.raises(ValueError, match="confidence"):
        seed_difference([0.1, 0.2], [0.1, 0.2], confidence=95)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n", [3, 5])
def test_paired_equals_scipy_ttest_rel(seed, n):
    rng = np.random.default_rng(seed)
    shared = rng.normal(0.80, 0.02, n)  # what a method and its control share per seed (start, data order)
    a, b = shared + 0.004 + rng.normal(0, 0.002, n), shared + rng.normal(0, 0.002, n)
    ours = seed_difference(list(a), list(b), confidence=0.9, paired=True)
    ref = stats.ttest_rel(a, b).confidence_interval(confidence_level=0.9)
    assert ours["paired"] and ours["df"] == n - 1
    assert ours["difference"] == pytest.approx((a - b).mean())
    assert (ours["low"], ours["high"]) == pytest.approx((ref.low, ref.high), rel=1e-9)
    # what the pairs share cancels: the paired interval is the narrower one here
    welch = seed_difference(list(a), list(b), confidence=0.9)
    assert not welch["paired"] and ours["high"] - ours["low"] < welch["high"] - welch["low"]


def test_paired_refuses_unpaired_or_noiseless_input():
    with pytest.raises(ValueError, match="one run of each side per seed"):
        seed_difference([0.8, 0.81, 0.82], [0.8, 0.81], paired=True)
    with pytest.raises(ValueError, match="same difference"):
        seed_difference([0.5, 0.75, 0.625], [0.25, 0.5, 0.375], paired=True)  # 0.25 every seed, exactly
    with pytest.raises(TypeError, match="paired"):
        seed_difference([0.8, 0.81], [0.8, 0.82], paired="yes")


def test_paired_treats_a_rounding_residue_as_no_noise_and_refuses_bad_arguments():
    with pytest.raises(ValueError, match="same difference"):  # 0.1 - 0.0, 0.2 - 0.1, 0.3 - 0.2: equal up to rounding
        seed_difference([0.1, 0.2, 0.3], [0.0, 0.1, 0.2], paired=True)
    with pytest.raises(TypeError, match="per-seed values"):  # a set would drop a repeated score
        seed_difference({0.30, 0.32}, [0.28, 0.29, 0.30])
    with pytest.raises(ValueError, match="confidence"):
        seed_difference([0.1, 0.2], [0.1, 0.3], confidence="0.95")
    with pytest.raises(ValueError, match="overflow"):
        seed_difference([1e308, -1e308], [-1e308, 1e308], paired=True)
