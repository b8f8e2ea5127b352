# %% [markdown]
# # 00 · Setup and tour
#
# **Efficient Detection Course** — how to make object detectors small and fast, on a laptop CPU.
#
# **You will learn to**
# 1. check your environment (no GPU needed);
# 2. find your way around the notebooks, `course_utils` and the exercises;
# 3. load the course dataset and read its boxes;
# 4. use a live widget.

# %% [markdown]
# > **Terms** (English–中文 in the [glossary](../docs/glossary.md))
# > * **object detection:** finding each object in an image: its box, class and score. A **detector** does it.
# > * **box formats:** **xyxy** stores the top-left and bottom-right corners `(x1, y1, x2, y2)`; **xywh** the top-left corner, width and height.
# > * **ground truth:** an image's correct boxes and classes, from its **annotation** file.
# > * **widget:** a control, such as a slider, that redraws a figure.
#
# *Time: about 35 minutes. Prerequisites: Python and a little PyTorch.*

# %% [markdown]
# ## 1. How the course works
#
# | notebook | topic | guided time |
# |---|---|---|
# | `00_setup_and_tour` | setup, data, widgets | 35 min |
# | `01_detection_basics` | boxes, and scoring a detector | 55 min |
# | `02_training_a_tiny_detector` | one training loop for the course | 45 min |
# | `03_gradient_clipping` | capping exploding gradients | 50 min |
# | `04_quantization_math` | 8-bit integers (int8): the math | 55 min |
# | `05_qat_and_int8` | a real int8 model, and which runtime | 55 min |
# | `06_knowledge_distillation` | a small model learns from a big one | 55 min |
# | `07_pruning` | removing weights: is it faster? | 50 min |
# | `08_capstone` | all techniques, measured alike | 40 min |
# | `09_integer_inference` | int8 arithmetic by hand | 50 min |
# | `10_your_own_data` | your own data, several processes | 40 min |
# | `11_when_int8_goes_wrong` | int8 failures, repaired | 45 min |
#
# The code you call lives in `course_utils/`. `course_utils.box_iou??` in a cell shows a function's source.

# %% [markdown]
# ## 2. Check the environment

# %% tags=["nbval-ignore-output"]
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
# `get_device()` returns `cuda` (PyTorch's name for an NVIDIA GPU) when there is one, otherwise `cpu`. Every notebook uses it, so the same code runs on either.

# %% [markdown]
# ## 3. The dataset
#
# The course ships its own dataset, **synthetic shapes**: circles, squares and triangles on cluttered, noisy backgrounds. Objects can be as small as about 8 pixels and can hide each other.
#
# The files use the standard **COCO format**: a folder of images plus one JSON file listing the `images`, their `annotations` (boxes in xywh) and the `categories`.

# %% [markdown]
# **Three splits, three jobs.**
# * *Train*: what the model learns from. `SyntheticShapes(n, seed)` draws it on the fly from a **seed** (the number that starts a random generator), so every learner gets the same images.
# * *Val*: for development; every figure and choice in the notebooks uses it.
# * *Test*: only the benchmark scripts use it, to report a number that no choice was tuned on.

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
# Each sample is `(image, target)`, as in torchvision: `image` is a float tensor `(3, H, W)` in `[0, 1]`; `target["boxes"]` is `(N, 4)` in xyxy; `target["labels"]` holds class numbers `1…K` (torchvision reserves 0 for "background").
#
# Let us count the split.

# %% tags=["nbval-check-output"]
from collections import Counter

boxes = torch.cat([val[i][1]["boxes"] for i in range(len(val))])
labels = torch.cat([val[i][1]["labels"] for i in range(len(val))])
per_image = Counter(len(val[i][1]["labels"]) for i in range(len(val)))
sides = torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
print("objects:", len(labels))
print("per class:", {class_names[k - 1]: int((labels == k).sum()) for k in range(1, 4)})
print("objects per image:", dict(sorted(per_image.items())))
print(f"small objects (shorter side < 16 px): {int((sides < 16).sum())}")

# %% [markdown]
# In the histogram, each object left of the red line is small: 249 of the 638 counted above.

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
# ## 4. A live widget
#
# Later notebooks let you drag a slider and watch a detector change. Try it.
#
# > **Widget not showing?** Run the cell in JupyterLab, Jupyter Notebook 7 or VS Code. On GitHub you see a picture instead.

# %% tags=["nbval-ignore-output"]
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
# ## 5. Exercises
#
# Each exercise is a function to complete, followed by a check. Until you write it, the check says `✗ Not yet`; the notebook still runs. Solutions: `solutions/ex00_setup_and_tour.py`.
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
# * The course runs on a CPU; `get_device()` uses a GPU when there is one.
# * Detection samples are `(image, target)`, with `boxes` in xyxy and `labels` `1…K`.
# * Choose on *val*, report on *test*.
#
# **Next:** `01_detection_basics`.

# %% [markdown]
# ## Going deeper
#
# These parts are optional: nothing in the core path depends on them. They reuse the variables above, so run the core first.

# %% [markdown]
# ### How the course is built
#
# * Every notebook has the same rhythm: objectives → intuition → formula → code → experiment with a figure → exercises → takeaways. The optional parts come last, under *Going deeper*.
# * Every `course_utils` function states its formula and tensor shapes in its docstring. Its tests compare it with a reference library (torchvision, pycocotools, PyTorch itself).
# * Exercises call a `check_…` function from `course_utils.exercises`, which runs your code and says what is wrong. The solutions sit apart in `solutions/`, so a teacher can hand out the notebooks alone.
# * To run every notebook without a browser: `make headless`. It prints how long each one took.

# %% [markdown]
# ### The dataset's size
#
# Two 200-image splits, *val* and *test*, under 4 MB in all, in `data/`. Each image holds 1–6 objects. Nothing is downloaded.

# %% [markdown]
# ### When your own data is broken
#
# `CocoDetection` reads *any* COCO-format folder. It checks everything as it loads. When something is wrong, it says **which file**, **what is wrong** and **how to fix it**. Without these checks, a broken box might crash training hours later with an `IndexError`.
#
# Here we write a small dataset, break one box on purpose, and read the message:

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
# The loader also catches malformed JSON, missing or corrupt image files, boxes outside the image and unknown category ids. `tests/test_data.py` has one case for each.

# %% [markdown]
# ### How a widget shows without a live kernel
#
# A widget needs a **kernel**: the Python process that runs the notebook's cells. `interactive_figure` therefore gives its output three versions, and each front end shows the richest one it understands:
# * the live controls, in JupyterLab, Jupyter Notebook 7 or VS Code after you run the cell;
# * a picture of the default setting, on GitHub or in a static export;
# * a one-line text note, in a plain terminal.
