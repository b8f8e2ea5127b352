"""Solutions for notebook 08_capstone."""

import statistics


def speedup(baseline_ms, candidate_ms):
    """Exercise 1: each round's median run, each model's median round, then baseline / candidate."""
    def median_round(rounds):
        return statistics.median(statistics.median(r) for r in rounds)

    return median_round(baseline_ms) / median_round(candidate_ms)
