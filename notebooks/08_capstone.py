# %% [markdown]
# # 08 · Capstone: distill → prune → quantize → int8, each step against its control
#
# Each earlier notebook made the detector better in one way. Here we walk one model down the whole path and ask, for every step, **what did it buy, what did it cost — compared with what?**
#
# We start from the two converged checkpoints of notebook 02: the **teacher**, `TinyDetector(width=2)` (24 epochs), and the **student**, `TinyDetector(width=1)` (48 epochs, a quarter of the teacher's parameters). Three steps follow, each starting from the previous step's model, on the same 2,000 training images:
#
# 1. **distilled** — the student fine-tuned for 6 more epochs with the teacher's three distillation terms (notebook 06);
# 2. **pruned** — the distilled model with a quarter of every layer's channels removed (keep 75 %, counts rounded to multiples of 8), fine-tuned for 6 more epochs with the teacher (notebook 07);
# 3. **int8** — the pruned model after 2 epochs of 8-bit QAT with the teacher, deployed as a real int8 ONNX model with the activation ranges QAT trained with (`export_qdq` writes the integer network with QAT's own scales; notebook 09 explains it — here it is enough that the int8 model is the model QAT trained).
#
# **Every step has an equal-budget control**: the same extra epochs from the same start, without the step's method — `distill_control` (6 epochs without the teacher), `prune_control` (6 epochs with the teacher, nothing pruned), `qat_control` (2 float epochs with the teacher). Without them a step's "gain" could simply be its extra training (notebook 07 §7b showed how large that can be). Every trained variant is run with 3 seeds.
#
# `benchmarks/capstone.py` builds them all and measures the deployable models the same way: mAP on val and test, parameters, multiply-adds, the size of the ONNX file, and latency at batch 1 and 16, **end to end** (network + decode + NMS) and for the network alone, every model and runtime timed in interleaved rounds. For an fp32 model the faster of eager PyTorch and ONNX Runtime counts: speed-ups are measured against the *fastest* fp32 path. Choices are made on val; the results are read on test (notebook 02's rule). This notebook loads the results, judges the goals, and re-runs the last step live.
#
# **The goals.** The final model should be **≥ 10× smaller** on disk and **≥ 5× faster end to end at batch 16** than the fp32 teacher, and lose **at most 3 mAP points** against it (on test).
#
# *Time: about 30 minutes. Prerequisites: notebooks 05–07. Terms: [glossary](../docs/glossary.md) (English–中文).*

# %%
import copy
import json
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torchvision
from torch.utils.data import DataLoader

from course_utils import CocoDetection, SyntheticShapes, TinyDetector, collate_detection, evaluate, load_checkpoint, materialize
from course_utils.boxes import batched_nms, decode_boxes
from course_utils.deploy import DetectorNetwork, OrtDetector, export_onnx, file_size, measure_interleaved, ort_session, paired_speedup, quantize_onnx
from course_utils.metrics import compare_intervals, pareto_front
from course_utils.prune import shrink_to_state_dict
from course_utils.quant import fuse_conv_bn

RESULTS = Path("..") / "benchmarks" / "results"
cap = json.loads((RESULTS / "capstone.json").read_text())
v = cap["variants"]
chain = ["teacher", "student", "distilled", "pruned", "int8"]  # the path; every other variant is a control or a shortcut
flags = [name for name, on in cap["cpu"]["features"].items() if on]
print(f"measured with {cap['config']['threads']} threads on a {cap['cpu']['logical_cpus']}-thread x86 CPU with {', '.join(flags)}; "
      f"seeds {cap['seeds']}")


# %% [markdown]
# > ### ❌ Myth vs ✅ fact — "pruning, quantization and distillation are three alternative tricks"
# > **Myth** (a common claim, for example in widely shared blog posts that list them side by side as ways to "optimise the model structure"): *pick one to make the model smaller.*
# >
# > **Fact:** they act on different things and **compose**. Distillation changes *what the weights learn* (accuracy, at no change in size); structured pruning changes *the shapes* (multiply-adds, latency, size); quantization changes *the number format* (4× fewer bytes per weight, integer kernels). We expect the order to matter — distil while the student still has capacity to absorb, prune with fine-tuning to recover, quantize last so QAT sees the final weights — though this course measures only this one order.

# %% [markdown]
# ## 1. Accuracy, with its noise
#
# Every row lists the variant's **total epochs** of training. The course's rule (notebook 02): choices are made on **val**, results are reported on **test**, the split no choice has seen — so both columns are here, and every comparison below is read on test. Trained variants show the mean ± sample std (ddof = 1) over the seeds; the two shipped checkpoints are single models, and for them the noise that matters is which 200 images happen to be in the split: the image-level bootstrap CI (notebook 02). The last column gives it for seed 0's model of every deployable variant.

# %%
# NBVAL_CHECK_OUTPUT
def split_cell(e, split):
    """mean ± std over the seeds (sample std, ddof = 1), or the single model's value."""
    s = e.get(f"{split}_seeds")
    return f"{s['mean']:.3f} ± {s['std']:.3f}" if s else f"{e[f'{split}_map']:.3f}  (one model)"


print(f"{'variant':<16}{'epochs':>7}  {'val mAP (choose)':<20}{'test mAP (report)':<20}{'seed 0, test, 95 % bootstrap CI':>32}")
for name in ["teacher", "student", "distill_control", "distilled", "prune_control", "pruned", "qat_control", "ptq_int8", "int8", "distilled_int8", "student_int8"]:
    e = v[name]
    ci = e.get("test_bootstrap")
    boot = f"{e['test_map_seed0']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]" if ci else ""
    print(f"{name:<16}{e['total_epochs']:>7}  {split_cell(e, 'val'):<20}{split_cell(e, 'test'):<20}{boot:>32}")
print(f"(n = {len(cap['seeds'])} seeds for every trained variant)")


# %% [markdown]
# Two things to read here. The two splits differ by up to 0.008 for the same model — they are two samples of 200 images each. And on val the three PTQ models (`ptq_int8`) score within 0.0002 of each other although the float models they were converted from differ by 0.4 points; on test they spread as much as any variant (± 0.003). That val coincidence is a property of those 200 images, not of PTQ — which is why a single split, and a spread read off it, can mislead.

# %% [markdown]
# ## 2. Cost: size and latency
#
# Sizes are the deployable ONNX files. Latency is the median of the middle one of 3 interleaved rounds, with that round's 10th and 90th percentiles; "runtime" says which path was fastest for that model (int8 models run only in ONNX Runtime). A speed-up is **paired** (Exercise 1 below): the ratio of the two models' times *within* each round, then the median of those ratios — a slow moment of the machine hits both timings of a round and cancels. The brackets give the lowest and highest of the 3 per-round ratios (a range, not a confidence interval). Timings on the course's 2-core x86 CPU wander by 10–30 % between runs, so compare the ratios of one run, as this table does — the absolute milliseconds in your run will differ.

# %%
# NBVAL_IGNORE_OUTPUT
def ms(e, b, what="end_to_end"):
    return e["fastest_ms"][what][f"batch{b}"]


def faster(a, b, batch=16, what="end_to_end"):
    """The paired speed-up of variant b over variant a (from the benchmark's interleaved rounds)."""
    return paired_speedup(ms(v[a], batch, what), ms(v[b], batch, what))


t = v["teacher"]
print(f"{'variant':<14}{'params':>8}{'MACs':>8}{'ONNX file':>11}{'end to end, b1 ms':>19}{'b16 ms [p10, p90]':>22}"
      f"{'network b16':>12}{'runtime':>9}{'smaller':>9}{'faster b16 [rounds]':>21}")
for name in cap["deployable"]:
    e = v[name]
    b16, f = ms(e, 16), faster("teacher", name)
    print(f"{name:<14}{e['parameters'] / 1e3:>7.0f}k{e['macs'] / 1e6:>7.1f}M{e['onnx_bytes'] / 1e3:>9.0f}kB{ms(e, 1)['median_ms']:>19.2f}"
          f"{b16['median_ms']:>10.2f} [{b16['p10_ms']:5.2f}, {b16['p90_ms']:5.2f}]{ms(e, 16, 'network')['median_ms']:>12.2f}"
          f"{e['fastest_runtime']['end_to_end']['batch16']:>9}{t['onnx_bytes'] / e['onnx_bytes']:>8.1f}x"
          f"{f['speedup']:>9.1f}x [{f['low']:.1f}-{f['high']:.1f}]")

# %% [markdown]
# > **A pitfall worth knowing: two thread pools on one small CPU.** An int8 pipeline here is two runtimes in turn — ONNX Runtime for the network, PyTorch for decode + NMS — and each keeps its own pool of worker threads. On a 2-core CPU, with both pools at 2 threads, they fight: the threads of one runtime are still spinning, waiting for work, when the other starts. The benchmark runs PyTorch's post-processing on one thread when it follows ONNX Runtime (post-processing is too small to gain from threads); it also timed the int8 pipeline with both pools at 2 threads, in the same interleaved rounds:

# %%
# NBVAL_IGNORE_OUTPUT
bad, good = v["int8"]["pitfall_torch_threads_ms"]["end_to_end"]["batch16"], ms(v["int8"], 16)
print(f"int8 end to end, batch 16: PyTorch post-processing on 1 thread {good['median_ms']:.2f} ms [p10 {good['p10_ms']:.2f}, p90 {good['p90_ms']:.2f}]; "
      f"on {v['int8']['pitfall_torch_threads_ms']['torch_threads']} threads {bad['median_ms']:.2f} ms [p10 {bad['p10_ms']:.2f}, p90 {bad['p90_ms']:.2f}]")
print(f"paired, round by round: {paired_speedup(bad, good)['speedup']:.2f}x slower with both pools at 2 threads")


# %% [markdown]
# Same model, same runtimes, same machine: 1.24× slower at the median (paired over the rounds) and far more erratic — the 90th percentile is 36 ms instead of 6.6, as some calls wait for the other pool's threads to give up their cores. That is about what pruning a quarter of the channels buys (§4), lost to a thread setting. When one process runs two runtimes, give the small stage one thread (`torch.set_num_threads(1)`), or turn ONNX Runtime's spinning off (`course_utils.deploy.ort_session(..., spin=False)`), and measure which is faster on your machine.

# %% [markdown]
# ## 3. Which step bought what — against its control
#
# The fair question for each step is not "did mAP go up after it?" but "did it beat the same training without the method?". A method and its control share each seed — the same start and the same data order — so the measurement is the seed-by-seed difference: the **paired** interval (`seed_difference(..., paired=True)`), which cancels what the two runs of a seed share. Welch's interval, which ignores the pairing, is printed beside it. A difference whose interval contains 0 is **within noise**. On test; the val difference is shown for comparison. One more row asks what QAT buys over the same two epochs in float followed by post-training conversion (`ptq_int8`: the `qat_control` model, calibrated and converted — the same 62 epochs), and the last what int8 alone costs the distilled model. With 3 seeds the paired interval has only 2 degrees of freedom (a t-factor of 4.3), so it is not always the narrower one: it wins when the two runs of a seed move together, and is wider when they do not.

# %%
# NBVAL_CHECK_OUTPUT
def verdict(d):
    return "within noise" if d["within_noise"] else ("gain" if d["difference"] > 0 else "loss")


def step_row(label, a, b, d):
    p, w = d["test"]["paired"], d["test"]["welch"]
    print(f"{label:<36}{v[a]['total_epochs']:>4} vs {v[b]['total_epochs']:<4}{d['val']['paired']['difference'] * 100:>+7.1f}"
          f"{p['difference'] * 100:>+8.1f}  [{p['low'] * 100:+5.1f}, {p['high'] * 100:+5.1f}]  [{w['low'] * 100:+5.1f}, {w['high'] * 100:+5.1f}]  {verdict(p)}")


E, Q, keep = cap["config"]["epochs"], cap["config"]["qat_epochs"], cap["config"]["keep"]
print(f"{'method vs its control':<36}{'epochs':^12}{'Δ val':>7}{'Δ test':>8}  {'paired 95 % CI':<16}{'Welch 95 % CI':<16} verdict (test, paired)")
step_row(f"distillation ({E} epochs with KD)", "distilled", "distill_control", v["distilled"]["vs_control"])
step_row(f"pruning (keep {keep:.0%}, {E} epochs)", "pruned", "prune_control", v["pruned"]["vs_control"])
step_row(f"QAT-8 + int8 ({Q} epochs)", "int8", "qat_control", v["int8"]["vs_control"])
step_row(f"PTQ after {Q} float epochs vs QAT", "ptq_int8", "int8", v["ptq_int8"]["vs_int8"])
print("a conversion (no training, so no control needed):")
step_row("distilled -> int8 (PTQ), no pruning", "distilled_int8", "distilled", v["distilled_int8"]["vs_distilled"])


# %% [markdown]
# Reading the steps (on test, paired by seed):
#
# * **Distillation is not shown to help.** On val, six epochs with the teacher beat six epochs without it by 0.7 points (paired interval +0.5 to +0.9): a gain. On test, the split no choice has seen, the difference is +0.3 (−0.2 to +0.9): **within noise**. Which split is right? Both are samples of 200 images, and the seed intervals hold those images fixed: they measure the noise of training, not the noise of which images were drawn — the disagreement between the splits is exactly that second noise. The val number is also the one this course looked at while building the capstone, so it is the one to distrust. The honest verdict is "a small effect at most, not shown on test". Note also what the control does: the student alone moves 0.863 → 0.866 on test just from six more epochs, so crediting all of 0.863 → 0.870 to distillation would double it.
# * **Pruning costs 1.6 points** against its control (−2.2 to −1.0), a loss on both splits. The pruned model (0.858) is 1.2 points below the distilled model it was cut from; the same six epochs without cutting anything *add* 0.4 points, so the honest price of the cut is the larger number. The 43 % fewer parameters and 41 % fewer multiply-adds cost about one and a half points on this detector.
# * **QAT-8 + int8 (with QAT's own scales) is within noise** of two float epochs (−0.4, −0.9 to +0.1) on test — on val the paired interval just excludes 0 (−0.2, −0.36 to −0.01), a loss of two tenths of a point — and within noise of the same two float epochs followed by post-training conversion (−0.0, −1.2 to +1.1): at 8 bits, as notebook 05 found, QAT is insurance, not a gain.
# * Converting the distilled model straight to int8 costs 0.2 points (within noise).

# %% [markdown]
# ## 4. The trade-off
#
# Where did the final model's size and speed come from? Each step's factor, from one model to the next (size: the ONNX files; speed: end to end at batch 16, paired over the benchmark's rounds). Size factors multiply exactly; the speed factors are medians of ratios, so their product is close to, not equal to, the speed-up measured end to end.

# %%
# NBVAL_IGNORE_OUTPUT
steps = [("architecture (width 2 -> 1)", "teacher", "student"), ("distillation", "student", "distilled"),
         (f"pruning (keep {keep:.0%})", "distilled", "pruned"), ("int8 (QAT's scales)", "pruned", "int8")]
size_total = speed_total = 1.0
print(f"{'step':<30}{'smaller':>9}{'faster b16':>12}   model after the step")
for label, a, b in steps:
    size, speed = v[a]["onnx_bytes"] / v[b]["onnx_bytes"], faster(a, b)["speedup"]
    size_total, speed_total = size_total * size, speed_total * speed
    print(f"{label:<30}{size:>8.2f}x{speed:>11.2f}x   {b}")
print(f"{'product of the steps':<30}{size_total:>8.2f}x{speed_total:>11.2f}x")
print(f"{'measured, teacher -> int8':<30}{v['teacher']['onnx_bytes'] / v['int8']['onnx_bytes']:>8.2f}x{faster('teacher', 'int8')['speedup']:>11.2f}x")
print(f"{'the shortcut: distilled -> int8':<30}{v['distilled']['onnx_bytes'] / v['distilled_int8']['onnx_bytes']:>8.2f}x"
      f"{faster('distilled', 'distilled_int8')['speedup']:>11.2f}x   distilled_int8 (PTQ)")

# %% [markdown]
# The headline factors split very differently from what "int8 makes it small and fast" suggests. **Size** comes from two steps of about 4× each: the width-2 → width-1 architecture (3.98×) and int8 (3.67×), with pruning's 1.76× between them. **Speed** comes mostly from the architecture (3.1×), then int8 (1.7×) and pruning (1.3×); distillation changes neither (it changes only what the weights learned). So "the int8 conversion delivers most of the gain" is false here: on its own, int8 makes a model 3.7× smaller and 1.7–1.9× faster end to end (the pruned and the distilled model).
#
# A variant is worth considering only if no other variant is both more accurate and cheaper — the **Pareto front**. "More accurate" and "cheaper" must be more than noise: two seed-0 models scored on the same test images are compared by the paired bootstrap interval of their difference (`paired_bootstrap_map`, in the benchmark's file), two latencies by their p10–p90 bands, two file sizes exactly. Inside the noise the two are **tied**, and a model tied with another on both axes stays on the front beside it — the data cannot choose between them (`course_utils.metrics.pareto_front`, with `compare_intervals`). Two shortcuts are plotted beside the path (dashed): `distilled_int8`, the distilled model converted to int8 without pruning or QAT, and `student_int8`, the converged student converted directly.

# %%
# NBVAL_CHECK_OUTPUT
paired_test = cap["paired_test"]


def more_accurate(m, n):
    """+1 when seed 0's m beats seed 0's n on test beyond the paired 95 % interval, -1 when it loses, 0 for a tie."""
    d = paired_test[m][n]
    return 1 if d["low"] > 0 else -1 if d["high"] < 0 else 0


def smaller(m, n):  # sizes are exact; within 1 % (e.g. the same graph, a few bytes of metadata apart) is a tie
    a, b = v[m]["onnx_bytes"], v[n]["onnx_bytes"]
    return compare_intervals((0.995 * a, 1.005 * a), (0.995 * b, 1.005 * b), higher_is_better=False)


def quicker(m, n):
    a, b = ms(v[m], 16), ms(v[n], 16)
    return compare_intervals((a["p10_ms"], a["p90_ms"]), (b["p10_ms"], b["p90_ms"]), higher_is_better=False)


deployable = cap["deployable"]
print("Pareto front, accuracy vs file size:             ", pareto_front(deployable, more_accurate, smaller))
print("Pareto front, accuracy vs end-to-end latency b16:", pareto_front(deployable, more_accurate, quicker))
ties = [(m, n) for i, m in enumerate(deployable) for n in deployable[i + 1:] if more_accurate(m, n) == 0 and quicker(m, n) == 0]
print("tied on test accuracy and on latency:", ties)

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
for ax, key, label in ((axes[0], lambda e: ms(e, 16)["median_ms"], "end-to-end latency, batch 16 (ms, fastest runtime; bars: p10-p90)"),
                       (axes[1], lambda e: e["onnx_bytes"] / 1e3, "deployable file size (kB)")):
    for names, style in ((chain, "-"), (["distilled", "distilled_int8"], "--"), (["student", "student_int8"], "--")):
        ax.plot([key(v[n]) for n in names], [v[n]["test_map_seed0"] for n in names], style, color="lightgray", zorder=0)
    for n in deployable:
        e = v[n]
        x, y, ci = key(e), e["test_map_seed0"], e["test_bootstrap"]
        xerr = [[x - ms(e, 16)["p10_ms"]], [ms(e, 16)["p90_ms"] - x]] if ax is axes[0] else None
        color = "tab:red" if n == "teacher" else "tab:green" if n == "int8" else "tab:orange" if n.endswith("_int8") else "tab:blue"
        ax.errorbar(x, y, yerr=[[y - ci["low"]], [ci["high"] - y]], xerr=xerr, fmt="o", color=color, capsize=3)
        ax.annotate(n, (x, y), textcoords="offset points", xytext=(6, 4))
    ax.axhline(v["teacher"]["test_map_seed0"] - 0.03, color="tab:red", ls=":", lw=1, label="goal: ≤ 3 points below the teacher")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.margins(x=0.15, y=0.15)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel(label)
    ax.set_ylabel("test mAP@[.5:.95], seed 0's model")
    ax.grid(alpha=0.3, which="both")
axes[0].set_title("Accuracy vs latency (up and left is better)")
axes[1].set_title("Accuracy vs size")
fig.text(0.5, -0.02, "error bars in mAP: the 95 % bootstrap CI of each model on the 200 test images", ha="center", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# With noise counted as ties, three models are on both fronts: the teacher (the most accurate by far), `int8` (the smallest and fastest) and `distilled_int8`, more accurate than `int8` beyond the paired noise (+0.8, +0.0 to +1.4) but larger and slower. `student_int8` is off the front: `distilled_int8` is more accurate (+1.0, +0.3 to +1.6) at a latency inside the same p10–p90 band. `student` and `distilled` are tied on both axes — the data cannot tell them apart; `distilled_int8` beats both (tied in accuracy, cheaper), and `int8` beats `pruned` the same way. Latencies are compared by their p10–p90 bands, the spread *within* the median round; the drift *between* runs (10–30 %, §2) is larger, so a latency "win" here holds for this run. Being on the front makes a model a candidate, not the answer: the choice among candidates is the goals', next.

# %% [markdown]
# ## 5. Against the goals
#
# Which path to ship is a choice, so it is made on val; whether that path meets the goals is the result, read on test. Size and speed are the same on both splits. The accuracy goal is judged on each by the mean over the seeds (for trained variants); the noise beside it is seed 0's model: its own points lost on test and their paired bootstrap interval against the teacher (both scored on the same resampled images).

# %%
# NBVAL_CHECK_OUTPUT
finals = {"int8": cap["goals"], **cap["goals_other_paths"]}
print(f"{'final model':<16}{'≥ 10× smaller':>15}{'≤ 3 points lost (seed mean): val':>34}{'test':>12}"
      f"   {'seed 0 on test [paired 95 % CI]':<32}")
for name, g in finals.items():
    size, val, test = g["test"]["smaller_10x"], g["val"]["within_3_points"], g["test"]["within_3_points"]
    lo, hi = test["seed0_paired_ci_points"]
    seed0 = (v["teacher"]["test_map_seed0"] - v[name]["test_map_seed0"]) * 100
    print(f"{name:<16}{size['value']:>9.1f}× {'met' if size['met'] else 'NOT met':<6}{val['value']:>19.1f} pt {'met' if val['met'] else 'NOT met':<8}"
          f"{test['value']:>5.1f} pt {'met' if test['met'] else 'NOT met':<8}   {seed0:.1f} pt [{lo:4.1f}, {hi:4.1f}]")

# %%
# NBVAL_IGNORE_OUTPUT
print(f"{'final model':<16}{'≥ 5× faster end to end, batch 16 (paired)':>43}{'batch 1':>10}")
for name, g in finals.items():
    speed = g["test"]["faster_5x_end_to_end_batch16"]
    print(f"{name:<16}{speed['value']:>35.1f}×  {'met' if speed['met'] else 'NOT met':<7}{speed['batch1']:>8.1f}×")
for b in (1, 16):
    net, e2e = ms(v["int8"], b, "network")["median_ms"], ms(v["int8"], b)["median_ms"]
    print(f"int8, batch {b:>2}: network {net:.2f} ms of {e2e:.2f} ms end to end ({net / e2e:.0%}); "
          f"teacher: network {ms(t, b, 'network')['median_ms']:.2f} of {ms(t, b)['median_ms']:.2f} ms")

# %% [markdown]
# **On val, where the path is chosen, the planned path misses its accuracy goal and the shortcut meets it.** The planned path, **int8** with pruning, is 25.7× smaller and 7.5× faster end to end at batch 16, but loses 3.9 points on val; the shortcut that skips pruning, **distilled → int8**, meets all three goals (14.7× smaller, 6.2× faster, 2.4 points lost). So the shortcut is the one to ship.
#
# **On test, the shortcut meets the goals again** — 1.8 points lost on average; its seed-0 model loses 2.0, with a paired interval of 1.1 to 3.0 points that reaches the line only at its end. The planned path is **at the line, within noise**: 3.1 points on average, 2.8 for seed 0, whose interval (1.9 to 3.7) covers 3. `student_int8`, converted without distillation, is in the same place from the other side (3.4 on val, 3.0 on test, interval 2.1 to 3.8). Two models within a tenth of a point of a line and inside its noise are neither "met" nor "missed"; what *is* clear is the ranking the choice was made on: distilled → int8 loses less than both, on both splits.
#
# Where the time goes: at batch 16 the int8 network is about two thirds of the end-to-end time; at batch 1 what runs outside the network — decode + NMS (the same float code for every model) and handing tensors to and from ONNX Runtime — is more than half of it, so the speed-up end to end is smaller there (3.8×) than at batch 16 — Amdahl's law again (notebook 05).
#
# Why is the accuracy goal missed? Follow the test points step by step (seed means for trained variants):

# %%
# NBVAL_CHECK_OUTPUT
spent = 0.0
print(f"{'step':<30}{'test mAP after':>15}{'points lost':>13}{'of the 3-point budget':>23}")
for label, a, b in steps:
    lost = (v[a]["test_map"] - v[b]["test_map"]) * 100
    spent += lost
    print(f"{label:<30}{v[b]['test_map']:>15.3f}{lost:>+13.1f}{spent / 3:>23.0%}")

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
level = v["teacher"]["test_map"]
for i, (label, a, b) in enumerate(steps):
    drop = v[a]["test_map"] - v[b]["test_map"]
    ax.bar(i, -drop * 100, bottom=(level - v["teacher"]["test_map"]) * 100, color="tab:red" if drop > 0 else "tab:green")
    level -= drop
ax.axhline(-3, color="tab:red", ls=":", label="the 3-point budget")
ax.axhline(0, color="gray", lw=0.8)
ax.set_xticks(range(len(steps)), [s[0] for s in steps], fontsize=8)
ax.set_ylabel("test mAP vs teacher (points)")
ax.set_title("Where the accuracy budget goes, step by step (test, seed means)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The budget is mostly spent before compression starts: the width-1 architecture itself is 2.2 points below the width-2 teacher on test (75 % of the 3 points). The distillation step wins back 0.7 — but against its control only 0.3 of that is distillation, within noise; the rest is six more epochs — then pruning costs 1.2 (1.6 against its control), and int8 another 0.3. **Pruning is the step this budget cannot afford**: on val it pushes the path past the line, on test it takes the path from 1.8 points lost (without it) to the line itself. The distilled width-1 model has too little accuracy to spare for a 25 % channel cut.
#
# What would meet all three goals *with* pruning? Either a student that starts closer to the teacher (a wider one, e.g. `TinyDetector(width=1.5)`, with more channels to give up), or a gentler cut (`--keep 0.875`), or a longer fine-tune after pruning with the teacher — §8 says how to try each; none is measured here.

# %% [markdown]
# ## 6. The bottleneck we fixed: post-processing
#
# NMS is a loop by nature: keep the best box, drop its overlaps, repeat. Notebook 01's teaching version (`course_utils.boxes.batched_nms`) runs that loop in Python, one tensor operation per candidate; torchvision's `batched_nms` runs it in C++. Same algorithm, same detections (the course's tests check it), very different cost — here on the candidates of 16 validation images, timed in interleaved rounds:

# %%
# NBVAL_IGNORE_OUTPUT
student = TinyDetector(width=1.0)
load_checkpoint(RESULTS / "tiny_detector_converged.pt", student)
student.eval()
batch = torch.stack([img for img, _ in materialize(CocoDetection(Path("..") / "data" / "val" / "annotations.json"), progress=False)][:16])
with torch.inference_mode():
    raw = student.forward_raw(batch)
    candidates = []  # per image: the boxes, scores and classes above the score threshold -- what NMS sees
    for logits, deltas in zip(raw["logits"].sigmoid(), raw["deltas"]):
        loc, cls = torch.nonzero(logits > student.score_threshold, as_tuple=True)
        candidates.append((decode_boxes(deltas[loc], raw["anchors"][loc]), logits[loc, cls], cls))
    nms_fns = {"course_utils.boxes.batched_nms (Python loop)": batched_nms, "torchvision.ops.batched_nms (C++)": torchvision.ops.batched_nms}
    kept = {name: [fn(b, s, c, student.nms_threshold) for b, s, c in candidates] for name, fn in nms_fns.items()}
    timed = measure_interleaved({name: (lambda fn=fn: [fn(b, s, c, student.nms_threshold) for b, s, c in candidates]) for name, fn in nms_fns.items()}
                                | {"postprocess": lambda: student.postprocess(raw, (128, 128))}, rounds=3, runs=30)
for name in nms_fns:
    print(f"{name:<46}{timed[name]['median_ms']:7.2f} ms for 16 images")
print(f"{sum(len(c[0]) for c in candidates)} candidates; same boxes kept: {all(torch.equal(a, b) for a, b in zip(*kept.values()))}")
print(f"TinyDetector.postprocess, whole batch of 16 (decode, threshold, NMS): {timed['postprocess']['median_ms']:.2f} ms")

# %% [markdown]
# The teaching loop is what you should *read*; the library call is what you should *ship* — after checking that they agree. The loop's cost grows with the number of candidates: this converged detector is confident, so 16 images leave only a few hundred candidates and the loop costs about a millisecond more than the library call — not much beside a network, yet 1 ms is a sizeable share of an int8 network that takes a few milliseconds at batch 16 (§5 splits the benchmark's end-to-end time). A less certain model (notebook 02's short run, or real photographs) leaves thousands, and then the Python loop alone can take longer than the whole int8 network: no compression of the network can make such a pipeline 5× faster (Amdahl's law, notebook 05).

# %% [markdown]
# ## 7. The last step, live: int8 from the pruned model
#
# The benchmark's seed-0 pruned model is shipped (`capstone_pruned.pt`). A pruned checkpoint does not fit a fresh `TinyDetector()`: its layers are narrower, so `shrink_to_state_dict` first builds a detector with the saved channel counts. Then notebook 05's path, post-training this time (no QAT): fold BN, export to ONNX, let ONNX Runtime calibrate and convert to int8, and measure both models end to end in interleaved rounds — with PyTorch's post-processing on one thread beside ONNX Runtime's two, as the benchmark does (§2's pitfall).

# %%
# NBVAL_IGNORE_OUTPUT
state = load_checkpoint(RESULTS / "capstone_pruned.pt")["model"]
pruned = shrink_to_state_dict(TinyDetector(width=1.0), state)
pruned.load_state_dict(state)
pruned.eval()
val_loader = DataLoader(materialize(CocoDetection(Path("..") / "data" / "val" / "annotations.json"), progress=False),
                        batch_size=50, collate_fn=collate_detection)
calib = torch.stack([img for img, _ in materialize(SyntheticShapes(64, seed=123), progress=False)])
images = calib[:16]
work = Path(tempfile.mkdtemp(prefix="capstone_"))
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    export_onnx(DetectorNetwork(fuse_conv_bn(copy.deepcopy(pruned))).eval(), images[:2], work / "pruned_fp32.onnx")
quantize_onnx(work / "pruned_fp32.onnx", work / "pruned_int8.onnx", calib)
live = {name: OrtDetector(ort_session(work / f"{name}.onnx", threads=2), pruned) for name in ("pruned_fp32", "pruned_int8")}
scores = {name: evaluate(model, val_loader, torch.device("cpu"))["map"] for name, model in live.items()}
threads = torch.get_num_threads()
torch.set_num_threads(1)  # PyTorch's decode + NMS on one thread, ONNX Runtime's network on two: the pools do not fight
with torch.inference_mode():  # end to end, both models in interleaved rounds
    timed = measure_interleaved({name: (lambda m=model: m(images)) for name, model in live.items()}, rounds=3, runs=30)
torch.set_num_threads(threads)
for name in live:
    print(f"{name:<12} {file_size(work / f'{name}.onnx') / 1e3:6.0f} kB   batch 16 end to end: {timed[name]['median_ms']:6.2f} ms   "
          f"val mAP {scores[name]:.3f}")
print(f"int8 / fp32 speed-up, live (paired rounds): {paired_speedup(timed['pruned_fp32'], timed['pruned_int8'])['speedup']:.2f}x")
print(f"benchmark, pruned fp32 -> int8 (QAT's scales), end to end, batch 16: {faster('pruned', 'int8')['speedup']:.2f}x; "
      f"seed 0 val mAP: QAT int8 {v['int8']['val_map_seed0']:.3f}, the pruned fp32 model it started from {v['pruned']['val_map_seed0']:.3f}")

# %% [markdown]
# Post-training int8 of the live pruned model (60 epochs, converted without QAT) scores close to the benchmark's `ptq_int8` rows (about 0.853 against the fp32 model's 0.859 on val; those rows had two more float epochs before the conversion), and the conversion speeds the pipeline up by a factor close to the benchmark's 1.7× for the same step (there with QAT's scales). The live milliseconds are larger than the benchmark's — this process has been busy with other work, and perhaps other programs share the machine — so compare the ratio, taken round by round, not the milliseconds.

# %% [markdown]
# ### Exercise 1 — a speed-up from interleaved rounds
#
# Every speed-up in this notebook comes from timings taken in the same interleaved rounds (`measure_interleaved`): round $r$ times each model once, with many runs, one model just after the other. A round is summarised by its **median** run (a few slow runs — another process waking up — cannot move a median much). Then the rounds are **paired**: within round $r$ both models met the same machine, so their ratio $b_r / c_r$ is a fair comparison even when the whole round was slow. The speed-up is the **median of the per-round ratios** — what `course_utils.deploy.paired_speedup` returns. (Dividing each model's own median round instead leaves the rounds unpaired: a round that was slow for both models can then still move the answer, and in simulations where whole rounds slow down by 5–30 % the paired estimate lands about 15–30 % closer to the truth; `tests/test_deploy.py` checks it.)
#
# Write `my_speedup(baseline_ms, candidate_ms)`: both are lists of rounds, each round a list of per-run latencies in milliseconds (round $r$ of the baseline ran just before round $r$ of the candidate). Return the speed-up of the candidate over the baseline — greater than 1 when the candidate is faster. The check's timings include rare slow runs and, in one set, a slow round for both models.
#
# *Sanity check:* `my_speedup([[12, 10, 11], [30, 31, 29], [9, 10, 10]], [[5, 5, 6], [12, 12, 13], [4, 4, 5]])`: the round medians are 11, 30, 10 and 5, 12, 4, the per-round ratios 2.2, 2.5 and 2.5, and the speed-up their median, 2.5. Solutions: `solutions/ex08_capstone.py`.

# %%
from course_utils.exercises import check_speedup


def my_speedup(baseline_ms, candidate_ms):
    # YOUR CODE HERE
    raise NotImplementedError


check_speedup(my_speedup)

# %% [markdown]
# ## 8. What to try next
#
# * **A gentler cut.** `python benchmarks/capstone.py --keep 0.875 --out /tmp/capstone_keep875` removes an eighth of the channels instead of a quarter (counts stay multiples of 8), and writes its files elsewhere (without `--out` it would replace the results this notebook reads). Does the pruned int8 model come back inside the 3-point budget, and how much speed is left?
# * **A wider student.** The budget was mostly spent by the architecture (§5). Train `TinyDetector(width=1.5)` with `benchmarks/train_tiny_detector.py --width 1.5`, then point `load_start` in `benchmarks/capstone.py` at it (the script starts from the width-1 checkpoint): more to prune, less lost to begin with.
# * **A longer fine-tune after pruning.** `--epochs` lengthens the distillation and pruning steps and their controls together; to lengthen only the fine-tune after the cut, give the pruning step its own epochs in `train_seed`.
# * **Per-group keep ratios.** The sensitivity scan (notebook 07 §5) says `stage4` can lose many more channels than the stem and the head; a non-uniform cut may keep more accuracy for the same multiply-adds (`prune_detector` takes one ratio; `channel_masks` + `prune_channels` take any).
# * **4 bits.** Weights at 4 bits would halve the file again; notebook 05 shows what QAT-4 costs in accuracy, and int4 kernels are another matter.
#
# ## Takeaways
#
# * Each step buys something different: the smaller architecture the largest speed factor (3.1×) and as much size as int8 (4.0× against 3.7×), distillation at most a little accuracy, structured pruning multiply-adds and latency, int8 bytes and integer-kernel speed — and each step's effect is only known against a control trained as long without it.
# * Measured here, on test: distillation +0.3 points (within noise; +0.7 on val, where it was built), pruning a quarter of the channels −1.6 (a loss), QAT-8 + int8 within noise of its float control.
# * Choose on val, report on test: the path that met the goals on val (distilled → int8) meets them on test too; the pruned path is at the line on test, within noise — a model that close to a line is neither "met" nor "missed".
# * Judge the goals on the whole pipeline (end to end, at the batch size you deploy) and against the *fastest* fp32 baseline, with paired speed-ups; say when a goal is missed, and which step spent the budget.
# * Only models on the noise-aware Pareto front are candidates; here every model off it is beaten beyond the noise by one on it, and models tied on both axes cannot be told apart by this data.
#
# **Regenerate:** `python benchmarks/capstone.py` (about 45 minutes on 2 CPU cores: 3 seeds of training, then the measurements; `train --seed S --threads 1` and `measure` run the two stages separately — run `measure` on an otherwise idle machine).
