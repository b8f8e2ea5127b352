# %% [markdown]
# # 10 · Your own data, on more machines
#
# Everything so far ran on the course's synthetic shapes. This notebook does the same things to a detector on *your* data, with one command line instead of notebook code, and then shows what changes when one training run becomes several processes.
#
# **You will**
# 1. train, evaluate, export and run the course's detector on COCO-format folders with `python -m course_utils`, on images of several sizes;
# 2. read COCO's full evaluation — AP by object size, average recall — and see what a **crowd region** changes;
# 3. give the detector more pyramid levels when your objects are large, and measure whether it helps;
# 4. resume an interrupted training run exactly;
# 5. train the same model with `torchrun` on two processes, and learn what changes across processes and machines: the sampler, the gradient all-reduce (and why clipping must come after it), the effective batch and its learning rate.
#
# *Time: about 40 minutes. Prerequisites: notebook 02 (the detector, the training loop) and 05 (int8 export). Terms: [glossary](../docs/glossary.md) (English–中文).*

# %%
import json
import math
import shutil
import tempfile
from pathlib import Path

import torch
from IPython.display import Image, display
from torch.utils.data import DataLoader

from course_utils import CocoDetection, TinyDetector, load_checkpoint, mean_average_precision, seed_everything
from course_utils.cli import run_command
from course_utils.data import Letterbox, SceneConfig, collate_detection, write_coco_split
from course_utils.metrics import COCO_STATS, pycocotools_map
from course_utils.train import predict
from course_utils.viz import show_detections

seed_everything(0)
work = Path(tempfile.mkdtemp(prefix="own_data_", dir="."))  # a scratch folder beside the notebook, removed at the end
val_json = Path("..") / "data" / "val" / "annotations.json"

# %% [markdown]
# ## 1. A COCO-format dataset with images of two sizes
#
# A COCO detection dataset is a folder of images and one JSON file with three lists: `images` (file name, width, height), `annotations` (image id, category id, `bbox` as `[x, y, width, height]` in pixels, `area`, `iscrowd`) and `categories`. Anything else in a real file (`info`, `licenses`, `segmentation`) is allowed and ignored. To stand in for "your data", we write two such folders of rendered scenes, one with 96 × 96 images and one with 160 × 160 — a camera change halfway through a project looks like this.

# %%
small = write_coco_split(work / "small", list(range(0, 150)), SceneConfig(image_size=96))
large = write_coco_split(work / "large", list(range(150, 300)), SceneConfig(image_size=160))
entry = json.loads(small.read_text())
print({k: len(v) for k, v in entry.items() if isinstance(v, list)})
print("one image:     ", entry["images"][0])
print("one annotation:", entry["annotations"][0])

# %% [markdown]
# A batch must have one size, so the course **letterboxes** every image: scale it by $s = S / \max(H, W)$ to fit an $S \times S$ square (aspect kept), pad the rest with grey, and scale the boxes by the same factors. Predictions are mapped back by $1/s$ before scoring, so the mAP is computed in each image's own pixels — where COCO's size ranges are defined.

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
for ax_pair, path in zip((axes[:2], axes[2:]), (small, large)):
    data = CocoDetection(path)
    image, target = data[0]
    boxed, boxed_target = Letterbox(data, 128)[0]
    show_detections(image, target, ax=ax_pair[0], title=f"original {image.shape[2]}x{image.shape[1]}")
    show_detections(boxed, boxed_target, ax=ax_pair[1], title=f"letterboxed to 128x128 (s = {boxed_target['letterbox'][0]:.2f})")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Train with one command
#
# `train` takes one or more training files (trained on together), a validation file, and the usual knobs; it prints the val mAP after every epoch and writes `last.pt` (everything needed to resume) and `best.pt` atomically. As with any real project, we do not start from random weights: `--init` starts from the course's converged detector (notebook 02) and fine-tunes it on the new images for 3 epochs. (From scratch, a real run would train until the validation curve flattens.)
#
# In a terminal you would type the command after the `$`. In the notebook, `run_command` runs it in a new process and prints the same; unlike a notebook's `!` line, it stops the notebook with an error if the command fails.

# %%
# NBVAL_IGNORE_OUTPUT
run = work / "run"
start = Path("..") / "benchmarks" / "results" / "tiny_detector_converged.pt"
run_command("train", "--train", small, large, "--val", val_json, "--init", start, "--epochs", 3, "--lr", 3e-4,
            "--batch-size", 16, "--out", run, "--no-progress")

# %% [markdown]
# The converged detector scored 0.865 on this val split before; three epochs on 300 new images keep it within about a point — these images come from the same renderer, so there is little new to learn. On data of your own, this is where the gain (or the need for more epochs) shows.
#
# `last.pt` holds the model, the optimizer and scheduler states, the epoch, and every random-number state (PyTorch's, NumPy's, Python's, and the data order's). That is what makes `--resume` *exact*: after an interruption, `train ... --resume` continues from the last finished epoch and ends with the same weights, bit for bit, as a run that was never interrupted (`tests/test_cli.py` interrupts a run after epoch 2 and checks; `tests/test_distributed.py` kills a two-process run with SIGKILL and checks). Everything loads with `torch.load(..., weights_only=True)`: a checkpoint cannot run code.

# %%
# NBVAL_CHECK_OUTPUT
saved = torch.load(run / "last.pt", weights_only=True)
print("metadata keys:", sorted(saved["metadata"]))
print("rng states:   ", sorted(saved["metadata"]["rng"]))
print("config:       ", {k: saved["metadata"]["config"][k] for k in ("width", "epochs", "lr", "image_size", "categories")})

# %% [markdown]
# ## 3. COCO's full evaluation
#
# `evaluate` prints the twelve numbers `pycocotools` prints (the course's `mean_average_precision` equals it to $10^{-6}$ — `tests/test_coco_eval.py`): AP averaged over IoU 0.50:0.95, at 0.50 and 0.75; AP for **small** (< 32² px²), **medium** and **large** (> 96² px²) objects; and **average recall** with at most 1, 10 or 100 detections per image and class, and by size.

# %%
# NBVAL_IGNORE_OUTPUT
run_command("evaluate", run / "best.pt", "--data", val_json, "--json", work / "val_metrics.json", "--device", "cpu")

# %% [markdown]
# Read the table the way a reviewer would: the course's val images are 128 px, so there are no "large" objects (`-`); small objects score lower than medium ones; and AR@1 is far below AR@10 because many val images hold several objects of one class — one detection per class can find only one of them.
#
# **Crowd regions.** COCO marks a box over a dense group (a crowd of people, a pile of fruit) with `iscrowd = 1`. It is not an object to find: a detection that falls inside it is neither a true nor a false positive, and a crowd region can absorb any number of detections (their overlap is measured as |detection ∩ crowd| / |detection|). Here we mark the five largest val objects as crowds and score the same predictions three ways:

# %%
# NBVAL_IGNORE_OUTPUT -- the scores of a model just trained here depend on the CPU's float arithmetic; the equality is asserted
model = TinyDetector()
load_checkpoint(run / "best.pt", model)
val = Letterbox(CocoDetection(val_json), 128)
preds, targets = predict(model.eval(), DataLoader(val, batch_size=50, collate_fn=collate_detection), torch.device("cpu"))
areas = torch.cat([t["area"] for t in targets])
cut = areas.sort(descending=True).values[4]
crowded = [{**t, "iscrowd": (t["area"] >= cut).long()} for t in targets]
as_objects = mean_average_precision(preds, targets)
as_crowds = mean_average_precision(preds, crowded)
reference = pycocotools_map(preds, crowded)
print(f"{int(sum(t['iscrowd'].sum() for t in crowded))} boxes marked iscrowd = 1")
for name in ("map", "map_50", "map_medium", "mar_100"):
    print(f"{name:<11} as objects {as_objects[name]:.4f}   as crowd regions {as_crowds[name]:.4f}   pycocotools {reference[name]:.4f}")
assert all(abs(as_crowds[k] - reference[k]) < 1e-6 for k in COCO_STATS)  # all twelve numbers, not just these four

# %% [markdown]
# Matched or missed, those five boxes no longer count, and detections on them are not punished: the scores move, and they move exactly as pycocotools moves them. (Before the course handled crowds, a file with crowd regions scored differently here and in pycocotools — a silent disagreement is worse than an error.)

# %% [markdown]
# ## 4. Large objects: more pyramid levels
#
# The course's detector predicts from one map of stride 8, with one 32-px anchor per location (notebook 02). That suits the course's scenes (objects of 10–48 px), but a photograph may hold an object of 150 px, and that is hard for it: each location's output depends on at most about 135 px of input (its theoretical **receptive field**; the effective one is smaller), so no location sees the whole object, and only the few locations within `center_radius · stride = 12` px of its centre learn it.
#
# FPN detectors (RetinaNet, FCOS) predict from several **pyramid levels** instead — strides 8, 16 and 32 — with anchors that grow with the stride, and learn each object on the level that matches its size. `TinyDetector(levels=3)` does this: one more backbone stage for stride 32, a top-down FPN ($P_5 = L_5(C_5)$, $P_4 = L_4(C_4) + \mathrm{up}(P_5)$, $P_3 = L_3(C_3) + \mathrm{up}(P_4)$, with $L$ the 1×1 lateral convs), one head per level, and the level rule
#
# $$l^* = \mathrm{clamp}\Big(\mathrm{round}\big(\log_2 \tfrac{\sqrt{w h}}{32}\big),\ 0,\ 2\Big),$$
#
# the level whose anchor (32, 64 or 128 px) is nearest the box in log scale. The default stays `levels=1`, so every other notebook and checkpoint is unchanged; `train --levels 3` is the command-line switch. Which locations learn three boxes of different sizes:

# %%
# NBVAL_CHECK_OUTPUT
import matplotlib.patches as patches

three = TinyDetector(levels=3)
anchors, strides = three.all_anchors(three.level_sizes((192, 192)), torch.device("cpu"))
boxes = torch.tensor([[20.0, 24.0, 44.0, 44.0],     # ~22 px: a small object
                      [112.0, 16.0, 176.0, 76.0],   # ~62 px
                      [30.0, 60.0, 180.0, 184.0]])  # ~136 px: most of the image
match = three.assign(anchors, boxes, strides)
centres = (anchors[:, :2] + anchors[:, 2:]) / 2
fig, ax = plt.subplots(figsize=(4.6, 4.6))
ax.set_xlim(0, 192), ax.set_ylim(192, 0), ax.set_aspect("equal")
colours = {8: "tab:blue", 16: "tab:orange", 32: "tab:green"}
for g, box in enumerate(boxes.tolist()):
    side = ((box[2] - box[0]) * (box[3] - box[1])) ** 0.5
    stride = int(strides[match == g][0])
    ax.add_patch(patches.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, lw=2, color=colours[stride]))
    pos = centres[match == g]
    ax.scatter(pos[:, 0], pos[:, 1], s=30, color=colours[stride], label=f"box of side {side:.0f} px -> stride {stride}")
    print(f"box {g}: side {side:5.1f} px, log2(side / 32) = {math.log2(side / 32):+.2f} -> level stride {stride}, "
          f"{int((match == g).sum())} positive locations")
ax.scatter(centres[:, 0], centres[:, 1], s=2, color="0.7", zorder=0)
ax.legend(loc="lower left", fontsize=7, bbox_to_anchor=(0, -0.32)), ax.set_title("positives of TinyDetector(levels=3)")
plt.show()
for s in three.strides:
    print(f"stride {s:2d}: {int((strides == s).sum()):4d} locations, anchors of {three.anchor_scale * s:.0f} px")

# %% [markdown]
# Does it help? `benchmarks/multiscale.py` measured it on scenes built for the question: 192 × 192 images with 1–3 objects of 32–176 px, 1,000 for training, 200 others for validation and 200 more for test. Every variant trains from scratch with the same recipe (AdamW, one-cycle, peak 4e-3, batch 32), the same images in the same order for each seed, and the same number of epochs — first 16, then 32 (with a check at 64). Three levels bring more parameters *and* more multiply-adds, so the default gets two controls:
#
# * the default, `levels=1`;
# * `levels=3`;
# * a **parameter control**, `levels=1, width=1.5`: about as many parameters as three levels (if three levels won only because they bring twice the parameters, this one would win too) — but it costs far more multiply-adds;
# * a **compute control**, `levels=1, width=1.1`: about as many multiply-adds per image as three levels (32-epoch sweep only).
#
# Their size and cost, counted here (`count_flops`, per 192 × 192 image) and timed on your machine (network only, batch 16, 2 threads, interleaved rounds; untrained weights run the same operations):

# %%
# NBVAL_IGNORE_OUTPUT -- timings
from course_utils import count_flops, count_parameters
from course_utils.deploy import measure_interleaved, paired_speedup

VARIANTS = {"levels1": dict(levels=1), "levels3": dict(levels=3), "levels1_w1.5": dict(width=1.5), "levels1_w1.1": dict(width=1.1)}
names = {"levels1": "levels=1 (default)", "levels3": "levels=3", "levels1_w1.5": "levels=1, width 1.5", "levels1_w1.1": "levels=1, width 1.1"}
nets = {key: TinyDetector(**kw).eval() for key, kw in VARIANTS.items()}
x = torch.rand(16, 3, 192, 192, generator=torch.Generator().manual_seed(0))
with torch.inference_mode():
    timed = measure_interleaved({key: (lambda m=m: m.forward_raw(x)) for key, m in nets.items()}, rounds=3, runs=10)
print(f"{'variant':<21}{'parameters':>11}{'MACs / image':>14}{'batch 16, ms':>14}{'vs default':>12}")
for key, m in nets.items():
    print(f"{names[key]:<21}{count_parameters(m):>11,}{count_flops(m, (192, 192)) / 1e6:>12.0f} M{timed[key]['median_ms']:>14.1f}"
          f"{1 / paired_speedup(timed['levels1'], timed[key])['speedup']:>11.2f}x")

# %% [markdown]
# The results. Choices — here only the number of epochs, by the convergence check — are made on val; the comparisons are reported on the test scenes:

# %%
# NBVAL_CHECK_OUTPUT
import numpy as np

from course_utils import seed_difference

results = Path("..") / "benchmarks" / "results"
sweeps = {16: json.loads((results / "multiscale_16ep.json").read_text()), 32: json.loads((results / "multiscale.json").read_text())}
mix = sweeps[32]["test_sizes"]
print(f"test: {mix['boxes']} boxes, {mix['small_fraction']:.0%} small, {mix['medium_fraction']:.0%} medium, "
      f"{mix['large_fraction']:.0%} large")
metrics = {"map": "AP", "map_small": "AP_S", "map_medium": "AP_M", "map_large": "AP_L", "mar_100": "AR@100"}


def runs_of(ms, key, metric):
    """The test score of every seed of one variant, in seed order (the variants share each seed's data order)."""
    runs = sorted((r for r in ms["runs"] if r["variant"] == key and r["epochs"] == ms["summary"][key]["epochs"]), key=lambda r: r["seed"])
    return [r["test"][metric] for r in runs]


for epochs, ms in sweeps.items():
    print(f"\n{epochs} epochs each (the total: all train from scratch), test, n = {len(ms['seeds'])} seeds, mean ± std (ddof=1)")
    print(f"{'variant':<21}{'MACs':>6}" + "".join(f"{label:>14}" for label in metrics.values()))
    for key, s in ms["summary"].items():
        cells = "".join(f"{s['test'][k]['mean']:>8.3f}±{s['test'][k]['std']:.3f}" for k in metrics)
        print(f"{names[key]:<21}{s['macs'] / 1e6:>5.0f}M{cells}")
    for key in ms["summary"]:
        if key != "levels1":
            diffs = []
            for k, label in metrics.items():
                d = seed_difference(runs_of(ms, key, k), runs_of(ms, "levels1", k), paired=True)
                diffs.append(f"{label} {100 * d['difference']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
                             + (" (within noise)" if d["within_noise"] else ""))
            print(f"  {names[key]} minus the default, points [paired 95 % CI]:\n    " + "\n    ".join(diffs))
    for key, check in ms["convergence_check"].items():  # the number of epochs is a choice: read on val
        (e0, e1), (v0, v1) = check["epochs"], check["val_map"]
        ap_large = {r["epochs"]: r["map_large"] for r in ms["runs"] if r["variant"] == key and r["seed"] == ms["seeds"][0]}
        print(f"  convergence check (val), {names[key]}, seed {ms['seeds'][0]}: AP {v0:.3f} after {e0} epochs, "
              f"{v1:.3f} after {e1} ({100 * (v1 - v0):+.1f} points); AP_L {ap_large[e0]:.3f} -> {ap_large[e1]:.3f}")

# %%
colours = {"levels1": "tab:blue", "levels3": "tab:green", "levels1_w1.5": "tab:gray", "levels1_w1.1": "tab:purple"}
fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), sharey=True)
for ax, (epochs, ms) in zip(axes, sweeps.items()):
    keys = list(ms["summary"])
    for i, key in enumerate(keys):
        for j, m in enumerate(metrics):
            x = j + (i - (len(keys) - 1) / 2) * 0.2
            values = runs_of(ms, key, m)
            ax.bar(x, np.mean(values), 0.19, color=colours[key], alpha=0.35, label=names[key] if j == 0 else None)
            ax.scatter([x] * len(values), values, color=colours[key], s=12, zorder=3)
    ax.set_xticks(range(len(metrics)), list(metrics.values()))
    ax.set_ylim(0.5, 1), ax.set_title(f"{epochs} epochs each (bars: mean, dots: the {len(ms['seeds'])} seeds)")
    ax.legend(fontsize=8, loc="lower left")
axes[0].set_ylabel("test score, large-object scenes")
plt.show()

# %% [markdown]
# **Read it in order.** Trained for 16 epochs each, three levels look like a clear win on test: AP +3.0 points (+0.7 to +5.2) and large objects +14.2 (+1.5 to +26.9), while the parameter control (width 1.5) is within noise of the default (AP +1.5). But the **convergence check** (on val: the number of epochs is a choice) says 16 epochs was too short: trained for 32, the default gains 7.6 points (seed 0: 0.813 → 0.889) and three levels only 3.0 (0.844 → 0.875).
#
# With every variant trained for 32 epochs, on test: three levels are **better on large objects**, outside the seed noise (AP_L +7.4 points, +1.8 to +13.0), **worse on medium ones** (−2.5, −4.5 to −0.6), and within noise overall (AP −0.2). The controls say where the large-object gain comes from: the **compute control** (width 1.1, the multiply-adds of three levels) is within noise of the default on large objects (−0.2) and overall (+0.3); the **parameter control** (width 1.5: the parameters of three levels, at 2.2× the default's multiply-adds) is within noise on large objects too (+2.4) and overall (+1.2). So the large-object gain is the levels', not more compute's or more parameters'.
#
# Now look at val, where the same models were scored: there the large-object gain was only +2.1 (−3.9 to +8.1), within noise. The seed intervals hold the 200 scenes of a split fixed — they measure the noise of training — while AP_L rests on about 75 large boxes per split, and the two splits disagree by 5 points: that is the noise of *which* scenes were drawn. Reported on test, as the course's rule says, the goal — a detector better on large objects, outside the noise — is **met at 32 epochs**, with the two caveats the tables print: it costs medium objects 2.5 points, and on the other split it did not show.
#
# Is 32 epochs converged? The check at 64 epochs (seed 0, val) says not quite: the default gains another 1.2 points (0.889 → 0.901) and three levels 2.1 (0.875 → 0.896). At 64 epochs seed 0's test AP_L is 0.845 for the default and 0.904 for three levels — one seed, no noise estimate, but the same direction as the three seeds at 32 epochs.
#
# For your own data: if your objects are large, try `train --levels 3` and compare it with the default trained as long, with `evaluate` on images no choice was made on — by object size, since here large objects gained what medium ones lost part of. The levels export to ONNX Runtime (fp32 and int8) like the default; channel pruning (notebook 07) and the integer-only network (notebook 09) know the one-level layout only and say so.

# %% [markdown]
# ## 5. Export to int8 and predict
#
# `export` writes the network (without post-processing) as fp32 ONNX and, with `--int8`, an int8 ONNX Runtime model calibrated on images of your choice (notebooks 05 and 09 explain what it contains); `predict` draws detections on any image files.

# %%
# NBVAL_IGNORE_OUTPUT
run_command("export", run / "best.pt", "--onnx", work / "mine.onnx", "--int8", "--calib", small, "--num-calib", 32)
photo = sorted((work / "large" / "images").iterdir())[0]
run_command("predict", run / "best.pt", photo, "--out", work / "predictions", "--device", "cpu")
display(Image(filename=str(work / "predictions" / (photo.stem + ".png")), width=360))

# %% [markdown]
# Bad input ends with one line that says what is wrong and how to fix it — never a traceback from deep inside a library. These two commands are *meant* to fail (`expect_error=True` prints the last line, and would stop the notebook if the command succeeded):

# %% tags=["expected-error"]
# NBVAL_CHECK_OUTPUT
run_command("train", "--train", val_json, "--val", val_json, "--image-size", 100, expect_error=True)
run_command("train", "--train", val_json, "--val", val_json, "--out", Path("runs") / "nothing_here", "--resume", expect_error=True)

# %% [markdown]
# ## 6. More machines: the same trainer under `torchrun`
#
# When one process is too slow, PyTorch runs N copies of the program, one per GPU (or, here, per CPU core), each on 1/N of every batch: **DistributedDataParallel (DDP)**. `torchrun` starts the copies and tells each its rank; `course_utils.distributed` does the rest, with the same `fit`, the same hooks:

# %%
# NBVAL_IGNORE_OUTPUT
run_command("train", "--train", small, large, "--val", val_json, "--init", start, "--epochs", 1, "--lr", 3e-4,
            "--batch-size", 8, "--out", work / "ddp", "--device", "cpu", "--no-progress", processes=2)

# %% [markdown]
# > ### ❌ Myth vs ✅ fact — "gradient clipping makes a detector more accurate *and faster*"
# > **Myth** (a common claim, for example in widely shared blog posts that report an experiment on a public face-detection dataset): adding gradient clipping to a detector's training "significantly improves its accuracy and speed".
# >
# > **Fact:** clipping changes only the weight update *during training*; the trained network is the same size and runs the same operations, so it cannot detect faster. Whether it helps accuracy is a measurement, not a given: notebook 03's 5-seed lab found that clipping lets a run survive a learning rate that otherwise diverges (AGC at a learning rate 3.3x the safe one reached 99 % of the safe baseline's mAP@0.5 on the test split, within noise of it), not that it beats a well-tuned run. On your own data, the same rule holds: compare with the same training without the method, and report the seed spread. Under DDP, what matters is *where* it clips — after the all-reduce, below.

# %% [markdown]
# What changed, and why each change is needed:
#
# * **The data.** A `DistributedSampler` gives rank $r$ the samples $r, r + N, r + 2N, \dots$ of each epoch's shuffled order, and must be told the epoch (`set_epoch`), or every epoch repeats the same order on every rank. The **effective batch** is $N \times$ the per-process batch: 2 × 8 = 16 above, the same 16 images per step as one process with `--batch-size 16`.
# * **The gradients.** During `backward`, DDP **all-reduces** (averages) every gradient across the ranks, so after `backward` each rank holds the gradient of the whole effective batch. Everything that runs after `backward` — gradient clipping above all — therefore sees the *reduced* gradient, and computes the same norm on every rank as one process with the whole batch would (`tests/test_distributed.py` checks both, on 2 CPU processes). Clipping each rank's *local* gradient before the reduction would clip a noisier vector by a different factor on each rank. **FSDP** shards the parameters and gradients themselves, so no rank holds the whole gradient: with FSDP2 (`fully_shard`) they are distributed tensors (DTensors), and the ordinary `torch.nn.utils.clip_grad_norm_` combines the shards' norms across ranks for you; the older `FullyShardedDataParallel` wrapper has its own `FSDP.clip_grad_norm_` for the same job.
# * **The loss.** The detector divides its loss by the number of positive locations; each rank counts only its own, so the course's detector all-reduces that count — otherwise two ranks train on a differently weighted loss than one process with the same images. (For a detector without BatchNorm, two ranks × 4 images then give the same weights as one process × 8 images, to $10^{-4}$; with BatchNorm they do not, next point.)
# * **BatchNorm** normalises with each rank's own statistics — 8 images here, not 16 — unless converted to `SyncBatchNorm`, which PyTorch runs on accelerators (CUDA, XPU, HPU), not on CPU processes. So the run above is close to, not the same as, one process with batches of 16.
# * **Random numbers.** Every rank is seeded alike, so the model starts the same everywhere (DDP also copies rank 0's weights to the others). The course's training has no random augmentation; a recipe with random crops or flips must seed each rank's augmentation differently (for example `seed + rank`), or every rank draws the same crops.
# * **Logging and checkpoints** happen on rank 0; the others wait at a barrier.
# * **Across machines**, start `torchrun` on every node with `--nnodes M --node-rank i --rdzv-endpoint HOST:PORT`: the processes find each other there (the *rendezvous*), then talk over `nccl` (GPUs) or `gloo` (CPUs).
#
# **The learning rate.** More processes make the effective batch larger. With plain SGD, the **linear scaling rule** (Goyal et al. 2017) keeps training comparable: multiply the learning rate by the factor $k$ the batch grew (with a warm-up for large factors). For Adam-type optimizers such as AdamW, a **square-root rule** — multiply by $\sqrt{k}$ (Malladi et al. 2022) — is the usual starting point; either rule is a starting point to check on val, not a guarantee. The course keeps the effective batch (2 × 8 = 16, as in §2), and so its AdamW learning rate, unchanged.
#
# **Exercise 1.** Write `my_linear_scaling(base_lr, base_batch, batch_per_process, processes)`: the learning rate for a recipe tuned at `base_lr` with batches of `base_batch` images, now run on `processes` processes with `batch_per_process` images each.

# %%
from course_utils.exercises import check_linear_scaling


def my_linear_scaling(base_lr, base_batch, batch_per_process, processes):
    # YOUR CODE HERE
    raise NotImplementedError


check_linear_scaling(my_linear_scaling)

# %% [markdown]
# **Exercise 2 (open, no reference solution).** Put a COCO-format dataset of your own (or one you export from a labelling tool) through §2–§4. Which of the twelve numbers of §3 is lowest, and what does that say about your objects (their sizes, how many per image)? Does `--image-size 256` change it?
#
# Solutions: `solutions/ex10_your_own_data.py`.
#
# ## Takeaways
#
# * Any COCO-format folder trains, evaluates, exports and predicts with `python -m course_utils`; images of any size are letterboxed for the network and scored in their own pixels.
# * COCO's full table — AP by size, AR@1/10/100 — says more than one mAP; crowd regions must be ignored, exactly as pycocotools ignores them.
# * More pyramid levels (`levels=3`) made the detector better on large objects on test (+7.4 points at 32 epochs, beyond the seed noise; a control with the same multiply-adds was not) and worse on medium ones; on val the large-object gain was within noise. Judge a method against a converged baseline and against controls for its compute and its parameters, on held-out images, and say what ~75 large boxes per split can and cannot show.
# * A checkpoint that holds the optimizer, the scheduler and every random state makes a resumed run identical to an uninterrupted one.
# * Under DDP the trainer and its hooks are unchanged; what changes is the sampler, the global loss normalisation, the effective batch (and its learning rate), and where clipping sees its gradient: after the all-reduce.

# %% [markdown]
# Last, the notebook removes its scratch folder (the datasets, runs and ONNX files it wrote beside it):

# %%
shutil.rmtree(work)
