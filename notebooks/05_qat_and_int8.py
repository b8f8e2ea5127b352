# %% [markdown]
# # 05 · Quantization-aware training and a real int8 detector
#
# Notebook 04 simulated quantization. This notebook takes the whole honest path for the course detector: **post-training quantization** (PTQ) at 8 and 4 bits, **quantization-aware training** (QAT), measured against a float model given exactly the same extra training, and a **real int8 model** — integer weights in a file, integer kernels at run time — whose size, speed and accuracy we measure against fp32.
#
# **You will**
# 1. fold batch norm into convolutions, and check it changes nothing;
# 2. run PTQ at 8 and 4 bits, and pull its two levers: calibration-set size and observer;
# 3. see how a model is prepared for QAT, train it briefly, and read a 3-seed PTQ-vs-QAT sweep with an equal-budget float control per QAT recipe;
# 4. find the layers that hurt most when quantized, and keep them at higher precision;
# 5. export to ONNX, convert to int8 with ONNX Runtime, and measure size, mAP and latency — and where the time goes.
#
# *Time: about 60 minutes. Prerequisites: notebook 04. Terms: [glossary](../docs/glossary.md) (English–中文).*

# %%
import json
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch.utils.data import DataLoader

from course_utils import CocoDetection, SyntheticShapes, TinyDetector, collate_detection, evaluate, fit, get_device, load_checkpoint, materialize, paired_bootstrap_map, predict, seed_difference, seed_everything
from course_utils.deploy import DetectorNetwork, OrtDetector, export_onnx, file_size, measure_latency, ort_session, quantize_onnx
from course_utils.quant import (
    QATSchedule,
    QuantConvBn2d,
    calibrate,
    fold_bn,
    fuse_conv_bn,
    layer_sensitivity,
    post_training_quantize,
    prepare_qat,
    to_float_folded,
)

seed_everything(0)
RESULTS = Path("..") / "benchmarks" / "results"
device = get_device()  # the GPU when there is one: the live QAT run (§4) trains there
cpu = torch.device("cpu")  # PTQ, int8 and every checked number: the same digits on any machine

# %% [markdown]
# The course's converged fp32 detector (notebook 02's recipe run for 48 epochs, `tiny_detector_converged.pt`), the validation split we score on, and a calibration set of rendered training-style scenes (never the images we score on).
#

# %%
# NBVAL_IGNORE_OUTPUT
fp32 = TinyDetector()
load_checkpoint(RESULTS / "tiny_detector_converged.pt", fp32)
fp32 = fp32.eval()  # on the CPU (a GPU's TF32 convolutions would change the last digits)
val_loader = DataLoader(materialize(CocoDetection(Path("..") / "data" / "val" / "annotations.json"), progress=False),
                        batch_size=50, collate_fn=collate_detection)
calib_images = torch.stack([img for img, _ in materialize(SyntheticShapes(128, seed=123), progress=False)])


def forward_raw(model, images):
    return model.forward_raw(images)


def val_map(model) -> float:
    return evaluate(model, val_loader, cpu)["map"]


fp32_map = val_map(fp32)
print(f"fp32 val mAP@[.5:.95] = {fp32_map:.3f}")

# %% [markdown]
# ## 1. Myths about QAT
#
# > ### ❌ Myth vs ✅ fact — "quantize the weights, then fine-tune them with FGSM"
# > **Myth** (a common claim, for example in widely shared blog posts on QAT for detection): *round the weights to integers, then "fine-tune" with* `w ← w_q + ε · sign(∇L)` *— FGSM, I-FGSM — and, in code, overwrite* `model.trainable_variables = [round(v / Q) ...]` *before applying ordinary float gradients.*
# >
# > **Fact:** FGSM is an adversarial **attack** on *inputs*: it steps along the sign of the gradient to *raise* the loss. A sign step on weights throws away every gradient's magnitude, and `+ε·sign(∇L)` climbs the loss. Rounding the weights and then applying float updates undoes the rounding at the first step: the trained model is float again, and was never trained to tolerate quantization. **QAT keeps float "shadow" weights, fake-quantizes them (and the activations) in every forward pass, and lets gradients reach the float weights through the straight-through estimator**; the integer model is made once, at the end.
#
# > ### ❌ Myth vs ✅ fact — "integer quantization is `w % Q`"
# > **Fact:** see notebook 04 §1. Quantization rounds to a grid `S·(q − Z)` and clamps to `b` bits; `%` is a remainder.
#
# ## 2. Batch-norm folding
#
# At inference batch norm is an affine map per channel, so it can be merged into the convolution before it. With BN statistics μ, σ² and affine parameters γ, β, and `f = γ / √(σ² + ε)` per output channel:
#
# $$W' = W \cdot f, \qquad b' = (b - \mu)\, f + \beta .$$
#
# An int8 model has no batch-norm layers: it quantizes `W'`, not `W`. (That is why per-channel scales matter so much — notebook 04 §6.) `course_utils.quant.fold_bn` is tested equal to PyTorch's `torch.nn.utils.fusion.fuse_conv_bn_eval`; on the whole detector:

# %%
# NBVAL_IGNORE_OUTPUT -- the last digits can differ between CPUs; the assertion checks the lesson
folded = fuse_conv_bn(fp32)
n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in fp32.modules())
with torch.no_grad():
    a, b = fp32.forward_raw(calib_images[:8]), folded.forward_raw(calib_images[:8])
change = float((a["logits"] - b["logits"]).abs().max())
print(f"folded {n_bn} batch norms; largest change in any logit: {change:.1e} (float rounding: below 1e-4)")
conv, bn = fp32.stage3[0][0], fp32.stage3[0][1]
ref = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
print("fold_bn equals torch's fuse_conv_bn_eval:", torch.allclose(fold_bn(conv, bn).weight, ref.weight, atol=1e-6))
assert change < 1e-4

# %% [markdown]
# ## 3. Post-training quantization (PTQ), and its levers
#
# PTQ needs no training: fold BN, pick weight ranges from the weights, run a few **calibration** images to pick activation ranges, done. `post_training_quantize` does exactly that (weights: signed symmetric per-channel; activations: unsigned asymmetric per-tensor; every conv quantized). Three settings first — 8-bit, 4-bit, and 4-bit weights with float activations:

# %%
# NBVAL_IGNORE_OUTPUT -- the last digits can differ between CPUs; the assertion checks the lesson
calib = list(calib_images[:64].split(32))
ptq = {}
for name, settings in {"W8A8": dict(weight_bits=8, act_bits=8), "W4A4": dict(weight_bits=4, act_bits=4),
                       "W4 (float activations)": dict(weight_bits=4, act_bits=None)}.items():
    ptq[name] = val_map(post_training_quantize(fp32, calib, forward_raw, act_observer="percentile", **settings))
    print(f"PTQ {name:<22}: val mAP {ptq[name]:.3f}  ({ptq[name] - fp32_map:+.3f} vs fp32)")
assert fp32_map - ptq["W8A8"] < 0.01 and fp32_map - ptq["W4A4"] > 0.1  # 8 bits: almost free; 4 bits: expensive

# %% [markdown]
# 8 bits costs almost nothing (about 0.2 points); 4 bits costs about 18 points, and about two thirds of that loss (about 12 points) already comes from the weights alone. The two levers PTQ has are **how many calibration images** it sees and **which observer** turns them into a range (notebook 04 §7):

# %%
# NBVAL_IGNORE_OUTPUT -- the last digits can differ between CPUs; the assertion checks the lesson
print(f"{'W4A4':<10}|" + "".join(f"{n:>8} imgs" for n in (8, 32, 128)))
by_size = {}
for observer in ("minmax", "percentile"):
    by_size[observer] = []
    for n in (8, 32, 128):
        q = post_training_quantize(fp32, list(calib_images[:n].split(32)), forward_raw, weight_bits=4, act_bits=4, act_observer=observer)
        by_size[observer].append(val_map(q))
    print(f"{observer:<10}|" + "".join(f"{v:>13.3f}" for v in by_size[observer]))
assert by_size["minmax"][0] > by_size["minmax"][-1] + 0.02  # min-max: more images, a wider range, a coarser grid
assert max(by_size["percentile"]) - min(by_size["percentile"]) < 0.02  # percentile: stays put

# %% [markdown]
# Min-max *gets worse* with more calibration images: every new image can only widen the range (one outlier is enough), so the grid gets coarser. The percentile observer averages per-batch percentiles and stays put. More data does not help an observer that keeps the extremes.
#
# ## 4. Quantization-aware training (QAT)
#
# QAT fine-tunes the network *with* fake quantization in the forward pass, so the weights learn to sit where the grid can represent them. `prepare_qat` rewrites the model:
#
# * each Conv→BN pair becomes a `QuantConvBn2d`: it folds BN into the weight using BN's *running* variance, fake-quantizes the folded weight per channel, convolves, and — while BN still learns — divides the fold back out and lets BN normalise with *batch* statistics. This is the scheme of Krishnamoorthi's 2018 quantization whitepaper and PyTorch's `ConvBn2d`; Jacob et al. 2018 (§3.2) fold with the batch statistics during training instead. Either way the weights are trained as they will be quantized: folded;
# * every conv's input gets a fake quantizer with a moving-average observer;
# * gradients reach the float weights through the STE (notebook 04 §9).
#
# Late in training `QATSchedule` **freezes BN statistics** (from then on training computes exactly the folded network that will be deployed) and **freezes the activation ranges**. The first block of the prepared detector:

# %%
qat = prepare_qat(fp32, weight_bits=4, act_bits=4)
print(qat.stem[0])
print("Conv-BN pairs turned into QuantConvBn2d:", sum(isinstance(m, QuantConvBn2d) for m in qat.modules()))

# %% [markdown]
# `prepare_qat` works on any network built from Conv/BN/Linear/ReLU blocks — the course detector, the backbone of the torchvision Faster R-CNN from notebook 02, a ResNet (tests: `tests/test_quant.py::test_prepare_qat_on_torchvision_backbones` runs each forward and backward).
#
# Now a short live QAT-4 run: calibrate, then two short epochs (500 training images each) through the course's usual `fit` loop, with `QATSchedule` as a hook that freezes BN statistics and activation ranges after the first. (The full recipe — QAT-4: 6 epochs on 2,000 images; QAT-8: 2 epochs; 3 seeds — is in `benchmarks/qat_sweep.py`; its results follow.) QAT calibrates its activation ranges with a moving-average min-max observer, so its starting point is a little below the percentile PTQ above.

# %%
# NBVAL_IGNORE_OUTPUT
train_set = materialize(SyntheticShapes(500, seed=0), progress=False)  # some of the fp32 model's training scenes
train_loader = DataLoader(train_set, batch_size=32, shuffle=True, collate_fn=collate_detection, generator=torch.Generator().manual_seed(0))
qat = calibrate(prepare_qat(fp32, weight_bits=4, act_bits=4), calib, forward_raw)
before = val_map(qat)
optimizer = torch.optim.AdamW(qat.parameters(), lr=1e-3, weight_decay=1e-4)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=2 * len(train_loader))
fit(qat, train_loader, optimizer, epochs=2, device=device, scheduler=scheduler,
    hooks=[QATSchedule(freeze_bn_epoch=1, freeze_observer_epoch=1)])  # epoch 2 runs with BN and ranges frozen
qat = qat.cpu()
after = val_map(qat)
print(f"W4A4 before QAT (calibrated only): {before:.3f}   after 2 short epochs of QAT: {after:.3f}   (fp32 {fp32_map:.3f})")

# %% [markdown]
# Two short epochs win back a few of the points this calibration lost (in the run shown, about 0.65 → 0.69 of fp32's 0.865; the numbers differ a little between CPUs). Is that QAT, or just more training? The sweep, run by `python benchmarks/qat_sweep.py --variants` (about 30 minutes on 2 cores), answers with **an equal-budget control per recipe**: for every QAT run, the same converged fp32 model fine-tuned in float with exactly the same epochs, learning rate, schedule and data order, no quantizer (`fp32 + QAT-8 recipe` is 2 epochs at 2e-4, `fp32 + QAT-4 recipe` 6 epochs at 1e-3). Every setting runs 3 seeds (seed = calibration sample and data order); `epochs` counts all training, the start's 48 included. The recipes were fixed on val; the comparisons below are read on the **test** split (notebook 02's rule). Two rows of one comparison share each seed's calibration images and data order, so they are compared seed by seed — the 95 % interval of the per-seed differences (`seed_difference(..., paired=True)`) — and a difference is called a gain or a loss only when that interval excludes 0.
#

# %%
# NBVAL_CHECK_OUTPUT
sweep = json.loads((RESULTS / "qat_sweep.json").read_text())
m, t, epochs, control = sweep["val_map"], sweep["test_map"], sweep["epochs"], sweep["control"]
rows = [("fp32, the converged start", "fp32"), ("PTQ-8", "ptq8"), ("fp32 + QAT-8 recipe, float", "fp32_ft8"),
        ("QAT-8", "qat8"), ("PTQ-4", "ptq4"), ("PTQ-4, weights only", "ptq4_w"),
        ("fp32 + QAT-4 recipe, float", "fp32_ft4"), ("QAT-4", "qat4")]
spread = lambda s: f"{s['mean']:.3f} ± {s['std']:.3f}" if s["std"] else f"{s['mean']:.3f} (same)   "  # noqa: E731
print(f"mAP@[.5:.95], mean ± sample std over {t['qat4']['n']} seeds ('same': the same every seed)")
print(f"{'model':<28}{'epochs':>7}   {'val':<16}{'test (report)':<16}")
for label, key in rows:
    print(f"{label:<28}{epochs[key]:>7}   {spread(m[key]):<16}{spread(t[key]):<16}")
ci = sweep["fp32_test_bootstrap_ci"]
print(f"(fp32 on other images like these 200 test images: 95% bootstrap CI [{ci['low']:.3f}, {ci['high']:.3f}])\n")
comparisons = [("qat8", control["qat8"], "QAT-8 vs its float control"), ("qat8", "ptq8", "QAT-8 vs PTQ-8"),
               ("qat4", control["qat4"], "QAT-4 vs its float control"), ("qat4", "ptq4", "QAT-4 vs PTQ-4"),
               ("fp32_ft4", "fp32", "the QAT-4 recipe in float vs the start")]
print("on test, paired by seed (both sides of a row share each seed's calibration images and data order):")
for a, b, label in comparisons:
    d = seed_difference(t[a]["runs"], t[b]["runs"], paired=True)
    verdict = "within noise" if d["within_noise"] else ("a gain" if d["difference"] > 0 else "a loss")
    print(f"{label:<40}{100 * d['difference']:+6.1f} points, 95% CI [{100 * d['low']:+5.1f}, {100 * d['high']:+5.1f}] -> {verdict}")
gap = t["fp32_ft4"]["mean"] - t["ptq4"]["mean"]
print(f"PTQ-4 is {100 * gap:.1f} points below the QAT-4 recipe's float control on test; "
      f"QAT-4 wins back {100 * (t['qat4']['mean'] - t['ptq4']['mean']) / gap:.0f}% of that gap.")


# %%
labels = [label for label, _ in rows]
means = [t[key]["mean"] for _, key in rows]
stds = [t[key]["std"] or 0.0 for _, key in rows]
colors = ["tab:gray", "tab:orange", "tab:gray", "tab:blue", "tab:orange", "tab:orange", "tab:gray", "tab:blue"]
fig, ax = plt.subplots(figsize=(9, 3.4))
bars = ax.bar(labels, means, yerr=stds, capsize=4, color=colors)
ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
ax.set_ylim(0.5, 0.92)
ax.set_ylabel("test mAP@[.5:.95]")
ax.set_title("PTQ (orange) vs QAT (blue) vs float with the same training (grey), 3 seeds, test")
plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
ax.grid(axis="y", alpha=0.3)
plt.show()


# %% [markdown]
# What the sweep says:
#
# * **8 bits: nothing to recover.** On test PTQ-8 scores what fp32 scores (0.863), and QAT-8 ends level with its float control and with PTQ-8 (+0.1 and +0.2 points, both within noise). On this converged detector, 8-bit QAT buys nothing PTQ does not.
# * **4 bits: QAT recovers little.** PTQ-4 is 16.0 points below the QAT-4 recipe's float control on test; the 6-epoch QAT-4 recipe gains 2.2 points over PTQ-4 (a gain: its interval, +1.5 to +2.8, excludes 0), which wins back 14 % of that gap (roughly 9–18 % by the interval), and it stays 13.8 points below its control. The extra training barely moves the float model — −0.3 points on val, +0.1 on test — so the few points QAT-4 gains are QAT's own.
#
# **Learning rate and BN freezing.** QAT starts from a trained model, so it fine-tunes with a smaller learning rate than training from scratch (the fp32 recipe peaks at 4e-3). How much smaller depends on how far the weights must move: 8 bits barely perturbs the model (QAT-8 uses 2e-4, 20× smaller), 4 bits perturbs it a lot (QAT-4 uses 1e-3). The sweep's variants of QAT-4, each beside its own float control:
#

# %%
# NBVAL_CHECK_OUTPUT
for split, s in (("val (choose)", m), ("test (report)", t)):
    print(f"{'QAT-4 variant (6 epochs each), ' + split:<46}{'QAT':>14}{'float, same recipe':>22}   QAT - float   vs the default QAT-4 [paired 95% CI]")
    for label, key in [("lr 1e-3, BN frozen for the last epoch", "qat4"), ("lr × 0.1", "qat4_lr_x0.1"),
                       ("lr × 3", "qat4_lr_x3"), ("BN statistics never frozen", "qat4_no_bn_freeze")]:
        if key in s:
            ref = s[control[key]]
            vs = "" if key == "qat4" else seed_difference(s[key]["runs"], s["qat4"]["runs"], paired=True)
            vs = vs and f"{100 * vs['difference']:+5.1f} [{100 * vs['low']:+4.1f}, {100 * vs['high']:+4.1f}]"
            print(f"{label:<46}{s[key]['mean']:>8.3f} ± {s[key]['std']:.3f}{ref['mean']:>14.3f} ± {ref['std']:.3f}"
                  f"   {100 * (s[key]['mean'] - ref['mean']):+8.1f}     {vs}")


# %% [markdown]
# The learning rate matters most. On val, where a variant would be chosen, three times *larger* than our default — close to the from-scratch rate — looks best (+2.7 points), and ten times smaller worst (−1.8), but with 3 seeds both differences are within noise (the paired intervals, with 2 degrees of freedom, are wide). On test, the split no choice has seen, lr × 3 is a gain of 3.0 points (+0.8 to +5.2; about a third of the gap won back instead of 14 %) and lr × 0.1 within noise (−0.9); freezing BN statistics for the last epoch makes no measurable difference (+0.7, within noise), and the float controls barely move (0.864–0.872). We picked the default before running the variants; had we picked lr × 3 by its val numbers, test is what tells us the choice holds up — and it does. Even the best variant leaves W4A4 about 12 points below float: the next section shows where those points go.
#
# ## 5. Which layers hurt most?
#
# Quantize **one layer at a time** to W4A4 (everything else float) and score the detector each time. Fourteen PTQ runs, a second or two each:
#

# %%
# NBVAL_IGNORE_OUTPUT -- the last digits can differ between CPUs; the assertion checks the lesson
sensitivity = layer_sensitivity(fp32, val_map, calib, forward_raw, weight_bits=4, act_bits=4, act_observer="percentile")
drops = {name: fp32_map - score for name, score in sensitivity.items()}
ranked = sorted(drops, key=lambda n: -drops[n])
for name in ranked[:5]:
    print(f"{name:>11}: -{100 * drops[name]:.1f} mAP points when it alone is 4-bit")
assert ranked[:2] == ["box_out", "tower.1.0"] and drops[ranked[2]] < 0.02  # two layers dominate; the rest cost under 2 points

# %%
fig, ax = plt.subplots(figsize=(9, 3))
ax.bar(list(drops), [100 * d for d in drops.values()], color="tab:red")
ax.set_ylabel("mAP points lost")
ax.set_title("Sensitivity: only this layer quantized to W4A4")
plt.setp(ax.get_xticklabels(), rotation=35, ha="right")
ax.grid(axis="y", alpha=0.3)
plt.show()

# %% [markdown]
# One layer dominates: **`box_out`**, the 1×1 conv that turns features into box offsets, costs about 14 points on its own, and `tower.1.0`, the last layer of the tower shared by both heads, about 5 — every other layer costs under 1. (The drops do not add up: together they exceed the about 18 points that quantizing every layer costs with this calibration set (§3; the 3-seed sweep of §4 averages 17.4), because errors interact. The ranks after the top two — 0.6 to 0.7 points — are inside PTQ's calibration noise, so which layer comes third is arbitrary, and may differ on your machine.) Box offsets are regressed numbers: an error of a fraction of a pixel changes the IoU, and mAP@[.5:.95] scores boxes at IoU thresholds up to 0.95, so the last regression layer and its input need fine steps — a 4-bit input to `box_out` has only 16 levels, a limit QAT can only partly train around. (The classification output `cls_out` only has to rank scores, and barely cares.) Layers are not equal, and the cure is cheap — keep the few sensitive layers at higher precision (float here; 8-bit in a deployment). The first and last layers hold under 0.3 % of the parameters. (The "3 most sensitive" choice below was picked *and* scored on the validation split, so its score is optimistic; the first-and-last rule needs no data.)
#

# %%
# NBVAL_IGNORE_OUTPUT -- the last digits can differ between CPUs; the assertion checks the lesson
kept_float = {}
for label, skip in [("all layers 4-bit", []), ("first + last layers float", ["stem.0", "cls_out", "box_out"]),
                    ("3 most sensitive layers float", ranked[:3])]:
    q = post_training_quantize(fp32, calib, forward_raw, weight_bits=4, act_bits=4, act_observer="percentile", skip=skip)
    kept_float[label] = val_map(q)
    print(f"PTQ W4A4, {label:<30}: val mAP {kept_float[label]:.3f}   float layers: {skip}")
assert kept_float["all layers 4-bit"] + 0.05 < kept_float["first + last layers float"] < kept_float["3 most sensitive layers float"]

# %% [markdown]
# Keeping the first and last layers in float lifts W4A4 PTQ from about 0.69 to about 0.80 without any training — far more than the 6 epochs of QAT-4 won (0.720 with every layer at 4 bits); the three most sensitive layers in float give about 0.84 (optimistic, as said). On this detector, *where* the bits go matters more than QAT. Combining the two — QAT-4 with the sensitive layers kept at higher precision — is the natural next experiment.
#
# ## 6. A real int8 model
#
# Fake quantization stores float weights and computes in float: it is a *simulation*. A deployed int8 model stores int8 weights and runs integer kernels. The course uses **ONNX Runtime**, chosen by measurement (section 7):
#
# 1. take the QAT-8 model from the sweep, BN folded, as plain float layers (`to_float_folded`);
# 2. export the network — backbone, neck, head — to ONNX (`export_onnx`, PyTorch's `torch.export`-based exporter). Post-processing (decode + NMS) stays in PyTorch;
# 3. quantize it statically (`quantize_onnx` → ONNX Runtime's `quantize_static`, QDQ format): int8 weights per output channel, uint8 activations per tensor, calibrated on 64 images;
# 4. run it with `OrtDetector`, which `evaluate` scores like any other model.

# %%
# NBVAL_IGNORE_OUTPUT
qat8 = prepare_qat(TinyDetector(), weight_bits=8, act_bits=8)
load_checkpoint(RESULTS / "qat8.pt", qat8)
qat8 = qat8.eval()
work = Path(tempfile.mkdtemp(prefix="int8_"))
float_net = DetectorNetwork(to_float_folded(qat8).cpu())  # the QAT-8 weights, BN folded, as plain float layers
export_onnx(float_net, calib_images[:2].cpu(), work / "qat8_float.onnx")
quantize_onnx(work / "qat8_float.onnx", work / "qat8_int8.onnx", calib_images[:64].cpu())
# OrtDetector runs the network in ONNX Runtime; the TinyDetector given only supplies anchors and post-processing
int8_detector = OrtDetector(ort_session(work / "qat8_int8.onnx", threads=2), TinyDetector())
float_detector = OrtDetector(ort_session(work / "qat8_float.onnx", threads=2), TinyDetector())
torch.save(fp32.state_dict(), work / "fp32_state_dict.pt")
print("written:", sorted(p.name for p in work.iterdir()))

# %%
# NBVAL_CHECK_OUTPUT
sizes = {name: file_size(work / name) for name in ("fp32_state_dict.pt", "qat8_float.onnx", "qat8_int8.onnx")}
for name, size in sizes.items():
    print(f"{name:<20} {size / 1024:8.0f} KiB")
print(f"int8 ONNX is {sizes['qat8_float.onnx'] / sizes['qat8_int8.onnx']:.2f}x smaller than the same network in float ONNX "
      f"({sizes['fp32_state_dict.pt'] / sizes['qat8_int8.onnx']:.2f}x smaller than the fp32 PyTorch checkpoint)")

# %%
# NBVAL_IGNORE_OUTPUT -- ONNX Runtime's int8 kernels differ between CPUs (VNNI, AMX) in the last digits; the assertion checks the lesson
preds_fake, targets = predict(qat8, val_loader, cpu)
preds_int8, _ = predict(int8_detector, val_loader, cpu)
diff = paired_bootstrap_map(preds_int8, preds_fake, targets)  # both scored on the same resampled images
print(f"val mAP: QAT-8 fake-quant simulation {val_map(qat8):.3f}, real int8 in ONNX Runtime "
      f"{evaluate(int8_detector, val_loader, cpu)['map']:.3f}")
print(f"int8 minus simulation: {100 * diff['value']:+.2f} points, 95% paired bootstrap CI "
      f"[{100 * diff['low']:+.2f}, {100 * diff['high']:+.2f}] -> {'within noise' if diff['within_noise'] else 'a real difference'}")
assert abs(diff["value"]) < 0.01 and diff["within_noise"]  # the simulation was honest to within a point

# %% [markdown]
# The file is 3.7× smaller — not 4×, because scales, zero points, int32 biases and the graph itself take space — and the real int8 model scores what the simulation promised: about 0.3 points lower, with a paired bootstrap interval (both models scored on the same resampled images) of about [−0.7, +0.2] points — within noise, and no worse than about 0.7 points at the interval's low end. That is the evidence, at 8 bits, that the fake-quant simulation is close to honest; two details could have broken it and did not: ONNX Runtime recalibrated the activation ranges itself (min-max on the calibration images, where the QAT model kept the moving averages it trained with), and its QDQ graph also quantizes the tensors around the FPN's upsample-and-add, which our simulation leaves in float. Notebook 09 opens that int8 model up: it writes the integer arithmetic of every layer by hand, and deploys the QAT model with the ranges it *learned* instead of re-calibrated ones.
#
# A quick timing, right here (2 threads; medians of 50 runs, batch 16). This process has been running PyTorch, whose idle worker threads tax ONNX Runtime a little, and timings wander from run to run (by 10–30 % in the course's measurements on a 2-core x86 CPU); the careful measurement is the benchmark in section 7.

# %%
# NBVAL_IGNORE_OUTPUT
batch = calib_images[:16].cpu()
for name, detector in (("float ONNX Runtime", float_detector), ("int8 ONNX Runtime", int8_detector)):
    stats = measure_latency(lambda: detector.network(batch), warmup=5, runs=50)
    print(f"{name}: {stats['median_ms']:.1f} ms per batch of 16")

# %% [markdown]
# ## 7. Is it faster? The benchmark
#
# **The target.** The course's floor for the network (backbone + head): int8 at least **2×** faster than the *fastest* fp32 path at batch 16 on a CPU with VNNI, and not slower at batch 1. (The compute-bound ceiling is 4×: a quarter of the bytes, four times the multiply-adds per instruction.)
#
# `python benchmarks/int8_latency.py` (about 10 minutes) times the network at batch 1 and 16 with 2 threads in every runtime we have, against the fastest fp32 path, not a slow one: eager PyTorch, `torch.compile` (PyTorch's compiler; its *inductor* backend generates fused kernels, and *freezing* folds the weights in as constants), and ONNX Runtime fp32. Every fp32 path runs the trained fp32 detector with BN folded. It also converts the QAT-8 model with torchao's **pt2e** flow (export the graph with `torch.export`, insert quantizers chosen by `X86InductorQuantizer`, calibrate, convert, then `torch.compile` with freezing), the other maintained int8 path, to check the choice. ONNX Runtime's times include handing the batch over as a NumPy array. Post-processing is timed separately.
#
# **How it times.** Each runtime runs in a fresh process of its own — ONNX Runtime's and PyTorch's worker threads keep spinning after a call and would slow whatever ran next in the same process — after a warm-up, for at least 2 seconds per batch size. And it does so in **3 interleaved rounds**: round 1 times every runtime once, then round 2, then round 3, so a slow moment of the machine hits all runtimes alike instead of one. Each runtime reports its median round (the median over its calls, with the 10th and 90th percentiles). A speed-up is **paired**: the ratio of two timings from the same round, taken within minutes of each other, then the median of those per-round ratios (notebook 08 explains why).

# %%
# NBVAL_CHECK_OUTPUT
bench = json.loads((RESULTS / "int8_latency.json").read_text())
lat = bench["latency_ms"]
names = {"fp32_eager": "fp32 eager PyTorch", "fp32_compile": "fp32 torch.compile", "fp32_ort": "fp32 ONNX Runtime",
         "int8_torchao": "int8 torchao (inductor)", "int8_ort": "int8 ONNX Runtime"}
print(f"{bench['threads']} threads, {bench['rounds']} interleaved rounds; median ms [p10-p90] of the median round")
print(f"{'runtime':<26}{'batch 1':>20}{'batch 16':>22}   test mAP")
scored = {"fp32_eager": "fp32", "fp32_ort": "fp32_ort", "int8_torchao": "int8_torchao", "int8_ort": "int8_ort"}
spread = lambda m: f"{m['median_ms']:6.2f} [{m['p10_ms']:.2f}-{m['p90_ms']:.2f}]"  # noqa: E731
for key, label in names.items():
    if key in lat:
        score = f"{bench['test_map'][scored[key]]:.3f}" if key in scored else "(same weights as eager)"
        print(f"{label:<26}{spread(lat[key]['batch1']):>20}{spread(lat[key]['batch16']):>22}   {score}")
print(f"{'post-processing (float)':<26}{spread(lat['postprocess']['batch1']):>20}{spread(lat['postprocess']['batch16']):>22}")
for b in ("batch1", "batch16"):
    s = bench["summary"][b]
    rounds = ", ".join(f"{r:.2f}" for r in s["speedup_int8_ort_vs_fastest_fp32_per_round"])
    print(f"{b}: int8 ONNX Runtime is {s['speedup_int8_ort_vs_fastest_fp32']:.2f}x faster than the fastest fp32 "
          f"({names[s['fastest_fp32']]}; the median of the per-round ratios {rounds})")
print("CPU int8 features:", {k: v for k, v in bench["cpu_int8_features"].items() if v})
if "scores_only_update" in bench:
    print("note:", bench["scores_only_update"])

# %%
from matplotlib.patches import Patch

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
for ax, b in zip(axes, ("batch1", "batch16")):
    keys = [k for k in names if k in lat]
    network = [lat[k][b]["median_ms"] for k in keys]
    post = lat["postprocess"][b]["median_ms"]
    colors = ["tab:gray" if k.startswith("fp32") else "tab:blue" for k in keys]
    ax.barh([names[k] for k in keys], network, color=colors)
    ax.barh([names[k] for k in keys], [post] * len(keys), left=network, color="tab:orange", alpha=0.7, label="post-processing (float)")
    ax.set_xlabel("ms per batch (median)")
    ax.set_title(f"{b.replace('batch', 'batch ')}, 2 threads")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
axes[0].legend(handles=[Patch(color="tab:gray", label="fp32 network"), Patch(color="tab:blue", label="int8 network"),
                        Patch(color="tab:orange", alpha=0.7, label="post-processing (float)")], fontsize=8, loc="lower right")
fig.tight_layout()
plt.show()

# %% [markdown]
# What the measurements say:
#
# * **The network is 2.6× faster in int8 at batch 16** against the fastest fp32 path (here `torch.compile`; fp32 ONNX Runtime is 7 % slower), and 1.9× at batch 1 (against fp32 ONNX Runtime). The floor — 2× at batch 16, not slower at batch 1 — is met. Read the per-round ratios, though: 2.0×, 3.1× and 2.6× at batch 16, 1.9×, 1.5× and 2.5× at batch 1. Timings of runtimes measured minutes apart on the same machine still disagree by that much, which is why the course reports the median of the per-round ratios and never a single run. Why not 4× (int8 moves a quarter of the bytes, and a VNNI instruction does four times the multiply-adds of an fp32 one)? Every layer's int32 result must be *requantized* — rescaled and rounded back to uint8 for the next layer — tensors are reordered into the layouts the integer kernels want, and these layers are small (16–128 channels, 16×16 maps in the head), so fixed per-layer costs weigh heavily: at batch 1 the whole int8 network takes about half a millisecond (0.46 ms).
# * **Time the post-processing too.** Decode + NMS runs in float PyTorch after the network. Written as a per-image Python loop around notebook 01's teaching NMS (itself a Python loop over candidates), it can cost as much as the int8 network itself (notebook 08 §6 times the Python and the C++ NMS side by side), and then int8 barely speeds up the *pipeline* (Amdahl's law: speeding up one part leaves the rest untouched). `TinyDetector.postprocess` thresholds and decodes the whole batch at once and calls torchvision's compiled `nms` (tested equal to the loop version): **1.3 ms at batch 16** in this run, so the int8 network's gain shows end to end (orange bars above). Measure the whole pipeline before promising a speed-up.
# * **torchao vs ONNX Runtime.** torchao's inductor int8 is slightly faster than ONNX Runtime's at batch 16 (4.1 vs 4.4 ms, 8 %), but at batch 1 it is no faster than fp32 in ONNX Runtime (0.87 ms each) — the compiled graph has a fixed cost per call that this tiny network cannot hide. ONNX Runtime's int8 beats every fp32 path at both batch sizes; torchao's only at batch 16. That is why the course deploys with ONNX Runtime. (The deprecated `torch.ao.quantization` eager/FX flow was not considered.)
# * **The instruction set decides.** The course's 2-core x86 CPU has AVX-512 **VNNI**, whose `VPDPBUSD` instruction multiplies 64 uint8 × int8 pairs and adds them into 16 int32 sums in one step; without it an int8 dot product takes three instructions. ONNX Runtime picks its kernels by itself and cannot be told to use fewer instructions, but **oneDNN** — Intel's kernel library, which runs the convolutions of eager PyTorch, `torch.compile` and torchao — can (`ONEDNN_MAX_CPU_ISA`). The benchmark re-ran those paths restricted to older instruction sets, each in a fresh process, in the same interleaved rounds:

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'oneDNN allowed to use':<26}{'fp32 compile, b16':>19}{'int8 torchao, b16':>19}{'int8 speed-up':>15}")
rows = [("AVX-512 + VNNI (default)", lat["fp32_compile"], lat["int8_torchao"])]
rows += [(label, lat[f"isa_{isa}"]["fp32_compile"], lat[f"isa_{isa}"]["int8_torchao"]) for label, isa in
         (("AVX-512, no VNNI", "AVX512_CORE"), ("AVX2", "AVX2"))]
for label, f32, i8 in rows:
    print(f"{label:<26}{f32['batch16']['median_ms']:>16.1f} ms{i8['batch16']['median_ms']:>16.1f} ms{f32['batch16']['median_ms'] / i8['batch16']['median_ms']:>14.2f}x")

# %% [markdown]
# In this run, with VNNI int8 is 2.8× faster than compiled fp32 at batch 16; restricted to AVX-512 without VNNI the int8 kernels slow down by 1.65× (4.1 → 6.7 ms) and the edge shrinks to 1.7×; with AVX2 only, to 2.1× (AVX2's int8 kernels come out level with AVX-512's without VNNI, while the fp32 kernels lose 20 % — fewer, narrower vector instructions — which is why the edge shrinks less than the int8 times grow). (Note that `AVX512_CORE` also switches off AMX, which this CPU does not have, and that the limit applies to oneDNN's kernels, not to code inductor generates itself.) On a CPU without VNNI (older Intel, AMD before Zen 4) expect a smaller gain from int8 — check `lscpu` for `avx512_vnni` or `avx_vnni` first. There, also re-check accuracy: without VNNI, x86 int8 kernels multiply uint8 × int8 pairs with `VPMADDUBSW`, which adds each pair of products into a saturating int16, and full 8-bit weights can overflow it; ONNX Runtime's `quantize_static(..., reduce_range=True)` quantizes the weights to 7 bits to avoid that. With VNNI, `VPDPBUSD` accumulates in int32 and `reduce_range` is not needed (the course uses the default, `reduce_range=False`). This measures the torchao path; it stands in for ONNX Runtime, whose kernels cannot be restricted this way. Compare numbers from one benchmark run, not across runs.
#
# ## 8. Exercises
#
# **Exercise 1.** Write `my_fold_bn(weight, bias, gamma, beta, mean, var, eps)` returning the folded `(weight, bias)` of section 2. `weight` is `(C_out, C_in, k, k)`; `bias` may be `None`.

# %%
from course_utils.exercises import check_fold_bn, check_freeze_bn_hook


def my_fold_bn(weight, bias, gamma, beta, mean, var, eps):
    # YOUR CODE HERE
    raise NotImplementedError


check_fold_bn(my_fold_bn)

# %% [markdown]
# **Exercise 2.** `QATSchedule` freezes BN statistics at the end of an epoch. Write a hook that freezes them after a given number of **optimizer steps** instead. Subclass `course_utils.train.Hook`, and in `after_step(self, state)` call `course_utils.quant.freeze_bn_stats(state.model)` once enough steps are done (`state.step` counts from 0, and `after_step` runs after each step).

# %%
from course_utils.train import Hook


class FreezeBNAfter(Hook):
    def __init__(self, freeze_step: int) -> None:
        self.freeze_step = freeze_step

    def after_step(self, state) -> None:
        # YOUR CODE HERE
        raise NotImplementedError


check_freeze_bn_hook(FreezeBNAfter)

# %% [markdown]
# Solutions: `solutions/ex05_qat_and_int8.py`.
#
# ## Takeaways
#
# * Fold BN before quantizing: deployment quantizes `W·γ/√(σ²+ε)`, not `W`.
# * PTQ at 8 bits is nearly free; at 4 bits it is not, and min-max calibration gets *worse* with more data.
# * QAT fine-tunes through fake quantization (STE), with BN folded in the forward pass and BN statistics frozen at the end. Judge it against a float model fine-tuned with the same recipe, on test: on the converged detector QAT-8 is level with it (PTQ-8 already scores what fp32 scores), and 6 epochs of QAT-4 win back only 14 % of W4A4's loss (about a third at 3× the learning rate).
# * Sensitivity is uneven across layers; keeping the few worst at higher precision is cheap — here it recovers far more than QAT-4 (first and last layers in float: about 0.69 → 0.80 on val, no training).
# * A real int8 model is ~3.7× smaller and matches its fake-quant simulation within noise; whether it is *faster* depends on the runtime and the CPU — measure against the fastest fp32 path, per batch size, and time post-processing too.
#
# **Regenerate:** `python benchmarks/qat_sweep.py --variants` (sweep and QAT checkpoints), `python benchmarks/int8_latency.py` (latency, size, mAP).
