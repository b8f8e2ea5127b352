# %% [markdown]
# # 03 · Gradient clipping
#
# Sometimes one batch gives a gradient a thousand times larger than usual. One step then throws the weights far away, and the loss turns into `nan`. **Gradient clipping** caps the gradient, so one bad batch cannot wreck training.
#
# **You will learn to**
# 1. place clipping in the training step;
# 2. recognise a gradient explosion;
# 3. clip by value, by norm and per unit (AGC), and pick a threshold;
# 4. judge clipping against a baseline that trains.

# %% [markdown]
# > **Terms** (more, such as *within noise*, in the [glossary](../docs/glossary.md))
# > * **momentum 0.9:** each SGD step is −(learning rate × gradient) plus 0.9 × the previous step.
# > * **gradient norm** $\lVert g\rVert = \sqrt{\sum_i g_i^2}$: the gradient's length; the **global** norm covers all parameters.
# > * **unit:** one output channel of a conv, or one row of a linear layer's weights.
# > * **plain network:** one without batch norm.
# > * **diverge:** the loss becomes `nan` or infinite, or ends higher than it started.
# > * **p90:** the value that 90 % of the recorded values lie below.
#
# *Time: about 50 minutes. Terms: [glossary](../docs/glossary.md) (English–中文).*

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.utils.data import DataLoader

from course_utils import (
    SyntheticShapes, TinyDetector, collate_detection, fit, get_device, materialize, seed_difference, seed_everything,
)
from course_utils.clipping import (
    GradientClipping,
    GradNormMonitor,
    adaptive_clip_grad_,
    clip_grad_norm_,
    clip_grad_value_,
    clip_lab_run,
)
from course_utils.train import NonFiniteLossError

RESULTS = Path("..") / "benchmarks" / "results"
device = get_device()  # the GPU when there is one

# %% [markdown]
# ## 1. Where clipping sits
#
# One training step in PyTorch, with clipping:
#
# ```python
# optimizer.zero_grad()
# loss.backward()                                     # gradients g = dL/dw
# torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)   # clipping: changes g only
# optimizer.step()                                    # w <- w - lr * g  (plain SGD)
# ```
#
# In the course's loop, clipping is a hook: `fit(..., hooks=[GradientClipping("norm", 1.0)])` runs it between `backward()` and `step()`.

# %% [markdown]
# > ### Myth vs fact — "clipping makes the model smaller and faster"
# > **Myth** (a common claim): *gradient clipping reduces a model's size and computational cost.*
# >
# > **Fact:** clipping rescales **gradients during training**; the trained model keeps its size and inference cost. Clipping makes training *stable*, not cheaper.

# %% [markdown]
# ## 2. Watching gradients explode
#
# Train the course detector with SGD (momentum 0.9) at learning rate 0.1, recording the global gradient norm at every step (`GradNormMonitor`). Once with batch norm (the default), once as a plain network (`TinyDetector(batch_norm=False)`).

# %%
seed_everything(0)
train_small = materialize(SyntheticShapes(320, seed=0), progress=False)


def explode_demo(batch_norm: bool, steps: int = 30) -> tuple[dict, bool]:
    seed_everything(0)
    model = TinyDetector(batch_norm=batch_norm)
    loader = DataLoader(train_small, batch_size=32, shuffle=True, collate_fn=collate_detection,
                        generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    try:
        return fit(model, loader, optimizer, epochs=3, device=device, hooks=[GradNormMonitor()],
                   progress=False, max_steps=steps), False
    except NonFiniteLossError as err:  # the loop's guard stopped a diverged run; its history survives
        return err.history, True


runs = {"with batch norm": explode_demo(True), "plain (no batch norm)": explode_demo(False)}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for name, (history, died) in runs.items():
    label = name + (f" — NaN after {len(history['loss'])} steps" if died else "")
    axes[0].plot(history["grad_norm"], marker=".", label=label)
    axes[1].plot(history["loss"], marker=".", label=label)
axes[0].set_yscale("log")
axes[0].set_ylabel("global gradient norm (log)")
axes[1].set_yscale("log")
axes[1].set_ylabel("training loss (log)")
for ax in axes:
    ax.set_xlabel("step")
    ax.legend(fontsize=8, loc="upper left")  # the curves stay low until the explosion at the right
    ax.grid(alpha=0.3)
fig.suptitle("SGD at lr = 0.1: the plain detector's gradient norm explodes")
fig.tight_layout()
plt.show()


# %% [markdown]
# The plain network's gradient norm grows by orders of magnitude in a few steps; then the loss becomes `nan` and the loop stops.
#
# It is a feedback loop: a too-large step makes the weights larger, so activations and gradients grow, so the next step is larger still. Batch norm breaks the loop: a layer's output no longer depends on its weights' scale.

# %% [markdown]
# ## 3. Two ways to clip
#
# * **By value** (threshold $c$): clamp every gradient entry, $g_i \leftarrow \min(\max(g_i, -c), c)$. This changes the gradient's **direction** whenever some entries are cut and others are not.
# * **By norm** (threshold $\tau$): rescale the whole gradient, $g \leftarrow g \cdot \min\!\big(1, \frac{\tau}{\lVert g\rVert}\big)$. This keeps the **direction** and only shortens the gradient.
#
# `course_utils.clipping` has both (`clip_grad_value_`, `clip_grad_norm_`). On a 2-D toy gradient:

# %% tags=["nbval-check-output"]
def clipped(g: torch.Tensor, how: str, limit: float) -> torch.Tensor:
    w = torch.nn.Parameter(torch.zeros(2))
    w.grad = g.clone()
    clip_grad_value_([w], limit) if how == "value" else clip_grad_norm_([w], limit)
    return w.grad


g = torch.tensor([3.0, 0.8])
by_value, by_norm = clipped(g, "value", 1.0), clipped(g, "norm", 1.0)


def angle(v: torch.Tensor) -> float:
    return float(torch.rad2deg(torch.atan2(v[1], v[0])))


for name, v in (("original", g), ("by value (c=1)", by_value), ("by norm (tau=1)", by_norm)):
    print(f"{name:16s} g = ({v[0]:.3f}, {v[1]:.3f})   length {v.norm():.3f}   direction {angle(v):5.1f} deg")

# %%
fig, ax = plt.subplots(figsize=(5, 4))
ax.add_patch(plt.Rectangle((-1, -1), 2, 2, fill=False, linestyle="--", color="tab:orange", label="value limit |g_i| ≤ 1"))
ax.add_patch(plt.Circle((0, 0), 1, fill=False, linestyle="--", color="tab:green", label="norm limit ||g|| ≤ 1"))
for v, color, name in ((g, "black", "original"), (by_value, "tab:orange", "clipped by value"), (by_norm, "tab:green", "clipped by norm")):
    ax.annotate("", xy=(float(v[0]), float(v[1])), xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": color, "lw": 2})
    ax.plot([], [], color=color, label=name)
ax.set_xlim(-1.3, 3.3)
ax.set_ylim(-1.3, 1.6)
ax.set_aspect("equal")
ax.set_xlabel("gradient component $g_1$")
ax.set_ylabel("gradient component $g_2$")
ax.legend(fontsize=8, loc="upper left")
ax.set_title("Value clipping turns the step; norm clipping only shortens it")
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## 4. Adaptive gradient clipping (AGC)
#
# A global threshold treats a tiny bias and a large conv kernel alike. **AGC** (Brock et al. 2021) clips each unit's gradient $G_i$ relative to its weights $W_i$:
#
# $$\text{if } \frac{\lVert G_i\rVert}{\max(\lVert W_i\rVert, \epsilon)} > \lambda:\quad G_i \leftarrow \lambda\,\frac{\max(\lVert W_i\rVert, \epsilon)}{\lVert G_i\rVert}\, G_i .$$
#
# The ratio $\lVert G_i\rVert / \lVert W_i\rVert$ is roughly how much one step changes the unit, relative to its size. Capping it at $\lambda$ (typically 0.01–0.1) means no unit is blown away in one step; $\epsilon$ lets weights that start at zero still move.

# %%
w = torch.nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 0.01]]))  # two units: a big one and a tiny one
w.grad = torch.tensor([[0.05, 0.0], [0.0, 0.05]])  # the same gradient for both
adaptive_clip_grad_([w], clip_factor=0.1, eps=1e-3)
print("gradient after AGC (lambda = 0.1):", [[round(v, 4) for v in row] for row in w.grad.tolist()])
print("big unit untouched (0.05 / 1.0 = 0.05 < 0.1); tiny unit capped at 0.1 x 0.01 = 0.001")

# %% [markdown]
# ## 5. Choosing the threshold from evidence
#
# A threshold copied from elsewhere may never bite, or bite on every step: gradient norms depend on the model and the loss. Instead, record the norms of unclipped steps at a learning rate that works, and pick a high percentile: clipping then touches only rare spikes. The lab of section 6 did this:

# %% tags=["nbval-check-output"]
lab = json.loads((RESULTS / "clipping_explosion.json").read_text())
calibration = np.array(lab["calibration_grad_norms"])
print(f"{len(calibration)} calibration steps at lr {lab['config']['safe_lr']}: "
      f"median {np.median(calibration):.2f}, p90 {np.percentile(calibration, 90):.2f}, max {calibration.max():.2f}")
print(f"norm threshold used in the lab = p{lab['config']['percentile']:g} = {lab['norm_threshold']:.3f}")

# %%
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.hist(calibration, bins=20, color="tab:blue")
for q, style in ((50, ":"), (90, "--"), (99, "-.")):
    ax.axvline(np.percentile(calibration, q), color="tab:red", linestyle=style, label=f"p{q}")
ax.set_xlabel("global gradient norm (unclipped, safe learning rate)")
ax.set_ylabel("number of steps")
ax.set_title("Pick the threshold from recorded norms")
ax.legend()
plt.show()

# %% [markdown]
# **Too small a threshold silently lowers the learning rate.** If $\lVert g\rVert > \tau$ on *every* step, plain SGD (no momentum) always steps by $\eta\tau$ (learning rate × threshold). So log how often clipping is active: `GradientClipping` records it in `history["clip_active"]`.

# %% [markdown]
# ## 6. The explosion lab: can clipping rescue a learning rate that diverges?
#
# All runs train the same plain detector on the same 2,000 images for the same number of steps, 5 seeds each:
#
# * **`safe`**: learning rate 0.03 (decayed to 0 over the run), no clipping: the baseline;
# * **`none`**: learning rate 0.1, no clipping;
# * **`value`**, **`norm`**, **`agc`**: learning rate 0.1 with each rule.
#
# The goal, fixed before the runs: the best clipped rule reaches test mAP@0.5 ≥ 0.5, or ≥ 80 % of the baseline's. The best rule is chosen on **val**; the goal is read on **test**. A *dead* run ends without `nan` but learned nothing (val mAP@0.5 below 0.01). The 25 runs took half an hour; we load them:

# %% tags=["nbval-check-output"]
print(f"every run: {lab['steps_per_run']} SGD steps, {lab['config']['seeds']} seeds; "
      f"test mAP@0.5 as mean ± sample std over the seeds (a diverged run scores 0)")
print("threshold: value clips each entry to ±c; norm, the global norm to c; agc, each unit's ratio to c. "
      "clipped: the share of steps the rule changed")
print(f"{'run':<7}{'peak lr':>8}{'threshold':>10}{'clipped':>9}{'diverged':>10}{'dead':>6}{'test mAP@0.5':>16}")
for name, s in lab["summary"].items():
    dead = sum(r["map_50"] < 0.01 for r in lab["runs"][name] if not r["nonfinite"])  # trained to the end, learned nothing
    threshold = f"{s['threshold']:.3g}" if s["method"] != "none" else "-"
    print(f"{name:<7}{s['lr']:>8g}{threshold:>10}{s['clip_fraction']:>9.0%}{s['diverged']:>6d} / {s['runs']}{dead:>6d}"
          f"{s['test_map_50']['mean']:>10.3f} ± {s['test_map_50']['std']:.3f}")
goal = lab["goal"]
print(f"\nbest rule on val: {goal['best_clipped']}; on test it reaches "
      f"{goal['test_best_clipped_map_50'] / goal['test_baseline_map_50']:.0%} of the baseline's mAP@0.5 "
      f"-> goal {'met' if goal['met'] else 'missed'}")
d = seed_difference(lab["summary"][goal["best_clipped"]]["test_map_50"]["runs"], lab["summary"]["safe"]["test_map_50"]["runs"],
                    paired=True)  # the same seed gives both runs the same initialisation and data order: paired
print(f"{goal['best_clipped']} minus safe: {100 * d['difference']:+.1f} points, paired 95% CI "
      f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] -> {'within noise' if d['within_noise'] else 'a real difference'}")

# %%
colors = {"safe": "black", "none": "tab:red", "value": "tab:orange", "norm": "tab:green", "agc": "tab:blue"}
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for name, results in lab["runs"].items():
    for i, r in enumerate(results):
        axes[0].plot(r["loss"], color=colors[name], alpha=0.5, linewidth=1, label=name if i == 0 else None)
        if r["nonfinite"]:  # its loss shot up (to 1e17) and then became nan: mark where, at the top edge
            axes[0].scatter(len(r["loss"]) - 1, 700, marker="x", color=colors[name], zorder=3,
                            label="diverged (loss -> nan)" if i == 0 else None)
axes[0].set_yscale("log")
axes[0].set_ylim(0.7, 1e3)  # the diverged runs' losses leave the plot before their nan
axes[0].set_xlabel("step")
axes[0].set_ylabel("training loss (log)")
axes[0].set_title("5 seeds per run: stalled runs stay near 1.9, learning ones end near 0.9-1.3")
axes[0].legend(fontsize=8)
names = list(lab["summary"])
means = [lab["summary"][n]["test_map_50"]["mean"] for n in names]
axes[1].bar(names, means, color=[colors[n] for n in names], alpha=0.8)
for i, n in enumerate(names):  # every seed as a dot: a mean ± std hides that some seeds learn and others die
    axes[1].scatter([i] * len(lab["runs"][n]), [r["test_map_50"] for r in lab["runs"][n]], color="gray", edgecolor="black", zorder=3, s=18)
axes[1].axhline(0.8 * lab["goal"]["test_baseline_map_50"], color="gray", linestyle="--", linewidth=1, label="80 % of the safe baseline")
for i, n in enumerate(names):
    axes[1].text(i, 0.01, f"lr {lab['summary'][n]['lr']:g}\n{lab['summary'][n]['diverged']}/{lab['summary'][n]['runs']} diverged",
                 ha="center", fontsize=8, color="white" if means[i] > 0.1 else "black")
axes[1].set_ylabel("test mAP@0.5 (bar: mean; dots: seeds)")
axes[1].set_title("Same detector, data and steps; only the rule and the lr differ")
axes[1].legend(fontsize=8)
for ax in axes:
    ax.grid(alpha=0.3)
fig.tight_layout()
plt.show()


# %% [markdown]
# What the lab shows:
# * **The baseline trains**; at learning rate 0.1 without clipping, every seed diverges.
# * **At these thresholds, only AGC rescues it.** Chosen on val, it reaches 99 % of the baseline's test mAP@0.5: goal met. The paired difference is *within noise*: clipping made the high rate *usable*, not *better*.
# * **"No NaN" is not "rescued".** Value and norm clipping prevented every `nan`, yet most of their seeds ended dead.
# * AGC clipped every step, but unlike a smaller learning rate, each unit by its own factor.
#
# Each rule was tried at one threshold, so this ranking holds for these settings only.

# %% [markdown]
# ## 7. Exercises
#
# **Exercise 1 — global-norm clipping.** Complete `my_clip_grad_norm(parameters, max_norm)` (`parameters` may be a generator, like `model.parameters()`: loop over it once): skip parameters whose `.grad` is `None`; compute the L2 norm of all gradients together; multiply every gradient in place by $\min(1, \text{max\_norm} / (\lVert g\rVert + 10^{-6}))$; return the norm *before* clipping. Don't call `clip_grad_norm_`. Solutions: `solutions/ex03_gradient_clipping.py`.
#
# *Sanity check:* a single gradient `[3., 4.]` with `max_norm=1` returns 5 and becomes `[0.6, 0.8]`.

# %%
from course_utils.exercises import check_agc, check_clip_grad_norm


def my_clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError


check_clip_grad_norm(my_clip_grad_norm)


# %% [markdown]
# **Exercise 2 — AGC for one parameter.** Complete `my_agc(param, clip_factor, eps)` in place, following the formula of section 4: units are the slices along dimension 0 for matrices and conv kernels (norm over all other dimensions, e.g. `torch.linalg.vector_norm(x, dim=(1, 2, 3), keepdim=True)`), and the whole tensor for a bias.

# %%
def my_agc(param: torch.nn.Parameter, clip_factor: float, eps: float) -> None:
    # YOUR CODE HERE
    raise NotImplementedError


check_agc(my_agc)

# %% [markdown]
# ## Takeaways
#
# * Clipping sits between `backward()` and `step()`: it changes the update, never the model's size or speed.
# * Norm clipping keeps the direction; value clipping bends it; AGC caps each unit's step relative to its weights.
# * Pick the threshold as a high percentile of recorded norms, and log how often it is active (always active = a smaller learning rate).
# * Judge clipping against a baseline that trains. In the lab only AGC rescued the diverging rate, within noise of the baseline; "no NaN" is not "rescued".

# %% [markdown]
# ## Going deeper
#
# Everything below is optional: nothing in the core path depends on it. Each part stands on its own; read the ones you are curious about.

# %% [markdown]
# ### Gradient clipping is not detection post-processing
#
# > ### Myth vs fact — "gradient clipping is detection post-processing"
# > **Myth** (a common claim): *gradient clipping is a post-processing method for detection results: it computes the gradient of each detection and clips away the inaccurate, low-confidence ones.*
# >
# > **Fact:** post-processing (notebook 01) is decode → clip *boxes* to the image → score threshold → NMS → top-k, with no gradients at all. Dropping low-confidence detections is *score thresholding*; dropping inaccurate duplicates is *NMS*. *Gradient* clipping only exists inside training, between `loss.backward()` and `optimizer.step()`.

# %% [markdown]
# ### Clipping in Keras
#
# In Keras you pass the threshold **to the optimizer**:
#
# * `keras.optimizers.SGD(learning_rate=0.01, global_clipnorm=1.0)` is torch's `clip_grad_norm_`: one norm over all gradients;
# * `clipnorm=1.0` clips each variable's gradient separately;
# * `clipvalue=0.5` clips entries.
#
# Setting a variable `clip_threshold = 5` and never handing it to the optimizer clips nothing.

# %% [markdown]
# ### What else makes gradients explode
#
# The plain detector of section 2 is He-initialised: its weights are drawn with standard deviation $\sqrt{2/\text{fan-in}}$, which keeps ReLU activations at a steady scale through the layers. It still explodes at learning rate 0.1. Other classic triggers:
#
# * a learning rate, or a mixed-precision loss scale (below), set too high;
# * an unbounded (squared-error) box-regression loss hit by an outlier box, such as a mislabelled annotation. Fast R-CNN adopted the smooth-L1 loss partly for this reason. The course detector's GIoU and L1 terms have bounded gradients;
# * deep stacks without normalisation.

# %% [markdown]
# ### The explosion lab in full
#
# **Setup.** Every run lasts 6 epochs, 378 SGD steps (momentum 0.9, weight decay 1e-4). The learning rate decays by a cosine from its peak to 0, with **no warm-up**: a warm-up is the other common cure for early explosions and would hide the problem.
#
# **Where the settings came from.** The safe rate 0.03 was chosen by a one-seed pilot that is not part of the recorded lab: 0.01 / 0.03 / 0.1 reached val mAP 0.17 / 0.21 / NaN. Rates between 0.03 and 0.1 were not tried.

# %% [markdown]
# The norm threshold is p90 of section 5's 63 calibration steps (one epoch). With so few steps, p99 is almost the maximum and would hardly ever clip; with a longer calibration run, p99 is a common choice, and more steps give a steadier percentile. The value threshold (0.05) and the AGC factor (λ = 0.02, inside the paper's range 0.01–0.1) were set by hand, once, and not tuned on these results.
#
# The full table adds the thresholds, val mAP@0.5, test mAP (averaged over IoU 0.5:0.95) and how often clipping was active:

# %% tags=["nbval-check-output"]
print(f"every run: {lab['steps_per_run']} SGD steps ({lab['config']['epochs']} epochs of {lab['config']['train_images']:,} images), "
      f"{lab['config']['seeds']} seeds; mean ± sample std over the seeds (a diverged run scores 0)")
print(f"{'run':<7}{'peak lr':>8}{'rule':>7}{'threshold':>10}{'diverged':>10}{'dead':>6}{'val mAP@0.5':>16}{'test mAP':>16}{'test mAP@0.5':>16}{'clip active':>13}")
for name, s in lab["summary"].items():
    dead = sum(r["map_50"] < 0.01 for r in lab["runs"][name] if not r["nonfinite"])  # trained to the end, learned nothing
    threshold = f"{s['threshold']:.3g}" if s["method"] != "none" else "-"
    print(f"{name:<7}{s['lr']:>8g}{s['method']:>7}{threshold:>10}{s['diverged']:>6d} / {s['runs']}{dead:>6d}"
          f"{s['map_50']['mean']:>10.3f} ± {s['map_50']['std']:.3f}{s['test_map']['mean']:>10.3f} ± {s['test_map']['std']:.3f}"
          f"{s['test_map_50']['mean']:>10.3f} ± {s['test_map_50']['std']:.3f}{s['clip_fraction']:>12.0%}")
goal = lab["goal"]
print(f"\nbest clipping rule on val at lr {lab['config']['lr']:g}: {goal['best_clipped']} (val mAP@0.5 {goal['best_clipped_map_50']:.3f}); "
      f"on test its mAP@0.5 is {goal['test_best_clipped_map_50']:.3f} = "
      f"{goal['test_best_clipped_map_50'] / goal['test_baseline_map_50']:.0%} of the safe baseline's {goal['test_baseline_map_50']:.3f} "
      f"-> goal (>= 0.5, or >= 80 % of the baseline) {'met' if goal['met'] else 'missed'}")
for metric in ("test_map", "test_map_50"):  # the same seed gives both runs the same initialisation and data order: paired
    d = seed_difference(lab["summary"][goal["best_clipped"]][metric]["runs"], lab["summary"]["safe"][metric]["runs"], paired=True)
    print(f"{goal['best_clipped']} minus safe, {metric}: {100 * d['difference']:+.1f} points, paired 95% CI "
          f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] -> {'within noise' if d['within_noise'] else 'a real difference'}")


# %% [markdown]
# **The numbers.** At lr 0.03 all five seeds learn, to test mAP 0.223 ± 0.012 (mAP@0.5 0.358 ± 0.016). At lr 0.1 without clipping every seed's loss turns to NaN within 10–63 steps: in the first epoch, before the cosine has lowered the rate much. AGC reaches test mAP@0.5 0.353 ± 0.019 and mAP 0.211 ± 0.017. Both paired intervals against the baseline contain 0 (−2.7 to +1.8 and −3.4 to +0.9 points), and the goal would still be met at the low end.
#
# **Why value and norm clipping left seeds dead.** No run went to NaN, but 4 of 5 norm-clipped and 3 of 5 value-clipped seeds ended with val mAP@0.5 below 0.01. Their loss stalls near 1.9 (the baseline's ends near 0.95).

# %% [markdown]
# The most likely reading, which this notebook does not test: a few early steps, capped but still large, pushed the network into a region where most of its ReLU units are switched off, and it does not recover. Norm clipping caps the *global gradient* at 5.5. With momentum 0.9 a step is a running sum of such capped gradients, so it can still be several times lr × 5.5. AGC caps each unit's gradient *relative to that unit's weights*, so no single unit is thrown far enough to die.

# %% [markdown]
# **"Clip active" means different things.** For value clipping and AGC it counts a step as active when *any* entry or unit was clipped. So 99–100 % does not mean the whole step was shrunk as in section 5: most units of most steps may be untouched. AGC active on every step is a deliberate per-unit limit on the relative update, not a global threshold that happens to bite always.

# %% [markdown]
# **Why all the mAPs are low.** These are short runs of a plain network with SGD. Notebook 02's batch-norm detector, with AdamW and a warm-up, reaches 0.740 in as few steps. Compare the runs with each other.
#
# Regenerate the lab with `python benchmarks/clipping_explosion.py` (options: `--lr`, `--safe-lr`, `--seeds`, `--percentile`, …; it writes `benchmarks/results/clipping_explosion.json`).

# %% [markdown]
# ### The lab's first 40 steps, live
#
# Seed 0 with the lab's optimizer: SGD at lr 0.1, momentum 0.9, weight decay 1e-4. Over 40 steps the cosine barely lowers the rate, so this uses it constant. Three runs: no clipping, norm clipping and AGC, at the lab's thresholds:

# %% tags=["nbval-ignore-output"]
def plain_run(method: str, threshold: float, steps: int = 40) -> tuple[dict, bool]:
    seed_everything(0)
    model = TinyDetector(batch_norm=False)
    loader = DataLoader(train_small, batch_size=32, shuffle=True, collate_fn=collate_detection,
                        generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    hooks = [GradNormMonitor(), GradientClipping(method, threshold)]
    try:
        return fit(model, loader, optimizer, epochs=4, device=device, hooks=hooks, progress=False, max_steps=steps), False
    except NonFiniteLossError as err:
        return err.history, True


fig, ax = plt.subplots(figsize=(6.5, 3.5))
for method, threshold in (("none", 1.0), ("norm", lab["norm_threshold"]), ("agc", lab["config"]["agc_factor"])):
    history, died = plain_run(method, threshold)
    active = np.mean(history["clip_active"]) if history["clip_active"] else 0.0
    ax.plot(history["loss"], color=colors[method],
            label=f"{method}: " + (f"NaN after {len(history['loss'])} steps" if died else f"{len(history['loss'])} steps, clip active {active:.0%}"))
ax.set_yscale("log")
ax.set_xlabel("step")
ax.set_ylabel("training loss (log)")
ax.set_title("Plain detector, SGD lr 0.1, seed 0")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ### A digits classifier, clipped the right way
#
# A common tutorial pattern trains a small CNN on handwritten digits and sets a clipping threshold it never uses. Here is the real thing on scikit-learn's 8×8 digits (shipped with the package: nothing is downloaded), through the same `fit` loop. The detection collate function works here too, because each target is a dict with `labels`. The threshold goes *into the training step* as a hook; `clip_lab_run` wraps exactly this.

# %% tags=["nbval-ignore-output"]
from course_utils.data import load_digits
from course_utils.models import DigitsCNN

seed_everything(0)
model = DigitsCNN()
loader = DataLoader(load_digits("train"), batch_size=64, shuffle=True, collate_fn=collate_detection,
                    generator=torch.Generator().manual_seed(0))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
history = fit(model, loader, optimizer, epochs=3, device=device,
              hooks=[GradNormMonitor(), GradientClipping("norm", 1.0)], progress=False)
test = load_digits("test")
with torch.inference_mode():
    predicted = model.eval()(torch.stack([x for x, _ in test]).to(device)).argmax(1).cpu()
    accuracy = (predicted == torch.stack([t["labels"] for _, t in test])).float().mean()
print(f"{len(history['loss'])} steps, clipping active on {np.mean(history['clip_active']):.0%} of them, test accuracy {accuracy:.3f}")

# %% [markdown]
# ### A threshold that is always active
#
# Section 5 said that a threshold exceeded on every step turns into a smaller learning rate. With momentum the step is a running sum of such capped gradients, but the effect is the same: training still "works", just slowly, and nothing warns you. Three runs of the digits classifier (about a second each):

# %% tags=["nbval-ignore-output"]
settings = {"lr 0.1, no clipping": ("none", 1.0, 0.1), "lr 0.1, norm clipped at 0.02": ("norm", 0.02, 0.1),
            "lr 0.01, no clipping": ("none", 1.0, 0.01)}
fig, ax = plt.subplots(figsize=(6.5, 4.3))
for name, (method, threshold, lr) in settings.items():
    run = clip_lab_run(method, threshold, lr, steps=150)
    active = np.mean(run["clip_active"])
    ax.plot(run["loss"], label=f"{name}: clip active {active:.0%}, test acc {run['accuracy']:.2f}")
ax.set_xlabel("step")
ax.set_ylabel("training loss")
ax.set_title("A threshold active on every step acts like a smaller learning rate")
ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16))  # below the plot: every curve stays visible
fig.tight_layout()
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ### Clipping with Adam
#
# **SGD** steps along the gradient, so clipping directly caps the step length. **Adam** divides each coordinate by a running root-mean-square of its gradients, $\Delta w = -\eta\, \hat m / (\sqrt{\hat v} + \epsilon)$. So it is already insensitive to the gradient's overall scale: multiplying every gradient by the same constant leaves its steps almost unchanged.
#
# Clipping still helps Adam against *rare* spikes: one huge gradient would otherwise inflate $\hat v$ for many steps. But a threshold that is active on every step does very little:

# %% tags=["nbval-ignore-output"]
for method, threshold in (("none", 1.0), ("norm", 0.05)):
    run = clip_lab_run(method, threshold, lr=0.01, optimizer="adam", steps=150)
    print(f"Adam, {method:4s} (threshold {threshold}): clip active {np.mean(run['clip_active']):4.0%}, "
          f"final loss {np.mean(run['loss'][-10:]):.3f}, test accuracy {run['accuracy']:.3f}")

# %% [markdown]
# ### Clipping with mixed precision
#
# With float16 training, a `GradScaler` multiplies the loss by a large factor $S$ (e.g. $2^{16}$) before `backward()`, so that small gradients do not underflow. The gradients are then $S$ times too large. Clip them *before* un-scaling and a threshold of 1 cuts them to nothing.
#
# The rule: **`scaler.unscale_(optimizer)` first, then clip, then `scaler.step(optimizer)`**. The course's `fit` does this when given a scaler. Shown with the real `GradScaler` on one batch:

# %% tags=["nbval-check-output"]
from course_utils.clipping import grad_norm

batch = load_digits("train")[:64]
for order in ("wrong: clip, then unscale", "right: unscale, then clip"):
    torch.manual_seed(0)
    model = DigitsCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    loss = model([x for x, _ in batch], [t for _, t in batch])["loss_ce"]
    scaler.scale(loss).backward()
    if order.startswith("wrong"):
        clip_grad_norm_(model.parameters(), 1.0)  # sees S * g
        scaler.unscale_(optimizer)
    else:
        scaler.unscale_(optimizer)
        clip_grad_norm_(model.parameters(), 1.0)  # sees the true g
    print(f"{order:27s} gradient norm handed to the optimizer: {grad_norm(model.parameters()).item():.2e}")

# %% [markdown]
# The true gradient norm here is about 0.28, below the threshold, so the right order leaves it alone. The wrong order clips the *scaled* gradient to norm 1 and then divides by $S = 2^{16}$. It hands the optimizer a gradient of norm $1/S \approx 1.5\cdot 10^{-5}$: training would crawl, with no error anywhere.

# %% [markdown]
# ### Per-layer clipping, and AGC in NFNets
#
# **Per-layer** norm clipping (`clip_grad_norm_per_param_`) clips each parameter's gradient on its own, between the global norm and AGC's per-unit rule.
#
# AGC is one ingredient of how NFNets (Brock et al. 2021) train large image classifiers **without batch norm**, not the whole recipe. They also use:
#
# * *scaled weight standardisation*: every conv's weights are standardised per output channel (inherited from the earlier normaliser-free ResNets);
# * residual branches scaled so that the activations' variance stays predictable;
# * no clipping on the final linear (classifier) layer;
# * strong regularisation: dropout and stochastic depth (stronger for larger models) and heavy data augmentation.
#
# In the explosion lab, AGC alone lets a plain detector train at a learning rate where it otherwise diverges, to about the accuracy of the safe rate. That is not the same as training it as well as batch norm does.

# %% [markdown]
# ### The clip explorer
#
# Choose a rule, a threshold and a learning rate. Each change trains the digits CNN for 150 steps (about a second) and shows the loss, the gradient norm before clipping (with the threshold, for norm clipping) and how often clipping was active.
#
# It starts at SGD with learning rate 1, far too high for this network, rescued by norm clipping at 0.1. That clip is active on almost every step, so every gradient is capped at length 0.1: a deliberate smaller learning rate, exactly what section 5 said to watch for.
#
# Things to try: set the rule to `none` and watch it fail; raise the threshold until it fails too; try `agc` and `value`; switch to Adam.

# %% tags=["nbval-ignore-output"]
import ipywidgets as widgets

from course_utils.widgets import interactive_figure


def explorer_figure(method: str = "norm", threshold: float = 0.1, lr: float = 1.0, optimizer: str = "sgd"):
    run = clip_lab_run(method, threshold, lr, optimizer=optimizer, steps=150)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    axes[0].plot(run["loss"], color="tab:blue")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss (log)")
    axes[1].plot(run["grad_norm"], color="tab:gray")
    if method == "norm":
        axes[1].axhline(threshold, color="tab:green", linestyle="--", label=f"threshold {threshold:.3g}")
        axes[1].legend(fontsize=8)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("gradient norm before clipping (log)")
    active = np.mean(run["clip_active"]) if run["clip_active"] else 0.0
    outcome = (f"diverged (NaN) at step {len(run['loss'])}" if run["diverged"]
               else f"test accuracy {run['accuracy']:.2f}")
    fig.suptitle(f"{optimizer.upper()} lr {lr:.3g}, clip '{method}' {threshold:.3g}: clip active {active:.0%} — {outcome}")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


interactive_figure(
    explorer_figure,
    description="Clip explorer: rule, threshold and learning rate for a small digits CNN.",
    method=widgets.Dropdown(options=["none", "value", "norm", "per_param", "agc"], value="norm", description="rule", style={"description_width": "initial"}),
    threshold=widgets.FloatLogSlider(value=0.1, base=10, min=-3, max=2, step=0.25, description="threshold", continuous_update=False,
                                  style={"description_width": "initial"}),
    lr=widgets.FloatLogSlider(value=1.0, base=10, min=-3, max=1, step=0.25, description="learning rate", continuous_update=False,
                                 style={"description_width": "initial"}),
    optimizer=widgets.ToggleButtons(options=["sgd", "adam"], value="sgd", description="optimizer"),
)
