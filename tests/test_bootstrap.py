"""Image-level bootstrap confidence intervals for mAP (course_utils.metrics.bootstrap_map)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_utils.metrics import (
    bootstrap_map, match_per_image, mean_average_precision, paired_bootstrap_map, precision_from_matches,
    simulate_detections,
)


def _random_targets(num_images: int, seed: int, num_classes: int = 3) -> list[dict]:
    rng = np.random.default_rng(seed)
    targets = []
    for _ in range(num_images):
        n = int(rng.integers(1, 5))
        xy = rng.uniform(0, 70, (n, 2))
        wh = rng.uniform(8, 30, (n, 2))
        targets.append({"boxes": torch.tensor(np.concatenate([xy, xy + wh], 1), dtype=torch.float32),
                        "labels": torch.tensor(rng.integers(1, num_classes + 1, n), dtype=torch.int64)})
    return targets


def test_point_estimate_equals_mean_average_precision():
    targets = _random_targets(40, seed=1)
    preds = simulate_detections(targets, num_classes=3, seed=1)
    for metric, key in [("map", "map"), ("map_50", "map_50"), ("map_75", "map_75")]:
        result = bootstrap_map(preds, targets, n_boot=20, metric=metric)
        assert result["value"] == mean_average_precision(preds, targets)[key]
        assert result["low"] <= result["high"]


def test_pooling_any_order_of_all_images_is_the_plain_map():
    """precision_from_matches over a permutation of all images = the same table (ties aside)."""
    targets = _random_targets(30, seed=2)
    preds = simulate_detections(targets, num_classes=3, seed=2)
    _, matches = match_per_image(preds, targets)
    plain = precision_from_matches(matches)
    np.testing.assert_allclose(precision_from_matches(matches, np.arange(30)[::-1]), plain, atol=1e-12)
    resampled = [preds[i] for i in [3, 3, 7, 0]], [targets[i] for i in [3, 3, 7, 0]]
    np.testing.assert_allclose(precision_from_matches(matches, np.array([3, 3, 7, 0])),
                               mean_average_precision(*resampled)["precision"], atol=1e-12)


def test_identical_images_give_a_zero_width_interval():
    """Every resample of n copies of one image is the same data set, so the CI collapses to the point."""
    target = _random_targets(1, seed=3)[0]
    pred = simulate_detections([target], num_classes=3, seed=3)[0]
    result = bootstrap_map([pred] * 25, [target] * 25, n_boot=50)
    assert result["low"] == result["high"] == pytest.approx(result["value"], abs=1e-12)
    assert result["std"] == pytest.approx(0.0, abs=1e-12)


def test_seeded_and_reproducible():
    targets = _random_targets(30, seed=4)
    preds = simulate_detections(targets, num_classes=3, seed=4)
    a, b = bootstrap_map(preds, targets, n_boot=50, seed=7), bootstrap_map(preds, targets, n_boot=50, seed=7)
    c = bootstrap_map(preds, targets, n_boot=50, seed=8)
    assert a == b
    assert (a["low"], a["high"]) != (c["low"], c["high"])


def _population():
    targets = _random_targets(400, seed=5)
    return simulate_detections(targets, num_classes=3, seed=5, jitter=0.1), targets


def _coverage(method: str, trials: int, n: int = 60) -> tuple[float, int, int, float]:
    """Samples of n images drawn from a finite population whose mAP is known; 90 % intervals."""
    preds, targets = _population()
    truth = mean_average_precision(preds, targets)["map"]
    rng = np.random.default_rng(0)
    low_misses = high_misses = 0
    stds, values = [], []
    for trial in range(trials):
        idx = rng.integers(0, len(targets), n)
        result = bootstrap_map([preds[i] for i in idx], [targets[i] for i in idx], n_boot=150,
                               confidence=0.9, seed=trial, method=method)
        low_misses += truth < result["low"]
        high_misses += truth > result["high"]
        stds.append(result["std"])
        values.append(result["value"])
    ratio = float(np.mean(stds) / np.std(values, ddof=1))
    return 1 - (low_misses + high_misses) / trials, low_misses, high_misses, ratio


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
def test_bias_corrected_interval_covers_a_known_map():
    """Known answer: the mAP of a finite population of images. About 90 % of the 90 % intervals
    from samples of it must contain that mAP, and the bootstrap std must match the real spread
    of the sample mAPs (a too narrow or a too wide interval both fail)."""
    coverage, _, _, ratio = _coverage("bc", trials=40)
    assert 0.8 <= coverage <= 1.0, coverage
    assert 0.6 <= ratio <= 1.6, ratio


def test_plain_percentile_interval_sits_too_high():
    """Why "bc" is the default: mAP's small-sample bias is upwards, so the plain percentile
    interval misses the truth on one side (the truth lies below it)."""
    _, low_misses, high_misses, _ = _coverage("percentile", trials=20)
    assert low_misses >= 3 and low_misses > 2 * high_misses, (low_misses, high_misses)


def test_paired_difference_of_a_model_with_itself_is_exactly_zero():
    targets = _random_targets(30, seed=6)
    preds = simulate_detections(targets, num_classes=3, seed=6)
    result = paired_bootstrap_map(preds, preds, targets, n_boot=50)
    assert result["value"] == result["low"] == result["high"] == 0.0
    assert result["within_noise"]


def test_paired_difference_sees_a_real_gap_and_is_narrower_than_separate_intervals():
    targets = _random_targets(80, seed=7)
    good = simulate_detections(targets, num_classes=3, seed=7, jitter=0.04)
    worse = [{k: v.clone() for k, v in p.items()} for p in good]
    noise = np.random.default_rng(0)
    for p in worse:  # the same detector with noisier boxes: correlated errors, as for two real models
        p["boxes"] = p["boxes"] + torch.from_numpy(noise.normal(0, 1.5, p["boxes"].shape)).float()
    result = paired_bootstrap_map(good, worse, targets, n_boot=200)
    assert result["value"] > 0 and result["low"] > 0 and not result["within_noise"]
    sep_a, sep_b = bootstrap_map(good, targets, n_boot=200), bootstrap_map(worse, targets, n_boot=200)
    assert result["std"] < np.hypot(sep_a["std"], sep_b["std"])


@pytest.mark.parametrize("kwargs, fragment", [
    ({"n_boot": 1}, "n_boot=1"), ({"n_boot": 2.5}, "n_boot=2.5"), ({"confidence": 1.5}, "confidence=1.5"),
    ({"confidence": 0}, "confidence=0"), ({"metric": "mAP"}, "metric='mAP'"), ({"method": "bca"}, "method='bca'"),
])
def test_bad_arguments_are_named(kwargs, fragment):
    targets = _random_targets(5, seed=8)
    preds = simulate_detections(targets, num_classes=3, seed=8)
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        bootstrap_map(preds, targets, **kwargs)
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.")):
        paired_bootstrap_map(preds, preds, targets, **kwargs)


def test_paired_needs_the_same_images():
    targets = _random_targets(5, seed=9)
    preds = simulate_detections(targets, num_classes=3, seed=9)
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap_map(preds, preds[:4], targets)


def test_seed_summary_uses_the_sample_std():
    from course_utils.metrics import seed_summary

    result = seed_summary([0.80, 0.82, 0.84])
    assert result["mean"] == pytest.approx(0.82) and result["n"] == 3
    assert result["std"] == pytest.approx(0.02)  # ddof=1; ddof=0 would give 0.0163
    assert seed_summary([0.5])["std"] is None
    with pytest.raises(ValueError, match="at least one"):
        seed_summary([])
    with pytest.raises(ValueError, match="non-finite"):
        seed_summary([0.5, float("nan")])
