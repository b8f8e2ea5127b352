"""Knowledge distillation: Hinton's soft targets, and distillation for a dense detector.

Taught in: 06_knowledge_distillation.

* :func:`kd_loss` -- ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` (Hinton et al. 2015), and
  :func:`hinton_loss`, its combination with the hard-label loss;
* for a detector with per-class sigmoid scores (the course's :class:`TinyDetector`):
  :func:`dense_cls_distill_loss` (soft targets at every location, foreground
  locations weighted up), :func:`box_distill_loss` (imitate the teacher's box
  offsets where the teacher sees an object), :func:`teacher_bounded_regression_loss`
  (Chen et al. 2017: the teacher as an upper bound, not a target) and
  :func:`feature_imitation_loss` with a 1×1 :class:`FeatureAdapter` (FitNets hints,
  Romero et al. 2015; masked to object regions as in Wang et al. 2019);
* :class:`Distiller` -- a training-loop hook: the teacher runs frozen, in eval
  mode and without gradients, and the chosen terms are added to the student's loss;
  :class:`SoftTargetDistiller`, the same for a classifier (Hinton's α form);
* torchvision's two-stage detectors (Faster R-CNN):
  :func:`roi_class_logits` and :class:`RoIDistiller` -- soft targets on the ROI
  head's class logits, for the *same* regions in teacher and student.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .train import Hook, StepState

__all__ = [
    "kd_loss",
    "hinton_loss",
    "soften",
    "dense_cls_distill_loss",
    "box_distill_loss",
    "teacher_bounded_regression_loss",
    "FeatureAdapter",
    "feature_imitation_loss",
    "foreground_mask",
    "Distiller",
    "SoftTargetDistiller",
    "roi_class_logits",
    "jitter_boxes",
    "RoIDistiller",
    "cache_teacher_outputs",
    "pseudo_label",
]


# --------------------------------------------------------------------- classification
#: Largest temperature accepted. Beyond it the soft targets are nearly uniform and ``T²`` times a
#: vanishing KL amplifies float32 rounding: kd_loss is off by 2e-4 (relative) at T = 1000, 2 % at
#: T = 1e4 and NaN at T = 1e30. Hinton et al. used T <= 20.
MAX_TEMPERATURE = 100.0


def _check_temperature(temperature: Any, where: str) -> None:
    """``temperature`` a real number in (0, MAX_TEMPERATURE] (NaN passes ``<= 0`` checks, 0 divides by zero); a
    0-dim tensor (e.g. a learnable ``nn.Parameter``) is checked by its value."""
    if isinstance(temperature, torch.Tensor) and temperature.ndim == 0 and temperature.is_floating_point():
        value = float(temperature.detach())
        if math.isfinite(value) and 0 < value <= MAX_TEMPERATURE:
            return
    if (isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not math.isfinite(temperature)
            or not 0 < temperature <= MAX_TEMPERATURE):
        raise ValueError(f"{where}: temperature must be a number in (0, {MAX_TEMPERATURE:g}] (T = 1 is the plain "
                         f"softmax; 2 to 4 are usual), got {temperature!r}")


def _check_batch_size(batch_size: Any, where: str) -> int:
    """``batch_size`` a positive integer (numpy integers too); returned as an int."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"{where}: batch_size must be a positive integer, got {batch_size!r} (the default is 50)")
    return int(batch_size)


def _check_logit_pair(student_logits: Any, teacher_logits: Any, where: str, shape: str) -> None:
    """Both tensors with the same shape and a class dimension (at least 2-D)."""
    for name, t in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim < 2:
            raise ValueError(f"{where}: {name} has shape {tuple(t.shape)}; need {shape} with the classes on the last "
                             "dimension (a softmax over a 1-D tensor would run over the batch); for one logit per "
                             "example use x[:, None]")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"{where}: student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
                         f"{tuple(teacher_logits.shape)} (do both models have the same number of classes?)")


def soften(logits: Tensor, temperature: float) -> Tensor:
    """Soft targets: ``softmax(z / T)`` over the last dimension. T > 1 flattens the distribution."""
    _check_temperature(temperature, "soften")
    return F.softmax(logits / temperature, dim=-1)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton et al. 2015: ``T² · KL(p_t ‖ p_s)`` with ``p = softmax(z / T)``, averaged over the batch.

    ``KL(p_t ‖ p_s) = Σ_k p_t,k (log p_t,k − log p_s,k)``. The gradient of the KL term
    with respect to the student's logits shrinks like 1/T² for large T; the
    ``T²`` factor keeps it the same size as the hard-label loss's, whatever T.
    Shapes: (B, K), (B, K) -> (). Equal to
    ``T² · F.kl_div(log_softmax(s/T), softmax(t/T), reduction="batchmean")``.
    Checked: temperature a finite number > 0; both logits tensors of the same shape, at least 2-D.
    """
    _check_temperature(temperature, "kd_loss")
    _check_logit_pair(student_logits, teacher_logits, "kd_loss", "(B, K)")
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return temperature**2 * kl.mean()


def hinton_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, alpha: float = 0.9,
                temperature: float = 4.0) -> Tensor:
    """``α · T² · KL(p_t ‖ p_s) + (1 − α) · CE(y, s)``: soft targets plus hard labels.

    Both terms are *added* and minimised; ``α`` weighs the teacher. (Writing
    ``−α·KL`` would push the student *away* from the teacher.) Shapes: (B, K), (B, K), (B,) -> ().
    """
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1:
        raise ValueError(f"hinton_loss: alpha must be a number in [0, 1] (the teacher's weight, e.g. 0.9), got {alpha!r}")
    _check_logit_pair(student_logits, teacher_logits, "hinton_loss", "(B, K)")
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.shape != student_logits.shape[:1]:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"hinton_loss: labels must be an integer tensor of shape ({len(student_logits)},), one class "
                         f"index per example, got {shape}" + (f" of dtype {labels.dtype}" if isinstance(labels, Tensor) else ""))
    k = student_logits.shape[-1]
    if len(labels) and not bool(((labels >= 0) & (labels < k)).all()):
        raise ValueError(f"hinton_loss: labels must be class indices 0..{k - 1}, got values from {int(labels.min())} to "
                         f"{int(labels.max())}")
    return alpha * kd_loss(student_logits, teacher_logits, temperature) + (1 - alpha) * F.cross_entropy(student_logits, labels)


# --------------------------------------------------------------------- dense detection
def _binary_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Per-element ``KL(Bern(σ(t/T)) ‖ Bern(σ(s/T)))``: the soft-target loss for sigmoid scores."""
    p_t = torch.sigmoid(teacher_logits / temperature)
    log_p_t, log_q_t = F.logsigmoid(teacher_logits / temperature), F.logsigmoid(-teacher_logits / temperature)
    log_p_s, log_q_s = F.logsigmoid(student_logits / temperature), F.logsigmoid(-student_logits / temperature)
    return p_t * (log_p_t - log_p_s) + (1 - p_t) * (log_q_t - log_q_s)


def foreground_mask(teacher_logits: Tensor, threshold: float = 0.3) -> Tensor:
    """Locations where the teacher sees an object: ``max_k σ(t_k) > threshold``. Shapes: (B, A, K) -> (B, A) bool."""
    return torch.sigmoid(teacher_logits).amax(-1) > threshold


def dense_cls_distill_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0,
                           fg_weight: float = 4.0, fg_threshold: float = 0.3) -> Tensor:
    """Soft-target loss at every location of a sigmoid (per-class) detection head.

    ``L = T² · Σ_{a,k} w_a · KL(Bern(σ(t_ak/T)) ‖ Bern(σ(s_ak/T))) / Σ_a w_a`` with
    ``w_a = fg_weight`` where the teacher sees an object (:func:`foreground_mask`)
    and 1 elsewhere: background locations are many and easy, so foreground ones
    are weighted up. Zero iff student and teacher logits are equal. Shapes:
    (B, A, K), (B, A, K) -> (). Checked: temperature a finite number > 0; both logits of the same
    shape, at least 2-D (a teacher with another number of classes would broadcast silently).
    """
    _check_temperature(temperature, "dense_cls_distill_loss")
    _check_logit_pair(student_logits, teacher_logits, "dense_cls_distill_loss", "(B, A, K)")
    if isinstance(fg_weight, bool) or not isinstance(fg_weight, numbers.Real) or not (math.isfinite(fg_weight) and fg_weight > 0):
        raise ValueError(f"dense_cls_distill_loss: fg_weight must be a number > 0 (how much a foreground location "
                         f"weighs against a background one, e.g. 4.0), got {fg_weight!r}")
    kl = _binary_kl(student_logits, teacher_logits, temperature).sum(-1)  # (B, A)
    weights = 1.0 + (fg_weight - 1.0) * foreground_mask(teacher_logits, fg_threshold).float()
    return temperature**2 * (weights * kl).sum() / weights.sum()


def box_distill_loss(student_deltas: Tensor, teacher_deltas: Tensor, teacher_logits: Tensor,
                     fg_threshold: float = 0.3) -> Tensor:
    """Imitate the teacher's box offsets where it sees an object.

    ``L = Σ_{a ∈ fg} smoothL1(d_s,a − d_t,a) / max(1, |fg|)`` (summed over the 4
    offsets), ``fg`` from :func:`foreground_mask`. Zero iff the offsets agree on
    ``fg``. Shapes: (B, A, 4), (B, A, 4), (B, A, K) -> ().
    """
    _check_logit_pair(student_deltas, teacher_deltas, "box_distill_loss", "(B, A, 4)")
    if student_deltas.shape[-1] != 4 or not isinstance(teacher_logits, Tensor) or teacher_logits.shape[:-1] != student_deltas.shape[:-1]:
        got = tuple(teacher_logits.shape) if isinstance(teacher_logits, Tensor) else type(teacher_logits).__name__
        raise ValueError(f"box_distill_loss: need deltas of shape (B, A, 4) and teacher_logits (B, A, K) with the same B "
                         f"and A, got {tuple(student_deltas.shape)} and {got}")
    fg = foreground_mask(teacher_logits, fg_threshold)
    diff = F.smooth_l1_loss(student_deltas[fg], teacher_deltas[fg].detach(), reduction="sum", beta=0.1)
    return diff / fg.sum().clamp(min=1)


def teacher_bounded_regression_loss(student_deltas: Tensor, teacher_deltas: Tensor, target_deltas: Tensor,
                                    margin: float = 0.0) -> Tensor:
    """Chen et al. 2017 ("Learning Efficient Object Detection Models with Knowledge Distillation"):
    the teacher as an *upper bound*.

    ``L = mean_a ‖d_s − y‖² · 1[‖d_s − y‖² + m > ‖d_t − y‖²]`` over the given
    (positive) locations: the student is pushed towards the ground truth ``y`` only
    while it is worse than the teacher (plus margin ``m``), and left alone once it
    is better. Shapes: (N, 4) each -> ().
    """
    shapes = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in (student_deltas, teacher_deltas, target_deltas)]
    if not all(isinstance(t, Tensor) for t in (student_deltas, teacher_deltas, target_deltas)) or len(set(shapes)) != 1 \
            or len(shapes[0]) != 2 or shapes[0][1] != 4:
        raise ValueError(f"teacher_bounded_regression_loss: student, teacher and target deltas must all be (N, 4), got {shapes}")
    err_s = (student_deltas - target_deltas).pow(2).sum(-1)
    err_t = (teacher_deltas.detach() - target_deltas).pow(2).sum(-1)
    active = (err_s + margin > err_t).float()
    return (err_s * active).sum() / max(1, err_s.numel())


class FeatureAdapter(nn.Module):
    """A 1×1 convolution mapping student features (C_s channels) to the teacher's (C_t): the FitNets "regressor".

    Initialised to the identity when ``C_s == C_t`` (so equal features give zero loss
    from the start). Trained with the student; thrown away after distillation.
    """

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(student_channels, teacher_channels, 1)
        if student_channels == teacher_channels:
            nn.init.dirac_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


def feature_imitation_loss(student_features: Tensor, teacher_features: Tensor, mask: Tensor | None = None) -> Tensor:
    """Feature imitation: ``Σ_{locations in mask} ‖f_s − f_t‖² / (2 · N_mask · C)``.

    ``student_features`` must already be adapted to the teacher's channels
    (:class:`FeatureAdapter`). ``mask`` (B, h, w), e.g. the teacher's foreground
    locations, restricts imitation to object regions (Wang et al. 2019); None uses
    every location (FitNets). Shapes: (B, C, h, w), (B, C, h, w), (B, h, w) -> ().
    """
    if student_features.shape != teacher_features.shape:
        raise ValueError(f"adapt the student's features to the teacher's shape first: {tuple(student_features.shape)} "
                         f"vs {tuple(teacher_features.shape)}")
    sq = (student_features - teacher_features.detach()).pow(2).sum(1)  # (B, h, w)
    if mask is not None and mask.dtype != torch.bool:
        raise ValueError(f"feature_imitation_loss: mask must be a bool tensor (True = imitate here), got dtype "
                         f"{mask.dtype}; use mask > 0.5 or mask.bool()")
    if mask is None:
        mask = torch.ones_like(sq, dtype=torch.bool)
    if mask.shape != sq.shape:
        raise ValueError(f"feature_imitation_loss: mask has shape {tuple(mask.shape)}; it must be (B, h, w) = "
                         f"{tuple(sq.shape)}, one entry per feature location")
    n = mask.sum().clamp(min=1)
    return sq[mask].sum() / (2 * n * student_features.shape[1])


# --------------------------------------------------------------------- the training-loop hook
class Distiller(Hook):
    """Adds distillation terms to the student's loss inside :func:`course_utils.train.fit`.

    Args:
        teacher: a trained detector with ``forward_raw`` returning ``logits``,
            ``deltas`` and ``features``. It is copied, put in eval mode and frozen:
            it never receives gradients and its BN statistics never move.
        weights: ``{"cls": w, "box": w, "feature": w}`` -- which terms, and how much.
        temperature: for the classification term.
        fg_threshold: teacher score above which a location counts as foreground.
        fg_weight: weight of foreground locations in the classification term.

    For the ``"feature"`` term a :class:`FeatureAdapter` is made at the start of
    training (its channel counts read from one dummy forward pass of each model)
    and its parameters are added to the optimizer -- at the start of *every*
    :func:`~course_utils.train.fit` that uses this hook, if that fit's optimizer does
    not hold them yet (the adapter keeps what it learned in earlier fits).

    Checked: the weights are for known terms and finite numbers >= 0 (0 turns a term
    off), temperature a finite number > 0; at the start of training, a teacher with
    ``num_classes`` has as many classes as the student.
    """

    def __init__(self, teacher: nn.Module, weights: dict[str, float], temperature: float = 2.0,
                 fg_threshold: float = 0.3, fg_weight: float = 4.0) -> None:
        unknown = set(weights) - {"cls", "box", "feature"}
        if unknown:
            raise ValueError(f"unknown distillation terms {sorted(unknown)}; use 'cls', 'box' and/or 'feature'")
        for term, w in weights.items():
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
                raise ValueError(f"Distiller: weights[{term!r}] must be a finite number >= 0 (0 turns the term off), "
                                 f"got {w!r}")
        _check_temperature(temperature, "Distiller")
        self.teacher = _frozen_copy(teacher)
        self.weights, self.temperature = dict(weights), temperature
        self.fg_threshold, self.fg_weight = fg_threshold, fg_weight
        self.adapter: FeatureAdapter | None = None

    @staticmethod
    def _feature_channels(model: nn.Module, device: torch.device) -> int:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            channels = model.forward_raw(torch.zeros(1, 3, 64, 64, device=device))["features"].shape[1]
        model.train(was_training)
        return channels

    def on_train_start(self, state: StepState) -> None:
        device = next(state.model.parameters()).device
        self.teacher.to(device).eval()
        self._check_classes(state.model)
        if self.weights.get("feature", 0) > 0:
            if self.adapter is None:
                c_s, c_t = self._feature_channels(state.model, device), self._feature_channels(self.teacher, device)
                self.adapter = FeatureAdapter(c_s, c_t)
            self.adapter.to(device)
            self._add_adapter_to(state.optimizer)

    def _check_classes(self, student: nn.Module) -> None:
        k_s, k_t = getattr(student, "num_classes", None), getattr(self.teacher, "num_classes", None)
        if k_s is not None and k_t is not None and k_s != k_t:
            raise ValueError(f"Distiller: the teacher has {k_t} classes and the student {k_s}; distillation compares "
                             "their class scores one to one, so both must be trained on the same classes")

    def _add_adapter_to(self, optimizer: torch.optim.Optimizer) -> None:
        """Add the adapter's parameters to ``optimizer`` unless it holds them already (a fit reusing this hook)."""
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = [p for p in self.adapter.parameters() if id(p) not in held]
        if params:
            # same hyper-parameters as the student's first group (incl. a scheduler's keys such as initial_lr)
            settings = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
            optimizer.add_param_group({**settings, "params": params})

    def teacher_outputs(self, images: Tensor | list[Tensor], targets: list[dict[str, Any]] | None = None) -> dict[str, Tensor]:
        """The teacher's raw outputs for a batch: from the targets if :func:`cache_teacher_outputs` stored them, else computed."""
        if targets and all("teacher_logits" in t for t in targets):
            return {key: torch.stack([t[f"teacher_{key}"] for t in targets]) for key in ("logits", "deltas", "features")}
        with torch.no_grad():
            self.teacher.eval()
            return self.teacher.forward_raw(images)

    def losses(self, student_raw: dict[str, Tensor], images: Tensor | list[Tensor],
               targets: list[dict[str, Any]] | None = None) -> dict[str, Tensor]:
        """The weighted distillation terms for one batch, given the student's raw outputs."""
        teacher_raw = self.teacher_outputs(images, targets)
        out: dict[str, Tensor] = {}
        w = self.weights
        if w.get("cls", 0) > 0:
            out["kd_cls"] = w["cls"] * dense_cls_distill_loss(student_raw["logits"], teacher_raw["logits"], self.temperature,
                                                              self.fg_weight, self.fg_threshold)
        if w.get("box", 0) > 0:
            out["kd_box"] = w["box"] * box_distill_loss(student_raw["deltas"], teacher_raw["deltas"], teacher_raw["logits"],
                                                        self.fg_threshold)
        if w.get("feature", 0) > 0 and self.adapter is not None:
            fs, ft = student_raw["features"], teacher_raw["features"]
            fg = foreground_mask(teacher_raw["logits"], self.fg_threshold).reshape(ft.shape[0], *ft.shape[-2:])
            out["kd_feature"] = w["feature"] * feature_imitation_loss(self.adapter(fs), ft, fg)
        return out

    def extra_losses(self, state: StepState) -> dict[str, Tensor]:
        if state.outputs is None:
            raise RuntimeError("Distiller needs the student's raw outputs: use a model with forward_raw and loss (TinyDetector)")
        return self.losses(state.outputs, state.images, state.targets)


def _frozen_copy(teacher: nn.Module) -> nn.Module:
    """A deep copy in eval mode with ``requires_grad=False`` everywhere: a teacher that cannot change."""
    teacher = copy.deepcopy(teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class SoftTargetDistiller(Hook):
    """Hinton's recipe for a classifier inside :func:`course_utils.train.fit`.

    The step's loss becomes ``(1 − α) · CE(y, s) + α · T² · KL(p_t ‖ p_s)``
    (:func:`hinton_loss`): the hook scales the model's own ``"loss_ce"`` by
    ``1 − α`` and adds ``"loss_kd"``. The model needs ``forward_raw`` returning
    ``{"logits": (B, K)}`` and ``loss`` returning ``{"loss_ce": ...}``
    (:class:`~course_utils.models.DigitsCNN`). The teacher is a frozen copy, in
    eval mode, called without gradients. ``α = 0`` is plain training.
    """

    replaces_losses = ("loss_ce",)  # it rescales the model's own cross-entropy, deliberately

    def __init__(self, teacher: nn.Module, alpha: float = 0.9, temperature: float = 4.0) -> None:
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        _check_temperature(temperature, "SoftTargetDistiller")
        self.teacher, self.alpha, self.temperature = _frozen_copy(teacher), alpha, temperature

    def on_train_start(self, state: StepState) -> None:
        self.teacher.to(next(state.model.parameters()).device).eval()

    def extra_losses(self, state: StepState) -> dict[str, Tensor]:
        if state.outputs is None or "loss_ce" not in state.losses:
            raise RuntimeError("SoftTargetDistiller needs a classifier with forward_raw -> {'logits'} and loss -> {'loss_ce'}")
        with torch.no_grad():
            teacher_logits = self.teacher.forward_raw(state.images)["logits"]
        kd = kd_loss(state.outputs["logits"], teacher_logits, self.temperature)
        return {"loss_ce": (1 - self.alpha) * state.losses["loss_ce"], "loss_kd": self.alpha * kd}


# --------------------------------------------------------------------- torchvision two-stage detectors
def roi_class_logits(detector: nn.Module, images: list[Tensor], boxes: list[Tensor]) -> Tensor:
    """The class logits a torchvision two-stage detector's ROI head gives to *given* regions.

    ``transform`` -> ``backbone`` -> ``box_roi_pool`` (RoIAlign on ``boxes``, rescaled
    like the images) -> ``box_head`` -> ``box_predictor``. Feeding the same boxes
    to teacher and student makes their logits comparable region by region.
    Shapes: images [(3, H, W)] * B, boxes [(N_i, 4) xyxy, image pixels] -> (Σ N_i, K + 1)
    (torchvision counts background as class 0).
    """
    from torchvision.models.detection.transform import resize_boxes

    if len(images) != len(boxes):
        raise ValueError(f"one box tensor per image: got {len(images)} images and {len(boxes)} box tensors")
    original_sizes = [tuple(img.shape[-2:]) for img in images]
    image_list, _ = detector.transform(images)
    features = detector.backbone(image_list.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    boxes = [resize_boxes(b, old, new) for b, old, new in zip(boxes, original_sizes, image_list.image_sizes)]
    pooled = detector.roi_heads.box_roi_pool(features, boxes, image_list.image_sizes)
    class_logits, _ = detector.roi_heads.box_predictor(detector.roi_heads.box_head(pooled))
    return class_logits


def jitter_boxes(boxes: Tensor, copies: int = 4, scale: float = 0.2, generator: torch.Generator | None = None) -> Tensor:
    """Regions around each box: the box itself plus ``copies`` versions whose corners move
    by ``scale · (w, h) · N(0, 1)``. Shapes: (N, 4) xyxy -> (N · (1 + copies), 4).
    Checked: ``copies`` an integer >= 0."""
    if isinstance(copies, bool) or not isinstance(copies, numbers.Integral) or copies < 0:
        raise ValueError(f"jitter_boxes: copies must be an integer >= 0 (jittered versions per box), got {copies!r}")
    copies = int(copies)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"jitter_boxes: scale must be a finite number >= 0 (a fraction of the box's size), got {scale!r}")
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[-1] != 4:
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"jitter_boxes: boxes must be (N, 4) xyxy, got {shape}; for one box use boxes[None]")
    if boxes.numel() == 0:
        return boxes.reshape(0, 4)
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)  # (N, 4): w, h, w, h
    noise = torch.randn((copies, *boxes.shape), generator=generator).to(boxes.device) * scale * wh
    moved = (boxes + noise).reshape(-1, 4)
    x1, x2 = torch.minimum(moved[:, 0], moved[:, 2]), torch.maximum(moved[:, 0], moved[:, 2])
    y1, y2 = torch.minimum(moved[:, 1], moved[:, 3]), torch.maximum(moved[:, 1], moved[:, 3])
    return torch.cat([boxes, torch.stack([x1, y1, x2 + 1e-3, y2 + 1e-3], 1)])


class RoIDistiller(Hook):
    """Soft targets for a torchvision Faster R-CNN student, inside ``fit``.

    Both networks score the same regions -- the ground-truth boxes and jittered
    copies (:func:`jitter_boxes`), i.e. objects and near-misses -- and the student
    is pulled to the teacher's class distribution there:
    ``L = w · T² · KL(softmax(t_r/T) ‖ softmax(s_r/T))`` averaged over regions r
    (:func:`kd_loss` on :func:`roi_class_logits`). A detector has no single ``fc``
    to swap: the ROI head's classifier is one of several outputs, and this term
    is *added* to the student's own detection losses. The teacher is a frozen
    copy in eval mode. Costs one more student backbone pass per step.
    """

    def __init__(self, teacher: nn.Module, weight: float = 1.0, temperature: float = 4.0, copies: int = 4,
                 seed: int = 0) -> None:
        _check_temperature(temperature, "RoIDistiller")
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"RoIDistiller: weight must be a finite number >= 0, got {weight!r}")
        self.teacher, self.weight, self.temperature, self.copies = _frozen_copy(teacher), weight, temperature, copies
        self.generator = torch.Generator().manual_seed(seed)

    def on_train_start(self, state: StepState) -> None:
        self.teacher.to(next(state.model.parameters()).device).eval()

    def extra_losses(self, state: StepState) -> dict[str, Tensor]:
        images = list(state.images)
        regions = [jitter_boxes(t["boxes"], self.copies, generator=self.generator) for t in state.targets]
        if sum(len(r) for r in regions) == 0:
            return {"loss_kd_roi": torch.zeros((), device=images[0].device)}
        student_logits = roi_class_logits(state.model, images, regions)
        with torch.no_grad():
            teacher_logits = roi_class_logits(self.teacher, images, regions)
        return {"loss_kd_roi": self.weight * kd_loss(student_logits, teacher_logits, self.temperature)}


def _chunk(dataset: Any, start: int, size: int) -> list[Any]:
    """Items ``start .. start + size - 1`` of a list or of a map-style Dataset (which may not support slices)."""
    return [dataset[i] for i in range(start, min(start + size, len(dataset)))]


def _check_detections(detections: Any, teacher: nn.Module) -> None:
    """The teacher returned one dict with ``boxes``, ``scores``, ``labels`` per image (a detector, not a classifier)."""
    if not isinstance(detections, (list, tuple)) or not all(
            isinstance(d, dict) and {"boxes", "scores", "labels"} <= set(d) for d in detections):
        raise TypeError(f"pseudo_label needs a detector teacher whose forward returns one dict with 'boxes', 'scores' "
                        f"and 'labels' per image; {type(teacher).__name__} returned {type(detections).__name__}")


@torch.no_grad()
def cache_teacher_outputs(teacher: nn.Module, dataset: Sequence[tuple[Tensor, dict[str, Any]]], batch_size: int = 50,
                          device: torch.device | None = None) -> list[tuple[Tensor, dict[str, Any]]]:
    """Run the frozen teacher once over a fixed (not augmented) training set and keep its outputs.

    Returns new ``(image, target)`` pairs whose targets also hold ``teacher_logits``
    (A, K), ``teacher_deltas`` (A, 4) and ``teacher_features`` (C, h, w), on the CPU.
    :class:`Distiller` then reads them instead of running the teacher every step --
    the same numbers (the teacher is frozen and in eval mode), computed once.
    Only valid when every epoch sees the same images: with random augmentation,
    run the teacher live. ``dataset``: a list of ``(image, target)`` or a map-style Dataset.
    Checked: ``batch_size`` a positive integer, a teacher with ``forward_raw``.
    """
    batch_size = _check_batch_size(batch_size, "cache_teacher_outputs")
    device = device or next(teacher.parameters()).device
    teacher = teacher.eval()
    if not hasattr(teacher, "forward_raw"):
        raise TypeError(f"cache_teacher_outputs needs a detector teacher with forward_raw (a TinyDetector), got a "
                        f"{type(teacher).__name__}")
    out: list[tuple[Tensor, dict[str, Any]]] = []
    for start in range(0, len(dataset), batch_size):
        chunk = _chunk(dataset, start, batch_size)
        raw = teacher.forward_raw(torch.stack([img for img, _ in chunk]).to(device))
        for i, (img, target) in enumerate(chunk):
            out.append((img, {**target, **{f"teacher_{k}": raw[k][i].cpu() for k in ("logits", "deltas", "features")}}))
    return out


@torch.no_grad()
def pseudo_label(teacher: nn.Module, dataset: Sequence[tuple[Tensor, dict[str, Any]]], score_threshold: float = 0.5,
                 batch_size: int = 50, device: torch.device | None = None) -> list[tuple[Tensor, dict[str, Any]]]:
    """Hard distillation for unlabelled images: the teacher's detections become the targets.

    Each target's ``boxes``/``labels`` are replaced by the teacher's detections with
    score ``>= score_threshold`` (other keys, e.g. cached teacher outputs, are kept).
    The student then trains on them like on ground truth. ``dataset``: a list of ``(image, target)``
    or a map-style Dataset. Checked: ``0 <= score_threshold <= 1``, ``batch_size`` a positive
    integer, a teacher returning detections (a dict per image).
    """
    if isinstance(score_threshold, bool) or not isinstance(score_threshold, numbers.Real) or not 0 <= score_threshold <= 1:
        raise ValueError(f"score_threshold must be a number in [0, 1], got {score_threshold!r}")
    batch_size = _check_batch_size(batch_size, "pseudo_label")
    device = device or next(teacher.parameters()).device
    teacher = teacher.eval()
    out: list[tuple[Tensor, dict[str, Any]]] = []
    for start in range(0, len(dataset), batch_size):
        chunk = _chunk(dataset, start, batch_size)
        detections = teacher(torch.stack([img for img, _ in chunk]).to(device))
        _check_detections(detections, teacher)
        for (img, target), det in zip(chunk, detections):
            keep = det["scores"] >= score_threshold
            out.append((img, {**target, "boxes": det["boxes"][keep].cpu(), "labels": det["labels"][keep].cpu()}))
    return out
