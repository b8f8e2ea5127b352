"""Diagnosing int8 that goes wrong: the scales inside a QDQ file, a one-output export that collapses, the profiler.

Taught in notebook 11 (when int8 goes wrong).

* :class:`PackedDetectorNetwork` -- the export many detectors ship: **one** output (B, A, 4 + K) holding
  each location's box corners in pixels followed by its K class probabilities. A static int8 model gives
  that tensor one scale ``s = (max - min) / 255``; boxes span about 160 pixels, so ``s`` is about 0.6 and
  every probability below ``s / 2`` becomes exactly 0 ("all scores are 0 after int8").
  :class:`PackedOrtDetector` scores such a file like any other detector.
* :func:`qdq_scales` -- every quantized tensor's scale, zero point and representable range, read from
  the file: the diagnostic that finds a shared scale that is far too coarse for part of its tensor.
* :func:`activation_sqnr` -- ONNX Runtime's QDQ debugger: per tensor, the signal-to-quantization-noise
  ratio of its own rounding and of everything before it: where the error enters.
* :func:`profile_by_op` -- ONNX Runtime's profiler, summed per operator type: where an int8 model's time goes.
* :func:`pair_saturation` -- how often a real layer's u8 × s8 pair sums would overflow 16 bits on a CPU
  without VNNI (what ``reduce_range`` protects against); :class:`NoVnniSession` runs a file with its first conv
  computed that way, so the cost in mAP can be measured on a CPU that has VNNI.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import numbers
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .deploy import OrtDetector

__all__ = ["PackedDetectorNetwork", "PackedOrtDetector", "unpack_outputs", "nodes_after_last_conv", "qdq_scales", "activation_sqnr", "profile_by_op",
           "pair_saturation", "NoVnniSession"]


def _decode(deltas: Tensor, anchors: Tensor, clamp: float = math.log(1000.0 / 16)) -> Tensor:
    """:func:`course_utils.boxes.decode_boxes` broadcast over a batch: deltas (B, A, 4), anchors (A, 4) -> xyxy (B, A, 4).

    Written out (not a call) so that the exported graph keeps a dynamic batch axis."""
    wa, ha = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    xa, ya = anchors[:, 0] + wa / 2, anchors[:, 1] + ha / 2
    x, y = deltas[..., 0] * wa + xa, deltas[..., 1] * ha + ya
    w, h = deltas[..., 2].clamp(max=clamp).exp() * wa, deltas[..., 3].clamp(max=clamp).exp() * ha
    return torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], dim=-1)


class PackedDetectorNetwork(nn.Module):
    """A :class:`~course_utils.models.TinyDetector`'s network with boxes and scores packed into one output.

    ``forward(x) = cat([boxes, sigmoid(logits)], -1)``: images (B, 3, H, W) -> (B, A, 4 + K), boxes xyxy in
    pixels (decoded from the anchors of an ``image_size`` input), then the K class probabilities. The layout
    of many exported detectors; a bad one for int8 (the module docstring says why).
    """

    def __init__(self, detector: nn.Module, image_size: tuple[int, int] = (128, 128)) -> None:
        super().__init__()
        if len(image_size) != 2 or not all(isinstance(s, numbers.Integral) and s > 0 for s in image_size):
            raise ValueError(f"image_size must be (height, width) in pixels, e.g. (128, 128), got {image_size!r}")
        self.detector = detector
        anchors, _ = detector.all_anchors(detector.level_sizes(tuple(image_size)), torch.device("cpu"))
        self.register_buffer("anchors", anchors, persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        logits, deltas = self.detector.network(images)
        return torch.cat([_decode(deltas, self.anchors), logits.sigmoid()], dim=-1)


def unpack_outputs(packed: Tensor, anchors: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Back from a packed output (B, A, 4 + K) to the detector's logits (B, A, K) and deltas (B, A, 4).

    ``logit = log(p / (1 - p))`` with ``p`` clamped to ``[eps, 1 - eps]`` (an int8 probability can be 0 or
    above 1); deltas re-encode the boxes against ``anchors`` (A, 4), box sides clamped to at least 1e-3 px.
    """
    if packed.ndim != 3 or packed.shape[-1] < 5 or packed.shape[1] != len(anchors):
        raise ValueError(f"packed outputs must be (B, {len(anchors)}, 4 + K), got {tuple(packed.shape)}")
    boxes, p = packed[..., :4], packed[..., 4:].clamp(eps, 1 - eps)
    wa, ha = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    xa, ya = anchors[:, 0] + wa / 2, anchors[:, 1] + ha / 2
    w, h = (boxes[..., 2] - boxes[..., 0]).clamp(min=1e-3), (boxes[..., 3] - boxes[..., 1]).clamp(min=1e-3)
    x, y = boxes[..., 0] + w / 2, boxes[..., 1] + h / 2
    deltas = torch.stack([(x - xa) / wa, (y - ya) / ha, torch.log(w / wa), torch.log(h / ha)], dim=-1)
    return torch.log(p / (1 - p)), deltas


class PackedOrtDetector(OrtDetector):
    """:class:`~course_utils.deploy.OrtDetector` for a file exported from :class:`PackedDetectorNetwork`
    (one output); scored by :func:`course_utils.train.evaluate` like any detector."""

    def network(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Logits (B, A, K) and deltas (B, A, 4), unpacked from the file's one output (:func:`unpack_outputs`)."""
        outputs = self.session.run(None, {"images": images.detach().cpu().numpy()})
        if len(outputs) != 1:
            raise ValueError(f"this ONNX file has {len(outputs)} outputs; PackedOrtDetector reads files with one "
                             "packed output (PackedDetectorNetwork). Use OrtDetector for logits + deltas files")
        packed = torch.from_numpy(outputs[0])
        sizes = self.feature_sizes(tuple(images.shape[-2:]), packed.shape[1])
        anchors, _ = self.detector.all_anchors(sizes, torch.device("cpu"))
        return unpack_outputs(packed, anchors)


def nodes_after_last_conv(path: str | Path) -> list[str]:
    """Names of every node after the graph's last Conv (ONNX graphs are in topological order): in a
    :class:`PackedDetectorNetwork` file, the box decoding, the sigmoid and the packing; what
    ``nodes_to_exclude`` keeps in float so the packed output is not quantized."""
    import onnx

    if not Path(path).is_file():
        raise FileNotFoundError(f"no ONNX file at {str(path)!r}")
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    if not convs:
        raise ValueError(f"{str(path)!r} has no Conv node")
    return [n.name for n in nodes[convs[-1] + 1:]]


def qdq_scales(path: str | Path) -> dict[str, dict[str, float]]:
    """Every tensor a QDQ file quantizes (the input of each ``QuantizeLinear``), with its per-tensor grid.

    Returns ``{tensor: {"scale": s, "zero_point": z, "low": s·(q_min - z), "high": s·(q_max - z)}}`` in graph
    order, (q_min, q_max) = (0, 255) for uint8 and (-128, 127) for int8: the values the tensor can take are
    ``low, low + s, ..., high``; anything smaller in magnitude than ``s / 2`` around 0 becomes 0.
    Per-channel tensors (the weights, quantized offline) are left out.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {str(path)!r} (make one with course_utils.deploy.quantize_onnx)")
    graph = onnx.load(str(path), load_external_data=False).graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    found: dict[str, dict[str, float]] = {}
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in found or node.input[0] in consts:
            continue
        scale, zp = consts.get(node.input[1]), consts.get(node.input[2]) if len(node.input) > 2 else None
        if scale is None or scale.size != 1:
            continue
        z = int(zp) if zp is not None else 0
        lo, hi = (-128, 127) if zp is not None and zp.dtype == np.int8 else (0, 255)
        s = float(scale)
        found[node.input[0]] = {"scale": s, "zero_point": z, "low": s * (lo - z), "high": s * (hi - z)}
    if not found:
        raise ValueError(f"{path.name} has no per-tensor QuantizeLinear nodes: is it a QDQ int8 file "
                         "(course_utils.deploy.quantize_onnx), not the fp32 one?")
    return found


def activation_sqnr(fp32_path: str | Path, int8_path: str | Path, images: Tensor, batch_size: int = 16) -> dict[str, float]:
    """Where does the int8 error enter? The SQNR in dB of every activation the QDQ file quantizes, on ``images``.

    ``SQNR = 20 · log10(‖x‖ / ‖x - x̂‖)``, ``x`` the fp32 model's tensor and ``x̂`` the same tensor in the int8
    model (every error upstream included); higher is better, and each bit of a well-used grid adds about 6 dB.
    Returned in graph order (``{tensor name: dB}``): a sharp fall from one tensor to the next is where
    error enters. Made with ONNX Runtime's ``onnxruntime.quantization.qdq_loss_debug``.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                          create_activation_matching,
                                                          modify_model_output_intermediate_tensors)

    for p in (fp32_path, int8_path):
        if not Path(p).is_file():
            raise FileNotFoundError(f"no ONNX file at {str(p)!r}")
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, 3, H, W) batch, got shape {tuple(images.shape)}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": images[i:i + batch_size].detach().cpu().numpy()}
                                 for i in range(0, len(images), batch_size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        activations = {}
        for name, path in (("float", fp32_path), ("qdq", int8_path)):
            augmented = Path(tmp) / f"{name}.onnx"
            modify_model_output_intermediate_tensors(str(path), str(augmented))
            activations[name] = collect_activations(str(augmented), Reader())
    errors = compute_activation_error(create_activation_matching(activations["qdq"], activations["float"]))
    order = [out for node in onnx.load(str(fp32_path), load_external_data=False).graph.node for out in node.output]
    return {name: float(errors[name]["xmodel_err"]) for name in order
            if name in errors and "xmodel_err" in errors[name]}


def profile_by_op(path: str | Path, images: Tensor, threads: int = 2, runs: int = 20) -> dict[str, float]:
    """Milliseconds per run spent in each operator type, from ONNX Runtime's profiler (``enable_profiling``).

    Runs ``images`` (N, 3, H, W) through the file ``runs`` times after 3 warm-up runs and sums the
    profiler's ``*_kernel_time`` events by ``op_name``; sorted, largest first. The trace is written to a
    temporary folder and removed. The sum is below the run's wall time (the time between kernels is not
    counted).
    """
    import onnxruntime as ort

    if isinstance(runs, bool) or not isinstance(runs, numbers.Integral) or runs < 1:
        raise ValueError(f"runs must be an int >= 1, got {runs!r}")
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    if not Path(path).is_file():
        raise FileNotFoundError(f"no ONNX file at {str(path)!r}")
    feed = {"images": images.detach().cpu().numpy()}
    warmup = 3
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = int(threads), 1
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "trace")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    if len(starts) != warmup + runs:
        raise RuntimeError(f"ONNX Runtime's trace holds {len(starts)} runs, expected {warmup + runs}")
    events = [e for e in events if e.get("ts", -1) >= starts[warmup]]  # the warm-up runs are not counted
    totals: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            totals[op] = totals.get(op, 0.0) + e["dur"] / 1000.0 / runs
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def _qdq_conv_operands(graph: Any) -> list[dict[str, Any]]:
    """For each Conv of a QDQ graph whose input and weight are both dequantized: the uint8 tensor it reads,
    that tensor's zero point, the int8 weight array (Cout, Cin, kh, kw) and the conv's attributes."""
    import onnx
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producer = {out: node for node in graph.node for out in node.output}
    convs = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        x_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
        if x_dq is None or w_dq is None or x_dq.op_type != "DequantizeLinear" or w_dq.op_type != "DequantizeLinear":
            continue  # a conv kept in float
        weight = consts.get(w_dq.input[0])
        zp = consts.get(x_dq.input[2]) if len(x_dq.input) > 2 else None
        if weight is None or weight.dtype != np.int8 or zp is None or zp.dtype != np.uint8:
            continue  # not the u8 x s8 product the 16-bit pair instruction computes
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise ValueError(f"conv {node.name!r} uses auto_pad={attrs['auto_pad']!r}; export with explicit pads "
                             "(torch.onnx.export does)")
        w_zp = consts.get(w_dq.input[2]) if len(w_dq.input) > 2 else None
        if w_zp is not None and np.any(w_zp != 0):
            continue  # asymmetric weights: not the symmetric int8 weights the u8 x s8 kernels take
        kernel = tuple(weight.shape[2:])
        convs.append({"name": node.name, "weight_name": w_dq.input[0].removesuffix("_quantized"), "input": x_dq.input[0],
                      "zero_point": int(zp), "weight": weight,
                      "group": int(attrs.get("group", 1)), "strides": tuple(attrs.get("strides", (1, 1))),
                      "pads": tuple(attrs.get("pads", (0, 0, 0, 0))), "dilations": tuple(attrs.get("dilations", (1, 1))),
                      "kernel": kernel})
    return convs


def _im2col_channels_last(q_x: Tensor, conv: dict[str, Any]) -> Tensor:
    """uint8 codes (N, C, H, W) -> the integer GEMM's rows (N·L, kh·kw·C), channels innermost (the NHWC
    order of ONNX Runtime's integer convolution); padding holds the zero point, as the kernel pads."""
    import torch.nn.functional as F

    top, left, bottom, right = conv["pads"]
    x = F.pad(q_x.float(), (left, right, top, bottom), value=float(conv["zero_point"]))
    cols = F.unfold(x, conv["kernel"], dilation=conv["dilations"], stride=conv["strides"])  # (N, C·kh·kw, L)
    n, c, taps = len(q_x), q_x.shape[1], conv["kernel"][0] * conv["kernel"][1]
    return cols.unflatten(1, (c, taps)).permute(0, 3, 2, 1).reshape(-1, taps * c).round().to(torch.int32)


def pair_saturation(int8_path: str | Path, images: Tensor, chunk: int = 256) -> dict[str, dict[str, float]]:
    """How often would each conv's u8 × s8 pair sums saturate on an x86 CPU without VNNI?

    For every Conv of a QDQ file with uint8 input and int8 weights, the uint8 codes the file's
    ``QuantizeLinear`` gives its input on ``images`` (N, 3, H, W) are laid out as the integer GEMM reads them
    (rows of ``kh·kw·C`` values, channels innermost, K padded with a zero to even length) and every adjacent pair
    ``x_{2i} w_{2i} + x_{2i+1} w_{2i+1}`` is formed against every output channel's weights, exactly
    (saturating where :func:`course_utils.quant.integer.pairwise_int16_sums` would clamp). Returns, per conv node
    in graph order, ``{"weight": the weight's name (which layer), "pairs": n, "saturated": k, "fraction": k / n, "outputs_hit": share of output values with at least one
    saturated pair, "max_abs_pair": largest |pair sum|}``. Convs kept in float, and grouped convs, are skipped.
    The pairing follows the kernel's layout as described, an assumption about ONNX Runtime's packing.
    """
    import onnx
    import onnxruntime as ort

    if not Path(int8_path).is_file():
        raise FileNotFoundError(f"no ONNX file at {str(int8_path)!r} (make one with course_utils.deploy.quantize_onnx)")
    if not isinstance(images, Tensor) or images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, 3, H, W) tensor, got {getattr(images, 'shape', images)!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, numbers.Integral) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1 (rows per step, e.g. 256), got {chunk!r}")
    model = onnx.load(str(int8_path), load_external_data=False)
    convs = [c for c in _qdq_conv_operands(model.graph) if c["group"] == 1]
    if not convs:
        raise ValueError(f"{Path(int8_path).name} has no Conv with uint8 input and int8 weights: is it a QDQ int8 file "
                         "(course_utils.deploy.quantize_onnx), not the fp32 one?")
    outputs = {o.name for o in model.graph.output}
    for name in dict.fromkeys(c["input"] for c in convs):
        if name not in outputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UINT8, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, {session.get_inputs()[0].name: images.detach().cpu().numpy()})))
    result: dict[str, dict[str, float]] = {}
    for conv in convs:
        rows = _im2col_channels_last(torch.from_numpy(values[conv["input"]].astype(np.int64)), conv)
        w = torch.from_numpy(conv["weight"].astype(np.int32)).permute(0, 2, 3, 1).reshape(len(conv["weight"]), -1)
        if rows.shape[1] % 2:  # the kernel pads K with zeros
            rows, w = _pad_k(rows), _pad_k(w)
        saturated = hit = largest = 0
        for start in range(0, len(rows), chunk):
            sums = (rows[start:start + chunk, None, :] * w[None]).unflatten(-1, (-1, 2)).sum(-1)  # (R, Cout, K/2)
            sat = (sums > 32767) | (sums < -32768)
            saturated += int(sat.sum())
            hit += int(sat.any(-1).sum())
            largest = max(largest, int(sums.abs().max()))
        pairs = len(rows) * len(w) * (w.shape[1] // 2)
        result[conv["name"]] = {"weight": conv["weight_name"], "pairs": pairs, "saturated": saturated, "fraction": saturated / pairs,
                                "outputs_hit": hit / (len(rows) * len(w)), "max_abs_pair": largest}
    return result


class NoVnniSession:
    """A QDQ int8 file run by ONNX Runtime, except its **first** conv, computed in integers as a CPU without VNNI
    would: u8 × s8 products summed in pairs, each pair clamped to int16 (``saturate=False``: exact int32 sums).

    For that conv, with uint8 input codes ``x`` (zero point ``z_x``, padding holding ``z_x``), int8 weights ``w``
    (scale ``s_w[o]`` per output channel), int32 bias ``b[o]`` and the output grid ``(s_y, z_y)``::

        acc[o] = Σ_i clamp(x_2i w_2i + x_2i+1 w_2i+1, -32768, 32767) - z_x Σ_k w_k + b[o]
        y[o]   = clamp(round(acc[o] · s_x s_w[o] / s_y) + z_y, 0, 255)            (round half to even)

    (the lower bound is ``z_y`` when a Relu sits between the conv and its ``QuantizeLinear``)

    (the pair layout of :func:`pair_saturation`); the file's nodes before that conv and after its output's
    ``QuantizeLinear`` run in ONNX Runtime. ``run(None, {"images": x})`` returns the file's outputs, so
    ``OrtDetector(NoVnniSession(path), detector)`` scores it like any detector. The first conv is the one that
    reads the image's full 0-255 range; convs further in saturate far less often (:func:`pair_saturation`) and run
    unchanged here. An estimate of such a CPU, not a measurement on one.
    """

    def __init__(self, int8_path: str | Path, saturate: bool = True, threads: int = 2) -> None:
        import onnx
        from onnx import numpy_helper

        from .runtimes import ort_session

        if not Path(int8_path).is_file():
            raise FileNotFoundError(f"no ONNX file at {str(int8_path)!r} (make one with course_utils.deploy.quantize_onnx)")
        if not isinstance(saturate, bool):
            raise TypeError(f"saturate must be True (int16 pair sums) or False (exact int32 sums), got {saturate!r}")
        model = onnx.load(str(int8_path), load_external_data=False)
        graph = model.graph
        convs = _qdq_conv_operands(graph)
        if not convs:
            raise ValueError(f"{Path(int8_path).name} has no Conv with uint8 input and int8 weights: is it a QDQ int8 file "
                             "(course_utils.deploy.quantize_onnx), not the fp32 one?")
        conv = convs[0]
        if conv["group"] != 1:
            raise ValueError(f"the first conv {conv['name']!r} is grouped; NoVnniSession emulates ordinary convs only")
        node = next(n for n in graph.node if n.name == conv["name"])
        consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        producer = {out: n for n in graph.node for out in n.output}
        def only_consumer(tensor: str) -> Any:
            found = [n for n in graph.node if tensor in n.input]
            return found[0] if len(found) == 1 else None

        quant = only_consumer(node.output[0])
        self.relu = quant is not None and quant.op_type == "Relu"  # Conv -> Relu -> QuantizeLinear: clamp at z_y
        if self.relu:
            quant = only_consumer(quant.output[0])
        if quant is None or quant.op_type != "QuantizeLinear":
            raise ValueError(f"the first conv's output {node.output[0]!r} must feed one QuantizeLinear, or a Relu and then "
                             "one QuantizeLinear (a QDQ file's layout)")
        x_dq, w_dq = producer[node.input[0]], producer[node.input[1]]
        self.conv = conv
        self.x_scale = float(consts[x_dq.input[1]])
        self.w_scale = consts[w_dq.input[1]].astype(np.float32).reshape(-1)
        self.y_scale, self.y_zero_point = float(consts[quant.input[1]]), int(consts[quant.input[2]])
        b_dq = producer.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if len(node.input) > 2 and node.input[2] and (b_dq is None or b_dq.op_type != "DequantizeLinear"):
            raise ValueError(f"the first conv's bias {node.input[2]!r} is not an int32 bias behind a DequantizeLinear; "
                             "NoVnniSession adds the bias in int32, as the kernel does")
        bias = consts.get(b_dq.input[0]) if b_dq is not None else None
        if bias is not None and not np.allclose(consts[b_dq.input[1]].reshape(-1), np.float32(self.x_scale) * self.w_scale, rtol=1e-5):
            raise ValueError("the first conv's bias scale is not input scale x weight scale; NoVnniSession cannot add it in int32")
        self.bias = torch.from_numpy(bias.astype(np.int64)) if bias is not None else torch.zeros(len(conv["weight"]), dtype=torch.int64)
        self.saturate = saturate
        w = torch.from_numpy(conv["weight"].astype(np.int32)).permute(0, 2, 3, 1).reshape(len(conv["weight"]), -1)
        self.weight = _pad_k(w) if w.shape[1] % 2 else w
        with tempfile.TemporaryDirectory() as tmp:
            onnx.save(model, str(Path(tmp) / "model.onnx"))
            outputs = [o.name for o in graph.output]
            onnx.utils.extract_model(str(Path(tmp) / "model.onnx"), str(Path(tmp) / "head.onnx"),
                                     [i.name for i in graph.input], [conv["input"]])
            onnx.utils.extract_model(str(Path(tmp) / "model.onnx"), str(Path(tmp) / "tail.onnx"),  # the images too:
                                     [quant.output[0], *[i.name for i in graph.input]], outputs)  # a Shape may read them
            self.head, self.tail = ort_session(Path(tmp) / "head.onnx", threads=threads), ort_session(Path(tmp) / "tail.onnx", threads=threads)
        self.quantized_output = quant.output[0]

    def first_conv_codes(self, images: np.ndarray) -> Tensor:
        """The first conv's uint8 output codes (N, C_out, H_out, W_out) for ``images`` (N, 3, H, W), by the formula above."""
        q_x = torch.from_numpy(self.head.run(None, {self.head.get_inputs()[0].name: images})[0].astype(np.int64))
        rows = _im2col_channels_last(q_x, self.conv)
        if rows.shape[1] < self.weight.shape[1]:
            rows = _pad_k(rows)
        acc = torch.empty(len(rows), len(self.weight), dtype=torch.int64)
        for start in range(0, len(rows), 4096):
            pairs = (rows[start:start + 4096, None, :] * self.weight[None]).unflatten(-1, (-1, 2)).sum(-1)
            if self.saturate:
                pairs = pairs.clamp(-32768, 32767)
            acc[start:start + 4096] = pairs.sum(-1)
        acc = acc - self.conv["zero_point"] * self.weight.long().sum(1) + self.bias
        multiplier = torch.from_numpy((np.float32(self.x_scale) * self.w_scale) / np.float32(self.y_scale))
        y = torch.round(acc.float() * multiplier) + self.y_zero_point  # torch.round: half to even, as the kernel
        n, _, h, w = q_x.shape
        (kh, kw), (sh, sw), (dh, dw) = self.conv["kernel"], self.conv["strides"], self.conv["dilations"]
        top, left, bottom, right = self.conv["pads"]
        ho, wo = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1, (w + left + right - dw * (kw - 1) - 1) // sw + 1
        return y.clamp(self.y_zero_point if self.relu else 0, 255).to(torch.uint8).reshape(n, ho, wo, -1).permute(0, 3, 1, 2)

    def run(self, output_names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """``InferenceSession.run``'s signature: the file's outputs for ``feed`` (one input, the images)."""
        (images,) = feed.values()
        codes = self.first_conv_codes(np.asarray(images, dtype=np.float32))
        tail_feed = {i.name: np.asarray(images, dtype=np.float32) for i in self.tail.get_inputs() if i.name != self.quantized_output}
        return self.tail.run(output_names, {self.quantized_output: codes.contiguous().numpy(), **tail_feed})


def _pad_k(t: Tensor) -> Tensor:
    """Append one zero column: (R, K) -> (R, K + 1)."""
    return torch.cat([t, t.new_zeros(len(t), 1)], dim=1)
