# %% [markdown]
# # 00 · Setup and tour
#
# **Efficient Detection Course** — how to make object detectors small and fast, taught with code you can run on a laptop CPU.
#
# **In this notebook you will**
# 1. check that your environment works (and whether you have a GPU — you do not need one);
# 2. learn how the course is organised: notebooks that teach, a small library `course_utils` that holds the real code, exercises with automatic checks;
# 3. meet the dataset every notebook uses, and see how the loader protects you from broken annotation files;
# 4. try a live widget — the same mechanism later notebooks use to explore clip thresholds and bit widths.
#
# *Time: about 10 minutes. Prerequisites: Python and a little PyTorch.*

# %% [markdown]
# ## 1. How the course works
#
# | notebook | topic | status |
# |---|---|---|
# | `00_setup_and_tour` | environment, data, widgets | ✅ |
# | `01_detection_basics` | boxes, IoU, anchors, NMS, mAP | ✅ |
# | `02_training_a_tiny_detector` | one training loop for the whole course | ✅ |
# | `03_gradient_clipping` | why gradients explode and how clipping fixes it | ✅ |
# | `04_quantization_math` | scale, zero point, fake quantization, the STE | ✅ |
# | `05_qat_and_int8` | PTQ vs QAT, a real int8 model | ✅ |
# | `06_knowledge_distillation` | soft targets, detection distillation | ✅ |
# | `07_pruning` | magnitude and channel pruning, what sparsity does to latency | ✅ |
# | `08_capstone` | teacher → student → distilled → pruned → int8, measured the same way | ✅ |
#
# Each notebook follows the same rhythm: **objectives → intuition → formula → code → experiment with a figure → exercises → takeaways**.
#
# * The code you *call* lives in the package `course_utils/`, one module per concept (`boxes`, `metrics`, `models`, `train`, …). Every function states its formula and tensor shapes in its docstring, and is tested against a reference library (torchvision, pycocotools, PyTorch itself). Read it: `course_utils.box_iou??` in a cell shows the source.
# * Exercises ask you to write a small function; a `check_…` function from `course_utils.exercises` runs it and tells you what is wrong. Reference solutions are in `solutions/`, kept apart so a teacher can hand out the notebooks alone.
# * Terms are explained in English and Chinese in the [glossary](../docs/glossary.md).

# %% [markdown]
# ## 2. Check the environment

# %%
# NBVAL_IGNORE_OUTPUT
import platform
import sys

import matplotlib
import torch
import torchvision

import course_utils
from course_utils import get_device

print(f"Python       {sys.version.split()[0]} on {platform.machine()}")
print(f"torch        {torch.__version__}")
print(f"torchvision  {torchvision.__version__}")
print(f"matplotlib   {matplotlib.__version__}")
print(f"course_utils {course_utils.__version__}")
print(f"CPU threads  {torch.get_num_threads()}")
device = get_device()
print(f"device       {device}" + ("" if device.type == "cuda" else "  (no GPU found: everything in this course runs on a CPU)"))

# %% [markdown]
# `get_device()` picks `cuda` when a GPU is present, otherwise `cpu`. Every notebook uses it, so the same code uses your GPU if you have one.

# %% [markdown]
# ## 3. The dataset
#
# Real detection datasets are gigabytes and need a download. This course ships its own: **synthetic shapes** — circles, squares and triangles of random colour and size on cluttered, noisy backgrounds. It is small (two 200-image splits, under 4 MB, in `data/`), offline, and still has what makes detection hard: objects as small as about 8 pixels, objects that partly hide each other, distracting lines, 1–6 objects per image.
#
# The files are in the standard **COCO format**: a folder of images and one JSON file with `images`, `annotations` (boxes as `[x, y, width, height]`) and `categories`. So anything you learn here works on your own COCO data too.

# %%
from pathlib import Path

from course_utils import CATEGORIES, CocoDetection

DATA = Path("..") / "data"
val = CocoDetection(DATA / "val" / "annotations.json")
class_names = [c["name"] for c in val.categories]
image, target = val[0]
print("images in val:", len(val))
print("classes:", class_names)
print("one image:", tuple(image.shape), image.dtype, f"values in [{image.min():.2f}, {image.max():.2f}]")
print("its target:", {k: (tuple(v.shape), v.dtype) if torch.is_tensor(v) else v for k, v in target.items()})

# %% [markdown]
# Each sample is `(image, target)`, exactly the convention of torchvision's detection models:
# `image` is a float tensor `(3, H, W)` in `[0, 1]`; `target["boxes"]` is `(N, 4)` in **xyxy** (corners) format; `target["labels"]` holds class numbers `1…K` (0 is reserved for "background" in torchvision).
#
# Let us count what is in the split. This cell's output is checked by the test suite, so if the data ever changes, we notice.

# %%
# NBVAL_CHECK_OUTPUT
from collections import Counter

boxes = torch.cat([val[i][1]["boxes"] for i in range(len(val))])
labels = torch.cat([val[i][1]["labels"] for i in range(len(val))])
per_image = Counter(len(val[i][1]["labels"]) for i in range(len(val)))
sides = torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
print("objects:", len(labels))
print("per class:", {class_names[k - 1]: int((labels == k).sum()) for k in range(1, 4)})
print("objects per image:", dict(sorted(per_image.items())))
print(f"small objects (shorter side < 16 px): {int((sides < 16).sum())}")

# %%
import matplotlib.pyplot as plt

from course_utils.viz import show_detection_grid

fig = show_detection_grid([val[i] for i in range(8)], class_names=class_names, ncols=4,
                          titles=[f"image {i}: {len(val[i][1]['labels'])} object(s)" for i in range(8)])
fig.suptitle("Validation images with their ground-truth boxes (white, dashed)", y=1.02)
plt.show()

fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(sides.numpy(), bins=30, color="tab:blue")
ax.axvline(16, color="tab:red", linestyle="--", label="16 px: 'small'")
ax.set_xlabel("shorter side of the box (pixels)")
ax.set_ylabel("number of objects")
ax.set_title("Object sizes in the val split")
ax.legend()
plt.show()

# %% [markdown]
# ## 4. Bring your own data — and what happens when it is broken
#
# `CocoDetection` reads *any* COCO-format folder. It checks everything as it loads, and when something is wrong it says **which file**, **what is wrong** and **how to fix it** — instead of crashing three hours into training with an `IndexError`. Here we write a small dataset, break one box on purpose, and read the message:

# %% tags=["expected-error"]
import json
import tempfile

from course_utils import DatasetError
from course_utils.data import write_coco_split

with tempfile.TemporaryDirectory() as tmp:
    ann_file = write_coco_split(tmp, seeds=[1, 2])
    coco = json.loads(ann_file.read_text())
    coco["annotations"][0]["bbox"] = [10, 10, 0, 25]  # a box with zero width
    ann_file.write_text(json.dumps(coco))
    try:
        CocoDetection(ann_file)
    except DatasetError as err:
        print("DatasetError:", str(err).replace(tmp, "<tmp>"))

# %% [markdown]
# The same goes for malformed JSON, missing or corrupt image files, boxes outside the image and unknown category ids (see `tests/test_data.py` for each case).
#
# **Three splits, three jobs.** *Train* is what the model learns from. *Val* is what we look at while developing — every figure and every choice (learning rate, epochs…) in the notebooks uses it. *Test* is touched only by the benchmark scripts, to report a number that no choice was tuned on.
#
# The *train* split is not shipped: `SyntheticShapes(n, seed)` draws it on the fly, deterministically from the seed, so every learner trains on identical images.

# %% [markdown]
# ## 5. A live widget
#
# Later notebooks let you drag a slider and watch a clip threshold or a bit width change a detector. They all use `course_utils.widgets.interactive_figure`. Try it: pick a seed and see the scene it generates.
#
# > **Widgets not showing?** Widgets need a live kernel (run the cell) in JupyterLab, Jupyter Notebook 7 or VS Code. On GitHub or in a static export you see a picture of the default setting instead, and in a plain terminal a one-line text note — the output carries all three.

# %%
# NBVAL_IGNORE_OUTPUT
import ipywidgets as widgets

from course_utils import render_scene
from course_utils.widgets import interactive_figure


def scene_figure(seed: int = 0, show_boxes: bool = True):
    pixels, objects = render_scene(seed)  # note: render_scene's "bbox" is xyxy (corners), unlike the COCO file
    fig, ax = plt.subplots(figsize=(3.5, 3.5))
    ax.imshow(pixels)
    if show_boxes:
        from course_utils.viz import draw_boxes
        draw_boxes(ax, torch.tensor([o["bbox"] for o in objects]), "white",
                   [CATEGORIES[o["category_id"] - 1]["name"] for o in objects])
    ax.set_title(f"seed {seed}: {len(objects)} object(s)")
    ax.set_axis_off()
    return fig


interactive_figure(
    scene_figure,
    description="Choose a seed; the same seed always gives the same scene.",
    seed=widgets.IntSlider(value=0, min=0, max=50, description="seed"),
    show_boxes=widgets.Checkbox(value=True, description="show boxes"),
)

# %% [markdown]
# ## 6. Exercises
#
# Each exercise is a function for you to complete, followed by a check. Until you write it, the check says `❌ Not yet` — the notebook still runs. Solutions: `solutions/ex00_setup_and_tour.py`.
#
# **Exercise 1 — box area.** Complete `box_area` for boxes in xyxy format, shape `(N, 4)` → `(N,)`.
# Hint: width is `x2 - x1` (no `+ 1`: COCO and torchvision treat coordinates as continuous).

# %%
from course_utils.exercises import check_box_area, check_xywh_to_xyxy


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError


check_box_area(box_area)


# %% [markdown]
# **Exercise 2 — COCO boxes to corners.** COCO files store `[x, y, width, height]` with `(x, y)` the *top-left* corner. Complete `xywh_to_xyxy`, shape `(N, 4)` → `(N, 4)`.

# %%
def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError


check_xywh_to_xyxy(xywh_to_xyxy)

# %% [markdown]
# ## Takeaways
#
# * The course runs offline on a CPU; `get_device()` uses a GPU when there is one.
# * Detection samples are `(image, target)` with `boxes` in xyxy and `labels` `1…K`, as in torchvision.
# * `CocoDetection` reads any COCO folder and fails early with a message that names the file and the fix.
# * Widgets have a static fallback, so every notebook reads well on the web too.
#
# **Next:** `01_detection_basics` — IoU, anchors, non-maximum suppression and mAP, each built from scratch and checked against the libraries.
#
# *Run all notebooks without a browser:* `make headless` (prints how long each one took).
