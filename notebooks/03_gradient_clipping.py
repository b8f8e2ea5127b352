# %% [markdown]
# # 03 · Gradient clipping
#
# Sometimes one batch produces a gradient a thousand times larger than usual, one optimizer step throws the weights far away, and the loss turns into `nan`. **Gradient clipping** caps the size of the update so that one bad step cannot wreck training.
#
# **You will**
# 1. place clipping exactly in the training step, and see what it is *not*;
# 2. watch a detector's gradients explode, step by step;
# 3. compare value clipping and norm clipping geometrically, and choose a threshold from evidence;
# 4. see how clipping interacts with SGD, Adam and mixed precision;
# 5. meet adaptive gradient clipping (AGC), one ingredient of how NFNets train without batch norm;
# 6. run the explosion lab — a working baseline at a safe learning rate, the same detector blowing up at an aggressive one, and each clipping rule at the aggressive one, 5 seeds each — and explore thresholds live.
#
# *Time: about 45 minutes. Terms: [glossary](../docs/glossary.md) (English–中文).*

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
# ## 1. Where clipping sits — and what it is not
#
# One training step in PyTorch, with clipping:
#
# ```python
# loss = model(images, targets)                  # forward
# optimizer.zero_grad()
# loss.backward()                                # gradients g = dL/dw
# torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)   # <- clipping: changes g only
# optimizer.step()                               # w <- w - lr * g   (for plain SGD)
# ```
#
# In the course's loop, clipping is a hook: `fit(..., hooks=[GradientClipping("norm", 1.0)])` runs it in `after_backward`, between `backward()` and `step()`. In Keras you pass the threshold **to the optimizer**: `keras.optimizers.SGD(learning_rate=0.01, global_clipnorm=1.0)` is torch's `clip_grad_norm_` (one norm over all gradients); `clipnorm=1.0` clips each variable's gradient separately, and `clipvalue=0.5` clips entries. Setting a variable `clip_threshold = 5` and never handing it to the optimizer clips nothing.
#
# > ### ❌ Myth vs ✅ fact — "clipping makes the model smaller and faster"
# > **Myth** (a common claim, for example in widely shared blog posts on clipping for detection and classification): *gradient clipping "reduces the model's size" and "lowers its computational cost", so it is a way to make a model efficient.*
# >
# > **Fact:** clipping rescales **gradients during training**. The model has exactly the same layers, parameters, file size and inference cost before and after. It makes training *stable* (fewer blow-ups, larger usable learning rates); it is not a compression method. (Compression comes in notebooks 04–07.)
#
# > ### ❌ Myth vs ✅ fact — "gradient clipping is detection post-processing"
# > **Myth:** *clipping computes gradients of the detections and trims the inaccurate ones.*
# >
# > **Fact:** post-processing (notebook 01) is decode → clip *boxes* to the image → score threshold → NMS → top-k, with no gradients at all. *Gradient* clipping only exists inside training.

# %% [markdown]
# ## 2. Watching gradients explode
#
# Train the course detector with plain SGD (momentum 0.9) at learning rate 0.1, and record the **global gradient norm** $\lVert g\rVert_2 = \sqrt{\sum_k \lVert g_k\rVert_2^2}$ over all parameters $k$ at every step (`GradNormMonitor`). We build it twice: with batch norm (the default), and as a *plain* stack without normalisation (`TinyDetector(batch_norm=False)`, He-initialised: weights drawn with standard deviation $\sqrt{2/\text{fan-in}}$, which keeps ReLU activations at a steady scale through the layers).

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
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
fig.suptitle("SGD at lr = 0.1: the plain detector's gradient norm explodes")
fig.tight_layout()
plt.show()


# %% [markdown]
# The plain network's gradient norm grows by many orders of magnitude within a few steps, and then the loss becomes `nan` — the training loop's guard stops it with a message instead of training on garbage. It is a feedback loop: a too-large step makes weights larger, larger weights make larger activations and gradients, which make the next step larger still. Batch norm breaks the loop (each layer's output no longer depends on its weights' scale), so the same learning rate merely makes it *stall* rather than explode. Other classic triggers: a learning rate or a mixed-precision loss scale (section 5) set too high, an unbounded (squared-error) box-regression loss hit by an outlier box (a mislabelled annotation; Fast R-CNN adopted the smooth-L1 loss partly for this reason — the course detector's GIoU and L1 terms have bounded gradients), and deep stacks without normalisation.

# %% [markdown]
# ## 3. Two ways to clip, as geometry
#
# * **By value:** clamp every gradient entry, $g_i \leftarrow \min(\max(g_i, -c), c)$. Cheap, but it changes the gradient's **direction** whenever some entries are cut and others are not.
# * **By norm:** rescale the whole gradient, $g \leftarrow g \cdot \min\!\big(1, \frac{\tau}{\lVert g\rVert}\big)$. It keeps the **direction** and only shortens the step.
#
# On a 2-D toy gradient you can see both:

# %%
# NBVAL_CHECK_OUTPUT
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
# There is also **per-layer** norm clipping (`clip_grad_norm_per_param_`: each parameter's gradient is clipped on its own) and **AGC** (section 6).
#
# ## 4. Choosing the threshold from evidence
#
# Folklore says "clip at 1.0" or "at 5". But gradient norms depend on the model, the loss and its scaling, so a number copied from elsewhere may never bite or may bite on every step. Better: run some steps **without** clipping at a learning rate that works, record the norms, and pick a high percentile — clipping then touches only the rare spikes. The benchmark did exactly that for the plain detector (`benchmarks/clipping_explosion.py`, one calibration epoch; more steps give a steadier percentile):

# %%
# NBVAL_CHECK_OUTPUT
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
# Why p90 rather than p99: with only 63 recorded steps, p99 is practically the maximum and would almost never clip; p90 catches the top tenth. With a longer calibration run, p99 is a common choice.
#
# **Too small a threshold silently becomes a smaller learning rate.** If $\lVert g\rVert > \tau$ on *every* step, plain SGD steps by $\eta\,\tau\,\frac{g}{\lVert g\rVert}$ — a fixed length $\eta\tau$, whatever the gradient says (with momentum, each step is a running sum of such capped gradients). Training still "works", just slowly, and nothing warns you. So always log how often clipping is active (`GradientClipping` records it in `history["clip_active"]`). A small experiment on the digits classifier of section 8 (each run takes about a second):

# %%
# NBVAL_IGNORE_OUTPUT
settings = {"lr 0.1, no clipping": ("none", 1.0, 0.1), "lr 0.1, norm clipped at 0.02": ("norm", 0.02, 0.1),
            "lr 0.01, no clipping": ("none", 1.0, 0.01)}
fig, ax = plt.subplots(figsize=(6.5, 3.5))
for name, (method, threshold, lr) in settings.items():
    run = clip_lab_run(method, threshold, lr, steps=150)
    active = np.mean(run["clip_active"])
    ax.plot(run["loss"], label=f"{name}: clip active {active:.0%}, test acc {run['accuracy']:.2f}")
ax.set_xlabel("step")
ax.set_ylabel("training loss")
ax.set_title("A threshold active on every step acts like a smaller learning rate")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# ## 5. Clipping with SGD, Adam, and mixed precision
#
# **SGD** steps along the gradient, so clipping directly caps the step length. **Adam** divides each coordinate by a running root-mean-square of its gradients, $\Delta w = -\eta\, \hat m / (\sqrt{\hat v} + \epsilon)$, so it is already insensitive to the gradient's overall scale: multiplying every gradient by the same constant leaves its steps almost unchanged. Clipping still helps Adam against *rare* spikes (one huge gradient would otherwise inflate $\hat v$ for many steps), but a threshold that is active on every step does very little:

# %%
# NBVAL_IGNORE_OUTPUT
for method, threshold in (("none", 1.0), ("norm", 0.05)):
    run = clip_lab_run(method, threshold, lr=0.01, optimizer="adam", steps=150)
    print(f"Adam, {method:4s} (threshold {threshold}): clip active {np.mean(run['clip_active']):4.0%}, "
          f"final loss {np.mean(run['loss'][-10:]):.3f}, test accuracy {run['accuracy']:.3f}")

# %% [markdown]
# **Mixed precision.** With float16 training, a `GradScaler` multiplies the loss by a large factor $S$ (e.g. $2^{16}$) before `backward()` so small gradients do not underflow. The gradients are then $S$ times too large. Clip them *before* un-scaling and a threshold of 1 cuts them to nothing; the rule is **`scaler.unscale_(optimizer)` first, then clip, then `scaler.step(optimizer)`** (the course's `fit` does this when given a scaler). Shown with the real `GradScaler` on one batch:

# %%
# NBVAL_CHECK_OUTPUT
from course_utils.clipping import grad_norm
from course_utils.data import load_digits
from course_utils.models import DigitsCNN

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
# The true gradient norm here is about 0.28, below the threshold, so the right order leaves it alone. The wrong order clips the *scaled* gradient to norm 1 and then divides by $S = 2^{16}$, handing the optimizer a gradient of norm $1/S \approx 1.5\cdot 10^{-5}$ — training would crawl, with no error anywhere.
#
# ## 6. Adaptive gradient clipping (AGC)
#
# A single global threshold treats a tiny bias and a large conv kernel alike. **AGC** (Brock et al. 2021, NFNets) clips each **unit** — one output channel of a conv or one row of a linear layer — relative to the size of its own weights:
#
# $$\text{if } \frac{\lVert G_i\rVert}{\max(\lVert W_i\rVert, \epsilon)} > \lambda:\quad G_i \leftarrow \lambda\,\frac{\max(\lVert W_i\rVert, \epsilon)}{\lVert G_i\rVert}\, G_i .$$
#
# The ratio $\lVert G_i\rVert / \lVert W_i\rVert$ is roughly how much one step changes the unit *relative to its size*. Capping it at $\lambda$ (0.01–0.1) stops any unit from being blown away in one step, one of the things batch norm otherwise protects against. AGC is one ingredient of how NFNets train large image classifiers **without batch norm**, not the whole recipe: they also use *scaled weight standardisation* (every conv's weights are standardised per output channel, inherited from the earlier normaliser-free ResNets), residual branches scaled so that the activations' variance stays predictable, and they leave the final linear (classifier) layer unclipped; they also train with strong regularisation (dropout and stochastic depth, stronger for larger models, and heavy data augmentation). In the explosion lab (section 7), AGC alone lets a plain, normaliser-free detector train at a learning rate where it otherwise diverges — to about the accuracy of the safe learning rate, which is not the same as training it as well as batch norm does.

# %%
w = torch.nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 0.01]]))  # two units: a big one and a tiny one
w.grad = torch.tensor([[0.05, 0.0], [0.0, 0.05]])  # the same gradient for both
adaptive_clip_grad_([w], clip_factor=0.1, eps=1e-3)
print("gradient after AGC (lambda = 0.1):", [[round(v, 4) for v in row] for row in w.grad.tolist()])
print("big unit untouched (0.05 / 1.0 = 0.05 < 0.1); tiny unit capped at 0.1 x 0.01 = 0.001")

# %% [markdown]
# ## 7. The explosion lab
#
# What is clipping *for*? The lab answers with a baseline that works. Every run trains the same plain detector (no batch norm) on the same 2,000 training images for the same number of steps — 6 epochs, 378 SGD steps (momentum 0.9, weight decay 1e-4, the learning rate decayed by a cosine from its peak to 0, **no warm-up**: a warm-up is the other common cure for early explosions and would hide the problem) — five seeds each:
#
# * **(a) `safe`** — peak learning rate 0.03, no clipping: the baseline. (0.03 was chosen by a one-seed pilot, not part of the recorded lab: 0.01 / 0.03 / 0.1 reached val mAP 0.17 / 0.21 / NaN; rates between 0.03 and 0.1 were not tried.)
# * **(b) `none`** — peak learning rate 0.1, no clipping.
# * **(c) `value`, `norm`, `agc`** — peak learning rate 0.1 with each rule: value (0.05), norm (the p90 threshold from section 4) and AGC (λ = 0.02, inside the paper's range 0.01–0.1). The value threshold and λ were set by hand, once, and not tuned on these results.
#
# The goal, fixed before the runs: a clipped run at lr 0.1 reaches mAP@0.5 ≥ 0.5, or ≥ 80 % of run (a). Which clipping rule is "the best" is a choice, so it is made on **val**; whether it meets the goal, and how it compares with the baseline, is read on **test** (notebook 02's rule). A run *diverges* if its loss becomes NaN/inf or ends higher than it started; a NaN run scores 0 and stays in the mean. The 25 runs take about half an hour on one CPU core, so they run in `benchmarks/clipping_explosion.py`; the notebook loads the results:
#

# %%
# NBVAL_CHECK_OUTPUT
print(f"every run: {lab['steps_per_run']} SGD steps ({lab['config']['epochs']} epochs of {lab['config']['train_images']:,} images), "
      f"{lab['config']['seeds']} seeds; mean ± sample std over the seeds (a diverged run scores 0)")
print(f"{'run':<7}{'peak lr':>8}{'rule':>7}{'threshold':>10}{'diverged':>10}{'dead':>6}{'val mAP@0.5':>16}{'test mAP':>16}{'test mAP@0.5':>16}{'clip active':>13}")
for name, s in lab["summary"].items():
    dead = sum(r["map_50"] < 0.01 for r in lab["runs"][name] if not r["nonfinite"])  # trained to the end, learned nothing
    print(f"{name:<7}{s['lr']:>8g}{s['method']:>7}{s['threshold']:>10.3g}{s['diverged']:>6d} / {s['runs']}{dead:>6d}"
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


# %%
colors = {"safe": "black", "none": "tab:red", "value": "tab:orange", "norm": "tab:green", "agc": "tab:blue"}
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for name, results in lab["runs"].items():
    for i, r in enumerate(results):
        axes[0].plot(r["loss"], color=colors[name], alpha=0.5, linewidth=1, label=name if i == 0 else None)
axes[0].set_yscale("log")
axes[0].set_ylim(0.7, 20)  # the unclipped runs shoot far above this before their NaN
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
# * **(a) The baseline trains.** At lr 0.03 all five seeds learn, to test mAP 0.223 ± 0.012 (mAP@0.5 0.358 ± 0.016; on val 0.352 ± 0.007).
# * **(b) The aggressive rate diverges.** At lr 0.1 without clipping every seed's loss turns to NaN within 10–63 steps, i.e. in the first epoch, before the cosine has lowered the rate much.
# * **(c) At these thresholds, only AGC rescues it.** With AGC every seed trains. It is the rule with the best val mAP@0.5 (0.339 ± 0.021), so it is the one judged on test: mAP@0.5 0.353 ± 0.019 — 99 % of the baseline's 0.358, so the goal (≥ 80 %) is met, and it would still be met at the low end of the interval printed above — and mAP 0.211 ± 0.017. Against the baseline both differences are *within noise* (paired intervals −2.7 to +1.8 and −3.4 to +0.9 points): clipping made the aggressive rate *usable*, not *better*. Value and norm clipping only prevented the NaN: no run went to NaN, but 4 of 5 norm-clipped and 3 of 5 value-clipped seeds ended with mAP@0.5 below 0.01 (the `dead` column). Their loss stalls near 1.9 (the baseline's ends near 0.95) and their gradient norm shrinks to about 0.1–0.3; the most likely reading (this notebook does not test it) is that a few early steps, capped but still large, pushed the network into a region where most of its ReLU units are switched off, from which it does not recover. Norm clipping caps the *global gradient* at 5.5 (with momentum 0.9 a step is a running sum of such capped gradients, so it can still be several times lr × 5.5); AGC caps each unit's gradient *relative to that unit's weights*, so no single unit is thrown far enough to die.
# * **"Clip active" means different things.** For value clipping and AGC it counts a step as active when *any* entry or unit was clipped, so 99–100 % does not mean the whole step was shrunk as in section 4: most units of most steps may be untouched. AGC being active on every step does make it a per-unit limit on the relative update — chosen on purpose, which is different from a global threshold that happens to bite always.
# * **"No NaN" is not "rescued".** Judge a clipping rule by the accuracy it reaches against a baseline that works, not by the absence of a crash. The norm threshold came from section 4's recipe (p90 of the safe run's norms); a smaller one would clip on most steps, which section 4 showed is just a smaller learning rate.
#
# Each rule was tried at one threshold, so this ranking holds for these settings only. All mAPs are low because these are short runs of a plain network with SGD: notebook 02's batch-norm detector, with AdamW and a warm-up, reaches 0.740 in as few steps. Compare the runs with each other. Regenerate with `python benchmarks/clipping_explosion.py` (options: `--lr`, `--safe-lr`, `--seeds`, `--percentile`, …).
#
# Here are the first 40 steps of one configuration live — seed 0, the lab's optimizer (SGD at lr 0.1, momentum 0.9, weight decay 1e-4; over 40 steps the cosine barely lowers the rate, so this uses it constant) — with no clipping, norm clipping and AGC:
#

# %%
# NBVAL_IGNORE_OUTPUT
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
# ## 8. The classification example, done right
#
# A common tutorial pattern (for example in widely shared blog posts on clipping) trains a small CNN on handwritten digits and sets a clipping threshold it never uses. Here is the real thing on scikit-learn's 8×8 digits (shipped with the package — nothing downloaded), through the same `fit` loop (the detection collate function works here too: each target is a dict with `labels`): the threshold goes *into the training step* as a hook. `clip_lab_run` wraps exactly this:

# %%
# NBVAL_IGNORE_OUTPUT
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
# ## 9. The clip explorer
#
# Choose a rule, a threshold and a learning rate; each change trains the digits CNN for 150 steps (about a second) and shows the loss, the gradient norm before clipping (with the threshold, for norm clipping) and how often clipping was active. It starts at SGD with learning rate 1 — far too high for this network — rescued by norm clipping at 0.1. That clip is active on almost every step, so it acts as a per-step cap (step length at most 1 × 0.1) — a deliberate smaller learning rate, exactly what section 4 said to watch for. Things to try: set the rule to `none` and watch it fail; raise the threshold until it fails too; try `agc` and `value`; switch to Adam.

# %%
# NBVAL_IGNORE_OUTPUT
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

# %% [markdown]
# ## 10. Exercises
#
# **Exercise 1 — global-norm clipping.** Complete `my_clip_grad_norm(parameters, max_norm)`: skip parameters whose `.grad` is `None`; compute the L2 norm of all gradients together; multiply every gradient in place by $\min(1, \text{max\_norm} / (\lVert g\rVert + 10^{-6}))$; return the norm *before* clipping. Don't call the library's `clip_grad_norm_`. Solutions: `solutions/ex03_gradient_clipping.py`.
#
# *Sanity check:* a single gradient `[3., 4.]` with `max_norm=1` returns 5 and becomes `[0.6, 0.8]`.

# %%
from course_utils.exercises import check_agc, check_clip_grad_norm


def my_clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError


check_clip_grad_norm(my_clip_grad_norm)


# %% [markdown]
# **Exercise 2 — AGC for one parameter.** Complete `my_agc(param, clip_factor, eps)` in place, following the formula of section 6: units are the slices along dimension 0 for matrices and conv kernels (norm over all other dimensions, e.g. `torch.linalg.vector_norm(x, dim=(1, 2, 3), keepdim=True)`), and the whole tensor for a bias.

# %%
def my_agc(param: torch.nn.Parameter, clip_factor: float, eps: float) -> None:
    # YOUR CODE HERE
    raise NotImplementedError


check_agc(my_agc)

# %% [markdown]
# ## Takeaways
#
# * Clipping sits between `backward()` and `step()`; it changes the update only — never the model's size, speed or detections. In Keras, pass `global_clipnorm` (or `clipnorm`, per variable, or `clipvalue`) to the optimizer.
# * Gradients explode through a feedback loop; normaliser-free networks and too-high learning rates are prone to it.
# * Judge clipping against a baseline that trains: in the lab, at the thresholds tried, only AGC turned a learning rate that diverges into one that trains — level with the safe rate within noise, not better; norm and value clipping prevented the NaN but left most seeds dead. "No NaN" is not "rescued".
# * Norm clipping keeps the direction; value clipping bends it. Pick the threshold as a high percentile of recorded norms, and log how often it is active — always-on clipping is just a smaller learning rate.
# * Adam is nearly scale-invariant, so clipping matters less for it; with mixed precision, `unscale_` before clipping.
# * AGC clips each unit relative to its weights. It is one ingredient of normaliser-free training: NFNets combine it with scaled weight standardisation and scaled residual branches, and leave the final linear layer unclipped.
#
# **Regenerate the lab:** `python benchmarks/clipping_explosion.py` (writes `benchmarks/results/clipping_explosion.json`).
