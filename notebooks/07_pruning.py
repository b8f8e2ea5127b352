# %% [markdown]
# # 07 · Pruning: zeros that cost nothing, and channels that are really gone
#
# A trained network has many weights it barely uses. **Pruning** removes them. There are two families, and the difference between them is the whole lesson:
#
# * **unstructured** pruning zeroes individual weights — the tensors keep their shape;
# * **structured** pruning removes whole channels — the layers become smaller.
#
# Both can remove much of a network at a modest cost in accuracy. Only one of them makes the model faster or smaller on an ordinary CPU or GPU. We measure which, on the course detector.
#
# **You will**
# 1. prune by weight magnitude, layer by layer and globally, and fine-tune with the pruned weights held at zero;
# 2. measure what 80 % sparsity does to latency and file size (nothing, and nothing until compressed);
# 3. remove channels for real: find which layers must change together, prune, check the result equals the masked model;
# 4. scan each layer's sensitivity, fine-tune, and read a 3-seed study from a converged detector: four ways to choose channels against random ones, every variant against a dense model trained as long, accuracy against size and latency — and see why a baseline that is still improving makes pruning look free;
# 5. meet network slimming, which trains the network to make channels removable.
#
# *Time: about 60 minutes. Prerequisites: notebooks 02 (training loop, hooks) and 05 (BN folding, latency). Terms: [glossary](../docs/glossary.md) (English–中文).*

# %%
import copy
import json
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch.utils.data import DataLoader

from course_utils import (CocoDetection, SyntheticShapes, TinyDetector, collate_detection, count_parameters, evaluate, fit,
                          get_device, load_checkpoint, materialize, seed_difference, seed_everything, seed_summary)
from course_utils.deploy import checkpoint_bytes, measure_interleaved, ort_nchwc_block_size, ort_network_runner
from course_utils.prune import (MaskHook, channel_counts, channel_masks, count_flops, detector_channel_groups, layer_sparsity,
                                magnitude_masks, mask_channels, prune_channels, prune_detector, sensitivity_scan, sparsity)

seed_everything(0)
RESULTS = Path("..") / "benchmarks" / "results"
device = get_device()  # the GPU when there is one (latency is measured on the CPU regardless)
print("device:", device)

# %% [markdown]
# ## 1. A myth to start with
#
# > ### ❌ Myth vs ✅ fact — "remove the unimportant neurons and connections, and the model computes less and stores less"
# > **Myth** (a common claim, for example in widely shared blog posts on model optimisation): *structural pruning* (结构剪枝) = *the original network − the unimportant neurons or connections* — neurons (whole channels: structured) and connections (single weights: unstructured) lumped together —, which *reduces computation and storage*.
# >
# > **Fact:** that is only half the story: **what you remove decides whether anything gets cheaper.** Zeroing individual connections (unstructured pruning) leaves every tensor its full shape; a dense convolution kernel multiplies the zeros like any other number, and a checkpoint stores them like any other float. Only removing whole **channels** (or filters, heads, layers) changes the shapes — and with them the multiply-adds, the bytes and the time. Unstructured sparsity pays only with sparse kernels or hardware (and at high sparsity), or after compression. §3, §4 and §7 measure both on this CPU.
#
# The starting point: the course's **converged** fp32 detector — notebook 02's width-1 `TinyDetector` trained for 48 epochs (`tiny_detector_converged.pt`). Converged means what the course asks of every baseline: 6 more fine-tuning epochs add less than 0.5 val mAP points (they add 0.1 here, §7). §7b shows why that matters.

# %%
# NBVAL_IGNORE_OUTPUT
dense = TinyDetector()
load_checkpoint(RESULTS / "tiny_detector_converged.pt", dense)  # 48 epochs: tiny_detector_converged.json
dense = dense.to(device).eval()
val_loader = DataLoader(materialize(CocoDetection(Path("..") / "data" / "val" / "annotations.json"), progress=False),
                        batch_size=50, collate_fn=collate_detection)
train_set = materialize(SyntheticShapes(1000, seed=0), progress=False)


def val_map(model) -> float:
    return evaluate(model.to(device).eval(), val_loader, device)["map"]


dense_map = val_map(dense)
print(f"dense detector: {count_parameters(dense):,} parameters, {count_flops(dense) / 1e6:.1f} M multiply-adds per image, "
      f"val mAP@[.5:.95] {dense_map:.3f}")


# %% [markdown]
# ## 2. Unstructured pruning: zero the smallest weights
#
# Magnitude pruning (Han et al. 2015) keeps a weight if $|w|$ is large: the keep-mask of a tensor at sparsity $s$ zeroes its $\mathrm{round}(s \cdot n)$ smallest magnitudes. Two ways to choose the threshold:
#
# * **layer-wise** — the same fraction $s$ of every layer;
# * **global** — one threshold over all weights together, so layers with many small weights lose more.
#
# `magnitude_masks` is tested equal to `torch.nn.utils.prune` (`l1_unstructured` per layer, `global_unstructured` globally). We leave the two output layers (`cls_out`, `box_out`: 448 weights, 0.1 % of the total, and they write the predictions) dense. Two conventions, used throughout: **sparsity** $s$ = the fraction of weights *zeroed*; **keep ratio** $r$ = the fraction of channels *kept* (§4). Han et al. prune iteratively (prune → retrain, repeated); we prune in one shot and fine-tune once.

# %%
def hidden_layers(name, module):
    return isinstance(module, torch.nn.Conv2d) and name not in ("cls_out", "box_out")


masks_global = magnitude_masks(dense, 0.8, "global", include=hidden_layers)
per_layer = {name: 1 - m.float().mean().item() for name, m in masks_global.items()}
fig, ax = plt.subplots(figsize=(10, 3))
ax.bar(range(len(per_layer)), list(per_layer.values()), color="tab:blue")
ax.axhline(0.8, color="tab:red", ls="--", label="layer-wise: 0.8 everywhere")
ax.set_xticks(range(len(per_layer)), [n.removesuffix(".weight").removesuffix(".0") for n in per_layer], rotation=60, fontsize=8)
ax.set_ylabel("sparsity")
ax.set_title("Global magnitude pruning at 80 %: how much each layer loses")
ax.legend()
plt.show()
print("  ".join(f"{n.removesuffix('.weight').removesuffix('.0')} {s:.0%}" for n, s in per_layer.items()))

# %% [markdown]
# The big late layers lose most: `stage4` more than 80 % (81 % and 86 %), `smooth` and the head tower 76–78 %; the stem (36 %) and the 1×1 `lateral3` (41 %) lose least. Without any retraining, how far can we go?

# %%
# NBVAL_CHECK_OUTPUT
sparsities = [0.3, 0.5, 0.7, 0.8, 0.9]
no_ft = {"global": [], "layer": []}
for scope in no_ft:
    for s in sparsities:
        model = copy.deepcopy(dense).cpu()  # scored on the CPU: this output is checked, and a GPU's TF32 would change its digits
        MaskHook(magnitude_masks(model, s, scope, include=hidden_layers)).apply(model)  # w ← w ⊙ m
        no_ft[scope].append(evaluate(model.eval(), val_loader, torch.device("cpu"))["map"])
print("sparsity  " + "".join(f"{s:>7.0%}" for s in sparsities))
for scope, values in no_ft.items():
    print(f"{scope:<10}" + "".join(f"{v:>7.3f}" for v in values))


# %% [markdown]
# 30 % costs little (0.865 → 0.853 global, 0.846 layer-wise: −1.2 and −1.9 points). By 50 % global pruning has lost 6.9 points and layer-wise 10.3; beyond that accuracy collapses, faster for the layer-wise rule (at 70 %: 0.476 global, 0.027 layer-wise — it takes the same fraction even from the small layers that need their weights), and at 80 % nothing is left of either (0.000). **Fine-tuning** lets the remaining weights compensate. The mask must hold during training: `MaskHook` re-applies $w \leftarrow w \odot m$ after every optimizer step (`torch.nn.utils.prune` does the same by re-parametrising $w = w_{orig} \odot m$; both are tested to keep pruned weights at exactly zero). One short epoch, live:

# %%
# NBVAL_IGNORE_OUTPUT
def finetune(model, epochs=1, hooks=(), seed=0, lr=2e-3):
    """AdamW, cosine decay from lr, no warm-up (the weights are already trained)."""
    seed_everything(seed)
    loader = DataLoader(train_set, batch_size=32, shuffle=True, collate_fn=collate_detection, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
    fit(model, loader, optimizer, epochs, device=device, hooks=list(hooks), scheduler=scheduler)
    return model.eval()


sparse = copy.deepcopy(dense)
mask_hook = MaskHook(magnitude_masks(sparse, 0.8, "global", include=hidden_layers))
mask_hook.apply(sparse)
before = val_map(sparse)
sparse = finetune(sparse, hooks=[mask_hook])
print(f"80 % sparse: val mAP {before:.3f} before fine-tuning, {val_map(sparse):.3f} after 1 short epoch (dense {dense_map:.3f}); "
      f"sparsity after training: {sparsity(sparse, hidden_layers):.3f}")

# %% [markdown]
# ## 3. What 80 % sparsity buys on this CPU
#
# Now the question that matters for deployment. Same network, 80 % of its convolution weights exactly zero:

# %%
# NBVAL_IGNORE_OUTPUT
# each model's fp32 network in ONNX Runtime (2 threads, the fastest fp32 path of notebook 05), timed in interleaved rounds
timed = measure_interleaved({"dense": ort_network_runner(dense), "80 % sparse": ort_network_runner(sparse)}, rounds=3, runs=30)
latency = {name: t["median_ms"] for name, t in timed.items()}
for name, model in (("dense", dense), ("80 % sparse", sparse)):
    raw, packed = checkpoint_bytes(model)
    print(f"{name:<12} batch-16 latency {latency[name]:6.2f} ms   multiply-adds {count_flops(model) / 1e6:5.1f} M   "
          f"checkpoint {raw / 1e3:6.0f} kB, gzipped {packed / 1e3:6.0f} kB")

# %% [markdown]
# * **Latency: unchanged** (within timing noise: the course's timings on a 2-core x86 CPU wander by ±10–20 % between runs). The convolution kernels are dense; multiplying by zero costs the same as multiplying by anything else. General sparse libraries (cuSPARSE, MKL) typically need > 90 % sparsity to beat dense kernels; specialised CPU engines (XNNPACK's sparse 1×1 path, DeepSparse) gain from about 70–90 %; NVIDIA's 2:4 sparsity (exactly 50 %, in a fixed pattern of 2 zeros in every 4, on Ampere and later Tensor Cores) gives up to ~2× on matmuls. Our masks follow no pattern, and ONNX Runtime's CPU provider has no sparse convolution.
# * **Multiply-adds: unchanged** — `count_flops` counts what the dense kernels execute.
# * **File size: unchanged**, until compressed: zeros compress well, so the gzipped checkpoint shrinks. A sparse *storage format* would give similar savings (about 40 % of the dense size for CSR with int32 indices at 80 % sparsity). That helps download size, not memory or speed once loaded.
#
# §7 has the latencies of each shape from the benchmark scripts, next to the accuracy of the 3-seed study.
#
# ## 4. Structured pruning: remove channels for real
#
# To make a layer smaller we remove whole output channels: filter $j$ of a conv (and entry $j$ of its BN) — and then input channel $j$ of every conv that reads it. Which layers must change together is the network's **dependency structure**. `detector_channel_groups` spells it out for `TinyDetector`: one group per block's output, plus the **neck**, where `lateral3(C3)` and the upsampled `lateral4(C4)` are *added* — channel $j$ of both laterals and input $j$ of `smooth` go together, or the sum would not line up. The output convs keep their outputs (3 classes, 4 box offsets).

# %%
for group in detector_channel_groups(dense):
    print(f"{group.name:<10} {channel_counts(dense)[group.name]:>4} channels   made by {', '.join(group.producers):<22} read by {', '.join(group.consumers)}")

# %% [markdown]
# **Which channels?** Li et al. (2017) rank filters by their L1 norm, $s_j = \sum_{c,u,v} |W_{j,c,u,v}|$ (`l1_filter_importance`); network slimming (§8) ranks them by the BN scale $|\gamma_j|$. Here: keep 60 % of every group (`channel_masks(model, 0.6, "l1")`).
#
# Why the cut is exact: first *mask* the removed channels — zero their filters and their BN $\gamma, \beta$, so each outputs $\mathrm{ReLU}(0) = 0$ — then *cut* them out, together with the consumers' input slices that only ever multiplied those zeros. The cut model must compute exactly what the masked one does (tested for every group, both criteria, to 1e-5). Checked live (`forward_raw` gives the raw class logits and box deltas, before decoding and NMS):

# %%
# NBVAL_CHECK_OUTPUT
keep = channel_masks(dense, 0.6, criterion="l1")
masked, pruned = mask_channels(dense, keep).eval(), prune_channels(dense, keep).eval()
x = torch.stack([img for img, _ in train_set[:8]])  # compared on the CPU: a GPU's TF32 convolutions differ by ~1e-3
with torch.no_grad():
    a, b = copy.deepcopy(masked).cpu().forward_raw(x), copy.deepcopy(pruned).cpu().forward_raw(x)
gap = max((a[k] - b[k]).abs().max().item() for k in ("logits", "deltas"))
print(f"masked and cut models agree to 1e-5 (logits and box deltas): {gap < 1e-5}")
print(f"parameters {count_parameters(dense):,} -> {count_parameters(pruned):,} ({count_parameters(pruned) / count_parameters(dense):.0%}); "
      f"multiply-adds {count_flops(dense) / 1e6:.1f} M -> {count_flops(pruned) / 1e6:.1f} M ({count_flops(pruned) / count_flops(dense):.0%})")

# %% [markdown]
# Keeping 60 % of the channels keeps only about 36 % of the parameters and multiply-adds: a conv's cost is $C_{out} \cdot C_{in} \cdot k^2$ per output pixel, and both $C_{out}$ and $C_{in}$ shrink.

# %%
# NBVAL_IGNORE_OUTPUT
print(f"val mAP right after the cut: {val_map(pruned):.3f} (dense {dense_map:.3f}); "
      f"checkpoint {checkpoint_bytes(dense)[0] / 1e3:.0f} kB -> {checkpoint_bytes(pruned)[0] / 1e3:.0f} kB")

# %% [markdown]
# Parameters, multiply-adds and file: all about 36 % of the dense model's. Time is another matter. Look at the channel counts 60 % leaves: 10, 19, 38, 77. ONNX Runtime's CPU kernels (MLAS) use their fast blocked (NCHWc) convolution — channels packed in blocks of one SIMD register, 16 floats with AVX-512, 8 with AVX2 — only when the channel counts line up with those blocks: with ONNX Runtime 1.32 on a CPU with AVX-512, a conv stays blocked when its channel counts are multiples of 4 or smaller than one block (`benchmarks/ort_block_size.py` reads the kernel chosen for each conv off ONNX Runtime's optimised graph; table below), which 19, 38 and 77 are not; otherwise a conv falls back to a generic im2col + matrix-multiply path (12 of the 14 convs do at 60 %). oneDNN, behind eager PyTorch, pads channels to its blocks instead. `multiple_of=8` rounds every kept count to a multiple of 8 (8, 16, 40, 80) at almost the same multiply-adds:

# %%
# NBVAL_IGNORE_OUTPUT
block = ort_nchwc_block_size()  # read from /proc/cpuinfo: 16 with AVX-512, 8 with AVX2
print(f"ONNX Runtime's channel block on this CPU: {block}")
variants = {"dense": dense, "keep 60 %, as is": prune_detector(dense, 0.6),
            "keep 60 %, multiple_of=8": prune_detector(dense, 0.6, multiple_of=8),
            f"keep 60 %, multiple_of={block}": prune_detector(dense, 0.6, multiple_of=block),
            "keep 50 % (multiples of 8)": prune_detector(dense, 0.5)}
timed = measure_interleaved({name: ort_network_runner(m) for name, m in variants.items()}, rounds=3, runs=30)
latency = {name: t["median_ms"] for name, t in timed.items()}
for name, model in variants.items():
    counts = list(channel_counts(model).values())
    print(f"{name:<28} channels {str(counts[:7]):<34} MACs {count_flops(model) / 1e6:5.1f} M   "
          f"batch-16 {latency[name]:6.2f} ms ({latency['dense'] / latency[name]:.2f}x faster than dense)")

# %% [markdown]
# Same arithmetic, very different speed: **what the hardware executes is not what the FLOP count says.** When you prune for speed, keep channel counts hardware-friendly — and always measure. (`multiple_of=16` is faster still, but it is another shape: it rounds 38 down to 32 and 77 to 80, 22.7 M multiply-adds instead of 26.9 M. §7's latency table, measured by `prune_sweep.py`, has the plain 60 % shape and shows the same effect; §7's accuracy study uses keep 75 % and 50 %, counts rounded to multiples of 8.)
#
# **Which multiple?** The rule of thumb is *a multiple of the kernel's block size*: the number of channels one SIMD register holds, 16 floats with AVX-512 and 8 with AVX2 (`ort_nchwc_block_size()` reads it from `/proc/cpuinfo`; the cell above printed it for your CPU). But look at what ONNX Runtime actually does: `benchmarks/ort_block_size.py` prunes the capstone's shape (keep 75 %) and the 60 % shape with counts rounded to multiples of 1, 8 and 16, and reads the kernel chosen for every convolution off ONNX Runtime's optimised graph. On the course's 2-core x86 CPU with AVX-512 (block 16):
#
# * every count that is a multiple of 4 stays on the blocked fp32 kernel — ONNX Runtime pads it up to the block — so 24 channels run as fast as 32 (both are computed as 32), and rounding the capstone's shape to 16 instead of 8 buys nothing but 14 % more multiply-adds;
# * counts that are not multiples of 4 (19, 38, 77) fall off the blocked path in fp32 *and* slow the int8 kernels (which do not use the blocked layout at all) by about 1.7×;
# * so on this runtime, for the same multiply-adds, any multiple of 4 is as fast as the next multiple of the block: keep counts at multiples of 4, and round to the block only where it costs no extra channels. Check the rule for your own runtime and CPU with the benchmark instead of trusting it.

# %%
# NBVAL_CHECK_OUTPUT
blocks = json.loads((RESULTS / "ort_block_size.json").read_text())
print(f"measured on a CPU with ONNX Runtime block {blocks['ort_nchwc_block']}, {blocks['config']['threads']} threads, "
      f"{blocks['config']['rounds']} interleaved rounds (median round)")
print(f"{'shape':<15}{'channels (first 7)':<36}{'MACs':>7}  {'fp32 convs':<20}{'fp32 b16':>10}{'int8 b16':>10}")
for name, shape in blocks["shapes"].items():
    ops = shape["fp32_conv_ops"]  # op types in ONNX Runtime's optimised graph; the nchwc domain is the blocked kernel
    kernels = f"{sum(n for k, n in ops.items() if 'nchwc' in k)} of {sum(ops.values())} blocked"
    lat = blocks["latency_ms"][name]
    print(f"{name:<15}{str(shape['conv_out_channels'][:7]):<36}{shape['macs'] / 1e6:6.1f}M  {kernels:<20}"
          f"{lat['fp32']['batch16']['median_ms']:>8.2f}ms{lat['int8']['batch16']['median_ms']:>8.2f}ms")

# %% [markdown]
# ## 5. Which layers can lose channels? A sensitivity scan
#
# Cutting 40 % everywhere at once hurts. Some layers tolerate it better than others. The **sensitivity scan** prunes *one* group at a time to a keep ratio, without fine-tuning, and scores the result (`sensitivity_scan`; here on the 200 validation images):

# %%
# NBVAL_IGNORE_OUTPUT
scan = sensitivity_scan(dense, val_map, ratios=(0.75, 0.5, 0.25), criterion="l1")
fig, ax = plt.subplots(figsize=(10, 3.4))
names = list(scan["scores"])
for i, r in enumerate(scan["ratios"]):
    ax.bar([j + (i - 1) * 0.27 for j in range(len(names))], [scan["baseline"] - s[i] for s in scan["scores"].values()], 0.27,
           label=f"keep {r:.0%}")
ax.set_xticks(range(len(names)), names, rotation=45, fontsize=8)
ax.set_ylabel("mAP lost (no fine-tuning)")
ax.set_title("Sensitivity: prune one group at a time")
ax.legend()
plt.show()
print("mAP lost at keep 50 %: " + ", ".join(f"{g} {scan['baseline'] - s[1]:.2f}" for g, s in scan["scores"].items()))

# %% [markdown]
# Li et al. (2017) introduced this per-layer sensitivity analysis. Read it as a budget: flat groups can be cut hard, steep ones should be spared. Here `stage4` — which holds 53 % of the weights — barely matters (half its channels cost 0.03 and 0.00), while the head is the most sensitive: half of `smooth` alone costs 0.74 of the 0.865, half of either tower layer about 0.4; the stem (0.18), `stage3.1` (0.19) and the neck (0.14) lie between. A non-uniform keep ratio per group (as automated pruning tools learn) does better than one ratio everywhere. This course keeps one ratio for clarity.
#
# ## 6. Fine-tune the pruned network
#
# The smaller network is an ordinary `TinyDetector` with fewer channels, so the ordinary training loop fine-tunes it — no masks needed, the removed channels are gone. One short epoch live:

# %%
# NBVAL_IGNORE_OUTPUT
pruned = finetune(pruned)
print(f"60 % channels after 1 epoch: val mAP {val_map(pruned):.3f} (dense {dense_map:.3f}); the sweep below fine-tunes for 6 epochs")

# %% [markdown]
# ## 7. The study: accuracy over 3 seeds, size and latency per shape
#
# One epoch is a demo. `benchmarks/prune_sweep.py` runs the real study from the converged detector: every variant is fine-tuned for 6 epochs on the 2,000 training scenes (AdamW, cosine decay from 2e-3), 3 seeds each, with channel counts rounded to multiples of 8 (§4). Each variant is compared with its **equal-budget control**, the dense model trained for the same total number of epochs, so that extra training is not credited to pruning. The variants (`prune_controls.json`; the first cell below prints its `description`):
#
# * `dense_ft` — not pruned, fine-tuned 6 epochs: the control of every variant with 48 + 6 = 54 epochs in all;
# * `unstructured_0.8` — 80 % sparsity by global magnitude (§2), masks held during fine-tuning;
# * `structured_K` — keep K of every group's channels, ranked by the **L1 norm of the raw filters** (Li et al. 2017, §4);
# * `bnscale_K` — the same cut, ranked by **$|\gamma_j|$ of the BN** after each conv (`criterion="bn"`);
# * `folded_K` — ranked by the **L1 norm of the BN-folded filter**, $|\gamma_j| / \sqrt{\sigma_j^2 + \epsilon} \cdot \sum_{c,u,v} |W_{j,c,u,v}|$, what the deployed network multiplies with (`criterion="l1_folded"`);
# * `random_K` — channels drawn **at random** (seeded by the run's seed): the control every ranking must beat;
# * `slim_K` — **network slimming** (§8): 6 epochs with an L1 penalty on the $\gamma$, prune by $|\gamma|$, 6 epochs of fine-tuning — 12 epochs on top of the start, so its control is `dense2x_ft`, the dense model fine-tuned 12 epochs;
# * `scratch_K` — the pruned shape re-initialised and trained from scratch for 54 epochs, the pruned model's total (Liu et al. 2019, "Rethinking the Value of Network Pruning"): are the inherited weights worth anything?
#
# Every mAP is the mean ± sample standard deviation over 3 seeds (ddof = 1, `seed_summary`); the seed sets the fine-tuning's data order (and the random draw, and slimming's penalty epochs). A difference Δ is the difference of the means with its 95 % Welch t interval (`seed_difference`): we call it a gain or a loss only when the interval excludes 0, otherwise *within noise*. `epochs` counts all training, the start's 48 included.

# %%
# NBVAL_CHECK_OUTPUT
study = json.loads((RESULTS / "prune_controls.json").read_text())
vm, cost = study["val_map"], study["cost_seed0"]
runs = {name: r["after_ft"]["runs"] for name, r in vm.items()}  # val mAP after fine-tuning, one per seed
start_epochs = json.loads((RESULTS / "tiny_detector_converged.json").read_text())["config"]["epochs"]
total = study["total_epochs"]  # each variant's training in all, the start's included
controls = {total[name]: name for name in ("dense_ft", "dense2x_ft")}  # the dense model trained as long
control = {name: controls[total[name]] for name in vm}
print(textwrap.fill(study["description"], 120, break_on_hyphens=False))

# %%
# NBVAL_CHECK_OUTPUT
groups = {"no channel removed": ["dense_ft", "dense2x_ft", "unstructured_0.8"]} | {
    f"keep {k * 100:.0f} % of every group's channels": [f"{m}_{k:g}" for m in ("structured", "bnscale", "folded", "random", "slim", "scratch")]
    for k in study["config"]["keep"]}
print(f"{'variant':<17}{'epochs':>6}{'params':>8}{'MACs':>7}{'val mAP ± std':>17}  {'control':<12}{'Δ points [95 % CI]':<22}verdict")
print(f"{'dense (start)':<17}{start_epochs:>6}{cost['dense']['parameters'] / 1e3:>7.0f}k{cost['dense']['macs'] / 1e6:>6.1f}M"
      f"{study['dense']['val_map']:>9.3f}")
for title, names in groups.items():
    print(f"--- {title}")
    for name in (n for n in names if n in vm):
        s, c, ref = seed_summary(runs[name]), cost[name], control[name]
        row = f"{name:<17}{total[name]:>6}{c['parameters'] / 1e3:>7.0f}k{c['macs'] / 1e6:>6.1f}M{s['mean']:>9.3f} ± {s['std']:.3f}  "
        if name == ref:
            print(row + "(equal-budget control)")
            continue
        d = seed_difference(runs[name], runs[ref])
        verdict = "within noise" if d["within_noise"] else ("gain" if d["difference"] > 0 else "loss")
        print(row + f"{ref:<12}"
              f"{d['difference'] * 100:+5.1f} [{d['low'] * 100:+5.1f}, {d['high'] * 100:+5.1f}]    {verdict}")

# %%
rankings = {"structured": "L1 of raw filters", "bnscale": "|γ| of BN", "folded": "L1 of folded filters", "random": "random",
            "slim": "slimming (12 epochs)", "scratch": "from scratch (54 epochs)"}
keeps = study["config"]["keep"]
kinds = [kind for kind in rankings if f"{kind}_{keeps[0]:g}" in vm]
fig, ax = plt.subplots(figsize=(9, 3.6))
for i, kind in enumerate(kinds):
    s = [seed_summary(runs[f"{kind}_{k:g}"]) for k in keeps]
    xs = [j + (i - (len(kinds) - 1) / 2) * 0.12 for j in range(len(keeps))]
    ax.errorbar(xs, [x["mean"] for x in s], yerr=[x["std"] for x in s], fmt="o", capsize=3, label=rankings[kind])
for ref, ls in (("dense_ft", "--"), ("dense2x_ft", ":")):
    if ref in vm:
        ax.axhline(seed_summary(runs[ref])["mean"], color="black", ls=ls, lw=1, label=f"{ref} ({total[ref]} epochs)")
ax.set_xticks(range(len(keeps)), [f"keep {k * 100:.0f} %" for k in keeps])
ax.set_ylabel("val mAP@[.5:.95], mean ± std")
ax.set_title("Which channels to keep? Same shape, same fine-tuning, 3 seeds each")
ax.grid(axis="y", alpha=0.3)
ax.legend(fontsize=8, ncol=2, loc="lower left")
plt.show()

# %% [markdown]
# What the table says (Δ against the dense model fine-tuned as long):
#
# * **The control barely moves.** Six more epochs take the converged detector from 0.865 to 0.866 ± 0.001, so from here a difference is the price of pruning, not of training.
# * **Unstructured 80 %**: 0.853 ± 0.002, a 1.3-point loss — and, below, no speed for it.
# * **Keep 75 %** (43.4 M of 74.2 M multiply-adds left): the three rankings land together at 0.855–0.857, about a point below the control (−0.9 L1, −1.0 $|\gamma|$, −1.1 folded). $|\gamma|$'s −1.0 is *within noise* only because its seeds spread more (± 0.005; interval −2.1 to +0.1): three seeds cannot tell it from the control, which is not the same as showing it costs nothing. Random channels lose 2.1.
# * **Keep 50 %** (19.0 M multiply-adds): the price rises to 6–10 points and the rankings separate: $|\gamma|$ 0.804 (−6.2), L1 0.789 (−7.7), folded 0.786 (−8.1), random 0.768 ± 0.011 (−9.8).
# * **Slimming** (60 epochs in all, so compared with `dense2x_ft`, the dense model fine-tuned 12 epochs: 0.864 ± 0.005, no better than `dense_ft`'s 0.866): keep 75 % 0.854 ± 0.002 (−1.0 against its control, like the other rankings), keep 50 % 0.816 ± 0.002 (−4.8), the best at that shape, 1.2 points above $|\gamma|$ without the penalty — and since the dense model gains nothing from the 6 extra epochs, that lead comes from the penalty, not from the longer training.
# * **From scratch** (Liu et al. 2019): the pruned shapes re-initialised and trained for the same 54 epochs score 0.852 ± 0.007 (keep 75 %) and 0.805 ± 0.007 (keep 50 %). Against L1 pruning plus fine-tuning both differences are within noise (next cell: +0.5 and −1.6 points for the pruned model) — and at keep 50 % training from scratch is, if anything, *ahead* of L1 pruning, level with $|\gamma|$. On this detector the inherited weights are worth little once the small shape gets the full training budget: the value of pruning here is mostly the *shape* it finds (which is uniform here, chosen by hand) and the training time it saves (6 epochs instead of 54), not the weights it keeps.
#
# Does a ranking beat random channels at the same shape and budget?

# %%
# NBVAL_CHECK_OUTPUT
for k in keeps:
    pairs = [(f"{m}_{k:g}", f"random_{k:g}") for m in ("structured", "bnscale", "folded")]
    pairs += [(f"structured_{k:g}", f"scratch_{k:g}")] if f"scratch_{k:g}" in vm else []  # inherited weights vs none
    for a, b in pairs:
        d = seed_difference(runs[a], runs[b])
        verdict = "within noise" if d["within_noise"] else ("better" if d["difference"] > 0 else "worse")
        print(f"{a:<16} vs {b:<13}{d['difference'] * 100:+5.1f} points [{d['low'] * 100:+5.1f}, {d['high'] * 100:+5.1f}]  {verdict}")

# %% [markdown]
# At keep 75 % all three rankings beat random, by 1.0–1.2 points ($|\gamma|$'s interval, +0.0 to +2.2, only just excludes 0). At keep 50 % only $|\gamma|$ does (+3.7); L1 (+2.2) and folded (+1.8) are within noise — random's seeds spread by ± 0.011 there, and with 3 seeds a noisy control hides even a 2-point effect. Folding the BN into the filters did not help the L1 norm: folded and raw L1 are 0.2 and 0.3 points apart at the two ratios.
#
# **Size and latency depend only on a shape**, not on which weights were trained into it. `prune_controls.json` did not time its models, so the table below gives the shapes as `prune_sweep.py` measured them in an earlier run (from the 6-epoch detector; one timing pass, BN-folded fp32 network, eager PyTorch and ONNX Runtime, 2 threads, on a 2-core x86 CPU with AVX-512 VNNI). Its `structured_0.5` is the keep-50 % shape of the study; its `structured_0.6` is §4's unrounded 60 % shape. The keep-75 % shape was timed by `ort_block_size.py` (§4, 5 interleaved rounds), against its own dense run. The accuracy in the figure after it comes from the converged study.

# %%
# NBVAL_CHECK_OUTPUT
timed = json.loads((RESULTS / "prune_sweep.json").read_text())["cost_seed0"]  # the shapes, as prune_sweep.py timed them
print(f"{'shape':<18}{'nonzero weights':>16}{'checkpoint':>12}{'gzipped':>10}{'eager b16':>11}{'ORT b1':>9}{'ORT b16':>9}{'speed-up b16':>14}")
base_ms = timed["dense"]["latency_ms"]["ort_batch16"]
for name, c in timed.items():
    lat = c["latency_ms"]
    print(f"{name:<18}{c['nonzero_weights'] / 1e3:>15.0f}k{c['checkpoint_bytes'] / 1e3:>10.0f}kB{c['checkpoint_gzip_bytes'] / 1e3:>8.0f}kB"
          f"{lat['eager_batch16']:>9.1f}ms{lat['ort_batch1']:>7.2f}ms{lat['ort_batch16']:>7.1f}ms{base_ms / lat['ort_batch16']:>13.2f}x")
fp32 = {name: lat["fp32"]["batch16"]["median_ms"] for name, lat in blocks["latency_ms"].items()}  # ort_block_size.json (§4)
print(f"structured_0.75 (ort_block_size.py, keep0.75_m8): ORT b16 {fp32['keep0.75_m8']:.1f} ms vs its dense {fp32['dense']:.1f} ms, "
      f"speed-up {fp32['dense'] / fp32['keep0.75_m8']:.2f}x")

# %%
speedup = {name: base_ms / timed[name]["latency_ms"]["ort_batch16"] for name in ("dense_ft", "unstructured_0.8", "structured_0.5")}
speedup["structured_0.75"] = fp32["dense"] / fp32["keep0.75_m8"]  # timed by ort_block_size.py against its own dense run
colors = {"dense": "black", "unstructured": "tab:orange", "structured": "tab:blue"}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for name, x in speedup.items():
    s = seed_summary(runs[name])  # accuracy: the converged study
    for ax, xv in zip(axes, (x, cost[name]["checkpoint_gzip_bytes"] / 1e3)):
        ax.errorbar(xv, s["mean"], yerr=s["std"], fmt="o", color=colors[name.split("_")[0]], capsize=3)
        ax.annotate(name.replace("_", " "), (xv, s["mean"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
axes[0].set_xlabel("speed-up over dense: fp32, batch 16, ONNX Runtime (timings of the shape)")
axes[1].set_xlabel("checkpoint size, gzipped (kB)")
for ax in axes:
    ax.set_ylabel("val mAP after fine-tuning")
    ax.grid(alpha=0.3)
axes[0].set_title("Accuracy vs speed: only channels buy speed")
axes[1].set_title("Accuracy vs compressed size: both shrink")
fig.tight_layout()
plt.show()

# %% [markdown]
# Accuracy (converged study, ± sample std over 3 seeds) next to cost (the shapes' timings):
#
# * **Unstructured 80 %**: 1.3 points lost; latency unchanged (12.1 vs 12.0 ms at batch 16), multiply-adds unchanged, checkpoint unchanged (1,687 kB); only the gzipped file shrinks (1,553 → 496 kB in the timed run).
# * **Keep 75 %**: 0.9 points lost (L1) for **1.44×** at batch 16 (7.6 vs 10.9 ms) — notebook 08's capstone prunes its student to this shape.
# * **Keep 50 %**: 7.7 points lost with L1 (6.2 with $|\gamma|$, 4.8 with slimming against its own 60-epoch control, 6.1 for the shape trained from scratch) for **3.30×** at batch 16 (0.31 vs 0.84 ms at batch 1) and a 3.8× smaller checkpoint (1,687 → 440 kB).
# * **Keep 60 %, unrounded** (10, 19, 38, 77 channels): only 1.20× for 36 % of the multiply-adds — §4's shapes off the blocked kernels.
#
# So on this CPU: unstructured sparsity buys compressibility, nothing at run time; structured pruning buys real speed, as much as the shapes suit the kernels. And the converged detector pays for the channels it loses: a quarter costs about a point, half costs 4.8 to 8.1 points depending on how the channels are chosen (9.8 at random).

# %% [markdown]
# ### 7b. Why the baseline must be converged
#
# This notebook's first study pruned notebook 02's 6-epoch detector, which was still improving. The same recipe (6 fine-tuning epochs per variant, 3 seeds) from three starts: the 6-epoch detector (`prune_sweep.json`), the same detector after 6 epochs of dense fine-tuning (`prune_converged.json`, 6 + 6), and the converged 48-epoch one (§7). `vs start` compares with the model that was pruned, `vs dense_ft` with the dense model fine-tuned as long; each with its 95 % interval and verdict.

# %%
# NBVAL_CHECK_OUTPUT
starts = {"6 epochs": "prune_sweep.json", "6 + 6 epochs": "prune_converged.json", "48 epochs": "prune_controls.json"}
lesson = {label: json.loads((RESULTS / name).read_text())["val_map"] for label, name in starts.items()}
for label, v in lesson.items():
    start, ft = v["dense_ft"]["before_ft"]["runs"], v["dense_ft"]["after_ft"]["runs"]
    print(f"start trained {label} ({starts[label]}): val mAP {start[0]:.3f}")
    for name in (n for n in ("dense_ft", "unstructured_0.8", "structured_0.75", "structured_0.5") if n in v):
        s = seed_summary(v[name]["after_ft"]["runs"])
        text = [f"{d['difference'] * 100:+5.1f} [{d['low'] * 100:+5.1f}, {d['high'] * 100:+5.1f}] "
                + ("within noise" if d["within_noise"] else "gain" if d["difference"] > 0 else "loss")
                for d in (seed_difference(s["runs"], start), seed_difference(s["runs"], ft))]
        line = f"  {name:<17}{s['mean']:.3f} ± {s['std']:.3f}   vs start {text[0]:<27}" + ("" if name == "dense_ft" else f"vs dense_ft {text[1]}")
        print(line.rstrip())

# %%
fig, ax = plt.subplots(figsize=(7.5, 3.6))
xs = range(len(lesson))
ax.plot(xs, [v["dense_ft"]["before_ft"]["mean"] for v in lesson.values()], "k:o", label="the start itself")
for name, color in (("dense_ft", "black"), ("unstructured_0.8", "tab:orange"), ("structured_0.5", "tab:blue")):
    s = [seed_summary(v[name]["after_ft"]["runs"]) for v in lesson.values()]
    ax.errorbar(xs, [x["mean"] for x in s], yerr=[x["std"] for x in s], fmt="o-", color=color, capsize=3, label=f"{name} (+6 epochs)")
ax.set_xticks(xs, [f"start trained {label}" for label in lesson])
ax.set_ylabel("val mAP@[.5:.95]")
ax.set_title("A start that is still improving flatters pruning")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# * **From the 6-epoch start, pruning looked almost free.** Dense fine-tuning alone was worth +6.6 points (0.740 → 0.806), so every pruned model beat the model it was cut from: unstructured 80 % by 4.2 points, keep 50 % by 0.8. Reported against the start, as pruning results often are, that reads as "pruning costs nothing, or even helps".
# * **From the converged start, the same 6 epochs give +0.1, within noise**, and every pruned model ends below its start: −1.2 (unstructured 80 %), −0.8 (keep 75 %), −7.6 (keep 50 %).
# * **The equal-budget control removes the illusion, but its numbers still moved.** Against `dense_ft`, keep 50 % costs 5.9 points from the 6-epoch start and 7.7 from both better-trained starts, while the smaller cuts cost less from the converged one (unstructured 80 %: 2.5, 2.0, 1.3; keep 75 %: 1.9 from 6 + 6, 0.9 from 48). The price of pruning measured on a model that is still learning is not the price on the model you would ship. Train the baseline to its plateau first, then give every variant and its control the same budget.
#
# ## 8. Network slimming: train the channels to be removable
#
# In a network with batch norm, a filter's L1 norm says little: BN divides each channel by its standard deviation, so the filter's scale largely cancels and a small filter can still produce a large output. Network slimming (Liu et al. 2017) uses BN's own scale instead: a channel's output is $\gamma_j \hat{x}_j + \beta_j$, so $|\gamma_j|$ says how much it contributes. Training with an L1 penalty $\lambda \sum_j |\gamma_j|$ (`SlimmingPenalty`, a training-loop hook adding `loss_slim`; its gradient is tested to be $\lambda\,\mathrm{sign}(\gamma)$) pushes many $\gamma_j$ towards 0, so the channels to drop stand out; then prune by $|\gamma|$ (`prune_detector(model, 0.6, criterion="bn")`) and fine-tune. The paper trains with the penalty from the start, with SGD; with AdamW the penalty's effect per step does not scale with $\lambda$ the same way, so $\lambda$ must be re-tuned. §7's `slim_K` rows are this recipe (`--slim-keep 0.75 0.5`, $\lambda = 10^{-3}$): 6 epochs with the penalty, pruning by $|\gamma|$, 6 epochs of fine-tuning — twice the training of the other variants, hence their own control, `dense2x_ft`. At keep 50 % slimming scored 0.816, above $|\gamma|$ without the penalty (0.804) while its own 12-epoch dense control gained nothing; at keep 75 % it was level with the other rankings (0.854). In §7, the BN-aware rankings gave mixed evidence for the argument above: $|\gamma|$ scored 1.5 points above raw L1 at keep 50 % (0.804 vs 0.789), the folded L1 norm, which accounts for BN exactly, did not (0.786).
#
# ## 9. Exercises
#
# **Exercise 1.** Write `my_magnitude_mask(weight, sparsity)` returning a boolean keep-mask (True = keep) that zeroes the `round(sparsity · n)` smallest-magnitude entries of one tensor. The check compares with `torch.nn.utils.prune.l1_unstructured`.

# %%
from course_utils.exercises import check_conv_macs, check_magnitude_mask


def my_magnitude_mask(weight, sparsity):
    # YOUR CODE HERE
    raise NotImplementedError


check_magnitude_mask(my_magnitude_mask)


# %% [markdown]
# **Exercise 2.** Write `my_conv_macs(c_in, c_out, k, h_out, w_out, groups)`: the multiply-accumulates (MACs; one MAC = one multiply + one add, so FLOPs ≈ 2 × MACs — `count_flops` returns MACs) of one `Conv2d` (with `groups` as in `nn.Conv2d`: each output channel sees only C_in / groups inputs) with a k×k kernel producing an h_out × w_out map. Then use it to explain why keeping 60 % of the channels leaves about 36 % of the work.

# %%
def my_conv_macs(c_in, c_out, k, h_out, w_out, groups):
    # YOUR CODE HERE
    raise NotImplementedError


check_conv_macs(my_conv_macs)

# %% [markdown]
# **Exercise 3 — discussion (no check, no reference solution).** Many choices of ratios are good, so no check follows: compare your model's `count_flops` and mAP with the uniform 60 % of §5. Use the sensitivity scan of §5 to choose a keep ratio *per group* that removes as many multiply-adds as the uniform 60 % (`count_flops(model) <= 26.9e6`) but loses less mAP before fine-tuning. Build the masks with `masks = {g: channel_masks(dense, r)[g] for g, r in my_ratios.items()}` (groups you leave out stay whole) and cut with `prune_channels(dense, masks)`. Hint: weights are not multiply-adds — `stage4` holds 53 % of the weights but only 19 % of the MACs, while `smooth` and the tower hold 38 % of the MACs and are sensitive. (Choosing ratios on the validation set and scoring on it overfits: a real study would hold out a split.)
#
# Solutions: `solutions/ex07_pruning.py`.
#
# ## Takeaways
#
# * Unstructured magnitude pruning removes most weights at a modest cost in accuracy (1.3 points at 80 % here, after fine-tuning) — and on dense hardware changes neither latency nor memory; only compression sees the zeros.
# * Structured pruning changes the shapes: parameters and multiply-adds fall roughly with the *square* of the kept fraction, and latency follows only if the new shapes suit the kernels (multiples of 8 or 16 here) — measure.
# * Channels that are added or concatenated must be pruned together; check the cut model against the masked one.
# * Fine-tune after pruning, compare with a dense model trained as long, and start from a converged model: from a 6-epoch start every pruned model beat the model it was cut from (§7b).
# * A channel ranking is worth what it beats random channels by: 1.0–1.2 points at keep 75 % here; at keep 50 % only $|\gamma|$ was clearly better.
# * The converged width-1 detector pays for every channel it loses: a quarter costs about a point (1.44× faster), half costs 5 to 8 (3.30× faster).
#
# **Regenerate:** §7's study: `python benchmarks/prune_sweep.py --start benchmarks/results/tiny_detector_converged.pt --keep 0.75 0.5 --controls --slim-keep 0.75 0.5 --skip-latency --name prune_controls.json` (long on a CPU: the `scratch_K` runs train 54 epochs each); the shapes' timings: `python benchmarks/prune_sweep.py` (about 13 min on 2 CPU cores; writes `prune_sweep.json`; `--help` lists more variants: global scope, iterative); §7b's 6 + 6 start: `bash benchmarks/prune_converged.sh` (about 30 minutes on 2 CPU cores).
