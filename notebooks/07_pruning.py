# %% [markdown]
# # 07 · Pruning: zeros that cost nothing, and channels that are really gone
#
# **Pruning** removes weights a trained network barely uses.
#
# **You will learn to**
# 1. prune weights by magnitude, and fine-tune;
# 2. measure what 80 % sparsity does to speed and size;
# 3. remove whole channels, and check the result;
# 4. find which layers can lose channels;
# 5. read a 3-seed study of pruning's cost.

# %% [markdown]
# > **Terms** new here:
# > * **dense**: not pruned; a **dense kernel** uses every weight, zero or not.
# > * **mask** $m$: one 0 or 1 per weight; the pruned weights are $w \odot m$ (element by element).
# > * **keep ratio**: the fraction of channels kept.
# > * **filter**: the weights that make one output channel of a conv.
# > * **point**: 0.01 of mAP.
# > * In the [glossary](../docs/glossary.md): sparsity, channel group, MACs (multiply-adds), converged baseline.
#
# *Time: about 50 minutes. Prerequisites: notebooks 02 (training loop, hooks) and 05 (BN folding, latency). Terms: [glossary](../docs/glossary.md) (English–中文).*

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
# ## 1. The idea: zeros or channels
#
# A conv's weights have shape (output channels, input channels, k, k). **Unstructured** pruning zeroes single entries; the shape stays. **Structured** pruning deletes whole output channels; the tensor shrinks.
#
# > ### Myth vs fact — "remove the unimportant neurons and connections, and the model computes less and stores less"
# > **Myth** (a common claim): *structural pruning* (结构剪枝) removes unimportant neurons or connections, and so *reduces computation and storage*.
# >
# > **Fact:** **what you remove decides whether anything gets cheaper.** A dense kernel multiplies a zero, and a file stores it, like any other number. Only removing channels changes the shapes, and with them the work, the bytes and the time.

# %% tags=["nbval-ignore-output"]
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
# Magnitude pruning at sparsity $s$ zeroes the $\mathrm{round}(s \cdot n)$ smallest $|w|$ of $n$ weights, either
#
# * **layer-wise**: the same fraction $s$ in every layer, or
# * **global**: one threshold for all layers, so layers with many small weights lose more.
#
# `magnitude_masks` builds the masks. Global pruning at 80 %, per layer:

# %%
def hidden_layers(name, module):
    return isinstance(module, torch.nn.Conv2d) and name not in ("cls_out", "box_out")


masks_global = magnitude_masks(dense, 0.8, "global", include=hidden_layers)
per_layer = {name: 1 - m.float().mean().item() for name, m in masks_global.items()}
fig, ax = plt.subplots(figsize=(10, 3))
ax.bar(range(len(per_layer)), list(per_layer.values()), color="tab:blue")
ax.axhline(0.8, color="tab:red", ls="--", label="layer-wise: 0.8 everywhere")
ax.set_xticks(range(len(per_layer)), [n.removesuffix(".weight").removesuffix(".0") for n in per_layer], rotation=60, fontsize=8)
ax.set(xlabel="layer", ylabel="sparsity")
ax.set_title("Global magnitude pruning at 80 %: how much each layer loses")
ax.legend()
plt.show()
print("  ".join(f"{n.removesuffix('.weight').removesuffix('.0')} {s:.0%}" for n, s in per_layer.items()))


# %% [markdown]
# The big late layers lose most. At 80 % the detector stops working; **fine-tuning** lets the remaining weights compensate. `MaskHook` keeps the mask by re-applying $w \leftarrow w \odot m$ after every step. One short epoch:

# %% tags=["nbval-ignore-output"]
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
# Dense against 80 % sparse: latency (ONNX Runtime) and file size:

# %% tags=["nbval-ignore-output"]
# each model's fp32 network in ONNX Runtime (2 threads, the fastest fp32 path of notebook 05), timed in interleaved rounds
timed = measure_interleaved({"dense": ort_network_runner(dense), "80 % sparse": ort_network_runner(sparse)}, rounds=3, runs=30)
latency = {name: t["median_ms"] for name, t in timed.items()}
for name, model in (("dense", dense), ("80 % sparse", sparse)):
    raw, packed = checkpoint_bytes(model)
    print(f"{name:<12} batch-16 latency {latency[name]:6.2f} ms   multiply-adds {count_flops(model) / 1e6:5.1f} M   "
          f"checkpoint {raw / 1e3:6.0f} kB, gzipped {packed / 1e3:6.0f} kB")

# %% [markdown]
# * **Latency: unchanged** (within timing noise, 10–20 % on a busy machine).
# * **Multiply-adds: unchanged** (`count_flops` counts what dense kernels do).
# * **File size: unchanged**; only the gzipped file shrinks, as zeros compress well.
#
# Zeros pay only with sparse kernels at high sparsity (deep dive *When zeros do pay*).

# %% [markdown]
# ## 4. Structured pruning: remove channels for real
#
# Removing output channel $j$ of a conv removes its filter, entry $j$ of its BN, and input $j$ of every conv that reads it. In the neck two feature maps are *added*, so both keep the same channels. The channel groups:

# %%
for group in detector_channel_groups(dense):
    print(f"{group.name:<10} {channel_counts(dense)[group.name]:>4} channels   made by {', '.join(group.producers):<22} read by {', '.join(group.consumers)}")

# %% [markdown]
# **Which channels?** Keep the filters with the largest L1 norm, $s_j = \sum_{c,u,v} |W_{j,c,u,v}|$ (over input channels $c$ and kernel positions $u, v$): here 60 % of every group.
#
# First *mask* the removed channels (zero their filters and BN $\gamma, \beta$, so they output $\mathrm{ReLU}(0) = 0$), then *cut* them out. The cut model must compute exactly what the masked one does. Checked live:

# %% tags=["nbval-check-output"]
keep = channel_masks(dense, 0.6, criterion="l1")
masked, pruned = mask_channels(dense, keep).eval(), prune_channels(dense, keep).eval()
x = torch.stack([img for img, _ in train_set[:8]])  # compared on the CPU: a GPU's TF32 convolutions differ by ~1e-3
with torch.no_grad():
    a, b = copy.deepcopy(masked).cpu().forward_raw(x), copy.deepcopy(pruned).cpu().forward_raw(x)
gap = max((a[k] - b[k]).abs().max().item() for k in ("logits", "deltas"))
print(f"masked and cut models agree to 1e-5 (logits and box deltas): {gap < 1e-5}")
print(f"parameters {count_parameters(dense):,} -> {count_parameters(pruned):,} ({count_parameters(pruned) / count_parameters(dense):.0%}); "
      f"multiply-adds {count_flops(dense) / 1e6:.1f} M -> {count_flops(pruned) / 1e6:.1f} M ({count_flops(pruned) / count_flops(dense):.0%})")

# %% tags=["nbval-ignore-output"]
print(f"val mAP right after the cut: {val_map(pruned):.3f} (dense {dense_map:.3f}); "
      f"checkpoint {checkpoint_bytes(dense)[0] / 1e3:.0f} kB -> {checkpoint_bytes(pruned)[0] / 1e3:.0f} kB")

# %% [markdown]
# 60 % of the channels leaves about 36 % of the multiply-adds (Exercise 2 asks why). Is it faster? `multiple_of=8` rounds each kept count to a multiple of 8; `block` is how many channels this CPU's fast kernel handles together.

# %% tags=["nbval-ignore-output"]
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
# Compare `as is` with `multiple_of=8`: the same multiply-adds, often not the same speed. **Measure.** (`multiple_of=16` rounds some counts down, so it also does less work: not like for like.) Why: deep dive *Which channel counts are fast*.

# %% [markdown]
# ## 5. Which layers can lose channels? A sensitivity scan
#
# `sensitivity_scan` prunes *one* group at a time, without fine-tuning, and scores the result on val:

# %% tags=["nbval-ignore-output"]
scan = sensitivity_scan(dense, val_map, ratios=(0.75, 0.5, 0.25), criterion="l1")
fig, ax = plt.subplots(figsize=(10, 3.4))
names = list(scan["scores"])
for i, r in enumerate(scan["ratios"]):
    ax.bar([j + (i - 1) * 0.27 for j in range(len(names))], [scan["baseline"] - s[i] for s in scan["scores"].values()], 0.27,
           label=f"keep {r:.0%}")
ax.set_xticks(range(len(names)), names, rotation=45, fontsize=8)
ax.set(xlabel="channel group pruned", ylabel="mAP lost (no fine-tuning)")
ax.set_title("Sensitivity: prune one group at a time")
ax.legend()
plt.show()
print("mAP lost at keep 50 %: " + ", ".join(f"{g} {scan['baseline'] - s[1]:.2f}" for g, s in scan["scores"].items()))

# %% [markdown]
# Read it as a budget: cut flat groups hard, spare steep ones. The steepest are `smooth` (the conv after the neck's sum) and the head's `tower`.

# %% [markdown]
# ## 6. Fine-tune the pruned network
#
# The cut model is an ordinary, smaller `TinyDetector`: fine-tune it as usual, no masks needed:

# %% tags=["nbval-ignore-output"]
pruned = finetune(pruned)
print(f"60 % channels after 1 epoch: val mAP {val_map(pruned):.3f} (dense {dense_map:.3f}); the study below (keep 75 % and 50 %) fine-tunes for 6 epochs")

# %% [markdown]
# ## 7. Experiment: what does pruning cost?
#
# A longer study, run for you, fine-tunes each variant for 6 epochs from the converged detector (3 seeds):
#
# * `unstructured_0.8`: 80 % sparsity (§2);
# * `structured_K`: keep the fraction K of each group's channels, by L1 norm (§4);
# * `random_K`: the same shape, channels drawn at random.
#
# Each is compared with its equal-budget control `dense_ft`, the dense model fine-tuned as long. Choose on val, report on test: the table is on test, paired by seed. Other rankings: deep dive *Every variant of the study*.

# %% tags=["nbval-check-output"]
study = json.loads((RESULTS / "prune_controls.json").read_text())
vm, cost = study["val_map"], study["cost_seed0"]
runs = {name: r["after_ft"]["runs"] for name, r in study["test_map"].items()}  # test mAP after fine-tuning, seeds 0, 1, 2
start_epochs = json.loads((RESULTS / "tiny_detector_converged.json").read_text())["config"]["epochs"]
total = study["total_epochs"]  # each variant's training in all, the start's included
controls = {total[name]: name for name in ("dense_ft", "dense2x_ft")}  # the dense model trained as long
control = {name: controls[total[name]] for name in vm}
print(f"{len(study['config']['seeds'])} seeds; each variant fine-tuned {study['config']['epochs']} epochs on "
      f"{study['config']['train_images']:,} scenes from the {start_epochs}-epoch detector; channels in multiples of {study['config']['multiple_of']}")

# %% tags=["nbval-check-output"]
def study_table(kinds, extra=()):
    """Print the study's rows for the rankings ``kinds`` (and dense variants ``extra``), each against its control."""
    groups = {"no channel removed": ["dense_ft", *extra, "unstructured_0.8"]} | {
        f"keep {k * 100:.0f} % of every group's channels": [f"{m}_{k:g}" for m in kinds] for k in study["config"]["keep"]}
    print(f"{'variant':<17}{'epochs':>6}{'params':>8}{'MACs':>7}{'val':>7}{'test mAP ± std':>16}  {'control':<12}{'Δ test, paired [95 % CI]':<26}verdict")
    print(f"{'dense (start)':<17}{start_epochs:>6}{cost['dense']['parameters'] / 1e3:>7.0f}k{cost['dense']['macs'] / 1e6:>6.1f}M"
          f"{study['dense']['val_map']:>7.3f}{study['dense']['test_map']:>8.3f}")
    for title, names in groups.items():
        print(f"--- {title}")
        for name in (n for n in names if n in vm):
            s, c, ref = seed_summary(runs[name]), cost[name], control[name]
            row = (f"{name:<17}{total[name]:>6}{c['parameters'] / 1e3:>7.0f}k{c['macs'] / 1e6:>6.1f}M{vm[name]['after_ft']['mean']:>7.3f}"
                   f"{s['mean']:>8.3f} ± {s['std']:.3f}  ")
            if name == ref:
                print(row + "(equal-budget control)")
                continue
            d = seed_difference(runs[name], runs[ref], paired=True)  # same start, same data order per seed
            verdict = "within noise" if d["within_noise"] else ("gain" if d["difference"] > 0 else "loss")
            print(row + f"{ref:<12}"
                  f"{d['difference'] * 100:+5.1f} [{d['low'] * 100:+5.1f}, {d['high'] * 100:+5.1f}]        {verdict}")


study_table(kinds=("structured", "random"))

# %%
rankings = {"structured": "channels kept by L1 norm", "random": "channels kept at random"}  # the other rankings: deep dive
keeps = study["config"]["keep"]
fig, ax = plt.subplots(figsize=(9, 3.6))
for i, kind in enumerate(rankings):
    s = [seed_summary(runs[f"{kind}_{k:g}"]) for k in keeps]
    xs = [j + (i - 0.5) * 0.12 for j in range(len(keeps))]
    ax.errorbar(xs, [x["mean"] for x in s], yerr=[x["std"] for x in s], fmt="o", capsize=3, label=rankings[kind])
ax.axhline(seed_summary(runs["dense_ft"])["mean"], color="black", ls="--", lw=1, label=f"dense_ft, the control ({total['dense_ft']} epochs)")
ax.set_xticks(range(len(keeps)), [f"keep {k * 100:.0f} %" for k in keeps])
ax.set_ylabel("test mAP@[.5:.95], mean ± std")
ax.set_title("Which channels to keep? Same shape, same fine-tuning, 3 seeds each")
ax.grid(axis="y", alpha=0.3)
ax.legend(fontsize=8, loc="lower left")
plt.show()

# %% [markdown]
# Δ is a row minus its control. What to look for:
#
# * **`dense_ft` barely moves** from the start (0.863 → 0.866), so Δ is the price of pruning, not of training.
# * **Unstructured 80 %** loses 1.8 points, and buys no speed (§3).
# * **Keep 75 %** costs about a point (−1.2 with L1); **keep 50 %** several (−7.1).
# * **Random channels** do worst at each shape (−2.1 and −9.9).

# %% [markdown]
# ## 8. Exercises
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
# **Exercise 3 — discussion (no check).** Choose a keep ratio *per group* that leaves no more multiply-adds than §4's uniform 60 % cut (`count_flops(model) <= 26.9e6`) but scores higher on val **after one epoch of fine-tuning** (`finetune(model)`, as in §6, which printed the uniform cut's score; right after the cut every plan this small scores about 0). Build the masks with `masks = {g: channel_masks(dense, r)[g] for g, r in my_ratios.items()}` (groups you leave out stay whole) and cut with `prune_channels(dense, masks)`. Use the sensitivity scan of §5: weights are not multiply-adds — `stage4` holds 53 % of the weights but only 19 % of the MACs, while `smooth` and the tower hold 38 % of the MACs and are sensitive. A plan exists that beats the uniform cut by about 5 points with fewer multiply-adds (one is in the solutions file). You chose your plan on val; score it once on test (`data/test`) to report it.
#
# Solutions: `solutions/ex07_pruning.py`.

# %% [markdown]
# ## Takeaways
#
# * On dense kernels, zeros change neither latency nor multiply-adds; only a compressed file sees them.
# * Removing channels cuts the cost with the *square* of the keep ratio; speed follows only if the shapes suit the kernels.
# * Start from a converged model, fine-tune after pruning, and compare with a dense model trained as long.

# %% [markdown]
# ## Going deeper
#
# These sections are optional: nothing in the core path depends on them. They reuse the variables above, so run the core first.
#
# * **Global or layer-wise, without fine-tuning**: how far magnitude pruning goes before any retraining.
# * **When zeros do pay**: sparse kernels, sparse hardware, sparse files.
# * **Which channel counts are fast**: ONNX Runtime's blocked kernels.
# * **One keep ratio, or one per group**: where the sensitivity scan comes from.
# * **Every variant of the study**: four rankings, network slimming, training from scratch, and the statistics.
# * **Network slimming**: training the channels to be removable.
# * **Accuracy against size and latency**: the study's shapes, timed.
# * **Why the baseline must be converged**: the same recipe from a start that is still improving.
# * **Regenerate the results**: the commands behind the JSON files.

# %% [markdown]
# ### Global or layer-wise, without fine-tuning
#
# Under global pruning at 80 % (§2's figure), `stage4` loses more than 80 % of its weights (81 % and 86 %), `smooth` and the head tower 76–78 %. The stem (36 %) and the 1×1 `lateral3` (41 %) lose least.
#
# `magnitude_masks` is tested equal to `torch.nn.utils.prune` (`l1_unstructured` per layer, `global_unstructured` globally). The two output layers left dense hold 448 weights, 0.1 % of the total. Han et al. (2015) prune iteratively (prune, retrain, repeat); we prune in one shot and fine-tune once.
#
# Without any retraining, how far can each rule go?

# %% tags=["nbval-check-output"]
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
# 30 % costs little (0.865 → 0.853 global, 0.846 layer-wise: −1.2 and −1.9 points). By 50 %, global pruning has lost 6.9 points and layer-wise 10.3. Beyond that accuracy collapses, faster for the layer-wise rule: at 70 %, 0.476 global and 0.027 layer-wise. Layer-wise takes the same fraction even from the small layers that need their weights. At 80 % nothing is left of either (0.000).
#
# `MaskHook` re-applies the mask after every optimizer step. `torch.nn.utils.prune` does the same by re-parametrising $w = w_{orig} \odot m$. Both are tested to keep pruned weights at exactly zero.

# %% [markdown]
# ### When zeros do pay
#
# §3's "unchanged" means within timing noise: the course's timings on a 2-core x86 CPU wander by ±10–20 % between runs.
#
# Zeros turn into speed only with kernels that skip them:
#
# * general sparse libraries (cuSPARSE, MKL) typically need more than 90 % sparsity to beat dense kernels;
# * specialised CPU engines (XNNPACK's sparse 1×1 path, DeepSparse) gain from about 70–90 %;
# * NVIDIA's 2:4 sparsity (exactly 50 %: 2 zeros in every 4 weights, on Ampere and later Tensor Cores) gives up to ~2× on matrix multiplies.
#
# Our masks follow no pattern, and ONNX Runtime's CPU provider has no sparse convolution.
#
# A sparse *storage format* would give savings similar to gzip's: CSR with int32 indices takes about 40 % of the dense size at 80 % sparsity. That helps download size, not memory or speed once loaded.

# %% [markdown]
# ### Which channel counts are fast
#
# §4's 60 % cut leaves 10, 19, 38 and 77 channels. ONNX Runtime's CPU kernels (MLAS) have a fast *blocked* (NCHWc) convolution: channels packed in blocks of one SIMD register, 16 floats with AVX-512, 8 with AVX2. `ort_nchwc_block_size()` reads the block from `/proc/cpuinfo`.
#
# With ONNX Runtime 1.32 on a CPU with AVX-512, a conv stays blocked when its channel counts are multiples of 4 or smaller than one block. 19, 38 and 77 are not. Such a conv falls back to a generic im2col + matrix-multiply path: 12 of the 14 convs do at 60 %. oneDNN, behind eager PyTorch, pads channels to its blocks instead.
#
# `multiple_of=8` rounds every kept count to a multiple of 8 (8, 16, 40, 80) at almost the same multiply-adds. `multiple_of=16` ran faster still on the course's CPU, but it is another shape: it rounds 38 down to 32 and 77 to 80, 22.7 M multiply-adds instead of 26.9 M.

# %% [markdown]
# **Which multiple?** The rule of thumb: a multiple of the kernel's block. `benchmarks/ort_block_size.py` checks it.
#
# It prunes the capstone's shape (keep 75 %) and the 60 % shape with counts rounded to multiples of 1, 8 and 16, and reads the kernel chosen for every conv off ONNX Runtime's optimised graph. On the course's 2-core x86 CPU with AVX-512 (block 16):

# %% [markdown]
# * Every count that is a multiple of 4 stays on the blocked fp32 kernel, padded up to the block: 24 channels run as fast as 32 (both are computed as 32). Rounding the capstone's shape to 16 instead of 8 buys nothing but 14 % more multiply-adds.
# * Counts that are not multiples of 4 (19, 38, 77) fall off the blocked path in fp32, *and* slow the int8 kernels (which do not use the blocked layout at all) by about 1.7×.
#
# So on this runtime, for the same multiply-adds, any multiple of 4 is as fast as the next multiple of the block. Keep counts at multiples of 4, and round to the block only where it costs no extra channels.
#
# Check the rule for your own runtime and CPU with the benchmark instead of trusting it.

# %% tags=["nbval-check-output"]
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
# ### One keep ratio, or one per group
#
# Li et al. (2017) introduced §5's per-layer sensitivity analysis. Automated pruning tools learn a keep ratio per group; this course keeps one ratio everywhere for clarity. Exercise 3 tries a plan per group.

# %% [markdown]
# ### Every variant of the study
#
# Besides §7's main rows, `prune_controls.json` holds (its `description` is printed below):
#
# * `bnscale_K`: the same cut, ranked by $|\gamma_j|$ of the BN after each conv (`criterion="bn"`);
# * `folded_K`: ranked by the L1 norm of the BN-folded filter, $|\gamma_j| / \sqrt{\sigma_j^2 + \epsilon} \cdot \sum_{c,u,v} |W_{j,c,u,v}|$, what the deployed network multiplies with (`criterion="l1_folded"`);
# * `slim_K`: network slimming (below): 6 epochs with an L1 penalty on the $\gamma$, prune by $|\gamma|$, 6 epochs of fine-tuning. That is 12 epochs on top of the start, so its control is `dense2x_ft`, the dense model fine-tuned 12 epochs;
# * `scratch_K`: the pruned shape re-initialised and trained from scratch for 54 epochs, the pruned model's total (Liu et al. 2019, "Rethinking the Value of Network Pruning"). Are the inherited weights worth anything?

# %% [markdown]
# **How the study is run and read.** Every variant is fine-tuned on the 2,000 training scenes (AdamW, cosine decay from 2e-3), with channel counts rounded to multiples of 8 (§4). Every choice (the keep ratios, the rankings, the fine-tuning recipe) was made on val: §5's scan and earlier runs. The table reports the held-out test split, with the val mean beside it.
#
# Every mAP is the mean ± sample standard deviation over 3 seeds (ddof = 1, `seed_summary`). The seed sets the fine-tuning's data order (and the random draw, and slimming's penalty epochs). Every variant of a seed starts from the same converged model and sees the same data order as its control. So the two are compared seed by seed: Δ is the mean of the per-seed differences, with its 95 % paired t interval (`seed_difference(..., paired=True)`). It is a gain or a loss only when the interval excludes 0, otherwise *within noise*. `epochs` counts all training, the start's 48 included.

# %% tags=["nbval-check-output"]
print(textwrap.fill(study["description"], 120, break_on_hyphens=False), end="\n\n")
study_table(kinds=("structured", "bnscale", "folded", "random", "slim", "scratch"), extra=("dense2x_ft",))

# %% [markdown]
# **The table in numbers** (Δ against the dense model fine-tuned as long):
#
# * **The control barely moves.** Six more epochs take the converged detector from 0.863 to 0.866 ± 0.000 on test: +0.3 points (+0.2 to +0.4). Its seeds agree so closely that even this small gain is beyond their noise, but it is under the 0.5-point line of notebook 02's convergence rule. Six more on top (`dense2x_ft`) add +0.1, within noise.
# * **Unstructured 80 %**: 0.848 ± 0.001, a 1.8-point loss (−2.2 to −1.4).
# * **Keep 75 %** (43.4 M of 74.2 M multiply-adds left): the three rankings land together at 0.854–0.859, about a point below the control (−1.2 L1, −0.8 $|\gamma|$, −0.8 folded), every interval below 0. Random channels lose 2.1.
# * **Keep 50 %** (19.0 M multiply-adds): the price rises to 6–10 points and the rankings separate: $|\gamma|$ 0.808 (−5.8), L1 0.796 (−7.1), folded 0.790 (−7.6), random 0.767 ± 0.013 (−9.9).

# %% [markdown]
# * **Slimming** has 60 epochs in all, so it is compared with `dense2x_ft`: 0.867 ± 0.002, no better than `dense_ft`'s 0.866. Keep 75 % scores 0.865 ± 0.003, −0.3 against its control (−1.1 to +0.6): within noise, the only keep-75 % row whose interval contains 0 — which says three seeds cannot see its cost, not that it has none. Keep 50 % scores 0.819 ± 0.002 (−4.8), the best at that shape, 1.1 points above $|\gamma|$ without the penalty (+0.6 to +1.5). Since the dense model gains nothing from the 6 extra epochs, that lead comes from the penalty, not from the longer training.

# %% [markdown]
# * **From scratch**: the pruned shapes re-initialised and trained for the same 54 epochs score 0.849 ± 0.006 (keep 75 %) and 0.804 ± 0.007 (keep 50 %). Against L1 pruning plus fine-tuning both differences are within noise (next cell: +0.5 and −0.9 points for the pruned model). At keep 50 % training from scratch is, if anything, *ahead* of L1 pruning, close to $|\gamma|$. On this detector the inherited weights are worth little once the small shape gets the full training budget: the value of pruning here is mostly the *shape* it finds (uniform here, chosen by hand) and the training time it saves (6 epochs instead of 54), not the weights it keeps.
#
# Does a ranking beat random channels at the same shape and budget?

# %% tags=["nbval-check-output"]
for k in keeps:
    pairs = [(f"{m}_{k:g}", f"random_{k:g}") for m in ("structured", "bnscale", "folded")]
    pairs += [(f"structured_{k:g}", f"scratch_{k:g}")] if f"scratch_{k:g}" in vm else []  # inherited weights vs none
    for a, b in pairs:
        d = seed_difference(runs[a], runs[b], paired=True)  # test split, seed by seed
        verdict = "within noise" if d["within_noise"] else ("better" if d["difference"] > 0 else "worse")
        print(f"{a:<16} vs {b:<13}{d['difference'] * 100:+5.1f} points [{d['low'] * 100:+5.1f}, {d['high'] * 100:+5.1f}]  {verdict}")

# %% [markdown]
# At keep 75 % L1 (+0.9) and folded L1 (+1.3) beat random; $|\gamma|$'s +1.3 is within noise (−0.2 to +2.8: its seeds spread more). At keep 50 % only $|\gamma|$ does (+4.1, +0.6 to +7.6); L1 (+2.8) and folded (+2.2) are within noise. Random's seeds spread by ± 0.013 there, and with 3 seeds a noisy control hides even a 3-point effect. Folding the BN into the filters did not help the L1 norm: folded minus raw L1 is +0.4 (within noise) at keep 75 % and −0.6 (−1.0 to −0.2) at keep 50 %.

# %% [markdown]
# ### Network slimming: train the channels to be removable
#
# In a network with batch norm, a filter's L1 norm says little. BN divides each channel by its standard deviation, so the filter's scale largely cancels: a small filter can still produce a large output. Network slimming (Liu et al. 2017) uses BN's own scale instead. A channel's output is $\gamma_j \hat{x}_j + \beta_j$, so $|\gamma_j|$ says how much it contributes.
#
# Training with an L1 penalty $\lambda \sum_j |\gamma_j|$ pushes many $\gamma_j$ towards 0, so the channels to drop stand out. `SlimmingPenalty` is a training-loop hook that adds this `loss_slim`; its gradient is tested to be $\lambda\,\mathrm{sign}(\gamma)$. Then prune by $|\gamma|$ (`prune_detector(model, 0.6, criterion="bn")`) and fine-tune.

# %% [markdown]
# The paper trains with the penalty from the start, with SGD. With AdamW the penalty's effect per step does not scale with $\lambda$ the same way, so $\lambda$ must be re-tuned. The study's `slim_K` rows are this recipe (`--slim-keep 0.75 0.5`, $\lambda = 10^{-3}$): 6 epochs with the penalty, pruning by $|\gamma|$, 6 epochs of fine-tuning.
#
# At keep 50 % slimming scored 0.819 on test, above $|\gamma|$ without the penalty (0.808), while its own 12-epoch dense control gained nothing; at keep 75 % it was within noise of that control (0.865 vs 0.867). The BN-aware rankings gave mixed evidence for the argument above: $|\gamma|$ scored 1.3 points above raw L1 at keep 50 % (0.808 vs 0.796, +1.0 to +1.5), but the folded L1 norm, which accounts for BN exactly, did not (0.790).

# %% [markdown]
# ### Accuracy against size and latency
#
# Size and latency depend only on a shape, not on which weights were trained into it. `prune_controls.json` did not time its models. So the table below gives the shapes as `prune_sweep.py` measured them in an earlier run: from the 6-epoch detector, one timing pass, BN-folded fp32 network, eager PyTorch and ONNX Runtime, 2 threads, on a 2-core x86 CPU with AVX-512 VNNI.
#
# Its `structured_0.5` is the study's keep-50 % shape; its `structured_0.6` is §4's unrounded 60 % shape. The keep-75 % shape was timed by `ort_block_size.py` (5 interleaved rounds), against its own dense run. The accuracy in the figure comes from the converged study.

# %% tags=["nbval-check-output"]
timed = json.loads((RESULTS / "prune_sweep.json").read_text())["cost_seed0"]  # the shapes, as prune_sweep.py timed them
print(f"{'shape':<18}{'nonzero weights':>16}{'checkpoint':>12}{'gzipped':>10}{'eager b16':>11}{'ORT b1':>9}{'ORT b16':>9}{'speed-up b16':>14}")
base_ms = timed["dense"]["latency_ms"]["ort_batch16"]
for name, c in timed.items():
    lat = c["latency_ms"]
    print(f"{name:<18}{c['nonzero_weights'] / 1e3:>15.0f}k{c['checkpoint_bytes'] / 1e3:>10.0f}kB{c['checkpoint_gzip_bytes'] / 1e3:>8.0f}kB"
          f"{lat['eager_batch16']:>9.1f}ms{lat['ort_batch1']:>7.2f}ms{lat['ort_batch16']:>7.1f}ms{base_ms / lat['ort_batch16']:>13.2f}x")
fp32 = {name: lat["fp32"]["batch16"]["median_ms"] for name, lat in blocks["latency_ms"].items()}  # ort_block_size.json (deep dive "Which channel counts are fast")
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
    ax.set_ylabel("test mAP after fine-tuning")
    ax.grid(alpha=0.3)
axes[0].set_title("Accuracy vs speed: only channels buy speed")
axes[1].set_title("Accuracy vs compressed size: both shrink")
fig.tight_layout()
plt.show()

# %% [markdown]
# Accuracy (converged study, test split, ± sample std over 3 seeds) beside cost (the shapes' timings):
#
# * **Unstructured 80 %**: 1.8 points lost. Latency unchanged (12.1 vs 12.0 ms at batch 16), multiply-adds unchanged, checkpoint unchanged (1,687 kB). Only the gzipped file shrinks (1,553 → 496 kB in the timed run).
# * **Keep 75 %**: 1.2 points lost (L1) for **1.44×** at batch 16 (7.6 vs 10.9 ms). Notebook 08's capstone prunes its student to this shape.
# * **Keep 50 %**: 7.1 points lost with L1 (5.8 with $|\gamma|$, 4.8 with slimming against its own 60-epoch control, 6.2 for the shape trained from scratch) for **3.30×** at batch 16 (0.31 vs 0.84 ms at batch 1), and a 3.8× smaller checkpoint (1,687 → 440 kB).
# * **Keep 60 %, unrounded** (10, 19, 38, 77 channels): only 1.20× for 36 % of the multiply-adds: §4's shapes off the blocked kernels.

# %% [markdown]
# So on this CPU unstructured sparsity buys compressibility, nothing at run time; structured pruning buys real speed, as much as the shapes suit the kernels. The converged detector pays for the channels it loses: a quarter costs about a point, half costs 4.8 to 7.6 points depending on how the channels are chosen (9.9 at random).

# %% [markdown]
# ### Why the baseline must be converged
#
# The start meets the course's rule for a converged baseline: in the plateau check of `tiny_detector_converged.json`, 6 more fine-tuning epochs add 0.1 val mAP points, under 0.5.
#
# What if the start is still improving, like notebook 02's 6-epoch detector? The same recipe (6 fine-tuning epochs per variant, 3 seeds) ran from three starts:
#
# * the 6-epoch detector (`prune_sweep.json`);
# * the same detector after 6 epochs of dense fine-tuning (`prune_converged.json`, 6 + 6);
# * the converged 48-epoch one (`prune_controls.json`, §7).
#
# `vs start` compares with the model that was pruned (one model, so only the seeds' spread counts). `vs dense_ft` compares with the dense model fine-tuned as long (seed by seed, paired). Each comes with its 95 % interval and verdict, on the test split.

# %% tags=["nbval-check-output"]
starts = {"6 epochs": "prune_sweep.json", "6 + 6 epochs": "prune_converged.json", "48 epochs": "prune_controls.json"}
files = {label: json.loads((RESULTS / name).read_text()) for label, name in starts.items()}
lesson = {label: f["test_map"] for label, f in files.items()}  # test split; the recipe was fixed on val
for label, v in lesson.items():
    start, ft = files[label]["dense"]["test_map"], v["dense_ft"]["after_ft"]["runs"]
    print(f"start trained {label} ({starts[label]}): test mAP {start:.3f}")
    for name in (n for n in ("dense_ft", "unstructured_0.8", "structured_0.75", "structured_0.5") if n in v):
        s = seed_summary(v[name]["after_ft"]["runs"])
        diffs = [seed_difference(s["runs"], [start] * len(s["runs"]))]  # the start: one model, no seed noise
        if name != "dense_ft":
            diffs.append(seed_difference(s["runs"], ft, paired=True))  # same data order per seed
        text = [f"{d['difference'] * 100:+5.1f} [{d['low'] * 100:+5.1f}, {d['high'] * 100:+5.1f}] "
                + ("within noise" if d["within_noise"] else "gain" if d["difference"] > 0 else "loss") for d in diffs]
        line = f"  {name:<17}{s['mean']:.3f} ± {s['std']:.3f}   vs start {text[0]:<34}" + ("" if name == "dense_ft" else f"vs dense_ft {text[1]}")
        print(line.rstrip())

# %%
fig, ax = plt.subplots(figsize=(7.5, 3.6))
xs = range(len(lesson))
ax.plot(xs, [f["dense"]["test_map"] for f in files.values()], "k:o", label="the start itself")
for name, color in (("dense_ft", "black"), ("unstructured_0.8", "tab:orange"), ("structured_0.5", "tab:blue")):
    s = [seed_summary(v[name]["after_ft"]["runs"]) for v in lesson.values()]
    ax.errorbar(xs, [x["mean"] for x in s], yerr=[x["std"] for x in s], fmt="o-", color=color, capsize=3, label=f"{name} (+6 epochs)")
ax.set_xticks(xs, [f"start trained {label}" for label in lesson])
ax.set_ylabel("test mAP@[.5:.95]")
ax.set_title("A start that is still improving flatters pruning")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# * **From the 6-epoch start, pruning looked cheap.** Dense fine-tuning alone was worth +5.7 points on test (0.753 → 0.810), so unstructured 80 % ended 3.7 points *above* the model it was cut from, and keep 50 % only 1.4 below it. Reported against the start, as pruning results often are, that reads as "80 % sparsity costs nothing, or even helps".
# * **From the converged start, the same 6 epochs give only +0.3**, and every pruned model ends below its start: −1.5 (unstructured 80 %), −0.9 (keep 75 %), −6.7 (keep 50 %). The 6 + 6 start lies between: dense fine-tuning still adds +2.2, and unstructured 80 % and keep 75 % end within noise of their start.

# %% [markdown]
# * **The equal-budget control removes the illusion.** Against `dense_ft`, the price is nearly the same from every start: keep 50 % costs 7.1, 7.4 and 7.1 points (6, 6 + 6 and 48 epochs), unstructured 80 % 2.1, 1.8 and 1.8; keep 75 % 1.7 from 6 + 6 and 1.2 from 48.
#
# Measured against the start of a model that is still learning, pruning looks far cheaper than it is on the model you would ship. Train the baseline to its plateau first, then give every variant and its control the same budget.

# %% [markdown]
# ### Regenerate the results
#
# * §7's study: `PARALLEL=2 bash benchmarks/prune_controls.sh` (about 40 minutes on 2 CPU cores; writes `prune_controls.json`).
# * The shapes' timings and the 6-epoch start: `python benchmarks/prune_sweep.py --multiple-of 1` (about 13 minutes on 2 CPU cores; writes `prune_sweep.json`; `--help` lists more variants: global scope, iterative).
# * The 6 + 6 start: `PARALLEL=2 bash benchmarks/prune_converged.sh` (about 15 minutes on 2 CPU cores).
