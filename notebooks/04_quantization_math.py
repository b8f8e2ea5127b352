# %% [markdown]
# # 04 · Quantization math: from floats to integers and back
#
# An **int8** model stores each weight in one byte instead of a 32-bit float: 4× smaller, and faster on CPUs with integer dot-product instructions. This is the arithmetic behind it.
#
# **You will learn to**
# 1. map floats to small integers and back;
# 2. simulate that in PyTorch, and see its two kinds of error;
# 3. choose grids for weights and activations, on the course detector;
# 4. train through rounding with the straight-through estimator.

# %% [markdown]
# **Terms**
# - **int8 / uint8**: 8-bit integers, −128..127 / 0..255. A **b-bit** integer has 2^b levels.
# - **scale `S`, zero point `Z`**: the grid step; the integer that stands for real 0.
# - **fake quantization**: quantize, then dequantize at once, in float.
# - **rounding / clamping error**: the error inside / outside the grid's range.
# - **symmetric / asymmetric**: `Z` fixed at 0 / free to fit the range.
# - **per-tensor / per-channel**: one scale per tensor / per output channel.
# - **BN folding**: merging a batch norm into the conv before it.
# - **PTQ**: post-training quantization; quantize a trained model, no more training.
# - **calibration set**, **observer**: images used to choose ranges; the rule that chooses them.
# - **SQNR**: signal-to-quantization-noise ratio, in dB; higher is better.
# - **STE**: straight-through estimator (section 7).
#
# *Time: about 55 minutes. Prerequisites: notebook 02 (the trained detector). Terms: [glossary](../docs/glossary.md) (English–中文).*

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
# We quantize the course's converged detector (notebook 02's recipe, 48 epochs) and score it on the validation split. The calibration set: 64 rendered scenes, never scored on.

# %% tags=["nbval-ignore-output"]
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

# Some cells below compute on the CPU, so that their printed numbers are the same on every machine: on a GPU,
# TF32 convolutions would change their last digits. Without a GPU these are the very same model, images and score as above.
cpu = torch.device("cpu")
model_cpu = model if device.type == "cpu" else copy.deepcopy(model).cpu()
calib_cpu = [b.cpu() for b in calib_batches]


def val_map_cpu(m) -> float:
    return evaluate(m, val_loader, cpu)["map"]


fp32_map_cpu = fp32_map if device.type == "cpu" else val_map_cpu(model_cpu)

# %% [markdown]
# ## 1. Quantization rounds to a grid
#
# Quantization **rounds** each value to the nearest point of an evenly spaced grid and **clamps** it to the grid's ends. It stores the point's number, a small integer.
#
# > ### Myth vs fact — "integer quantization is `w % Q`"
# > **Myth** (a common claim): *quantization turns a parameter into* `parameter mod Q`, *as in* `model.conv1.weight.data = model.conv1.weight.data % Q`.
# >
# > **Fact:** `%` is the *remainder*. It throws away each value's size and sign (`1.7 % 0.25 = 0.2`), its outputs are not integers, and a large weight can land below a small one. The network is destroyed.

# %% tags=["nbval-check-output"]
w = torch.tensor([-0.52, -0.07, 0.0, 0.31, 0.9, 1.7])
scale, zp = calc_qparams(w.min(), w.max(), num_bits=4)  # scale and zero point: section 2 derives them
print("weights           :", [round(v, 3) for v in w.tolist()])
print("w % 0.25 (myth)   :", [round(v, 3) for v in (w % 0.25).tolist()])
print(f"4-bit affine grid : S = {scale:.4f}, Z = {int(zp)}")
print("  q (integers)    :", quantize(w, scale, zp, 0, 15).tolist())
print("  S·(q − Z)       :", [round(v, 3) for v in fake_quantize(w, scale, zp, 0, 15).tolist()])

# %% [markdown]
# The 4-bit codes `q` are integers in 0..15 and map back close to the originals (to within half a grid step, `S/2`). The remainders do not.

# %% [markdown]
# ## 2. The affine map `r = S · (q − Z)`
#
# Two numbers per tensor link a real value `r` to an integer `q` in `[q_min, q_max]`: the scale `S > 0` and the zero point `Z`. `r̂` is the value read back:
#
# $$q = \mathrm{clamp}\big(\mathrm{round}(r / S) + Z,\ q_{min},\ q_{max}\big), \qquad \hat r = S\,(q - Z).$$
#
# For a range `[x_min, x_max]`, widened to contain 0:
#
# $$S = \frac{x_{max} - x_{min}}{q_{max} - q_{min}}, \qquad Z = q_{min} - \mathrm{round}(x_{min} / S).$$
#
# Real 0 maps to `Z` and back to exactly 0: padding and ReLU zeros stay exact. Here is `[−0.3, 1.0]` in uint8, by hand and with `course_utils`:

# %% tags=["nbval-check-output"]
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
# Each value comes back within `S/2`, and 0.0 stays exactly 0.0. (Why `calc_qparams`'s scale is a hair larger: see the deep dives.)

# %% [markdown]
# ## 3. Fake quantization and its two errors
#
# To study accuracy we **fake-quantize**: the network sees exactly the values an int8 model would, and autograd keeps working. `fake_quantize` matches PyTorch's own function exactly:

# %% tags=["nbval-check-output"]
x = torch.linspace(-2, 2, 100_001)
S3, Z3 = calc_qparams(-1.0, 1.0, num_bits=3, symmetric=True, signed=True)
ours = fake_quantize(x, S3, Z3, -4, 3)
theirs = torch.fake_quantize_per_tensor_affine(x, float(S3), int(Z3), -4, 3)
print("identical to torch.fake_quantize_per_tensor_affine:", torch.equal(ours, theirs))

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
# Inside the range, **rounding error** makes the staircase (at most `S/2`). Outside it, **clamping error** grows without bound. Each choice below trades one for the other.

# %% [markdown]
# ## 4. Symmetric or asymmetric
#
# A **symmetric** grid fixes `Z = 0` on signed integers; weights, spread around 0, usually use one. An **asymmetric** grid has a free `Z` and fits `[min, max]` exactly. ReLU outputs are all ≥ 0, so a symmetric grid wastes its negative half on them. We measure it on the input of `tower.0.0`, the head's first conv, with each batch norm folded into its conv (`fuse_conv_bn`):

# %% tags=["nbval-check-output"]
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
# The symmetric grid loses about 6 dB at both widths. That is one bit's worth: each extra bit halves the step, and halving the step adds 6 dB of SQNR.

# %% [markdown]
# ## 5. Per-tensor or per-channel: an experiment
#
# BN folding scales each output channel by its own factor, so channel ranges can differ several-fold. **Per-tensor**, one scale must cover the widest channel. **Per-channel**, each output channel gets its own scale. Left: the channel ranges of `tower.1.0`. Right: its narrowest channel on a 4-bit per-tensor grid.

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
# Every weight of that channel lies within half a step of 0 and rounds to 0: the channel is wiped out.
#
# Now the whole detector: all weights in 4 bits, per tensor or per channel, activations in float. `post_training_quantize` does this PTQ: fold the batch norms, then fake-quantize every conv's weights.

# %% tags=["nbval-ignore-output"]
weights_only = {}
for per_channel in (False, True):
    q_model = post_training_quantize(model_cpu, calib_cpu, forward_raw, weight_bits=4, act_bits=None, per_channel=per_channel)
    weights_only[per_channel] = val_map_cpu(q_model)
    print(f"4-bit weights, {'per-channel' if per_channel else 'per-tensor '}: val mAP {weights_only[per_channel]:.3f}   (fp32 {fp32_map_cpu:.3f})")
assert weights_only[True] > weights_only[False] + 0.3  # per-channel scales rescue 4-bit weights

# %% [markdown]
# Per-tensor, the detector collapses; per-channel, it keeps most of its fp32 mAP (compare the printed lines).

# %% [markdown]
# ## 6. Choosing the range
#
# A tighter range means a finer grid (less rounding error) but more clamped values (more clamping error). For activations, an observer picks the range from the calibration set:
#
# * **min-max**: the full range; never clamps;
# * **percentile**: the 0.01th to 99.99th percentile; clamps rare outliers;
# * **MSE-optimal**: the shrunken range with the lowest mean squared error.
#
# The plot splits the 4-bit error on section 4's activations into its two parts, for ranges `[0, c]`:

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
# Min-max spends the grid on a few large activations; the MSE-optimal range clips them, for about a quarter of the error (see the legend).

# %% [markdown]
# ## 7. Training through `round`: the STE
#
# `round` is flat almost everywhere: its true derivative is 0, so no gradient reaches the weights. The **straight-through estimator** (STE) uses gradient 1 inside the range and 0 where the clamp is active (`x̂` is the fake-quantized `x`):
#
# $$\frac{\partial \hat x}{\partial x} \approx \mathbb 1\left[q_{min} \le \mathrm{round}(x/S) + Z \le q_{max}\right].$$
#
# Quantization-aware training (QAT, notebook 05) relies on it: the forward pass sees quantized values, the backward pass ignores the rounding. 3.4 counts as inside: it *rounds* to 3 = `q_max`.

# %% tags=["nbval-check-output"]
x = torch.tensor([-5.0, -1.2, 0.3, 2.6, 3.4, 9.0], requires_grad=True)
(torch.round(x) * 1.0).sum().backward()
print("d round(x)/dx, true derivative:", x.grad.tolist())
x.grad = None
fake_quantize(x, 1.0, 0, -4, 3).sum().backward()
print("d fq(x)/dx, STE (range -4..3) :", x.grad.tolist())

# %% [markdown]
# ## 8. Exercises
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
# * Quantization: `q = clamp(round(r/S) + Z, q_min, q_max)`, read back as `S(q − Z)`. Not `w % Q`.
# * Fake quantization simulates it in float. Error: rounding inside the range, clamping outside; the range trades one for the other.
# * Symmetric grids suit weights; ReLU activations need asymmetric ones, or they lose about a bit.
# * After BN folding, 4-bit weights need per-channel scales.
# * The STE lets training pass through `round`.
#
# **Next:** notebook 05, QAT and a real int8 model.

# %% [markdown]
# ## Going deeper
#
# These sections are optional: nothing in the core path depends on them. Read any of them, in any order, but run the next cell first: it collects the BN-folded weights of every conv layer, which several deep dives use.

# %%
conv_weights = {name: m.weight.detach().cpu() for name, m in folded.named_modules() if isinstance(m, torch.nn.Conv2d)}

# %% [markdown]
# ### The bit-width explorer
#
# Everything in the core path, in one place. Choose the bit width, the scheme, the granularity and the observer, and look at a real layer's weights or at the activations flowing into it. The left panel shows the values with the quantization grid on top (for per-channel weights, the channel with the widest range). The right panel shows the **whole detector's** val mAP after post-training quantization (PTQ: quantizing the trained model, with no training; simulated with fake quantization) at that setting:
#
# * looking at **weights**: all weights quantized with your scheme and granularity; activations stay float;
# * looking at **activations**: all layer inputs quantized with your scheme (per tensor), and the weights too, symmetric, with your granularity.
#
# Each new setting re-quantizes and re-scores the detector on 200 images: a few seconds on a 2-core CPU, longer for the MSE observer. Settings already seen come from a cache.
#
# *On a static page (GitHub, nbviewer) you see the figure at the default settings; run the notebook in JupyterLab to move the controls.*

# %% tags=["nbval-ignore-output"]
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
# **Things to try.** (1) Slide `bits` from 8 down to 2 with the defaults: where does mAP fall off a cliff? (2) At 4 bits, switch the weight scales to per-tensor and look at `tower.1.0` (the layer of section 5). (3) Look at the activations into `tower.0.0` (a ReLU output) with the symmetric scheme: half the grid sits on negative values that never occur. (The inputs of `stem.0`, centred images, do have negative values.) (4) At 3 bits, compare the observers.

# %% [markdown]
# ### Integers, floats and bit-packing
#
# A float32 has a 24-bit significand and an 8-bit exponent, so its *relative* precision is the same at every magnitude. An integer grid has the same *absolute* step everywhere. Quantization trades the float's adaptive precision for a fixed step inside a chosen range.
#
# Sizes below 8 bits assume bit-packing, e.g. two 4-bit values per byte. Storage formats for int4 do that; no standard PyTorch dtype does.

# %% tags=["nbval-check-output"]
print(f"{'bits':>4} | {'signed range':>16} | {'unsigned range':>14} | {'levels':>6} | {'size vs fp32':>12}")
for bits in (8, 6, 4, 3, 2):
    s_lo, s_hi = qrange(bits, signed=True)
    u_lo, u_hi = qrange(bits, signed=False)
    print(f"{bits:>4} | {f'[{s_lo}, {s_hi}]':>16} | {f'[{u_lo}, {u_hi}]':>14} | {2**bits:>6} | {32 / bits:>10.1f}× ")

# %% [markdown]
# ### Why `calc_qparams` widens the scale
#
# In section 2, `calc_qparams` gave a scale a hair larger than the hand formula. Rounding `Z` to an integer (58.85 → 59) shifts the whole grid by a fraction of a step. With the hand scale, the top end of the grid would then fall 0.0008 short of 1.0, and 1.0 would clip. `calc_qparams` widens `S` just enough that both ends are covered; torch's observers accept the small clip instead. Either way, every value inside the range is off by at most `S/2`.

# %% [markdown]
# ### `fake_quantize` against PyTorch, ties included
#
# The tests check that `fake_quantize` is *bit-identical* to `torch.fake_quantize_per_tensor_affine`, in value and in gradient, for every bit width from 2 to 8. That includes values far outside the range and ties exactly halfway between two levels. Both round ties **half to even**: 0.5 → 0, 1.5 → 2, 2.5 → 2.

# %% tags=["nbval-check-output"]
print("round half to even: fq([0.5, 1.5, 2.5] with S=1) =", fake_quantize(torch.tensor([0.5, 1.5, 2.5]), 1.0, 0, -4, 3).tolist())

# %% [markdown]
# ### Symmetric weights and integer kernels
#
# An integer layer multiplies `S_w(q_w − Z_w) · S_x(q_x − Z_x)`. With a weight zero point `Z_w = 0`, the correction terms that would have to be computed for every input disappear. What remains, `Z_x·Σq_w`, is a constant, precomputed once per output channel.
#
# That is why symmetric int8 weights are the common, fast path of today's x86 int8 kernels, and ONNX Runtime's default for int8 weights. It is a convention, not a requirement. ONNX Runtime's CPU kernels (MLAS) accept a weight zero point too (its integer convolution wants one zero point shared by all output channels), and Jacob et al. (2018), who introduced this affine scheme, used asymmetric uint8 weights.

# %% [markdown]
# ### Per-channel, layer by layer
#
# BN folding computes `W' = W·γ/√(σ²+ε)` per output channel and `b' = (b − μ)·γ/√(σ²+ε) + β`, for a batch norm with statistics μ, σ² and affine parameters γ, β. The factor `γ/√(σ²+ε)` differs from channel to channel, which is what spreads the channel ranges apart.
#
# Per-channel weight scales cost little at run time: each is applied once, to its channel's output. The table measures 4-bit SQNR for every conv layer (symmetric, min-max range), per tensor and per channel:

# %% tags=["nbval-check-output"]
def weight_sqnr(weight: torch.Tensor, bits: int, per_channel: bool) -> float:
    weight_q, _, _ = quantize_tensor(weight, bits, symmetric=True, ch_axis=0 if per_channel else None)
    return sqnr_db(weight, weight_q)


print(f"{'layer':>11} | {'shape':>17} | per-tensor | per-channel   (4-bit SQNR, dB)")
for name, weight in conv_weights.items():
    print(f"{name:>11} | {str(tuple(weight.shape)):>17} | {weight_sqnr(weight, 4, False):10.1f} | {weight_sqnr(weight, 4, True):11.1f}")

# %% [markdown]
# Per-channel wins on every layer. It wins by the most where channel ranges differ most: `tower.1.0` goes from 5.6 to 13.1 dB.

# %% [markdown]
# ### Observers on the whole detector
#
# Section 6 compared observers on one layer. Here each is used for every layer of the detector, with 8-bit weights and 4-bit activations (**W8A4**: W for weights, A for activations); PTQ means post-training quantization, with no training. Calibration images are a random sample, so each observer runs on three calibration sets and the line prints mean ± sample std. The last line is W8A8, min-max everywhere.

# %% tags=["nbval-ignore-output"]
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
# At 8 bits PTQ is essentially free: the assertion checks that W8A8 is within a point of fp32. At 4 bits the range matters: percentile and MSE-optimal ranges beat min-max by much more than the spread between calibration sets. Notebook 05 shows how much of what 4 bits lose QAT recovers.

# %% [markdown]
# ### Observers in more detail
#
# | observer | range | good for |
# |---|---|---|
# | min-max | `[min x, max x]`, never clips | weights at 8 bits |
# | moving-average min-max | an exponential moving average of each batch's min and max | activations during QAT |
# | percentile | `[p₀.₀₁, p₉₉.₉₉]`, clips rare outliers | heavy-tailed activations |
# | MSE-optimal | the shrunken range `a·[min, max]`, `0 < a ≤ 1`, that minimises `mean((x − x̂)²)` | low bit widths |
#
# In section 6 the MSE-optimal range had the lowest error on one layer, and in the deep dive above it also beats min-max on the whole detector. Do not count on that in general. A layer's MSE weighs every activation equally, while the detector's output may depend most on its few large activations (strong responses to objects), which the MSE range clips hardest. How much that matters depends on the trained weights, so the ranking of observers can change from one model to the next. Choose observers by the task metric, measured on the model you will ship, not by a proxy.

# %% [markdown]
# ### The "6 dB per bit" rule, measured
#
# **SQNR** compares the signal's power with the error's:
#
# $$\mathrm{SQNR} = 10 \log_{10} \frac{\sum x^2}{\sum (x - \hat x)^2}\ \text{dB}.$$
#
# For values spread over the range, rounding noise has power `S²/12`. On a grid over a fixed range, one extra bit halves the step `S` and so divides the noise power by 4: `10·log10(4) ≈ 6.02 dB` per bit.
#
# Our symmetric signed grid uses `S = max|w| / (2^(b−1) − 1)`, so one more bit shrinks `S` by `(2^b − 1)/(2^(b−1) − 1)`: 3× from 2 to 3 bits, tending to 2×. The predicted gain is `20·log10` of that ratio: 9.5, 7.4, 6.6, 6.3, 6.2, 6.1 dB. Measured on all of the detector's BN-folded conv weights, per-channel symmetric:

# %% tags=["nbval-check-output"]
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
# From 3 bits up, the measured gains follow the grid's step ratio within 0.3 dB: about 6 dB per bit from 4 bits up. The fitted slope is a little above 6.02 because the ratio is still slightly above 2. From 2 to 3 bits the measured gain (7.9 dB) falls short of the predicted 9.5: with three levels, most weights round to 0, and the error is no longer the small, uniform noise the `S²/12` model assumes.
#
# So the rule of thumb holds, but it does not tell you the *offset*. That depends on the distribution. Bell-shaped weights have a large peak-to-average ratio, and a min-max range wastes levels on the rare large weights. At 2 bits the MSE-optimal range, which clips those tails, gains 5.6 dB over min-max; at 8 bits the two coincide.

# %% [markdown]
# ### The STE on a toy problem
#
# Learn six weights whose **2-bit** quantized values should match a target. With the true gradient of `round` the loss never moves; with the STE, gradient descent finds weights that quantize well.

# %% tags=["nbval-check-output"]
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
# A loss of 0.25 remains: the target's `1.0` lies outside the 2-bit grid `{−1, −0.5, 0, 0.5}`, and the STE stops pushing once the weight leaves the range.

# %% [markdown]
# ### Learning the step size: LSQ
#
# Observers set `S` from statistics. **LSQ** (Esser et al. 2020, "Learned Step Size Quantization") makes `S` a trainable parameter and lets the task loss choose it. In the paper's notation the step is `s`, the values `v`, and the grid runs from `−Q_N` to `Q_P` (so `Q_N = −q_min`, `Q_P = q_max`, and `Z = 0`). With `v̂ = round(clamp(v/s, −Q_N, Q_P)) · s` (clamping before rounding gives the same values as `fake_quantize`, since the bounds are integers), the gradient with respect to the step is
#
# $$\frac{\partial \hat v}{\partial s} = \begin{cases} -v/s + \mathrm{round}(v/s) & -Q_N < v/s < Q_P \\ -Q_N & v/s \le -Q_N \\ Q_P & v/s \ge Q_P \end{cases}$$

# %% [markdown]
# The gradient is scaled by `g = 1/√(N·Q_P)`, so that the step learns at the same pace as the `N` weights it serves, and the step starts at `s₀ = 2⟨|v|⟩/√Q_P`. The tests check `course_utils.quant.lsq_fake_quantize` against this formula element by element.
#
# Below, LSQ learns a 3-bit step for one detector layer by minimising the reconstruction error (in QAT the loss would be the detector's). It lands next to the best step a brute-force search finds. We use Adam, which normalises each parameter's update and so largely cancels `g`; `g` matters with SGD, where step and weights share one learning rate.

# %% tags=["nbval-check-output"]
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
# The learned step has almost the grid search's error, and far less than the min-max step: at 3 bits, clipping the largest weights pays.
