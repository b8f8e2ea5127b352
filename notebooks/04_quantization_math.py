# %% [markdown]
# # 04 · Quantization math: from floats to integers and back
#
# A trained detector stores every weight as a 32-bit float. An **int8** model stores each as one byte — 4× smaller — and a CPU with integer dot-product instructions multiplies them much faster. This notebook is the arithmetic behind that: how a float becomes an integer and back, what it costs in accuracy, and how training can still push gradients through a rounding function.
#
# **You will**
# 1. see why `w % Q` and `round(w·Q)` are not quantization, and what is;
# 2. compute a scale and zero point by hand, and check them against the course's and torch's code;
# 3. compare symmetric vs asymmetric, signed vs unsigned, per-tensor vs per-channel — on the course detector's real weights and activations;
# 4. trade rounding error against clamping error when choosing a range (min-max, percentile, MSE-optimal);
# 5. measure the "≈ 6 dB per bit" rule on real weights;
# 6. understand the straight-through estimator (STE) and learned step sizes (LSQ);
# 7. explore bit widths live: histogram, grid, error and the detector's mAP.
#
# *Time: about 45 minutes. Prerequisites: notebook 02 (the trained detector). Terms: [glossary](../docs/glossary.md) (English–中文).*

# %%
import copy
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.utils.data import DataLoader

from course_utils import CocoDetection, SyntheticShapes, TinyDetector, collate_detection, evaluate, get_device, load_checkpoint, materialize
from course_utils.quant import (
    LSQQuantizer,
    calc_qparams,
    capture_activations,
    dequantize,
    fake_quantize,
    fake_quantize_per_channel,
    fuse_conv_bn,
    make_observer,
    post_training_quantize,
    qrange,
    quant_mse,
    quantize,
    quantize_tensor,
    range_tradeoff,
    sqnr_db,
)
from course_utils.viz import plot_quant_grid

torch.manual_seed(0)
RESULTS = Path("..") / "benchmarks" / "results"
device = get_device()  # the GPU when there is one

# %% [markdown]
# We quantize the course's converged detector — notebook 02's recipe run for 48 epochs (`tiny_detector_converged.pt`, made by `benchmarks/train_tiny_detector.py`; val mAP 0.865) — and measure it on the shipped validation split. A few rendered training-style scenes serve as the **calibration set**: the images the quantizer looks at to pick activation ranges. They are never the images we score on.

# %%
# NBVAL_IGNORE_OUTPUT
model = TinyDetector()
info = load_checkpoint(RESULTS / "tiny_detector_converged.pt", model)
model = model.to(device).eval()
val = materialize(CocoDetection(Path("..") / "data" / "val" / "annotations.json"), progress=False)
val_loader = DataLoader(val, batch_size=50, collate_fn=collate_detection)
calib_set = materialize(SyntheticShapes(64, seed=123), progress=False)
calib_batches = [torch.stack([img for img, _ in calib_set[i:i + 32]]).to(device) for i in (0, 32)]


def forward_raw(m, images):
    """Calibration runs the network only (no post-processing)."""
    return m.forward_raw(images)


def val_map(m) -> float:
    return evaluate(m, val_loader, device)["map"]


fp32_map = val_map(model)
print(f"fp32 detector: {sum(p.numel() for p in model.parameters()):,} parameters, val mAP@[.5:.95] = {fp32_map:.3f}")

# The cells whose printed numbers the test suite checks compute on the CPU: on a GPU, TF32 convolutions would
# change their last digits. Without a GPU these are the very same model, images and score as above.
cpu = torch.device("cpu")
model_cpu = model if device.type == "cpu" else copy.deepcopy(model).cpu()
calib_cpu = [b.cpu() for b in calib_batches]


def val_map_cpu(m) -> float:
    return evaluate(m, val_loader, cpu)["map"]


fp32_map_cpu = fp32_map if device.type == "cpu" else val_map_cpu(model_cpu)

# %% [markdown]
# ## 1. Two myths first
#
# > ### ❌ Myth vs ✅ fact — "integer quantization is `w % Q`"
# > **Myth** (a common claim, for example in widely shared blog posts on model optimisation): *integer quantization turns a parameter into* `parameter mod Q`; *its code does* `model.conv1.weight.data = model.conv1.weight.data % Q`.
# >
# > **Fact:** `%` is the *remainder*. It throws the magnitude, the sign and the order of values away and keeps only where a value sits inside one period: `1.7 % 0.25 = 0.2`, `−0.52 % 0.25 = 0.23`. Its outputs are not integers, and a large weight can land below a small one: the network is destroyed. Quantization **rounds each value to the nearest point of an evenly spaced grid** and **clamps** to the grid's ends: `q = clamp(round(r / S) + Z, q_min, q_max)`.
#
# > ### ❌ Myth vs ✅ fact — "QAT is the sub-gradient method (次梯度方法), fine-tuned with FGSM"
# > **Myth** (a common claim, for example in widely shared blog posts on QAT for detection): *quantization-aware training is called the sub-gradient method; quantize the weights with* `round(w × Q)` *and then fine-tune with* `w ← w_q + ε·sign(∇L)` *(FGSM).*
# >
# > **Fact:** QAT trains through **fake quantization** — quantize-then-dequantize in the forward pass — and passes gradients through the rounding with the **straight-through estimator** (section 9). The sub-gradient method is an unrelated optimiser for non-smooth convex functions. FGSM (Goodfellow et al. 2014) is an **adversarial attack**: it moves the *input* by ε·sign(∇ₓL) to *increase* the loss. Applied to weights it would make the model worse, and a sign step ignores every gradient's size. `round(w × Q)` with `Q = 8` is a grid of step 1/8 with **no bit width** — nothing bounds the integers — and no zero point; it is the start of fixed-point, not a quantizer. Notebook 05 does QAT properly.

# %%
# NBVAL_CHECK_OUTPUT
w = torch.tensor([-0.52, -0.07, 0.0, 0.31, 0.9, 1.7])
scale, zp = calc_qparams(w.min(), w.max(), num_bits=4)  # scale and zero point: section 3 derives them
print("weights           :", [round(v, 3) for v in w.tolist()])
print("w % 0.25 (myth)   :", [round(v, 3) for v in (w % 0.25).tolist()])
print("round(w*8) (myth) :", torch.round(w * 8).tolist(), "<- integers, but how many bits?")
print(f"4-bit affine grid : S = {scale:.4f}, Z = {int(zp)}")
print("  q (integers)    :", quantize(w, scale, zp, 0, 15).tolist())
print("  S·(q − Z)       :", [round(v, 3) for v in fake_quantize(w, scale, zp, 0, 15).tolist()])

# %% [markdown]
# The 4-bit codes are small integers in 0..15 and map back close to the originals (−0.07 becomes exactly 0: one grid step is 0.15); `w % Q` bears no relation to them.
#
# ## 2. Integers and floats
#
# A b-bit integer has 2^b levels: **signed** `[−2^(b−1), 2^(b−1) − 1]`, **unsigned** `[0, 2^b − 1]`. A float32 has a 24-bit significand and an 8-bit exponent, so its *relative* precision is the same at every magnitude; an integer grid has the same *absolute* step everywhere. Quantization trades the float's adaptive precision for a fixed step inside a chosen range. (Sizes below 8 bits assume bit-packing — e.g. two 4-bit values per byte — which storage formats for int4 do, but no standard PyTorch dtype.)

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'bits':>4} | {'signed range':>16} | {'unsigned range':>14} | {'levels':>6} | {'size vs fp32':>12}")
for bits in (8, 6, 4, 3, 2):
    s_lo, s_hi = qrange(bits, signed=True)
    u_lo, u_hi = qrange(bits, signed=False)
    print(f"{bits:>4} | {f'[{s_lo}, {s_hi}]':>16} | {f'[{u_lo}, {u_hi}]':>14} | {2**bits:>6} | {32 / bits:>10.1f}× ")

# %% [markdown]
# ## 3. The affine map `r = S · (q − Z)`
#
# Jacob et al. (2018) map a real value `r` to an integer `q` with two numbers per tensor: a **scale** `S > 0` (the grid step) and a **zero point** `Z` (the integer that stands for real 0):
#
# $$q = \mathrm{clamp}\big(\mathrm{round}(r / S) + Z,\ q_{min},\ q_{max}\big), \qquad \hat r = S\,(q - Z).$$
#
# For a range `[x_min, x_max]` (widened to contain 0) and `q_max − q_min` steps between the grid's ends:
#
# $$S = \frac{x_{max} - x_{min}}{q_{max} - q_{min}}, \qquad Z = q_{min} - \mathrm{round}(x_{min} / S).$$
#
# **Why must 0 be exact?** Zero padding and ReLU produce exact zeros everywhere; if 0 dequantized to, say, 0.002, every padded border would be biased. With an integer `Z`, `r = 0 ↦ q = Z ↦ r̂ = 0` exactly.
#
# Let's do one by hand: the range `[−0.3, 1.0]` in 8-bit unsigned.

# %%
# NBVAL_CHECK_OUTPUT
x_min, x_max, q_min, q_max = -0.3, 1.0, 0, 255
S_hand = (x_max - x_min) / (q_max - q_min)
Z_hand = q_min - round(x_min / S_hand)
print(f"by hand      : S = 1.3 / 255 = {S_hand:.6f},  Z = 0 − round(−0.3 / S) = 0 − round({x_min / S_hand:.2f}) = {Z_hand}")
S, Z = calc_qparams(x_min, x_max, num_bits=8)
print(f"calc_qparams : S = {float(S):.6f},  Z = {int(Z)}")
print(f"grid ends    : S·(0 − Z) = {float(S) * (0 - int(Z)):.4f},  S·(255 − Z) = {float(S) * (255 - int(Z)):.4f}")
r = torch.tensor([x_min, -0.1, 0.0, 0.123, x_max])
q = quantize(r, S, Z, q_min, q_max)
print("r            :", r.tolist())
print("q            :", q.tolist())
print("S·(q − Z)    :", [round(v, 5) for v in dequantize(q, S, Z).tolist()], " <- 0.0 stays exactly 0.0")

# %% [markdown]
# `calc_qparams` gives a scale a hair larger than the hand formula. Rounding `Z` to an integer (58.85 → 59) shifts the whole grid by a fraction of a step, so with the hand scale the top end would fall 0.0008 short of 1.0 and clip; `calc_qparams` widens `S` just enough that both ends are covered (torch's observers accept the small clip instead). Either way, every value inside the range is off by at most `S/2`.
#
# ## 4. Fake quantization — and the reference it must equal
#
# Training and accuracy studies don't need integer kernels: they **fake-quantize** — quantize and immediately dequantize, staying in float — so the network sees exactly the values an int8 model would, and everything else (autograd, GPUs) keeps working. `course_utils.quant.fake_quantize` is written from scratch; the tests check it is *bit-identical* to PyTorch's `torch.fake_quantize_per_tensor_affine`, in value and gradient, for every bit width 2–8, including ties exactly halfway between two levels (both round half to even) and values far outside the range.

# %%
# NBVAL_CHECK_OUTPUT
x = torch.linspace(-2, 2, 100_001)
S3, Z3 = calc_qparams(-1.0, 1.0, num_bits=3, symmetric=True, signed=True)
ours = fake_quantize(x, S3, Z3, -4, 3)
theirs = torch.fake_quantize_per_tensor_affine(x, float(S3), int(Z3), -4, 3)
print("identical to torch.fake_quantize_per_tensor_affine:", torch.equal(ours, theirs))
print("round half to even: fq([0.5, 1.5, 2.5] with S=1) =", fake_quantize(torch.tensor([0.5, 1.5, 2.5]), 1.0, 0, -4, 3).tolist())

# %%
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(x, x, color="gray", linestyle=":", label="identity r")
ax.plot(x, ours, color="tab:blue", label=f"fake-quantized, 3-bit signed, S = {float(S3):.3f}")
ax.axvspan(-2, float(S3) * (-4.5), color="tab:red", alpha=0.1, label="clamped")
ax.axvspan(float(S3) * 3.5, 2, color="tab:red", alpha=0.1)
ax.set_xlabel("real value r")
ax.set_ylabel("S·(q − Z)")
ax.set_title("Rounding makes a staircase; clamping flattens its ends")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# Two kinds of error are visible: inside the range, **rounding error** (the staircase, at most `S/2`); outside it, **clamping error** (unbounded). Every design choice below moves error from one kind to the other.
#
# ## 5. Symmetric vs asymmetric, signed vs unsigned
#
# * **Symmetric** fixes `Z` at the middle (0 for signed integers) and sets `S = max|x| / q_max`. Integer kernels love it: in the product `S_w(q_w − Z_w) · S_x(q_x − Z_x)` a zero weight zero point `Z_w = 0` removes the correction terms that would otherwise have to be computed per input (what remains, `Z_x·Σq_w`, is a constant precomputed per output channel). Weights, roughly symmetric around 0, usually use it: symmetric int8 weights are the common, fast path of today's x86 int8 kernels and ONNX Runtime's default for int8 weights. That is a convention, not a requirement — ONNX Runtime's CPU kernels (MLAS) accept a weight zero point too (its integer convolution wants one zero point shared by all output channels), and Jacob et al. 2018 used asymmetric uint8 weights.
# * **Asymmetric** fits `[min, max]` exactly. Activations after ReLU are all ≥ 0: a symmetric signed grid would spend half its levels on negative values that never occur.
#
# Measure it on a real activation: the input of the detector's first head conv (`tower.0.0`), which comes out of a ReLU. To get it we need the deployed form of the network, with each batch norm **folded** into the conv before it (for a BN with statistics μ, σ² and affine γ, β: `W' = W·γ/√(σ²+ε)` per output channel and `b' = (b − μ)·γ/√(σ²+ε) + β`; `fuse_conv_bn` does this and notebook 05 explains it).

# %%
# NBVAL_CHECK_OUTPUT
folded = fuse_conv_bn(model)  # BN folded into the convs, as an int8 deployment does (notebook 05)
acts = capture_activations(fuse_conv_bn(model_cpu), "tower.0.0", calib_cpu, forward_raw)  # the same, on the CPU
print(f"activations into tower.0.0: shape {tuple(acts.shape)}, min {acts.min():.3f}, max {acts.max():.3f}, "
      f"{(acts == 0).float().mean():.0%} exact zeros")
for bits in (8, 4):
    row = []
    for name, symmetric in (("asymmetric unsigned", False), ("symmetric signed", True)):
        acts_q, _, _ = quantize_tensor(acts, bits, symmetric=symmetric, signed=symmetric)
        row.append(f"{name} {sqnr_db(acts, acts_q):5.1f} dB")
    print(f"{bits}-bit SQNR: " + " | ".join(row))

# %% [markdown]
# The symmetric signed grid loses about one bit — 6.0 dB at 8 bits, 6.5 dB at 4 bits — on ReLU outputs, because half its levels are negative. (SQNR, the signal-to-quantization-noise ratio `10·log10(Σx² / Σ(x − x̂)²)` in decibels, is defined properly in section 8; +6 dB means 4× less noise power.)
#
# ## 6. Per-tensor vs per-channel
#
# After batch norm is folded into the conv (`W' = W·γ/√(σ²+ε)`, notebook 05), each output channel's weights are scaled by its own BN factor, so channels can differ in range several-fold. One scale for the whole tensor (**per-tensor**) must cover the widest channel, and the narrow channels then get only a handful of levels. **Per-channel** quantization gives each output channel its own `S_c` — cheap for weights, since the scale can be applied to each output of the integer dot product.

# %%
layer = "tower.1.0"
w_layer = dict(folded.named_modules())[layer].weight.detach().cpu()
ranges = w_layer.flatten(1).abs().max(1).values
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
axes[0].bar(range(len(ranges)), ranges.numpy(), color="tab:blue")
axes[0].axhline(ranges.max(), color="tab:red", linestyle="--", label="per-tensor range (the widest channel)")
axes[0].set_xlabel(f"output channel of {layer}")
axes[0].set_ylabel("max |w| in the channel")
axes[0].set_title(f"{layer} after BN folding: channel ranges differ {ranges.max() / ranges.min():.0f}×")
axes[0].legend(fontsize=8)
narrow = int(ranges.argmin())
s_t, z_t = calc_qparams(w_layer.min(), w_layer.max(), 4, symmetric=True, signed=True)
plot_quant_grid(w_layer[narrow], s_t, z_t, -8, 7, ax=axes[1], label=f"channel {narrow} weights")
axes[1].set_title(f"4-bit per-tensor grid over the narrowest channel ({narrow})")
fig.tight_layout()
plt.show()
codes = torch.round(w_layer[narrow] / s_t).clamp(-8, 7)  # the per-tensor 4-bit codes of that channel (Z = 0)
print(f"channel {narrow}: max |w| {float(ranges[narrow]):.3f}, grid step S = {float(s_t):.3f}; "
      f"distinct codes {sorted(set(codes.int().flatten().tolist()))}, {int((codes != 0).sum())} of {codes.numel()} weights nonzero")


# %% [markdown]
# On the right, the narrowest channel's weights all fall within half a grid step of zero, so per-tensor quantization rounds every one of them to 0 (the line above counts them): the whole channel is wiped out. The table measures it for every layer at 4 bits (symmetric, min-max range):

# %%
# NBVAL_CHECK_OUTPUT
def weight_sqnr(weight: torch.Tensor, bits: int, per_channel: bool) -> float:
    weight_q, _, _ = quantize_tensor(weight, bits, symmetric=True, ch_axis=0 if per_channel else None)
    return sqnr_db(weight, weight_q)


conv_weights = {name: m.weight.detach().cpu() for name, m in folded.named_modules() if isinstance(m, torch.nn.Conv2d)}
print(f"{'layer':>11} | {'shape':>17} | per-tensor | per-channel   (4-bit SQNR, dB)")
for name, weight in conv_weights.items():
    print(f"{name:>11} | {str(tuple(weight.shape)):>17} | {weight_sqnr(weight, 4, False):10.1f} | {weight_sqnr(weight, 4, True):11.1f}")

# %% [markdown]
# Per-channel wins on every layer, by the most where channel ranges differ most (`tower.1.0`: 5.6 → 13.1 dB). What it means for the detector (weights only, activations left in float):

# %%
# NBVAL_IGNORE_OUTPUT -- the last digit can differ between CPUs; the assertion checks the lesson
weights_only = {}
for per_channel in (False, True):
    q_model = post_training_quantize(model_cpu, calib_cpu, forward_raw, weight_bits=4, act_bits=None, per_channel=per_channel)
    weights_only[per_channel] = val_map_cpu(q_model)
    print(f"4-bit weights, {'per-channel' if per_channel else 'per-tensor '}: val mAP {weights_only[per_channel]:.3f}   (fp32 {fp32_map_cpu:.3f})")
assert weights_only[True] > weights_only[False] + 0.3  # per-channel scales rescue 4-bit weights

# %% [markdown]
# ## 7. Choosing the range: rounding error vs clamping error
#
# A tighter range means a finer grid (less rounding error) but more values clamped (more clamping error). With `b` bits and range `[−c, c]` the step is `S ≈ 2c / 2^b`, and for values spread over the range the rounding noise has power `S²/12`. Observers choose the range:
#
# | observer | range | good for |
# |---|---|---|
# | min-max | `[min x, max x]` — never clips | weights at 8 bits |
# | moving-average min-max | EMA of each batch's min/max | activations during QAT |
# | percentile | `[p₀.₀₁, p₉₉.₉₉]` — clips rare outliers | heavy-tailed activations |
# | MSE-optimal | the shrunken range `a·[min, max]`, `0 < a ≤ 1`, that minimises `mean((x − x̂)²)` | low bit widths |
#
# Here is the trade-off on the activations from section 5, at 4 bits, for ranges `[0, c]`: total error split into its rounding part (values inside the range) and clamping part (values above `c`), computed by `range_tradeoff`.

# %%
bits = 4
tops = torch.linspace(0.05, 1.0, 60) * float(acts.max())
round_err, clamp_err = range_tradeoff(acts, bits, tops)
total = np.array(round_err) + np.array(clamp_err)
choices = {}
for name in ("minmax", "percentile", "mse"):
    acts_q, s, z = quantize_tensor(acts, bits, symmetric=False, observer=name)
    choices[name] = (float(s) * (2**bits - 1 - int(z)), quant_mse(acts, acts_q))  # (top of its range, its MSE)

fig, ax = plt.subplots(figsize=(7, 3.4))
ax.plot(tops, round_err, label="rounding error (inside the range)", color="tab:blue")
ax.plot(tops, clamp_err, label="clamping error (above c)", color="tab:red")
ax.plot(tops, total, label="total MSE", color="black", linewidth=2)
for (name, (top, mse)), color in zip(choices.items(), ("tab:gray", "tab:orange", "tab:green")):
    ax.axvline(top, color=color, linestyle="--", label=f"{name}: top {top:.2f}, MSE {mse:.2e}")
ax.set_yscale("log")
ax.set_xlabel("top c of the range [0, c]")
ax.set_ylabel("mean squared error")
ax.set_title("4-bit activations into tower.0.0: where to put the range")
ax.legend(fontsize=7)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# Min-max spends the grid on a few large activations; the MSE-optimal range clips them and has about a quarter of min-max's error on this layer (4.98e-3 vs 1.87e-2). The same choice, made for every layer of the detector at 4-bit activations (8-bit weights). How much of a difference is real? The calibration images are a random sample, so each observer is run with three different calibration sets and we report mean ± std:

# %%
# NBVAL_IGNORE_OUTPUT -- the last digit can differ between CPUs; the assertions check the lesson
calib_sets = [calib_cpu] + [list(torch.stack([img for img, _ in materialize(SyntheticShapes(64, seed=seed), progress=False)]).split(32))
                            for seed in (7, 8)]  # three sets of 64 images, on the CPU like every checked cell
w8a4 = {}
for observer in ("minmax", "percentile", "mse"):
    w8a4[observer] = [val_map_cpu(post_training_quantize(model_cpu, batches, forward_raw, weight_bits=8, act_bits=4, act_observer=observer))
                      for batches in calib_sets]
    print(f"W8A4, activation observer {observer:>10}: val mAP {np.mean(w8a4[observer]):.3f} ± {np.std(w8a4[observer], ddof=1):.3f}  "
          "(sample std, 3 calibration sets)")
q_model = post_training_quantize(model_cpu, calib_cpu, forward_raw, weight_bits=8, act_bits=8)
w8a8 = val_map_cpu(q_model)
print(f"W8A8, min-max everywhere          : val mAP {w8a8:.3f}   (fp32 {fp32_map_cpu:.3f})")
assert abs(w8a8 - fp32_map_cpu) < 0.01  # 8 bits: essentially free
assert min(np.mean(w8a4["mse"]), np.mean(w8a4["percentile"])) > np.mean(w8a4["minmax"]) + 0.05  # 4 bits: the range matters

# %% [markdown]
# At 8 bits, post-training quantization (PTQ) is essentially free (less than a point below fp32). At 4 bits the choice of range is worth about 10 mAP points — far more than the spread between calibration sets (at most about ± 0.02, sample std over 3 calibration sets of 64 images): min-max about 0.70, percentile about 0.78, MSE-optimal about 0.80. Here the range with the lowest error on the plotted layer also gives the best mAP, but do not count on it: a layer's MSE weighs every activation equally, while the detector's output may depend most on its few large activations (strong responses to objects), which the MSE range clips hardest; how much that matters depends on the trained weights, so the ranking of observers can change from one model to the next. The lesson: choose observers by the task metric, measured on the model you will ship, not by a proxy. Notebook 05 shows how much of what 4 bits lose QAT recovers.
#
# ## 8. The "6 dB per bit" rule, measured
#
# **SQNR** — signal-to-quantization-noise ratio — compares the signal's power with the error's:
#
# $$\mathrm{SQNR} = 10 \log_{10} \frac{\sum x^2}{\sum (x - \hat x)^2}\ \text{dB}.$$
#
# On a grid of 2^b levels over a fixed range, one extra bit halves the step `S`, which divides the rounding noise power `S²/12` by 4: `10·log10(4) ≈ 6.02 dB` per bit. Our symmetric signed grid uses `S = max|w| / (2^(b−1) − 1)` (the positive side has `2^(b−1) − 1` steps), so one more bit shrinks `S` by `(2^b − 1)/(2^(b−1) − 1)` — 3× from 2 to 3 bits, tending to 2× — and the predicted gain is `20·log10` of that ratio: 9.5, 7.4, 6.6, 6.3, 6.2, 6.1 dB, approaching 6.02. Measured on all of the detector's (BN-folded) conv weights, per-channel symmetric:

# %%
# NBVAL_CHECK_OUTPUT
all_bits = list(range(2, 9))
sqnr_table = {}
for observer in ("minmax", "mse"):
    sqnr_table[observer] = []
    for bits in all_bits:
        noise = signal = 0.0
        for weight in conv_weights.values():  # pool signal and noise over all layers
            weight_q, _, _ = quantize_tensor(weight, bits, symmetric=True, ch_axis=0, observer=observer)
            noise += float((weight - weight_q).double().pow(2).sum())
            signal += float(weight.double().pow(2).sum())
        sqnr_table[observer].append(10 * np.log10(signal / noise))
predicted_gain = [20 * np.log10((2**b - 1) / (2 ** (b - 1) - 1)) for b in all_bits[:-1]]  # S_b / S_(b+1)
slope = np.polyfit(all_bits[2:], sqnr_table["minmax"][2:], 1)[0]
print("bits            :", "  ".join(f"{b:5d}" for b in all_bits))
for observer, values in sqnr_table.items():
    print(f"SQNR {observer:>6} dB :", "  ".join(f"{v:5.1f}" for v in values))
print("gain per bit    :", "       " + "  ".join(f"{b - a:5.1f}" for a, b in zip(sqnr_table["minmax"], sqnr_table["minmax"][1:])), "(min-max, measured)")
print("predicted gain  :", "       " + "  ".join(f"{g:5.1f}" for g in predicted_gain), "(step ratio of the grid)")
print(f"fitted slope over 4..8 bits: {slope:.2f} dB/bit (the rule: 6.02)")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.4))
ax.plot(all_bits, sqnr_table["minmax"], "o-", label="measured, min-max range")
ax.plot(all_bits, sqnr_table["mse"], "s-", label="measured, MSE-optimal range")
ref = sqnr_table["minmax"][-1] + 6.02 * (np.array(all_bits) - all_bits[-1])
ax.plot(all_bits, ref, ":", color="black", label="6.02 dB per bit through the 8-bit point")
ax.set_xlabel("bits")
ax.set_ylabel("SQNR (dB)")
ax.set_title("Detector weights (per-channel): SQNR vs bit width")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# Read the table and plot: from 3 bits up the measured gains follow the grid's step ratio within 0.3 dB — about 6 dB per bit from 4 bits up (the fitted slope is a little above 6.02 because the ratio is still slightly above 2), and more per bit at 3 bits, where each added bit more than halves the step. From 2 to 3 bits the measured gain (7.9 dB) falls short of the predicted 9.5: with three levels the error is no longer the small, uniform rounding noise the `S²/12` model assumes — most weights round to 0. So the rule of thumb holds; what it does not tell you is the *offset*. That depends on the distribution: bell-shaped weights have a large peak-to-average ratio, and a min-max range wastes levels on the rare large weights. At 2 bits the MSE-optimal range, which clips those tails, gains 5.6 dB over min-max; at 8 bits the two coincide.
#
# ## 9. The straight-through estimator: training through `round`
#
# `round` is a staircase: flat almost everywhere, so its derivative is **0** almost everywhere (and undefined at the jumps). Backpropagating the true derivative through a quantizer therefore gives every weight a zero gradient, and nothing learns. The **straight-through estimator** (STE; Bengio et al. 2013, after Hinton's lectures) uses the identity's derivative instead. The version used for quantization — the *saturated* STE of Hubara, Courbariaux et al. 2016 — passes the gradient inside the range and 0 where the clamp is active:
#
# $$\frac{\partial \hat x}{\partial x} \approx \mathbb 1\left[q_{min} \le \mathrm{round}(x/S) + Z \le q_{max}\right].$$
#
# That is the entire trick of QAT: the forward pass sees the quantized values, the backward pass pretends the rounding wasn't there. `fake_quantize`'s backward is exactly this mask (open `course_utils/quant/affine.py`: `_FakeQuantizeSTE` is 15 lines). Note that the mask tests the *rounded* value: 3.4 rounds to 3 = q_max, so it still counts as inside.

# %%
# NBVAL_CHECK_OUTPUT
x = torch.tensor([-5.0, -1.2, 0.3, 2.6, 3.4, 9.0], requires_grad=True)
(torch.round(x) * 1.0).sum().backward()
print("d round(x)/dx, true derivative:", x.grad.tolist())
x.grad = None
fake_quantize(x, 1.0, 0, -4, 3).sum().backward()
print("d fq(x)/dx, STE (range -4..3) :", x.grad.tolist())

# %% [markdown]
# A tiny experiment: learn a weight vector whose **2-bit** quantized version should match a target. With the true gradient the loss never moves; with the STE gradient descent finds weights that quantize well.

# %%
# NBVAL_CHECK_OUTPUT
target = torch.tensor([0.5, -1.0, 0.0, 0.5, -0.5, 1.0])  # 2-bit grid of step 0.5 is {-1, -0.5, 0, 0.5}; 1.0 is off it
for name, quantizer in (("true gradient (0)", lambda v: torch.round(v / 0.5).clamp(-2, 1) * 0.5),
                        ("STE", lambda v: fake_quantize(v, 0.5, 0, -2, 1))):
    v = torch.zeros(6, requires_grad=True)
    opt = torch.optim.SGD([v], lr=0.2)
    losses = []
    for step in range(30):
        loss = (quantizer(v) - target).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(f"{name:>18}: loss {losses[0]:.2f} -> {losses[-1]:.2f}")

# %% [markdown]
# (The target's `1.0` lies outside the signed 2-bit grid `{−1, −0.5, 0, 0.5}`, so a loss of 0.25 remains: the clamp caps it, and the STE correctly stops pushing once the weight leaves the range.)
#
# ## 10. Learning the step size: LSQ
#
# Observers set `S` from statistics. **LSQ** (Esser et al. 2020, "Learned Step Size Quantization") makes `S` a trainable parameter and lets the task loss choose it. In the paper's notation the step is `s`, the values `v`, and the grid runs from `−Q_N` to `Q_P` (so `Q_N = −q_min`, `Q_P = q_max`, and `Z = 0`). With `v̂ = round(clamp(v/s, −Q_N, Q_P)) · s` — clamping before rounding gives the same values as `fake_quantize`, since the bounds are integers — the gradient with respect to the step is
#
# $$\frac{\partial \hat v}{\partial s} = \begin{cases} -v/s + \mathrm{round}(v/s) & -Q_N < v/s < Q_P \\ -Q_N & v/s \le -Q_N \\ Q_P & v/s \ge Q_P \end{cases}$$
#
# scaled by `g = 1/√(N·Q_P)` so that the step learns at the same pace as the `N` weights it serves, and initialised at `s₀ = 2⟨|v|⟩/√Q_P`. The tests check `course_utils.quant.lsq_fake_quantize` against this formula element by element.
#
# Below, LSQ learns a 3-bit step for one detector layer by minimising the reconstruction error (in QAT the loss would be the detector's), and lands next to the best step a brute-force search finds. (We use Adam, which normalises each parameter's update and so largely cancels `g`; `g` matters with SGD, where step and weights share one learning rate.)

# %%
# NBVAL_CHECK_OUTPUT
weight = conv_weights["stage4.1.0"].flatten()
lsq = LSQQuantizer(num_bits=3, signed=True)
opt = torch.optim.Adam(lsq.parameters(), lr=1e-2)
for step in range(300):
    loss = (lsq(weight) - weight).pow(2).mean()
    if step == 0:
        init_step, init_mse = lsq.step.item(), loss.item()
    opt.zero_grad()
    loss.backward()
    opt.step()
learned = lsq.step.item()
grid = torch.linspace(0.2 * learned, 3 * learned, 400)
mses = [quant_mse(weight, fake_quantize(weight, float(s), 0, -4, 3)) for s in grid]
best = float(grid[int(np.argmin(mses))])
print(f"LSQ initial step  {init_step:.5f}   MSE {init_mse:.3e}")
print(f"LSQ learned step  {learned:.5f}   MSE {quant_mse(weight, fake_quantize(weight, learned, 0, -4, 3)):.3e}")
print(f"grid-search best  {best:.5f}   MSE {min(mses):.3e}")
s_mm, _ = calc_qparams(weight.min(), weight.max(), 3, symmetric=True, signed=True)
print(f"min-max step      {float(s_mm):.5f}   MSE {quant_mse(weight, fake_quantize(weight, s_mm, 0, -4, 3)):.3e}")

# %% [markdown]
# ## 11. The bit-width explorer
#
# Everything above in one place. Choose the bit width, the scheme, the granularity and the observer, and look at a real layer's weights or the activations flowing into it. The left panel shows the values with the quantization grid on top (for per-channel weights, the channel with the widest range). The right panel shows the **whole detector's** val mAP after post-training fake quantization at that setting:
#
# * looking at **weights**: all weights quantized with your scheme and granularity; activations stay float;
# * looking at **activations**: all layer inputs quantized with your scheme (per tensor), and the weights too, symmetric, with your granularity.
#
# Each new setting re-quantizes and re-scores the detector on 200 images — a few seconds on a 2-core CPU, longer for the MSE observer; settings already seen come from a cache.
#
# *On a static page (GitHub, nbviewer) you see the figure at the default settings; run the notebook in JupyterLab to move the controls.*

# %%
# NBVAL_IGNORE_OUTPUT
import ipywidgets as widgets

from course_utils.widgets import interactive_figure

layer_names = list(conv_weights)
_map_cache: dict[tuple, float] = {}


def ptq_map(bits: int, weight_scheme: str, act_scheme: str | None, per_channel: bool, observer: str) -> float:
    """val mAP of the whole detector after PTQ at this setting (each setting is scored once, then cached)."""
    key = (bits, weight_scheme, act_scheme, per_channel, observer)
    if key not in _map_cache:
        q_model = post_training_quantize(
            model, calib_batches, forward_raw, weight_bits=bits, act_bits=None if act_scheme is None else bits,
            weight_observer=observer, act_observer=observer, per_channel=per_channel,
            symmetric_weights=weight_scheme == "symmetric", symmetric_acts=act_scheme == "symmetric")
        _map_cache[key] = val_map(q_model)
    return _map_cache[key]


def explorer_figure(bits=4, scheme="symmetric", granularity="per-channel", observer="minmax", tensor="weights", layer="stage3.0.0"):
    symmetric, per_channel = scheme == "symmetric", granularity == "per-channel"
    if tensor == "weights":  # the scheme applies to the weights; activations stay in float
        values = conv_weights[layer]
        quantized, s, z = quantize_tensor(values, bits, symmetric, ch_axis=0 if per_channel else None, observer=observer)
        c = int(values.flatten(1).abs().max(1).values.argmax()) if per_channel else None  # the widest channel
        shown, s_shown, z_shown = (values[c], s[c], z[c]) if per_channel else (values, s, z)
        what, q_map = f"weights of {layer}" + (f", channel {c} (widest)" if per_channel else ""), ptq_map(bits, scheme, None, per_channel, observer)
    else:  # the scheme applies to the activations (per tensor); weights stay symmetric
        values = capture_activations(folded, layer, calib_batches[:1], forward_raw).cpu()
        quantized, s, z = quantize_tensor(values, bits, symmetric, observer=observer)
        shown, s_shown, z_shown = values, s, z
        what, q_map = f"activations into {layer}", ptq_map(bits, "symmetric", scheme, per_channel, observer)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [3, 1]})
    lo, hi = qrange(bits, signed=symmetric)
    plot_quant_grid(shown, s_shown, z_shown, lo, hi, ax=axes[0], label=what)
    axes[0].set_title(f"{bits}-bit {scheme}, {granularity if tensor == 'weights' else 'per-tensor'}, {observer}: "
                      f"SQNR {sqnr_db(values, quantized):.1f} dB, MSE {quant_mse(values, quantized):.2e}", fontsize=9)
    bars = axes[1].bar(["fp32", f"W{bits}" + (f"A{bits}" if tensor == "activations" else "")], [fp32_map, q_map],
                       color=["tab:gray", "tab:blue"])
    axes[1].bar_label(bars, fmt="%.3f", fontsize=8)
    axes[1].set(ylim=(0, 1), ylabel="val mAP@[.5:.95]")
    axes[1].set_title("whole detector, PTQ", fontsize=9)
    fig.tight_layout()
    return fig


explorer = interactive_figure(
    explorer_figure,
    description="Bit-width explorer: bits, scheme, granularity and observer for a layer of the detector; histogram with the grid, SQNR, and the detector's mAP.",
    bits=widgets.IntSlider(value=4, min=2, max=8, description="bits", continuous_update=False),
    scheme=widgets.ToggleButtons(options=["symmetric", "asymmetric"], value="symmetric", description="scheme"),
    granularity=widgets.ToggleButtons(options=["per-channel", "per-tensor"], value="per-channel", description="weight scales"),
    observer=widgets.Dropdown(options=["minmax", "percentile", "mse"], value="minmax", description="observer"),
    tensor=widgets.ToggleButtons(options=["weights", "activations"], value="weights", description="tensor"),
    layer=widgets.Dropdown(options=layer_names, value="stage3.0.0", description="layer"),
)
explorer

# %% [markdown]
# **Things to try.** (1) Slide `bits` from 8 down to 2 with the defaults: where does mAP fall off a cliff? (2) At 4 bits, switch the weight scales to per-tensor and look at `tower.1.0` (the layer section 6 found worst). (3) Look at the activations into `tower.0.0` (a ReLU output) with the symmetric scheme: half the grid sits on negative values that never occur. (The inputs of `stem.0`, centred images, do have negative values.) (4) At 3 bits, compare the observers.
#
# ## 12. Exercises
#
# **Exercise 1.** Write `my_qparams(x_min, x_max, num_bits)` returning `(scale, zero_point)` for **asymmetric unsigned** quantization. Remember: widen the range to contain 0, and `Z` must be an integer.

# %%
from course_utils.exercises import check_fake_quantize, check_qparams


def my_qparams(x_min: float, x_max: float, num_bits: int):
    # YOUR CODE HERE
    raise NotImplementedError


check_qparams(my_qparams)


# %% [markdown]
# **Exercise 2.** Write `my_fake_quantize(x, scale, zero_point, q_min, q_max)`: the quantize-dequantize forward pass, with the **straight-through** gradient (1 where `round(x/S) + Z` is inside `[q_min, q_max]`, 0 elsewhere). Hint: `y = a + (b - a).detach()` has the value of `b` and the gradient of `a`. With `a = x` the gradient would be 1 everywhere; to zero it outside the range, make `a` equal to `x` only where the value is inside (multiply by a 0/1 mask), and let `b` be the fake-quantized value. (Or write a `torch.autograd.Function`, as `course_utils.quant` does.)

# %%
def my_fake_quantize(x: torch.Tensor, scale: float, zero_point: int, q_min: int, q_max: int) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError


check_fake_quantize(my_fake_quantize)

# %% [markdown]
# Solutions: `solutions/ex04_quantization_math.py`.
#
# ## Takeaways
#
# * Quantization is `q = clamp(round(r/S) + Z, q_min, q_max)`, `r̂ = S(q − Z)`; 0 is exact. Not `w % Q`, and not `round(w·Q)` without a bit width.
# * Symmetric grids suit weights (and integer kernels); ReLU activations need asymmetric or unsigned grids, or they lose about a bit.
# * Per-channel weight scales matter most after BN folding; on this detector 4-bit weights with one scale per tensor collapse it (val mAP about 0.09), one scale per channel keeps about 0.75.
# * The range is a trade-off between rounding and clamping error; at low bit widths a range that clips has far less error than min-max — but the lowest error is not guaranteed to give the best mAP: measure on the task, on the model you ship.
# * SQNR grows ≈ 6 dB per bit (the noise model predicts 20·log10 of the step ratio: more than 6 dB at 2–3 bits, and at 2 bits the measured gain falls short of it); the distribution and the range decide the offset.
# * The (saturated) STE — gradient 1 inside the range, 0 outside — is what lets QAT train through `round`; LSQ learns the step itself.
#
# **Next:** notebook 05 fine-tunes the detector *with* fake quantization in the loop (QAT), compares it with PTQ at 8 and 4 bits, and converts it to a real int8 model whose size and latency we measure.
