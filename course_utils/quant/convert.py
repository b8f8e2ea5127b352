"""From a fake-quantized course detector to its integer-only network, with the model's own scales.

Taught in: 09_integer_inference.

:func:`integer_detector` reads each layer's quantizers as the model holds them -- the ranges QAT
trained with (moving-average min-max, frozen late in training), or the ranges PTQ calibrated:

* the **input quantizer of a layer is the output grid of the layer before it** (uint8, asymmetric
  per tensor: after a ReLU every activation is >= 0, and x86's VNNI instruction ``vpdpbusd``
  multiplies unsigned 8-bit activations by signed 8-bit weights -- the fast path);
* weights: the weight quantizer's per-output-channel symmetric int8 scales, on the BN-folded weight;
* the few tensors no quantizer of the model watches -- the two FPN laterals before their sum and the
  two head outputs -- get min-max uint8 ranges observed on the calibration images.

The result, an :class:`IntegerDetector`, runs from a uint8 input to uint8 head outputs with
integer arithmetic only (:mod:`course_utils.quant.integer`); only the input quantize and the
output dequantize touch floats. :func:`course_utils.quant.qdq.export_qdq` writes the very same
numbers as an ONNX QDQ graph for ONNX Runtime.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .integer import IntegerAdd, IntegerConv
from .modules import QuantConv2d, QuantLinear
from .observers import MinMaxObserver
from .qat import QuantConvBn2d

__all__ = ["IntegerDetector", "integer_detector", "INPUT_OFFSET"]

INPUT_OFFSET = 0.5  # TinyDetector.features centres pixels: stem(x - 0.5)
_BACKBONE = ("stem", "stage2", "stage3")


def _quant_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantConvBn2d, QuantLinear))}


def _check_model(model: Any) -> None:
    from ..models import TinyDetector

    if not isinstance(model, TinyDetector):
        raise TypeError(f"integer_detector takes a fake-quantized TinyDetector (prepare_qat or quantize_model of one), "
                        f"got {type(model).__name__}")
    if getattr(model, "levels", 1) != 1:
        raise ValueError(f"integer_detector knows the one-level TinyDetector's wiring only, got levels={model.levels}; "
                         "deploy a multi-level detector with course_utils.deploy.quantize_onnx (ONNX Runtime int8)")
    layers = _quant_layers(model)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not layers:
        raise ValueError("integer_detector: the model has no quantized layers; pass prepare_qat(model) (after training) "
                         "or post_training_quantize(model, batches) -- a float model has no scales to deploy")
    wrapped = {n for n, m in layers.items() for c in m.modules() if isinstance(c, nn.Conv2d)}
    bare = [n for n in convs if not any(n.startswith(w + ".") for w in layers)]
    if bare or not wrapped:
        raise ValueError(f"integer_detector: every conv must be quantized, but {bare} are float (quantized with skip=?); "
                         "integer-only inference needs scales for every layer")
    loose_bn = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and not n.endswith(".bn")]
    if loose_bn:
        raise ValueError(f"integer_detector: BatchNorm {loose_bn[:3]} sits outside the quantized convs (quantize_model("
                         "..., fold_batch_norm=False)); an integer network runs the folded convs only: quantize with "
                         "fold_batch_norm=True (the default), or use prepare_qat, which folds BN into QuantConvBn2d")
    for name, m in layers.items():
        if m.input_fq is None:
            raise ValueError(f"integer_detector: layer {name!r} has float inputs (act_bits=None); integer-only inference "
                             "needs an activation quantizer before every layer (act_bits=8)")
        obs_w, obs_x = m.weight_fq.observer, m.input_fq.observer
        if obs_w.num_bits > 8 or obs_x.num_bits != 8 or not obs_w.symmetric or obs_w.ch_axis not in (0, None) \
                or obs_x.signed or obs_x.ch_axis is not None:
            raise ValueError(f"integer_detector: layer {name!r} is quantized as weights {obs_w.extra_repr()}, activations "
                             f"{obs_x.extra_repr()}; the integer network needs <= 8-bit symmetric weights and 8-bit "
                             "unsigned per-tensor activations (act_bits=8: its grids are uint8, as ONNX Runtime's are)")
        if m.input_fq.scale.numel() == 0:
            raise ValueError(f"integer_detector: layer {name!r} was never calibrated; run calibrate(model, batches) first")


def _folded_weight(m: nn.Module) -> tuple[Tensor, Tensor | None, nn.Conv2d]:
    if isinstance(m, QuantConvBn2d):
        w, b = m.folded()
        return w.detach(), b.detach(), m.conv
    return m.conv.weight.detach(), None if m.conv.bias is None else m.conv.bias.detach(), m.conv


def _weight_qparams(m: nn.Module, weight: Tensor) -> tuple[Tensor, tuple[int, int]]:
    fq = copy.deepcopy(m.weight_fq).eval()
    if fq.dynamic or fq.scale.numel() == 0:  # QAT re-reads its weight range every step: read it once more
        fq.observer.reset()
        fq.observer(weight)
        scale = fq.observer.calculate_qparams()[0]
    else:
        scale = fq.scale
    return scale.reshape(-1).float().cpu(), (fq.observer.q_min, fq.observer.q_max)


def _observe_outputs(model: nn.Module, names: Sequence[str], images: Tensor, batch_size: int) -> dict[str, tuple[float, int]]:
    """Min-max uint8 (scale, zero point) of the outputs of the layers ``names`` on ``images``."""
    modules = dict(model.named_modules())
    observers = {n: MinMaxObserver(num_bits=8, symmetric=False, signed=False) for n in names}
    handles = [modules[n].register_forward_hook(lambda mod, args, out, n=n: observers[n](out)) for n in names]
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                model.forward_raw(images[i:i + batch_size])
    finally:
        for h in handles:
            h.remove()
    return {n: (float(s), int(z)) for n, (s, z) in ((n, o.calculate_qparams()) for n, o in observers.items())}


class IntegerDetector(nn.Module):
    """The course detector's network in integer arithmetic, and the detector around it.

    ``network(images)`` -> (logits (B, A, K), deltas (B, A, 4)) like
    :class:`~course_utils.deploy.DetectorNetwork`, computed as: quantize ``x − 0.5`` to uint8
    (float, once), every layer in integers (:meth:`integer_forward`), dequantize the two head
    outputs (float, once). ``model(images)`` returns detections (the reference detector supplies
    anchors and post-processing), so :func:`course_utils.train.evaluate` scores it unchanged.
    """

    def __init__(self, layers: dict[str, IntegerConv], add: IntegerAdd, input_scale: float, input_zero_point: int,
                 detector: nn.Module) -> None:
        super().__init__()
        self.layers, self.add = layers, add
        self.input_scale, self.input_zero_point = float(input_scale), int(input_zero_point)
        self.detector = detector
        self.eval()

    def names(self, prefix: str) -> list[str]:
        return [n for n in self.layers if n == prefix or n.startswith(prefix + ".")]

    def quantize_input(self, images: Tensor) -> Tensor:
        """``q = clamp(round((x − 0.5) / S) + Z, 0, 255)`` as uint8: the one float step before the integer network."""
        q = torch.round((images.float() - INPUT_OFFSET) / self.input_scale) + self.input_zero_point
        return torch.clamp(q, 0, 255).to(torch.uint8)

    def integer_forward(self, q: Tensor, keep: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """uint8 input (B, 3, H, W) -> uint8 head outputs (B, K, h, w) and (B, 4, h, w), integers only.

        ``keep``: a dict that receives every layer's integer output by name (for inspection)."""
        keep = {} if keep is None else keep

        def run(name: str, x: Tensor) -> Tensor:
            keep[name] = self.layers[name](x)
            return keep[name]

        for stage in _BACKBONE:
            for name in self.names(stage):
                q = run(name, q)
        c3 = q
        for name in self.names("stage4"):
            q = run(name, q)
        l3, l4 = run("lateral3", c3), run("lateral4", q)
        rows = torch.arange(l3.shape[-2], device=q.device) * l4.shape[-2] // l3.shape[-2]  # nearest, as F.interpolate
        cols = torch.arange(l3.shape[-1], device=q.device) * l4.shape[-1] // l3.shape[-1]
        up = l4.index_select(-2, rows).index_select(-1, cols)
        keep["add"] = q = self.add(l3, up)
        for name in self.names("smooth") + self.names("tower"):
            q = run(name, q)
        return run("cls_out", q), run("box_out", q)

    @staticmethod
    def _dequantize(q: Tensor, layer: IntegerConv) -> Tensor:
        return (q.to(torch.int32) - layer.y_zero_point).float() * layer.y_scale

    def network(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Float images (B, 3, H, W) -> float logits (B, A, K), deltas (B, A, 4)."""
        q_cls, q_box = self.integer_forward(self.quantize_input(images))
        logits = self._dequantize(q_cls, self.layers["cls_out"]).flatten(2).transpose(1, 2)
        deltas = self._dequantize(q_box, self.layers["box_out"]).flatten(2).transpose(1, 2)
        return logits, deltas

    def forward(self, images: Tensor | Sequence[Tensor]) -> list[dict[str, Tensor]]:
        from ..models import _stack_images, check_images

        x = _stack_images(images)
        check_images(x)
        logits, deltas = self.network(x)
        h, w = -(-x.shape[-2] // self.detector.stride), -(-x.shape[-1] // self.detector.stride)
        raw = {"logits": logits, "deltas": deltas, "anchors": self.detector.anchors((h, w), x.device)}
        return self.detector.postprocess(raw, tuple(x.shape[-2:]))


def integer_detector(model: nn.Module, calibration_images: Tensor, batch_size: int = 32) -> IntegerDetector:
    """The integer-only network of a fake-quantized :class:`~course_utils.models.TinyDetector`.

    ``model``: ``prepare_qat(TinyDetector(...))`` after training, or ``quantize_model`` +
    ``calibrate`` of one -- 8-bit, every conv quantized. Each conv becomes an
    :class:`~course_utils.quant.integer.IntegerConv` whose input grid is the model's own input
    quantizer and whose output grid is the next layer's; ``calibration_images`` (N, 3, H, W)
    only supply the ranges of the laterals and head outputs, which no quantizer of the model
    watches. ``model`` is not changed.
    """
    _check_model(model)
    if not isinstance(calibration_images, Tensor) or calibration_images.ndim != 4 or len(calibration_images) == 0:
        got = tuple(calibration_images.shape) if isinstance(calibration_images, Tensor) else type(calibration_images).__name__
        raise ValueError(f"calibration_images must be a non-empty (N, 3, H, W) float tensor, got {got}")
    model = copy.deepcopy(model).cpu().eval()
    layers = _quant_layers(model)
    order = list(layers)

    def input_grid(name: str) -> tuple[float, int]:
        fq = layers[name].input_fq
        return float(fq.scale), int(fq.zero_point)

    # who consumes each layer's output (the detector's fixed wiring, see TinyDetector.features/head)
    chain = [n for n in order if n.split(".")[0] in _BACKBONE + ("stage4",)]
    consumer = {a: b for a, b in zip(chain, chain[1:])}
    c3 = [n for n in chain if n.startswith("stage3")][-1]
    consumer[c3] = [n for n in chain if n.startswith("stage4")][0]
    consumer[chain[-1]] = "lateral4"
    neck = [n for n in order if n.split(".")[0] in ("smooth", "tower")]
    consumer.update({a: b for a, b in zip(neck, neck[1:])})
    consumer[neck[-1]] = "cls_out"
    observed = _observe_outputs(model, ["lateral3", "lateral4", "cls_out", "box_out"], calibration_images.float().cpu(), batch_size)

    # each layer's output grid: its consumer's input quantizer, or an observed range
    y_grid = {n: input_grid(consumer[n]) if n in consumer else observed[n] for n in order}
    producer = {b: a for a, b in consumer.items()}
    producer["lateral3"], producer["box_out"] = c3, neck[-1]  # the second reader of a shared tensor
    from ..models import ConvBNReLU

    with_relu = {f"{n}.0" for n, m in model.named_modules() if isinstance(m, ConvBNReLU)}
    result: dict[str, IntegerConv] = {}
    for name in order:
        m = layers[name]
        weight, bias, conv = _folded_weight(m)
        w_scale, w_range = _weight_qparams(m, weight)
        x_scale, x_zp = y_grid[producer[name]] if name in producer else input_grid(name)
        result[name] = IntegerConv.from_float(weight, bias, x_scale, x_zp, w_scale, *y_grid[name], name in with_relu,
                                              conv.stride[0], conv.padding[0], w_range=w_range)
    s_add, z_add = input_grid(neck[0])
    add = IntegerAdd.from_scales(*observed["lateral3"], *observed["lateral4"], s_add, z_add)
    s_in, z_in = input_grid(order[0])
    detector = IntegerDetector(result, add, s_in, z_in, model)
    # two layers read each shared tensor; their quantizers watched the same data, so they agree (recorded)
    detector.shared_scale_gap = max(abs(input_grid(b)[0] / y_grid[a][0] - 1) for b, a in producer.items()
                                    if b in ("lateral3", "box_out"))
    if detector.shared_scale_gap > 1e-6:
        import warnings

        warnings.warn(f"integer_detector: two layers that read the same tensor were quantized with scales "
                      f"{detector.shared_scale_gap:.1%} apart; the integer network uses the first reader's grid for both",
                      stacklevel=2)
    return detector
