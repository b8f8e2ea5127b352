"""The integer network as an ONNX QDQ graph: the model's own scales carried to ONNX Runtime.

Taught in: 09_integer_inference.

:func:`export_qdq` writes an :class:`~course_utils.quant.convert.IntegerDetector` in ONNX's
QDQ form: every tensor between two layers is ``QuantizeLinear → DequantizeLinear`` with the
integer network's own scale and zero point (uint8, per tensor); every weight is an int8
initializer behind a per-output-channel ``DequantizeLinear`` (symmetric, zero point 0), every
bias an int32 initializer at scale ``S_w · S_x``. Nothing is re-calibrated: the numbers are the
ones the model trained (QAT) or calibrated (PTQ) with. When ONNX Runtime loads the file (graph
optimization level "extended" or higher) it fuses each
``DQ → Conv [→ Relu] → Q`` group into one ``QLinearConv`` (and ``DQ, DQ → Add → Q`` into
``QLinearAdd``); :func:`optimized_op_types` shows which kernels it chose.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .convert import INPUT_OFFSET, IntegerDetector
from .integer import IntegerConv

__all__ = ["export_qdq", "optimized_op_types", "conv_qdq_model"]

OPSET = 19


class _Graph:
    """A small builder: initializers, nodes and unique names."""

    def __init__(self, activations: str = "uint8") -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.count = 0
        # int8 activations hold the same grid shifted by 128: q_s8 = q_u8 - 128, Z_s8 = Z_u8 - 128
        self.dtype, self.offset = (np.uint8, 0) if activations == "uint8" else (np.int8, 128)

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, stem: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], stem: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = self.name(stem or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out

    def qdq(self, x: str, scale: float, zero_point: int) -> str:
        """``DQ(Q(x))`` with one (scale, zero point): the tensor crosses the boundary as 8-bit integers."""
        s, z = self.const("scale", np.float32(scale)), self.const("zero_point", self.dtype(zero_point - self.offset))
        return self.node("DequantizeLinear", [self.node("QuantizeLinear", [x, s, z]), s, z])

    def conv(self, x: str, layer: IntegerConv, stem: str, weight: np.ndarray | None = None, bias: np.ndarray | None = None,
             w_scale: np.ndarray | None = None, out: tuple[float, int] | None = None) -> str:
        """``Relu?(Conv(x, DQ(q_w), DQ(q_b)))`` followed by the layer's output QDQ (other weights or output grid
        may be given, for the fused head)."""
        weight = layer.weight.numpy() if weight is None else weight
        bias = layer.bias.numpy() if bias is None else bias
        w_scale = layer.w_scale.numpy().astype(np.float32) if w_scale is None else w_scale
        w = self.node("DequantizeLinear", [self.const(f"{stem}_weight", weight), self.const("w_scale", w_scale),
                                           self.const("w_zero_point", np.zeros(len(w_scale), np.int8))], axis=0)
        b = self.node("DequantizeLinear", [self.const(f"{stem}_bias", bias),
                                           self.const("b_scale", (w_scale.astype(np.float64) * layer.x_scale).astype(np.float32)),
                                           self.const("b_zero_point", np.zeros(len(w_scale), np.int32))], axis=0)
        k = int(weight.shape[-1])
        y = self.node("Conv", [x, w, b], stem, kernel_shape=[k, k], strides=[layer.stride] * 2, pads=[layer.padding] * 4)
        if layer.relu:
            y = self.node("Relu", [y])
        return self.qdq(y, *(out or (layer.y_scale, layer.y_zero_point)))

    def float_conv(self, x: str, layer: IntegerConv, stem: str) -> str:
        """The layer in float on its dequantized weight ``S_w · q_w`` and bias ``S_w S_x · q_b``, then its output QDQ."""
        w = (layer.weight.double() * layer.w_scale.double().reshape(-1, 1, 1, 1)).float().numpy()
        b = (layer.bias.double() * layer.w_scale.double() * layer.x_scale).float().numpy()
        k = int(w.shape[-1])
        y = self.node("Conv", [x, self.const(f"{stem}_weight", w), self.const(f"{stem}_bias", b)], stem, kernel_shape=[k, k],
                      strides=[layer.stride] * 2, pads=[layer.padding] * 4)
        if layer.relu:
            y = self.node("Relu", [y])
        return self.qdq(y, layer.y_scale, layer.y_zero_point)


def export_qdq(detector: IntegerDetector, path: str | Path, activations: str = "uint8", fuse_head: bool = False,
               float_stem: bool = False) -> Path:
    """Write ``detector`` (from :func:`~course_utils.quant.convert.integer_detector`) as an ONNX QDQ model.

    Input ``images`` (batch, 3, H, W) float in [0, 1]; outputs ``logits`` (batch, A, K) and
    ``deltas`` (batch, A, 4), like :func:`course_utils.deploy.export_onnx`, so
    :class:`~course_utils.deploy.OrtDetector` runs it. Batch and image size are dynamic.

    ``activations="int8"`` stores every activation as ``q − 128`` with zero point ``Z − 128``:
    the same grid and the same numbers. On x86, ONNX Runtime fuses such a graph into integer
    kernels only with the session option ``session.qdqisint8allowed = "1"``
    (``ort_session(path, config={"session.qdqisint8allowed": "1"})``); without it, it converts what
    it can to uint8 and leaves the rest as float ops. ``fuse_head=True`` runs the two 1×1 head
    convs as one conv with K + 4 outputs on **one** output grid (the union of the two ranges), then
    splits it: one kernel call instead of two, but the box deltas, whose range is far narrower than
    the logits', lose most of their levels -- notebook 09 measures what that costs.
    """
    import onnx
    from onnx import TensorProto, helper

    if not isinstance(detector, IntegerDetector):
        raise TypeError(f"export_qdq takes an IntegerDetector (course_utils.quant.integer_detector(model, images)), "
                        f"got {type(detector).__name__}")
    if activations not in ("uint8", "int8"):
        raise ValueError(f"activations must be 'uint8' (VNNI's native u8 x s8) or 'int8', got {activations!r}")
    g = _Graph(activations)
    layers = detector.layers
    x = g.node("Sub", ["images", g.const("offset", np.float32(INPUT_OFFSET))])
    first = detector.names("stem")
    if float_stem:
        x = g.float_conv(x, layers[first[0]], first[0])
        first = first[1:]
    else:
        x = g.qdq(x, detector.input_scale, detector.input_zero_point)
    for name in first + detector.names("stage2") + detector.names("stage3"):
        x = g.conv(x, layers[name], name)
    c3 = x
    for name in detector.names("stage4"):
        x = g.conv(x, layers[name], name)
    l3, l4 = g.conv(c3, layers["lateral3"], "lateral3"), g.conv(x, layers["lateral4"], "lateral4")
    # nearest upsampling to c3's grid, as F.interpolate(mode="nearest"): floor(dst * in / out). The grid is
    # ceil(H / 8) x ceil(W / 8) (three stride-2 convs, padding 1), computed from the input's shape so that no
    # intermediate tensor has to stay in float just to be measured.
    shape = g.node("Shape", ["images"])
    batch = g.node("Slice", [shape, g.const("start", np.array([0])), g.const("end", np.array([1]))])
    hw = g.node("Slice", [shape, g.const("start", np.array([2])), g.const("end", np.array([4]))])
    grid = g.node("Div", [g.node("Add", [hw, g.const("seven", np.array([7, 7]))]), g.const("eight", np.array([8, 8]))])
    channels = g.const("channels", np.array([layers["lateral4"].weight.shape[0]]))
    sizes = g.node("Concat", [batch, channels, grid], axis=0)
    up = g.node("Resize", [l4, "", "", sizes], mode="nearest", coordinate_transformation_mode="asymmetric",
                nearest_mode="floor")
    up = g.qdq(up, layers["lateral4"].y_scale, layers["lateral4"].y_zero_point)
    x = g.qdq(g.node("Add", [l3, up]), detector.add.y_scale, detector.add.y_zero_point)
    for name in detector.names("smooth") + detector.names("tower"):
        x = g.conv(x, layers[name], name)
    cls, box = layers["cls_out"], layers["box_out"]
    k = int(cls.weight.shape[0])
    if fuse_head:
        grid = _union_grid((cls.y_scale, cls.y_zero_point), (box.y_scale, box.y_zero_point))
        both = g.conv(x, cls, "head", np.concatenate([cls.weight.numpy(), box.weight.numpy()]),
                      np.concatenate([cls.bias.numpy(), box.bias.numpy()]),
                      np.concatenate([cls.w_scale.numpy(), box.w_scale.numpy()]).astype(np.float32), grid)
        split = g.const("split", np.array([k, int(box.weight.shape[0])]))
        heads = [g.name("cls"), g.name("box")]
        g.nodes.append(helper.make_node("Split", [both, split], heads, axis=1, name=g.name("Split")))
    else:
        heads = [g.conv(x, cls, "cls_out"), g.conv(x, box, "box_out")]
    outputs = []
    for y, out, channels in zip(heads, ("logits", "deltas"), (k, int(box.weight.shape[0]))):
        flat = g.node("Reshape", [y, g.const("shape", np.array([0, channels, -1]))])
        g.nodes.append(helper.make_node("Transpose", [flat], [out], perm=[0, 2, 1], name=g.name("Transpose")))
        outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", "locations", channels]))
    graph = helper.make_graph(g.nodes, "tiny_detector_qdq",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
                              outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="course_utils")
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _union_grid(a: tuple[float, int], b: tuple[float, int]) -> tuple[float, int]:
    """The uint8 grid (scale, zero point) that covers both grids' real ranges."""
    from .affine import calc_qparams

    lo = min(a[0] * (0 - a[1]), b[0] * (0 - b[1]))
    hi = max(a[0] * (255 - a[1]), b[0] * (255 - b[1]))
    scale, zero_point = calc_qparams(lo, hi, num_bits=8)
    return float(scale), int(zero_point)


def conv_qdq_model(layer: IntegerConv, path: str | Path) -> Path:
    """One quantized conv as ONNX: uint8 input → ``DQ → Conv [→ Relu] → Q`` → uint8 output.

    ONNX Runtime fuses it into a single ``QLinearConv``, so comparing its output with
    ``layer(q_x)`` compares two integer kernels element by element.
    """
    import onnx
    from onnx import TensorProto, helper

    g = _Graph()
    s, z = g.const("scale", np.float32(layer.x_scale)), g.const("zero_point", np.uint8(layer.x_zero_point))
    x = g.node("DequantizeLinear", ["q_x", s, z])
    g.conv(x, layer, "conv")
    # conv() ends in DQ(Q(y)); expose the Q (the integer output)
    q_y = g.nodes[-1].input[0]
    g.nodes.pop()
    g.nodes.append(helper.make_node("Identity", [q_y], ["q_y"], name="out"))
    graph = helper.make_graph(g.nodes, "one_conv", [helper.make_tensor_value_info("q_x", TensorProto.UINT8, ["b", layer.weight.shape[1], "h", "w"])],
                              [helper.make_tensor_value_info("q_y", TensorProto.UINT8, ["b", layer.weight.shape[0], "h_out", "w_out"])], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="course_utils")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def optimized_op_types(path: str | Path, threads: int = 1, optimization: str = "all",
                       config: dict[str, str] | None = None) -> Counter:
    """How many nodes of each type ONNX Runtime runs after its graph optimizations.

    ``optimization`` as in :func:`course_utils.deploy.ort_session` (``"basic"``, ``"extended"``,
    ``"all"``) and ``config`` (session config entries). The optimized graph is written to a temporary file and counted: a fused int8 model
    shows ``QLinearConv`` (and ``QLinearAdd``), not float ``Conv``.
    """
    import tempfile
    import warnings

    import onnx

    from ..runtimes import ort_session

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        out = Path(tmp) / "optimized.onnx"
        ort_session(path, threads=threads, optimization=optimization, optimized_model_path=out, config=config)
        return Counter(n.op_type for n in onnx.load(str(out)).graph.node)
