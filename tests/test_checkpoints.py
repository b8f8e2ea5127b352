"""The shipped detector checkpoints score what they say, and their training reached a plateau.

Notebooks from 03 on load these files instead of training for minutes; a test
re-evaluates each one so a silently changed file, loader or metric cannot
pass unnoticed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from course_utils import CocoDetection, TinyDetector, collate_detection, evaluate, load_checkpoint
from course_utils.metrics import bootstrap_map
from course_utils.train import predict

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHIPPED = ["tiny_detector", "teacher", "tiny_detector_converged", "teacher_converged", "tiny_detector_silu",
           "tiny_detector_hardswish"]
CONVERGED = {"tiny_detector_converged": 0.82, "teacher_converged": 0.85}  # the course's floors for its baselines


@pytest.fixture(scope="module")
def val_loader():
    return DataLoader(CocoDetection(ROOT / "data" / "val" / "annotations.json"), batch_size=50, collate_fn=collate_detection)


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
@pytest.mark.parametrize("name", SHIPPED)
def test_recorded_val_map_matches_a_fresh_evaluation(name, val_loader):
    payload = load_checkpoint(RESULTS / f"{name}.pt")  # weights_only=True inside
    config = payload["metadata"]["config"]
    model = TinyDetector(width=config["width"], depth=config["depth"], activation=config.get("activation", "relu"))
    model.load_state_dict(payload["model"])
    torch.set_num_threads(2)
    fresh = evaluate(model, val_loader, torch.device("cpu"))["map"]
    assert fresh == pytest.approx(payload["metadata"]["val_map"], abs=1e-6)
    result = json.loads((RESULTS / f"{name}.json").read_text())
    assert fresh == pytest.approx(result["val_map"], abs=1e-6)
    if "val_map_ci95" in result:  # the recorded interval is what bootstrap_map gives today
        ci = bootstrap_map(*predict(model, val_loader, torch.device("cpu")))
        assert [ci["low"], ci["high"]] == pytest.approx(result["val_map_ci95"], abs=1e-6)


def _plateau_module():
    spec = importlib.util.spec_from_file_location("train_tiny_detector", ROOT / "benchmarks" / "train_tiny_detector.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, floor", CONVERGED.items())
def test_converged_baselines_reached_a_plateau_and_the_floor(name, floor):
    result = json.loads((RESULTS / f"{name}.json").read_text())
    runs = result["runs"]
    assert result["val_map"] >= floor
    # the learning curves are there, one val mAP per epoch, and end where the schedule's final score is
    for run in runs:
        assert len(run["val_map_curve"]) == run["epochs"]
        assert run["val_map_curve"][-1] == pytest.approx(run["val_map"])
    # the kept schedule is the one the stated rule picks from these runs
    index, verdict = _plateau_module().choose_plateau(runs, result["plateau"]["min_gain"])
    assert runs[index]["epochs"] == result["plateau"]["epochs"] == result["config"]["epochs"]
    assert verdict == result["plateau"]["verdict"]
    # (the curves are scored on the training device; the recorded numbers always on the CPU)
    assert result["val_map"] == pytest.approx(runs[index]["val_map"], abs=1e-6 if result["device"] == "cpu" else 1e-2)
    # the plateau check: the compression methods' extra fine-tuning no longer pays off
    check = result["plateau"]["check"]
    assert check["val_map_before"] == pytest.approx(result["val_map"], abs=1e-6)
    assert len(check["val_map_after"]["runs"]) >= 3 and check["val_map_after"]["std"] is not None
    assert check["gain"] == pytest.approx(check["val_map_after"]["mean"] - check["val_map_before"])
    assert check["gain"] < result["plateau"]["min_gain"] and check["gain"] <= check["gain_upper95"]
    assert check["reached"] and result["plateau"]["reached"]
    low, high = result["val_map_ci95"]
    assert low < result["val_map"] < high


def test_plateau_rule():
    choose = _plateau_module().choose_plateau
    runs = [{"epochs": 6, "val_map": 0.70}, {"epochs": 12, "val_map": 0.80}, {"epochs": 24, "val_map": 0.803}]
    assert choose(runs, 0.005)[0] == 1  # 12 -> 24 adds 0.3 points
    assert choose(runs, 0.002)[0] == 2 and choose(runs, 0.002)[1].startswith("not reached")
    runs[2]["epochs"] = 20  # not twice as long: no evidence of a plateau
    assert choose(runs, 0.005)[0] == 2
    assert choose(runs[:1], 0.005) == (0, "not checked: a single schedule was trained")
