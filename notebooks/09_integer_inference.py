# %% [markdown]
# # 09 · Integer inference: what the int8 model really computes
#
# Notebook 05 built a real int8 model in ONNX Runtime. Inside it, every layer does only integer arithmetic. Here you write that arithmetic yourself, run the whole detector with it, and check it against ONNX Runtime.
#
# **You will learn to**
# 1. compute one quantized convolution by hand, with integers only;
# 2. turn its one real-valued rescale into an integer **fixed-point multiplier**;
# 3. run the whole detector in integers and compare it with ONNX Runtime, layer by layer and in mAP.

# %% [markdown]
# > **Terms** new in this notebook (the others: notebooks 04–05)
# > * **int8 / uint8**: signed (−128 … 127) / unsigned (0 … 255) 8-bit integers.
# > * **int32 accumulator**: the 32-bit sum of one output's int8 × uint8 products.
# > * **requantization**: rescaling that sum by a real number $M$ and rounding it onto the next layer's 8-bit grid.
# > * **saturation**: clamping an out-of-range value to the range's end instead of letting it wrap around.
# > * **fixed-point multiplier**: $M$ stored as an integer $m_0$ and a shift $n$.
# > * **rounding shift** ($\gg k$): a division by $2^k$ done as a right shift, after adding $2^{k-1}$ so that it rounds.
# > * **`QLinearConv`**: ONNX Runtime's integer convolution, 8-bit in and out.
# > * **tie**: a value exactly halfway between two integers, like 7.5.
#
# *Time: about 50 minutes (plus Exercise 3). Prerequisites: notebooks 04 (the affine map, fake quantization) and 05 (QAT, BN folding, ONNX Runtime). Terms: [glossary](../docs/glossary.md) (English–中文).*

# %%
import atexit
import json
import math
import shutil
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch.utils.data import DataLoader

from course_utils import CocoDetection, SyntheticShapes, TinyDetector, collate_detection, evaluate, load_checkpoint, materialize, seed_everything
from course_utils.deploy import OrtDetector, ort_session
from course_utils.quant import (conv_qdq_model, dequantize, export_qdq, fixed_point_multiplier, integer_detector, optimized_op_types,
                                prepare_qat, quantize, requantize)

seed_everything(0)
RESULTS = Path("..") / "benchmarks" / "results"
cpu = torch.device("cpu")  # integer kernels are a CPU story here; every number below is computed on the CPU
work = Path(tempfile.mkdtemp(prefix="int8_"))
atexit.register(shutil.rmtree, work, ignore_errors=True)  # removed when the kernel stops

qat8 = prepare_qat(TinyDetector(), weight_bits=8, act_bits=8)
load_checkpoint(RESULTS / "qat8.pt", qat8)  # notebook 05's QAT-8 model: 48 fp32 epochs + 2 QAT epochs
qat8 = qat8.eval()
calib_images = torch.stack([img for img, _ in materialize(SyntheticShapes(64, seed=123), progress=False)])
val_loader = DataLoader(materialize(CocoDetection(Path("..") / "data" / "val" / "annotations.json"), progress=False),
                        batch_size=50, collate_fn=collate_detection)
val_images = torch.cat([torch.stack(list(images)) for images, _ in val_loader])
print(f"{len(val_images)} val images of shape {tuple(val_images.shape[1:])}")

# %% [markdown]
# ## 1. Intuition: integers, plus one rescale per layer
#
# Notebook 04's **affine map** $q = \mathrm{clamp}(\mathrm{round}(r/S) + Z)$, read back as $r \approx S\,(q - Z)$, keeps a weight's sign and size.
#
# An int8 *model* also computes in integers. Each layer multiplies integers, sums them in int32 and **requantizes** the sum onto the next layer's 8-bit grid. No float is needed in between.

# %% tags=["nbval-check-output"]
w = torch.tensor([-0.42, -0.07, 0.0, 0.13, 0.58])
scale = w.abs().max() / 127  # symmetric int8: one scale, zero point 0
q = quantize(w, scale, 0, -128, 127)
print("w                 ", [f"{v:+.3f}" for v in w.tolist()])
print("q = round(w / S)   ", q.tolist(), f"  (S = {scale:.5f}, int8)")
print("S · q  (read back) ", [f"{v:+.3f}" for v in dequantize(q, scale, 0).tolist()])

# %% [markdown]
# ## 2. The formula: one quantized convolution
#
# Write each tensor as $r = S\,(q - Z)$: the input $x$ (uint8; $S_x$, $Z_x$), the weight $w$ (int8; one $S_{w,c}$ per output channel $c$, $Z_w = 0$) and the output $y$ (uint8; $S_y$, $Z_y$). A convolution with bias $b$ becomes one int32 accumulator per output (a sum over its kernel window), at scale $S_{w,c} S_x$:
#
# $$\mathrm{acc}_c = \sum q_w\,(q_x - Z_x) + q_{b,c}, \qquad q_{b,c} = \mathrm{round}\big(b_c / (S_{w,c} S_x)\big).$$
#
# Rescaling it onto the output grid is the only real-valued step:
#
# $$q_y = \mathrm{clamp}\big(Z_y + \mathrm{round}(M_c\,\mathrm{acc}_c),\; q_{\min}, q_{\max}\big), \qquad M_c = \frac{S_{w,c}\, S_x}{S_y}.$$
#
# The clamp is the saturation. A ReLU costs nothing: real 0 is the integer $Z_y$, so ReLU is the same clamp with $q_{\min} = Z_y$.

# %% [markdown]
# `integer_detector` builds these integers from notebook 05's QAT-8 model: the BN-folded weights on QAT's per-channel int8 scales, and each layer's input grid from the activation range QAT trained with. Open one layer:

# %% tags=["nbval-check-output"]
det = integer_detector(qat8, calib_images)
layer = det.layers["stage3.0.0"]  # the first conv of stage 3: 32 -> 64 channels, 3x3, stride 2
m = layer.w_scale.double() * layer.x_scale / layer.y_scale
print(f"weight {tuple(layer.weight.shape)} {layer.weight.dtype}, bias {tuple(layer.bias.shape)} {layer.bias.dtype}")
print(f"input grid:  S_x = {layer.x_scale:.5f}, Z_x = {layer.x_zero_point}   (uint8)")
print(f"output grid: S_y = {layer.y_scale:.5f}, Z_y = {layer.y_zero_point}   (uint8, ReLU fused: clamp to [{layer.q_min}, {layer.q_max}])")
print(f"M_c = S_w,c·S_x/S_y ranges over [{m.min():.2e}, {m.max():.2e}] across the {len(m)} output channels")

# %% [markdown]
# Now run it on real integers: the uint8 activations that reach this layer from four val images (`integer_forward(..., keep)` records every layer's output).

# %% tags=["nbval-check-output"]
keep = {}
det.integer_forward(det.quantize_input(val_images[:4]), keep)
q_x = keep["stage2.1.0"]  # the previous layer's uint8 output is this layer's input
acc = layer.accumulate(q_x)  # sum of q_w · (q_x - Z_x), plus q_b: int32
q_y = layer(q_x)  # requantized, saturated, ReLU-clamped
print(f"q_x {tuple(q_x.shape)} {q_x.dtype} in [{q_x.min()}, {q_x.max()}]")
print(f"acc {tuple(acc.shape)} {acc.dtype}: |acc| <= {acc.abs().max():,}, {acc.abs().max() / 2**31:.4%} of int32's range")
print(f"q_y {tuple(q_y.shape)} {q_y.dtype} in [{q_y.min()}, {q_y.max()}]")

# %% [markdown]
# The accumulator uses 0.0059 % of int32's range: far from overflowing. Is the result right? The next cell compares it with the exact float64 convolution rounded onto the output grid, and with ONNX Runtime's `QLinearConv`.

# %% tags=["nbval-ignore-output"]
x_real = dequantize(q_x, layer.x_scale, layer.x_zero_point).double()
w_real = layer.weight.double() * layer.w_scale.double().reshape(-1, 1, 1, 1)
b_real = layer.bias.double() * layer.w_scale.double() * layer.x_scale
y_real = torch.nn.functional.conv2d(x_real, w_real, b_real, stride=2, padding=1)
ideal = torch.clamp(torch.round(y_real / layer.y_scale) + layer.y_zero_point, layer.q_min, layer.q_max)
gap = (q_y.double() - ideal).abs()
print(f"integer vs exact-then-rounded: {int((gap == 0).sum()):,} of {gap.numel():,} outputs equal, {int((gap == 1).sum())} off by one unit")

session = ort_session(conv_qdq_model(layer, work / "one_conv.onnx"), threads=1)
print("ONNX Runtime runs that layer as:", dict(optimized_op_types(work / "one_conv.onnx")))
q_ort = torch.from_numpy(session.run(None, {"q_x": q_x.numpy()})[0])
print(f"integer vs ONNX Runtime's QLinearConv: {int((q_ort == q_y).sum()):,} of {q_y.numel():,} outputs equal")

# %% [markdown]
# The first and last lines count equal outputs: expect all, or nearly all (*Going deeper* shows where ONNX Runtime can round differently). The two `Transpose` nodes move the data to channels-last (each pixel's channels together), the layout of ONNX Runtime's integer kernel, and back.

# %% [markdown]
# ## 3. The fixed-point multiplier
#
# $M_c$ is still a real number, and integer-only hardware (a microcontroller, many neural-network accelerators) has no float unit for it. So write
#
# $$M = M_0 \cdot 2^{-n}, \qquad M_0 \in [0.5, 1),$$
#
# and store $M_0$ as the int32 $m_0 = \mathrm{round}(M_0 \cdot 2^{31})$ (if rounding carries it up to $2^{31}$, take $2^{30}$ and $n - 1$). Then
#
# $$M \cdot \mathrm{acc} \approx (m_0 \cdot \mathrm{acc}) \gg (31 + n):$$
#
# one integer product (in int64) and one rounding shift. `fixed_point_multiplier` returns $(m_0, n)$; `requantize` applies them and the clamp. (`math.frexp(M)` returns $M_0$ and $-n$.)

# %% [markdown]
# Why 31 bits? Keeping $b$ bits of $M_0$ makes a relative error up to $2^{-b}$, and accumulators reach about $10^5$ (126,639 above): enough to push some outputs across a rounding boundary. Left: the worst relative error over 100,000 random multipliers. Right: how many of our layer's outputs change when $M_0$ keeps $b$ bits.

# %%
gen = torch.Generator().manual_seed(0)
ms = 10 ** (torch.rand(100_000, generator=gen, dtype=torch.float64) * 4 - 5)  # M in [1e-5, 0.1), log-uniform
mantissa, _ = torch.frexp(ms)
bits = list(range(4, 32))
worst = [float(((torch.round(mantissa * 2**b) / 2**b - mantissa).abs() / mantissa).max()) for b in bits]

m0, n = fixed_point_multiplier(m)
reference = requantize(acc, m0, n, layer.y_zero_point, layer.q_min, layer.q_max)
changed = {}
for b in (4, 6, 8, 10, 12, 16, 20, 24, 31):
    m0_b = (torch.round(m0.double() / 2 ** (31 - b)) * 2 ** (31 - b)).to(torch.int64)  # keep b bits of M0
    changed[b] = int((requantize(acc, m0_b, n, layer.y_zero_point, layer.q_min, layer.q_max) != reference).sum())

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
axes[0].semilogy(bits, worst, "o-", ms=3, label="measured worst case")
axes[0].semilogy(bits, [2.0**-b for b in bits], "k--", lw=1, label="bound $2^{-b}$")
axes[0].set_xlabel("bits of $M_0$")
axes[0].set_ylabel("relative error of $M_0 \\cdot 2^{-n}$")
axes[0].set_title("Error of the fixed-point multiplier")
axes[0].legend()
nonzero = {b: c for b, c in changed.items() if c}
bars = axes[1].bar([str(b) for b in nonzero], [100 * c / acc.numel() for c in nonzero.values()], color="tab:red")
axes[1].bar_label(bars, labels=[str(c) for c in nonzero.values()], fontsize=7)
axes[1].bar([str(b) for b in changed if not changed[b]], 0, color="tab:red")  # keep their places on the axis
for b in (b for b, c in changed.items() if not c):
    axes[1].annotate("none", (str(b), 0), xycoords=("data", "axes fraction"), xytext=(0, 4), textcoords="offset points",
                     ha="center", fontsize=7)
axes[1].set_yscale("log")
axes[1].set_xlabel("bits of $M_0$")
axes[1].set_ylabel("% of outputs that change (log; counts on the bars)")
axes[1].set_title(f"stage3.0.0, {acc.numel():,} outputs (31 bits = reference)")
for ax in axes:
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %% tags=["nbval-check-output"]
print(f"channel 0: M = {float(m[0]):.10f} -> m0 = {int(m0[0])}, n = {int(n[0])}; m0 · 2^-(31+n) = {int(m0[0]) * 2.0 ** -(31 + int(n[0])):.10f}")
print("outputs of stage3.0.0 that change when M0 keeps b bits:", changed)

# %% [markdown]
# On this layer, 20 bits or more change nothing; 16 bits change 1 of the 65,536 outputs, 8 bits 506, 4 bits 6,854 (printed above). In 32-bit integer arithmetic 31 bits cost nothing extra, so integer-only runtimes keep all 31.

# %% [markdown]
# ## 4. Experiment: the whole detector in integers
#
# `integer_forward` runs notebook 02's detector layer by layer: 14 integer convolutions, the FPN's upsampling (a copy of integers) and one integer addition of two FPN levels. Only two steps touch floats: quantizing the input image and dequantizing the two head outputs.
#
# The next cell compares every convolution with ONNX Runtime's `QLinearConv` on the same integer input (last column: outputs that differ).

# %% tags=["nbval-ignore-output"]
keep = {"input": det.quantize_input(val_images[:8])}
det.integer_forward(keep["input"], keep)
names = list(det.layers)
source = dict(zip(names[1:], names), **{"stem.0": "input", "lateral3": "stage3.1.0", "lateral4": "stage4.1.0", "smooth.0": "add",
                                         "box_out": "tower.1.0"})
print(f"{'layer':<11}{'in':>6}{'out':>7}{'output shape':>18}{'Z_x':>5}{'Z_y':>5}  ReLU   outputs   ≠ ORT")
for name in names:
    lay = det.layers[name]
    sess = ort_session(conv_qdq_model(lay, work / f"{name}.onnx"), threads=1)
    got = torch.from_numpy(sess.run(None, {"q_x": keep[source[name]].numpy()})[0])
    print(f"{name:<11}{str(keep[source[name]].dtype)[6:]:>6}{str(keep[name].dtype)[6:]:>7}{str(tuple(keep[name].shape)):>18}"
          f"{lay.x_zero_point:>5}{lay.y_zero_point:>5}  {'yes' if lay.relu else 'no ':<5}{keep[name].numel():>9,}{int((got != keep[name]).sum()):>8}")

# %% tags=["nbval-check-output"]
bench = json.loads((RESULTS / "integer_inference.json").read_text())
acc_bench = bench["accuracy"]
layers_bench = acc_bench["layer_vs_ort"]
total, differ = sum(v["elements"] for v in layers_bench.values()), sum(v["differ"] for v in layers_bench.values())
print(f"benchmark, 50 val images: {differ} of {total:,} integer outputs differ from ONNX Runtime "
      f"(largest gap {max(v['max_units'] for v in layers_bench.values())} unit), in layers {[k for k, v in layers_bench.items() if v['differ']]}")

# %% [markdown]
# On the benchmark's 50 val images, 4 of 12.6 million outputs differ, by one unit (printed above): ONNX Runtime rescales in float32, and next to a tie it can round the other way.
#
# Does the integer network still detect as well? The next cell scores it on val, beside the fake-quant model and the ONNX export (`export_qdq`: the same integers as a QDQ model). The float model only supplies anchors and NMS.

# %% tags=["nbval-ignore-output"]
qdq_path = export_qdq(det, work / "qat8_own_scales.onnx")  # the same integers as an ONNX QDQ model
ort_int8 = OrtDetector(ort_session(qdq_path, threads=2), TinyDetector())
maps = {"QAT-8, fake quantization (PyTorch)": evaluate(qat8, val_loader, cpu)["map"],
        "QAT-8, integer network (from scratch)": evaluate(det, val_loader, cpu)["map"],
        "QAT-8, ONNX Runtime int8 (QAT's scales)": evaluate(ort_int8, val_loader, cpu)["map"]}
for name, value in maps.items():
    print(f"{name:<44} val mAP@[.5:.95] {value:.4f}")

# %% tags=["nbval-check-output"]
d = acc_bench["difference_vs_fake_quant"]
points = lambda r: f"{100 * r['value']:+.2f} points [95 % CI {100 * r['low']:+.2f}, {100 * r['high']:+.2f}]"  # noqa: E731
print("val, 200 images (the benchmark, paired image-level bootstrap):")
print("integer network − ONNX Runtime (QAT's scales):", points(d["integer_vs_qat_scales"]))
print("integer network − fake quantization:            ", points(d["integer"]))

# %% [markdown]
# The integer network and ONNX Runtime differ by +0.00 points. Both sit about 0.1 points below the fake-quant model, within noise: the 95 % bootstrap interval contains 0 ([glossary](../docs/glossary.md)). Your page of integer code computes what ONNX Runtime's int8 model computes, up to rare ties.

# %% [markdown]
# ## Exercises
#
# Reference solutions: `solutions/ex09_integer_inference.py`.
#
# **Exercise 1.** Write `my_fixed_point_multiplier(m)` returning `(m0, n)`: integers with $M \approx m_0 \cdot 2^{-(31+n)}$ and $2^{30} \le m_0 < 2^{31}$. Mind the case where rounding carries $M_0 \cdot 2^{31}$ up to $2^{31}$ (try $M = 1 - 2^{-40}$).

# %%
from course_utils.exercises import check_fixed_point_multiplier, check_int32_bias


def my_fixed_point_multiplier(m):
    # YOUR CODE HERE
    raise NotImplementedError


check_fixed_point_multiplier(my_fixed_point_multiplier)


# %% [markdown]
# **Exercise 2.** Write `my_int32_bias(bias, x_scale, w_scale)`: the float bias (C,) of a conv as the int32 that adds straight onto its accumulator, given the input scale $S_x$ (a float) and the per-channel weight scales $S_w$ (C,). Which scale is the accumulator at?

# %%
def my_int32_bias(bias, x_scale, w_scale):
    # YOUR CODE HERE
    raise NotImplementedError


check_int32_bias(my_int32_bias)

# %% [markdown]
# **Exercise 3 (open, no reference solution).** Use ONNX Runtime's profiler (`SessionOptions.enable_profiling = True`, then `session.end_profiling()` gives a JSON trace with one `..._kernel_time` event per node; build your own `onnxruntime.InferenceSession` with those options, since `ort_session` does not profile, and set `profile_file_prefix` to put the trace in `work`) on the int8 model of §4 (`qdq_path`) at batch 16, and find which node types take the time outside the `QLinearConv`s. Which of them could a different export remove?

# %% [markdown]
# ## Takeaways
#
# * An int8 layer is integer arithmetic: an int32 accumulator of int8 × uint8 products plus an int32 bias, then one requantization by $M = S_w S_x / S_y$. Saturation and ReLU are one clamp.
# * $M$ becomes integers too: a fixed-point multiplier, one integer product and one rounding shift.
# * Written by hand, the whole detector runs in integers from input to outputs. It matches ONNX Runtime's integer kernels except at rare float32 ties, and scores within noise of the fake-quant model.

# %% [markdown]
# ## Going deeper
#
# These parts are optional: nothing in the core path depends on them. They reuse the variables above, so run the core first.
#
# * **The zero point at the padded border**: a classic bug of hand-written integer kernels.
# * **Where ONNX Runtime rounds differently**: float32 ties, and the CPU instructions behind the exact matches.
# * **The integer addition of the FPN**: two inputs on different grids.
# * **Carrying QAT's scales to deployment**: QAT's own activation ranges against re-calibration.
# * **Is it faster?** int8 against the fastest fp32 path, and what changed the speed.
# * **The ceiling**: multiply-adds per cycle of AVX2, AVX-512, VNNI, bf16 and AMX, with sources.
# * **Where int8 pays**: the speed-up over batch and image size, in ONNX Runtime and OpenVINO.
# * **End to end, once the network is int8**: what is left when the network is no longer the bottleneck.
# * **Codebook quantization**: k-means levels against a linear grid.
# * **AdaRound**: learning each weight's rounding after training.

# %% [markdown]
# ### The zero point at the padded border
#
# Expand the accumulator of §2: $\sum q_w (q_x - Z_x) = \sum q_w q_x - Z_x \sum q_w$. The first sum is a plain integer convolution of the stored uint8 input. The second needs only the weights, so it can be computed once, ahead of time.
#
# Once per *channel*? Not quite. At the image border, part of each window falls on the padding, which stands for real 0, i.e. the integer $Z_x$; there the window's $\sum q_w$ is smaller. The first layer (`stem.0`, input zero point 127) shows the difference:

# %% tags=["nbval-check-output"]
stem = det.layers["stem.0"]
q_in = det.quantize_input(val_images[:4])
acc_stem = stem.accumulate(q_in)
conv = lambda x: torch.nn.functional.conv2d(x, stem.weight.int(), stride=2, padding=1)  # noqa: E731 -- zero padding
raw = conv(q_in.int())
window_sum = conv(torch.ones_like(q_in, dtype=torch.int32))  # Σ q_w over the part of each window inside the image
channel_sum = stem.weight.int().sum(dim=(1, 2, 3)).reshape(1, -1, 1, 1)  # Σ q_w over the whole kernel
bias = stem.bias.reshape(1, -1, 1, 1)
print(f"Z_x = {stem.x_zero_point}")
print("acc = Σ q_w·q_x − Z_x·(window sum) + q_b: ", torch.equal(acc_stem, raw - stem.x_zero_point * window_sum + bias))
wrong = (acc_stem != raw - stem.x_zero_point * channel_sum + bias).any(dim=(0, 1))
rows, cols = wrong.nonzero().unbind(1)
print(f"acc = Σ q_w·q_x − Z_x·(channel sum) + q_b: wrong at {int(wrong.sum())} of {wrong.numel()} positions, "
      f"all in row 0 or column 0 (the padded border): {bool(((rows == 0) | (cols == 0)).all())}")

# %% [markdown]
# With stride 2 and padding 1, only the top row and the left column of windows reach into the padding. Forgetting the border is a classic bug of hand-written integer kernels. ONNX Runtime pads the uint8 input with $Z_x$ instead, which is the same thing.

# %% [markdown]
# ### Where ONNX Runtime rounds differently
#
# `requantize` computes $M \cdot \mathrm{acc}$ in fixed point and rounds once, half away from zero (2.5 → 3, −2.5 → −3). Integer-only libraries such as gemmlowp, the integer kernels behind TensorFlow Lite, split it into two roundings and can differ by a unit at exact ties.
#
# ONNX Runtime's x86 kernels skip the fixed point. They compute $\mathrm{round\_half\_even}(\mathrm{float32}(\mathrm{acc}) \cdot M)$ in float: "half to even" sends 2.5 to 2 and 3.5 to 4, as `torch.round` does. Their $M$ is a float32, with 24 bits of mantissa instead of 31. The two agree except when $\mathrm{acc} \cdot M$ falls within float32's rounding error of a tie. (A float multiply also makes the result depend on each platform's float rounding: one more reason integer-only runtimes avoid it.)

# %% [markdown]
# Here is one such output, in `stage3.1.0` on the 8 images of §4: $\mathrm{acc} \cdot M$ computed exactly and in float32.

# %% tags=["nbval-ignore-output"]
lay = det.layers["stage3.1.0"]
sess = ort_session(conv_qdq_model(lay, work / "stage3.1.0.onnx"), threads=1)
got = torch.from_numpy(sess.run(None, {"q_x": keep["stage3.0.0"].numpy()})[0])
acc_31 = lay.accumulate(keep["stage3.0.0"])
for b, c, i, j in (got != keep["stage3.1.0"]).nonzero().tolist()[:3]:
    a = int(acc_31[b, c, i, j])
    m_c = float(lay.w_scale[c]) * lay.x_scale / lay.y_scale
    exact = a * m_c
    m_32 = lay.w_scale[c].float() * torch.tensor(lay.x_scale) / torch.tensor(lay.y_scale)  # float32 all the way, as ONNX Runtime
    in_float32 = float(torch.tensor(float(a)) * m_32)
    print(f"acc = {a}: acc·M = {exact:.8f} exactly -> {int(keep['stage3.1.0'][b, c, i, j])} here;"
          f" in float32 {in_float32:.8f} -> {int(got[b, c, i, j])} in ONNX Runtime")

# %% [markdown]
# A hair below .5 in exact arithmetic, exactly .5 in float32, where round-half-to-even goes the other way. That is how the two integer engines come to differ.
#
# The exact matches also assume a CPU like the course's, a 2-core x86 CPU with AVX-512 VNNI: instructions that multiply uint8 by int8 bytes and add the products in int32. Without VNNI, ONNX Runtime's uint8 × int8 kernel adds pairs of products in saturating 16-bit arithmetic (`vpmaddubsw`) and can differ more.

# %% [markdown]
# ### The integer addition of the FPN
#
# The FPN adds two levels whose integers sit on different grids, so they cannot simply be summed. `integer_add` follows TFLite: shift both inputs left by 20 bits, bring each to a common scale with a fixed-point multiplier, add, and requantize to the output grid.
#
# `tests/test_integer.py` checks the addition against the exact sum, and the whole network, addition included, against ONNX Runtime (`QLinearAdd`). Another test records the dtype of every operation inside `integer_forward`: none is a float.

# %% [markdown]
# ### Carrying QAT's scales to deployment
#
# Notebook 05 deployed QAT-8 the common way: export the QAT weights as a *float* model and let ONNX Runtime's quantizer calibrate it again (min-max). The activation ranges that QAT trained with are thrown away.
#
# `export_qdq` instead writes the integer network itself as an ONNX **QDQ** graph. Every tensor between two layers passes through `QuantizeLinear → DequantizeLinear` with the QAT model's own scale and zero point; every weight is an int8 initializer, every bias an int32 one. When ONNX Runtime loads the graph, it fuses each `DQ → Conv → Relu → Q` group into one integer kernel. Which kernels it ends up running depends on its graph-optimization level:

# %% tags=["nbval-ignore-output"]
for level in ("basic", "extended", "all"):
    ops = optimized_op_types(qdq_path, optimization=level)
    print(f"{level:<9} " + ", ".join(f"{op} {ops[op]}" for op in ("QLinearConv", "QLinearAdd", "Conv", "Relu", "QuantizeLinear",
                                                                    "DequantizeLinear", "Transpose")))

# %% [markdown]
# At the `basic` level ONNX Runtime keeps the QDQ nodes and runs float `Conv`s between them: correct numbers, no integer speed. From `extended` up, the convolutions and the FPN addition run as integer kernels (`QLinearConv`, `QLinearAdd`); only the quantization of the input and the dequantization of the two head outputs remain. `all` also moves the integer kernels to channels-last (NHWC) and adds `Transpose`s where the layout changes.
#
# How much do QAT's own scales matter? The benchmark scores both deployments of the same QAT-8 weights on val and on test. Nothing is chosen here, so the comparison is read on test. It also compares their raw outputs with the fake-quant model's, counted in output steps $S_y$ of the head:

# %% tags=["nbval-check-output"]
m, mt, dt = acc_bench["val_map"], acc_bench["test_map"], acc_bench["test_difference_vs_fake_quant"]
agree, ops = acc_bench["agreement_vs_fake_quant"], acc_bench["optimized_op_types"]
print(f"{'QAT-8 deployed as':<34}{'val mAP':>8}{'test mAP':>9}   {'test: vs fake quant, points [95% CI]':<38}{'logits within 1 step':>21}"
      f"{'largest gap':>12}{'box deltas':>12}  kernels")
print(f"{'fake quantization (PyTorch)':<34}{m['fake_quant']:>8.4f}{mt['fake_quant']:>9.4f}")
for key, label in (("integer", "integer network (from scratch)"), ("qat_scales", "ONNX Runtime, QAT's scales"),
                   ("recalibrated", "ONNX Runtime, re-calibrated")):
    kernels = f"QLinearConv {ops[key]['QLinearConv']}" if key in ops else "torch int32"
    print(f"{label:<34}{m[key]:>8.4f}{mt[key]:>9.4f}   {points(dt[key]):<38}{agree[key]['logits']['within_one_step']:>21.1%}"
          f"{agree[key]['logits']['max_steps']:>8.1f} steps{agree[key]['deltas']['within_one_step']:>12.1%}  {kernels}")
print("QAT's scales − re-calibrated, test:", points(dt["qat_scales_vs_recalibrated"]))
print("QAT's scales − re-calibrated, val: ", points(d["qat_scales_vs_recalibrated"]))

# %% [markdown]
# * **QAT's scales track the model that was trained.** With them, the deployed model is the integer network (identical except at the float32 ties above). 60 % of its raw logits land within one output step of the fake-quant model's; re-calibrated, only 44 % do, and the largest gap grows from 11 to 17 steps.
# * **In mAP the difference is small.** On test, the deployment with QAT's scales is within noise of the fake-quant model (−0.27 points, −0.55 to +0.02); the re-calibrated one is not (−0.59, −1.08 to −0.21). But the two deployments' own difference, +0.32 points (−0.07 to +0.81), is still within noise (on val: +0.16). At 8 bits, min-max re-calibration on 64 images is close to what QAT learned. The gap would matter more where ranges are harder to guess: fewer calibration images, skewed activations, lower bit widths. Both cost the same at run time: the same 14 `QLinearConv`s.

# %% [markdown]
# **Why not 100 % within one step?** The integer network rounds what the fake-quant model keeps in float: the int32 bias, the two FPN laterals and the head outputs. (Nothing in QAT quantizes the laterals and the head outputs; their four grids come from min-max over the 64 calibration images.) Each rounding moves a few outputs of a layer by one unit, and those differences cascade: a layer fed a slightly different input gives more differing outputs. By the head, 40 % of the logits and a quarter of the box deltas are more than a step away.
#
# In mAP the cascade costs nothing measurable: −0.11 points on val (§4) and −0.27 on test against the fake-quant model, both within noise.

# %% [markdown]
# ### Is it faster? int8 against the fastest fp32 path
#
# The goal (notebook 05): the int8 network at least **3×** faster than the *fastest* fp32 path at batch 16, on a CPU with VNNI; 2× would be a floor. The compute-bound ceiling is 4×: a quarter of the bytes, four times the multiply-adds per instruction.
#
# **How it is timed.** `benchmarks/integer_inference.py --latency` times the network alone (no post-processing) at 2 threads. Every variant runs once per round, in 5 interleaved rounds, and keeps its median round. A speed-up ("x") is paired: the median of the per-round ratios against the baseline.
#
# **What is compared.** The fp32 candidates are eager PyTorch and ONNX Runtime at two optimization levels, all on the same BN-folded fp32 detector; the fastest is the baseline. Each int8 change tried is also scored: on val, where changes are chosen, and on test, where the chosen one is reported. A faster model that detects worse is not a win.

# %% tags=["nbval-check-output"]
lat = bench["latency"]
ms, speed, lat_map, lat_ops = lat["latency_ms"], lat["speedup_vs_fastest_fp32"], lat["val_map"], lat["optimized_op_types"]
labels = {"fp32_eager": "fp32, eager PyTorch", "fp32_ort": "fp32, ONNX Runtime (all)", "fp32_ort_extended": "fp32, ONNX Runtime (extended)",
          "int8": "int8, QAT's scales (all)", "int8_opt_basic": "  graph optimization: basic", "int8_opt_extended": "  graph optimization: extended",
          "int8_s8_activations": "  int8 activations (s8 x s8)", "int8_s8_activations_default": "  int8 activations, no session option",
          "int8_fused_head": "  the two heads as one conv", "int8_float_stem": "  first conv (3 channels) in float"}
print(f"fastest fp32: {lat['fastest_fp32']['batch1']} at batch 1, {lat['fastest_fp32']['batch16']} at batch 16; "
      f"{lat['threads']} threads, {lat['rounds']} interleaved rounds")
print(f"{'network':<40}{'batch 1 ms [p10-p90]':>22}{'x':>6}{'batch 16 ms [p10-p90]':>24}{'x':>6}{'val mAP':>9}{'test mAP':>9}  kernels")
for key, label in labels.items():
    row = f"{label:<40}"
    for b in ("batch1", "batch16"):
        m = ms[b][key]
        row += f"{m['median_ms']:>9.2f} [{m['p10_ms']:.2f}-{m['p90_ms']:.2f}]{speed[b][key]:>6.2f}" + ("  " if b == "batch1" else "")
    ops = lat_ops.get(key, {})
    kernels = f"QLinearConv {ops.get('QLinearConv', 0)}, Conv {ops.get('Conv', 0) + ops.get('FusedConv', 0)}" if ops else ""
    print(row + (f"{lat_map[key]:>9.4f}{lat['test_map'][key]:>9.4f}" if key in lat_map else " " * 18) + f"  {kernels}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharey=True)
keys = list(labels)
for ax, b in zip(axes, ("batch1", "batch16")):
    colors = ["tab:gray" if k.startswith("fp32") else "tab:blue" for k in keys]
    base = ms[b][lat["fastest_fp32"][b]]["median_ms"]
    limit = 2.2 * base  # the s8 x s8 bar runs far off the scale: clipped, its time written on it
    ax.barh([labels[k].strip() for k in keys], [min(ms[b][k]["median_ms"], limit) for k in keys], color=colors)
    for i, k in enumerate(keys):
        if ms[b][k]["median_ms"] > limit:
            ax.text(limit, i, f" {ms[b][k]['median_ms']:.1f} ms →", va="center", ha="right", fontsize=8, color="white")
    ax.set_xlim(0, limit)
    for goal, style in ((2, "--"), (3, ":")):
        ax.axvline(base / goal, color="tab:red", ls=style, lw=1.5, label=f"{goal}x faster than the fastest fp32")
    ax.set_xlabel("ms per call (median of the median round)")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"network alone, {b.replace('batch', 'batch ')}")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# **The floor is met, the goal is missed.** At batch 16 the int8 network with QAT's scales runs 2.25× faster than the fastest fp32 path (ONNX Runtime, 11.0 ms → 4.9 ms), at batch 1 2.10× (paired over the 5 rounds): above the 2× floor, below the 3× goal (this benchmark times ONNX Runtime only; notebook 05's adds OpenVINO and torchao). What each change bought, measured in the same rounds:
#
# * **Graph optimization level: decisive.** At `basic` ONNX Runtime runs float convs between the QDQ nodes: 0.56×, *slower* than fp32. `extended` fuses the integer kernels but keeps them channels-first: 1.63×. Only `all`, which moves them to channels-last (NHWC), reaches 2.25×.
# * **int8 instead of uint8 activations: much worse.** With the session option that lets ONNX Runtime fuse signed activations (`session.qdqisint8allowed`), the same numbers run in its signed × signed kernels at 0.21×. Without the option, 6 of the 14 convs stay float and the network runs at 1.14×. On x86, VNNI's instruction multiplies *unsigned* by signed bytes: uint8 activations are the native case.

# %% [markdown]
# * **Fusing the two head convs into one: nothing, at a high price.** No measurable time saved (the heads are tiny 1×1 convs: 2.28× against 2.25×), and on one shared output grid the box deltas lose most of their levels: mAP 0.58 instead of 0.86, on val and on test alike.
# * **The first conv in float: the one real gain.** Each output of the stem sums only 3 × 3 × 3 = 27 products, too few for an int8 kernel to pay for its packing. Run in float and quantized at its output, the network reaches **2.63×** at batch 16 (2.18× at batch 1). It is chosen on val (0.864 against 0.862, +0.2 points, well inside the bootstrap noise of 200 images) and reported on test, where it scores what the all-int8 network scores (0.862 both): a speed gain, not an accuracy one.
# * Still short of 3×: the rest of the int8 time is spent in convs with 16 to 64 channels, where memory traffic and the layout changes, more than multiply-adds, likely set the pace (Exercise 3 profiles it).

# %% [markdown]
# **Channel counts do not enter here.** ONNX Runtime's blocked layout (NCHWc, channels in blocks of 16 on an AVX-512 CPU; notebook 07) is a layout of its *float* convolutions. Its integer `QLinearConv` kernels run channels-last (NHWC) and do not use it. So rounding channel counts to the block buys the int8 network nothing by itself (notebook 07 found only that counts which are not multiples of 4 slow them).

# %% [markdown]
# ### The ceiling: multiply-adds per cycle on each instruction set
#
# A convolution is multiply-adds (**MACs**). How many a core can do per clock cycle depends on the instructions it has and on the number type. The table counts them from each instruction's width, for a core with two vector units that are as wide as the instruction (Intel's server cores; the benchmark CPU is an AMD one, see below):
#
# * fp32: one fused multiply-add instruction (`VFMADD231PS`) does 8 MACs on a 256-bit AVX2 register, 16 on a 512-bit AVX-512 one.
# * int8 without VNNI takes three instructions: `VPMADDUBSW` multiplies u8 × s8 pairs and adds neighbours into saturating int16s, `VPMADDWD` widens them to int32, `VPADDD` accumulates (the table averages its MACs over the three).
# * **VNNI**'s `VPDPBUSD` fuses the three: 64 u8 × s8 MACs per 512-bit instruction, into int32.
# * **AVX-512 BF16**'s `VDPBF16PS` does 32 bf16 MACs into fp32 per instruction.
# * **AMX** works on *tiles*, 2-D registers of 16 rows × 64 bytes: `TDPBUSD` multiplies a 16 × 64 int8 tile by a 64 × 16 one (16,384 MACs), `TDPBF16PS` a 16 × 32 bf16 tile by a 32 × 16 one (8,192), each once every 16 cycles.

# %% tags=["nbval-check-output"]
ceilings = [  # (instruction set, number type, MACs per instruction, instructions per cycle per core)
    ("AVX2", "fp32", 8, 2), ("AVX2, no VNNI", "int8", 32 / 3, 2), ("AVX-VNNI (256-bit)", "int8", 32, 2),
    ("AVX-512", "fp32", 16, 2), ("AVX-512, no VNNI", "int8", 64 / 3, 2), ("AVX-512 VNNI", "int8", 64, 2),
    ("AVX-512 BF16", "bf16", 32, 2), ("AMX-BF16", "bf16", 16 * 16 * 32, 1 / 16), ("AMX-INT8", "int8", 16 * 16 * 64, 1 / 16),
]
fp32_macs = {"AVX2": 16, "AVX-512": 32}  # fp32 MACs per cycle with the same register width
print(f"{'instruction set':<20}{'type':<6}{'MACs/instr':>11}{'MACs/cycle':>12}{'x fp32 (same width)':>21}")
for name, kind, per_instr, per_cycle in ceilings:
    macs = per_instr * per_cycle
    base = fp32_macs["AVX2" if name.startswith("AVX2") or "256" in name else "AVX-512"]
    print(f"{name:<20}{kind:<6}{per_instr:>11.0f}{macs:>12.0f}{macs / base:>20.2f}x")

# %% [markdown]
# The ratios are what matters: int8 gains **1.33×** over fp32 without VNNI, **4×** with it, and **32×** over AVX-512 fp32 with AMX; bf16 gains 2× with AVX-512 BF16 and 16× with AMX. AMX keeps int8's 2× lead over bf16: both ceilings rise, not just bf16's.
#
# The benchmark CPU is an AMD EPYC (family 19h, model 11h: the Zen 4 generation). It runs each 512-bit instruction on 256-bit units, in two halves, so its 512-bit counts halve; its AVX2 FMAs already fill those units, so its fp32 peak is 16 MACs per cycle with AVX2 and with AVX-512 alike. And a ceiling bounds the multiply-adds only: where fp32 is not limited by them, int8 can beat the 1.33× ceiling, as it did in notebook 05 without VNNI (1.8×).
#
# Sources: Intel's white paper *Lower Numerical Precision Deep Learning Inference and Training* (2018) for the three-instruction int8 sequence, its 1.33× and VNNI's fusion; the *Intel 64 and IA-32 Architectures Software Developer's Manual* for `VPDPBUSD`, `VDPBF16PS`, `TDPBUSD` and `TDPBF16PS`; Intel's AMX overview, which counts 2,048 int8 and 1,024 bf16 *operations* (a multiply or an add: two per MAC) per cycle per core, against 256 with AVX-512 VNNI and 64 with AVX-512 fp32, the table's numbers doubled.
#
# These are ceilings for the multiply-adds alone. A network also moves data, changes layouts and requantizes; the next two sections show how close this detector gets.

# %% tags=["nbval-check-output"]
lat_bench = json.loads((RESULTS / "int8_latency.json").read_text())
scaling = json.loads((RESULTS / "int8_scaling.json").read_text())
features = lat_bench["cpu_int8_features"]
print("the benchmark CPU:", ", ".join(k for k in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
                                      if features.get(k)))
print("no AMX: the AMX rows above are not measured here" if not (features["amx_int8"] or features["amx_bf16"]) else "AMX present")

# %% [markdown]
# ### Where int8 pays: batch and image size
#
# `benchmarks/int8_scaling.py` times the network (no post-processing) at 4 batch sizes × 3 image sizes, in ONNX Runtime and OpenVINO at every precision, in 3 interleaved rounds. Each point is the fastest int8 runtime's paired speed-up over the fastest fp32 one (left), and over the fastest float one, bf16 included (right). (Not in this sweep: `torch.compile` and torchao, whose compiled graphs are fixed to one shape each. The fp32 files are exported per image size, the int8 file takes any size.)

# %%
sizes, batches = scaling["sizes"], scaling["batches"]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
for ax, key, ceiling, title in ((axes[0], "speedup_int8_vs_fp32", 4, "int8 over the fastest fp32"),
                                (axes[1], "speedup_int8_vs_float", 2, "int8 over the fastest float (fp32 or bf16)")):
    for size in sizes:
        ax.plot(batches, [scaling["cells"][f"{size}px_b{b}"][key] for b in batches], "o-", label=f"{size}×{size} images")
    ax.axhline(ceiling, color="tab:red", ls=":", label=f"instruction ceiling ({ceiling}x)")
    ax.axhline(1, color="gray", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_title(title)
    ax.grid(alpha=0.3)
axes[0].set_ylabel("speed-up (paired, median of rounds)")
axes[0].legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% tags=["nbval-check-output"]
print(f"{'cell':<12}{'fastest fp32':>14}{'fastest float':>15}{'fastest int8':>14}{'int8 ms/image':>15}{'x fp32':>8}{'x float':>9}")
for key, c in scaling["cells"].items():
    print(f"{key:<12}{c['fastest']['fp32']:>14}{c['fastest']['float']:>15}{c['fastest']['int8']:>14}"
          f"{c['ms_per_image_fastest_int8']:>15.3f}{c['speedup_int8_vs_fp32']:>8.2f}{c['speedup_int8_vs_float']:>9.2f}")

# %% [markdown]
# **Small inputs are overhead-bound.** A single 64-pixel image gives each layer little work, and fixed costs per call and per layer (thread hand-over, layout changes, requantization) weigh as much as the multiply-adds: int8 is only 1.7× faster than fp32. **More work per call moves toward the ceiling**: from 128-pixel batches of 4 and 256-pixel single images up, 2.9–3.4×, still short of VNNI's 4×. At batch 64 the two larger image sizes fall back a little (3.2× and 2.8×), likely because a batch's activations no longer fit in the caches.
#
# Against the fastest float path, bf16 included, int8's lead is smaller: 1.1–1.7×. The ceilings predict at most 2× (4× over fp32 against bf16's 2×).
#
# Timings also move between processes. The 128-pixel batch of 16 is measured by both benchmarks, minutes apart:

# %% tags=["nbval-check-output"]
cell = scaling["cells"]["128px_b16"]
print(f"int8_scaling.py:  fastest fp32 {cell['fastest']['fp32']} {cell['latency_ms'][cell['fastest']['fp32']]['median_ms']:.2f} ms, "
      f"fastest int8 {cell['fastest']['int8']} {cell['latency_ms'][cell['fastest']['int8']]['median_ms']:.2f} ms: {cell['speedup_int8_vs_fp32']:.2f}x")
s16 = lat_bench["summary"]["batch16"]
print(f"int8_latency.py:  fastest fp32 {s16['fastest_fp32']} {s16['fastest_fp32_ms']:.2f} ms, "
      f"fastest int8 {s16['fastest_int8']} {s16['fastest_int8_ms']:.2f} ms: {s16['speedup_fastest_int8_vs_fastest_fp32']:.2f}x")
print("OpenVINO in both:", {k: round(lat_bench["latency_ms"][k]["batch16"]["median_ms"], 2) for k in ("fp32_openvino", "int8_openvino")},
      {k: round(cell["latency_ms"][k]["median_ms"], 2) for k in ("fp32_openvino", "int8_openvino")})

# %% [markdown]
# The same cell, 2.6× in one run and 3.4× in the other: the fastest fp32 network (ONNX Runtime) ran 13 % slower in the sweep, and OpenVINO's int8 11 % faster. Within one run the interleaved rounds keep a ratio fair; across runs, a ratio is only as good as the spread you see here. Compare numbers from one benchmark run.

# %% [markdown]
# ### End to end, once the network is int8
#
# Decode + NMS runs in float PyTorch after any network, and its cost does not shrink with int8. Once the network is int8 it is a large share of the pipeline, and at batch 1 the pipeline takes 1.6 times the sum of its parts: post-processing runs on one thread there, ONNX Runtime's threads no longer spin (the network alone is timed with spinning), and each call hands its tensors from one runtime to the other:

# %% tags=["nbval-check-output"]
post_ms = lat_bench["latency_ms"]["postprocess"]
for b in ("batch1", "batch16"):
    net, whole = lat_bench["latency_ms"]["int8_ort"][b]["median_ms"], lat_bench["latency_ms"]["int8_ort"][f"e2e_{b}"]["median_ms"]
    print(f"int8 ONNX Runtime, {b.replace('batch', 'batch '):>8}: network {net:.2f} ms, decode + NMS alone {post_ms[b]['median_ms']:.2f} ms, "
          f"pipeline {whole:.2f} ms; the network is {net / whole:.0%} of it")

# %% [markdown]
# At batch 1 the int8 network is 39 % of the pipeline: making it twice as fast again would save a fifth. Past this point, speed comes from the rest of the pipeline (batching, fewer candidates before NMS, one runtime for everything), not from fewer bits.

# %% [markdown]
# ### Codebook quantization: put the levels where the weights are
#
# Linear quantization spreads its $2^b$ levels evenly over a range. A weight distribution is nothing like even: most weights sit near zero, a few far out. **Codebook quantization** (Han et al. 2016, *Deep Compression*, and MIT 6.5940's second lab) clusters each layer's weights with 1-D k-means into $2^b$ centroids. It stores, per weight, only its $b$-bit cluster index, plus the small table of centroids:
#
# $$W_i = C_{I_i}, \qquad I_i = \arg\min_k |w_i - c_k|, \qquad c_k = \operatorname{mean}\{w_i : I_i = k\}.$$
#
# Fine-tuning keeps the indices and trains the centroids: since $W = C[I]$, autograd makes each centroid's gradient **the sum of the gradients of the weights that share it** (`CodebookLayer`; tested against a scatter-add). Here is one layer at 3 bits: the k-means levels against a uniform 3-bit grid over the same layer.

# %% tags=["nbval-check-output"]
from course_utils.quant import fuse_conv_bn, kmeans_codebook, quantize_tensor

fp32 = TinyDetector()
load_checkpoint(RESULTS / "tiny_detector_converged.pt", fp32)
weight = fuse_conv_bn(fp32.eval()).stage3[1][0].weight.detach()  # a 64 -> 64 conv, BN folded: 36,864 weights
centroids, indices = kmeans_codebook(weight, bits=3)
per_tensor, scale, _ = quantize_tensor(weight, num_bits=3)  # the course's linear quantizer: symmetric int3, one scale
per_channel, _, _ = quantize_tensor(weight, num_bits=3, ch_axis=0)  # ... one scale per output channel
err = {"k-means codebook (one per layer)": (weight - centroids[indices]).pow(2).mean(),
       "linear, per tensor": (weight - per_tensor).pow(2).mean(), "linear, per output channel": (weight - per_channel).pow(2).mean()}
print(f"{weight.numel():,} weights at 3 bits, mean squared error:")
for name, e in err.items():
    print(f"  {name:<34}{e:.2e}")
uniform = scale * torch.arange(-4, 4)  # the 8 levels of the per-tensor grid
fig, ax = plt.subplots(figsize=(9, 3))
ax.hist(weight.flatten().numpy(), bins=200, color="tab:gray", alpha=0.7)
for c in centroids.tolist():
    ax.axvline(c, color="tab:blue", lw=1.5)
for u in uniform.tolist():
    ax.axvline(u, color="tab:orange", lw=1, ls="--")
ax.set_yscale("log")
ax.set_xlabel("weight value (stage3.1, BN folded)")
ax.set_ylabel("count (log)")
ax.set_title("3 bits: k-means centroids vs the linear per-tensor grid")
ax.legend(handles=[plt.Line2D([], [], color="tab:blue", lw=1.5, label="k-means centroids"),
                   plt.Line2D([], [], color="tab:orange", ls="--", label="linear int3 levels (per tensor)")], fontsize=8)
plt.show()

# %% [markdown]
# A uniform grid spends levels on the sparse tails; the centroids crowd where the weights are. Per-channel scales, which the course's linear quantizer uses, fit each channel's range and narrow the gap.
#
# On the whole detector, `benchmarks/codebook_sweep.py` compares the two at 2, 3 and 4 bits, weights only (activations stay float for both). Each is scored before and after **2 epochs of fine-tuning**: centroids for the codebook, all weights through the STE for linear QAT. A float model fine-tuned as long sits beside them, 3 seeds each ("total": the epochs behind each fine-tuned row, 48 of the converged start + 2).
#
# Each method fine-tunes at its own learning rate, the best of three for it in a probe run scored on **val** (a seed not reported here); so the comparison is read on **test**:

# %% tags=["nbval-check-output"]
cb = json.loads((RESULTS / "codebook.json").read_text())
v, ep, size = cb["test_map"], cb["epochs"], cb["bytes"]
from course_utils import seed_difference

fmt = lambda key: f"{v[key]['mean']:.3f}" + (f" ± {v[key]['std']:.3f}" if v[key]["std"] else "        ")  # noqa: E731
print(f"test mAP@[.5:.95]; fine-tuned: mean ± sample std over n = {len(cb['config']['seeds'])} seeds; lr: chosen on val")
print(f"{'bits':<5}{'method':<10}{'no fine-tuning':>15}{'+2 epochs':>18}{'total':>8}{'KiB':>6}{'lr':>8}"
      "   codebook − linear, +2 epochs [paired 95% CI]")
for bits in cb["config"]["bits"]:  # the two methods share each seed's data order: a paired comparison
    diff = seed_difference(cb["test_runs"][f"codebook{bits}_ft"], cb["test_runs"][f"linear{bits}_ft"], paired=True)
    verdict = f"{100 * diff['difference']:+.1f} [{100 * diff['low']:+.1f}, {100 * diff['high']:+.1f}]" + (" within noise" if diff["within_noise"] else "")
    for method in ("codebook", "linear"):
        key = f"{method}{bits}"
        print(f"{bits:<5}{method:<10}{fmt(key):>15}{fmt(key + '_ft'):>18}{ep[key + '_ft']:>8}{size[key] / 1024:>6.0f}"
              f"{cb['lr'][key + '_ft']:>8g}   " + (verdict if method == "codebook" else ""))
for key in ("fp32_ft_lr0.001", "fp32_ft_lr0.0003"):
    print(f"{'32':<5}{'float':<10}{fmt('fp32'):>15}{fmt(key):>18}{ep[key]:>8}{size['fp32'] / 1024:>6.0f}{cb['lr'][key]:>8g}")
probe = cb["lr_probe"]["0.001"]["val_map"]
print(f"learning-rate probe (val, seed {cb['lr_probe']['0.001']['seeds'][0]}, not reported above), both at lr 1e-3, 4 bits: "
      f"codebook {probe['codebook4_ft']:.3f}, linear {probe['linear4_ft']:.3f}")

# %%
fig, ax = plt.subplots(figsize=(7, 3.6))
for method, color in (("codebook", "tab:blue"), ("linear", "tab:orange")):
    bits = cb["config"]["bits"]
    kib = [size[f"{method}{b}"] / 1024 for b in bits]
    ax.plot(kib, [v[f"{method}{b}"]["mean"] for b in bits], "o--", color=color, alpha=0.6, label=f"{method}, no fine-tuning")
    ax.errorbar(kib, [v[f"{method}{b}_ft"]["mean"] for b in bits], yerr=[v[f"{method}{b}_ft"]["std"] for b in bits], fmt="o-",
                color=color, capsize=3, label=f"{method}, +2 epochs")
    for b, x in zip(bits, kib):
        ax.annotate(f"{b} bit", (x, v[f"{method}{b}_ft"]["mean"]), textcoords="offset points",
                    xytext=(6, 6 if method == "linear" else -14), fontsize=8, color=color)
ax.axhline(v["fp32"]["mean"], color="tab:gray", ls=":", label=f"fp32 ({size['fp32'] / 1024:.0f} KiB)")
ax.set_xlabel("weights on disk, KiB (indices + codebooks, or integers + scales; biases fp32)")
ax.set_ylabel("test mAP@[.5:.95]")
ax.set_title("Codebook vs linear weight quantization (test)")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# * **Without fine-tuning, the codebook wins at every width**: 0.77 vs 0.76 at 4 bits, 0.64 vs 0.52 at 3, 0.21 vs 0.00 at 2 on test (the course's symmetric 2-bit grid has only three useful levels). Levels placed by k-means fit the weights better than any uniform grid.
# * **After 2 epochs of fine-tuning, each at the learning rate chosen for it, linear QAT is ahead at every width, but only at 4 bits outside the noise of 3 seeds** (test 0.838 vs 0.820, −1.8 points [−3.0, −0.6]). At 3 and 2 bits linear QAT's seeds spread widely (± 0.039 and ± 0.051) and the differences are within noise; the codebook is far more repeatable.

# %% [markdown]
# * **Why linear QAT wins after training.** QAT trains all 415k weights through the STE; the codebook moves only $2^b$ centroids per layer (plus the biases), so it has far less to train with. QAT-trained linear weights also run on the integer kernels of this notebook; a codebook needs a table lookup before every multiply (or a decompression step), which standard CPU kernels do not have.
# * **The bytes are almost the same**: $b$ bits per weight either way; the codebook's table ($2^b$ floats per layer) and linear's per-channel scales are both tiny. Both are 7.8–7.9× (4 bits) to 15.1–15.5× (2 bits) smaller than fp32.
# * **The recipe is part of the result.** Each method was fine-tuned at the learning rate that suited it best, chosen on val in a probe run with a seed not reported, and each has a float control at that rate; that is why the comparison is read on test. At one *shared* rate of 1e-3 the probe put the codebook *ahead* at 4 bits (last line of the table): "linear QAT beats the codebook" holds for these recipes, not for any fine-tuning.

# %% [markdown]
# ### AdaRound: a stronger post-training method
#
# Round-to-nearest treats each weight alone. But a layer's *output* is what matters: rounding several weights of one output the same way can add their errors up. **AdaRound** (Nagel et al. 2020) learns, per weight, whether to round **down or up**, so that the layer's output on calibration data changes least:
#
# $$\min_V \; \big\|W x - \tilde W \tilde x\big\|^2 + \lambda \sum_{ij} \big(1 - |2h(V_{ij}) - 1|^\beta\big), \qquad \tilde W = S \cdot \mathrm{clamp}\big(\lfloor W/S \rfloor + h(V),\, q_{\min}, q_{\max}\big),$$
#
# with the rectified sigmoid $h(V) = \mathrm{clamp}(\sigma(V)(\zeta - \gamma) + \gamma, 0, 1)$, $\zeta = 1.1$, $\gamma = -0.1$.

# %% [markdown]
# $h$ starts at the fractional part of $W/S$ (so $\tilde W = W$). The regulariser, with $\beta$ annealed from 20 to 2, then pushes every $h$ to exactly 0 or 1: a hard decision per weight. $x$ is the float layer's input and $\tilde x$ the quantized model's input to the same layer, so each layer also makes up for the rounding of the layers before it. No labels, no backpropagation through the network: one layer at a time, 2,000 Adam steps each.

# %%
from course_utils.quant import rectified_sigmoid, rounding_regularizer

v = torch.linspace(-6, 6, 401)
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
axes[0].plot(v, torch.sigmoid(v), "--", color="tab:gray", label="σ(V)")
axes[0].plot(v, rectified_sigmoid(v), color="tab:blue", label="h(V): reaches 0 and 1")
axes[0].set_xlabel("V")
axes[0].set_title("round down (h = 0) or up (h = 1)")
axes[0].set_ylabel("h(V)")
axes[0].legend(fontsize=8)
h = torch.linspace(0, 1, 201)
for beta in (20, 8, 2):
    axes[1].plot(h, 1 - (2 * h - 1).abs() ** beta, label=f"β = {beta}")
axes[1].set_xlabel("h")
axes[1].set_title("regulariser per weight: 1 − |2h − 1|^β")
axes[1].set_ylabel("penalty")
axes[1].legend(fontsize=8)
for ax in axes:
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %% tags=["nbval-check-output"]
pm = json.loads((RESULTS / "ptq_methods.json").read_text())
vm, gains, qref = pm["test_map"], pm["test_adaround_minus_minmax"], pm["qat_reference"]  # reported on test
print(f"fp32: {pm['fp32_test']:.3f} on test.  Weights per channel, activations 8-bit (percentile); test mAP, mean ± std over "
      f"{vm['minmax_w4a8']['n']} calibration sets of {pm['config']['calib_images']} images")
print(f"{'weights chosen by':<40}{'W4A8':>16}{'W8A8':>16}")
for key, label in (("minmax", "min-max range, round to nearest"), ("mse", "MSE-optimal range, round to nearest"),
                   ("adaround", "AdaRound on the min-max range"), ("adaround_mse", "AdaRound on the MSE range")):
    print(f"{label:<40}" + "".join(f"{vm[f'{key}_{b}']['mean']:>9.3f} ± {vm[f'{key}_{b}']['std']:.3f}" for b in ("w4a8", "w8a8")))
for b in ("w4a8", "w8a8"):  # the same seed gives both methods the same calibration images: paired
    w = gains[f"adaround_{b}_minus_minmax_{b}"]["paired"]
    print(f"AdaRound − min-max at {b.upper()}: {100 * w['difference']:+.1f} points [paired 95 % CI {100 * w['low']:+.1f}, {100 * w['high']:+.1f}]"
          f"{'  (within noise)' if w['within_noise'] else ''}")
print(f"for reference, QAT-4 (W4A4, 6 epochs of training): {qref['qat4_test']['mean']:.3f} ± {qref['qat4_test']['std']:.3f}; "
      f"PTQ-4 (W4A4): {qref['ptq4_test']['mean']:.3f} ± {qref['ptq4_test']['std']:.3f}")
flipped = [layer["changed_fraction"] for layer in pm["adaround_layers"]["adaround_w4a8_seed0"].values()]
print(f"W4A8, seed 0: AdaRound rounds {min(flipped):.0%} to {max(flipped):.0%} of each layer's weights the other way than nearest")
per_model = pm["total_seconds"] / (len(pm["seeds_done"]) * len(pm["config"]["bits"]) * 2)  # 2 AdaRound variants
print(f"the whole benchmark took {pm['total_seconds'] / 60:.0f} min on one core: about {per_model / 60:.1f} min per AdaRound model")

# %% [markdown]
# On test (nothing in this section was chosen on it; the same models score the same way on val):
#
# * **At 4-bit weights AdaRound recovers most of what rounding lost.** Min-max + nearest loses 10.6 points against fp32, AdaRound 4.4 (+6.2 [+5.3, +7.1] over min-max, paired over the calibration sets). An MSE-optimal range alone buys 1.8 of those points. In every layer a sizeable share of the weights ends up rounded the other way than to nearest (last lines).
# * **At 8 bits there is nothing left to recover**: every method is within 0.2 points of fp32. AdaRound even ends 0.1 points *below* min-max (interval −0.3 to −0.0, just excluding 0): on a grid this fine, learning the rounding has nothing to gain and a hair to lose.

# %% [markdown]
# * It is still *post-training*: calibration images only, no labels, one to two minutes per model on one CPU core here (printed above).
# * The QAT-4 row is not a like-for-like comparison: it quantizes the activations to 4 bits too and trains for 6 epochs. But it shows how far careful PTQ gets: W4A8 with AdaRound (0.819) is well above the W4A4 models, and within 5 points of fp32.
