"""The shipped benchmark results keep the course's measurement rules.

Notebooks read these JSON files instead of training for minutes, so their
claims rest on them. Each test recomputes what the file states from the runs
it records (a hand-edited or half-merged file fails), and checks the
fairness contract: every method has an equal-budget control, and spreads
come from >= 3 seeds with ddof = 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from course_utils import seed_summary

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _check_summary(entry: dict) -> None:
    fresh = seed_summary(entry["runs"])
    assert entry["n"] == fresh["n"] == len(entry["runs"]) >= 3
    assert entry["mean"] == pytest.approx(fresh["mean"])
    assert entry["std"] == pytest.approx(fresh["std"])  # ddof = 1


def test_qat_sweep_every_qat_run_has_an_equally_trained_float_control():
    sweep = _load("qat_sweep.json")
    vm, epochs = sweep["val_map"], sweep["epochs"]
    assert set(sweep["test_map"]) == set(vm)  # every variant on both splits
    for entry in list(vm.values()) + list(sweep["test_map"].values()):
        _check_summary(entry)
    qat_runs = {name for name in vm if name.startswith("qat")}
    assert {"qat8", "qat4"} <= qat_runs and qat_runs == set(sweep["control"])  # no QAT result without its control
    for method, control in sweep["control"].items():
        assert control.startswith("fp32_ft") and control in vm, method
        assert epochs[method] == epochs[control] > epochs["fp32"], method  # same extra training, from the same start
        # the same recipe: epochs and learning rate equal; only the quantizer (and its BN freeze) differ
        same = {k: v for k, v in sweep["recipes"][method].items() if k not in ("bits", "freeze_bn")}
        assert same == {k: v for k, v in sweep["recipes"][control].items() if k not in ("bits", "freeze_bn")}, method
        assert sweep["recipes"][control]["bits"] is None and sweep["recipes"][method]["bits"] in (4, 8), method
    assert sweep["fp32_bootstrap_ci"]["num_images"] == 200 and sweep["fp32_bootstrap_ci"]["n_boot"] >= 1000
    lost = vm["fp32_ft4"]["mean"] - vm["ptq4"]["mean"]
    assert sweep["checks"]["qat4_recovers_fraction_of_ptq4_loss"] == pytest.approx((vm["qat4"]["mean"] - vm["ptq4"]["mean"]) / lost)
    assert sweep["checks"]["qat4_minus_fp32_ft4"] == pytest.approx(vm["qat4"]["mean"] - vm["fp32_ft4"]["mean"])


def test_clipping_lab_has_a_working_baseline_a_divergence_and_states_its_goal_truthfully():
    lab = _load("clipping_explosion.json")
    summary, runs = lab["summary"], lab["runs"]
    assert set(summary) == {"safe", "none", "value", "norm", "agc"}
    for name, s in summary.items():
        assert s["runs"] == len(runs[name]) >= 5
        assert s["diverged"] == sum(r["diverged"] for r in runs[name])
        for metric in ("map", "map_50", "test_map", "test_map_50"):
            assert s[metric]["runs"] == pytest.approx([r[metric] for r in runs[name]])
            _check_summary(s[metric])
        assert all(r["map"] == 0.0 for r in runs[name] if r["nonfinite"])  # a NaN run scores 0, it is not dropped
    # (a) the safe learning rate trains without clipping; (b) the aggressive one diverges without it
    assert summary["safe"]["diverged"] == 0 and summary["safe"]["lr"] < summary["none"]["lr"]
    assert summary["none"]["diverged"] >= 1
    assert all(summary[k]["lr"] == summary["none"]["lr"] for k in ("value", "norm", "agc"))
    # (c) the goal as stated is what the numbers say: the best rule chosen on val, judged on test
    goal, base = lab["goal"], summary["safe"]["map_50"]["mean"]
    best = max(("value", "norm", "agc"), key=lambda k: summary[k]["map_50"]["mean"])
    assert goal["best_clipped"] == best and goal["baseline_map_50"] == pytest.approx(base)
    test_base, test_best = summary["safe"]["test_map_50"]["mean"], summary[best]["test_map_50"]["mean"]
    assert goal["test_baseline_map_50"] == pytest.approx(test_base) and goal["test_best_clipped_map_50"] == pytest.approx(test_best)
    assert goal["met"] == (test_best >= 0.5 or (test_base > 0 and test_best >= 0.8 * test_base))
    # every run has the same step budget unless it diverged to NaN
    assert all(r["steps"] == lab["steps_per_run"] for rs in runs.values() for r in rs if not r["nonfinite"])


def test_capstone_judges_every_step_against_an_equal_budget_control_and_states_its_goals_truthfully():
    from course_utils import seed_difference
    from course_utils.deploy import paired_speedup

    cap = _load("capstone.json")
    v = cap["variants"]
    assert v["teacher"]["val_map"] == pytest.approx(_load("teacher_converged.json")["val_map"], abs=1e-6)  # the converged teacher
    assert v["student"]["val_map"] == pytest.approx(_load("tiny_detector_converged.json")["val_map"], abs=1e-6)
    assert v["teacher"]["test_map"] == pytest.approx(_load("teacher_converged.json")["test_map"], abs=1e-6)
    chain = ["distilled", "pruned", "int8"]
    for name in chain:
        control = v[name]["control"]
        assert control in v and v[control]["control"] is None, name
        assert v[name]["total_epochs"] == v[control]["total_epochs"], name  # same extra training from the same start
        for split in ("val", "test"):  # both intervals recomputed from the seeds: Welch's and the paired one
            a, b = v[name][f"{split}_seeds"]["runs"], v[control][f"{split}_seeds"]["runs"]
            for kind, fresh in (("welch", seed_difference(a, b)), ("paired", seed_difference(a, b, paired=True))):
                stated = v[name]["vs_control"][split][kind]
                assert (stated["low"], stated["high"]) == pytest.approx((fresh["low"], fresh["high"])), (name, split, kind)
                assert stated["within_noise"] == fresh["within_noise"], (name, split, kind)
    assert v["student"]["total_epochs"] < v["distilled"]["total_epochs"] < v["pruned"]["total_epochs"] < v["int8"]["total_epochs"]
    for name, entry in v.items():
        for split in ("val", "test"):
            if f"{split}_seeds" in entry:
                _check_summary(entry[f"{split}_seeds"])
                assert entry[f"{split}_map"] == pytest.approx(entry[f"{split}_seeds"]["mean"])
            if f"{split}_bootstrap" in entry:
                assert entry[f"{split}_bootstrap"]["low"] <= entry[f"{split}_map_seed0"] <= entry[f"{split}_bootstrap"]["high"]
        if "fastest_ms" in entry:  # the fastest runtime of those measured, per batch size: in the model's own precision,
            assert "openvino_ms" in entry  # and among all floats (bf16 too where the CPU has it)
            for key, runtimes in (("fastest_ms", ("ort_ms", "eager_ms", "compile_ms", "openvino_ms")),
                                  ("fastest_float_ms", ("ort_ms", "eager_ms", "compile_ms", "openvino_ms", "openvino_bf16_ms"))):
                for what in ("network", "end_to_end"):
                    for b in ("batch1", "batch16"):
                        medians = [entry[r][what][b]["median_ms"] for r in runtimes if r in entry]
                        assert entry[key][what][b]["median_ms"] == min(medians), (name, key, what, b)
                        t = entry[key][what][b]
                        assert t["p10_ms"] <= t["median_ms"] <= t["p90_ms"] and len(t["round_medians_ms"]) == cap["config"]["rounds"]
    paired = cap["paired_test"]  # every two deployable models on the same test images: a - b is minus (b - a)
    for a in cap["deployable"]:
        for b in cap["deployable"]:
            if a != b:
                assert paired[a][b]["value"] == pytest.approx(-paired[b][a]["value"], abs=1e-9), (a, b)
    t = v["teacher"]
    for name, goals in {"int8": cap["goals"], **cap["goals_other_paths"]}.items():
        final = v[name]
        smaller = t["onnx_bytes"] / final["onnx_bytes"]
        faster = paired_speedup(t["fastest_ms"]["end_to_end"]["batch16"], final["fastest_ms"]["end_to_end"]["batch16"])["speedup"]
        for split in ("val", "test"):
            g, lost = goals[split], (t[f"{split}_map"] - final[f"{split}_map"]) * 100
            assert g["smaller_10x"] == {"value": pytest.approx(smaller), "met": smaller >= 10}
            assert g["faster_5x_end_to_end_batch16"]["value"] == pytest.approx(faster)
            assert g["faster_5x_end_to_end_batch16"]["met"] == (faster >= 5)
            assert g["within_3_points"]["value"] == pytest.approx(lost) and g["within_3_points"]["met"] == (lost <= 3)


@pytest.mark.parametrize("name", ["distill_sweep.json", "distill_sweep_24ep.json", "distill_sweep_labeled300.json"])
def test_distillation_sweeps_give_every_setting_the_student_alones_budget(name):
    sweep = _load(name)
    vm, cfg = sweep["val_map"], sweep["config"]
    assert "student" in vm and len(vm) >= 2  # the control: the same student, trained as long, without the teacher
    assert "converged" in sweep["config"]["teacher"]
    budget = cfg["epochs"] * cfg["train_images"]  # image-steps of the full recipe
    assert set(sweep["test_map"]) == set(vm)  # every setting on both splits
    for entry in sweep["test_map"].values():
        _check_summary(entry)
    for setting, entry in vm.items():
        _check_summary(entry)
        images = cfg["train_images"] if cfg["labeled"] is None or setting.startswith("pseudo") else cfg["labeled"]
        assert abs(sweep["epochs"][setting] * images - budget) <= images / 2, setting  # equal image-steps, up to rounding
    for setting, closed in sweep.get("gap_closed", {}).items():
        gap = sweep["teacher"]["val_map"] - vm["student"]["mean"]
        assert closed == pytest.approx((vm[setting]["mean"] - vm["student"]["mean"]) / gap), setting


def test_capstone_seed_files_are_the_runs_the_summary_reports():
    cap = _load("capstone.json")
    runs = [_load(f"capstone_seed{s}.json") for s in cap["seeds"]]
    for name, entry in cap["variants"].items():
        if "val_seeds" in entry:
            assert entry["val_seeds"]["runs"] == [r["scores"][name]["val_map"] for r in runs], name
            assert entry["test_seeds"]["runs"] == [r["scores"][name]["test_map"] for r in runs], name
    assert all(r["config"] == runs[0]["config"] for r in runs)  # one recipe for every seed


def test_codebook_sweep_gives_every_fine_tuned_variant_a_float_control_and_counts_bytes_from_the_shapes():
    from course_utils import TinyDetector
    from course_utils.quant import codebook_bytes, codebook_quantize, float_bytes, linear_bytes

    sweep = _load("codebook.json")
    vm, epochs, cfg = sweep["val_map"], sweep["epochs"], sweep["config"]
    assert set(sweep["test_map"]) == set(vm)  # every variant scored on both splits (lrs chosen on val, reported on test)
    for split, summaries, runs in (("val", vm, sweep["runs"]), ("test", sweep["test_map"], sweep["test_runs"])):
        for name, entry in summaries.items():
            fresh = seed_summary(runs[name])
            assert entry["runs"] == runs[name] and entry["mean"] == pytest.approx(fresh["mean"]), (split, name)
            assert entry["std"] == (pytest.approx(fresh["std"]) if fresh["std"] is not None else None), (split, name)
            tuned = name in sweep["lr"]
            assert entry["n"] == (len(cfg["seeds"]) if tuned else 1) and (not tuned or entry["n"] >= 3), name
            assert epochs[name] == epochs["fp32"] + (cfg["epochs"] if tuned else 0), name
    methods = {f"{kind}{b}_ft" for kind in ("codebook", "linear") for b in cfg["bits"]}
    assert set(sweep["control"]) == methods
    for method, control in sweep["control"].items():  # same epochs, same lr, same data order; only the quantizer differs
        assert control in vm and epochs[control] == epochs[method] and sweep["lr"][control] == sweep["lr"][method]
    model = TinyDetector().eval()  # storage depends on the shapes only
    assert sweep["bytes"]["fp32"] == float_bytes(model)
    for b in cfg["bits"]:
        assert sweep["bytes"][f"linear{b}"] == linear_bytes(model, b)
        assert sweep["bytes"][f"codebook{b}"] == codebook_bytes(codebook_quantize(model, b, iters=1))
        assert sweep["max_distinct_weights_per_layer"][f"codebook{b}_ft"] <= 2**b


def test_integer_inference_baseline_is_the_fastest_fp32_and_every_int8_variant_is_scored():
    from course_utils.deploy import paired_speedup

    data = _load("integer_inference.json")
    lat, acc = data["latency"], data["accuracy"]
    fp32 = [k for k in lat["latency_ms"]["batch16"] if k.startswith("fp32")]
    assert len(fp32) >= 3  # eager and ONNX Runtime at two optimization levels
    for batch, timings in lat["latency_ms"].items():
        fastest = min(fp32, key=lambda k: timings[k]["median_ms"])
        assert lat["fastest_fp32"][batch] == fastest
        for key, t in timings.items():  # paired: the median over rounds of (fastest fp32 / the variant), same rounds
            assert lat["speedup_vs_fastest_fp32"][batch][key] == pytest.approx(paired_speedup(timings[fastest], t)["speedup"])
            assert t["p10_ms"] <= t["median_ms"] <= t["p90_ms"] and len(t["round_medians_ms"]) == lat["rounds"]
    int8 = [k for k in lat["latency_ms"]["batch16"] if k.startswith("int8")]
    assert set(int8) == set(lat["val_map"]) == set(lat["test_map"]), "every int8 variant timed must also be scored"
    assert lat["rounds"] >= 3
    # the integer network and ONNX Runtime with the model's own scales agree to within 0.1 point (issue 15)
    assert abs(acc["val_map"]["integer"] - acc["val_map"]["qat_scales"]) <= 0.001
    assert abs(acc["val_map"]["qat_scales"] - acc["val_map"]["fake_quant"]) <= 0.002
    assert abs(acc["test_map"]["integer"] - acc["test_map"]["qat_scales"]) <= 0.001  # the same on the held-out split
    assert acc["optimized_op_types"]["qat_scales"].get("Conv", 0) == 0 and acc["optimized_op_types"]["qat_scales"]["QLinearConv"] == 14
    layers = acc["layer_vs_ort"].values()
    assert all(v["max_units"] <= 1 for v in layers) and sum(v["differ"] for v in layers) <= 1e-4 * sum(v["elements"] for v in layers)


def test_ptq_methods_summaries_and_differences_come_from_the_runs():
    from course_utils import seed_difference

    data = _load("ptq_methods.json")
    for split, prefix in (("val", ""), ("test", "test_")):
        for entry in data[f"{split}_map"].values():
            _check_summary(entry)
        for name, diff in data[f"{prefix}adaround_minus_minmax"].items():
            a, b = name.split("_minus_")
            for kind, paired in (("welch", False), ("paired", True)):
                fresh = seed_difference(data[f"{split}_map"][a]["runs"], data[f"{split}_map"][b]["runs"], paired=paired)
                assert diff[kind]["difference"] == pytest.approx(fresh["difference"]), (split, name, kind)
                assert (diff[kind]["low"], diff[kind]["high"]) == pytest.approx((fresh["low"], fresh["high"])), (split, name, kind)


@pytest.mark.parametrize("name", ["multiscale.json", "multiscale_16ep.json"])
def test_multiscale_variants_train_alike_and_the_summary_comes_from_the_runs(name):
    from course_utils import TinyDetector, count_parameters, seed_difference

    data = _load(name)
    epochs = {s["epochs"] for s in data["summary"].values()}
    assert len(epochs) == 1, "every variant must train for the same epochs"
    main = [r for r in data["runs"] if r["epochs"] in epochs]
    assert {r["lr"] for r in main} == {main[0]["lr"]} and {r["train_images"] for r in main} == {main[0]["train_images"]}
    from course_utils import count_flops

    variants = {"levels1": TinyDetector(), "levels3": TinyDetector(levels=3), "levels1_w1.5": TinyDetector(width=1.5),
                "levels1_w1.1": TinyDetector(width=1.1)}
    for variant, entry in data["summary"].items():
        runs = [r for r in main if r["variant"] == variant]
        assert sorted(r["seed"] for r in runs) == sorted(data["seeds"]) and len(runs) >= 3
        assert entry["parameters"] == count_parameters(variants[variant]) == runs[0]["parameters"]
        assert entry["macs"] == count_flops(variants[variant].eval(), (192, 192)) == runs[0]["macs"]
        for key in ("map", "map_large", "mar_100"):
            for fresh, stated in ((seed_summary([r[key] for r in runs]), entry[key]),
                                  (seed_summary([r["test"][key] for r in runs]), entry["test"][key])):
                assert stated["n"] == fresh["n"] and stated["mean"] == pytest.approx(fresh["mean"])
                assert stated["std"] == pytest.approx(fresh["std"])
        for key, diff in entry.get("minus_levels1", {}).items():
            fresh = seed_difference([r[key] for r in runs], [r[key] for r in main if r["variant"] == "levels1"])
            assert diff["difference"] == pytest.approx(fresh["difference"]) and diff["low"] == pytest.approx(fresh["low"])
            assert diff["within_noise"] == fresh["within_noise"]
    for variant, check in data["convergence_check"].items():  # the longer schedule of seed 0 is a recorded run
        for e, value in zip(check["epochs"], check["val_map"]):
            assert value == next(r["map"] for r in data["runs"] if r["variant"] == variant and r["epochs"] == e
                                 and r["seed"] == data["seeds"][0])
    assert f"{epochs.pop()} epochs" in data["description"]


@pytest.mark.parametrize("name", ["autograde.json", "autograde_serial.json"])
def test_autograde_trial_class_covers_every_exercise_and_gets_the_marks_it_must(name):
    """benchmarks/autograde.py's runs (--jobs 2 and serial): every checked exercise of every notebook, for
    alice (reference), bob (untouched release) and carol (one wrong answer per notebook); the expected marks
    are recomputed here."""
    import re
    import sys

    import nbformat

    root = RESULTS.parents[1]
    sys.path.insert(0, str(root))
    try:
        from classroom.trial import STUDENTS, WRONG
    finally:
        sys.path.remove(str(root))
    data = _load(name)
    assert f"--jobs {data['jobs']}" in data["command"]
    exercises = {}
    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        checked = [name for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"
                   for name in re.findall(r"^check_\w+\((?:my_)?(\w+)\)", c.source, re.M)]
        if checked:
            exercises[path.stem] = sorted(checked)
    assert data["notebooks"] == sorted(exercises), "the trial must grade every notebook with an exercise"
    graded = {}
    for r in data["rows"]:
        graded.setdefault((r["student"], r["notebook"]), []).append(r["exercise"])
        role = r["student"].rstrip("0123456789")  # alice2, bob2, carol2: a copy of the trial class (--copies)
        expected = {"alice": 1, "bob": 0}.get(role, int(r["exercise"] != WRONG[r["notebook"]][0]))
        assert r["expected"] == expected and r["max_points"] == 1
        assert r["points"] == expected, f"{r['student']} got {r['points']} on {r['notebook']}/{r['exercise']}, expected {expected}"
    students = sorted(data["totals"])
    assert {s.rstrip("0123456789") for s in students} == set(STUDENTS)
    for who in students:
        for notebook, names in exercises.items():
            assert sorted(graded[who, notebook]) == names, f"{who}/{notebook}: graded {graded[who, notebook]}"
    n = sum(map(len, exercises.values()))
    want = {"alice": n, "bob": 0, "carol": n - len(exercises)}
    assert data["totals"] == {s: {"points": want[s.rstrip("0123456789")], "max_points": n} for s in students}
    assert data["all_as_expected"] is True


def test_hub_load_figures_in_the_teachers_guide_are_the_recorded_ones():
    """benchmarks/hub_load.py: one student alone, then three at once; docs/teaching.md quotes its numbers."""
    data = _load("hub_load.json")
    alone, together = data["rounds"]
    assert alone["students_at_once"] == 1 and together["students_at_once"] == 3 and data["threads_per_kernel"] == 1
    for r in (alone, together):
        assert set(r["seconds_per_student"]) == set(r["kernel_peak_mib"]) == set(r["account_peak_mib"])
        assert all(r["account_peak_mib"][n] >= r["kernel_peak_mib"][n] > 100 for n in r["kernel_peak_mib"])
    guide = (RESULTS.parents[1] / "docs" / "teaching.md").read_text()
    (solo,) = alone["seconds_per_student"].values()
    assert f"one student alone took **{solo:.0f} s**" in guide
    (kernel,) = alone["kernel_peak_mib"].values()
    (account,) = alone["account_peak_mib"].values()
    assert f"peaking at **{kernel / 1024:.2f} GiB**" in guide and f"**{account / 1024:.2f} GiB**" in guide
    lo, hi = min(together["seconds_per_student"].values()), max(together["seconds_per_student"].values())
    assert f"**{lo:.0f}–{hi:.0f} s** each" in guide


def test_int8_latency_summary_comes_from_the_rounds_and_every_runtime_timed_is_scored():
    from course_utils.deploy import paired_speedup

    data = _load("int8_latency.json")
    lat, features = data["latency_ms"], data["cpu_int8_features"]
    assert {"vnni", "bf16", "amx_int8", "amx_bf16"} <= set(features)  # the CPU's instruction sets are recorded
    runtimes = [k for k in lat if k.split("_")[0] in ("fp32", "bf16", "int8")]
    assert ("bf16_openvino" in runtimes) == features["bf16"]  # bf16 timed exactly where the CPU has it
    assert {"fp32_ort", "fp32_openvino", "int8_ort", "int8_openvino"} <= set(runtimes)
    for name in runtimes:
        if name.endswith(("_ort", "_openvino", "_torchao")):
            assert name in data["test_map"] and name in data["val_map"], f"{name} is timed but not scored"
    for key, s in data["summary"].items():
        fp32 = [k for k in runtimes if k.startswith("fp32_")]
        floats = fp32 + [k for k in runtimes if k.startswith("bf16_")]
        int8 = [k for k in runtimes if k.startswith("int8_")]
        for kind, names in (("fastest_fp32", fp32), ("fastest_float", floats), ("fastest_int8", int8)):
            assert s[kind] == min(names, key=lambda k: lat[k][key]["median_ms"]), (key, kind)
        assert s["speedup_fastest_int8_vs_fastest_fp32"] == pytest.approx(
            paired_speedup(lat[s["fastest_fp32"]][key], lat[s["fastest_int8"]][key])["speedup"])
        assert s["speedup_fastest_int8_vs_fastest_float"] == pytest.approx(
            paired_speedup(lat[s["fastest_float"]][key], lat[s["fastest_int8"]][key])["speedup"])
        for name in runtimes:
            t = lat[name][key]
            assert t["p10_ms"] <= t["median_ms"] <= t["p90_ms"] and len(t["round_medians_ms"]) == data["rounds"]
    for name, d in data["paired_test_map"].items():  # int8 against the fake-quant model, bf16 against fp32, on test
        assert d["low"] <= d["value"] <= d["high"], name
        runtime, base = name.split("_minus_")
        assert base == ("qat8_fake_quant" if runtime.startswith("int8_") else "fp32")
        assert d["value"] == pytest.approx(data["test_map"][runtime] - data["test_map"][base], abs=1e-9)
    for name, b in lat.get("cache_breakdown_batch16", {}).items():
        assert b["network_alone"] > 0 and b["post_after_network"] > 0, name


def test_int8_scaling_speedups_are_paired_over_its_rounds():
    from course_utils.deploy import paired_speedup

    data = _load("int8_scaling.json")
    assert len(data["cells"]) == len(data["batches"]) * len(data["sizes"]) and data["rounds"] >= 3
    for key, c in data["cells"].items():
        per = c["latency_ms"]
        assert set(per) == set(data["runtimes"]), key
        assert c["fastest"]["int8"] == min((n for n in per if n.startswith("int8_")), key=lambda n: per[n]["median_ms"])
        assert c["fastest"]["fp32"] == min((n for n in per if n.startswith("fp32_")), key=lambda n: per[n]["median_ms"])
        assert c["speedup_int8_vs_fp32"] == pytest.approx(paired_speedup(per[c["fastest"]["fp32"]]["round_medians_ms"],
                                                                         per[c["fastest"]["int8"]]["round_medians_ms"])["speedup"])
        assert all(len(t["round_medians_ms"]) == data["rounds"] for t in per.values())


def test_int8_failures_spreads_searches_and_allocations_come_from_their_runs():
    """benchmarks/int8_failures.py (notebook 11): calibration cells are >= 3 draws with ddof = 1 spreads, the
    keep-in-float results obey their budget, speed-ups are paired over rounds, the mixed-precision choice is
    what allocate_bits gives from the recorded drops."""
    import statistics

    from course_utils import TinyDetector
    from course_utils.deploy import paired_speedup
    from course_utils.quant import allocate_bits, fuse_conv_bn, model_weight_bytes

    data = _load("int8_failures.json")
    cal = data["calibration"]
    assert set(cal["cells"]) == {"minmax", "entropy", "percentile"} and cal["split"] == "val"
    for cells in list(cal["cells"].values()) + [{"blank": cal["blank_64"]}]:
        for cell in cells.values():
            assert cell["n"] == len(cell["values"]) == cal["draws"] >= 3 and cell["ddof"] == 1
            assert cell["mean"] == pytest.approx(statistics.mean(cell["values"]))
            assert cell["std"] == pytest.approx(statistics.stdev(cell["values"]))
    scan = data["scan"]
    gain = scan["scan"]["gain"]
    assert scan["order"] == sorted(gain, key=lambda n: -gain[n])
    for found in [scan["search"]] + [row["search"] for row in data["activations"].values()]:
        assert found["drop"] == pytest.approx(found["float"] - found["score"])
        assert found["met"] == (found["drop"] <= scan["max_drop"])
    assert scan["search"]["met"]
    for row in scan["curve"]:
        assert row["nodes"] == scan["order"][: row["n_float"]]
        assert row["speedup_vs_fp32"]["speedup"] == pytest.approx(
            paired_speedup(scan["fp32_ms_b16"]["rounds"], row["ms_b16"]["rounds"])["speedup"])
    assert set(data["formats"]) == {"fp32", "dynamic", "static_qdq", "static_qoperator"}
    for row in data["formats"].values():
        assert row["speedup_vs_fp32"]["speedup"] == pytest.approx(
            paired_speedup(data["formats"]["fp32"]["ms_b16"]["rounds"], row["ms_b16"]["rounds"])["speedup"])
    assert set(data["activations"]) == {"relu", "silu", "hardswish"}
    intervals = [r["test_minus_fp32"] for r in data["packed"]["models"].values() if "test_minus_fp32" in r]
    intervals += [r[k]["test_minus_fp32"] for r in data["activations"].values() for k in ("int8", "activations_in_float")]
    intervals += [r["test_minus_all_int8"] for r in data["paired"].values()]
    intervals += [r["test_minus_fp32"] for r in data["mixed"]["variants"].values()]
    assert intervals and all(i["low"] <= i["value"] <= i["high"] for i in intervals)
    mixed = data["mixed"]
    folded = fuse_conv_bn(TinyDetector())
    assert mixed["variants"]["mixed"]["layer_bits"] == allocate_bits(mixed["drops_4bit"], folded, mixed["budget_bytes"])
    for name, row in mixed["variants"].items():
        default = 4 if name == "W4A8" else 8
        assert row["weight_bytes"] == model_weight_bytes(folded, row["layer_bits"], default_bits=default)
    assert mixed["variants"]["mixed"]["weight_bytes"] <= mixed["budget_bytes"]
    assert mixed["variants"]["mixed_opposite"]["weight_bytes"] <= mixed["budget_bytes"]

    rr = data["reduce_range"]  # 7-bit weights never saturate; the 8-bit totals add up from the per-conv counts
    assert rr["models"]["int8_reduce_range"]["weight_range"][1] <= 64 < rr["models"]["int8_8bit"]["weight_range"][1]
    for sat in [m["saturation"] for m in rr["models"].values()] + [rr["qat8_file_saturation"]]:
        per = sat["per_conv"].values()
        assert sat["pairs"] == sum(c["pairs"] for c in per) and sat["convs"] == len(per) == 14
        assert sat["fraction"] == pytest.approx(sum(c["saturated"] for c in per) / sat["pairs"])
        assert sat["convs_saturating"] == sum(c["saturated"] > 0 for c in per)
        assert all((c["saturated"] > 0) == (c["max_abs_pair"] > 32767) for c in per)
    assert rr["models"]["int8_reduce_range"]["saturation"]["fraction"] == 0
    estimate = rr["no_vnni_estimate"]  # nothing saturates at 7 bits: the emulation must change nothing
    assert estimate["int8_reduce_range"]["first_conv_codes_changed"] == 0 == estimate["int8_reduce_range"]["test_minus_vnni"]["value"]
    first = {name: next(iter(m["saturation"]["per_conv"].values())) for name, m in rr["models"].items()}
    assert (estimate["int8_8bit"]["first_conv_codes_changed"] > 0) == (first["int8_8bit"]["saturated"] > 0)
    assert all(e["test_minus_vnni"]["low"] <= e["test_minus_vnni"]["value"] <= e["test_minus_vnni"]["high"] for e in estimate.values())
    assert mixed["mixed_minus_W4A8"]["low"] <= mixed["mixed_minus_W4A8"]["value"] <= mixed["mixed_minus_W4A8"]["high"]
    summary = data["summary"]  # the before/after table: every speed-up from the recorded rounds, every CI ordered
    models = summary["models"]
    assert summary["split"] == "test" and len(summary["rows"]) >= 8 and {r["part"] for r in summary["rows"]} == set(range(1, 8))
    assert summary["mixed_layer_bits"] == mixed["variants"]["mixed"]["layer_bits"]  # part 7's files: part mixed's choice
    for row in summary["rows"]:
        rounds = {side: models[row[side]]["ms_b16"]["rounds"] for side in ("before", "after", "fp32")}
        assert row["speedup_after_vs_before"]["speedup"] == pytest.approx(
            paired_speedup(rounds["before"], rounds["after"])["speedup"])
        for side in ("before", "after"):
            assert row[f"{side}_speedup_vs_fp32"]["speedup"] == pytest.approx(paired_speedup(rounds["fp32"], rounds[side])["speedup"])
        for ci in (row["after_minus_before"], row["before_minus_fp32"], row["after_minus_fp32"]):
            assert ci["low"] <= ci["value"] <= ci["high"]
        assert row["after_minus_before"]["value"] == pytest.approx(
            models[row["after"]]["test_map"] - models[row["before"]]["test_map"], abs=1e-9)
