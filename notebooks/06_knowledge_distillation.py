# %% [markdown]
# # 06 · Knowledge distillation: from soft targets to a distilled detector
#
# A small model trained on its own learns from labels: one-hot classes and boxes. **Knowledge distillation** (KD) lets it also learn from a larger, trained *teacher*: its full output distributions, its boxes, even its internal features. This notebook builds distillation up from Hinton's soft targets on a classifier to the three kinds of detection distillation, then measures — over 3 seeds — when it helps the course's detector, and when it does not.
#
# **You will**
# 1. see what a temperature does to a distribution, and why the loss is multiplied by T²;
# 2. teach a student a digit it never saw, from soft targets alone — and watch the wrong temperature fail;
# 3. write the three detection terms (dense scores, boxes, features) and plug them into the training loop as a hook;
# 4. read a 3-seed ablation: each term, all terms, and the teacher's pseudo-labels on unlabelled images;
# 5. see where distillation fails: plentiful labels, a weak teacher;
# 6. distill torchvision's Faster R-CNN (the setting of many widely shared distillation tutorials) and quantize a distilled student.
#
# *Time: about 60 minutes. Prerequisites: notebooks 02 (training loop, hooks) and 05 (QAT). Terms: [glossary](../docs/glossary.md) (English–中文).*

# %%
import copy
import json
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from course_utils import (CocoDetection, SyntheticShapes, TinyDetector, build_torchvision_detector, collate_detection, count_parameters,
                          evaluate, fit, get_device, load_checkpoint, materialize, mean_average_precision, paired_bootstrap_map,
                          seed_difference, seed_everything)
from course_utils.data import load_digits
from course_utils.distill import (Distiller, RoIDistiller, SoftTargetDistiller, box_distill_loss, cache_teacher_outputs,
                                  dense_cls_distill_loss, feature_imitation_loss, foreground_mask, kd_loss, pseudo_label,
                                  roi_class_logits, soften)
from course_utils.models import DigitsCNN
from course_utils.quant import QATSchedule, calibrate, post_training_quantize, prepare_qat
from course_utils.train import make_optimizer, predict

seed_everything(0)
RESULTS = Path("..") / "benchmarks" / "results"
device = get_device()  # the GPU when there is one
print("device:", device)

# %% [markdown]
# ## 1. Myths about distillation
#
# A common way to present distillation (for example in widely shared blog posts) distils a Faster R-CNN teacher into a student, with code that carries four misconceptions worth naming before we start.
#
# > ### ❌ Myth vs ✅ fact — "set the classes with `model.fc = nn.Linear(1024, num_classes)`"
# > **Myth:** *a detector, like a ResNet classifier, ends in one* `fc` *layer; replace it to change the classes and to get the outputs to distil.*
# >
# > **Fact:** torchvision's Faster R-CNN has no `fc`. Its class scores come from `roi_heads.box_predictor.cls_score`, one of several outputs (region proposals and objectness, per-class box deltas, class logits per region). Assigning `model.fc` just attaches a new, unused layer — no error, no effect (checked below). Distilling a detector means choosing *which* outputs to match, and *where*.
#
# > ### ❌ Myth vs ✅ fact — "distillation = train the student on the teacher's predictions with cross-entropy"
# > **Myth** (a common claim, for example in widely shared blog posts): *the teacher's outputs become the student's training data*. (A widely copied code example does not even do that: the "distillation" loop computes `criterion(teacher outputs, labels)` and steps the *teacher's* optimizer, and the student then trains on the ground-truth labels alone — no teacher signal ever reaches it.)
# >
# > **Fact:** the teacher's *argmax* carries no more than a label does. What it knows beyond the labels — "this 3 looks a bit like a 5" — lives in the small probabilities, which a temperature T > 1 makes visible: **KD needs soft targets**, `softmax(z / T)`, matched with a KL divergence (§2–§4). Hard teacher predictions *are* useful on images that have no labels at all (pseudo-labels, §6–§7) — but that is a different mechanism.
#
# > ### ❌ Myth vs ✅ fact — "`L = −α·KL(p_t‖p_s) + β·CE`"
# > **Myth** (a common formula, for example in widely shared blog posts): *the distillation loss is* `−α·D_KL(p_t‖p_s) + β·L_ce`.
# >
# > **Fact:** KL is ≥ 0 and is zero when the student matches the teacher. Minimising `−α·KL` *maximises* the divergence and drives the student away from the teacher. The loss is `α·T²·KL(p_t ‖ p_s) + (1 − α)·CE` — both terms added (`course_utils.distill.hinton_loss`), with the T² of §3.
#
# > ### ❌ Myth vs ✅ fact — "the student is the same pretrained model, trained again"
# > **Myth** (a common setup, for example in the code of widely shared blog posts): *teacher and student are both* `fasterrcnn_resnet50_fpn(pretrained=True)`.
# >
# > **Fact:** then nothing gets smaller. Distillation compresses only when the student is *smaller* (here: a quarter of the teacher's parameters) — and the smaller it is, the less of the teacher it can absorb (the literature's "capacity gap"; §8 shows a case).

# %%
frcnn = build_torchvision_detector(num_classes=3).eval()
images = [torch.rand(3, 128, 128)]
with torch.no_grad():
    before = frcnn(images)[0]["scores"]
    print("has an `fc` layer:", hasattr(frcnn, "fc"), "| class logits come from:", frcnn.roi_heads.box_predictor.cls_score)
    frcnn.fc = torch.nn.Linear(1024, 3)  # what the widely copied code does
    after = frcnn(images)[0]["scores"]
print("outputs changed by adding `fc`:", not torch.equal(before, after))
del frcnn.fc

# %% [markdown]
# (The course's Faster R-CNN is small: a 256-wide box head, and `Linear(256, 4)` = 3 classes + background. torchvision counts background as a class, so a COCO model set up this way would need 91 outputs, not 90 — another sign the `fc` line was never run against a real detector.)

# %% [markdown]
# ## 2. Soft targets and temperature
#
# We start where Hinton et al. (2015) did: a classifier. The data are scikit-learn's 1,797 handwritten digits (8×8 pixels, shipped with the library). The teacher is a `DigitsCNN` of width 32 with batch norm, trained with the course's `fit` loop.

# %%
# NBVAL_IGNORE_OUTPUT
digits_train, digits_test = load_digits("train"), load_digits("test")
test_x = torch.stack([img for img, _ in digits_test]).to(device)
test_y = torch.stack([t["labels"] for _, t in digits_test]).to(device)


def train_digits(model, data, epochs, hooks=(), seed=0):
    """Train with the course's loop (AdamW + one-cycle), return the model in eval mode."""
    seed_everything(seed)
    loader = DataLoader(data, batch_size=32, shuffle=True, collate_fn=collate_detection, generator=torch.Generator().manual_seed(seed))
    optimizer, scheduler = make_optimizer(model, lr=3e-3, total_steps=epochs * len(loader))
    fit(model, loader, optimizer, epochs, device=device, hooks=hooks, scheduler=scheduler, progress=False)
    return model.eval()


seed_everything(0)
digit_teacher = train_digits(DigitsCNN(width=32, batch_norm=True), digits_train, epochs=15)
with torch.no_grad():
    teacher_logits = digit_teacher(test_x)
print(f"teacher: {count_parameters(digit_teacher):,} parameters, test accuracy {(teacher_logits.argmax(1) == test_y).float().mean():.3f}")

# %% [markdown]
# A temperature divides the logits before the softmax: $p_k = \dfrac{\exp(z_k/T)}{\sum_j \exp(z_j/T)}$. At T = 1 a confident teacher puts nearly everything on one class; as T grows the other classes surface, in the order the teacher ranks them. That ranking — which wrong answers are *less* wrong — is what Hinton called **dark knowledge**.

# %%
example = int((test_y == 3).nonzero()[0])
fig, axes = plt.subplots(1, 4, figsize=(12, 2.6), gridspec_kw={"width_ratios": [0.6, 1, 1, 1]})
axes[0].imshow(digits_test[example][0][0], cmap="gray_r")
axes[0].set_title("a test image (a 3)")
axes[0].axis("off")
for ax, temperature in zip(axes[1:], (1, 4, 10)):
    p = soften(teacher_logits[example].cpu(), temperature)
    entropy = -(p * p.clamp_min(1e-12).log()).sum().item()
    ax.bar(range(10), p.numpy(), color=["tab:blue" if k == 3 else "tab:gray" for k in range(10)])
    ax.set_xticks(range(10))
    ax.set_ylim(0, 1.05)
    ax.set_title(f"T = {temperature}: entropy {entropy:.2f} nats")
axes[1].set_ylabel("teacher's softmax(z / T)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Why the loss is multiplied by T²
#
# The distillation loss compares softened distributions: $\mathcal{L}_{KD} = T^2 \cdot \mathrm{KL}(p_t \,\|\, p_s)$ with $p = \mathrm{softmax}(z/T)$, averaged over the batch (`course_utils.distill.kd_loss`, tested equal to `T² · F.kl_div(log_softmax(s/T), softmax(t/T), reduction="batchmean")`). Its gradient with respect to a student logit is
#
# $$\frac{\partial\, \mathrm{KL}}{\partial s_k} = \frac{1}{T}\,\big(p_{s,k} - p_{t,k}\big) \;\approx\; \frac{1}{K\,T^2}\,(s_k - t_k) \quad \text{for large } T$$
#
# (expanding the softmax around the uniform distribution, for zero-mean logits over K classes). Without correction, raising T from 1 to 10 would shrink the soft-target gradient by up to ~100× next to the hard-label loss's (exactly 1/T² only once |z|/T is small) — changing T would silently change the weighting of the two terms. Multiplying by T² keeps the gradient's size roughly constant, so α alone sets the balance. Measured (the "without" column is the same gradient divided by T², i.e. what plain KL would give):

# %%
# NBVAL_CHECK_OUTPUT
g = torch.Generator().manual_seed(0)
student_logits, teacher_logits_demo = torch.randn(64, 10, generator=g), 2 * torch.randn(64, 10, generator=g)
temperatures = [1, 2, 4, 8, 16, 32]
with_t2, without_t2 = [], []
for temperature in temperatures:
    s = student_logits.clone().requires_grad_()
    kd_loss(s, teacher_logits_demo, temperature).backward()
    with_t2.append(s.grad.norm().item())
    without_t2.append(with_t2[-1] / temperature**2)  # the same KL without the T² factor
for temperature, a, b in zip(temperatures, with_t2, without_t2):
    print(f"T = {temperature:>2}: gradient norm with T² {a:.3f}   without {b:.5f}")

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.loglog(temperatures, with_t2, "o-", label="T² · KL (kd_loss)")
ax.loglog(temperatures, without_t2, "s--", label="KL alone")
ax.set_xlabel("temperature T")
ax.set_ylabel("‖∂L/∂ student logits‖")
ax.set_xticks(temperatures, [str(t) for t in temperatures])
ax.legend()
ax.grid(alpha=0.3, which="both")
ax.set_title("The T² factor keeps the soft-target gradient's scale")
plt.show()

# %% [markdown]
# ## 4. Dark knowledge: teaching a digit the student never sees
#
# Hinton's most striking experiment, on our digits. Remove **every 3** from the student's training set. Trained on labels, the student cannot predict a 3 — it has never seen one. Trained on the teacher's soft targets for the remaining digits, it can: a 5 or an 8 that "looks a bit like a 3" gets some teacher probability on class 3, and the student learns what makes a 3 from those traces alone.
#
# The student is a `DigitsCNN` of width 8 (3.8 k parameters, about 1/8 of the teacher's). `SoftTargetDistiller` is the hook that turns the training loss into Hinton's `(1 − α)·CE + α·T²·KL`; α = 0 is plain training, α = 1 uses soft targets only. We sweep T and α, one seed each (a second seed changes the accuracy on 3s by up to 0.15, so read the trend, not single cells):

# %%
# NBVAL_IGNORE_OUTPUT
without_threes = [(img, t) for img, t in digits_train if t["labels"].item() != 3]
is_three = test_y == 3


def digit_accuracy(model):
    with torch.no_grad():
        pred = model(test_x).argmax(1)
    return (pred[is_three] == 3).float().mean().item(), (pred[~is_three] == test_y[~is_three]).float().mean().item()


seed_everything(0)
baseline = train_digits(DigitsCNN(width=8, batch_norm=True), without_threes, epochs=5)
print(f"student, {count_parameters(baseline):,} parameters, labels only: accuracy on 3s {digit_accuracy(baseline)[0]:.2f}, "
      f"on the other digits {digit_accuracy(baseline)[1]:.3f}")
sweep_t, sweep_alpha = [1, 2, 4, 8, 16], [0.5, 1.0]
dark = {}
for alpha in sweep_alpha:
    for temperature in sweep_t:
        student = train_digits(DigitsCNN(width=8, batch_norm=True), without_threes, epochs=5,
                               hooks=[SoftTargetDistiller(digit_teacher, alpha=alpha, temperature=temperature)])
        dark[alpha, temperature] = digit_accuracy(student)
print("accuracy on the never-seen 3s (rows α, columns T):")
print("α \\ T " + "".join(f"{t:>7}" for t in sweep_t))
for alpha in sweep_alpha:
    print(f"{alpha:<6}" + "".join(f"{dark[alpha, t][0]:>7.2f}" for t in sweep_t))
print("accuracy on the other digits, same runs:")
for alpha in sweep_alpha:
    print(f"{alpha:<6}" + "".join(f"{dark[alpha, t][1]:>7.3f}" for t in sweep_t))

# %%
fig, ax = plt.subplots(figsize=(6, 3.4))
for alpha, marker in zip(sweep_alpha, "os"):
    ax.plot(sweep_t, [dark[alpha, t][0] for t in sweep_t], marker + "-", label=f"soft targets, α = {alpha}")
ax.axhline(digit_accuracy(baseline)[0], color="tab:red", ls="--", label="labels only (α = 0)")
ax.set_xscale("log", base=2)
ax.set_xticks(sweep_t, [str(t) for t in sweep_t])
ax.set_xlabel("temperature T")
ax.set_ylabel("accuracy on 3s (never in training)")
ax.set_ylim(-0.05, 1.05)
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# * **At T = 1 or 2 the soft targets teach nothing about 3s.** The teacher is confident; softmax(z) of a 5 puts ~0 on class 3, so the student's KL term is satisfied without ever scoring a 3. This is the first way distillation fails: **the wrong temperature**.
# * **From T ≈ 4 up, the student starts to recognise 3s it has never seen** — about half at T = 4, four out of five at T = 8–16 — while the other digits keep their accuracy. The extra information is entirely in the teacher's small probabilities.
# * α trades soft against hard targets. α = 1 (soft targets only) comes out slightly higher at every T, but the test set holds only 28 threes, so 0.03–0.07 is one or two images — within the noise.
#
# ## 5. Distilling a detector: what changes
#
# `TinyDetector` has no single softmax to soften. Its outputs at every one of the A = 16×16 locations are K = 3 class scores (independent sigmoids), 4 box offsets, and behind them a feature map. Each needs its own term (all in `course_utils.distill`, each zero when student and teacher agree — tested):
#
# | term | what the student imitates | loss |
# |---|---|---|
# | `dense_cls_distill_loss` | the teacher's score at every location and class | $T^2 \sum_{a,k} w_a\, \mathrm{KL}\big(\mathrm{Bern}(\sigma(t_{ak}/T)) \,\|\, \mathrm{Bern}(\sigma(s_{ak}/T))\big) / \sum_a w_a$ |
# | `box_distill_loss` | the teacher's box offsets, where it sees an object | $\sum_{a\in fg} \mathrm{smoothL1}(d_{s,a} - d_{t,a}) / \lvert fg\rvert$ |
# | `feature_imitation_loss` | the teacher's neck features, through a 1×1 adapter, on object regions | $\sum_{a\in fg} \lVert r(f_s)_a - f_{t,a}\rVert^2 / (2\, \lvert fg\rvert\, C)$ |
#
# Two detection-specific choices: **foreground weighting** — most locations are background, easy and uninformative, so locations where the teacher sees an object (max score > 0.3) get weight 4 in the score term and are the only ones in the box and feature terms (Wang et al. 2019 imitate features near objects only); and an **adapter** $r$ (FitNets, Romero et al. 2015) because the student's features have fewer channels than the teacher's. Chen et al. (2017) use the teacher's boxes as an *upper bound* instead of a target (`teacher_bounded_regression_loss`, implemented and tested but not used in the runs below): the student is pushed to the ground truth only while it is worse than the teacher. Wang et al. (2019) choose their imitation region from anchor–ground-truth overlaps; we use the teacher's own scores, which also works on unlabelled images.
#
# **Which temperature?** The detector runs use T = 2, not tuned. The aim here is not an unseen class, and per-class sigmoid scores are far less peaked than a 10-way softmax over digits, so a mild temperature already exposes the teacher's uncertainty. (Two thresholds appear: 0.3 on the teacher's score marks *foreground* for the loss terms; 0.5 keeps a detection as a *pseudo-label*.)
#
# The teacher: a `TinyDetector` of width 2 (1.66 M parameters) trained by the course's own script on the full labelled training set (`python benchmarks/train_tiny_detector.py --width 2 --name teacher`). The student: width 1 (0.42 M, a quarter).

# %%
# NBVAL_IGNORE_OUTPUT
teacher = TinyDetector(width=2.0)
teacher_info = load_checkpoint(RESULTS / "teacher_converged.pt", teacher)
teacher = teacher.to(device).eval()
val_loader = DataLoader(materialize(CocoDetection(Path("..") / "data" / "val" / "annotations.json"), progress=False),
                        batch_size=50, collate_fn=collate_detection)
teacher_map = evaluate(teacher, val_loader, device)["map"]
print(f"teacher: {count_parameters(teacher):,} parameters, val mAP@[.5:.95] {teacher_map:.3f}; "
      f"student: {count_parameters(TinyDetector(width=1.0)):,} parameters")

# %% [markdown]
# On one batch, the three terms between the teacher and (a) a copy of itself, (b) an untrained network of the teacher's shape (so no adapter is needed for this check) — and where the teacher's foreground mask lies:

# %%
# NBVAL_CHECK_OUTPUT
scenes = materialize(SyntheticShapes(8, seed=42), progress=False)
batch = torch.stack([img for img, _ in scenes])  # on the CPU: this output is checked, and a GPU's TF32 would change its digits
with torch.no_grad():
    t_raw = copy.deepcopy(teacher).cpu().forward_raw(batch)
    seed_everything(0)
    s_raw = TinyDetector(width=2.0).eval().forward_raw(batch)  # same shape as the teacher: no adapter needed here
fg = foreground_mask(t_raw["logits"]).reshape(len(batch), *t_raw["features"].shape[-2:])
for name, raw in (("teacher vs itself", t_raw), ("teacher vs untrained", s_raw)):
    terms = {"cls": dense_cls_distill_loss(raw["logits"], t_raw["logits"]),
             "box": box_distill_loss(raw["deltas"], t_raw["deltas"], t_raw["logits"]),
             "feature": feature_imitation_loss(raw["features"], t_raw["features"], fg)}
    print(f"{name:<22}" + "  ".join(f"{k} {v.item():.4f}" for k, v in terms.items()))
print(f"foreground locations: {fg.float().mean().item():.1%} of all")

# %%
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for ax, (img, target), mask in zip(axes, scenes, fg.cpu()):
    ax.imshow(img.permute(1, 2, 0))
    ax.imshow(np.ma.masked_equal(mask.float().numpy(), 0), cmap="Reds", alpha=0.5, extent=(0, 128, 128, 0), vmin=0, vmax=1)
    for x1, y1, x2, y2 in target["boxes"].tolist():
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="yellow", lw=1))
    ax.axis("off")
fig.suptitle("Teacher foreground (red cells, 8×8 pixels) vs ground truth (yellow): where the box and feature terms apply")
fig.tight_layout()
plt.show()

# %% [markdown]
# `Distiller` packs the three terms into a training-loop **hook** (notebook 02): `fit` calls its `extra_losses` every step with the student's raw outputs; it runs the teacher frozen — a deep copy, in eval mode, `requires_grad=False`, so its weights and BN statistics never move (tested) — and returns `{"kd_cls", "kd_box", "kd_feature"}` to add to the detection loss. It creates the 1×1 adapter at the start of training and adds it to the optimizer. Because our training images are fixed (no random augmentation), the teacher's outputs can be computed once and stored with the targets (`cache_teacher_outputs`): the same numbers, without a teacher forward pass per step.
#
# ## 6. One configuration, live: a student with few labels
#
# First attempts on this data taught us where to look. With all 2,000 training images labelled, distillation barely helps (§8): our labels are *perfect* — synthetic scenes with exact boxes — and the student's limit is its size, not its supervision. Distillation earns its keep when **labels are scarce and unlabelled images are plentiful**, the usual situation in practice. So: **300 labelled images**, the rest unlabelled; the teacher (which stands for a big model trained elsewhere) labels them for us:
#
# * **soft terms** — the three terms above, on every image;
# * **pseudo-labels** — the teacher's confident detections (score ≥ 0.5) on the unlabelled images become training targets (`pseudo_label`; "hard" distillation — a single-pass version of Radosavovic et al. 2018's data distillation, which averages the teacher over flips and scales), combined with the soft terms.
#
# Two words used below: **image-steps** = images seen in training (epochs × images), the budget we hold equal between settings; **gap closed** = (student with KD − student without) / (teacher − student without).
#
# Training a student from scratch takes a few minutes per run here, so the live experiment starts from the benchmark's student trained on the 300 labelled images alone (`student_student_labeled300.pt`, val mAP 0.561) and **continues training it two ways for the same 3,000 image-steps**: on its 300 labelled images again (the control), or with 700 pseudo-labelled images and the soft terms. Any gain over the control is what the teacher added.

# %%
# NBVAL_IGNORE_OUTPUT
train_scenes = cache_teacher_outputs(teacher, materialize(SyntheticShapes(1000, seed=0), progress=False), device=device)
labelled, unlabelled = train_scenes[:300], pseudo_label(teacher, train_scenes[300:], score_threshold=0.5)
print(f"{len(labelled)} labelled images; {len(unlabelled)} unlabelled, pseudo-labelled with "
      f"{sum(len(t['boxes']) for _, t in unlabelled)} teacher boxes "
      f"(ground truth, hidden from training: {sum(len(t['boxes']) for _, t in train_scenes[300:])})")
start = TinyDetector(width=1.0)
load_checkpoint(RESULTS / "student_student_labeled300.pt", start)
start = start.to(device).eval()
start_map = evaluate(start, val_loader, device)["map"]
print(f"starting point: the student trained on 300 labels, val mAP {start_map:.3f} (teacher {teacher_map:.3f})")


def continue_training(data, hooks, image_steps=3000, lr=2e-3, seed=0):
    """Fine-tune a copy of the 300-label student for a fixed number of image-steps on ``data``."""
    seed_everything(seed)
    model = copy.deepcopy(start)
    loader = DataLoader(data, batch_size=32, shuffle=True, collate_fn=collate_detection, generator=torch.Generator().manual_seed(seed))
    epochs = max(1, round(image_steps / len(data)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
    history = fit(model, loader, optimizer, epochs, device=device, hooks=hooks, scheduler=scheduler)
    return model, history


# %%
# NBVAL_IGNORE_OUTPUT
control, _ = continue_training(labelled, hooks=[])
kd_hook = Distiller(teacher, {"cls": 1.0, "box": 1.0, "feature": 1.0}, temperature=2.0)
distilled, kd_history = continue_training(labelled + unlabelled, hooks=[kd_hook])
test_loader = DataLoader(materialize(CocoDetection(Path("..") / "data" / "test" / "annotations.json"), progress=False),
                         batch_size=50, collate_fn=collate_detection)  # the held-out split: the lr and threshold were chosen on val
preds = {name: predict(model, test_loader, device) for name, model in
         (("more training, 300 labels", control), ("pseudo-labels + soft terms", distilled))}
test_targets = preds["more training, 300 labels"][1]
live = {name: mean_average_precision(p, test_targets)["map"] for name, (p, _) in preds.items()}
for name, value in live.items():
    print(f"{name:<28} test mAP@[.5:.95] {value:.3f}   (3,000 image-steps on top of the start's 12,000)")
d = paired_bootstrap_map(preds["pseudo-labels + soft terms"][0], preds["more training, 300 labels"][0], test_targets)
print(f"difference {d['value'] * 100:+.1f} points, paired bootstrap 95 % CI [{d['low'] * 100:+.1f}, {d['high'] * 100:+.1f}] "
      f"over the {d['num_images']} test images: {'within noise' if d['within_noise'] else 'more than the noise'}")
gain = live["pseudo-labels + soft terms"] - live["more training, 300 labels"]
teacher_test_map = evaluate(teacher, test_loader, device)["map"]
print(f"teacher {teacher_test_map:.3f} on test: distillation closes {gain / (teacher_test_map - live['more training, 300 labels']):.0%} of the remaining gap")
print("teacher got gradients:", any(p.grad is not None for p in kd_hook.teacher.parameters()))

# %% [markdown]
# The gain over the control, +10.0 points, is far outside the noise of which 200 images happen to be in the test split (the paired bootstrap interval is +8.4 to +11.5). The 34 % here is measured from the control (0.592) after a short fine-tune with 700 unlabelled images — a different budget from the benchmark below, so the two percentages are not comparable.

# %%
fig, ax = plt.subplots(figsize=(7, 3))
for key in ("loss_cls", "loss_giou", "kd_cls", "kd_box", "kd_feature"):
    if key in kd_history:
        values = torch.tensor(kd_history[key])
        ax.plot(F.avg_pool1d(values[None, None], 5, 1).flatten(), label=key)
ax.set_yscale("log")
ax.set_xlabel("optimizer step")
ax.set_ylabel("loss term (5-step mean)")
ax.legend(fontsize=8, ncol=5)
ax.set_title("The detection losses and the distillation terms, during the live run")
plt.show()

# %% [markdown]
# ## 7. The ablation, over 3 seeds
#
# `benchmarks/distill_sweep.py --labeled 300` runs each setting for 3 seeds (initialisation and data order) from scratch, with the converged width-2 teacher (0.893) and a width-1 student, T = 2. Every setting gets the budget of the student trained alone, **12,000 image-steps**: 40 epochs of the 300 labelled images for the soft-term rows, 6 epochs of all 2,000 images (300 labelled + 1,700 pseudo-labelled) for the pseudo-label rows — the table lists both. Each row is compared with the student alone on the **test** split (the settings and their weights were chosen on val), by the interval of the seed-by-seed differences: a setting and the student alone share each seed's initialisation and data order, so the comparison is paired (`seed_difference(..., paired=True)`; an interval containing 0 is *within noise*). (One to three minutes per run on one CPU core; the table loads its JSON.)

# %%
# NBVAL_CHECK_OUTPUT
sweep = json.loads((RESULTS / "distill_sweep_labeled300.json").read_text())
vm, t_map, epochs = sweep["test_map"], sweep["teacher"]["test_map"], sweep["epochs"]  # reported on test
labels = {"student": "student alone", "cls": "+ dense score KD", "box": "+ box KD", "feature": "+ feature imitation",
          "all": "+ all three soft terms", "pseudo": "pseudo-labels", "pseudo_all": "pseudo-labels + all three"}
order = [k for k in labels if k in vm]
base = vm["student"]["mean"]
print(f"{'setting':<26}{'images':>7}{'epochs':>7}{'test mAP, mean ± std':>22}{'Δ vs alone [paired CI]':>25}  {'verdict':<13}{'gap closed':>10}")
for k in order:
    images = 300 if not k.startswith("pseudo") else sweep["config"]["train_images"]
    row = f"{labels[k]:<26}{images:>7}{epochs[k]:>7}{vm[k]['mean']:>13.3f} ± {vm[k]['std']:.3f} (n={vm[k]['n']})"
    if k != "student":  # the same seed gives a setting and the student alone the same initialisation and data order
        d = seed_difference(vm[k]["runs"], vm["student"]["runs"], paired=True)
        call = "within noise" if d["within_noise"] else ("gain" if d["difference"] > 0 else "loss")
        row += f"{d['difference'] * 100:>+9.1f} [{d['low'] * 100:+5.1f}, {d['high'] * 100:+5.1f}]  {call:<13}{(vm[k]['mean'] - base) / (t_map - base):>10.0%}"
    print(row)
print(f"{'teacher (width 2)':<26}{'':>14}{t_map:>13.3f}   ({sweep['teacher']['parameters']:,} parameters)")

# %%
fig, ax = plt.subplots(figsize=(8, 3.6))
means, stds = [vm[k]["mean"] for k in order], [vm[k]["std"] for k in order]
colors = ["tab:gray"] + ["tab:blue"] * (order.index("all")) + ["tab:green"] * (len(order) - order.index("all") - 1)
ax.bar(range(len(order)), means, yerr=stds, capsize=4, color=colors)
for i, k in enumerate(order):
    ax.plot([i] * len(vm[k]["runs"]), vm[k]["runs"], "k.", ms=4)
ax.axhline(t_map, color="tab:red", ls="--", label=f"teacher {t_map:.3f}")
ax.set_xticks(range(len(order)), [textwrap.fill(labels[k], 14) for k in order], fontsize=8)
ax.set_ylim(0.4, 0.95)
ax.set_ylabel("test mAP@[.5:.95]")
ax.set_title("300 labelled images: mean ± std over 3 seeds (dots: single seeds), test")
ax.legend(loc="upper left")
plt.show()

# %% [markdown]
# Reading the ablation:
#
# * **Most soft terms do not show above the noise** (test split, paired intervals). Feature imitation is the only one that does, and only just: +3.3 points (interval +0.9 to +5.6; 10 % of the gap). The dense score term (+0.4), the box term (−2.3) and all three together (+3.1, −3.3 to +9.5) are within noise. The student alone spreads ±1.2 points over 3 seeds; a gain of 3 points is about the smallest 3 seeds can show here.
# * **Pseudo-labels are the big lever** — but note the comparison: the soft-term rows train on the 300 labelled images only, the pseudo rows also on the 1,700 unlabelled ones, so the difference measures *using unlabelled data*, not one loss against another. Pseudo-labels alone close 55 % of the gap (+17.8 points); adding the soft terms gives 59 % (+1.4 over pseudo-labels alone, within noise: −1.7 to +4.5) and narrows the seed-to-seed spread (std 0.018 → 0.007).
# * Over the student alone, pseudo-labels + soft terms gain 19.2 points (interval +18.0 to +20.4): the bar of "closing at least 40 % of the gap, more than the noise" is met in this regime.
# * Val, where the settings were chosen, tells the same story with one exception: there the box term's −1.7 (−2.9 to −0.5) is a loss and feature imitation's +3.7 (−0.7 to +8.1) within noise — the two rows closest to the edge of the noise swap sides between the splits. Read them as "about zero" and "perhaps a little", not as settled.
#
# ## 8. Where distillation fails
#
# Three failures, each measured.
#
# **(a) The wrong temperature** — §4: at T = 1 the digit student learned nothing about unseen 3s.
#
# **(b) Plentiful, perfect labels, and a small student.** `benchmarks/distill_sweep.py` (no `--labeled`) trains a width-0.5 student (0.10 M parameters, 1/16 of the teacher) on all 2,000 labelled images, with and without the soft terms, for 6 epochs and again for 24. (Both causes — rich labels and a large capacity gap — are present at once here; we did not separate them.)
#
# **(c) A weak teacher.** The label-scarce recipe (pseudo-labels + soft terms, 3 seeds) with teachers of four qualities (test mAP): the 300-label student itself (self-training, 0.569), a width-1 model trained 6 epochs on all labels (`tiny_detector.pt`, 0.753, as large as the student), the width-2 teacher trained 6 epochs (`teacher.pt`, 0.804) and the converged width-2 teacher of §7 (0.885). All runs on one CPU core each.

# %%
# NBVAL_CHECK_OUTPUT
full = {tag: json.loads((RESULTS / f"distill_sweep{tag}.json").read_text()) for tag in ("", "_24ep")}
print(f"(b) all 2,000 images labelled, width-{full['']['config']['student_width']} student "
      f"({full['']['student_parameters']:,} parameters), teacher {full['']['teacher']['test_map']:.3f}; test")
print(f"    {'setting':<24}{'epochs':>7}{'test mAP, mean ± std':>22}{'Δ vs alone [paired CI]':>25}  verdict")
for tag, result in full.items():
    f_vm = result["test_map"]
    for k in [k for k in labels if k in f_vm]:
        row = f"    {labels[k]:<24}{result['epochs'][k]:>7}{f_vm[k]['mean']:>13.3f} ± {f_vm[k]['std']:.3f} (n={f_vm[k]['n']})"
        if k != "student":
            d = seed_difference(f_vm[k]["runs"], f_vm["student"]["runs"], paired=True)
            row += f"{d['difference'] * 100:>+9.1f} [{d['low'] * 100:+5.1f}, {d['high'] * 100:+5.1f}]  " + ("within noise" if d["within_noise"] else "gain" if d["difference"] > 0 else "loss")
        print(row)
teachers = {"the student itself": "_teacher_self", "width 1, 6 epochs": "_teacher_w1", "width 2, 6 epochs": "_teacher_w2"}
weak = {}
for name, tag in teachers.items():
    result = json.loads((RESULTS / f"distill_sweep_labeled300{tag}.json").read_text())
    weak[name] = (result["teacher"]["test_map"], result["test_map"]["pseudo_all"], result["device"])
weak["width 2, converged (§7)"] = (t_map, vm["pseudo_all"], sweep["device"])
print("(c) teacher                   teacher mAP   student (pseudo + soft), 3 seeds   device   (test)")
for name, (t, s, dev) in weak.items():
    print(f"    {name:<24}{t:>10.3f}{s['mean']:>14.3f} ± {s['std']:.3f}{dev:>19}")
print(f"    no teacher (student alone, 300 labels){base:>11.3f} ± {vm['student']['std']:.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
ax = axes[0]
ticks = []
for i, (tag, result) in enumerate(full.items()):
    f_vm = result["test_map"]
    for j, k in enumerate(("student", "all")):
        x = 3 * i + j
        ax.bar(x, f_vm[k]["mean"], yerr=f_vm[k]["std"], capsize=4, color="tab:gray" if k == "student" else "tab:blue")
        ax.plot([x] * f_vm[k]["n"], f_vm[k]["runs"], "k.", ms=4)
        ticks.append((x, f"{labels[k]}\n{result['epochs'][k]} epochs"))
ax.axhline(full[""]["teacher"]["test_map"], color="tab:red", ls="--", label="teacher")
ax.set_xticks([x for x, _ in ticks], [s for _, s in ticks], fontsize=7)
ax.set_ylim(0.4, 0.95)
ax.set_ylabel("test mAP@[.5:.95]")
ax.set_title(f"(b) all 2,000 images labelled, width-{full['']['config']['student_width']} student")
ax.legend(fontsize=8)
ax = axes[1]
t_maps = [t for t, _, _ in weak.values()]
ax.errorbar(t_maps, [s["mean"] for _, s, _ in weak.values()], yerr=[s["std"] for _, s, _ in weak.values()], fmt="o-", capsize=4,
            label="student, pseudo-labels + soft terms")
ax.plot([0.5, 0.9], [0.5, 0.9], ":", color="gray", label="student = teacher")
ax.axhline(base, color="tab:gray", ls="--", label="student alone")
for name, (t, s, _) in weak.items():
    ax.annotate(name, (t, s["mean"]), textcoords="offset points", xytext=(6, -14 if t > 0.6 else 8), fontsize=8)
ax.set_xlabel("teacher's test mAP")
ax.set_ylabel("student's test mAP")
ax.set_title("(c) 300 labels: the student follows its teacher")
ax.legend(fontsize=8, loc="upper left")
fig.tight_layout()
plt.show()

# %% [markdown]
# * **(b)** With every image labelled, no soft term is measurably useful at either budget (test split, paired intervals). At 6 epochs the student alone is far from converged (0.594 ± 0.045 on test) and its seeds disagree by several points: "+ dense score KD, +3.9" looks like a gain but its interval runs from −0.1 to +7.9, and all three terms together (+2.5, −0.2 to +5.1) are within noise too (on val, where nothing here was chosen, that last interval just missed 0: +2.8, +0.4 to +5.2 — one more reason to report on one split, fixed in advance). Train 4× longer and the question closes: at 24 epochs the student alone reaches 0.764 ± 0.016 and all three soft terms add +0.3 (−0.9 to +1.5). (24 epochs may still be short of this student's plateau: the width-1 detector needed 48.) The labels already say what the teacher could, and a student with 1/16 of the teacher's parameters may be limited by its size (Mirzadeh et al. 2020 report KD's gains shrinking as the capacity gap grows; we did not test that separately). Distil when labels are scarce, noisy or coarse — or when the teacher's outputs carry something labels do not.
# * **(c)** A student taught by itself gains little (test 0.562 → 0.595: its own pseudo-labels repeat its own mistakes); a teacher is only useful when it knows *more* than the student. The student's test mAP climbs with the teacher's — 0.720, 0.738, 0.754 for teachers of 0.753, 0.804, 0.885 — with diminishing returns: the converged teacher's last 8 points bought the student 1.6. The teacher bounds what distillation can give; so do the student's capacity and its 300 labels.
#
# ## 9. The same idea on torchvision's Faster R-CNN
#
# The Faster R-CNN setting of §1 is a two-stage detector. Its class scores come from the ROI head, one vector of K + 1 logits (background included) per *region* — a true softmax, so Hinton's `kd_loss` applies directly. The catch: teacher and student must score **the same regions**. `roi_class_logits(detector, images, boxes)` runs a detector's backbone, RoIAlign on given boxes, box head and predictor; `RoIDistiller` feeds both networks the ground-truth boxes plus jittered copies of them (objects and near-misses) and adds `T²·KL` between the two class distributions to the student's own four Faster R-CNN losses.
#
# Training a good Faster R-CNN teacher takes far longer than this notebook's budget on a CPU (notebook 02 §7), so here we show the mechanics on small, untrained models: the loss is zero against an identical teacher, positive otherwise, and the hook runs inside `fit` without the teacher ever changing. (The KL values are tiny because untrained heads give nearly uniform class distributions; with a trained teacher they are not.)

# %%
# NBVAL_IGNORE_OUTPUT
seed_everything(0)
frcnn_teacher, frcnn_student = build_torchvision_detector(num_classes=3).eval(), build_torchvision_detector(num_classes=3)
scenes_cpu = [img for img, _ in scenes[:2]]
regions = [t["boxes"] for _, t in scenes[:2]]
with torch.no_grad():
    t_logits = roi_class_logits(frcnn_teacher, scenes_cpu, regions)
    print("ROI class logits:", tuple(t_logits.shape), "(regions, 3 classes + background)")
    print(f"kd_loss vs itself {kd_loss(t_logits, t_logits).item():.2e}; "
          f"vs another network {kd_loss(roi_class_logits(frcnn_student.eval(), scenes_cpu, regions), t_logits).item():.4f}")
roi_hook = RoIDistiller(frcnn_teacher, weight=1.0, temperature=4.0)
loader = DataLoader(scenes, batch_size=4, collate_fn=collate_detection)
optimizer = torch.optim.SGD(frcnn_student.parameters(), lr=1e-3, momentum=0.9)
history = fit(frcnn_student, loader, optimizer, epochs=2, device=device, hooks=[roi_hook], progress=False)
print("loss terms per step:", {k: [round(v, 3) for v in history[k]] for k in ("loss_classifier", "loss_kd_roi")})
print("teacher got gradients:", any(p.grad is not None for p in roi_hook.teacher.parameters()))

# %% [markdown]
# ## 10. Distillation and quantization compose
#
# A distilled student is an ordinary model, so notebook 05's tools apply unchanged. We quantize the student distilled live in §6 the way notebook 05 deploys: 8-bit PTQ, and 8-bit QAT for one short epoch on the same 300 labelled + 700 pseudo-labelled images with the `Distiller` still attached (score and box terms; the feature term would need a new adapter for the quantized network's features). QAT's equal-budget control is the same epoch in float, with the same teacher. 4-bit PTQ is shown for contrast. Every model is compared with the distilled fp32 model on the same val images (paired bootstrap): one run each, so the images are the noise we can measure.

# %%
# NBVAL_IGNORE_OUTPUT
distilled = distilled.to(device).eval()
calib = [img.to(device) for img, _ in materialize(SyntheticShapes(64, seed=123), progress=False)]
calib_batches = [torch.stack(calib[i:i + 16]) for i in range(0, 64, 16)]


def forward_raw(model, images):
    return model.forward_raw(images)


compose = {"distilled fp32": distilled}
for bits in (8, 4):
    compose[f"PTQ W{bits}A{bits}"] = post_training_quantize(distilled, calib_batches, forward_raw, weight_bits=bits, act_bits=bits,
                                                            act_observer="percentile")
qat = calibrate(prepare_qat(distilled, weight_bits=8, act_bits=8), calib_batches, forward_raw)
qat_loader = DataLoader(labelled + unlabelled, batch_size=32, shuffle=True, collate_fn=collate_detection,
                        generator=torch.Generator().manual_seed(0))
optimizer = torch.optim.AdamW(qat.parameters(), lr=5e-4, weight_decay=1e-4)
fit(qat, qat_loader, optimizer, epochs=1, device=device,
    hooks=[QATSchedule(freeze_bn_epoch=None), Distiller(teacher, {"cls": 1.0, "box": 1.0}, temperature=2.0)])
compose["QAT W8A8 + KD, 1 epoch"] = qat
seed_everything(0)  # QAT's equal-budget control: the same epoch, the same teacher, in float
float_control = copy.deepcopy(distilled).train()
optimizer = torch.optim.AdamW(float_control.parameters(), lr=5e-4, weight_decay=1e-4)
fit(float_control, DataLoader(labelled + unlabelled, batch_size=32, shuffle=True, collate_fn=collate_detection,
                              generator=torch.Generator().manual_seed(0)),
    optimizer, epochs=1, device=device, hooks=[Distiller(teacher, {"cls": 1.0, "box": 1.0}, temperature=2.0)])
compose["fp32 + KD, 1 epoch (control)"] = float_control.eval()
compose_preds = {name: predict(model, test_loader, device)[0] for name, model in compose.items()}
for name, p in compose_preds.items():
    row = f"{name:<24} test mAP {mean_average_precision(p, test_targets)['map']:.3f}"
    if name != "distilled fp32":
        d = paired_bootstrap_map(p, compose_preds["distilled fp32"], test_targets)
        row += f"   vs fp32 {d['value'] * 100:+5.1f} points, paired 95 % CI [{d['low'] * 100:+5.1f}, {d['high'] * 100:+5.1f}]"
    print(row)
for a, b in (("QAT W8A8 + KD, 1 epoch", "PTQ W8A8"), ("QAT W8A8 + KD, 1 epoch", "fp32 + KD, 1 epoch (control)")):
    d = paired_bootstrap_map(compose_preds[a], compose_preds[b], test_targets)
    print(f"{a} vs {b}: {d['value'] * 100:+.1f} points, paired 95 % CI [{d['low'] * 100:+.1f}, {d['high'] * 100:+.1f}] -> "
          f"{'within noise' if d['within_noise'] else 'more than the noise'}")
print(f"(the undistilled control of §6, fp32: {live['more training, 300 labels']:.3f}; teacher: {teacher_test_map:.3f}; all on test)")

# %% [markdown]
# On test, the distilled student keeps its advantage through 8-bit quantization: 8-bit PTQ costs 0.1 points (0.692 → 0.691; interval −0.4 to +0.3, within noise), and both 8-bit models stay far above the undistilled control of §6 (0.592). The extra epoch did not help: the float control drops to 0.678 (−1.3 points, −2.1 to −0.6; one more epoch at 5·10⁻⁴ on 1,000 mostly pseudo-labelled images disturbs a model that had finished its schedule), and QAT with the same epoch ends at 0.684 — 0.6 above its float control (+0.1 to +1.1) but 0.7 below plain PTQ (−1.5 to +0.2, within noise). For this model PTQ was at least as good an 8-bit deployment, for no training; an extra QAT epoch pays only with a recipe that does not hurt the float model (notebook 05's QAT sweep, from the converged detector, compares the two properly over 3 seeds). This QAT model is also not the one that gets deployed: notebook 05's int8 export loads `qat8.pt`, which `benchmarks/qat_sweep.py` trains from the converged, undistilled width-1 detector (`tiny_detector_converged.pt`, all 2,000 labels); the same path (fold BN, `export_onnx`, `quantize_onnx`) would take this model unchanged. At 4 bits, PTQ costs 9.5 points; notebook 05's QAT recipe (2,000 labelled images, BN frozen after an epoch) is the way back. The capstone (notebook 08) chains distillation, pruning and int8, each step against its control.
#
# ## 11. Exercises
#
# **Exercise 1.** Write `my_kd_loss(student_logits, teacher_logits, temperature)`: Hinton's $T^2 \cdot \mathrm{KL}(\mathrm{softmax}(t/T) \,\|\, \mathrm{softmax}(s/T))$, summed over classes and averaged over the batch; shapes (B, K), (B, K) → (). The check compares it with PyTorch's `F.kl_div` and names the usual mistakes (a missing T², softmax where log-softmax belongs, the sign error of the often-copied `−α·KL`, KL the wrong way round).

# %%
from course_utils.exercises import check_feature_imitation, check_kd_loss


def my_kd_loss(student_logits, teacher_logits, temperature):
    # YOUR CODE HERE
    raise NotImplementedError


check_kd_loss(my_kd_loss)


# %% [markdown]
# **Exercise 2.** Write `my_feature_imitation(student_features, teacher_features, mask)`: $\sum_{a \in \text{mask}} \lVert f_{s,a} - f_{t,a} \rVert^2 / (2 \cdot N_\text{mask} \cdot C)$ for features (B, C, h, w) and a boolean mask (B, h, w). Only the student should receive a gradient.

# %%
def my_feature_imitation(student_features, teacher_features, mask):
    # YOUR CODE HERE
    raise NotImplementedError


check_feature_imitation(my_feature_imitation)

# %% [markdown]
# **Exercise 3 — discussion (no check).** There is no single right answer, so no check follows: compare your counts of recognised 3s with §4's. In §4, keep T = 8 and α = 1 but give the student *fewer* soft targets: train on `without_threes[:100]`, with `epochs` raised so the number of optimizer steps matches §4 (about 5 × 41 steps). How many 3s does it still recognise? Then, on the full `without_threes`, try `DigitsCNN(width=2, batch_norm=True)` (about 1/30 of the teacher). What do the two results say about what carries the dark knowledge — the data, or the capacity?
#
# Solutions: `solutions/ex06_knowledge_distillation.py`.
#
# ## Takeaways
#
# * KD matches softened distributions: `T²·KL(softmax(t/T) ‖ softmax(s/T))`; T > 1 exposes the teacher's ranking of wrong answers, T² keeps the gradient's scale. Both terms of Hinton's loss are *added*.
# * A detector needs several terms: dense scores (foreground-weighted), boxes where the teacher sees objects, and features through an adapter. `Distiller` adds them to the training loop as a hook, with a frozen teacher.
# * Measured on the course detector (3 seeds, each against the student trained as long alone, on the test split): with 300 labels, feature imitation is the only soft term that shows above the noise, and only just (+3.3 points, 10 % of the gap to the teacher); the teacher's pseudo-labels on unlabelled images + soft terms close 59 % (+19 points). With all labels, no soft term is measurable, at 6 or at 24 epochs. Fine-tuning the converged width-1 detector with the teacher (notebook 08) adds 0.7 points on val but 0.3 on test, within noise: not shown to help. Distillation pays when labels are scarce and the teacher knows more than the student.
# * It fails with the wrong temperature, a weak teacher, or nothing left to teach; measure student-alone over several seeds before crediting KD.
# * Distilled students quantize like any other model.
#
# **Regenerate** (the sweep script's docstring has the details; one to four minutes per run on one CPU core):
#
# * §7: `python benchmarks/distill_sweep.py --labeled 300 --student-width 1.0 --configs student cls box feature all pseudo pseudo_all` (also writes `student_student_labeled300.pt`, the start of §6);
# * §8b: `python benchmarks/distill_sweep.py --configs student cls box feature all` and `python benchmarks/distill_sweep.py --epochs 24 --configs student all --tag _24ep`;
# * §8c: `python benchmarks/distill_sweep.py --labeled 300 --student-width 1.0 --configs pseudo_all --teacher benchmarks/results/student_student_labeled300.pt --teacher-width 1.0 --tag _teacher_self`, `python benchmarks/distill_sweep.py --labeled 300 --student-width 1.0 --configs pseudo_all --teacher benchmarks/results/tiny_detector.pt --teacher-width 1.0 --tag _teacher_w1` and `python benchmarks/distill_sweep.py --labeled 300 --student-width 1.0 --configs pseudo_all --teacher benchmarks/results/teacher.pt --tag _teacher_w2` (these two ran with `--device cuda --threads 4` on one data-centre GPU).
