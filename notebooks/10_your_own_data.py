# %% [markdown]
# # 10 · Your own data, on more machines
#
# Everything so far ran on the course's synthetic shapes. This notebook does the same things to a detector on *your* data, with one command line instead of notebook code, and then shows what changes when one training run becomes several processes.
#
# **You will**
# 1. train, evaluate, export and run the course's detector on COCO-format folders with `python -m course_utils`, on images of several sizes;
# 2. read COCO's full evaluation — AP by object size, average recall — and see what a **crowd region** changes;
# 3. resume an interrupted training run exactly;
# 4. train the same model with `torchrun` on two processes, and learn what changes across processes and machines: the sampler, the gradient all-reduce (and why clipping must come after it), the effective batch and its learning rate.
#
# *Time: about 30 minutes. Prerequisites: notebook 02 (the detector, the training loop) and 05 (int8 export). Terms: [glossary](../docs/glossary.md) (English–中文).*

# %%
import json
import sys
import tempfile
from pathlib import Path

import torch
from IPython.display import Image, display
from torch.utils.data import DataLoader

from course_utils import CocoDetection, TinyDetector, load_checkpoint, mean_average_precision, seed_everything
from course_utils.data import Letterbox, SceneConfig, collate_detection, write_coco_split
from course_utils.metrics import COCO_STATS, pycocotools_map
from course_utils.train import predict
from course_utils.viz import show_detections

seed_everything(0)
work = Path(tempfile.mkdtemp(prefix="own_data_"))
python = sys.executable
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

# %%
# NBVAL_IGNORE_OUTPUT
run = work / "run"
start = Path("..") / "benchmarks" / "results" / "tiny_detector_converged.pt"
# !{python} -m course_utils train --train {small} {large} --val {val_json} --init {start} --epochs 3 --lr 3e-4 --batch-size 16 --out {run} --no-progress

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
# !{python} -m course_utils evaluate {run / "best.pt"} --data {val_json} --json {work / "val_metrics.json"} --device cpu

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
#
# ## 4. Export to int8 and predict
#
# `export` writes the network (without post-processing) as fp32 ONNX and, with `--int8`, an int8 ONNX Runtime model calibrated on images of your choice (notebooks 05 and 09 explain what it contains); `predict` draws detections on any image files.

# %%
# NBVAL_IGNORE_OUTPUT
# !{python} -m course_utils export {run / "best.pt"} --onnx {work / "mine.onnx"} --int8 --calib {small} --num-calib 32
photo = sorted((work / "large" / "images").iterdir())[0]
# !{python} -m course_utils predict {run / "best.pt"} {photo} --out {work / "predictions"} --device cpu
display(Image(filename=str(work / "predictions" / (photo.stem + ".png")), width=360))

# %% [markdown]
# Bad input ends with one line that says what is wrong and how to fix it — never a traceback from deep inside a library:

# %%
# NBVAL_CHECK_OUTPUT
# !{python} -m course_utils train --train {small} --val {val_json} --image-size 100 2>&1 | tail -1
# !{python} -m course_utils train --train {small} --val {val_json} --out runs/nothing_here --resume 2>&1 | tail -1

# %% [markdown]
# ## 5. More machines: the same trainer under `torchrun`
#
# When one process is too slow, PyTorch runs N copies of the program, one per GPU (or, here, per CPU core), each on 1/N of every batch: **DistributedDataParallel (DDP)**. `torchrun` starts the copies and tells each its rank; `course_utils.distributed` does the rest, with the same `fit`, the same hooks:

# %%
# NBVAL_IGNORE_OUTPUT
# !OMP_NUM_THREADS=1 {python} -m torch.distributed.run --nproc-per-node 2 -m course_utils train --train {small} {large} --val {val_json} --init {start} --epochs 1 --lr 3e-4 --batch-size 8 --out {work / "ddp"} --device cpu --no-progress

# %% [markdown]
# > ### ❌ Myth vs ✅ fact — "gradient clipping makes a detector more accurate *and faster*"
# > **Myth** (a common claim, for example in widely shared blog posts that report an experiment on a public face-detection dataset): adding gradient clipping to a detector's training "significantly improves its accuracy and speed".
# >
# > **Fact:** clipping changes only the weight update *during training*; the trained network is the same size and runs the same operations, so it cannot detect faster. Whether it helps accuracy is a measurement, not a given: notebook 03's 5-seed lab found that clipping lets a run survive a learning rate that otherwise diverges (AGC at a learning rate 3.3x the safe one reached 96 % of the safe baseline's mAP@0.5, within noise of it), not that it beats a well-tuned run. On your own data, the same rule holds: compare with the same training without the method, and report the seed spread. Under DDP, what matters is *where* it clips — after the all-reduce, below.

# %% [markdown]
# What changed, and why each change is needed:
#
# * **The data.** A `DistributedSampler` gives rank $r$ the samples $r, r + N, r + 2N, \dots$ of each epoch's shuffled order, and must be told the epoch (`set_epoch`), or every epoch repeats the same order on every rank. The **effective batch** is $N \times$ the per-process batch: 2 × 8 = 16 above, the same 16 images per step as one process with `--batch-size 16`.
# * **The gradients.** During `backward`, DDP **all-reduces** (averages) every gradient across the ranks, so after `backward` each rank holds the gradient of the whole effective batch. Everything that runs after `backward` — gradient clipping above all — therefore sees the *reduced* gradient, and computes the same norm on every rank as one process with the whole batch would (`tests/test_distributed.py` checks both, on 2 CPU processes). Clipping each rank's *local* gradient before the reduction would clip a noisier vector by a different factor on each rank. **FSDP**, which shards the parameters and gradients themselves so that no rank holds the whole gradient, needs its own `FSDP.clip_grad_norm_`, which all-reduces the squared norms of the shards.
# * **The loss.** The detector divides its loss by the number of positive locations; each rank counts only its own, so the course's detector all-reduces that count — otherwise two ranks train on a differently weighted loss than one process with the same images. (Two ranks × 4 images then give the same weights as one process × 8 images, to $10^{-4}$.)
# * **BatchNorm** normalises with each rank's own statistics unless converted to `SyncBatchNorm` (CUDA only in PyTorch).
# * **Logging and checkpoints** happen on rank 0; the others wait at a barrier.
# * **Across machines**, start `torchrun` on every node with `--nnodes M --node-rank i --rdzv-endpoint HOST:PORT`: the processes find each other there (the *rendezvous*), then talk over `nccl` (GPUs) or `gloo` (CPUs).
#
# **The learning rate.** More processes make the effective batch larger. With plain SGD, the **linear scaling rule** (Goyal et al. 2017) keeps training comparable: multiply the learning rate by the factor the batch grew (with a warm-up for large factors). Adaptive optimizers such as AdamW are less sensitive; the course keeps its AdamW rate when the effective batch is unchanged.
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
# * A checkpoint that holds the optimizer, the scheduler and every random state makes a resumed run identical to an uninterrupted one.
# * Under DDP the trainer and its hooks are unchanged; what changes is the sampler, the global loss normalisation, the effective batch (and its learning rate), and where clipping sees its gradient: after the all-reduce.
