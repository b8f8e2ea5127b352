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

__all__ = ["PackedDetectorNetwork", "PackedOrtDetector", "unpack_outputs", "nodes_after_last_conv", "qdq_scales", "activation_sqnr", "profile_by_op"]


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
