"""One training loop and one evaluation for the whole course.

Taught in: 02_training_a_tiny_detector (and reused by every later notebook).

Later topics plug in through :class:`Hook` objects instead of copying the loop:

=====================  ==========================================  =====================
hook method            called                                      used for
=====================  ==========================================  =====================
``on_train_start``     once, before the first step                 set-up, e.g. QAT prepare
``extra_losses``       after the forward pass, before backward     distillation loss
``after_backward``     after ``backward()`` (and ``unscale_``),    gradient clipping,
                       before ``optimizer.step()``                 gradient-norm monitors
``after_step``         after ``optimizer.step()``                  logging, EMA
``on_epoch_end``       after each epoch                            freezing BN stats (QAT)
=====================  ==========================================  =====================

Each receives the :class:`StepState` of the current step.
"""

from __future__ import annotations

import collections
import hashlib
import math
import numbers
import os
import pickle
import random
import re
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from .data import progress_bar, undo_letterbox
from .metrics import mean_average_precision

__all__ = [
    "Hook",
    "StepState",
    "NonFiniteLossError",
    "seed_everything",
    "get_device",
    "move_to",
    "train_one_epoch",
    "make_optimizer",
    "check_training_run",
    "fit",
    "predict",
    "evaluate",
    "save_checkpoint",
    "load_checkpoint",
    "content_hash",
]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss.

    ``err.history`` holds what was recorded up to the failing step, so a
    diverged run can still be plotted.
    """

    def __init__(self, message: str, history: dict[str, list[float]] | None = None) -> None:
        super().__init__(message)
        self.history = history if history is not None else {}


@dataclass
class StepState:
    """Everything a hook may look at (or change) during one training step."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epoch: int = 0
    step: int = 0  # global step, counting from 0
    images: list[Tensor] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Tensor] | None = None  # raw outputs, when the model exposes them
    losses: dict[str, Tensor] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)


class Hook:
    """Base class: override only the methods you need (see module docstring).

    ``extra_losses`` adds new loss terms; a key the step already has (the model's own
    ``loss_cls``, or another hook's) is an error unless the hook lists it in
    ``replaces_losses`` -- replacing the model's loss is then deliberate, not a typo.
    """

    replaces_losses: tuple[str, ...] = ()

    def on_train_start(self, state: StepState) -> None: ...

    def extra_losses(self, state: StepState) -> dict[str, Tensor]:
        return {}

    def after_backward(self, state: StepState) -> None: ...

    def after_step(self, state: StepState) -> None: ...

    def on_epoch_end(self, state: StepState) -> None: ...


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for reproducible runs (numpy integers too)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r} ({type(seed).__name__})")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA devices


def get_device(prefer: str | None = None) -> torch.device:
    """``cuda`` when a GPU is present (or ``prefer`` names a device), else ``cpu``."""
    if prefer is not None:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def move_to(images: Sequence[Tensor], targets: Sequence[dict[str, Any]], device: torch.device) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """Move a batch (lists of images and target dicts) to ``device``."""
    images = [img.to(device, non_blocking=True) for img in images]
    targets = [{k: v.to(device) if isinstance(v, Tensor) else v for k, v in t.items()} for t in targets]
    return images, targets


def _forward_losses(model: nn.Module, images: list[Tensor], targets: list[dict[str, Any]]) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """Loss dict (and raw outputs, if the model has ``forward_raw`` and ``loss``).

    A model inside ``DistributedDataParallel`` is called through the wrapper (which prepares the
    gradient all-reduce) with ``return_raw=True``, so hooks still see the raw outputs."""
    inner = getattr(model, "module", None)
    if isinstance(model, nn.parallel.DistributedDataParallel) and hasattr(inner, "forward_raw") and hasattr(inner, "loss"):
        return model(images, targets, return_raw=True)
    if hasattr(model, "forward_raw") and hasattr(model, "loss"):
        outputs = model.forward_raw(images)
        return model.loss(outputs, targets), outputs
    return model(images, targets), None  # torchvision detectors


def _describe_loader(loader: Any) -> str:
    """``len(dataset)=..., batch_size=..., drop_last=...`` for a DataLoader, the type and length otherwise."""
    dataset = getattr(loader, "dataset", None)
    if dataset is not None and hasattr(loader, "batch_size"):
        try:
            size = len(dataset)
        except TypeError:
            size = "?"
        return f"len(dataset)={size}, batch_size={loader.batch_size}, drop_last={getattr(loader, 'drop_last', False)}"
    try:
        return f"a {type(loader).__name__} of length {len(loader)}"
    except TypeError:
        return f"a {type(loader).__name__}"


def _no_batch_error(loader: Any, when: str) -> ValueError:
    return ValueError(
        f"the training loader yields no batch {when} ({_describe_loader(loader)}), so nothing would be trained. "
        "Check that the dataset is not empty; with drop_last=True the batch size must not exceed it; "
        "a one-shot iterator (a generator) is empty after the first epoch -- pass a DataLoader or a list")


def check_training_run(train_loader: Iterable, epochs: int, max_steps: int | None = None) -> None:
    """Refuse a training run that would train nothing, before it starts (:func:`fit` calls this).

    ``epochs`` must be a positive int, ``max_steps`` None or a positive int, and a
    loader that has a length must have at least one batch (a DataLoader with
    ``drop_last=True`` and ``batch_size > len(dataset)`` has none). A ValueError
    names the value, the loader's ``len(dataset)``, ``batch_size`` and ``drop_last``.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}: with no epoch nothing is trained "
                         "(to stop early, pass max_steps)")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral) or max_steps < 1):
        raise ValueError(f"max_steps must be None (no limit) or a positive int, got {max_steps!r}")
    try:
        length = len(train_loader)  # type: ignore[arg-type]
    except TypeError:  # an iterable without a length: checked as it runs (train_one_epoch)
        return
    if length == 0:
        raise _no_batch_error(train_loader, "at all")


def _checked_extra_losses(hook: Any, state: StepState, existing: Any = ()) -> dict[str, Tensor]:
    """``hook.extra_losses(state)``, checked: a dict of names to scalar (0-dim) tensors whose names
    are new (not in ``existing``) unless the hook declares them in ``replaces_losses``."""
    extra = hook.extra_losses(state)
    name = type(hook).__name__
    if not isinstance(extra, dict):
        raise TypeError(f"{name}.extra_losses must return a dict {{name: scalar tensor}} ({{}} for none), "
                        f"got {type(extra).__name__}")
    for key, value in extra.items():
        if not isinstance(value, Tensor) or value.ndim != 0:
            what = type(value).__name__ if not isinstance(value, Tensor) else f"a tensor of shape {tuple(value.shape)}"
            raise TypeError(f"{name}.extra_losses()[{key!r}] must be a scalar (0-dim) tensor, got {what} "
                            "(use torch.tensor(x) for a constant, .sum() or .mean() for a vector)")
    clash = sorted(set(extra) & set(existing) - set(getattr(hook, "replaces_losses", ())))
    if clash:
        raise ValueError(f"{name}.extra_losses() returns {clash}, which the step already has (the model's or another "
                         f"hook's loss): it would replace that loss. Give the term a new name (e.g. 'kd_{clash[0]}'), or "
                         f"set replaces_losses = {tuple(clash)!r} on the hook if replacing it is the point.")
    return extra


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_loader: Iterable,
    device: torch.device,
    state: StepState,
    hooks: Sequence[Hook] = (),
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    max_steps: int | None = None,
    progress: bool = True,
) -> None:
    """Train for one pass over ``data_loader`` (or until ``state.step == max_steps``).

    Per step: forward -> losses (+ hooks' ``extra_losses``) -> guard against a
    non-finite loss -> backward -> (``scaler.unscale_``) -> hooks'
    ``after_backward`` -> ``optimizer.step()`` -> scheduler -> ``after_step``.
    Appends each loss term and ``lr`` to ``state.history``. Raises ValueError if
    ``data_loader`` yields no batch at all (an empty epoch trains nothing).
    """
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral) or max_steps < 1):
        raise ValueError(f"max_steps must be None (no limit) or a positive int, got {max_steps!r}")
    if isinstance(device, str):
        device = torch.device(device)
    model.train()
    bar = progress_bar(data_loader, desc=f"epoch {state.epoch}", leave=False, disable=not progress)
    batches = 0
    for images, targets in bar:
        batches += 1
        if max_steps is not None and state.step >= max_steps:
            break
        images, targets = move_to(images, targets, device)
        state.images, state.targets = images, targets
        with torch.autocast(device.type, enabled=scaler is not None):
            losses, state.outputs = _forward_losses(model, images, targets)
            state.losses = losses
            for hook in hooks:
                losses.update(_checked_extra_losses(hook, state, losses))
        loss = sum(losses.values())
        if not math.isfinite(loss.item()):
            terms = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            raise NonFiniteLossError(
                f"loss is {loss.item()} at epoch {state.epoch}, step {state.step} ({terms}). "
                "Training has diverged: lower the learning rate, or clip gradients (notebook 03).",
                history=state.history,
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # hooks (clipping!) must see true gradients
        else:
            loss.backward()
        for hook in hooks:
            hook.after_backward(state)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for hook in hooks:
            hook.after_step(state)
        for k, v in {**{k: v.item() for k, v in losses.items()}, "loss": loss.item(), "lr": optimizer.param_groups[0]["lr"]}.items():
            state.history.setdefault(k, []).append(v)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        state.step += 1
    if batches == 0:
        raise _no_batch_error(data_loader, f"in epoch {state.epoch}")


def _check_schedule_args(lr: Any, total_steps: Any, weight_decay: Any) -> None:
    """``lr`` a finite number > 0, ``total_steps`` an int >= 1, ``weight_decay`` a finite number >= 0."""
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0 (e.g. 1e-3), got {lr!r}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral) or total_steps < 1:
        raise ValueError(f"total_steps must be an int >= 1 (epochs * len(train_loader)), got {total_steps!r}")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real) or not (
            math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0 (e.g. 1e-4), got {weight_decay!r}")


def make_optimizer(
    model: nn.Module, lr: float, total_steps: int, weight_decay: float = 1e-4, warmup: float = 0.15
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The course's default: AdamW with a one-cycle schedule (torch's ``OneCycleLR``, default factors).

    The learning rate warms up (cosine) from ``lr / 25`` (``div_factor = 25``) to
    ``lr`` over the first ``warmup`` fraction of ``total_steps``, then anneals
    (cosine) to ``lr / (25 · 10⁴)`` at the last step (``final_div_factor = 1e4``
    divides the *initial* ``lr / 25``, so the floor is ``lr / 2.5e5``, not
    ``lr / 1e4``). ``cycle_momentum=True`` (the default) also cycles AdamW's β₁
    inversely to the learning rate: 0.95 at the start, 0.85 at the peak, back to
    0.95 at the end (replacing AdamW's default 0.9; β₂ stays 0.999). Call
    ``scheduler.step()`` once per optimizer step (:func:`fit` does).
    Checked: ``lr`` > 0, ``total_steps`` an int >= 1, ``warmup`` a fraction in (0, 1).
    """
    _check_schedule_args(lr, total_steps, weight_decay)
    if isinstance(warmup, bool) or not isinstance(warmup, numbers.Real) or not 0 < warmup < 1:
        raise ValueError(f"warmup must be a fraction of total_steps in (0, 1) (e.g. 0.15 for 15%), got {warmup!r}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=int(total_steps), pct_start=warmup)
    return optimizer, scheduler


def make_finetune_optimizer(
    model: nn.Module, lr: float, total_steps: int, weight_decay: float = 1e-4
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """For weights that are already trained (fine-tuning after pruning or for QAT): AdamW, no warm-up,
    cosine decay ``lr_t = lr · (1 + cos(π t / total_steps)) / 2``. Call ``scheduler.step()`` once per step.
    Checked: ``lr`` > 0, ``total_steps`` an int >= 1, ``weight_decay`` >= 0."""
    _check_schedule_args(lr, total_steps, weight_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(total_steps))


_HOOK_METHODS = ("on_train_start", "extra_losses", "after_backward", "after_step", "on_epoch_end")


def _check_hooks(hooks: Any) -> list[Any]:
    """``hooks`` as a list: a list or tuple of objects with every :class:`Hook` method (TypeError otherwise)."""
    if isinstance(hooks, Hook) or all(hasattr(hooks, m) for m in _HOOK_METHODS):
        raise TypeError(f"hooks must be a list of hooks; pass hooks=[{type(hooks).__name__}(...)], not the hook itself")
    if not isinstance(hooks, (list, tuple)):
        raise TypeError(f"hooks must be a list of hooks, e.g. hooks=[GradientClipping(...)], got {type(hooks).__name__}")
    for i, hook in enumerate(hooks):
        missing = [m for m in _HOOK_METHODS if not callable(getattr(hook, m, None))]
        if missing:
            raise TypeError(f"hooks[{i}] ({type(hook).__name__}) has no {missing[0]}(); "
                            "hooks must subclass course_utils.train.Hook")
    return list(hooks)


def _check_optimizer(model: nn.Module, optimizer: Any) -> None:
    """Refuse an optimizer that would not train ``model`` (checked before any hook adds parameters).

    * ``optimizer`` must be a ``torch.optim.Optimizer`` and ``model`` must have a trainable parameter;
    * at least one of the optimizer's parameters must be one of the model's, otherwise
      ``optimizer.step()`` changes nothing the model uses -- typically an optimizer built
      *before* ``prune_detector`` / ``prepare_qat`` / ``copy.deepcopy`` replaced the layers;
    * parameters that are not the model's are allowed (a hook's, e.g. a distillation
      adapter added by an earlier run), and so is an optimizer that trains only part of
      the model (e.g. just the head, plus an adapter) -- but not the signature of layers
      replaced after the optimizer was built: at least as many foreign tensors as model
      tensors left out (the old layers' parameters standing in for the new ones').
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer (e.g. make_optimizer(model, lr, total_steps)[0]), "
                        f"got {type(optimizer).__name__}")
    model_params = {id(p): name for name, p in model.named_parameters()}
    trainable = {id(p): name for name, p in model.named_parameters() if p.requires_grad}
    if not trainable:
        raise ValueError("the model has no trainable parameter (every requires_grad is False), so fit would train nothing")
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    fix = ("build the optimizer from the model you train, after pruning / preparing it "
           "(e.g. model = prune_detector(model, 0.5); optimizer = make_optimizer(model, ...)[0])")
    if not held & model_params.keys():
        raise ValueError(f"none of the optimizer's {len(held)} parameters belongs to the model, so training would "
                         f"change nothing: {fix}")
    missing = [name for key, name in trainable.items() if key not in held]
    foreign = held - model_params.keys()
    if missing and len(foreign) >= len(missing):
        raise ValueError(f"the optimizer holds {len(foreign)} tensors that are not the model's and misses {len(missing)} of "
                         f"the model's (e.g. {missing[0]!r}): that is what an optimizer built before the layers were "
                         f"replaced looks like; {fix}")


def _check_scheduler_steps(scheduler: Any, train_loader: Iterable, epochs: int, max_steps: int | None) -> None:
    """A one-cycle scheduler (``total_steps``) must have room for every step of the run, checked up front."""
    total = getattr(scheduler, "total_steps", None)
    try:
        length = len(train_loader)  # type: ignore[arg-type]
    except TypeError:
        return
    if not isinstance(total, numbers.Integral):
        return
    planned = epochs * length if max_steps is None else min(epochs * length, max_steps)
    left = total - getattr(scheduler, "last_epoch", 0)
    if planned > left:
        raise ValueError(f"the scheduler has room for {left} more steps (total_steps={total}) but this run takes "
                         f"{planned} (epochs * len(loader) = {epochs} * {length}"
                         + (f", max_steps={max_steps}" if max_steps is not None else "")
                         + "): build it with make_optimizer(model, lr, total_steps=epochs * len(loader))")


def fit(
    model: nn.Module,
    train_loader: Iterable,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    device: torch.device | None = None,
    hooks: Sequence[Hook] = (),
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    val_loader: Iterable | None = None,
    progress: bool = True,
    max_steps: int | None = None,
) -> dict[str, list[float]]:
    """Train for ``epochs`` epochs (or ``max_steps`` steps); evaluate after each epoch if ``val_loader`` is given.

    Returns the history: per-step losses and ``lr``; per-epoch ``map``, ``map_50``
    (with a validation loader) and ``epoch_time`` in seconds.
    Checked up front (:func:`check_training_run`): ``epochs`` a positive int, ``max_steps``
    None or a positive int, a loader with at least one batch; an epoch in which the
    loader yields nothing raises too, so a run never returns a history without a loss.
    Also checked before any hook runs: ``optimizer`` trains this model (see
    :func:`_check_optimizer`; an optimizer built before pruning is refused), ``hooks``
    a list of hooks, a one-cycle ``scheduler`` has ``total_steps`` for the whole run,
    DataLoaders use a detection collate (not torch's default, which cannot batch boxes).
    ``device`` may be a string such as ``"cpu"``.
    """
    check_training_run(train_loader, epochs, max_steps)
    _check_collate(train_loader, "train_loader")
    if val_loader is not None:
        _check_collate(val_loader, "val_loader")
    hooks = _check_hooks(hooks)
    _check_optimizer(model, optimizer)
    if scheduler is not None:
        _check_scheduler_steps(scheduler, train_loader, epochs, max_steps)
    device = torch.device(device) if isinstance(device, str) else device or get_device()
    model.to(device)
    state = StepState(model=model, optimizer=optimizer)
    for hook in hooks:
        hook.on_train_start(state)
    for epoch in range(epochs):
        state.epoch = epoch
        start = time.perf_counter()
        if max_steps is not None and state.step >= max_steps:
            break
        train_one_epoch(model, optimizer, train_loader, device, state, hooks, scheduler, scaler, max_steps, progress)
        state.history.setdefault("epoch_time", []).append(time.perf_counter() - start)
        for hook in hooks:
            hook.on_epoch_end(state)
        if val_loader is not None:
            metrics = evaluate(model, val_loader, device, areas=False)  # the curves need no size ranges
            for k in ("map", "map_50"):
                state.history.setdefault(k, []).append(metrics[k])
    return state.history


def _check_collate(loader: Any, name: str) -> None:
    """A DataLoader with torch's default collate (it stacks the targets' boxes, which differ in number) is refused."""
    from torch.utils.data import DataLoader, default_collate

    if isinstance(loader, DataLoader) and loader.collate_fn is default_collate:
        raise ValueError(f"{name} is a DataLoader with the default collate_fn, which tries to stack targets with "
                         "different numbers of boxes; build it with DataLoader(..., collate_fn=collate_detection)")


def _unpack_batch(batch: Any) -> tuple[Any, Any]:
    """A loader's batch as ``(images, targets)``; a ValueError for a batch of bare images."""
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        images = batch[0]
        if not isinstance(images, Tensor) or images.ndim == 4:  # a list of images, or one (B, 3, H, W) tensor
            return images, batch[1]
    raise ValueError("each batch must be (images, targets), as DataLoader(..., collate_fn=collate_detection) yields; "
                     f"got a {type(batch).__name__} of {len(batch) if hasattr(batch, '__len__') else '?'} items "
                     "(for bare images call model.eval(); model(images) directly)")


@torch.inference_mode()
def predict(model: nn.Module, data_loader: Iterable, device: torch.device | None = None) -> tuple[list[dict[str, Tensor]], list[dict[str, Any]]]:
    """Run the model in eval mode over a loader; return (predictions, targets) on CPU.

    Samples resized by :class:`~course_utils.data.Letterbox` come back in their original pixels
    (:func:`~course_utils.data.undo_letterbox`), so the scores are those of the original images."""
    _check_collate(data_loader, "data_loader")
    device = device or next(model.parameters()).device
    model.eval()
    preds, targets_all = [], []
    for batch in data_loader:
        images, targets = _unpack_batch(batch)
        outputs = model([img.to(device) for img in images])
        preds += [{k: v.cpu() for k, v in out.items()} for out in outputs]
        targets_all += list(targets)
    return undo_letterbox(preds, targets_all)


def evaluate(model: nn.Module, data_loader: Iterable, device: torch.device | None = None,
             areas: bool = True) -> dict[str, Any]:
    """COCO mAP of ``model`` on ``data_loader`` (see :func:`mean_average_precision`; ``areas=False`` skips the
    small / medium / large ranges)."""
    preds, targets = predict(model, data_loader, device)
    return mean_average_precision(preds, targets, areas=areas)


#: Types :func:`save_checkpoint` accepts in metadata: what ``torch.load(weights_only=True)``
#: reads back (exact types: subclasses such as ``numpy.float64`` pickle as other classes).
_PLAIN_TYPES = (str, int, float, bool, type(None))
_TENSOR_TYPES = (Tensor, nn.Parameter)
_CONTAINER_TYPES = (list, tuple, dict, collections.OrderedDict)


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _metadata_fix(value: Any) -> str:
    """How to turn ``value`` into something ``weights_only`` loading accepts."""
    fixes: list[tuple[type | tuple[type, ...], str]] = [
        (PurePath, "pass str(path) (and turn it back with Path(...) after loading)"),
        (np.ndarray, "pass torch.from_numpy(array) or array.tolist()"),
        (np.bool_, "pass bool(x)"), (np.integer, "pass int(x)"), (np.floating, "pass float(x)"), (np.generic, "pass x.item()"),
        ((set, frozenset), "pass sorted(list(x))"),
        (dict, "pass dict(x)"), ((list, tuple), "pass list(x)"),
        ((torch.dtype, torch.device), "pass str(x)"),
        (Tensor, "pass x.as_subclass(torch.Tensor)"),
        (str, "pass str(x)"), (bool, "pass bool(x)"), (int, "pass int(x)"), (float, "pass float(x)"),
    ]
    return next((fix for kinds, fix in fixes if isinstance(value, kinds)),
                "convert it to str, int, float, bool, None, a list/tuple/dict of those, or a tensor (e.g. str(x))")


def _check_metadata_key(key: Any, where: str) -> None:
    """A dict key in metadata: str, int, float, bool, None, or a tuple of those."""
    if type(key) in _PLAIN_TYPES:
        return
    if type(key) is tuple:
        for item in key:
            _check_metadata_key(item, where)
        return
    raise TypeError(f"save_checkpoint: metadata {where} key {key!r} is a {_type_name(key)}; dict keys must be str, int, "
                    f"float, bool, None or tuples of those, for load_checkpoint (weights_only=True) to read them. "
                    f"Fix: {_metadata_fix(key)}.")


def _check_metadata(value: Any, where: str, open_containers: set[int]) -> None:
    """Raise ``TypeError`` naming ``where`` unless ``value`` is what ``weights_only=True`` loading
    accepts: str, int, float, bool, None, tensors, and lists/tuples/dicts of those (no cycles)."""
    if type(value) in _PLAIN_TYPES or type(value) in _TENSOR_TYPES:
        return
    if type(value) not in _CONTAINER_TYPES:
        try:
            text = repr(value)
        except Exception:  # a broken __repr__ must not hide the real problem
            text = "unprintable"
        raise TypeError(
            f"save_checkpoint: metadata {where} is a {_type_name(value)} ({text if len(text) <= 40 else text[:37] + '...'}), "
            "which load_checkpoint (torch.load with weights_only=True) would refuse to read back. Allowed: str, int, float, "
            f"bool, None, tensors, and lists/tuples/dicts of those. Fix: {_metadata_fix(value)}."
        )
    if id(value) in open_containers:
        raise TypeError(f"save_checkpoint: metadata {where} contains itself (a reference cycle); pass a copy without the cycle.")
    open_containers.add(id(value))
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(value, dict):
            _check_metadata_key(key, where)
        _check_metadata(item, f"{where}[{key!r}]", open_containers)
    open_containers.discard(id(value))


def _unmasked(err: BaseException) -> BaseException:
    """The error torch.save's zip writer hid: when a write fails midway (an interrupt, a full disk),
    the writer's clean-up raises ``RuntimeError: [enforce fail ...] unexpected pos``, with the
    real error as its ``__context__``."""
    while isinstance(err, RuntimeError) and "enforce fail" in str(err) and err.__context__ is not None:
        err = err.__context__
    return err


def _remove_orphaned_temp_files(path: Path, started: float) -> None:
    """Delete the temp files that earlier saves to ``path`` left when they were killed.

    Only regular files (not folders or symlinks) named exactly as :func:`save_checkpoint`
    names its temp files, ``.{path.name}.`` + 8 characters of ``tempfile``'s alphabet +
    ``.tmp``, and last modified before this save ``started`` (so a concurrent save to the
    same path, still writing, keeps its file). Best effort: a file that cannot be removed is left.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    for entry in os.scandir(path.parent):
        try:
            if (pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)
                    and entry.stat(follow_symlinks=False).st_mtime < started):
                os.unlink(entry.path)
        except OSError:
            pass


def save_checkpoint(path: str | Path, model: nn.Module, **metadata: Any) -> Path:
    """Save ``model.state_dict()`` plus plain ``metadata`` atomically.

    Written to a temporary file in the same folder, flushed to disk, then renamed
    over ``path``: a crash mid-write leaves the old checkpoint intact, never a
    half-written one. Temp files that earlier, killed saves to the same ``path`` left
    are removed once the new checkpoint is in place (only those: see
    :func:`_remove_orphaned_temp_files`).

    ``metadata`` must hold only what :func:`load_checkpoint` can read back with
    ``weights_only=True``: str, int, float, bool, None, tensors, and lists/tuples/dicts
    of those (exact types: no ``pathlib.Path``, numpy numbers or sets). Anything else
    raises ``TypeError`` naming the key, the type and the fix, before anything is written.
    An interrupt (Ctrl-C) during the save raises ``KeyboardInterrupt`` saying whether the
    previous checkpoint is unchanged; the temp file is removed.
    """
    path = Path(path)
    if not isinstance(model, nn.Module):
        raise TypeError(f"save_checkpoint needs the model (an nn.Module), got {type(model).__name__}; "
                        "pass save_checkpoint(path, model), not model.state_dict()")
    if path.is_dir():
        raise IsADirectoryError(f"save_checkpoint: {path} is a folder; give a file name such as {path / 'model.pt'}")
    for key, value in metadata.items():
        _check_metadata(value, repr(key), set())
    blocking = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise NotADirectoryError(f"save_checkpoint: {blocking} is a file, but {path} needs it to be a folder; "
                                 "choose another path or move that file")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"model": model.state_dict(), "metadata": metadata}
    payload["sha256"] = content_hash(payload)
    existed, started = path.exists(), time.time()
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:  # read-only or full file system, no permission: say where, not the temp file's name
        raise type(err)(err.errno, f"save_checkpoint: cannot create a file in {path.parent} ({err.strerror}); "
                                   "choose a folder you can write to") from err
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException as err:
        replaced = not os.path.exists(tmp)
        Path(tmp).unlink(missing_ok=True)
        cause = _unmasked(err)
        if isinstance(cause, KeyboardInterrupt):
            state = ("the new checkpoint was already written there" if replaced
                     else "the previous checkpoint at it is unchanged" if existed else "nothing was written there")
            raise KeyboardInterrupt(f"save_checkpoint interrupted; {state}: {path}") from None
        if cause is not err:
            raise cause from None
        raise
    _remove_orphaned_temp_files(path, started)
    return path


def _feed_hash(h: Any, value: Any) -> None:
    """Feed ``value`` (tensors, plain scalars, and lists/tuples/dicts of those) into the hash ``h``:
    each item's type, a tensor's dtype, shape and bytes, a scalar's ``repr``, containers in order."""
    if isinstance(value, Tensor):
        t = value.detach().cpu()
        if t.is_quantized:
            t = t.dequantize()
        if t.layout != torch.strided:
            t = t.to_dense()
        t = t.contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(value.shape)}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, dict):
        h.update(f"D{len(value)}:".encode())
        for key, item in value.items():
            _feed_hash(h, key)
            _feed_hash(h, item)
    elif isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__}{len(value)}:".encode())
        for item in value:
            _feed_hash(h, item)
    else:
        h.update(f"{type(value).__name__}:{value!r};".encode())


def content_hash(payload: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's content (``{"model": ..., "metadata": ...}``): every tensor's dtype, shape
    and bytes and every metadata value, in order. :func:`save_checkpoint` stores it in the file and
    :func:`load_checkpoint` recomputes it, so one flipped bit anywhere in the weights is caught."""
    h = hashlib.sha256()
    _feed_hash(h, payload)
    return h.hexdigest()


#: The first bytes of torch's pre-1.6 (non-zip) format: its pickled magic number.
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)


def _not_a_checkpoint_because(path: Path) -> str | None:
    """Why ``path`` cannot be a torch checkpoint, judged from its first bytes; ``None`` if it may be one."""
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if not head:
        return "the file is empty (0 bytes), e.g. a save that was killed before it wrote anything"
    if head.startswith(b"PK\x03\x04"):
        return None if zipfile.is_zipfile(path) else "the zip archive is truncated or damaged (e.g. copied while being written)"
    if head == _LEGACY_MAGIC:
        return None
    return f"it is not a torch checkpoint (it starts with {head[:8]!r}, not with a zip archive's b'PK')"


def _not_a_course_checkpoint(payload: Any) -> str | None:
    """What ``payload`` is instead of ``{"model": state_dict, ...}``; ``None`` if it is one."""
    if not isinstance(payload, dict):
        return f"a {type(payload).__name__}"
    if "model" not in payload:
        return f"a dict with keys {sorted(map(str, payload))[:10]}"
    if not isinstance(payload["model"], dict):
        return f"a dict whose 'model' is a {type(payload['model']).__name__}"
    return None


def load_checkpoint(path: str | Path, model: nn.Module | None = None, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, safely.

    Uses ``torch.load(weights_only=True)``: tensors and plain containers only, so
    a file that smuggles pickled code is refused instead of executed. Loads the
    weights into ``model`` if given; returns ``{"model": state_dict, "metadata": ...}``.

    Raises ``FileNotFoundError`` for a missing file; ``ValueError`` naming the file and
    what was expected for an empty, truncated or non-torch file and for a torch file that
    is not a course checkpoint (no ``"model"`` state_dict), and for a damaged one: the SHA-256
    of the content that :func:`save_checkpoint` stored (:func:`content_hash`) is recomputed and
    must match (files written before checkpoints carried it load unchecked); ``pickle.UnpicklingError``
    for a file holding pickled objects other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint here. Train one first, or check the path.")
    expected = ("Expected a checkpoint written by save_checkpoint (torch.save's zip format): re-save it with "
                "save_checkpoint, or check that the path names the .pt file.")
    problem = _not_a_checkpoint_because(path)
    if problem is not None:
        raise ValueError(f"{path}: cannot load -- {problem}. {expected}")
    if not isinstance(map_location, (str, torch.device, dict)) and not callable(map_location):
        raise TypeError(f"load_checkpoint: map_location must be a device such as 'cpu' or torch.device('cuda:0'), got "
                        f"{map_location!r}")
    device = torch.device(map_location) if isinstance(map_location, (str, torch.device)) else None
    if device is not None and device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{path}: map_location={str(map_location)!r} names a CUDA device, but this machine has none; "
                           "load with map_location='cpu' (the default) and move the model afterwards")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = next((line for line in lines if "Unsupported" in line), lines[-1] if lines else "").split(". ")[0]
        raise pickle.UnpicklingError(
            f"{path}: refused to load -- besides tensors and plain containers the file holds pickled Python objects "
            f"({detail}), which weights_only=True does not unpickle, since unpickling can run code (or the file is "
            "damaged: a changed byte can read as such an object; try another copy). If you wrote the "
            "file yourself (e.g. with an older save_checkpoint and a pathlib.Path or numpy number in its metadata), "
            "load it once with torch.load(path, weights_only=False) and re-save it with save_checkpoint; never do "
            "that with a file from elsewhere."
        ) from err
    except (EOFError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not any(w in str(err) for w in ("PytorchStreamReader", "inline_container")):
            raise  # not about the archive (e.g. map_location names a missing device): torch's message says so
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(
            f"{path}: cannot load -- the file is damaged or not a torch checkpoint ({first_line}). {expected}"
        ) from err
    found = _not_a_course_checkpoint(payload)
    if found is not None:
        raise ValueError(
            f"{path}: not a course checkpoint (expected a dict with a 'model' state_dict, found {found}). Save one "
            "with save_checkpoint(path, model); a bare state_dict loads with "
            "model.load_state_dict(torch.load(path, weights_only=True))."
        )
    stored = payload.pop("sha256", None)
    if stored is not None and stored != content_hash(payload):
        raise ValueError(f"{path}: the checkpoint is damaged: its content no longer matches the SHA-256 stored when it "
                         "was saved (a changed byte, e.g. a bad disk or copy). Use another copy, or retrain "
                         "(`train --resume` continues from last.pt if that one is intact).")
    if model is not None:
        try:
            model.load_state_dict(payload["model"])
        except RuntimeError as err:  # torch lists every mismatched tensor; its first lines say enough
            detail = "; ".join(line.strip() for line in str(err).splitlines()[1:3])
            raise ValueError(
                f"{path}: the checkpoint does not fit this {type(model).__name__} ({detail}). Build the model it was "
                "saved from (same width, depth and number of classes); for a pruned checkpoint, "
                "shrink_to_state_dict(TinyDetector(...), checkpoint['model']) first."
            ) from err
    return payload
