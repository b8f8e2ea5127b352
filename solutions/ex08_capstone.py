"""Solutions for notebook 08_capstone."""

import statistics


def speedup(baseline_ms, candidate_ms):
    """Exercise 1: each round's median run, the ratio baseline / candidate within each round, then the median ratio."""
    ratios = [statistics.median(b) / statistics.median(c) for b, c in zip(baseline_ms, candidate_ms)]
    return statistics.median(ratios)
