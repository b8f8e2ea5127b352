"""Auto-checks for the notebooks' exercises.

Each ``check_*`` function calls the learner's code on test inputs, compares with
the course's reference implementation, prints ``✓ Passed`` or ``✗ Not yet:``
with a hint about the likely mistake, and returns ``True``/``False``. A check
never raises, so a notebook with unfinished exercises still runs top to bottom:
``_call`` turns an exception in the learner's code into a message, and the
``@_check`` decorator turns anything else the check cannot use (a wrong type,
a wrong shape, a tensor where a float belongs) into a failing result that says
what it got and what it expected.

Every check on a function takes ``variant`` (keyword only): 0, the default, gives the inputs its
messages describe; another value gives other inputs of the same kind, the hidden tests that
``course_utils.exercise_grading.graded`` adds when the autograder runs the check.

Reference solutions live apart, in ``solutions/`` at the repository root.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import boxes as B
from .metrics import count_errors, precision_at_recall

__all__ = [
    "CheckResult",
    "check_box_area",
    "check_xywh_to_xyxy",
    "check_box_iou",
    "check_nms",
    "check_average_precision",
    "check_error_counts",
    "check_loss_recorder",
    "check_clip_grad_norm",
    "check_agc",
    "check_qparams",
    "check_fake_quantize",
    "check_fold_bn",
    "check_freeze_bn_hook",
    "check_kd_loss",
    "check_feature_imitation",
    "check_magnitude_mask",
    "check_conv_macs",
    "check_fixed_point_multiplier",
    "check_int32_bias",
    "check_speedup",
    "check_linear_scaling",
    "check_keep_in_float",
    "check_max_pair_sum",
]


class CheckResult:
    """Outcome of a check: truthy when passed. Shows nothing in a notebook (the message is printed)."""

    def __init__(self, passed: bool, message: str) -> None:
        self.passed, self.message = passed, message

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"CheckResult(passed={self.passed})"

    def _ipython_display_(self) -> None:  # the printed line is the display
        pass


def _report(ok: bool, message: str) -> CheckResult:
    print(("✓ Passed: " if ok else "✗ Not yet: ") + message)
    return CheckResult(ok, message)


# What the check running now expects, and what the learner's code last returned: set by
# ``_check`` and ``_call``, so that any failure can say what it got and what it expected.
_CURRENT: dict[str, Any] = {"expects": "", "got": None, "called": False}


def _a(noun: str) -> str:
    """``noun`` with its indefinite article: 'an int64 tensor', 'a str'."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _describe(value: Any) -> str:
    """A short description of any value, for a message: type, dtype and shape for arrays."""
    if value is None:
        return "None"
    if isinstance(value, Tensor):
        dtype = str(value.dtype).replace("torch.", "")
        if value.dim() == 0 and not value.dtype.is_complex:
            return f"a 0-d {dtype} tensor ({value.item():.6g})"
        return _a(f"{dtype} tensor of shape {tuple(value.shape)}")
    if isinstance(value, np.ndarray):
        return _a(f"{value.dtype} numpy array of shape {value.shape}")
    if isinstance(value, (bool, int, float, np.number)):
        return _a(f"{type(value).__name__} ({value!r})")
    if isinstance(value, str):
        return f"a str ({value[:30]!r})"
    if isinstance(value, (tuple, list)):
        return _a(f"{type(value).__name__} of {len(value)} item{'s' if len(value) != 1 else ''}")
    if isinstance(value, dict):
        return f"a dict with keys {list(value)[:5]}"
    if isinstance(value, type):
        return f"the class {value.__name__}"
    return _a(type(value).__name__)


def _check(expects: str) -> Callable[[Callable[..., CheckResult]], Callable[..., CheckResult]]:
    """Decorator for every ``check_*``: whatever the learner's code returns or raises, report, never raise.

    ``expects`` says in a few words what a correct answer looks like; it ends every message
    about an answer the check could not use.
    """

    def decorate(check: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
        @functools.wraps(check)
        def wrapper(*args: Any, **kwargs: Any) -> CheckResult:
            _CURRENT.update(expects=expects, got=None, called=False)
            try:
                return check(*args, **kwargs)
            except (Exception, SystemExit) as err:  # noqa: BLE001 -- a check reports, it never crashes the notebook
                got = f"your code returned {_describe(_CURRENT['got'])}" if _CURRENT["called"] else "your code"
                return _report(False, f"{got}, and the check could not use it ({type(err).__name__}: {err}). "
                                      f"Expected {expects}.")
        return wrapper

    return decorate


def _call(fn: Callable[..., Any], *args: Any) -> tuple[Any, str | None]:
    """Run the learner's function; turn exceptions into a hint instead of a crash."""
    name = getattr(fn, "__name__", "your function")
    if not callable(fn):
        return None, f"expected a function, got {_describe(fn)}. Pass the function itself (no parentheses)."
    try:
        got = fn(*args)
    except NotImplementedError:
        return None, f"`{name}` still raises NotImplementedError -- replace it with your code."
    except (Exception, SystemExit) as err:  # noqa: BLE001 -- any learner error (even sys.exit) becomes a message
        return None, f"`{name}` raised {type(err).__name__}: {err}. Expected it to return {_CURRENT['expects']}."
    _CURRENT.update(got=got, called=True)
    return got, None


def _as_float(value: Any) -> float | None:
    """A Python float from a number, a numpy scalar or a one-element tensor/array; None otherwise."""
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_complex():
            return None
        value = value.detach().reshape(()).item()
    elif isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.reshape(()).item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return float(value)


def _not_a_number(value: Any, what: str = "a number") -> str:
    """The message for an answer that should have been one number."""
    hint = " Reduce it to one value (one number, or a tensor with one element)." if isinstance(value, (Tensor, np.ndarray)) else ""
    return f"expected {what}, got {_describe(value)}.{hint}"


def _random_boxes(n: int, seed: int, size: float = 100.0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2 + 1
    return torch.cat([xy, xy + wh], dim=1)


def _same(got: Any, want: Tensor, atol: float = 1e-5) -> tuple[bool, str]:
    """Compare the learner's tensor with the reference: (equal?, what differs -- type, shape or values)."""
    if not isinstance(got, Tensor):
        return False, f"expected a torch.Tensor of shape {tuple(want.shape)}, got {_describe(got)}."
    if got.shape != want.shape:
        return False, f"expected shape {tuple(want.shape)}, got {_describe(got)}."
    if got.is_complex():
        return False, f"expected real numbers, got {_describe(got)}."
    gap = (got.detach().double() - want.double()).abs()
    if not torch.allclose(got.detach().double(), want.double(), atol=atol, rtol=1e-5) or gap.isnan().any():
        return False, f"values differ (largest gap {gap.nan_to_num(float('inf')).max().item():.4g})."
    return True, ""


@_check("a tensor of areas, shape (N,)")
def check_box_area(fn: Callable[[Tensor], Tensor], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 00): area of xyxy boxes, (N, 4) -> (N,)."""
    boxes = _random_boxes(20, seed=0 + 1000 * variant)
    got, err = _call(fn, boxes.clone())  # a copy: an answer may change its input in place
    if err:
        return _report(False, err)
    want = B.box_area(boxes)
    ok, why = _same(got, want)
    if not ok and isinstance(got, Tensor) and got.shape == want.shape:
        plus_one = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
        if torch.allclose(got.float(), plus_one):
            why += " You added +1 to width and height: that is the old Pascal VOC pixel convention; COCO and torchvision use w = x2 - x1."
    return _report(ok, "area = (x2 - x1) * (y2 - y1) for every box." if ok else why)


@_check("a tensor of xyxy boxes, shape (N, 4)")
def check_xywh_to_xyxy(fn: Callable[[Tensor], Tensor], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 00): convert COCO (x, y, w, h) boxes to (x1, y1, x2, y2)."""
    xywh = B.box_convert(_random_boxes(20, seed=1 + 1000 * variant), "xyxy", "xywh")
    got, err = _call(fn, xywh.clone())
    if err:
        return _report(False, err)
    want = B.box_convert(xywh, "xywh", "xyxy")
    ok, why = _same(got, want)
    if not ok and isinstance(got, Tensor) and got.shape == want.shape:
        if torch.allclose(got.float(), B.box_convert(xywh, "cxcywh", "xyxy")):
            why += " You treated (x, y) as the box centre; in COCO it is the top-left corner."
    return _report(ok, "x2 = x + w, y2 = y + h." if ok else why)


@_check("a tensor of IoUs, shape (N, M)")
def check_box_iou(fn: Callable[[Tensor, Tensor], Tensor], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 01): pairwise IoU, (N, 4) and (M, 4) -> (N, M)."""
    a, b = _random_boxes(7, seed=2 + 1000 * variant), _random_boxes(5, seed=3 + 1000 * variant)
    b[0] = torch.tensor([500.0, 500.0, 510.0, 510.0])  # far from everything: IoU must be 0
    got, err = _call(fn, a.clone(), b.clone())
    if err:
        return _report(False, err)
    want = B.box_iou(a, b)
    ok, why = _same(got, want)
    if not ok and isinstance(got, Tensor) and got.shape == want.shape:
        if (got[:, 0] != 0).any():
            why += " Disjoint boxes must have IoU 0: clamp the intersection's width and height at 0."
        elif (got > want + 1e-6).any() or (got < want - 1e-6).any():
            why += " Check the union: |A| + |B| - |A ∩ B| (subtract the intersection once)."
    return _report(ok, "your IoU matches torchvision.ops.box_iou on 35 pairs." if ok else why)


@_check("a 1-D int64 tensor of kept indices, best score first")
def check_nms(fn: Callable[[Tensor, Tensor, float], Tensor], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 01): greedy NMS returning kept indices, best score first.

    A box is suppressed when its IoU with a kept box is strictly greater than the threshold. The
    first case has IoUs exactly at the threshold (0.5 = 200 / 400, exact in float32), where ``>`` and
    ``>=`` disagree; then 3 random sets.
    """
    at_threshold = torch.tensor([[0.0, 0.0, 30.0, 10.0], [10.0, 0.0, 40.0, 10.0], [20.0, 0.0, 50.0, 10.0],
                                 [100.0, 100.0, 110.0, 110.0]])
    # A chain: box 1 overlaps boxes 0 and 2 (IoU 0.54 each), boxes 0 and 2 barely (0.25). Box 1 is
    # suppressed by box 0, and a suppressed box suppresses nothing: box 2 stays.
    chain = torch.tensor([[0.0, 0.0, 10.0, 10.0], [3.0, 0.0, 13.0, 10.0], [6.0, 0.0, 16.0, 10.0]])
    cases = [(at_threshold, torch.tensor([0.9, 0.8, 0.7, 0.6]), 0.5), (chain, torch.tensor([0.9, 0.8, 0.7]), 0.5)]
    for seed, thr in ((4, 0.5), (5, 0.3), (6, 0.7)):
        cases.append((_random_boxes(40, seed=seed + 1000 * variant, size=60), torch.rand(40, generator=torch.Generator().manual_seed(seed + 1000 * variant)), thr))
    for i, (boxes, scores, thr) in enumerate(cases):
        got, err = _call(fn, boxes.clone(), scores.clone(), thr)
        if err:
            return _report(False, err)
        want = B.nms(boxes, scores, thr)
        if not isinstance(got, Tensor) or got.dim() != 1 or got.is_floating_point() or got.is_complex():
            return _report(False, f"expected a 1-D tensor of integer indices, got {_describe(got)}.")
        if got.dtype == torch.bool:
            return _report(False, "you returned a keep-mask (bool); return the kept boxes' indices, e.g. "
                                  "torch.tensor(keep, dtype=torch.int64), best score first.")
        if got.dtype != torch.int64:
            return _report(False, f"indices must be int64 (what torch.argsort and torchvision's nms return), got {got.dtype}.")
        if sorted(got.tolist()) == sorted(want.tolist()) and got.tolist() != want.tolist():
            return _report(False, "you keep the right boxes but in the wrong order: return them by decreasing score.")
        if got.tolist() != want.tolist():
            if i == 1:
                return _report(False, f"on three boxes in a chain (IoU(0, 1) = IoU(1, 2) = 0.54, IoU(0, 2) = 0.25) you kept "
                               f"{got.tolist()}, expected {want.tolist()}: box 1 is suppressed by box 0, and a suppressed box "
                               "suppresses nothing, so box 2 stays. Compare each box with the *kept* boxes only.")
            if i == 0:
                ious = B.box_iou(boxes, boxes)
                return _report(False, f"boxes whose IoU is exactly the threshold {thr}: you kept {got.tolist()}, expected "
                               f"{want.tolist()} (IoU(box 0, box 1) = {ious[0, 1].item():g}, IoU(box 1, box 2) = "
                               f"{ious[1, 2].item():g}). A box is suppressed only when IoU > threshold (strictly greater), "
                               "so IoU = threshold keeps it.")
            if len(got) == len(want):
                hint = " The same number of boxes but not the same ones: visit the boxes in order of decreasing score."
            else:
                hint = " Suppress a box when IoU > threshold (strictly greater), and compare against kept boxes only."
            return _report(False, f"at iou_threshold={thr} you kept {len(got)} boxes, the reference keeps {len(want)}.{hint}")
    return _report(True, "same indices, same order as the reference on boxes at the threshold, a chain, and 3 random sets.")


@_check("one number, the AP in [0, 1]")
def check_average_precision(fn: Callable[[np.ndarray, int], float], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 01): COCO 101-point AP from score-sorted TP flags."""
    rng = np.random.default_rng(7 + 1000 * variant)
    for _ in range(5):
        is_tp = rng.random(30) < 0.6
        num_gt = int(is_tp.sum() + rng.integers(0, 5))
        got, err = _call(fn, is_tp.copy(), num_gt)
        if err:
            return _report(False, err)
        want = float(precision_at_recall(is_tp, num_gt).mean())
        value = _as_float(got)
        if value is None:
            return _report(False, _not_a_number(got, "one number, the AP"))
        got = value
        if not abs(got - want) <= 1e-6:  # NaN fails too
            tp = np.cumsum(is_tp).astype(float)
            raw = tp / np.arange(1, len(is_tp) + 1)
            recall = tp / num_gt
            envelope = np.maximum.accumulate(raw[::-1])[::-1]

            def sampled(precision: np.ndarray, levels: np.ndarray, side: str = "left") -> float:
                idx = np.searchsorted(recall, levels, side=side)
                return float(np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0).mean())

            levels = np.linspace(0, 1, 101)
            hints = [
                (raw.mean(), "That is the mean raw precision: compute recall, take the precision envelope, and sample it "
                             "at 101 recall points."),
                (sampled(raw, levels), "You sampled the raw precision: take the envelope first (at each recall, the "
                                       "highest precision at that recall or beyond)."),
                (sampled(envelope, np.arange(0, 1, 0.01)), "You used 100 recall levels (0 to 0.99): COCO uses 101, 0 to 1 "
                                                            "inclusive (np.linspace(0, 1, 101))."),
                (sampled(envelope, levels, "right"), "At each level r take the first detection whose recall is >= r "
                                                      "(searchsorted side='left'), not the first whose recall is > r."),
            ]
            hint = next((h for v, h in hints if abs(got - v) < 1e-6), "Compute precision and recall after each detection, "
                        "take the envelope, then average it at the 101 recall levels 0, 0.01, ..., 1 (0 where recall never reaches r).")
            return _report(False, f"AP should be {want:.4f}, got {got:.4f}. {hint}")
    return _report(True, "matches COCO's 101-point interpolated AP on 5 random rankings.")


@_check("a tuple (TP, FP, FN) of three integers")
def check_error_counts(fn: Callable[[dict[str, Tensor], dict[str, Tensor], float, float], tuple[int, int, int]], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 02): (TP, FP, FN) for one image at a score and IoU threshold.

    A prediction is a TP if it matches (same label, IoU >= threshold) a ground
    truth that no higher-scored prediction has matched.
    """
    gen = torch.Generator().manual_seed(8 + 1000 * variant)
    gt_boxes = _random_boxes(5, seed=9 + 1000 * variant)
    target = {"boxes": gt_boxes, "labels": torch.tensor([1, 2, 1, 3, 2])}
    jitter = torch.randn(8, 4, generator=gen) * 3
    pred = {
        "boxes": torch.cat([gt_boxes, gt_boxes[:3]]) + jitter,
        "scores": torch.rand(8, generator=gen),
        "labels": torch.tensor([1, 2, 1, 3, 1, 1, 2, 1]),
    }
    def case(gt: list, boxes: list, scores: list) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        return ({"boxes": torch.tensor(boxes), "scores": torch.tensor(scores), "labels": torch.ones(len(boxes), dtype=torch.int64)},
                {"boxes": torch.tensor(gt), "labels": torch.ones(len(gt), dtype=torch.int64)})

    two_gt = [[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0]]
    crafted = [  # (pred, target, score_thr, iou_thr, what an answer that fails here gets wrong)
        (*case(two_gt, [[0.0, 0.0, 9.0, 10.0], [1.0, 0.0, 11.0, 10.0]], [0.5, 0.9]), 0.0, 0.5,
         " Take the predictions best score first (the second one here, score 0.9, claims the first ground truth), "
         "and let each ground truth be claimed once."),
        (*case([[0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0]], [[0.0, 0.0, 10.0, 10.0], [0.5, 0.0, 10.5, 10.0]], [0.9, 0.5]),
         0.0, 0.5, " When a prediction's best ground truth is already claimed, it claims the best *unclaimed* one "
                   "with IoU >= threshold (here IoU 0.74), not a FP."),
        (*case([[0.0, 0.0, 10.0, 10.0]], [[0.0, 0.0, 10.0, 10.0]], [0.5]), 0.5, 0.5,
         " Keep predictions with score >= score_threshold: a score equal to it counts."),
        (*case([[0.0, 0.0, 10.0, 10.0]], [[0.0, 0.0, 10.0, 5.0]], [0.9]), 0.0, 0.5,
         " A match needs IoU >= iou_threshold: an IoU equal to it (here exactly 0.5) counts."),
    ]
    random_cases = [(pred, target, score_thr, iou_thr, "") for score_thr, iou_thr in ((0.0, 0.5), (0.5, 0.5), (0.2, 0.9))]
    for pred, target, score_thr, iou_thr, hint in (crafted if not variant else []) + random_cases:
        got, err = _call(fn, pred, target, score_thr, iou_thr)
        if err:
            return _report(False, err)
        want = count_errors(pred, target, score_thr, iou_thr)
        counts = [_as_int(v) for v in got] if isinstance(got, (tuple, list)) else []
        if len(counts) != 3 or None in counts:
            return _report(False, f"expected a tuple (TP, FP, FN) of three integers, got {_describe(got)}"
                                  f"{': ' + ', '.join(_describe(v) for v in got[:3]) if isinstance(got, (tuple, list)) else ''}.")
        got = tuple(counts)
        if got != want:
            return _report(False, f"at score >= {score_thr}, IoU >= {iou_thr}: expected (TP, FP, FN) = {want}, got {got}."
                           + (hint or " Each ground truth can be matched once; labels must agree; FN = ground truths left unmatched."))
    return _report(True, "TP/FP/FN counts agree on four crafted cases (score order, the next unclaimed ground truth, "
                         "a score and an IoU at their thresholds) and at three (score, IoU) thresholds.")


@_check("a Hook subclass whose `values` list gets one float per optimizer step")
def check_loss_recorder(hook_class: type) -> CheckResult:
    """Exercise (notebook 02): a Hook that records the total loss after every step in ``self.values``.

    Trains a small model for 2 steps with the learner's hook and a second hook that notes, after the
    learner's ``after_backward`` and after its ``after_step``, how many values were recorded: a hook
    that records after each optimizer step has recorded k values before step k's ``optimizer.step()``
    and k + 1 after it.
    """
    from .data import SyntheticShapes, collate_detection
    from .models import TinyDetector
    from .train import _HOOK_METHODS, Hook, fit

    if not callable(hook_class):
        return _report(False, f"expected your hook class, got {_describe(hook_class)}.")
    try:
        hook = hook_class()
    except NotImplementedError:
        return _report(False, "creating your hook raises NotImplementedError -- replace it with your code.")
    except (Exception, SystemExit) as err:  # noqa: BLE001
        return _report(False, f"could not create your hook: {type(err).__name__}: {err}")
    missing = [m for m in _HOOK_METHODS if not callable(getattr(hook, m, None))]
    if missing:
        return _report(False, f"`{getattr(hook_class, '__name__', 'your class')}()` gave {_describe(hook)}, which has no "
                       f"{missing[0]}(): expected a Hook subclass (class LossRecorder(Hook): ...).")

    class Counter(Hook):  # runs after the learner's hook: how many values exist at each point of the step
        def __init__(self) -> None:
            self.after_backward_counts: list[int] = []
            self.after_step_counts: list[int] = []

        @staticmethod
        def _count() -> int:
            values = getattr(hook, "values", None)
            return len(values) if isinstance(values, list) else -1

        def after_backward(self, state: Any) -> None:
            self.after_backward_counts.append(self._count())

        def after_step(self, state: Any) -> None:
            self.after_step_counts.append(self._count())

    counter = Counter()
    torch.manual_seed(0)
    model = TinyDetector(width=0.25, depth=0)
    data = [SyntheticShapes(4, seed=0)[i] for i in range(4)]
    loader = torch.utils.data.DataLoader(data, batch_size=2, collate_fn=collate_detection)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    try:
        history = fit(model, loader, optimizer, epochs=1, device=torch.device("cpu"), hooks=[hook, counter], progress=False)
    except NotImplementedError:
        return _report(False, "a method of your hook still raises NotImplementedError -- replace it with your code.")
    except (Exception, SystemExit) as err:  # noqa: BLE001
        return _report(False, f"training with your hook failed: {type(err).__name__}: {err}")
    values = getattr(hook, "values", None)
    if not isinstance(values, list) or len(values) != 2:
        got = (repr(values) if len(values) <= 4 else f"a list of {len(values)}") if isinstance(values, list) else _describe(values)
        return _report(False, f"after 2 optimizer steps `hook.values` should hold 2 numbers, got {got}. "
                       "Which hook method runs once after every optimizer step?")
    if any(isinstance(x, Tensor) for x in values):
        return _report(False, f"`hook.values` holds {_describe(next(x for x in values if isinstance(x, Tensor)))}: "
                       "store Python floats -- call .item() on the summed loss (a stored tensor also keeps the step's "
                       "whole autograd graph alive).")
    numbers = [_as_float(x) for x in values]
    if None in numbers:
        return _report(False, f"`hook.values` holds {_describe(values[numbers.index(None)])}; expected one float per step.")
    if not np.allclose(numbers, history["loss"], rtol=1e-5):
        return _report(False, f"recorded {numbers} but the losses were {history['loss']}. Sum `state.losses.values()` and call .item().")
    if counter.after_backward_counts != [0, 1] or counter.after_step_counts != [1, 2]:
        return _report(False, "the values are right, but your hook records them before `optimizer.step()` (in "
                       "`after_backward` or earlier): the exercise asks for the loss after every optimizer step -- "
                       "override `after_step`.")
    return _report(True, "your hook recorded the right loss after each of the 2 optimizer steps.")


def _grad_params(seed: int, scale: float = 1.0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    params = []
    for shape in ((6, 3, 3, 3), (4, 6), (4,)):
        p = torch.nn.Parameter(torch.randn(shape, generator=g))
        p.grad = torch.randn(shape, generator=g) * scale
        params.append(p)
    params.append(torch.nn.Parameter(torch.randn(3, generator=g)))  # no gradient: must be skipped
    return params


@_check("the total gradient norm before clipping (a number or 0-d tensor), with the gradients clipped in place")
def check_clip_grad_norm(fn: Callable[[list, float], Tensor], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 03): global-norm clipping, in place; returns the norm before clipping."""
    for seed, max_norm in ((0, 1.0), (1, 100.0), (2, 0.01)):
        ours, ref = _grad_params(seed + 1000 * variant), _grad_params(seed + 1000 * variant)
        got, err = _call(fn, ours, max_norm)
        if err:
            return _report(False, err)
        want = torch.nn.utils.clip_grad_norm_(ref, max_norm)
        got_value = _as_float(got)
        if got_value is None:
            return _report(False, _not_a_number(got, "the total norm before clipping (a number or 0-d tensor)"))
        if not abs(got_value - want.item()) <= 1e-4 * max(1.0, want.item()):  # NaN fails too
            return _report(False, f"returned norm {got_value:.5g}, expected {want.item():.5g}: the norm of all gradients "
                           "together, sqrt(sum of squares over every parameter), taken *before* clipping.")
        for p, q in zip(ours, ref):
            if q.grad is None:
                continue
            if not isinstance(p.grad, Tensor) or p.grad.shape != q.grad.shape:
                return _report(False, f"after your function a parameter's .grad is {_describe(p.grad)}, expected a tensor "
                               f"of shape {tuple(q.grad.shape)}: scale the gradients in place (p.grad.mul_(factor)).")
            if not torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7):
                ratio = (p.grad.norm() / q.grad.norm()).item()
                hint = (" Only scale down: if the norm is already below max_norm, leave the gradients alone."
                        if max_norm >= want.item() else " Scale every gradient by the same factor max_norm / total_norm.")
                return _report(False, f"gradients differ from torch.nn.utils.clip_grad_norm_ at max_norm={max_norm} "
                               f"(norm ratio {ratio:.3g}).{hint}")
    # model.parameters() is a generator: it can be iterated only once
    ours, ref = _grad_params(5), _grad_params(5)
    got, err = _call(fn, (p for p in ours), 1.0)
    if err:
        return _report(False, f"given a generator, as model.parameters() is: {err}")
    torch.nn.utils.clip_grad_norm_(ref, 1.0)
    if any(q.grad is not None and not (isinstance(p.grad, Tensor) and torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7))
           for p, q in zip(ours, ref)):
        return _report(False, "right with a list, but given a generator (what model.parameters() returns) the gradients "
                       "were not clipped: a generator can be iterated only once, so a second `for p in parameters` loop "
                       "sees nothing. Collect the gradients in a list first: grads = [p.grad for p in parameters if p.grad is not None].")
    return _report(True, "same gradients and same returned norm as torch.nn.utils.clip_grad_norm_, "
                         "given a list or a generator of parameters.")


@_check("the parameter's gradient clipped in place (the return value is not used)")
def check_agc(fn: Callable[[torch.nn.Parameter, float, float], None], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 03): AGC for one parameter, in place (see ``adaptive_clip_grad_``).

    The gradients' output units are scaled from 0.01 to 3 times their size, so that some units lie
    below the limit (and must stay as they are) and others above it; a bias is below it for seed 4.
    """
    from .clipping import adaptive_clip_grad_

    for seed in (3, 4):
        for index in range(3):  # a conv kernel, a matrix, a bias
            ours, ref = _grad_params(seed + 1000 * variant, scale=0.2)[index], _grad_params(seed + 1000 * variant, scale=0.2)[index]
            units = torch.logspace(-2, math.log10(3.0), ours.shape[0]) if ours.ndim > 1 else torch.tensor(0.01 if seed == 4 else 1.0)
            for p in (ours, ref):
                p.grad.mul_(units.reshape(-1, *[1] * (p.ndim - 1)) if p.ndim > 1 else units)
            got, err = _call(fn, ours, 0.05, 1e-3)
            if err:
                return _report(False, err)
            adaptive_clip_grad_([ref], 0.05, 1e-3)
            if not isinstance(ours.grad, Tensor) or ours.grad.shape != ref.grad.shape:
                return _report(False, f"after your function param.grad is {_describe(ours.grad)}, expected a tensor of "
                               f"shape {tuple(ref.grad.shape)}: clip the gradient in place (param.grad.mul_(...)).")
            if not torch.allclose(ours.grad, ref.grad, rtol=1e-5, atol=1e-7):
                kind = {4: "conv kernel", 2: "weight matrix", 1: "bias"}[ref.ndim]
                return _report(False, f"wrong gradient for a {kind} of shape {tuple(ref.shape)}. Norms are per output "
                               "unit (dim 0) for kernels and matrices, over the whole tensor for a bias; "
                               "clip only units where ||G_i|| > clip_factor * max(||W_i||, eps).")
    # units whose weights are (almost) zero, e.g. freshly zero-initialised: eps keeps their gradient alive
    ours, ref = _grad_params(5, scale=0.2)[0], _grad_params(5, scale=0.2)[0]
    with torch.no_grad():
        for p in (ours, ref):
            p[0].zero_()
            p[1].mul_(1e-4)
    got, err = _call(fn, ours, 0.05, 1e-2)
    if err:
        return _report(False, err)
    adaptive_clip_grad_([ref], 0.05, 1e-2)
    if not isinstance(ours.grad, Tensor) or not torch.allclose(ours.grad, ref.grad, rtol=1e-5, atol=1e-7):
        return _report(False, "right on ordinary weights, wrong where a unit's weights are zero or tiny (||W_i|| < eps): "
                       "there the limit is clip_factor * eps, not clip_factor * ||W_i|| (which would wipe the gradient "
                       "of a zero-initialised unit, so it could never learn). Use max(||W_i||, eps).")
    return _report(True, "matches the AGC formula on a conv kernel, a matrix and a bias, and near-zero weights use eps.")


@_check("a pair (scale, zero_point): a positive float and an integer")
def check_qparams(fn: Callable[[float, float, int], tuple[Any, Any]], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 04): asymmetric unsigned ``(scale, zero_point)`` for a range ``[x_min, x_max]``."""
    from .quant import fake_quantize

    cases = ((-0.3, 1.0, 8), (0.0, 6.0, 8), (-2.0, -0.5, 8), (0.2, 0.9, 4), (-1.0, 3.0, 2), (-5e-4, 2e-3, 8))
    if variant:  # hidden cases
        cases = ((-1.3, 0.45, 8), (0.05, 2.5, 6), (-7.0, -0.25, 4), (-0.02, 0.9, 3))
    short: list[str] = []  # ranges whose ends the learner's grid stops short of (allowed, but said)
    for x_min, x_max, bits in cases:
        got, err = _call(fn, x_min, x_max, bits)
        if err:
            return _report(False, err)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            return _report(False, f"return a pair (scale, zero_point), got {_describe(got)}.")
        scale, zp = _as_float(got[0]), _as_float(got[1])
        if scale is None or zp is None or not math.isfinite(scale) or not math.isfinite(zp):
            return _report(False, f"scale and zero_point must be numbers, got {_describe(got[0])} and {_describe(got[1])}.")
        q_max = 2**bits - 1
        if zp != round(zp):
            return _report(False, f"zero_point must be an integer (got {zp} for [{x_min}, {x_max}]): round it, "
                           "so that real 0 lands exactly on a level.")
        zp = int(round(zp))
        right_z = -round(min(x_min, 0.0) / ((max(x_max, 0.0) - min(x_min, 0.0)) / q_max))
        if right_z != 0 and zp == -right_z:
            return _report(False, f"zero_point {zp} for [{x_min}, {x_max}] has the wrong sign: Z = q_min − round(x_min / S) "
                           f"= {right_z} (x_min is negative, so Z is positive).")
        if not 0 <= zp <= q_max:
            return _report(False, f"zero_point {zp} is outside 0..{q_max} for [{x_min}, {x_max}]: first widen the range "
                           "to include 0 (x_min = min(x_min, 0), x_max = max(x_max, 0)).")
        lo, hi = min(x_min, 0.0), max(x_max, 0.0)
        ideal = (hi - lo) / q_max
        if not ideal * (1 - 1e-3) <= scale <= ideal * (1 + 2.0 / q_max) + 1e-12:
            return _report(False, f"scale {scale:.6g} for [{x_min}, {x_max}] at {bits} bits; expected about "
                           f"{ideal:.6g} = (x_max - x_min) / (2^bits - 1) after widening the range to include 0.")
        x = torch.linspace(lo, hi, 201)
        worst = (fake_quantize(x, scale, zp, 0, q_max) - x).abs().max().item()
        if worst > 0.5001 * scale + 1e-9:
            return _report(False, f"values in [{x_min}, {x_max}] are off by up to {worst:.3g} > scale/2: the grid "
                           "S·(q − Z), q = 0..2^bits − 1, does not cover the range. Z = −round(x_min / S).")
        grid_lo, grid_hi = scale * (0 - zp), scale * (q_max - zp)
        if grid_lo > lo + 1e-12 * max(1.0, abs(lo)) or grid_hi < hi - 1e-12 * max(1.0, abs(hi)):
            short.append(f"[{grid_lo:.6g}, {grid_hi:.6g}] for [{lo:g}, {hi:g}]")
    note = ""
    if short:  # true of some correct answers: rounding Z moves the grid by up to S/2
        note = (f" (Your grid does not reach both ends everywhere -- {short[0]}: rounding Z shifts it by up to S/2, "
                "so the values beyond its end clamp to the last level, still within S/2.)")
    return _report(True, "real 0 is exactly a level and every value of each range is within S/2 of a level, "
                         f"in all {len(cases)} ranges (2 to 8 bits).{note}")


@_check("a tensor shaped like x, with a straight-through gradient")
def check_fake_quantize(fn: Callable[[Tensor, float, int, int, int], Tensor], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 04): fake quantization with a straight-through gradient."""
    for bits, signed, scale, zp in ((8, False, 0.02, 128), (4, True, 0.3, 0), (3, False, 0.5, 2)):
        q_min, q_max = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        g = torch.Generator().manual_seed(bits + 1000 * variant)
        x = torch.randn(400, generator=g) * scale * (q_max - q_min) / 3
        ours, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
        got, err = _call(fn, ours, scale, zp, q_min, q_max)
        if err:
            return _report(False, err)
        if not isinstance(got, Tensor) or got.shape != x.shape:
            return _report(False, f"return a tensor shaped like x {tuple(x.shape)}, got {_describe(got)}.")
        want = torch.fake_quantize_per_tensor_affine(ref, scale, zp, q_min, q_max)
        off = ~((got.detach() - want.detach()).abs() <= 1e-6)  # NaN counts as off
        if off.float().mean() > 0.005 or ((got.detach() - want.detach()).abs()[off] > scale * 1.001).any():
            levels = torch.unique(got.detach()).numel()
            hint = (" It has more distinct values than the 2^bits levels: did you forget to round?" if levels > q_max - q_min + 1
                    else " Check: round to nearest (torch.round, not int() or floor), add Z, clamp to [q_min, q_max], "
                    "subtract Z, multiply by S.")
            return _report(False, f"forward differs from torch.fake_quantize_per_tensor_affine for {bits}-bit "
                           f"{'signed' if signed else 'unsigned'} (scale {scale}, zero point {zp}).{hint}")
        tie = torch.arange(q_min - zp - 1, q_max - zp + 1, dtype=torch.float32) + 0.5  # exactly halfway between levels
        tied, err = _call(fn, tie * 2.0**-3, 2.0**-3, zp, q_min, q_max)  # a power-of-two scale: x / S is exact
        if err:
            return _report(False, err)
        want_tied = torch.fake_quantize_per_tensor_affine(tie * 2.0**-3, 2.0**-3, zp, q_min, q_max)
        if isinstance(tied, Tensor) and tied.shape == tie.shape and not torch.equal(tied.detach().float(), want_tied):
            return _report(False, f"values exactly halfway between two levels round wrong ({bits}-bit, zero point {zp}): "
                           "torch.round rounds half to even (0.5 -> 0, 1.5 -> 2, 2.5 -> 2), as integer hardware and ONNX "
                           "Runtime do; floor(x + 0.5) rounds every half up, a bias of +S/2 on those values. Use torch.round.")
        if not got.requires_grad:
            return _report(False, "the output has no gradient: build it from x with differentiable operations "
                           "(e.g. x + (rounded - x).detach()) or a torch.autograd.Function.")
        upstream = torch.randn(x.shape, generator=g)
        got.backward(upstream)
        want.backward(upstream)
        if ours.grad is None or not torch.allclose(ours.grad, ref.grad):
            if ours.grad is not None and ours.grad.abs().sum() == 0:
                hint = "the gradient is zero everywhere: that is round's true derivative. Use the straight-through estimator."
            elif ours.grad is not None and torch.allclose(ours.grad, upstream):
                hint = "the gradient passes everywhere: the STE passes it only where round(x/S) + Z is inside [q_min, q_max]."
            else:
                hint = "the gradient should be the upstream gradient where round(x/S) + Z is in [q_min, q_max], 0 elsewhere."
            return _report(False, f"backward differs from torch's: {hint}")
    return _report(True, "same forward and same straight-through gradient as torch.fake_quantize_per_tensor_affine.")


@_check("a pair (weight, bias) of tensors")
def check_fold_bn(fn: Callable[..., tuple[Tensor, Tensor]], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 05): fold BN into the preceding conv; returns ``(weight, bias)``."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    g = torch.Generator().manual_seed(5 + 1000 * variant)
    for has_bias in (True, False):
        w = torch.randn(6, 3, 3, 3, generator=g)
        b = torch.randn(6, generator=g) if has_bias else None
        gamma, beta = torch.rand(6, generator=g) + 0.5, torch.randn(6, generator=g)
        mean, var = torch.randn(6, generator=g), torch.rand(6, generator=g) + 0.1
        got, err = _call(fn, w, b, gamma, beta, mean, var, 1e-5)
        if err:
            return _report(False, err)
        want_w, want_b = fuse_conv_bn_weights(w, b, mean, var, 1e-5, gamma, beta)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            return _report(False, f"return a pair (weight, bias), got {_describe(got)}.")
        got_w, got_b = got
        if not isinstance(got_w, Tensor) or not isinstance(got_b, Tensor):
            return _report(False, f"return two tensors (weight {tuple(want_w.shape)}, bias {tuple(want_b.shape)}), "
                           f"got {_describe(got_w)} and {_describe(got_b)}.")
        if tuple(got_b.shape) != tuple(want_b.shape):
            return _report(False, f"bias shape {tuple(got_b.shape)}, expected {tuple(want_b.shape)}: one bias per output channel.")
        if tuple(got_w.shape) != tuple(want_w.shape):
            return _report(False, f"weight shape {tuple(got_w.shape)}, expected {tuple(want_w.shape)}: scale each output "
                           "channel, i.e. multiply by factor.reshape(-1, 1, 1, 1).")
        if not torch.allclose(got_w.detach(), want_w.detach(), atol=1e-5):
            return _report(False, "weights differ: W' = W · γ / sqrt(σ² + ε), one factor per output channel (use the variance, "
                           "not the standard deviation, under the square root, and add ε).")
        if not torch.allclose(got_b.detach(), want_b.detach(), atol=1e-5):
            hint = " The conv has no bias here: treat it as 0." if not has_bias else ""
            return _report(False, f"bias differs: b' = (b − μ) · γ / sqrt(σ² + ε) + β.{hint}")
    return _report(True, "same folded weight and bias as torch.nn.utils.fusion.fuse_conv_bn_weights.")


@_check("a Hook subclass taking freeze_step, whose after_step freezes BN statistics")
def check_freeze_bn_hook(hook_class: type) -> CheckResult:
    """Exercise (notebook 05): a training-loop hook that freezes BN statistics after ``freeze_step`` optimizer steps."""
    from .quant import QuantConvBn2d, prepare_qat
    from .train import StepState

    model = prepare_qat(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()))
    blocks = [m for m in model.modules() if isinstance(m, QuantConvBn2d)]
    if not callable(hook_class):
        return _report(False, f"expected your hook class, got {_describe(hook_class)}.")
    name = getattr(hook_class, "__name__", "your class")
    try:
        hook = hook_class(freeze_step=3)
    except NotImplementedError:
        return _report(False, f"`{name}(freeze_step=3)` still raises NotImplementedError -- replace it with your code.")
    except (Exception, SystemExit) as exc:  # noqa: BLE001 -- report any construction error to the learner
        return _report(False, f"`{name}(freeze_step=3)` raised {type(exc).__name__}: {exc}")
    if not callable(getattr(hook, "after_step", None)):
        return _report(False, f"`{name}(freeze_step=3)` gave {_describe(hook)}, which has no after_step(): "
                       "expected a Hook subclass (class FreezeBNAfter(Hook): ...).")
    state = StepState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    for step in range(6):
        state.step = step
        try:
            hook.after_step(state)
        except NotImplementedError:
            return _report(False, "`after_step` still raises NotImplementedError -- replace it with your code.")
        except (Exception, SystemExit) as exc:  # noqa: BLE001
            return _report(False, f"`after_step` raised {type(exc).__name__}: {exc}")
        frozen = all(b.bn_frozen for b in blocks)
        steps_done = step + 1
        if steps_done < 3 and frozen:
            return _report(False, f"BN froze after {steps_done} step(s); it should train for 3 steps first "
                           "(state.step counts from 0 and after_step runs after the step).")
        if steps_done >= 3 and not frozen:
            return _report(False, f"BN statistics still not frozen after {steps_done} steps: call "
                           "course_utils.quant.freeze_bn_stats(state.model) once state.step + 1 >= freeze_step.")
    return _report(True, "BN statistics freeze exactly after 3 steps and stay frozen.")


@_check("a 0-d tensor (the loss) with a gradient to the student's logits")
def check_kd_loss(fn: Callable[[Tensor, Tensor, float], Tensor], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 06): Hinton's ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, batch mean."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(6 + 1000 * variant)
    for temperature in (1.0, 4.0, 10.0):
        s, t = torch.randn(16, 10, generator=g) * 3, torch.randn(16, 10, generator=g) * 3
        ours = s.clone().requires_grad_()
        got, err = _call(fn, ours, t, temperature)
        if err:
            return _report(False, err)
        if not isinstance(got, Tensor) or got.numel() != 1:
            return _report(False, f"return one number (a 0-d tensor), got {_describe(got)}: average over the batch, "
                           "sum over the classes.")
        want = temperature**2 * F.kl_div(F.log_softmax(s / temperature, -1), F.softmax(t / temperature, -1),
                                         reduction="batchmean")
        value, ref = got.detach().reshape(()).item(), want.item()
        if not math.isclose(value, ref, rel_tol=1e-4, abs_tol=1e-6):
            p_s, p_t = F.softmax(s / temperature, -1), F.softmax(t / temperature, -1)
            reverse = temperature**2 * (p_s * (p_s.log() - p_t.log())).sum(-1).mean().item()
            entropy = -(p_t * p_t.log()).sum(-1).mean().item()  # H(p_t): soft cross-entropy = KL + H(p_t)
            if any(math.isclose(value, c * (ref / temperature**2 + entropy), rel_tol=1e-4) for c in (1, temperature**2)):
                hint = ("that is the soft cross-entropy −Σ p_t · log p_s, which equals KL(p_t ‖ p_s) plus the teacher's "
                        "entropy H(p_t), a constant: the same gradient, but not KL (KL is 0 when the student matches the "
                        "teacher). Use F.kl_div, or subtract H(p_t).")
            elif math.isclose(value, -ref, rel_tol=1e-4):
                hint = "the sign is flipped: KL is >= 0 and is *added* to the loss (the often-copied −α·KL pushes the student away)."
            elif temperature != 1 and math.isclose(value, ref / temperature**2, rel_tol=1e-4):
                hint = "missing the T² factor: without it the soft-target gradient shrinks like 1/T²."
            elif math.isclose(value, ref * 16, rel_tol=1e-4):
                hint = "summed over the batch: divide by the batch size (reduction='batchmean')."
            elif math.isclose(value, ref / 10, rel_tol=1e-4):
                hint = "averaged over classes too: sum over the classes, average over the batch only."
            elif math.isclose(value, reverse, rel_tol=1e-4):
                hint = "KL the wrong way round: the teacher's distribution p_t weighs the log-ratio, KL(p_t ‖ p_s)."
            else:
                hint = ("soften both with the same T: log_softmax(s/T) for the student (not softmax: F.kl_div expects "
                        "log-probabilities as its first argument), softmax(t/T) for the teacher.")
            return _report(False, f"at T = {temperature:g} got {value:.5g}, expected {ref:.5g}: {hint}")
        if not got.requires_grad:
            return _report(False, "the loss has no gradient with respect to the student's logits: build it from them "
                           "(no .detach(), .item() or numpy in between).")
    return _report(True, "equals T² · F.kl_div(log_softmax(s/T), softmax(t/T), reduction='batchmean') for T = 1, 4, 10.")


@_check("a 0-d tensor (the loss) with a gradient to the student's features only")
def check_feature_imitation(fn: Callable[[Tensor, Tensor, Tensor], Tensor], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 06): masked feature imitation ``Σ_mask ‖f_s − f_t‖² / (2 · N_mask · C)``."""
    from .distill import feature_imitation_loss

    g = torch.Generator().manual_seed(7 + 1000 * variant)
    fs, ft = torch.randn(2, 8, 5, 5, generator=g), torch.randn(2, 8, 5, 5, generator=g)
    mask = torch.rand(2, 5, 5, generator=g) > 0.7
    student, teacher = fs.clone().requires_grad_(), ft.clone().requires_grad_()
    got, err = _call(fn, student, teacher, mask)
    if err:
        return _report(False, err)
    if not isinstance(got, Tensor) or got.numel() != 1:
        return _report(False, f"return one number (a 0-d tensor), got {_describe(got)}.")
    want = feature_imitation_loss(fs, ft, mask).item()
    value = got.detach().reshape(()).item()
    if not math.isclose(value, want, rel_tol=1e-4):
        unmasked = feature_imitation_loss(fs, ft, None).item()
        n, c = int(mask.sum()), fs.shape[1]
        all_locations = want * n / mask.numel()
        if math.isclose(value, unmasked, rel_tol=1e-4):
            hint = "the mask is ignored: only locations where mask is True count."
        elif math.isclose(value, all_locations, rel_tol=1e-4):
            hint = "divided by all locations: divide by the number of masked locations N_mask (times 2·C)."
        elif math.isclose(value, want * 2 * c, rel_tol=1e-4) or math.isclose(value, want * 2, rel_tol=1e-4):
            hint = "check the normaliser 2 · N_mask · C."
        else:
            hint = "square the difference, sum over channels and masked locations, divide by 2 · N_mask · C."
        return _report(False, f"got {value:.5g}, expected {want:.5g}: {hint}")
    if not got.requires_grad:
        return _report(False, "the value is right, but no gradient reaches the student's features: build the loss from "
                       "them (no .detach(), .item() or numpy on the student's side).")
    got.backward()
    if teacher.grad is not None and teacher.grad.abs().sum() > 0:
        return _report(False, "the value is right, but gradient reaches the teacher's features: .detach() them -- "
                       "the teacher is a fixed target, not something to train.")
    if student.grad is None or student.grad.abs().sum() == 0:
        return _report(False, "no gradient reaches the student's features.")
    empty, err = _call(fn, fs.clone().requires_grad_(), ft.clone(), torch.zeros_like(mask))
    if err:
        return _report(False, f"with an empty mask (no foreground location): {err}")
    if not isinstance(empty, Tensor) or empty.numel() != 1 or not math.isclose(empty.detach().reshape(()).item(), 0.0, abs_tol=1e-12):
        return _report(False, f"with an empty mask (an image with no object) the loss should be 0, got {_describe(empty)}"
                       + (f" = {empty.detach().reshape(()).item()}" if isinstance(empty, Tensor) and empty.numel() == 1 else "")
                       + ": divide by max(N_mask, 1), not N_mask.")
    return _report(True, "same value as course_utils.distill.feature_imitation_loss (0 for an empty mask), and only "
                         "the student gets a gradient.")


@_check("a boolean tensor shaped like the weight (True = keep)")
def check_magnitude_mask(fn: Callable[[Tensor, float], Tensor], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 07): the keep-mask zeroing the ``round(s·n)`` smallest ``|w|`` of one tensor.

    One case has ``s·n = 0.55 · 21 = 11.55``, where ``round`` (12) and ``int`` (11) differ.
    """
    import torch.nn.utils.prune as torch_prune

    g = torch.Generator().manual_seed(8 + 1000 * variant)
    for shape, amount in (((8, 4, 3, 3), 0.8), ((16, 5), 0.5), ((7, 3), 0.55), ((6, 3, 1, 1), 0.0)):
        w = torch.randn(shape, generator=g)
        got, err = _call(fn, w.clone(), amount)
        if err:
            return _report(False, err)
        if not isinstance(got, Tensor) or got.shape != w.shape or got.is_complex():
            return _report(False, f"return a mask shaped like the weight {tuple(w.shape)}, got {_describe(got)}.")
        if got.dtype != torch.bool:
            return _report(False, f"return a boolean mask (dtype torch.bool, True = keep), got dtype {got.dtype}: "
                           "compare, e.g. |w| >= threshold, or build it with torch.ones(..., dtype=torch.bool).")
        layer = torch.nn.Linear(1, 1)
        layer.weight = torch.nn.Parameter(w.clone())
        want = torch_prune.l1_unstructured(layer, "weight", amount=amount).weight_mask.bool()
        zeroed = int((~got).sum())
        if amount > 0 and torch.equal(got, ~want):
            return _report(False, "the mask is inverted: True must mean *keep* (the large |w|), False = pruned.")
        if zeroed != int((~want).sum()):
            n_want = int((~want).sum())
            hint = (f" int() cuts {amount * w.numel():.4g} down to {zeroed}: count with round()."
                    if zeroed == int(amount * w.numel()) != n_want else " Count with round(), and keep True for weights that stay.")
            return _report(False, f"sparsity {amount}: zeroed {zeroed} of {w.numel()} weights, expected round({amount}·{w.numel()}) "
                           f"= {n_want}.{hint}")
        if not torch.equal(got, want):
            return _report(False, f"sparsity {amount}: a different set of weights is zeroed. Rank by magnitude |w| (not w), "
                           "and zero the smallest ones.")
    # An already-sparse weight: half of it exactly 0. Zeroing 30 of 100 must pick 30 of the tied zeros,
    # so a threshold test (|w| > the 30th smallest |w|, which is 0) zeroes all 50.
    w = torch.randn(10, 10, generator=g)
    w[:, :5] = 0.0
    got, err = _call(fn, w.clone(), 0.3)
    if err:
        return _report(False, err)
    if isinstance(got, Tensor) and got.shape == w.shape and got.dtype == torch.bool:
        zeroed = int((~got).sum())
        if zeroed != 30 or (w.abs()[~got] != 0).any():
            return _report(False, f"on a weight that is already half zeros, sparsity 0.3 zeroed {zeroed} of 100 weights, "
                           "expected 30, all of them among the zeros: with ties at the threshold, a test like |w| > t "
                           "zeroes every tie. Pick exactly round(s·n) entries, e.g. with torch.topk or argsort.")
    return _report(True, "same masks as torch.nn.utils.prune.l1_unstructured, and the right count on an already-sparse weight.")


@_check("one integer, the multiply-accumulates")
def check_conv_macs(fn: Callable[[int, int, int, int, int, int], int], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 07): multiply-accumulates of one Conv2d, ``C_out·H_out·W_out·(C_in/groups)·k²``."""
    from .prune import count_flops

    cases = ((3, 16, 3, 2, 1), (32, 32, 3, 1, 4), (64, 10, 1, 1, 1)) if not variant else ((8, 24, 5, 1, 2), (48, 48, 3, 2, 48))
    for c_in, c_out, k, stride, groups in cases:
        conv = torch.nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, groups=groups)
        h_out = w_out = (32 + 2 * (k // 2) - k) // stride + 1
        got, err = _call(fn, c_in, c_out, k, h_out, w_out, groups)
        if err:
            return _report(False, err)
        want = count_flops(conv, (32, 32), c_in)  # counts the multiply-accumulates of every conv
        value = _as_float(got)
        if value is None:
            return _report(False, _not_a_number(got, "one integer, the multiply-accumulates"))
        got = int(value) if math.isfinite(value) and value == int(value) else value
        if got != want:
            hint = ""
            if groups > 1 and got == want * groups:
                hint = " With groups, each output channel sees only C_in / groups input channels."
            elif got == want * 2:
                hint = " Count one multiply-accumulate per product (a MAC), not two operations."
            return _report(False, f"Conv2d({c_in}, {c_out}, k={k}, groups={groups}) on a {h_out}×{w_out} output: got {got}, "
                           f"expected {want}.{hint}")
    return _report(True, "matches course_utils.prune.count_flops on three convolutions (incl. a grouped one).")


def _as_int(value: Any) -> int | None:
    """A Python int from an int, a numpy integer or a one-element integer tensor; None otherwise."""
    if isinstance(value, Tensor):
        if value.numel() != 1 or value.is_floating_point():
            return None
        value = value.item()
    if isinstance(value, (bool, float)) or not isinstance(value, (int, np.integer)):
        return None
    return int(value)


@_check("a pair (m0, n) of integers")
def check_fixed_point_multiplier(fn: Callable[[float], tuple[int, int]], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 09): ``M -> (m0, n)`` with ``M ≈ m0 · 2^-(31 + n)`` and ``2^30 <= m0 < 2^31``."""
    from .quant.integer import fixed_point_multiplier

    for m in (0.3, 0.0021, 1.7e-5, 0.75, 3.2, 1 - 2.0**-40) if not variant else (0.0137, 4.4e-4, 0.5, 1.9, 1 - 2.0**-35):
        got, err = _call(fn, m)
        if err:
            return _report(False, err)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            return _report(False, f"return a pair (m0, n), got {_describe(got)}.")
        m0, n = _as_int(got[0]), _as_int(got[1])
        if m0 is None or n is None:
            return _report(False, f"m0 and n must be integers (m0 is stored as an int32), got {_describe(got[0])} and {_describe(got[1])}.")
        want_m0, want_n = (int(v) for v in fixed_point_multiplier(m))
        if (m0, n) == (want_m0, want_n):
            continue
        if not 2**30 <= m0 < 2**31:
            hint = ""
            if m0 == 2**31:
                hint = " Rounding carried M0 up to 1.0 (m0 = 2^31): then use m0 = 2^30 and n - 1."
            elif 0 < m0 < 2:
                hint = " m0 is M0 scaled by 2^31 (31 fractional bits), not M0 itself."
            return _report(False, f"for M = {m} you returned m0 = {m0}, which is outside [2^30, 2^31): M0 must lie in [0.5, 1).{hint}")
        if m0 == want_m0 and n == -want_n:
            return _report(False, f"for M = {m} the shift has the wrong sign: M = M0 · 2^-n, so M < 0.5 needs n > 0.")
        if n == want_n and m0 == want_m0 - 1:
            return _report(False, f"for M = {m} m0 is one too small: round M0 · 2^31 to the nearest integer, do not truncate it.")
        m32 = float(torch.tensor(m, dtype=torch.float32))  # what torch.tensor(m) holds: float32, 24 significant bits
        if n == want_n and m32 != m and m0 == round(math.frexp(m32)[0] * 2**31):
            return _report(False, f"for M = {m} your m0 = {m0} is M in float32 (torch.tensor(m) defaults to float32, "
                                  "which keeps 24 significant bits, not the 31 that m0 holds). Use Python floats "
                                  "(math.frexp) or float64 tensors.")
        return _report(False, f"for M = {m} expected (m0, n) = ({want_m0}, {want_n}), got ({m0}, {n}); "
                              "write M = M0 · 2^-n with M0 in [0.5, 1) (math.frexp does this), then m0 = round(M0 · 2^31).")
    return _report(True, "M ≈ m0 · 2^-(31+n) with M0 in [0.5, 1), including the carry case, on 6 multipliers.")


@_check("an int32 tensor, one value per output channel")
def check_int32_bias(fn: Callable[[Tensor, float, Tensor], Tensor], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 09): the bias at the accumulator's scale, ``q_b = round(b / (S_x · S_w))`` as int32."""
    from .quant.integer import quantize_bias

    g = torch.Generator().manual_seed(11 + 1000 * variant)
    bias = torch.randn(16, generator=g) * 0.5
    w_scale = torch.rand(16, generator=g) * 0.02 + 0.001
    x_scale = 0.037
    got, err = _call(fn, bias.clone(), x_scale, w_scale.clone())
    if err:
        return _report(False, err)
    want = quantize_bias(bias, x_scale, w_scale)
    if not isinstance(got, Tensor):
        return _report(False, f"expected a tensor of shape {tuple(want.shape)}, got {type(got).__name__}.")
    if got.shape != want.shape:
        return _report(False, f"expected one int32 per output channel, shape {tuple(want.shape)}; got shape {tuple(got.shape)}.")
    if got.is_floating_point():
        if torch.equal(got.double(), want.double()):
            return _report(False, f"the values are right but the dtype is {got.dtype}: the bias is stored as an integer (.to(torch.int32)).")
        return _report(False, f"the bias must be an integer tensor (int32), got {got.dtype}.")
    if torch.equal(got.to(torch.int64), want.to(torch.int64)):
        if got.dtype != torch.int32:
            return _report(False, f"the values are right but the dtype is {got.dtype}: accumulators and biases are int32.")
        return _report(True, "q_b = round(b / (S_x · S_w)) per channel, as int32: it adds straight onto the accumulator.")
    scaled = bias.double() / (w_scale.double() * x_scale)
    if torch.equal(got.to(torch.int64), torch.round(bias.double() / w_scale.double()).to(torch.int64)):
        hint = " You divided by S_w only: the accumulator sums q_w · (q_x − Z_x), whose scale is S_w · S_x."
    elif torch.equal(got.to(torch.int64), torch.round(bias.double() / x_scale).to(torch.int64)):
        hint = " You divided by S_x only: the accumulator's scale is S_w · S_x."
    elif torch.equal(got.to(torch.int64), torch.trunc(scaled).to(torch.int64)):
        hint = " Round to the nearest integer (torch.round), do not truncate (.int() cuts toward zero)."
    else:
        hint = " Divide each channel's bias by S_x · S_w[c] and round."
    worst = int((got.to(torch.int64) - want.to(torch.int64)).abs().max())
    return _report(False, f"the int32 bias is off by up to {worst} unit{'s' if worst != 1 else ''}.{hint}")


def _timing_rounds(seed: int, rounds: int, runs: int, base_ms: float, slow_round: int | None) -> list[list[float]]:
    """Made-up per-run latencies (ms), one list per round: log-normal noise, rare spikes, one slow round."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(rounds):
        level = base_ms * (1.6 if r == slow_round else 1.0)
        times = level * np.exp(rng.normal(0, 0.05, runs))
        times[rng.random(runs) < 0.08] *= 4.0  # another process wakes up now and then
        out.append([round(float(t), 4) for t in times])
    return out


def _median_round(rounds: list[list[float]]) -> float:
    """The median of each round's median run: sorted round medians, element ``len // 2`` (odd counts here)."""
    medians = sorted(float(np.median(r)) for r in rounds)
    return medians[len(medians) // 2]


@_check("one number, the speed-up (> 1 when the candidate is faster)")
def check_speedup(fn: Callable[[list[list[float]], list[list[float]]], float], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 08): the speed-up of a candidate over a baseline from interleaved timing rounds.

    ``fn(baseline_ms, candidate_ms)``: lists of rounds, each round the per-run latencies (ms) of one
    model, the two models' rounds run in turn. The paired estimate, as ``deploy.paired_speedup``
    computes it: each round's median run, the ratio ``baseline / candidate`` within each round, then
    the median of those ratios.
    """
    cases = ((3, 30, 25.0, 10.0, None, 4), (5, 20, 12.0, 5.0, 2, 2), (3, 41, 3.5, 0.7, 0, 3))
    for rounds, runs, base_ms, cand_ms, slow_round, seed in cases:
        baseline = _timing_rounds(seed + 1000 * variant, rounds, runs, base_ms, slow_round)
        candidate = _timing_rounds(seed + 100 + 1000 * variant, rounds, runs, cand_ms, slow_round)
        got, err = _call(fn, [list(r) for r in baseline], [list(r) for r in candidate])
        if err:
            return _report(False, err)
        value = _as_float(got)
        if value is None:
            return _report(False, _not_a_number(got, "one number, the speed-up"))
        want = float(np.median([np.median(b) / np.median(c) for b, c in zip(baseline, candidate)]))
        if math.isclose(value, want, rel_tol=1e-6):
            continue
        flat_b, flat_c = np.concatenate(baseline), np.concatenate(candidate)
        low = [float(torch.tensor(b).median() / torch.tensor(c).median()) for b, c in zip(baseline, candidate)]
        tries = {
            "torch.median returns the lower of the two middle values when the count is even (here each round has "
            f"{runs} runs); the median is their mean, as statistics.median and np.median compute it.":
                float(np.median(low)),
            "torch.median of the ratios returns the lower middle value for an even number of rounds; use "
            "statistics.median or np.median.": float(torch.tensor([float(np.median(b) / np.median(c))
                                                                   for b, c in zip(baseline, candidate)]).median()),
            "upside down: speed-up = baseline time / candidate time, so it is > 1 when the candidate is faster.": 1 / want,
            "that is a ratio of means: a few slow runs (spikes) pull a mean up; take medians.":
                float(flat_b.mean() / flat_c.mean()),
            "that ratio uses each model's fastest run: a best case, not the typical time; take medians.":
                float(flat_b.min() / flat_c.min()),
            "you pooled the runs of all rounds: take each round's median first, and divide within each round.":
                float(np.median(flat_b) / np.median(flat_c)),
            "you divided each model's own median round: that leaves the rounds unpaired, so a round that was slow "
            "for both models still moves the answer; divide within each round (the two timings taken together), "
            "then take the median of those ratios.": _median_round(baseline) / _median_round(candidate),
            "you used the last round only: take the ratio in every round, then their median.":
                float(np.median(baseline[-1]) / np.median(candidate[-1])),
            "you averaged the per-round ratios: take their median (a round disturbed for one model only is an outlier).":
                float(np.mean([np.median(b) / np.median(c) for b, c in zip(baseline, candidate)])),
        }
        matches = [h for h, v in tries.items() if math.isclose(value, v, rel_tol=1e-6)]
        hint = " Or: ".join(matches) or "take each round's median run, the ratio baseline / candidate in each round, then the median ratio."
        return _report(False, f"{rounds} rounds × {runs} runs, baseline about {base_ms:g} ms, candidate about {cand_ms:g} ms: "
                              f"expected a speed-up of {want:.6g}, got {value:.6g}: {hint}")
    return _report(True, "speed-up = the median over rounds of (baseline's round median / candidate's round median), "
                         "on 3 sets of interleaved rounds.")


@_check("one number, the learning rate")
def check_linear_scaling(fn: Callable[[float, int, int, int], float], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 10): the learning rate for N processes by the linear scaling rule (Goyal et al. 2017).

    ``fn(base_lr, base_batch, batch_per_process, processes)``: a recipe tuned at ``base_lr`` for a batch
    of ``base_batch`` images, now run with ``batch_per_process`` images on each of ``processes`` processes.
    """
    cases = ((0.1, 256, 32, 8), (1e-3, 16, 16, 2), (0.02, 64, 8, 4), (0.4, 1024, 64, 4))
    if variant:  # hidden cases
        cases = ((3e-4, 32, 12, 8), (0.05, 128, 64, 3))
    for base_lr, base_batch, per_process, processes in cases:
        got, err = _call(fn, base_lr, base_batch, per_process, processes)
        if err:
            return _report(False, err)
        value = _as_float(got)
        if value is None:
            return _report(False, _not_a_number(got, "the learning rate as a number"))
        got = value
        effective = per_process * processes
        want = base_lr * effective / base_batch
        if math.isclose(got, want, rel_tol=1e-9):
            continue
        hint = " The effective batch is what one optimizer step averages over: batch_per_process × processes."
        if math.isclose(got, base_lr * per_process / base_batch, rel_tol=1e-9):
            hint = " You scaled by one process's batch; DDP averages the gradients of all processes, so one step sees batch_per_process × processes images."
        elif math.isclose(got, base_lr * math.sqrt(effective / base_batch), rel_tol=1e-9):
            hint = " That is the square-root rule (used with Adam-like optimizers by some); the linear rule scales by the ratio itself."
        elif math.isclose(got, base_lr * base_batch / effective, rel_tol=1e-9):
            hint = " The ratio is upside down: a larger batch gets a larger learning rate."
        return _report(False, f"for base_lr={base_lr}, base_batch={base_batch}, {processes} processes × {per_process} images: "
                              f"expected {want:g}, got {got:g}.{hint}")
    return _report(True, "lr = base_lr × (batch_per_process × processes) / base_batch on 4 set-ups.")


def _keep_in_float_cases(variant: int) -> list[tuple[dict[str, float], dict[str, float], float, float]]:
    """(gain per node, how much each node's float copy gives back, the all-int8 drop, max_drop); the drop of a
    float set is ``all-int8 drop - Σ give-back`` (additive, so the greedy answer is known exactly)."""
    if variant:
        return [({"n0": 0.2, "n1": 3.0, "n2": 0.1, "n3": 1.5}, {"n0": 0.2, "n1": 3.0, "n2": 0.1, "n3": 1.5}, 4.0, 0.5),
                ({"a": 0.05, "b": 0.3}, {"a": 0.05, "b": 0.3}, 0.4, 0.5),
                ({"x": 1.0, "y": 2.0, "z": 0.5}, {"x": 1.0, "y": 2.0, "z": 0.5}, 3.4, 0.2)]
    return [({"stem": 0.4, "head_box": 2.5, "tower": 0.1, "lateral": 1.0}, {"stem": 0.4, "head_box": 2.5, "tower": 0.1,
                                                                             "lateral": 1.0}, 3.0, 0.5),
            ({"stem": 0.1, "head": 0.2}, {"stem": 0.1, "head": 0.2}, 0.3, 0.5),
            ({"a": 1.0, "b": 0.6, "c": 0.3, "d": 0.2}, {"a": 1.0, "b": 0.6, "c": 0.3, "d": 0.2}, 2.0, 0.25)]


def _greedy_keep(gain: dict[str, float], drop_of: Callable[[list[str]], float], max_drop: float) -> list[str]:
    keep: list[str] = []
    for node in sorted(gain, key=lambda n: -gain[n]):
        if drop_of(keep) <= max_drop:
            break
        keep.append(node)
    return keep


@_check("a list of node names, most sensitive first")
def check_keep_in_float(fn: Callable[[dict, Callable[[list], float], float], list], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 11): the greedy keep-in-float search.

    ``fn(gain, drop_of, max_drop)``: ``gain`` ``{node: how much mAP keeping it in float gives back}`` (the
    sensitivity scan), ``drop_of(nodes)`` the mAP drop of the model with ``nodes`` in float (a measurement:
    each call quantizes and scores a model), ``max_drop`` the budget. Return the nodes to keep in float, added
    in order of gain (largest first), stopping as soon as the drop is within ``max_drop``.
    """
    for gain, give_back, all_int8, max_drop in _keep_in_float_cases(variant):
        calls: list[list[str]] = []

        def drop_of(nodes: Any, give_back: dict[str, float] = give_back, all_int8: float = all_int8) -> float:
            nodes = list(nodes)
            calls.append(nodes)
            unknown = [n for n in nodes if n not in give_back]
            if unknown:
                raise KeyError(f"{unknown} are not nodes of this model; use the keys of gain")
            return all_int8 - sum(give_back[n] for n in set(nodes))

        got, err = _call(fn, dict(gain), drop_of, max_drop)
        if err:
            return _report(False, err)
        if isinstance(got, (str, bytes)) or not isinstance(got, (list, tuple)):
            return _report(False, f"expected a list of node names, got {_describe(got)}.")
        got = list(got)
        want = _greedy_keep(gain, lambda nodes: all_int8 - sum(give_back[n] for n in nodes), max_drop)
        if got == want:
            continue
        where = f"for gain={gain}, all-int8 drop {all_int8} and max_drop={max_drop}: expected {want}, got {got}."
        if sorted(got) == sorted(want):
            hint = " Right nodes, wrong order: add them largest gain first."
        elif got == _greedy_keep({n: -g for n, g in gain.items()}, lambda nodes: all_int8 - sum(give_back[n] for n in nodes), max_drop):
            hint = " You added the least sensitive nodes first; sort by gain, largest first."
        elif not want and got:
            hint = " The all-int8 model is already within max_drop: check the drop before adding anything (drop_of([]))."
        elif len(got) == len(want) + 1 and got[:-1] == want:
            hint = " One node too many: stop as soon as drop_of(keep) <= max_drop."
        elif len(got) == len(gain) and len(want) < len(gain):
            hint = " You kept every node in float (that is the fp32 model): stop once the drop is within the budget."
        else:
            hint = " Add nodes one at a time, measure drop_of(the nodes so far) and stop once it is <= max_drop."
        return _report(False, where + hint)
    return _report(True, "your search keeps the nodes the greedy rule picks, in its order, on 3 scans.")


@_check("the largest magnitude as an int")
def check_max_pair_sum(fn: Callable[[int, int], int], *, variant: int = 0) -> CheckResult:
    """Exercise (notebook 11): how large can ``x0·w0 + x1·w1`` get, for unsigned ``act_bits`` activations
    (0 ... 2^a - 1) and signed ``weight_bits`` weights (-2^(w-1) ... 2^(w-1) - 1)? Without VNNI that pair sum
    lands in a signed 16-bit register (at most 32,767 in magnitude before saturating)."""
    cases = ((8, 8), (8, 7), (4, 8), (7, 8))
    if variant:
        cases = ((6, 8), (8, 6), (5, 5))
    for a, w in cases:
        got, err = _call(fn, a, w)
        if err:
            return _report(False, err)
        value = _as_float(got)
        if value is None:
            return _report(False, _not_a_number(got, "the largest magnitude as a number"))
        want = 2 * (2**a - 1) * 2 ** (w - 1)
        if value == want:
            continue
        hint = " The largest |product| pairs the largest activation, 2^a - 1, with the most negative weight, -2^(w-1)."
        if value == 2 * (2**a - 1) * (2 ** (w - 1) - 1):
            hint = " The most negative weight, -2^(w-1), is one step larger in magnitude than the most positive one."
        elif value == want / 2:
            hint = " That is one product; the instruction adds two of them (a pair) before it stores the sum."
        elif value == 2 * 2**a * 2 ** (w - 1):
            hint = " The largest unsigned activation is 2^a - 1, not 2^a."
        return _report(False, f"for {a}-bit activations and {w}-bit weights: expected {want:,}, got {value:,.0f}.{hint}")
    return _report(True, f"|x0·w0 + x1·w1| <= 2·(2^a - 1)·2^(w-1) on 4 bit widths: 8/8 gives 65,280 > 32,767, 8/7 gives 32,640.")

