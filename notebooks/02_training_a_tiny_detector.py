# %% [markdown]
# # 02 · Training a tiny detector
#
# Later notebooks clip, quantize, distil and prune a detector. Here you build it, train it with the course's **one training loop**, and learn to compare two models fairly.
#
# **You will learn to**
# 1. read a small single-stage detector, `TinyDetector`;
# 2. see which locations learn which object, and the loss;
# 3. train it with `fit` and its **hooks**;
# 4. put an error bar on an mAP, and compare models fairly.

# %% [markdown]
# > **Terms**
# > * **single-stage detector:** predicts boxes at every feature-map location in one pass.
# > * **GIoU:** IoU minus the share of empty space in the smallest box around both boxes.
# > * **one-cycle schedule:** the learning rate warms up, then decays to almost zero.
# > * **hook:** an object whose methods the training loop calls at fixed points.
# > * **logit:** a raw score; the sigmoid turns it into a probability.
# > * **fine-tuning:** training an already trained model for a few more epochs.
# > * **std (ddof = 1):** the sample standard deviation of n runs (divides by n − 1). A **seed** fixes a run's randomness.
# > * In the [glossary](../docs/glossary.md): backbone / neck / head, FPN, stride, label assignment, AdamW.
#
# *Time: about 45 minutes; the live training takes about 70 seconds on 2 CPU cores (the whole notebook about 2 minutes). Unfamiliar term? See the [glossary](../docs/glossary.md) (English–中文).*

# %%
import time

import matplotlib.pyplot as plt
import torch
from torch.utils.data import DataLoader

from course_utils import (
    CocoDetection,
    SyntheticShapes,
    TinyDetector,
    collate_detection,
    count_parameters,
    evaluate,
    fit,
    get_device,
    materialize,
    predict,
    seed_everything,
)
from course_utils.viz import plot_history, plot_pr_curves, show_detection_grid

seed_everything(0)
device = get_device()
print("training on", device)
val = CocoDetection("../data/val/annotations.json")
class_names = [c["name"] for c in val.categories]

# %% [markdown]
# ## 1. The model
#
# `TinyDetector` is a small single-stage detector:
#
# ```
# image 3x128x128
#   └─ backbone: Conv-BN-ReLU blocks ──► C3 (stride 8, 16x16), C4 (stride 16, 8x8)
#        └─ neck (a two-level FPN): P3 = conv1x1(C3) + upsample(conv1x1(C4))
#             └─ head: per location of P3, K class logits + 4 box offsets
#                  └─ post-processing: decode → score threshold → NMS → top 100
# ```
#
# `C3`, `C4` are the backbone's feature maps and `P3` the neck's (digit n: stride 2ⁿ). Each location of `P3` owns one 32×32-pixel anchor and predicts offsets from it (notebook 01's box coding). `width` multiplies every channel count (notebook 06's "teacher" is width 2).

# %% tags=["nbval-check-output"]
for width in (0.5, 1.0, 2.0):
    print(f"width {width}: {count_parameters(TinyDetector(width=width)):>9,} parameters")
model = TinyDetector(width=1.0)
raw = model.forward_raw(torch.zeros(2, 3, 128, 128))
print({k: tuple(v.shape) for k, v in raw.items()})

# %% [markdown]
# `forward_raw` returns, for 2 images: 3 class logits and 4 box offsets at each of 256 locations, the 256 anchors, and the 64-channel map `P3`.
#
# ## 2. Who should detect what?
#
# Label assignment here is **centre sampling** (`TinyDetector.assign`): a location is *positive* for a box if its centre lies inside the box and within 1.5 strides (12 px) of the box's centre. The cell holding the box centre is always positive.

# %%
image, target = val[3]
anchors = model.anchors((16, 16), torch.device("cpu"))
match = model.assign(anchors, target["boxes"])
centres = (anchors[:, :2] + anchors[:, 2:]) / 2

fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.imshow(image.permute(1, 2, 0))
from course_utils.viz import draw_boxes

draw_boxes(ax, target["boxes"], "white", linestyle="--")
pos = match >= 0
ax.scatter(centres[~pos, 0], centres[~pos, 1], s=6, c="white", edgecolors="0.4", linewidths=0.3, alpha=0.8, label="background")
ax.scatter(centres[pos, 0], centres[pos, 1], s=30, c=match[pos] % 10, cmap="tab10", vmin=0, vmax=9, marker="s",
           label="positive (colour = object)")
ax.legend(loc="lower right", fontsize=7)
ax.set_title(f"{int(pos.sum())} positive locations for {len(target['boxes'])} objects")
ax.set_axis_off()
plt.show()

# %% [markdown]
# ## 3. The loss
#
# **Box loss**, at positive locations, for predicted box $\hat b$, ground truth $b$, and offsets $\delta$ against target offsets $\delta^*$:
# $$2\,\big(1 - \mathrm{GIoU}(\hat b, b)\big) + 0.5\,\lVert \delta - \delta^* \rVert_1.$$
#
# **Class loss**, at *every* location: the quality focal loss (QFL)
# $$\mathrm{QFL}(\sigma, y) = -|y - \sigma|^{2}\,\big[y\log\sigma + (1-y)\log(1-\sigma)\big],$$
# with $\sigma$ the predicted class probability and $y$ the IoU of the predicted box with its object (0 at background). So the score learns *how good the box is*; the factor $|y-\sigma|^2$ quiets the many easy background locations.
#
# In train mode the model returns the terms as a dict (weights 2 and 0.5 included):

# %% tags=["nbval-check-output"]
model.train()
losses = model([val[0][0], val[1][0]], [val[0][1], val[1][1]])
print({k: round(v.item(), 3) for k, v in losses.items()})

# %% [markdown]
# ## 4. Train it
#
# **The recipe.** 2,000 training scenes (rendered once by `materialize`), batches of 32, 6 epochs, AdamW with a one-cycle schedule peaking at 4e-3 (`make_optimizer`).
#
# **The loop.** Each step of `fit` runs forward → losses → backward → `after_backward` → optimizer step → `after_step`; each epoch ends with val mAP. Later notebooks plug in through these methods of a `Hook`: `after_backward` (clipping, notebook 03), `on_train_start` and `on_epoch_end` (quantization, 05), `extra_losses` (distillation, 06).

# %% tags=["nbval-ignore-output"]
from course_utils.train import make_optimizer

seed_everything(0)
train_set = materialize(SyntheticShapes(2000, seed=0))
train_loader = DataLoader(train_set, batch_size=32, shuffle=True, collate_fn=collate_detection,
                          generator=torch.Generator().manual_seed(0))
val_loader = DataLoader(val, batch_size=50, collate_fn=collate_detection)

model = TinyDetector(width=1.0)
epochs = 6
optimizer, scheduler = make_optimizer(model, lr=4e-3, total_steps=epochs * len(train_loader))
start = time.perf_counter()
history = fit(model, train_loader, optimizer, epochs, device=device, scheduler=scheduler, val_loader=val_loader)
print(f"trained {epochs} epochs in {time.perf_counter() - start:.0f} s "
      f"({sum(history['epoch_time']):.0f} s in training steps, the rest in per-epoch evaluation)")

# %%
plot_history(history)
plt.show()

# %% [markdown]
# The losses fall (log scale) and val mAP climbs. The final numbers on val:

# %% tags=["nbval-ignore-output"]
metrics = evaluate(model, val_loader, device)
print(f"mAP@[.5:.95] {metrics['map']:.3f}   mAP@0.5 {metrics['map_50']:.3f}   mAP@0.75 {metrics['map_75']:.3f}")
for c, ap in metrics["ap_per_class"].items():
    print(f"  AP {class_names[c - 1]:8s} {ap:.3f}")

# %% tags=["nbval-check-output"]
print("mAP@0.5 >= 0.90:", metrics["map_50"] >= 0.90)
print("mAP@[.5:.95] >= 0.60:", metrics["map"] >= 0.60)

# %% [markdown]
# Both lines are `True`: the detector clears the sanity bar this notebook sets for a working detector.
#
# ## 5. How sure is that number?
#
# Another 200 val images would give another mAP. The **image-level bootstrap** measures how much: draw 200 images *with replacement* from the 200, score them, repeat 1,000 times, and keep the middle 95 % of the scores (bias-corrected: deep dive). That is a 95 % **confidence interval** (CI):

# %% tags=["nbval-ignore-output"]
from course_utils.metrics import bootstrap_map, paired_bootstrap_map

preds, targets = predict(model, val_loader, device)
ci = bootstrap_map(preds, targets)
print(f"val mAP {ci['value']:.3f}, 95% CI [{ci['low']:.3f}, {ci['high']:.3f}]  "
      f"({ci['n_boot']} resamples of {ci['num_images']} images; bootstrap std {ci['std']:.3f})")

# %% [markdown]
# ## 6. Is six epochs enough?
#
# No: this recipe keeps improving. `benchmarks/train_tiny_detector.py` trained it for 12, 24 and 48 epochs, each from scratch (a one-cycle schedule ends near zero, so it cannot be extended). Two rules pick the **converged baseline**, the model more training no longer improves:
#
# 1. **Keep:** double the epochs until doubling gains under 0.5 mAP points (a point is 0.01 mAP); keep the shorter schedule. If every doubling gains more, keep the longest.
# 2. **Check the plateau:** 6 more epochs of fine-tuning (what later notebooks give every compressed model), 3 seeds, must add under 0.5 points on average.
#
# Likewise for notebook 06's width-2 teacher:

# %% tags=["nbval-check-output"]
import json
from pathlib import Path

RESULTS = Path("..") / "benchmarks" / "results"
converged = {width: json.loads((RESULTS / f"{name}.json").read_text())
             for width, name in [(1, "tiny_detector_converged"), (2, "teacher_converged")]}
for width, result in converged.items():
    print(f"width {width}: " + ", ".join(f"{r['epochs']} epochs -> {r['val_map']:.3f}" for r in result["runs"]))
    low, high = result["val_map_ci95"]
    check = result["plateau"]["check"]
    kept = result["plateau"]["epochs"]
    longest = max(r["epochs"] for r in result["runs"])
    why = "every doubling gained >= 0.5 points, so the longest" if kept == longest else "doubling it gained < 0.5 points"
    print(f"  rule 1 (keep): {kept} epochs ({why})")
    print(f"  rule 2 (plateau check): 6 more epochs add {100 * check['gain']:+.2f} points "
          f"({check['val_map_after']['n']} seeds) -> {'plateaued' if result['plateau']['reached'] else 'NOT plateaued'}")
    print(f"  the {kept}-epoch model: val mAP {result['val_map']:.3f} (95% CI [{low:.3f}, {high:.3f}]), test {result['test_map']:.3f}")

# %%
from course_utils.viz import plot_schedule_curves

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, (width, result) in zip(axes, converged.items()):
    plot_schedule_curves(result["runs"], ax=ax, title=f"TinyDetector, width {width}",
                         live=history["map"] if width == 1 else None, shipped_epochs=result["plateau"]["epochs"])
plt.tight_layout()
plt.show()

# %% [markdown]
# For width 1, every doubling gained over 0.5 points (+4.1, then +1.3), so rule 1 keeps 48 epochs, the longest trained, and rule 2 finds them plateaued. (Your 6-epoch run leads early only because its schedule already decayed.)
#
# Is the converged model's lead over your 6-epoch model real? Score both on the *same* resamples (`paired_bootstrap_map`): the noise from which images were drawn cancels, so the interval of the difference is narrower.

# %% tags=["nbval-ignore-output"]
from course_utils import load_checkpoint

converged_model = TinyDetector()
load_checkpoint(RESULTS / "tiny_detector_converged.pt", converged_model)
converged_preds, _ = predict(converged_model.to(device), val_loader, device)
diff = paired_bootstrap_map(converged_preds, preds, targets)
print(f"converged minus 6-epoch: {100 * diff['value']:+.1f} mAP points, "
      f"95% CI [{100 * diff['low']:+.1f}, {100 * diff['high']:+.1f}] -> {'within noise' if diff['within_noise'] else 'a real difference'}")

# %% [markdown]
# ## 7. The rules of a fair comparison
#
# Later notebooks compare compressed models with a baseline by four rules:
#
# 1. **A converged baseline.** Compressed models are usually fine-tuned for a few epochs. From a baseline stopped early, those epochs alone raise mAP, and the compression gets the credit.
# 2. **Equal budgets.** The baseline gets the same extra training, without the compression: an **equal-budget control**.
# 3. **Noise.** Every mAP comes with its CI, or as mean ± std over at least 3 seeds (ddof = 1). A difference inside that noise is *within noise*, not a gain.
# 4. **Choose on val, report on test.** Every choice (a learning rate, a threshold, the epochs, the "best" variant) is made on **val**. A score used to choose is optimistic, partly luck on those 200 images, so headline comparisons are reported on the held-out **test** split, and every table names its split.

# %% [markdown]
# ## Exercises
#
# ### Exercise 1 — count the errors yourself
#
# Complete `my_error_counts(pred, target, score_threshold, iou_threshold)` returning `(TP, FP, FN)` for one image, without calling the library's `count_errors`. Keep predictions with score ≥ `score_threshold`; take them best score first; each claims the unclaimed ground truth *of the same label* with the highest IoU, if that IoU ≥ `iou_threshold` (a TP), otherwise it is a FP. FN = ground truths never claimed. Solutions: `solutions/ex02_training_a_tiny_detector.py`.

# %%
from course_utils.exercises import check_error_counts, check_loss_recorder


def my_error_counts(pred: dict, target: dict, score_threshold: float, iou_threshold: float) -> tuple[int, int, int]:
    # YOUR CODE HERE
    raise NotImplementedError


check_error_counts(my_error_counts)

# %% [markdown]
# ### Exercise 2 — your first hook
#
# Write a `Hook` subclass that appends the total loss to a list `self.values` after every optimizer step. Each hook method receives a `StepState`; its fields are printed below — `state.losses` is a dict of scalar tensors, so sum them and use `.item()` to get a Python float. The check trains a small model for 2 steps with your hook.

# %%
from dataclasses import fields

from course_utils import Hook, StepState

print("StepState fields:", [f.name for f in fields(StepState)])
print("Hook methods:", [m for m in vars(Hook) if not m.startswith("_")])


class LossRecorder(Hook):
    def __init__(self) -> None:
        self.values: list[float] = []

    # YOUR CODE HERE: override the right hook method


check_loss_recorder(LossRecorder)

# %% [markdown]
# ## Takeaways
#
# * `TinyDetector`: backbone → FPN neck → head → decode + NMS.
# * Its loss: QFL (scores that predict IoU) + GIoU + L1, at the assigned locations.
# * One loop, `fit`, with **hooks** for what later notebooks add.
# * Six epochs pass the bar; 48 converge.
# * Fair comparisons: a converged baseline, an equal-budget control, noise measured, choices on val and results on test.

# %% [markdown]
# ## Going deeper
#
# These parts are optional: nothing in the core path depends on them. Each stands on its own; read the ones you are curious about.
#
# ### Where the detector fails
#
# Numbers hide *how* a model fails. Your 6-epoch model's predictions (coloured, with scores ≥ 0.4) against the ground truth (white, dashed):

# %%
fig = show_detection_grid([val[i] for i in range(8)], preds[:8], class_names, ncols=4, score_threshold=0.4)
fig.suptitle("Predictions with score ≥ 0.4 (coloured) vs ground truth (white, dashed)", y=1.02)
plt.show()

# %% [markdown]
# Now the worst images. `count_errors` counts, per image, true positives, false positives (wrong or duplicate boxes) and false negatives (missed objects), at score ≥ 0.4 and IoU ≥ 0.5. The 8 images with the most errors:

# %%
from course_utils.metrics import count_errors

errors = [count_errors(p, t, score_threshold=0.4, iou_threshold=0.5) for p, t in zip(preds, targets)]
worst = sorted(range(len(val)), key=lambda i: -(errors[i][1] + errors[i][2]))[:8]
print(f"total over {len(val)} images: TP {sum(e[0] for e in errors)}, FP {sum(e[1] for e in errors)}, FN {sum(e[2] for e in errors)}")
fig = show_detection_grid([val[i] for i in worst], [preds[i] for i in worst], class_names, ncols=4, score_threshold=0.4,
                          titles=[f"image {i}: FP {errors[i][1]}, FN {errors[i][2]}" for i in worst])
plt.show()

# %% [markdown]
# Typical failures: **small objects** (an 8-pixel triangle is a handful of pixels), **occluded objects** whose visible part looks like another shape, and **class confusion** between a small square and a small circle.

# %% [markdown]
# ### Recall by object size
#
# Small objects are worth measuring on their own; COCO reports AP by size for the same reason. COCO's buckets are by *area*: small < 32² px, medium < 96², large ≥ 96². They would put 540 of the 638 val objects in "small", 98 in "medium" and none in "large". So we use our own buckets, by the shorter side, and plot recall rather than AP.

# %%
sizes = torch.cat([(t["boxes"][:, 2:] - t["boxes"][:, :2]).min(1).values for t in targets])
buckets = {"small\n(< 16 px)": (0, 16), "medium\n(16-32 px)": (16, 32), "large\n(>= 32 px)": (32, 1e9)}
recalls = []
for lo, hi in buckets.values():
    tp = gt = 0
    for p, t in zip(preds, targets):
        side = (t["boxes"][:, 2:] - t["boxes"][:, :2]).min(1).values
        keep = (side >= lo) & (side < hi)
        sub = {"boxes": t["boxes"][keep], "labels": t["labels"][keep]}
        tp += count_errors(p, sub, 0.4, 0.5)[0]
        gt += int(keep.sum())
    recalls.append(tp / max(gt, 1))
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.bar(list(buckets), recalls, color=["tab:red", "tab:orange", "tab:green"])
ax.set_xlabel("shorter side of the object")
ax.set_ylabel("recall (score ≥ 0.4, IoU ≥ 0.5)")
ax.set_ylim(0, 1.15)
ax.set_title("Recall by object size")
for i, r in enumerate(recalls):
    ax.text(i, r + 0.02, f"{r:.2f}", ha="center")
plt.show()

# %% [markdown]
# ### Precision and recall at stricter IoU
#
# The precision–recall curves of your 6-epoch model on val, at three IoU thresholds:

# %%
plot_pr_curves(metrics, class_names, iou_thresholds=(0.5, 0.75, 0.9))
plt.show()

# %% [markdown]
# At IoU 0.5 precision stays high almost to full recall. At 0.9 every class loses a lot and triangles collapse: the boxes are *roughly* right much more often than they are *pixel-tight*. Triangles are hardest because a rotated triangle's box depends on exactly where its thin corners are.

# %% [markdown]
# ### Inside the loss: where GIoU and QFL come from
#
# GIoU (generalized IoU, Rezatofighi et al. 2019) is
# $$\mathrm{GIoU} = \mathrm{IoU} - \frac{|C \setminus (\hat b \cup b)|}{|C|},$$
# with $C$ the smallest box enclosing both $\hat b$ and $b$. When the boxes do not overlap, IoU is 0 whatever their distance, but the empty-space term still shrinks as they move closer: that is the gradient.
#
# Every loss term is divided by the number of positive locations. Because QFL's target is the box's IoU, the class loss improves only once the boxes do: in §4's plot it stalls for a while.
#
# QFL (Li et al. 2020) is the focal loss with a soft target: the factor $|y-\sigma|^\beta$ ($\beta = 2$ here) is small wherever the prediction is already close to its target, as on most background locations.

# %% [markdown]
# ### The one-cycle schedule
#
# `make_optimizer` wraps torch's `OneCycleLR`. The learning rate warms up (cosine) from `lr / 25` to `lr` over the first 15 % of the steps. It then decays (cosine) to `lr / 250,000` at the last step. It also cycles AdamW's β₁ the other way: 0.95 at the start, 0.85 at the peak, 0.95 at the end. Because it ends so low, a schedule cannot be extended: a 48-epoch run is not a 24-epoch run plus 24 more.

# %% [markdown]
# ### When the loss becomes NaN
#
# `fit` checks the loss before every backward pass. If it is NaN or infinite ("non-finite"), `fit` stops at once with a message that says what to try, instead of silently training garbage. Notebook 03 shows what makes a loss explode.

# %% [markdown]
# ### The bootstrap in detail
#
# `bootstrap_map` matches each image's boxes once, then for each resample pools the matches (an image drawn twice counts twice) and recomputes precision and recall from scratch.
#
# Its interval is **bias-corrected**. mAP on a small set comes out a little high, because the precision envelope takes a maximum over noisy values. Resampling adds that bias again, so the plain middle 95 % of the resampled scores would sit too high. The bias-corrected interval (Efron 1981) moves the two percentiles by how far the resampled scores sit off the full-set score. `tests/test_bootstrap.py` measures both intervals on a population whose mAP is known. `paired_bootstrap_map` uses the same correction.

# %% [markdown]
# ### The plateau check's upper bound
#
# Three seeds give a mean gain, but the mean is itself noisy. The **one-sided 95 % upper bound** (Student's t, n − 1 degrees of freedom) is the largest mean gain the seeds cannot rule out; only the high side matters, since the question is whether more training still pays.

# %% tags=["nbval-check-output"]
for width, result in converged.items():
    check = result["plateau"]["check"]
    print(f"width {width}: 6 more epochs add {100 * check['gain']:+.2f} points on average, "
          f"one-sided 95% upper bound {100 * check['gain_upper95']:+.2f} ({check['val_map_after']['n']} seeds)")

# %% [markdown]
# For width 2, the mean gain is under the 0.5 line, but the three seeds spread enough that a gain above it cannot be ruled out. That is one reason every comparison in the course *also* gives its baseline the same extra training as the method: a converged start and an equal-budget control together, not either alone.

# %% [markdown]
# ### Where the recorded numbers come from
#
# Every recorded mAP is measured on the CPU. On a GPU with TF32 support (NVIDIA's since 2020), PyTorch runs float32 convolutions in **TF32** by default: a format that keeps float32's range but only 10 bits of mantissa. It is faster, but it shifts mAP slightly.
#
# To regenerate them: `python benchmarks/train_tiny_detector.py --epochs 6 --name tiny_detector` (this notebook's recipe; writes `benchmarks/results/tiny_detector.json`, with the held-out *test* split's mAP, and the checkpoint). `python benchmarks/train_tiny_detector.py` trains the converged one.

# %% [markdown]
# ### Saving and loading — safely
#
# `save_checkpoint` writes to a temporary file and renames it into place, so a crash never leaves half a checkpoint. `load_checkpoint` uses `torch.load(weights_only=True)`: a checkpoint is a **pickle**, and unpickling an untrusted file can run arbitrary code, so only tensors and plain containers are accepted.

# %%
import pickle
import tempfile
from pathlib import Path

from course_utils import load_checkpoint, save_checkpoint


class Sneaky:  # stands in for any pickled Python object (which could run code when unpickled)
    pass


with tempfile.TemporaryDirectory() as tmp:
    path = save_checkpoint(Path(tmp) / "tiny.pt", model.cpu(), val_map=metrics["map"])
    restored = TinyDetector(width=1.0)
    info = load_checkpoint(path, restored)
    print("reloaded; metadata:", {k: round(v, 3) for k, v in info["metadata"].items()})
    torch.save({"model": {}, "extra": Sneaky()}, Path(tmp) / "untrusted.pt")
    try:
        load_checkpoint(Path(tmp) / "untrusted.pt")
    except pickle.UnpicklingError as err:
        print("refused:", str(err).replace(tmp, "<tmp>")[:160], "...")

# %% [markdown]
# ### The same data through a torchvision detector
#
# Production code uses library detectors. `build_torchvision_detector()` builds torchvision's **Faster R-CNN**, a *two-stage* detector: a region proposal network suggests boxes, then a second head classifies and refines each. It uses a small backbone of the same Conv-BN-ReLU blocks, with no downloaded weights. Our data already follows torchvision's conventions (xyxy boxes, labels 1…K), and `fit` accepts any model that returns a loss dict, so nothing else changes.
#
# Faster R-CNN is much slower per image on a CPU, so here we train it only briefly (~30 s). That is enough to see the whole API work end to end, not to get a good model: after 80 steps its mAP is far below the tiny detector's, and it needs many more epochs to catch up.

# %% tags=["nbval-ignore-output"]
from course_utils import build_torchvision_detector

seed_everything(0)
frcnn = build_torchvision_detector(num_classes=3)
print(f"Faster R-CNN: {count_parameters(frcnn):,} parameters")
small_loader = DataLoader(train_set[:640], batch_size=8, shuffle=True, collate_fn=collate_detection,
                          generator=torch.Generator().manual_seed(0))
optimizer, scheduler = make_optimizer(frcnn, lr=2e-3, total_steps=len(small_loader))
start = time.perf_counter()
frcnn_history = fit(frcnn, small_loader, optimizer, epochs=1, device=device, scheduler=scheduler)
frcnn_metrics = evaluate(frcnn, val_loader, device)
print(f"{len(small_loader)} steps in {time.perf_counter() - start:.0f} s; "
      f"val mAP@0.5 {frcnn_metrics['map_50']:.3f}, mAP@[.5:.95] {frcnn_metrics['map']:.3f}")
print("loss terms:", [k for k in frcnn_history if k.startswith("loss_")])

# %%
plot_history(frcnn_history, smooth=10)
plt.show()
