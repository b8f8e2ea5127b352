"""Observers: how a quantizer chooses its range ``[x_min, x_max]`` from the data it sees.

Taught in: 04_quantization_math.

Min-max, moving-average min-max (for QAT), percentile and MSE-optimal; each
turns its range into ``(S, Z)`` with :func:`~course_utils.quant.affine.calc_qparams`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .affine import _calc_qparams, _fake_quantize_per_channel, _is_real, qrange

__all__ = ["Observer", "MinMaxObserver", "MovingAverageMinMaxObserver", "PercentileObserver", "MSEObserver",
           "OBSERVERS", "make_observer"]


def _reduce_dims(x: Tensor, ch_axis: int | None) -> Tensor:
    """``x`` as (C, rest) for per-channel statistics, or (1, all) per tensor."""
    if ch_axis is None:
        return x.reshape(1, -1)
    return x.movedim(ch_axis, 0).reshape(x.shape[ch_axis], -1)


def _resize_buffers_from(module: nn.Module, state_dict: dict[str, Any], prefix: str, names: Iterable[str]) -> None:
    """Quantizer buffers start empty and take their shape when first observed; give them the
    saved shape before loading, so a saved QAT/PTQ model loads into a freshly prepared one."""
    for name in names:
        key = prefix + name
        if key in state_dict and getattr(module, name).shape != state_dict[key].shape:
            setattr(module, name, torch.empty_like(state_dict[key], device=getattr(module, name).device))


class Observer(nn.Module):
    """Watches tensors and proposes a quantization range; the base of all observers.

    Subclasses implement :meth:`update` (fold a batch into ``min_val``/``max_val``).
    :meth:`calculate_qparams` turns the range into ``(S, Z)`` with :func:`calc_qparams`.
    ``ch_axis=None`` is per-tensor; an int is per-channel along that axis.
    Calling the observer records ``x`` and returns it unchanged.
    """

    def __init__(self, num_bits: int = 8, symmetric: bool = False, signed: bool | None = None,
                 ch_axis: int | None = None) -> None:
        super().__init__()
        if ch_axis is not None and (isinstance(ch_axis, bool) or not isinstance(ch_axis, numbers.Integral)):
            raise ValueError(f"ch_axis must be None (per tensor) or an int axis (per channel), got {ch_axis!r}")
        ch_axis = None if ch_axis is None else int(ch_axis)
        self.num_bits, self.symmetric, self.ch_axis = num_bits, symmetric, ch_axis
        self.signed = symmetric if signed is None else signed
        self.q_min, self.q_max = qrange(num_bits, self.signed)
        self.register_buffer("min_val", torch.tensor([]))
        self.register_buffer("max_val", torch.tensor([]))

    def forward(self, x: Tensor) -> Tensor:
        if x.numel() == 0:
            raise ValueError(f"{type(self).__name__} got an empty tensor (shape {tuple(x.shape)}): nothing to take a range from")
        if self.ch_axis is not None and not -x.ndim <= self.ch_axis < x.ndim:
            raise ValueError(f"{type(self).__name__}(ch_axis={self.ch_axis}) got a tensor of shape {tuple(x.shape)}, "
                             "which has no such axis; use ch_axis=0 for the output channels of a weight, or None")
        x_d = x.detach().float()
        if not torch.isfinite(x_d).all():
            raise ValueError(f"{type(self).__name__} saw NaN or inf values; the model or its input is broken")
        self.update(_reduce_dims(x_d, self.ch_axis))
        return x

    def update(self, rows: Tensor) -> None:
        raise NotImplementedError

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        _resize_buffers_from(self, state_dict, prefix, ("min_val", "max_val"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reset(self) -> None:
        """Forget everything observed so far."""
        self.min_val, self.max_val = torch.tensor([]), torch.tensor([])
        self.batches, self._samples = 0, None

    def _merge(self, lo: Tensor, hi: Tensor) -> None:
        if self.min_val.numel() == 0:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val, self.max_val = torch.minimum(self.min_val, lo), torch.maximum(self.max_val, hi)

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        """``(scale, zero_point)`` for what has been observed so far: shapes () or (C,)."""
        if self.min_val.numel() == 0:
            raise RuntimeError(f"{type(self).__name__} has observed nothing yet: run calibration data through it first")
        lo, hi = self.min_val, self.max_val
        scale, zp = _calc_qparams(lo, hi, self.num_bits, self.symmetric, self.signed)
        return (scale, zp) if self.ch_axis is not None else (scale.reshape(()), zp.reshape(()))

    def extra_repr(self) -> str:
        kind = "per-tensor" if self.ch_axis is None else f"per-channel(axis={self.ch_axis})"
        return f"bits={self.num_bits}, {'symmetric' if self.symmetric else 'asymmetric'}, {kind}"


class MinMaxObserver(Observer):
    """Range = the smallest and largest value ever seen: ``[min x, max x]``.

    Never clips, so a single outlier stretches the grid for everyone.
    """

    def update(self, rows: Tensor) -> None:
        self._merge(rows.min(dim=1).values, rows.max(dim=1).values)


class MovingAverageMinMaxObserver(Observer):
    """Range = exponential moving average of each batch's min and max.

    ``m ← (1 − c) · m + c · min(batch)`` (same for max), ``c = averaging_constant``.
    Used for activations during QAT, where ranges drift as the weights learn.
    """

    def __init__(self, averaging_constant: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not _is_real(averaging_constant) or not 0 < averaging_constant <= 1:
            raise ValueError(f"averaging_constant must be a number in (0, 1] (0.01 is usual), got {averaging_constant!r}")
        self.c = averaging_constant

    def update(self, rows: Tensor) -> None:
        lo, hi = rows.min(dim=1).values, rows.max(dim=1).values
        if self.min_val.numel() == 0:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val = self.min_val + self.c * (lo - self.min_val)
            self.max_val = self.max_val + self.c * (hi - self.max_val)


def _kth_quantile(rows: Tensor, q: float) -> Tensor:
    """The q-quantile of each row: the value at sorted position ``ceil(q · (n − 1))`` (0-based).

    Same as ``torch.quantile(rows, q, dim=1, interpolation="higher")``, but by
    order statistic, so it has no input-size limit.
    """
    n = rows.shape[1]
    rank = float(torch.tensor(q, dtype=torch.float32)) * (n - 1)  # q rounded to float32 first, as torch does
    k = min(n, int(math.ceil(rank)) + 1)
    return rows.kthvalue(k, dim=1).values


class PercentileObserver(Observer):
    """Range = the ``(100 − p)``-th to ``p``-th percentile, averaged over batches.

    Clips the rare outliers (they saturate at the grid's ends) so the common
    values get finer steps.
    """

    def __init__(self, percentile: float = 99.99, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not _is_real(percentile) or not 50 < percentile <= 100:
            raise ValueError(f"percentile must be a number in (50, 100] (99.99 is usual), got {percentile!r}")
        self.percentile = percentile
        self.batches = 0

    def update(self, rows: Tensor) -> None:
        p = self.percentile / 100
        lo, hi = _kth_quantile(rows, 1 - p), _kth_quantile(rows, p)
        if self.min_val.numel() == 0:
            self.min_val, self.max_val = lo, hi
        else:  # running mean of the per-batch percentiles
            w = 1 / (self.batches + 1)
            self.min_val, self.max_val = self.min_val + w * (lo - self.min_val), self.max_val + w * (hi - self.max_val)
        self.batches += 1


class MSEObserver(Observer):
    """Range = the shrunken min-max range ``α · [min, max]`` that minimises the quantization MSE.

    ``α* = argmin_α mean((x − fq(x; α·min, α·max))²)`` over ``num_candidates``
    values of α in ``[min_ratio, 1]``, per channel when per-channel. Keeps a
    fixed random sample of at most ``max_samples`` values per channel to search on.
    """

    def __init__(self, num_candidates: int = 40, min_ratio: float = 0.2, max_samples: int = 1 << 16, **kwargs: Any) -> None:
        """Checked: ``num_candidates`` and ``max_samples`` integers >= 1, ``0 < min_ratio <= 1``."""
        for name, value in (("num_candidates", num_candidates), ("max_samples", max_samples)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"MSEObserver: {name} must be an integer >= 1, got {value!r} "
                                 f"(the default is {40 if name == 'num_candidates' else 1 << 16})")
        if isinstance(min_ratio, bool) or not isinstance(min_ratio, numbers.Real) or not 0 < min_ratio <= 1:
            raise ValueError(f"MSEObserver: min_ratio must be a number in (0, 1] (the smallest shrink of the range "
                             f"tried), got {min_ratio!r}")
        num_candidates, max_samples = int(num_candidates), int(max_samples)
        super().__init__(**kwargs)
        self.alphas = torch.linspace(min_ratio, 1.0, num_candidates)
        self.max_samples = max_samples
        self._samples: Tensor | None = None

    def update(self, rows: Tensor) -> None:
        self._merge(rows.min(dim=1).values, rows.max(dim=1).values)
        n = rows.shape[1]
        if n > self.max_samples:  # a fixed random subset: a stride could alias with the tensor's layout
            rows = rows[:, torch.randperm(n, generator=torch.Generator().manual_seed(n))[: self.max_samples].to(rows.device)]
        sample = rows
        self._samples = sample if self._samples is None else torch.cat([self._samples, sample], 1)[:, -self.max_samples:]

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        if self._samples is None:
            raise RuntimeError("MSEObserver has observed nothing yet: run calibration data through it first")
        x = self._samples
        best_err = torch.full((x.shape[0],), math.inf, device=x.device)
        best = (self.min_val.clone(), self.max_val.clone())
        for a in self.alphas.tolist():
            s, z = _calc_qparams(a * self.min_val, a * self.max_val, self.num_bits, self.symmetric, self.signed)
            err = (x - _fake_quantize_per_channel(x, s, z, 0, self.q_min, self.q_max)).pow(2).mean(1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = (torch.where(better, a * self.min_val, best[0]), torch.where(better, a * self.max_val, best[1]))
        scale, zp = _calc_qparams(best[0], best[1], self.num_bits, self.symmetric, self.signed)
        return (scale, zp) if self.ch_axis is not None else (scale.reshape(()), zp.reshape(()))


OBSERVERS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
}


def make_observer(name: str, **kwargs: Any) -> Observer:
    """An observer by name: one of ``OBSERVERS`` ("minmax", "moving_average", "percentile", "mse")."""
    if name not in OBSERVERS:
        raise ValueError(f"unknown observer {name!r}; choose one of {sorted(OBSERVERS)}")
    return OBSERVERS[name](**kwargs)
