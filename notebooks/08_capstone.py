# %% [markdown]
# # 08 · Capstone: distill → prune → quantize → int8, each step against its control
#
# One model goes down the whole path of notebooks 05–07. For every step you ask: **what did it buy, what did it cost — compared with what?**
#
# **You will learn to**
# 1. judge each step against its control;
# 2. split the size and speed-up into per-step factors;
# 3. check a model against goals and find the step that spent the accuracy;
# 4. convert a pruned model to int8 yourself.

# %% [markdown]
# > **Terms** new here:
# > * **point**: 0.01 of mAP.
# > * **control**: the same extra epochs from the same start, without the step's method.
# > * **paired**: compared seed by seed, or timing round by round, so what a pair shares cancels.
# > * **within noise**: the difference's 95 % interval contains 0: no gain or loss shown.
# > * **end to end**: network + box decoding + NMS.
# > * **interleaved rounds**: each round times every model once, one after the other.
#
# *Time: about 40 minutes. Prerequisites: notebooks 05–07. Terms: [glossary](../docs/glossary.md) (English–中文).*

# %%
import atexit
import copy
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch.utils.data import DataLoader

from course_utils import CocoDetection, SyntheticShapes, TinyDetector, collate_detection, evaluate, load_checkpoint, materialize
from course_utils.deploy import DetectorNetwork, OrtDetector, export_onnx, file_size, measure_interleaved, ort_session, paired_speedup, quantize_onnx
from course_utils.prune import shrink_to_state_dict
from course_utils.quant import fuse_conv_bn

RESULTS = Path("..") / "benchmarks" / "results"
cap = json.loads((RESULTS / "capstone.json").read_text())
v = cap["variants"]
chain = ["teacher", "student", "distilled", "pruned", "int8"]  # the path; every other variant is a control or a shortcut
flags = [name for name, on in cap["cpu"]["features"].items() if on]
print(f"measured with {cap['config']['threads']} threads on a {cap['cpu']['logical_cpus']}-thread x86 CPU with {', '.join(flags)}; "
      f"seeds {cap['seeds']}")


def ms(e, b, what="end_to_end"):
    return e["fastest_ms"][what][f"batch{b}"]


def faster(a, b, batch=16, what="end_to_end"):
    """The paired speed-up of variant b over variant a (from the benchmark's interleaved rounds)."""
    return paired_speedup(ms(v[a], batch, what), ms(v[b], batch, what))


t = v["teacher"]

# %% [markdown]
# ## 1. Intuition: one path, and a control for every step
#
# Start from notebook 02's **teacher**, `TinyDetector(width=2)`, and **student**, `TinyDetector(width=1)` (a quarter of the parameters). Three steps follow, each from the last:
#
# 1. **distilled**: 6 more epochs with the teacher (notebook 06);
# 2. **pruned**: a quarter of every layer's channels removed, then 6 epochs (notebook 07);
# 3. **int8**: 2 epochs of 8-bit QAT, then a real int8 ONNX model with the scales QAT learned (notebook 05).
#
# More epochs alone can raise mAP, so a step counts only if it beats its **control**. `benchmarks/capstone.py` trained every new model with 3 seeds; this notebook loads its results.

# %% [markdown]
# > ### Myth vs fact — "pruning, quantization and distillation are three alternative tricks"
# > **Myth** (a common claim): *pick one to make the model smaller.*
# >
# > **Fact:** they change different things, so they combine: distillation what the weights learn, pruning the shapes, quantization the number format.

# %% [markdown]
# ## 2. The formula: three goals against the teacher
#
# $$\text{smaller}=\frac{\text{bytes}_\text{teacher}}{\text{bytes}_\text{model}}\ge 10,\qquad \text{faster}=\operatorname{median}_r\frac{t_{\text{teacher},r}}{t_{\text{model},r}}\ge 5,\qquad \text{lost}=100\,(\text{mAP}_\text{teacher}-\text{mAP}_\text{model})\le 3$$
#
# * bytes: the deployable ONNX file.
# * $t_{\cdot,r}$: a model's median end-to-end time at batch 16 in round $r$ (so the ratio is paired), on the fastest runtime found for that model.
# * mAP: on test, averaged over the seeds. Choices are made on val; results are read on test.

# %% [markdown]
# ## 3. The code: the last step, by hand
#
# The benchmark saved its seed-0 pruned model. Its layers are narrower, so `shrink_to_state_dict` first builds a `TinyDetector` with the saved channel counts. Then notebook 05's PTQ path (quicker than QAT; enough to time): fold BN, export to ONNX, calibrate, convert to int8. Both models are scored on test and timed end to end.

# %% tags=["nbval-ignore-output"]
state = load_checkpoint(RESULTS / "capstone_pruned.pt")["model"]
pruned = shrink_to_state_dict(TinyDetector(width=1.0), state)
pruned.load_state_dict(state)
pruned.eval()
test_loader = DataLoader(materialize(CocoDetection(Path("..") / "data" / "test" / "annotations.json"), progress=False),
                         batch_size=50, collate_fn=collate_detection)
calib = torch.stack([img for img, _ in materialize(SyntheticShapes(64, seed=123), progress=False)])
images = calib[:16]
work = Path(tempfile.mkdtemp(prefix="capstone_"))
atexit.register(shutil.rmtree, work, ignore_errors=True)  # removed when the kernel stops
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    export_onnx(DetectorNetwork(fuse_conv_bn(copy.deepcopy(pruned))).eval(), images[:2], work / "pruned_fp32.onnx")
quantize_onnx(work / "pruned_fp32.onnx", work / "pruned_int8.onnx", calib)
live = {name: OrtDetector(ort_session(work / f"{name}.onnx", threads=2), pruned) for name in ("pruned_fp32", "pruned_int8")}
scores = {name: evaluate(model, test_loader, torch.device("cpu"))["map"] for name, model in live.items()}
threads = torch.get_num_threads()
torch.set_num_threads(1)  # PyTorch's decode + NMS on one thread, ONNX Runtime's network on two: the pools do not fight
with torch.inference_mode():  # end to end, both models in interleaved rounds
    timed = measure_interleaved({name: (lambda m=model: m(images)) for name, model in live.items()}, rounds=3, runs=30)
torch.set_num_threads(threads)
print("live, on this CPU (int8 by PTQ, just now):")
for name in live:
    print(f"  {name:<12} {file_size(work / f'{name}.onnx') / 1e3:6.0f} kB   batch 16 end to end: {timed[name]['median_ms']:6.2f} ms   "
          f"test mAP {scores[name]:.3f}")
print(f"  int8 / fp32 speed-up (paired rounds): {paired_speedup(timed['pruned_fp32'], timed['pruned_int8'])['speedup']:.2f}x")
print("recorded by the benchmark (int8 by QAT, the CPU named above):")
print(f"  int8 / fp32 speed-up, end to end, batch 16: {faster('pruned', 'int8')['speedup']:.2f}x; "
      f"seed-0 test mAP: pruned fp32 {v['pruned']['test_map_seed0']:.3f}, int8 {v['int8']['test_map_seed0']:.3f}")


# %% [markdown]
# Compare ratios, not milliseconds (which depend on the load). Your PTQ int8 model should score within about a point of the pruned fp32 model, and its speed-up come near the recorded one on a similar CPU.

# %% [markdown]
# ## 4. Experiment: what each step bought, and what it cost
#
# Each row: a method minus its control, in mAP points, paired by seed (`seed_difference(..., paired=True)`). Read the test columns.

# %% tags=["nbval-check-output"]
def verdict(d):
    return "within noise" if d["within_noise"] else ("gain" if d["difference"] > 0 else "loss")


def step_row(label, a, b, d):
    p = d["test"]["paired"]
    print(f"{label:<36}{v[a]['total_epochs']:>4} vs {v[b]['total_epochs']:<4}{d['val']['paired']['difference'] * 100:>+7.1f}"
          f"{p['difference'] * 100:>+8.1f}  [{p['low'] * 100:+5.1f}, {p['high'] * 100:+5.1f}]  {verdict(p)}")


E, Q, keep = cap["config"]["epochs"], cap["config"]["qat_epochs"], cap["config"]["keep"]
print(f"{'method vs its control':<36}{'epochs (vs)':^12}{'Δ val':>7}{'Δ test':>8}  {'paired 95 % CI':<16}verdict (test)")
step_row(f"distillation ({E} epochs with KD)", "distilled", "distill_control", v["distilled"]["vs_control"])
step_row(f"pruning (keep {keep:.0%}, {E} epochs)", "pruned", "prune_control", v["pruned"]["vs_control"])
step_row(f"QAT-8 + int8 ({Q} epochs)", "int8", "qat_control", v["int8"]["vs_control"])
step_row(f"PTQ after {Q} float epochs minus QAT", "ptq_int8", "int8", v["ptq_int8"]["vs_int8"])
print("a conversion (no training, so no control needed):")
step_row("distilled -> int8 (PTQ), no pruning", "distilled_int8", "distilled", v["distilled_int8"]["vs_distilled"])

# %% [markdown]
# On test:
#
# * **Distillation: within noise.** It looked like a gain on val (+0.7).
# * **Pruning: a loss of 1.6 points**, on both splits.
# * **QAT-8 + int8: within noise** of two float epochs, and of float epochs plus PTQ. At 8 bits QAT is insurance, not a gain.
# * **PTQ of the distilled model**: within noise.

# %% [markdown]
# Each step's cost, as a factor from one model to the next:

# %% tags=["nbval-ignore-output"]
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
print(f"{'distilled -> int8 (PTQ only)':<30}{v['distilled']['onnx_bytes'] / v['distilled_int8']['onnx_bytes']:>8.2f}x"
      f"{faster('distilled', 'distilled_int8')['speedup']:>11.2f}x   distilled_int8 (PTQ)")

# %% [markdown]
# Size comes from two steps of about 4× each, the narrower architecture and int8; pruning adds 1.76×. Speed comes mostly from the architecture (3.3×), then int8 (1.7×) and pruning (1.3×). Distillation changes neither.

# %% [markdown]
# Now the goals (§2). Two **shortcuts** skip steps: `distilled_int8` (the distilled model converted by PTQ, no pruning) and `student_int8` (the student converted directly). Last column: seed 0's loss on test, with its paired bootstrap interval.

# %% tags=["nbval-check-output"]
finals = {"int8": cap["goals"], **cap["goals_other_paths"]}
print(f"{'final model':<16}{'≥ 10× smaller':>15}{'≤ 3 points lost (seed mean): val':>34}{'test':>12}"
      f"   {'seed 0 on test [paired 95 % CI]':<32}")
for name, g in finals.items():
    size, val, test = g["test"]["smaller_10x"], g["val"]["within_3_points"], g["test"]["within_3_points"]
    lo, hi = test["seed0_paired_ci_points"]
    seed0 = (v["teacher"]["test_map_seed0"] - v[name]["test_map_seed0"]) * 100
    print(f"{name:<16}{size['value']:>9.1f}× {'met' if size['met'] else 'NOT met':<6}{val['value']:>19.1f} pt {'met' if val['met'] else 'NOT met':<8}"
          f"{test['value']:>5.1f} pt {'met' if test['met'] else 'NOT met':<8}   {seed0:.1f} pt [{lo:4.1f}, {hi:4.1f}]")

# %% tags=["nbval-ignore-output"]
print(f"{'final model':<16}{'≥ 5× faster end to end, batch 16 (paired)':>43}{'batch 1':>10}")
for name, g in finals.items():
    speed = g["test"]["faster_5x_end_to_end_batch16"]
    print(f"{name:<16}{speed['value']:>35.1f}×  {'met' if speed['met'] else 'NOT met':<7}{speed['batch1']:>8.1f}×")
for b in (1, 16):
    net, e2e = ms(v["int8"], b, "network")["median_ms"], ms(v["int8"], b)["median_ms"]
    print(f"int8, batch {b:>2}: network {net:.2f} ms of {e2e:.2f} ms end to end ({net / e2e:.0%}); "
          f"teacher: network {ms(t, b, 'network')['median_ms']:.2f} of {ms(t, b)['median_ms']:.2f} ms")

# %% [markdown]
# All three are more than 10× smaller and 5× faster. Accuracy decides:
#
# * **On val, where the choice is made**, `int8` loses 3.9 points; `distilled_int8` loses 2.4 and meets every goal. Ship the shortcut.
# * **On test**, the shortcut meets the goals again (1.8 points). `int8` (3.1, "NOT met") and `student_int8` (3.0, "met") sit at the 3-point line; seed 0's interval straddles it for both, so the noise cannot tell which side they are on.
#
# Where did the 3-point budget go?

# %% tags=["nbval-check-output"]
spent = 0.0
print(f"{'step':<30}{'test mAP after':>15}{'points lost':>13}{'budget used so far':>23}")
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
ax.bar(0, 0, color="tab:red", label="a step that lost points"), ax.bar(0, 0, color="tab:green", label="a step that gained")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Three quarters of the budget is gone before compression starts: the width-1 architecture alone costs 2.2 points. Distillation's step wins back 0.7 (only 0.3 beats its control, within noise). Pruning costs 1.2 here (against the model it was cut from; 1.6 against its control, which trained 6 more epochs), int8 0.3. **Pruning is the step this budget cannot afford.** A wider student or a gentler cut might fit.

# %% [markdown]
# ## Exercises
#
# ### Exercise 1 — a speed-up from interleaved rounds
#
# Compute §2's paired speed-up, as `course_utils.deploy.paired_speedup` does. Write `my_speedup(baseline_ms, candidate_ms)`: both are lists of rounds, each round a list of per-run latencies in milliseconds (round $r$ of the baseline ran just before round $r$ of the candidate). Return the speed-up of the candidate over the baseline — greater than 1 when the candidate is faster. The check's timings include rare slow runs and, in one set, a slow round for both models.

# %% [markdown]
# *Sanity check:* `my_speedup([[12, 10, 11], [30, 31, 29], [9, 10, 10]], [[5, 5, 6], [12, 12, 13], [4, 4, 5]])`: the round medians are 11, 30, 10 and 5, 12, 4, the per-round ratios 2.2, 2.5 and 2.5, and the speed-up their median, 2.5. Solutions: `solutions/ex08_capstone.py`.

# %%
from course_utils.exercises import check_speedup


def my_speedup(baseline_ms, candidate_ms):
    # YOUR CODE HERE
    raise NotImplementedError


check_speedup(my_speedup)


# %% [markdown]
# ## Takeaways
#
# * Judge each step against a control trained as long. On test, distillation and QAT-8 were within noise; pruning cost 1.6 points.
# * The narrower architecture gave most of the speed; it and int8 most of the size.
# * Choose on val, report on test; judge goals end to end, against the fastest fp32 path.

# %% [markdown]
# ## Going deeper
#
# These sections are optional: nothing in the core path above depends on them. They give the path's details, every accuracy number and every latency, a closer reading of the step table, a threading pitfall, where the time goes, the noise-aware Pareto front, fast NMS, why rounds are paired, and what to try next.

# %% [markdown]
# ### The path in detail
#
# * The teacher trained for 24 epochs, the student for 48, both on the same 2,000 training images as every later step.
# * Pruning keeps 75 % of every layer's channels, with the counts rounded to multiples of 8.
# * The int8 model is deployed with the activation ranges QAT trained with: `export_qdq` writes the integer network with QAT's own scales (notebook 09 explains it). So the int8 model is the model QAT trained.
# * The controls: `distill_control` trains 6 epochs without the teacher; `prune_control` 6 epochs with the teacher, nothing pruned; `qat_control` 2 float epochs with the teacher. Without them a step's "gain" could simply be its extra training (notebook 07 showed how large that can be).

# %% [markdown]
# `benchmarks/capstone.py` measures every deployable model the same way: mAP on val and test, parameters, multiply-adds, the size of the ONNX file, and latency at batch 1 and 16, end to end and for the network alone. Every model and runtime (eager PyTorch, ONNX Runtime and OpenVINO; OpenVINO in bf16 too, on a CPU with bf16 instructions) is timed in the same interleaved rounds.
#
# Why this order? We expect it to matter: distil while the student still has capacity to absorb, prune with fine-tuning to recover, quantize last so QAT sees the final weights. This course measures only this one order.

# %% [markdown]
# ### Every accuracy number, with its noise
#
# Every row lists the variant's **total epochs** of training. Trained variants show the mean ± sample std (ddof = 1) over the seeds. The two shipped checkpoints are single models; for them the noise that matters is which 200 images happen to be in the split: the image-level bootstrap CI (notebook 02). The last column gives it for seed 0's model of every deployable variant.

# %% tags=["nbval-check-output"]
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
# Two things to read here. The two splits differ by up to 0.008 for the same model: they are two samples of 200 images each. And on val the three PTQ models (`ptq_int8`) score within 0.0002 of each other, although the float models they were converted from differ by 0.4 points; on test they spread as much as any variant (± 0.003). That val coincidence is a property of those 200 images, not of PTQ. A single split, and a spread read off it, can mislead.

# %% [markdown]
# ### The step table, read closely
#
# **Paired or Welch?** The Welch interval compares the two groups of seeds as if unrelated, ignoring the pairing. With 3 seeds the paired interval has only 2 degrees of freedom (a t-factor of 4.3). So it is not always the narrower one: it wins when the two runs of a seed move together, and is wider when they do not. Both, on test:

# %% tags=["nbval-check-output"]
for label, d in [("distillation", v["distilled"]["vs_control"]), ("pruning", v["pruned"]["vs_control"]),
                 ("QAT-8 + int8", v["int8"]["vs_control"]), ("PTQ vs QAT", v["ptq_int8"]["vs_int8"])]:
    p, w = d["test"]["paired"], d["test"]["welch"]
    print(f"{label:<14} paired [{p['low'] * 100:+5.1f}, {p['high'] * 100:+5.1f}]   Welch [{w['low'] * 100:+5.1f}, {w['high'] * 100:+5.1f}]")

# %% [markdown]
# **Distillation.** Val says +0.7 (paired interval +0.5 to +0.9); test says +0.3 (−0.2 to +0.9). Both splits are samples of 200 images. The seed intervals hold those images fixed: they measure the noise of training, not of which images were drawn, and the disagreement between the splits is that second noise. Note also what the control does: the student alone moves 0.863 → 0.866 on test from six more epochs, so crediting all of 0.863 → 0.870 to distillation would double it.

# %% [markdown]
# **Pruning.** The pruned model (0.858) is 1.2 points below the distilled model it was cut from. The same six epochs without cutting anything *add* 0.4 points, so the honest price of the cut is the larger number, 1.6 (−2.2 to −1.0). The 43 % fewer parameters and 41 % fewer multiply-adds cost about one and a half points on this detector.
#
# **QAT.** On val the paired interval just excludes 0 (−0.2, −0.36 to −0.01), a loss of two tenths of a point; on test it is within noise (−0.4, −0.9 to +0.1). Against the same two float epochs followed by post-training conversion it is −0.0 (−1.2 to +1.1).

# %% [markdown]
# ### Size and speed factors: the fine print
#
# Size factors multiply exactly. The speed factors are medians of ratios, so their product is close to, not equal to, the speed-up measured end to end (compare the factor table's lines *product of the steps* and *measured*). On its own, int8 makes a model 3.7× smaller and 1.7–2.3× faster end to end (the pruned and the distilled model).

# %% [markdown]
# ### Every model's size and latency
#
# Sizes are the deployable ONNX files. Latency is the median of the middle one of 3 interleaved rounds, with that round's 10th and 90th percentiles. "runtime" says which was fastest for that model, in its own precision: eager PyTorch, ONNX Runtime or OpenVINO (bf16 comes below). A speed-up is paired (Exercise 1): the median of the per-round ratios. The brackets give the lowest and highest of the 3 per-round ratios (a range, not a confidence interval).
#
# Timings on the course's 2-core x86 CPU wander by 10–30 % between runs. So compare the ratios of one run, as this table does; the absolute milliseconds in your run will differ.

# %% tags=["nbval-ignore-output"]
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
# ### Against a bf16 teacher, and the int8 models in OpenVINO
#
# The goals compare with the fastest **fp32** teacher. On a CPU with bf16 instructions the teacher can also run in bf16 (notebook 05), with no calibration. The benchmark timed that too, and scored every file again in OpenVINO on test (paired against the score above):

# %% tags=["nbval-check-output"]
tf = t["fastest_float_ms"]["end_to_end"]["batch16"]
print(f"teacher end to end, batch 16: fastest fp32 {ms(t, 16)['median_ms']:.1f} ms ({t['fastest_runtime']['end_to_end']['batch16']}), "
      f"fastest float {tf['median_ms']:.1f} ms ({t['fastest_float_runtime']['end_to_end']['batch16']})")
for name, g in finals.items():
    speed = g["test"]["faster_5x_end_to_end_batch16"]
    print(f"{name:<16} {speed['value']:.1f}x faster than the fp32 teacher, {speed['vs_fastest_float_teacher']:.1f}x than the fastest "
          f"float teacher: 5x {'met' if speed['vs_fastest_float_teacher'] >= 5 else 'NOT met'}")
for name in ("teacher", *finals):
    for runtime in ("openvino_bf16", "openvino"):
        d = v[name].get(f"{runtime}_test_minus_default_paired")
        if d and (runtime == "openvino_bf16" or name in finals):
            print(f"{name:<16} test mAP in {runtime.replace('_', ' '):<14} {100 * d['value']:+.2f} points [{100 * d['low']:+.2f}, "
                  f"{100 * d['high']:+.2f}] against {'fp32' if runtime.endswith('bf16') else 'ONNX Runtime'}")

# %% [markdown]
# In bf16 the teacher runs 1.8× faster, for −0.1 points (within noise). Against *that* teacher, `int8` is 4.0× faster and the shortcuts 3.9× and 3.5×: the 5× goal, met against fp32, is missed against the fastest float path. A speed goal means little without its baseline; where the CPU has bf16, the fair float baseline includes it.
#
# The int8 models' scores in §4 are ONNX Runtime's. OpenVINO runs the same files with its own kernels and rounds differently: `int8` scores 0.36 points lower there, `student_int8` 0.27 higher; all three intervals touch or contain 0.

# %% [markdown]
# ### A pitfall: two thread pools on one small CPU
#
# An int8 pipeline here is two runtimes in turn: ONNX Runtime for the network, PyTorch for decode + NMS. Each keeps its own pool of worker threads. On a 2-core CPU, with both pools at 2 threads, they fight: the threads of one runtime are still spinning, waiting for work, when the other starts.
#
# So the benchmark runs PyTorch's post-processing on one thread when it follows ONNX Runtime (post-processing is too small to gain from threads), as §3 does. It also timed the int8 pipeline with both pools at 2 threads, in the same interleaved rounds:

# %% tags=["nbval-ignore-output"]
bad, good = v["int8"]["pitfall_torch_threads_ms"]["end_to_end"]["batch16"], v["int8"]["ort_ms"]["end_to_end"]["batch16"]
print(f"int8 end to end, batch 16: PyTorch post-processing on 1 thread {good['median_ms']:.2f} ms [p10 {good['p10_ms']:.2f}, p90 {good['p90_ms']:.2f}]; "
      f"on {v['int8']['pitfall_torch_threads_ms']['torch_threads']} threads {bad['median_ms']:.2f} ms [p10 {bad['p10_ms']:.2f}, p90 {bad['p90_ms']:.2f}]")
print(f"paired, round by round: {paired_speedup(bad, good)['speedup']:.2f}x slower with both pools at 2 threads")

# %% [markdown]
# Same model, same runtimes, same machine: 1.36× slower at the median (paired over the rounds) and far more erratic. The 90th percentile is 32 ms instead of 6.3, as some calls wait for the other pool's threads to give up their cores. That is about what pruning a quarter of the channels buys (§4), lost to a thread setting.
#
# When one process runs two runtimes, give the small stage one thread (`torch.set_num_threads(1)`), or turn ONNX Runtime's spinning off (`course_utils.deploy.ort_session(..., spin=False)`), and measure which is faster on your machine.

# %% [markdown]
# ### Where the time goes: batch 1 and batch 16
#
# The last two lines of §4's speed table split the benchmark's end-to-end time. At batch 16 the int8 network is about half of it. At batch 1, what runs outside the network is more than two thirds: decode + NMS (the same float code for every model) and handing tensors to and from the runtime. So the speed-up end to end is smaller at batch 1 (4.1×) than at batch 16: Amdahl's law again (notebook 05).

# %% [markdown]
# ### The noise-aware Pareto front
#
# A variant is worth considering only if no other variant is both more accurate and cheaper: the **Pareto front**. "More accurate" and "cheaper" must be more than noise:
#
# * two seed-0 models scored on the same test images: the paired bootstrap interval of their difference (`paired_bootstrap_map`, in the benchmark's file);
# * two latencies: their p10–p90 bands;
# * two file sizes: exactly.
#
# Inside the noise the two are **tied**, and a model tied with another on both axes stays on the front beside it: the data cannot choose between them (`course_utils.metrics.pareto_front`, with `compare_intervals`). The two shortcuts are plotted beside the path (dashed).

# %% tags=["nbval-check-output"]
from course_utils.metrics import compare_intervals, pareto_front

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
from matplotlib.ticker import FuncFormatter, LogLocator

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
    ax.set_xscale("log")  # ticks at 1, 2, 5 × 10^k, written as plain numbers
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.margins(x=0.15, y=0.15)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel(label)
    ax.set_ylabel("test mAP@[.5:.95], seed 0's model")
    ax.grid(alpha=0.3, which="both")
axes[0].set_title("Accuracy vs latency (up and left is better)")
axes[1].set_title("Accuracy vs size")
fig.text(0.5, -0.02, "every point is seed 0's model; vertical bars: its 95 % bootstrap CI on the 200 test images "
         "(the images' noise, not the seeds')", ha="center", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# With noise counted as ties, three models are on both fronts: the teacher (the most accurate by far), `int8` (the smallest and fastest) and `distilled_int8`, more accurate than `int8` beyond the paired noise (+0.8, +0.0 to +1.4) but larger and slower.
#
# `student_int8` is off the front: `distilled_int8` is more accurate (+1.0, +0.3 to +1.6) at a latency inside the same p10–p90 band. `student` and `distilled` are tied on both axes; `distilled_int8` beats both (tied in accuracy, cheaper), and `int8` beats `pruned` the same way.

# %% [markdown]
# Latencies are compared by their p10–p90 bands, the spread *within* the median round. The drift *between* runs (10–30 %) is larger, so a latency "win" here holds for this run. Being on the front makes a model a candidate, not the answer: the goals choose among the candidates.

# %% [markdown]
# ### The bottleneck we fixed: post-processing
#
# NMS is a loop by nature: keep the best box, drop its overlaps, repeat. Notebook 01's teaching version (`course_utils.boxes.batched_nms`) runs that loop in Python, one tensor operation per candidate; torchvision's `batched_nms` runs it in C++. Same algorithm, same detections (the course's tests check it), very different cost. Here on the candidates of 16 validation images, timed in interleaved rounds:

# %% tags=["nbval-ignore-output"]
import torchvision

from course_utils.boxes import batched_nms, decode_boxes

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
# The teaching loop is what you should *read*; the library call is what you should *ship*, after checking that they agree. The loop's cost grows with the number of candidates. This converged detector is confident, so 16 images leave only a few hundred candidates, and the loop is several times slower than the library call yet still takes only milliseconds. Even so, that gap is a sizeable share of an int8 network that takes a few milliseconds at batch 16 in the benchmark.
#
# A less certain model (notebook 02's short run, or real photographs) leaves thousands of candidates. Then the Python loop alone can take longer than the whole int8 network, and no compression of the network can make such a pipeline 5× faster (Amdahl's law, notebook 05).

# %% [markdown]
# ### Why pair the rounds
#
# Exercise 1 divides within each round, then takes the median. Dividing each model's own median round instead leaves the rounds unpaired: a round that was slow for both models can then still move the answer. In simulations where whole rounds slow down by 5–30 %, the paired estimate lands about 15–30 % closer to the truth; `tests/test_deploy.py` checks it.

# %% [markdown]
# ### What to try next
#
# * **A gentler cut.** `python benchmarks/capstone.py --keep 0.875 --out /tmp/capstone_keep875` removes an eighth of the channels instead of a quarter (counts stay multiples of 8), and writes its files elsewhere (without `--out` it would replace the results this notebook reads). Does the pruned int8 model come back inside the 3-point budget, and how much speed is left?
# * **A wider student.** The budget was mostly spent by the architecture (§4). Train `TinyDetector(width=1.5)` with `benchmarks/train_tiny_detector.py --width 1.5`, then point `load_start` in `benchmarks/capstone.py` at it (the script starts from the width-1 checkpoint): more to prune, less lost to begin with.
# * **A longer fine-tune after pruning.** `--epochs` lengthens the distillation and pruning steps and their controls together; to lengthen only the fine-tune after the cut, give the pruning step its own epochs in `train_seed`.
# * **Per-group keep ratios.** The sensitivity scan (notebook 07) says `stage4` can lose many more channels than the stem and the head; a non-uniform cut may keep more accuracy for the same multiply-adds (`prune_detector` takes one ratio; `channel_masks` + `prune_channels` take any).
# * **4 bits.** Weights at 4 bits would halve the file again; notebook 05 shows what QAT-4 costs in accuracy, and int4 kernels are another matter.

# %% [markdown]
# ### Regenerate the results
#
# `python benchmarks/capstone.py` (about 45 minutes on 2 CPU cores: 3 seeds of training, then the measurements; `train --seed S --threads 1` and `measure` run the two stages separately; run `measure` on an otherwise idle machine).
