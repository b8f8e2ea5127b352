"""Detectors: the course's tiny single-stage detector and a torchvision one.

Taught in: 02_training_a_tiny_detector.

:class:`TinyDetector` is written from scratch in the style of FCOS/RetinaNet,
small enough to train on a laptop CPU in a minute:

* **backbone** -- Conv-BN-ReLU blocks, four stride-2 stages (strides 2, 4, 8, 16);
* **neck** -- a two-level FPN: the stride-16 map is upsampled and added to the
  stride-8 map, so small objects see large context;
* **head** -- a shared conv tower, then per-location class logits (K) and box
  offsets (4) against one square anchor per location;
* **levels** (option, default 1) -- ``levels=2`` or ``3`` also predicts from the
  stride-16 (and a new stride-32) map, each with its own head and an anchor twice
  (four times) as large, for data whose objects are much larger than 32 px;
* **post-processing** -- decode offsets into boxes, score threshold, class-aware
  NMS, keep the top ``detections_per_image``.

``width`` scales every channel count and ``depth`` the number of extra blocks per
stage, so a large "teacher" and a small "student" come from one class.

Like torchvision detectors: ``model(images, targets)`` in train mode returns a
dict of losses; ``model(images)`` in eval mode returns a list of
``{"boxes", "scores", "labels"}`` dicts. Labels are ``1..num_classes``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss, nms

from .boxes import box_iou, decode_boxes, encode_boxes, make_anchors

__all__ = ["ConvBNReLU", "DigitsCNN", "TinyDetector", "quality_focal_loss", "build_torchvision_detector", "count_parameters"]


class ConvBNReLU(nn.Sequential):
    """``ReLU(BN(Conv(x)))`` -- the building block QAT later folds and quantizes (``activation="silu"`` or
    ``"hardswish"``: that activation instead of ReLU).

    With ``batch_norm=False`` it is ``ReLU(Conv(x))`` with a conv bias: a plain,
    normaliser-free block (notebook 03 shows why those explode more easily).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, kernel_size: int = 3, batch_norm: bool = True,
                 activation: str = "relu") -> None:
        conv = nn.Conv2d(c_in, c_out, kernel_size, stride, padding=kernel_size // 2, bias=not batch_norm)
        norm = nn.BatchNorm2d(c_out) if batch_norm else nn.Identity()
        super().__init__(conv, norm, ACTIVATIONS[_check_activation(activation)](inplace=True))


#: the activations a ConvBNReLU block can use (``activation=``): ReLU, or the smooth ones of YOLOv5+ (SiLU)
#: and MobileNetV3 (Hardswish) that notebook 11 quantizes
ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "hardswish": nn.Hardswish}


def _check_activation(activation: Any) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    return activation


#: the strides a TinyDetector can predict from: P3, P4, P5 (``levels`` takes the first 1, 2 or 3)
LEVEL_STRIDES = (8, 16, 32)


def _channels(base: int, width: float) -> int:
    """``base * width`` rounded to a multiple of 8 (at least 8)."""
    return max(8, int(round(base * width / 8)) * 8)


def _is_int(value: Any) -> bool:
    """An int (numpy ints too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A finite real number (numpy floats too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_detector_args(num_classes: Any, width: Any, depth: Any, anchor_scale: Any, center_radius: Any,
                         score_threshold: Any, nms_threshold: Any, detections_per_image: Any, levels: Any = 1) -> None:
    """Refuse constructor arguments that would build a broken detector or one that silently misbehaves."""
    if not (_is_int(levels) and 1 <= levels <= len(LEVEL_STRIDES)):
        raise ValueError(f"levels must be 1, 2 or 3 (predict from strides {LEVEL_STRIDES[:1]}, {LEVEL_STRIDES[:2]} or "
                         f"{LEVEL_STRIDES}), got {levels!r}; use levels=3 for objects much larger than 32 px")
    if not (_is_int(num_classes) and num_classes >= 1) or not (_is_real(width) and width > 0) or not (
            _is_int(depth) and depth >= 0):
        raise ValueError(f"need num_classes an int >= 1, width a finite number > 0, depth an int >= 0; "
                         f"got {num_classes!r}, {width!r}, {depth!r}")
    for name, value in (("anchor_scale", anchor_scale), ("center_radius", center_radius)):
        if not (_is_real(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    for name, value in (("score_threshold", score_threshold), ("nms_threshold", nms_threshold)):
        if not (_is_real(value) and 0 <= value <= 1):
            raise ValueError(f"{name} must be a number in [0, 1] (an IoU / a probability), got {value!r}")
    if not (_is_int(detections_per_image) and detections_per_image >= 1):
        raise ValueError(f"detections_per_image must be an int >= 1 (e.g. 100), got {detections_per_image!r}")


def check_images(x: Tensor) -> None:
    """Refuse a batch the detector would silently misread: not a (B, 3, H, W) floating tensor in [0, 1] terms.

    Checked: a tensor, 4-D; a floating dtype (uint8 images, e.g. from
    ``torchvision.io.read_image``, must be converted with ``img.float() / 255``); values within
    [-1, 2] (a 0..255 image passed as float would otherwise give no detections, silently);
    no NaN pixel (only outside training, where a NaN would otherwise silently
    give zero detections -- in training it surfaces as a non-finite loss).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"images must be a list of (3, H, W) tensors or a (B, 3, H, W) tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"images must be a list of (3, H, W) tensors or a (B, 3, H, W) tensor, got a tensor of shape "
                         f"{tuple(x.shape)}; for one image pass [image] or image[None]")
    if not x.is_floating_point():
        raise TypeError(f"images must be floating point with values in [0, 1], got dtype {x.dtype}; "
                        "convert with img.float() / 255")
    if x.shape[1] != 3:
        raise ValueError(f"images must have 3 (RGB) channels, got {x.shape[1]} (shape {tuple(x.shape)}); "
                         "for grey images repeat the channel: img.expand(3, -1, -1)")
    if x.numel():
        low, high = float(x.min()), float(x.max())
        if high > 2.0 or low < -1.0:  # [0, 1] images, with room for noise or augmentation beyond the range
            raise ValueError(f"images hold values from {low:g} to {high:g}; the detector reads [0, 1]. Images of 0..255 "
                             "must be divided by 255 (img.float() / 255)")


def _check_no_nan(x: Tensor) -> None:
    if bool(torch.isnan(x).any()):
        raise ValueError("images contain NaN pixels; every pixel must be a number in [0, 1] "
                         "(check the loading / normalisation step, e.g. torch.nan_to_num)")


def _stack_images(images: Tensor | list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """A (B, 3, H, W) batch from a list of images (or a batch tensor), with a clear error for an empty list."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("images is an empty list: pass at least one (3, H, W) image")
        if not all(isinstance(img, Tensor) for img in images):
            raise TypeError("images must be a list of (3, H, W) tensors")
        sizes = {tuple(img.shape) for img in images}
        if len(sizes) > 1:
            raise ValueError(f"images in one batch must have the same shape, got {sorted(sizes)}; resize them to one "
                             "size (the course's loaders do) or run them one at a time")
        return torch.stack(list(images))
    return images


def quality_focal_loss(logits: Tensor, quality: Tensor, beta: float = 2.0) -> Tensor:
    """Quality focal loss (Li et al. 2020, "Generalized Focal Loss"), summed.

    ``QFL(σ, y) = -|y - σ|^β · [y log σ + (1 - y) log(1 - σ)]`` with σ = sigmoid(logit).

    The target ``y`` is the IoU of the predicted box with its ground truth at
    positive locations (0 elsewhere), so the score learns to rank by box quality,
    which is what mAP@[.5:.95] rewards. Shapes: ``logits``, ``quality`` (N, K) -> ().
    """
    sigma = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, quality, reduction="none")
    return ((quality - sigma).abs().pow(beta) * bce).sum()


class TinyDetector(nn.Module):
    """A small single-stage anchor-based detector (see the module docstring).

    Args:
        num_classes: K, object classes (labels ``1..K``).
        width: channel multiplier (0.5 = small student, 2.0 = teacher).
        depth: extra Conv-BN-ReLU blocks per backbone stage.
        anchor_scale: anchor side = ``anchor_scale * stride`` pixels.
        center_radius: a location is positive for a box if its centre lies inside
            the box and within ``center_radius * stride`` of the box centre.
        batch_norm: use BatchNorm in every block (``False``: a plain stack, see notebook 03).
        levels: pyramid levels to predict from (1: stride 8 only, the course's default; 2: strides 8 and 16;
            3: strides 8, 16 and 32, with an extra backbone stage). Level ``l`` (stride ``s_l = 8·2^l``) has
            its own smooth conv and head and anchors of side ``anchor_scale · s_l``; a ground-truth box of
            side ``√(w·h)`` is learned only on level ``l* = clamp(round(log2(√(w·h) / (anchor_scale · 8))), 0,
            levels - 1)`` (the level whose anchor is nearest in log scale, as FPN's level rule).
        activation: every block's activation, ``"relu"`` (the course's), ``"silu"`` or ``"hardswish"``
            (notebook 11 compares how they quantize).
    """

    #: the finest (P3) stride; ``strides`` lists every level's
    stride = 8
    #: set by :func:`course_utils.distributed.prepare`: normalise the loss by the positives of all ranks
    num_pos_across_ranks = False

    def __init__(
        self,
        num_classes: int = 3,
        width: float = 1.0,
        depth: int = 1,
        anchor_scale: float = 4.0,
        center_radius: float = 1.5,
        score_threshold: float = 0.05,
        nms_threshold: float = 0.6,
        detections_per_image: int = 100,
        batch_norm: bool = True,
        levels: int = 1,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.activation = _check_activation(activation)
        _check_detector_args(num_classes, width, depth, anchor_scale, center_radius, score_threshold, nms_threshold,
                             detections_per_image, levels)
        num_classes, depth, detections_per_image = int(num_classes), int(depth), int(detections_per_image)
        self.num_classes = num_classes
        self.levels = int(levels)
        self.strides = LEVEL_STRIDES[: self.levels]
        self.anchor_scale = anchor_scale
        self.anchor_size = anchor_scale * self.stride
        self.center_radius = center_radius
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.detections_per_image = detections_per_image

        c1, c2, c3, c4 = (_channels(c, width) for c in (16, 32, 64, 128))
        neck = _channels(64, width)

        def block(c_in: int, c_out: int, stride: int = 1) -> ConvBNReLU:
            return ConvBNReLU(c_in, c_out, stride=stride, batch_norm=batch_norm, activation=activation)

        def stage(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(block(c_in, c_out, stride=2), *[block(c_out, c_out) for _ in range(depth)])

        self.stem = block(3, c1, stride=2)  # stride 2
        self.stage2 = stage(c1, c2)  # stride 4
        self.stage3 = stage(c2, c3)  # stride 8  -> FPN level P3
        self.stage4 = stage(c3, c4)  # stride 16 -> FPN level P4
        self.lateral3 = nn.Conv2d(c3, neck, 1)
        self.lateral4 = nn.Conv2d(c4, neck, 1)
        self.smooth = block(neck, neck)
        self.tower = nn.Sequential(block(neck, neck), block(neck, neck))
        self.cls_out = nn.Conv2d(neck, num_classes, 1)
        self.box_out = nn.Conv2d(neck, 4, 1)
        if self.levels == 3:  # one more stage for the stride-32 level
            self.stage5 = stage(c4, _channels(128, width))
            self.lateral5 = nn.Conv2d(_channels(128, width), neck, 1)
        # the coarser levels' own heads (a head shared across levels would share BatchNorm statistics between them)
        self.level_heads: nn.ModuleList | list[nn.ModuleDict] = []  # (not a module at levels=1: the default prints as before)
        if self.levels > 1:
            self.level_heads = nn.ModuleList(
                nn.ModuleDict({"smooth": block(neck, neck), "tower": nn.Sequential(block(neck, neck), block(neck, neck)),
                               "cls_out": nn.Conv2d(neck, num_classes, 1), "box_out": nn.Conv2d(neck, 4, 1)})
                for _ in range(self.levels - 1))
        self.batch_norm = batch_norm
        self._init_weights()

    def _init_weights(self) -> None:
        """The detector's own initialisation, on top of PyTorch's default for each layer."""
        outputs = [(self.cls_out, self.box_out)] + [(h["cls_out"], h["box_out"]) for h in self.level_heads]
        if not self.batch_norm:  # a plain ReLU stack needs He initialisation to keep signals alive
            last = {m for pair in outputs for m in pair}
            for m in self.modules():
                if isinstance(m, nn.Conv2d) and m not in last:
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        # Start every score at p = 0.01 so the many background locations do not
        # swamp the first steps (RetinaNet's prior initialisation).
        for cls_out, box_out in outputs:
            nn.init.constant_(cls_out.bias, -math.log((1 - 0.01) / 0.01))
            nn.init.normal_(box_out.weight, std=0.01)
            nn.init.zeros_(box_out.bias)

    def reset_parameters(self) -> "TinyDetector":
        """Re-initialise every weight in place, keeping the (possibly pruned) channel counts.

        Layers are reset in the order they were built, so after the same
        ``torch.manual_seed`` a full-size model gets exactly the weights of a
        fresh ``TinyDetector(...)``. Used for the "same shape, trained from
        scratch" control of pruning (Liu et al. 2019, "Rethinking the Value of
        Network Pruning"). Returns ``self``.
        """
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
                m.reset_parameters()
        self._init_weights()
        return self

    # ------------------------------------------------------------------ forward
    def pyramid(self, x: Tensor) -> list[Tensor]:
        """Backbone + neck, every level. Shapes: (B, 3, H, W) -> [(B, C, ⌈H/s⌉, ⌈W/s⌉) for s in ``strides``].

        Top-down FPN: ``p5 = lateral5(c5)``, ``p4 = lateral4(c4) [+ up(p5)]``, ``p3 = lateral3(c3) + up(p4)``
        (``up``: nearest-neighbour upsampling to the finer map's size); each level then has its own smooth conv.
        """
        x = self.stem(x - 0.5)  # centre pixels in [0, 1] around 0
        c3 = self.stage3(self.stage2(x))
        c4 = self.stage4(c3)
        p4 = self.lateral4(c4)
        p5 = None
        if self.levels == 3:
            p5 = self.lateral5(self.stage5(c4))
            p4 = p4 + F.interpolate(p5, size=c4.shape[-2:], mode="nearest")
        p3 = self.lateral3(c3) + F.interpolate(p4, size=c3.shape[-2:], mode="nearest")
        coarse = [p4, p5][: self.levels - 1]
        return [self.smooth(p3)] + [h["smooth"](p) for h, p in zip(self.level_heads, coarse)]

    def features(self, x: Tensor) -> Tensor:
        """Backbone + neck, the finest level. Shapes: (B, 3, H, W) -> (B, C, H/8, W/8)."""
        if self.levels > 1:
            return self.pyramid(x)[0]
        x = self.stem(x - 0.5)  # centre pixels in [0, 1] around 0
        c3 = self.stage3(self.stage2(x))
        c4 = self.stage4(c3)
        p3 = self.lateral3(c3) + F.interpolate(self.lateral4(c4), size=c3.shape[-2:], mode="nearest")
        return self.smooth(p3)

    def head(self, features: Tensor, level: int = 0) -> tuple[Tensor, Tensor]:
        """Per-location outputs of one level. Shapes: (B, C, h, w) -> logits (B, h*w, K), deltas (B, h*w, 4)."""
        if level == 0:
            tower, cls_out, box_out = self.tower, self.cls_out, self.box_out
        else:
            head = self.level_heads[level - 1]
            tower, cls_out, box_out = head["tower"], head["cls_out"], head["box_out"]
        t = tower(features)
        logits = cls_out(t).flatten(2).transpose(1, 2)
        deltas = box_out(t).flatten(2).transpose(1, 2)
        return logits, deltas

    def network(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Every level's outputs, concatenated finest level first (what ONNX export and int8 run).

        Shapes: (B, 3, H, W) -> logits (B, A, K), deltas (B, A, 4), ``A = Σ_s ⌈H/s⌉·⌈W/s⌉``.
        """
        if self.levels == 1:
            return self.head(self.features(x))
        outs = [self.head(f, level) for level, f in enumerate(self.pyramid(x))]
        return torch.cat([o[0] for o in outs], 1), torch.cat([o[1] for o in outs], 1)

    def level_sizes(self, image_size: tuple[int, int]) -> list[tuple[int, int]]:
        """Each level's grid for an image of ``image_size`` (H, W): ``(⌈H/s⌉, ⌈W/s⌉)`` per stride s
        (the stride-2 convs, padding 1, round up)."""
        height, width = image_size
        return [(-(-height // s), -(-width // s)) for s in self.strides]

    def anchors(self, feature_size: tuple[int, int], device: torch.device, level: int = 0) -> Tensor:
        """One square anchor per location of one level, centred on the cell. Shape: (h*w, 4) xyxy."""
        # make_anchors centres anchors on cell corners (torchvision); shift to centres.
        stride = self.strides[level]
        return (make_anchors(feature_size, stride, [self.anchor_scale * stride]) + stride / 2).to(device)

    def all_anchors(self, sizes: list[tuple[int, int]], device: torch.device) -> tuple[Tensor, Tensor]:
        """Every level's anchors concatenated (finest first) and each anchor's stride.
        Shapes: ``sizes`` one (h, w) per level -> (A, 4) xyxy, (A,)."""
        anchors = [self.anchors(size, device, level) for level, size in enumerate(sizes)]
        strides = [torch.full((len(a),), float(s), device=device) for a, s in zip(anchors, self.strides)]
        return torch.cat(anchors), torch.cat(strides)

    def _check_dtype(self, x: Tensor) -> None:
        """Outside autocast, the images' dtype must be the weights' (a float64 image in a float32 model is refused)."""
        weight = next(self.parameters(), None)
        if weight is not None and weight.is_floating_point() and x.dtype != weight.dtype and not torch.is_autocast_enabled(
                x.device.type):
            raise TypeError(f"images are {x.dtype} but the model's weights are {weight.dtype}; convert the images with "
                            f"img.to({weight.dtype}) (or the model with model.to(dtype))")

    def forward_raw(self, images: Tensor | list[Tensor]) -> dict[str, Tensor]:
        """Raw network outputs (what distillation and quantization act on).

        Returns ``{"logits": (B, A, K), "deltas": (B, A, 4), "anchors": (A, 4),
        "features": (B, C, h, w)}`` (``features``: the neck's output, A = h·w,
        h = ceil(H / 8), w = ceil(W / 8)). With ``levels > 1``, A counts every level's
        locations (finest first), ``features`` is the finest level's and ``"strides"`` (A,)
        gives each anchor's stride. Checked (:func:`check_images`): a 4-D
        floating batch (uint8 is refused: convert with ``img.float() / 255``) and,
        in eval mode, no NaN pixel.
        """
        x = _stack_images(images)
        check_images(x)
        self._check_dtype(x)
        if not self.training:
            _check_no_nan(x)
        if self.levels == 1:
            feats = self.features(x)
            logits, deltas = self.head(feats)
            return {"logits": logits, "deltas": deltas, "anchors": self.anchors(tuple(feats.shape[-2:]), x.device),
                    "features": feats}
        maps = self.pyramid(x)
        outs = [self.head(f, level) for level, f in enumerate(maps)]
        anchors, strides = self.all_anchors([tuple(f.shape[-2:]) for f in maps], x.device)
        return {"logits": torch.cat([o[0] for o in outs], 1), "deltas": torch.cat([o[1] for o in outs], 1),
                "anchors": anchors, "strides": strides, "features": maps[0]}

    def forward(self, images: Tensor | list[Tensor], targets: list[dict[str, Tensor]] | None = None,
                return_raw: bool = False) -> Any:
        """Training: the loss dict (and the raw outputs, with ``return_raw=True``: what hooks read when the
        model runs inside DistributedDataParallel). Eval: detections per image."""
        raw = self.forward_raw(images)
        if self.training:
            if targets is None:
                raise ValueError("TinyDetector in train mode needs targets; call model.eval() to get detections")
            losses = self.loss(raw, targets)
            return (losses, raw) if return_raw else losses
        size = images[0].shape[-2:] if isinstance(images, (list, tuple)) else images.shape[-2:]
        return self.postprocess(raw, tuple(size))

    # ------------------------------------------------------------------ training
    @torch.no_grad()
    def assign(self, anchors: Tensor, gt_boxes: Tensor, strides: Tensor | None = None) -> Tensor:
        """Match each location to at most one ground-truth box (centre sampling).

        A location is a candidate for a box if its centre is inside the box and
        within ``center_radius * stride`` of the box centre; the cell containing
        the box centre is always a candidate (so tiny boxes get one). Ties go to
        the smallest box. With ``strides`` (A,) (several levels), a box is a
        candidate only on its level ``l*`` (see the class docstring) and each
        location uses its own stride. Shapes: anchors (A, 4), gt_boxes (G, 4) -> (A,) int64,
        the matched box index or -1 for background.
        """
        if len(gt_boxes) == 0:
            return torch.full((len(anchors),), -1, dtype=torch.int64, device=anchors.device)
        ctr = (anchors[:, :2] + anchors[:, 2:]) / 2  # (A, 2)
        gt_ctr = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2  # (G, 2)
        inside = ((ctr[:, None] > gt_boxes[None, :, :2]) & (ctr[:, None] < gt_boxes[None, :, 2:])).all(-1)
        offset = (ctr[:, None] - gt_ctr[None]).abs()  # (A, G, 2)
        if strides is None:
            near = (offset <= self.center_radius * self.stride).all(-1)
            own_cell = (offset <= self.stride / 2).all(-1)
            candidate = (inside & near) | own_cell
        else:
            stride = strides.to(offset)[:, None, None]  # (A, 1, 1)
            near = (offset <= self.center_radius * stride).all(-1)
            own_cell = (offset <= stride / 2).all(-1)
            side = ((gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])).clamp(min=1e-6).sqrt()
            level = torch.log2(side / (self.anchor_scale * self.stride)).round().clamp(0, self.levels - 1)  # (G,)
            on_level = strides.to(offset)[:, None] == self.stride * 2 ** level[None]  # (A, G)
            candidate = ((inside & near) | own_cell) & on_level
        area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
        cost = torch.where(candidate, area[None].expand_as(candidate), torch.full_like(candidate, math.inf, dtype=area.dtype))
        best_cost, best = cost.min(dim=1)
        return torch.where(torch.isfinite(best_cost), best, torch.full_like(best, -1))

    def _grid_extent(self, anchors: Tensor) -> Tensor:
        """(2,) the right and bottom edges of the finest anchor grid (>= the image's width and height), on the
        anchors' device (the finest level's anchors come first)."""
        centres = (anchors[:, :2] + anchors[:, 2:]) / 2
        if self.levels > 1:
            finest = (anchors[:, 2] - anchors[:, 0]) <= (anchors[0, 2] - anchors[0, 0])
            centres = centres[finest]
        return centres.amax(0) + self.stride / 2

    def check_targets(self, targets: list[dict[str, Tensor]], batch_size: int, extent: Tensor | None = None) -> None:
        """Refuse targets the loss would silently misread, with a ValueError naming the image and the fix.

        Labels must be integers in ``1..num_classes`` (``labels - 1`` indexes the class
        logits, so a label 0 would train class K and a label K + 1 would crash); boxes
        (G, 4) xyxy must be finite with ``x2 > x1`` and ``y2 > y1`` (the box targets
        take ``log(w)``); with ``extent`` (the grid's (W, H)), every box must overlap
        ``[0, W] x [0, H]`` -- one entirely outside gets no location and would be dropped
        silently. One batched test in the common case (a single host sync).
        """
        if len(targets) != batch_size:
            raise ValueError(f"got {len(targets)} targets for {batch_size} images; need one target dict per image")
        for i, target in enumerate(targets):
            if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
                raise ValueError(f"targets[{i}] must be a dict with 'boxes' (G, 4) and 'labels' (G,); "
                                 f"got {type(target).__name__} with keys {list(target) if isinstance(target, dict) else None}")
            boxes, labels = target["boxes"], target["labels"]
            if not isinstance(boxes, Tensor) or not isinstance(labels, Tensor):
                raise ValueError(f"targets[{i}]: 'boxes' and 'labels' must be tensors, got "
                                 f"{type(boxes).__name__} and {type(labels).__name__}")
            if boxes.numel() and (boxes.ndim != 2 or boxes.shape[1] != 4):
                raise ValueError(f"targets[{i}]['boxes'] has shape {tuple(boxes.shape)}; need (G, 4) xyxy")
            if labels.numel() and (labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool):
                raise ValueError(f"targets[{i}]['labels'] has dtype {labels.dtype}; need integer class ids "
                                 f"1..{self.num_classes} (convert with .long())")
            if labels.numel() != len(boxes.reshape(-1, 4)) or labels.ndim > 1:
                raise ValueError(f"targets[{i}] has {labels.numel()} labels for {len(boxes.reshape(-1, 4))} boxes; "
                                 "need one label per box, shape (G,)")
            crowd = target.get("iscrowd")
            if crowd is not None and (not isinstance(crowd, Tensor) or crowd.numel() != labels.numel()
                                      or crowd.is_floating_point()):
                raise ValueError(f"targets[{i}]['iscrowd'] must be an integer tensor with one 0/1 flag per box "
                                 f"({labels.numel()} boxes), got {crowd!r:.80}")
        if not targets:
            return
        device = targets[0]["boxes"].device
        boxes = torch.cat([t["boxes"].reshape(-1, 4).to(device, torch.float32) for t in targets])
        labels = torch.cat([t["labels"].reshape(-1).to(device) for t in targets])
        wh = boxes[:, 2:] - boxes[:, :2]
        ok = torch.isfinite(boxes).all() & (wh > 0).all() & (labels >= 1).all() & (labels <= self.num_classes).all()
        if extent is not None and len(boxes):
            extent = extent.to(device)
            ok = ok & ((boxes[:, :2] < extent).all() & (boxes[:, 2:] > 0).all())
        if not bool(ok):
            self._explain_bad_targets(targets, extent)

    def _explain_bad_targets(self, targets: list[dict[str, Tensor]], extent: Tensor | None = None) -> None:
        """Find the first offending image of a batch that failed :meth:`check_targets` and say what is wrong."""
        for i, target in enumerate(targets):
            boxes, labels = target["boxes"].reshape(-1, 4).float(), target["labels"].reshape(-1)
            bad_label = (labels < 1) | (labels > self.num_classes)
            if bad_label.any():
                label = int(labels[bad_label][0])
                raise ValueError(f"targets[{i}] has label {label}; TinyDetector(num_classes={self.num_classes}) takes labels "
                                 f"1..{self.num_classes} (0 is not background here: drop background boxes, or "
                                 "renumber the classes from 1, or build the model with more classes)")
            if not torch.isfinite(boxes).all():
                raise ValueError(f"targets[{i}]['boxes'] holds NaN or infinite values ({boxes.tolist()}); "
                                 "fix the annotation or the augmentation that produced it")
            wh = boxes[:, 2:] - boxes[:, :2]
            if not (wh > 0).all():
                row = int((~(wh > 0)).any(1).nonzero()[0])
                raise ValueError(f"targets[{i}]['boxes'] row {row} = {boxes[row].tolist()} has zero or negative width or "
                                 "height: boxes must be xyxy with x2 > x1 and y2 > y1 (the box loss takes log(w)); "
                                 "drop degenerate boxes, or convert xywh with course_utils.box_convert")
            if extent is not None and len(boxes):
                ext = extent.to(boxes)
                outside = ((boxes[:, :2] >= ext) | (boxes[:, 2:] <= 0)).any(1)
                if outside.any():
                    row = int(outside.nonzero()[0])
                    raise ValueError(f"targets[{i}]['boxes'] row {row} = {boxes[row].tolist()} lies entirely outside the "
                                     f"image (about {ext[0].item():g}x{ext[1].item():g} px): no location would learn it. "
                                     "Boxes are in pixels of this image: drop it, or check the resize/augmentation")

    def loss(self, raw: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Detection loss: QFL for classes + GIoU and L1 for boxes, per positive location.

        ``loss_cls = Σ QFL / N_pos``, ``loss_giou = Σ (1 - GIoU) / N_pos``,
        ``loss_l1 = Σ |δ - δ*|₁ / N_pos`` (δ* = :func:`encode_boxes` target).
        Checked first (:meth:`check_targets`): one target per image, ``boxes`` (G, 4)
        finite xyxy with positive width and height, overlapping the image, ``labels`` (G,) integers in 1..K.
        Boxes flagged ``iscrowd = 1`` (COCO crowd regions) are left out: no location learns them.
        """
        logits, deltas, anchors = raw["logits"], raw["deltas"], raw["anchors"]
        self.check_targets(targets, len(logits), extent=self._grid_extent(anchors))
        quality = torch.zeros_like(logits)
        pos_pred, pos_deltas, pos_gt, pos_anchors = [], [], [], []
        for b, target in enumerate(targets):
            target = drop_crowd(target)  # COCO crowd regions are not objects to learn (as torchvision's recipes)
            gt_boxes, gt_labels = target["boxes"].to(anchors).reshape(-1, 4), target["labels"].reshape(-1)
            match = self.assign(anchors, gt_boxes, raw.get("strides"))
            pos = torch.nonzero(match >= 0).squeeze(1)
            if len(pos) == 0:
                continue
            gt = gt_boxes[match[pos]]
            pred = decode_boxes(deltas[b, pos], anchors[pos])
            with torch.no_grad():
                iou = box_iou(pred, gt).diagonal().clamp(min=0).to(quality.dtype)
            quality[b, pos, gt_labels.to(pos.device, torch.int64)[match[pos]] - 1] = iou  # (uint8 would index as a mask)
            pos_pred.append(pred), pos_deltas.append(deltas[b, pos]), pos_gt.append(gt), pos_anchors.append(anchors[pos])
        num_pos: int | Tensor = max(sum(len(p) for p in pos_pred), 1)
        if self.num_pos_across_ranks and torch.distributed.is_available() and torch.distributed.is_initialized():
            # one global normaliser: the mean count over ranks, so DDP's gradient average equals one big batch
            count = torch.tensor(float(sum(len(p) for p in pos_pred)), device=logits.device)
            torch.distributed.all_reduce(count)
            num_pos = (count / torch.distributed.get_world_size()).clamp(min=1.0)
        loss_cls = quality_focal_loss(logits, quality) / num_pos
        if pos_pred:
            pred, gt = torch.cat(pos_pred), torch.cat(pos_gt)
            loss_giou = generalized_box_iou_loss(pred, gt, reduction="sum") / num_pos
            loss_l1 = F.l1_loss(torch.cat(pos_deltas), encode_boxes(gt, torch.cat(pos_anchors)), reduction="sum") / num_pos
        else:  # no objects in the batch: keep the graph, contribute zero
            loss_giou = loss_l1 = deltas.sum() * 0.0
        return {"loss_cls": loss_cls, "loss_giou": 2.0 * loss_giou, "loss_l1": 0.5 * loss_l1}

    # ------------------------------------------------------------------ inference
    def postprocess(self, raw: dict[str, Tensor], image_size: tuple[int, int]) -> list[dict[str, Tensor]]:
        """Decode + score threshold + class-aware NMS + top-k, per image.

        Every (location, class) pair is a candidate with score ``σ(logit)``; per image
        the best ``min(1000, A·K)`` are considered, those above ``score_threshold``
        are decoded (:func:`decode_boxes`) and clipped to the image, and class-aware
        NMS (IoU > ``nms_threshold`` suppresses) keeps at most ``detections_per_image``.

        The whole batch is thresholded and decoded at once, and NMS is torchvision's
        compiled ``nms`` on class-shifted boxes (the trick of
        :func:`course_utils.boxes.batched_nms`, whose Python loop gives the same
        result but is ~8x slower at batch 16; tested equal).

        Returns one ``{"boxes": (D, 4) xyxy, "scores": (D,), "labels": (D,) int64}``
        per image, sorted by score, ``D <= detections_per_image``.
        """
        height, width = image_size
        logits, deltas, anchors = raw["logits"], raw["deltas"], raw["anchors"]
        batch, num_anchors, num_classes = logits.shape
        scores = logits.sigmoid().reshape(batch, num_anchors * num_classes)  # candidate j = location j // K, class j % K
        order = None
        if scores.shape[1] > 1000:  # cap NMS work: the best 1000 candidates per image
            scores, order = scores.topk(1000, dim=1)
        image, j = torch.nonzero(scores > self.score_threshold, as_tuple=True)  # sorted by image
        flat = j if order is None else order[image, j]
        loc, cls = flat // num_classes, flat % num_classes
        cand_scores = scores[image, j]
        boxes = decode_boxes(deltas[image, loc], anchors[loc])
        boxes = torch.stack(
            [boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height), boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], dim=1
        )
        shifted = boxes + (cls.to(boxes) * (max(width, height) + 1))[:, None]  # classes can no longer overlap
        results, start = [], 0
        for count in torch.bincount(image, minlength=batch).tolist():
            part = slice(start, start + count)
            start += count
            # NMS in float32: torchvision's CPU kernel has no float16/bfloat16 version (a no-op for float32)
            keep = nms(shifted[part].float(), cand_scores[part].float(), self.nms_threshold)[: self.detections_per_image]
            results.append({"boxes": boxes[part][keep], "scores": cand_scores[part][keep], "labels": cls[part][keep] + 1})
        return results


class DigitsCNN(nn.Module):
    """A small CNN for the 8x8 digits (notebook 03's classification example).

    Two 3x3 convs (the second with stride 2) and a linear layer: (B, 1, 8, 8) ->
    (B, 10) logits. Plain (no BatchNorm) by default, which makes it sensitive to
    the learning rate -- good for studying clipping. Like the detectors,
    ``model(images, targets)`` returns ``{"loss_ce": cross-entropy}`` in train
    mode and ``model(images)`` returns logits.
    """

    def __init__(self, width: int = 16, batch_norm: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvBNReLU(1, width, batch_norm=batch_norm), ConvBNReLU(width, 2 * width, stride=2, batch_norm=batch_norm)
        )
        self.classifier = nn.Linear(2 * width * 4 * 4, 10)

    def forward_raw(self, images: Tensor | list[Tensor]) -> dict[str, Tensor]:
        """``{"logits": (B, 10)}`` -- what a distillation hook reads (see :class:`TinyDetector`)."""
        x = torch.stack(list(images)) if isinstance(images, (list, tuple)) else images
        return {"logits": self.classifier(self.features(x).flatten(1))}

    def loss(self, raw: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """``{"loss_ce": CE(logits, labels)}``, labels from ``targets[i]["labels"]`` (scalars)."""
        labels = torch.stack([t["labels"] for t in targets]).to(raw["logits"].device)
        return {"loss_ce": F.cross_entropy(raw["logits"], labels)}

    def forward(self, images: Tensor | list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        raw = self.forward_raw(images)
        return raw["logits"] if targets is None else self.loss(raw, targets)


def build_torchvision_detector(num_classes: int = 3, image_size: int = 128) -> nn.Module:
    """A real ``torchvision`` Faster R-CNN sized for the course data, no downloaded weights.

    Backbone: the same Conv-BN-ReLU stages as :class:`TinyDetector` (stride 8,
    64 channels), one feature map; anchors of 8-64 px; images kept at
    ``image_size`` (no resizing). ``num_classes`` excludes background
    (torchvision counts it, so the model gets ``num_classes + 1``). COCO crowd
    regions (targets' ``iscrowd = 1``) are left out of training, as in
    :class:`TinyDetector` and torchvision's own COCO recipe (:func:`drop_crowd`).
    """
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    backbone = nn.Sequential(
        ConvBNReLU(3, 16, stride=2), ConvBNReLU(16, 32, stride=2), ConvBNReLU(32, 32),
        ConvBNReLU(32, 64, stride=2), ConvBNReLU(64, 64),
    )
    backbone.out_channels = 64  # FasterRCNN reads this attribute
    model = FasterRCNN(
        backbone,
        num_classes=None,  # given by box_predictor below
        min_size=image_size,
        max_size=image_size,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.25, 0.25],
        rpn_anchor_generator=AnchorGenerator(sizes=((12, 24, 48),), aspect_ratios=((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(64 * 7 * 7, 256),
        box_predictor=FastRCNNPredictor(256, num_classes + 1),
        rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100,
        box_batch_size_per_image=128, box_detections_per_img=100,
    )
    model.register_forward_pre_hook(_drop_crowd_hook, with_kwargs=True)
    return model


def drop_crowd(target: dict[str, Tensor]) -> dict[str, Tensor]:
    """``target`` without its crowd boxes: every per-box entry (``boxes`` (N, 4), ``labels`` (N,),
    ``iscrowd`` (N,), ``area`` (N,) ...) indexed by ``iscrowd == 0``; a target without ``iscrowd`` is
    returned unchanged. A crowd region marks many objects at once, so it is an ignore region in COCO's
    evaluation and no object to learn."""
    crowd = target.get("iscrowd")
    if crowd is None:
        return target
    keep = crowd.reshape(-1) == 0
    n = keep.numel()
    return {k: v[keep.to(v.device)] if isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == n else v
            for k, v in target.items()}


def _drop_crowd_hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook of :func:`build_torchvision_detector`: ``model(images, targets)`` trains on
    ``[drop_crowd(t) for t in targets]``."""
    if len(args) > 1 and args[1] is not None:
        args = (args[0], [drop_crowd(t) for t in args[1]], *args[2:])
    elif kwargs.get("targets") is not None:
        kwargs = {**kwargs, "targets": [drop_crowd(t) for t in kwargs["targets"]]}
    return args, kwargs


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
