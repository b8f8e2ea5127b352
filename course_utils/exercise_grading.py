"""The exercise checks as the autograder runs them: harder to fool than a check called in a notebook.

In a learner's notebook, ``check_x(my_x)`` prints a hint and returns ``True``/``False``. In a graded
copy (``make student``), each exercise's locked test cell calls ``graded("check_x", my_x, token)``:

1. the check is loaded afresh from ``course_utils/exercises.py`` on disk (read-only in the grading
   sandbox), so rebinding ``check_x`` or patching ``course_utils.exercises`` in the notebook changes
   nothing;
2. an answer that *is*, or calls, the library's own implementation of the exercise (``REFERENCES``)
   scores 0 and is reported as "uses the reference";
3. the tensors an answer returns must be plain ``torch.Tensor``\\ s (a subclass can override
   comparisons such as ``allclose``);
4. the check runs on its usual inputs and on hidden ones the learner never saw (``variant``);
5. on success it prints ``graded <check> <token>``: the autograder (``classroom.nbgrader_guard``)
   gives the point only when that line, with that run's token, is in the cell's output, so a test
   cell that was emptied or skipped scores 0;
6. IPython's input and AST transformers are put back to IPython's own (:func:`reset_ipython`) by
   ``graded`` and by a cell the autograder runs just before each test cell, so a transformer the
   learner registered cannot rewrite the test cells that follow.

What grading inside the learner's kernel cannot prevent: code that runs before the test cells can
replace anything in the kernel (this module included) or read a test cell's token as it runs. The
sandbox keeps such code to the learner's own marks, and the autograder flags the tricks it knows
(``classroom.grading``) for the teacher to read.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

import torch

__all__ = ["REFERENCES", "graded", "reset_ipython"]

HIDDEN_VARIANT = 1  # the inputs of the hidden run (``variant=0`` are those the notebook shows)

#: The library's own implementations an answer to each check must not be or call ("module:name").
REFERENCES: dict[str, tuple[str, ...]] = {
    "check_box_area": ("course_utils.boxes:box_area", "torchvision.ops:box_area"),
    "check_xywh_to_xyxy": ("course_utils.boxes:box_convert", "torchvision.ops:box_convert"),
    "check_box_iou": ("course_utils.boxes:box_iou", "torchvision.ops:box_iou", "torchvision.ops.boxes:_box_inter_union"),
    "check_nms": ("course_utils.boxes:nms", "torchvision.ops:nms", "torchvision.ops:batched_nms"),
    "check_average_precision": ("course_utils.metrics:precision_at_recall",),
    "check_error_counts": ("course_utils.metrics:count_errors",),
    "check_clip_grad_norm": ("course_utils.clipping:clip_grad_norm_", "course_utils.clipping:_clip_norm",
                             "torch.nn.utils:clip_grad_norm_", "torch.nn.utils.clip_grad:_clip_grads_with_norm_"),
    "check_agc": ("course_utils.clipping:adaptive_clip_grad_", "course_utils.clipping:_agc"),
    "check_qparams": ("course_utils.quant:calc_qparams",),
    "check_fake_quantize": ("course_utils.quant:fake_quantize", "torch:fake_quantize_per_tensor_affine",
                            "torch:fake_quantize_per_channel_affine"),
    "check_fold_bn": ("course_utils.quant:fold_bn", "torch.nn.utils.fusion:fuse_conv_bn_weights",
                      "torch.nn.utils.fusion:fuse_conv_bn_eval"),
    "check_kd_loss": ("course_utils.distill:kd_loss",),
    "check_feature_imitation": ("course_utils.distill:feature_imitation_loss",),
    "check_magnitude_mask": ("course_utils.prune:magnitude_masks", "torch.nn.utils.prune:l1_unstructured"),
    "check_conv_macs": ("course_utils.prune:count_flops",),
    "check_fixed_point_multiplier": ("course_utils.quant.integer:fixed_point_multiplier",),
    "check_int32_bias": ("course_utils.quant.integer:quantize_bias",),
    "check_speedup": ("course_utils.deploy:paired_speedup",),
    "check_keep_in_float": ("course_utils.keep_float:keep_in_float_search", "course_utils.exercises:_greedy_keep"),
    "check_max_pair_sum": ("course_utils.quant.integer:pairwise_int16_sums",),
}


def _pristine_exercises() -> ModuleType:
    """A fresh copy of ``course_utils.exercises``, executed from its file (not from ``sys.modules``)."""
    path = Path(__file__).resolve().with_name("exercises.py")
    spec = importlib.util.spec_from_file_location("course_utils._graded_exercises", path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "course_utils"
    spec.loader.exec_module(module)
    return module


def _resolve(references: tuple[str, ...]) -> list[Any]:
    """The reference objects that exist in this installation (a missing one is skipped)."""
    found = []
    for ref in references:
        module_name, _, name = ref.partition(":")
        try:
            found.append(getattr(importlib.import_module(module_name), name))
        except (ImportError, AttributeError):
            continue
    return found


def _codes(objects: list[Any]) -> set[CodeType]:
    return {inspect.unwrap(o).__code__ for o in objects if hasattr(inspect.unwrap(o), "__code__")}


def _plain(value: Any, where: str = "your function's result") -> None:
    """Raise TypeError if ``value`` holds a tensor of a subclass of ``torch.Tensor``."""
    if isinstance(value, torch.Tensor):
        if type(value) not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError(f"{where} is a {type(value).__name__}, a subclass of torch.Tensor; return a plain tensor "
                            "(a subclass can change what comparisons answer)")
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            _plain(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _plain(item, f"{where}[{key!r}]")


def _watched(answer: Callable[..., Any], codes: set[CodeType], builtins: list[Any], used: list[str]) -> Callable[..., Any]:
    """``answer``, recording in ``used`` every reference it calls (by code object, or builtin identity),
    and refusing results that are not plain tensors."""

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code in codes:
            used.append(frame.f_code.co_name)
        elif event == "c_call" and any(arg is b for b in builtins):
            used.append(getattr(arg, "__name__", repr(arg)))

    @functools.wraps(answer)
    def watched(*args: Any, **kwargs: Any) -> Any:
        previous = sys.getprofile()
        sys.setprofile(profile)
        try:
            result = answer(*args, **kwargs)
        finally:
            sys.setprofile(previous)
        _plain(result)
        return result

    return watched


def reset_ipython() -> bool:
    """Give the running IPython shell its own input and AST transformers back.

    Empties ``input_transformers_post`` and ``ast_transformers`` and replaces the
    ``input_transformer_manager`` (whose ``cleanup_transforms`` are ``input_transformers_cleanup``)
    with a new one, so code a learner registered to rewrite cells no longer runs. Returns False
    outside IPython (nothing to reset).
    """
    try:
        from IPython import get_ipython
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    shell.input_transformer_manager = TransformerManager()
    shell.input_transformers_post = []
    shell.ast_transformers = []
    return True


def graded(check_name: str, answer: Any, token: str = "") -> bool:
    """Run the pristine ``check_name`` on ``answer`` as the autograder does (see the module docstring).

    Returns True when the answer passes on the usual and the hidden inputs without using the
    reference, and then prints ``graded <check_name> <token>``. Resets IPython's transformers first
    (:func:`reset_ipython`) so that the test cells after this one run as written.
    """
    reset_ipython()
    module = _pristine_exercises()
    check = getattr(module, check_name, None)
    if check is None or not check_name.startswith("check_"):
        raise ValueError(f"graded: {check_name!r} is not one of the course's checks ({', '.join(module.__all__[1:])})")
    references = _resolve(REFERENCES.get(check_name, ()))
    used: list[str] = []
    target = answer
    if callable(answer) and not isinstance(answer, type):
        if any(inspect.unwrap(answer) is r for r in references) or (_codes([answer]) & _codes(references)):
            print(f"✗ Not graded: your answer is the library's own {getattr(answer, '__name__', 'function')} "
                  "(uses the reference). Write it yourself.")
            return False
        builtins = [r for r in references if not hasattr(inspect.unwrap(r), "__code__")]
        target = _watched(answer, _codes(references), builtins, used)
    ok = bool(check(target))
    if ok and "variant" in inspect.signature(check).parameters:
        print("hidden inputs:", end=" ")
        ok = bool(check(target, variant=HIDDEN_VARIANT))
    if used:
        print(f"✗ Not graded: your answer calls the library's own {', '.join(sorted(set(used)))} (uses the reference). "
              "Write it yourself.")
        return False
    if ok:
        print(f"graded {check_name} {token}")
    return ok
