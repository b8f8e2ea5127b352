# %% [markdown]
# # 01 · Detection basics: boxes, IoU, anchors, NMS and mAP
#
# Before shrinking a detector, we must know what it outputs and how to score it.
#
# **You will learn to**
# 1. convert between box formats and compute **IoU**;
# 2. place **anchors** and encode boxes as offsets from them;
# 3. remove duplicate detections with **NMS**;
# 4. compute COCO **mAP** step by step, equal to pycocotools (the official COCO scorer).

# %% [markdown]
# > **Terms**
# > * **ground truth:** the annotated, true boxes and classes.
# > * **detection:** a predicted box with a class and a **score** (the model's confidence).
# > * **feature map:** a convolutional layer's output: a grid with a vector of numbers per position (**cell**).
# > * **stride:** how many image pixels one cell spans.
#
# *Time: about 55 minutes. Unfamiliar term? See the [glossary](../docs/glossary.md) (English–中文).*

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
import torchvision

from course_utils import CocoDetection, box_convert, box_iou, nms
from course_utils.viz import draw_boxes, show_detections

torch.manual_seed(0)
val = CocoDetection("../data/val/annotations.json")
class_names = [c["name"] for c in val.categories]

# %% [markdown]
# ## 1. Three ways to write a box
#
# * `xyxy`: top-left `(x1, y1)`, bottom-right `(x2, y2)` (torchvision);
# * `xywh`: top-left `(x, y)`, width, height (COCO files);
# * `cxcywh`: centre `(cx, cy)`, width, height (box coding, section 3).
#
# `box_convert` converts between them, as torchvision does:

# %% tags=["nbval-check-output"]
box = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # xyxy
for fmt in ("xywh", "cxcywh"):
    print(f"{fmt:7s}", box_convert(box, "xyxy", fmt).tolist())
all_boxes = torch.cat([val[i][1]["boxes"] for i in range(20)])
for a in ("xyxy", "xywh", "cxcywh"):
    for b in ("xyxy", "xywh", "cxcywh"):
        assert torch.allclose(box_convert(all_boxes, a, b), torchvision.ops.box_convert(all_boxes, a, b))
print("box_convert equals torchvision.ops.box_convert for all 9 format pairs")

# %% [markdown]
# ## 2. Intersection over union
#
# How well does a predicted box $P$ cover a ground-truth box $G$? Divide their shared area by the area they cover together:
#
# $$\mathrm{IoU}(P, G) = \frac{|P \cap G|}{|P| + |G| - |P \cap G|} \in [0, 1].$$
#
# The overlap is itself a box: top-left = the *larger* of the two top-left corners, bottom-right = the *smaller* of the two bottom-right corners. A negative width or height means no overlap: clamp it to 0. `box_iou` computes all $N \times M$ pairs at once:

# %% tags=["nbval-check-output"]
a, b = all_boxes[:12], all_boxes[5:20]
print("shape:", tuple(box_iou(a, b).shape))
print("max |ours - torchvision|:", (box_iou(a, b) - torchvision.ops.box_iou(a, b)).abs().max().item())

# %% [markdown]
# ## 3. Anchors and box coding
#
# A detector like notebook 02's predicts boxes at every cell of a feature map. Each cell owns a few **anchors**: fixed reference boxes. The network predicts *offsets* from an anchor: small numbers, easier to learn than raw coordinates.
#
# `make_anchors` puts one anchor per size $s$ and aspect ratio $r = h/w$ at every cell: width $s/\sqrt{r}$, height $s\sqrt{r}$. It matches torchvision:

# %% tags=["nbval-check-output"]
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from course_utils import decode_boxes, encode_boxes, make_anchors

stride, sizes, ratios = 8, (16, 32), (0.5, 1.0, 2.0)
anchors_ours = make_anchors((16, 16), stride, sizes, ratios)  # a 128x128 image at stride 8
generator = AnchorGenerator(sizes=(sizes,), aspect_ratios=(ratios,))
images = ImageList(torch.zeros(1, 3, 128, 128), [(128, 128)])
theirs = generator(images, [torch.zeros(1, 1, 16, 16)])[0]
print("anchors:", tuple(anchors_ours.shape), "= 16 x 16 cells x", len(sizes) * len(ratios), "per cell")
print("equal to torchvision AnchorGenerator:", torch.equal(anchors_ours, theirs))

# %%
fig, ax = plt.subplots(figsize=(4.5, 4.5))
image, target = val[3]
ax.imshow(image.permute(1, 2, 0))
cell = (6 * 16 + 7) * len(sizes) * len(ratios)  # the anchors of cell (row 6, column 7)
draw_boxes(ax, anchors_ours[cell : cell + len(sizes) * len(ratios)], "yellow")
centres = (anchors_ours[:, :2] + anchors_ours[:, 2:]) / 2
ax.scatter(centres[:, 0], centres[:, 1], s=2, c="white")
for edge in range(0, 129, stride):  # the cell grid: torchvision centres anchors on the cells' top-left corners
    ax.axhline(edge, color="white", lw=0.3, alpha=0.4), ax.axvline(edge, color="white", lw=0.3, alpha=0.4)
ax.set_title("6 anchors at one cell (yellow); white dots: anchor\ncentres, on cell corners as in torchvision")
ax.set_axis_off()
plt.show()

# %% [markdown]
# **Box coding.** An anchor with centre $(x_a, y_a)$ and size $(w_a, h_a)$ turns a box with centre $(x_c, y_c)$ and size $(w, h)$ into four offsets:
#
# $$d_x = \frac{x_c - x_a}{w_a},\quad d_y = \frac{y_c - y_a}{h_a},\quad d_w = \log\frac{w}{w_a},\quad d_h = \log\frac{h}{h_a}.$$
#
# The log makes "twice as wide" and "half as wide" symmetric. Decoding inverts this. Both match torchvision:

# %% tags=["nbval-check-output"]
from torchvision.models.detection._utils import BoxCoder

gt_boxes = all_boxes[:10]
anchors = anchors_ours[torch.randint(len(anchors_ours), (10,))]
deltas = encode_boxes(gt_boxes, anchors)
coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
print("encode equals BoxCoder.encode_single:", torch.allclose(deltas, coder.encode_single(gt_boxes, anchors), atol=1e-5))
print("decode equals BoxCoder.decode_single:", torch.allclose(decode_boxes(deltas, anchors), coder.decode_single(deltas, anchors), atol=1e-4))
print("decode(encode(box)) == box:", torch.allclose(decode_boxes(deltas, anchors), gt_boxes, atol=1e-4))

# %% [markdown]
# ## 4. Non-maximum suppression
#
# One object makes several neighbouring cells fire, so the raw output holds near-duplicates. **Post-processing** cleans it:
#
# 1. **decode** offsets into boxes; **clip the boxes** to the image;
# 2. drop detections scoring below a threshold (e.g. 0.05);
# 3. **non-maximum suppression (NMS)**: keep the highest-scoring box, remove every box whose IoU with it exceeds a threshold (e.g. 0.5), repeat with the next survivor;
# 4. keep the top *k* (e.g. 100 per image).
#
# NMS runs per class, so a circle never suppresses a square.

# %%
g = torch.Generator().manual_seed(0)
image, target = val[11]
gt_boxes = target["boxes"]
# 12 noisy copies of each ground-truth box, with random scores: what a raw detector emits
raw = gt_boxes.repeat_interleave(12, 0)
size = (raw[:, 2:] - raw[:, :2]).repeat(1, 2)
raw = raw + torch.randn(raw.shape, generator=g) * 0.12 * size
scores = torch.rand(len(raw), generator=g)
keep = nms(raw, scores, iou_threshold=0.5)
assert torch.equal(keep, torchvision.ops.nms(raw, scores, 0.5))
print(f"{len(raw)} raw boxes for {len(gt_boxes)} objects -> {len(keep)} after NMS "
      "(torchvision.ops.nms keeps the same indices, same order)")

fig, axes = plt.subplots(1, 2, figsize=(8, 4))
for ax, boxes, title in ((axes[0], raw, f"before NMS: {len(raw)} boxes"), (axes[1], raw[keep], f"after NMS: {len(keep)} boxes")):
    ax.imshow(image.permute(1, 2, 0))
    draw_boxes(ax, boxes, "yellow", linewidth=0.8)
    draw_boxes(ax, gt_boxes, "white", linestyle="--")
    ax.set_title(title)
    ax.set_axis_off()
plt.show()

# %% [markdown]
# NMS kept more boxes than objects: a copy whose IoU with every kept box is ≤ 0.5 survives. A lower threshold removes more copies but merges overlapping objects.

# %% [markdown]
# ## 5. Mean average precision, step by step
#
# **mAP** (mean average precision) scores a detector's ranked detections with one number. We learn it on a **pretend detector** that finds most objects with slightly wrong boxes, sometimes twice, and adds false alarms.

# %%
from course_utils.metrics import (
    IOU_THRESHOLDS,
    RECALL_THRESHOLDS,
    match_detections,
    mean_average_precision,
    precision_at_recall,
    pycocotools_map,
    simulate_detections,
)

targets = [val[i][1] for i in range(len(val))]
preds = simulate_detections(targets, num_classes=3, seed=0)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.5))
for ax, i in zip(axes, (0, 1, 2)):
    show_detections(val[i][0], targets[i], preds[i], class_names, score_threshold=0.0, ax=ax, title=f"image {i}")
fig.suptitle("Pretend detections (coloured, with scores) vs ground truth (white, dashed)")
plt.show()

# %% [markdown]
# **Step 1 — match.** Fix a class and an IoU threshold *t*. In each image, take the detections by decreasing score. Each claims the unclaimed ground truth it overlaps most, if that IoU ≥ *t*: a **true positive (TP)**. Otherwise it is a **false positive (FP)**: a duplicate, a bad box or a false alarm.

# %% tags=["nbval-check-output"]
cls = 3  # triangles, in image 2 (shown on the right above)
pred, target = preds[2], targets[2]
d = pred["labels"] == cls
order = torch.argsort(pred["scores"][d], descending=True)
ious = box_iou(pred["boxes"][d][order], target["boxes"][target["labels"] == cls]).numpy()
print("IoU of each triangle detection (rows, by score) with each true triangle (columns):")
print(np.round(ious, 2))
print("TP at IoU 0.50:", match_detections(ious, 0.5))
print("TP at IoU 0.90:", match_detections(ious, 0.9))

# %% [markdown]
# **Step 2 — precision and recall.** Pool the class's detections from *all* images, sort by score, and walk down the list. After the first $k$:
#
# $$\text{precision}_k = \frac{TP_k}{k}, \qquad \text{recall}_k = \frac{TP_k}{\#\text{ground truths}}.$$
#
# Precision: the share of detections that are right. Recall: the share of objects found.

# %% [markdown]
# **Step 3 — interpolate.** Replace each precision by the best precision at *this or any higher* recall: the **envelope**. Then read it at the 101 recall points $r = 0, 0.01, \dots, 1$: for each $r$, take the envelope at the **first** detection whose recall is $\ge r$, or 0 if no detection reaches $r$. **AP** (average precision) is the mean of those 101 values.

# %%
def pooled_tp(cls: int, t: float) -> tuple[np.ndarray, int]:
    """TP flags of all detections of class `cls` (sorted by score) and the number of ground truths."""
    flags, scores, num_gt = [], [], 0
    for pred, target in zip(preds, targets):
        d = pred["labels"] == cls
        order = torch.argsort(pred["scores"][d], descending=True, stable=True)
        gt = target["boxes"][target["labels"] == cls]
        flags.append(match_detections(box_iou(pred["boxes"][d][order], gt).numpy(), t))
        scores.append(pred["scores"][d][order].numpy())
        num_gt += len(gt)
    order = np.argsort(-np.concatenate(scores), kind="mergesort")
    return np.concatenate(flags)[order], num_gt


t = 0.75  # a strict threshold: more false positives, so the envelope visibly differs from the raw curve
is_tp, num_gt = pooled_tp(cls=1, t=t)
tp = np.cumsum(is_tp)
precision = tp / np.arange(1, len(is_tp) + 1)
recall = tp / num_gt
envelope = np.maximum.accumulate(precision[::-1])[::-1]
sampled = precision_at_recall(is_tp, num_gt)

fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(recall, precision, color="tab:orange", linewidth=3, alpha=0.5, label="raw precision")
ax.plot(recall, envelope, color="tab:blue", label="envelope")
ax.scatter(RECALL_THRESHOLDS, sampled, s=6, color="tab:red", zorder=3, label="101 sampled points")
ax.set_xlabel("recall")
ax.set_ylabel("precision")
ax.set_title(f"Circles, IoU {t}: AP = mean of red points = {sampled.mean():.3f}")
ax.legend()
ax.grid(alpha=0.3)
plt.show()


# %% [markdown]
# **Step 4 — average.** COCO's **mAP** (written AP@[.5:.95]) averages AP over the classes *and* ten IoU thresholds 0.50, 0.55, …, 0.95. **mAP@0.5** uses only the IoU threshold 0.5, **mAP@0.75** only 0.75. Our pretend boxes are sloppy, so the strict numbers drop. pycocotools agrees:

# %% tags=["nbval-check-output"]
ours = mean_average_precision(preds, targets)
reference = pycocotools_map(preds, targets)
for key in ("map", "map_50", "map_75"):
    print(f"{key:7s} ours {ours[key]:.6f}   pycocotools {reference[key]:.6f}   |diff| {abs(ours[key] - reference[key]):.1e}")
for c, ap in ours["ap_per_class"].items():
    print(f"AP {class_names[c - 1]:8s} ours {ap:.6f}   pycocotools {reference['ap_per_class'][c]:.6f}")

# %% [markdown]
# ## 6. Exercises
#
# ### Exercise 1 — write IoU yourself
#
# Complete `my_box_iou(boxes1, boxes2)`: shapes `(N, 4)` and `(M, 4)` in xyxy → `(N, M)`. Work from the formula above. Once you pass, compare with the course's: `box_iou??` in a cell shows it. Solutions: `solutions/ex01_detection_basics.py`.

# %%
from course_utils.exercises import check_average_precision, check_box_iou, check_nms


def my_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError


check_box_iou(my_box_iou)

# %% [markdown]
# ### Exercise 2 — write NMS yourself
#
# Complete `my_nms(boxes, scores, iou_threshold)`, returning the kept indices (int64) in decreasing score order. A box is suppressed when its IoU with a kept box is **strictly greater** than `iou_threshold`. You may use `box_iou` (but not `nms`). Once you pass, `nms??` shows the course's.
#
# *Sanity check:* boxes `[[0,0,10,10], [1,1,11,11], [20,20,30,30]]` with scores `[0.9, 0.8, 0.7]` and threshold 0.5 keep `[0, 2]`.

# %%
def my_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    # YOUR CODE HERE
    raise NotImplementedError


check_nms(my_nms)

# %% [markdown]
# ### Exercise 3 — AP from a ranking
#
# Complete `my_average_precision(is_tp, num_gt)`: `is_tp` is a boolean array of detections sorted by score, `num_gt` the number of ground truths. Return COCO's 101-point interpolated AP, following steps 2 and 3 above (without calling `precision_at_recall`).
#
# *Sanity checks:* `is_tp = [True, False, True]`, `num_gt = 2` gives AP ≈ 0.8350; `[True, True, False, False]` with `num_gt = 4` gives ≈ 0.5050.

# %%
def my_average_precision(is_tp: np.ndarray, num_gt: int) -> float:
    # YOUR CODE HERE
    raise NotImplementedError


check_average_precision(my_average_precision)


# %% [markdown]
# ## Takeaways
#
# * Boxes come as xyxy, xywh (COCO) or cxcywh.
# * IoU = shared area ÷ area covered together.
# * A detector predicts offsets from anchors; post-processing is **decode → score threshold → NMS → top-k**.
# * mAP: match by IoU → precision and recall → interpolate → average over classes and IoU thresholds.
#
# **Next:** `02_training_a_tiny_detector`: train a detector and score it with this mAP.

# %% [markdown]
# ## Going deeper
#
# These parts are optional: nothing in the core path depends on them. They reuse the variables above, so run the core first.
#
# * **How strict is IoU?** A figure of IoU against shift and shrinkage.
# * **Two conventions that differ between libraries**: the `+1` in box widths, and where an anchor sits.
# * **How the course's NMS works**, and NMS with several classes.
# * **Box clipping is not gradient clipping.**
# * **Why the envelope**, and why the circles' AP differs from the table's.
# * **Precision–recall curves for every class**, at three IoU thresholds.
# * **COCO keeps 100 detections per image and class**, not per image.
# * **How the course checks its mAP** against pycocotools.

# %% [markdown]
# ### How strict is IoU?
#
# Slide a copy of a box sideways, or shrink it, and watch IoU fall. A shift of 1/6 of the box's width already drops IoU to ≈ 0.71, below the strict threshold 0.75. So strict thresholds punish sloppy boxes. Small objects suffer most: one pixel is a big part of them.

# %%
gt = torch.tensor([[0.0, 0.0, 60.0, 60.0]])
shifts = torch.linspace(0, 60, 61)
iou_shift = box_iou(gt + torch.stack([shifts, 0 * shifts, shifts, 0 * shifts], 1), gt)[:, 0]
scales = torch.linspace(0.2, 1.0, 41)
iou_scale = box_iou(gt * scales[:, None], gt)[:, 0]

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(shifts / 60, iou_shift)
axes[0].set_xlabel("horizontal shift (fraction of box width)")
axes[0].set_ylabel("IoU with the original box")
axes[1].plot(scales, iou_scale)
axes[1].set_xlabel("side of the shrunk box (fraction of original)")
axes[1].set_ylabel("IoU with the original box")
for ax in axes:
    for t, style in ((0.5, "--"), (0.75, ":")):
        ax.axhline(t, color="gray", linestyle=style, label=f"IoU = {t}")
    ax.legend()
    ax.grid(alpha=0.3)
fig.suptitle("IoU drops fast: shifted (left) and shrunk (right) copies of a 60x60 box")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Two conventions that differ between libraries
#
# **No `+1`.** Coordinates are continuous: a box from x=10 to x=30 is 20 pixels wide. The `+1` in some older code was Pascal VOC's convention, which counted pixel indices.
#
# **Where an anchor sits.** Like torchvision's `AnchorGenerator`, `make_anchors(feature_size, stride, sizes, aspect_ratios)` centres each cell's anchors on the cell's top-left corner, `(j·stride, i·stride)` for row *i* and column *j*. The detector of notebook 02 shifts them by half a stride, to the cell's centre.

# %% [markdown]
# ### How the course's NMS works
#
# `course_utils.boxes.nms` computes all pairwise IoUs once with `box_iou`. Then it walks the boxes by decreasing score, and each kept box marks the boxes it suppresses; the list of candidates never shrinks.
#
# For several classes, `batched_nms` shifts each class's boxes far apart, so boxes of different classes never overlap, and runs one plain NMS. torchvision uses the same trick.

# %% [markdown]
# ### Box clipping is not gradient clipping
#
# The only "clipping" in post-processing is **box clipping**: cutting boxes at the image border. It has nothing to do with *gradient* clipping, a training-time technique (notebook 03). At inference no gradients are computed and no weights change.

# %% [markdown]
# ### Why the envelope
#
# Step 3 replaces each precision by the best precision at this or any higher recall. If going further down the ranking finds more objects at better precision, the curve should get credit for it. The envelope also never rises as recall grows, so the curve has no zig-zags.
#
# The AP in the circles figure is for one class at IoU 0.75 only. The per-class APs in the table average over all ten IoU thresholds, lenient and strict, so they are different numbers.

# %% [markdown]
# ### Precision–recall curves for every class
#
# Each panel is one IoU threshold; each line is one class, with its AP in the legend. Compare the panels: at a stricter threshold, fewer of the pretend detector's sloppy boxes count as matches, so the curves sit lower and end at a lower recall.

# %%
from course_utils.viz import plot_pr_curves

plot_pr_curves(ours, class_names, iou_thresholds=(0.5, 0.75, 0.9))
plt.show()

# %% [markdown]
# ### COCO keeps 100 detections per image and class
#
# Step 4 of post-processing keeps the top *k* per image. COCO's evaluation applies its own cap of 100 (`maxDets`), and it is per image *and class*: for each image and each class, only the 100 highest-scoring detections are scored. pycocotools does this in `evaluateImg`, which runs once per image and class. `course_utils.metrics` keeps the top `max_detections` per image and class, the same rule.

# %% [markdown]
# ### How the course checks its mAP
#
# `tests/test_metrics.py` compares `mean_average_precision` with pycocotools on 60 random cases. They include images without objects, images without detections, duplicates, tied scores, and more than 100 detections of one class in one image, where the per-image-and-class cap changes the answer.
