"""Real int8 deployment: ONNX export, static int8 quantization, ONNX Runtime, honest timing.

Taught in: 05_qat_and_int8 (and used by the capstone).

The int8 path the course uses, chosen by measurement (``benchmarks/int8_latency.py``):

1. take the float network with batch norm folded (after QAT: :func:`course_utils.quant.to_float_folded`);
2. :func:`export_onnx` -- the *network* only (backbone + neck + head -> logits, box
   offsets); post-processing (decode + NMS) stays in PyTorch;
3. :func:`quantize_onnx` -- ONNX Runtime's static QDQ quantization: int8 weights
   per output channel (symmetric), uint8 activations per tensor, ranges calibrated
   on a few images;
4. :func:`~course_utils.runtimes.ort_session` (or :func:`~course_utils.runtimes.openvino_session`) + :class:`OrtDetector` -- run it, post-process, evaluate
   with the same :func:`course_utils.train.evaluate` as everything else;
5. :func:`measure_latency` -- median of many timed runs after warm-up.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import math
import numbers
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .models import _check_no_nan, _stack_images, check_images
from .runtimes import OpenVinoSession, openvino_session, ort_session  # noqa: F401 -- documented in runtimes, used here too

__all__ = [
    "DetectorNetwork",
    "export_onnx",
    "strip_onnx_debug_info",
    "quantize_onnx",
    "quantize_onnx_dynamic",
    "OrtDetector",
    "measure_latency",
    "measure_interleaved",
    "file_size",
    "cpu_int8_features",
    "ort_nchwc_block_size",
    "cpu_info",
    "ort_network_runner",
    "checkpoint_bytes",
]


class DetectorNetwork(nn.Module):
    """The part of a :class:`~course_utils.models.TinyDetector` that int8 accelerates.

    ``forward(x) = detector.network(x)`` (``detector.head(detector.features(x))`` for one level; every
    level's outputs concatenated for ``levels > 1``): images (B, 3, H, W) -> logits (B, A, K),
    deltas (B, A, 4). Anchors and post-processing are not included.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.detector.network(images)


def strip_onnx_debug_info(path: str | Path) -> Path:
    """Remove what only debugging needs from an ONNX file, in place: per-node metadata (the
    exporter records source locations there), doc strings and intermediate shape annotations.
    The computation is untouched; applied to fp32 and int8 files alike so sizes compare fairly."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]
    onnx.save(model, str(path))
    return Path(path)


def _check_example(network: nn.Module, example: Any) -> None:
    """``example`` a floating 4-D tensor whose channel count fits the network's first Conv2d."""
    if not isinstance(example, Tensor) or example.ndim != 4 or not example.is_floating_point():
        what = f"shape {tuple(example.shape)}, dtype {example.dtype}" if isinstance(example, Tensor) else type(example).__name__
        raise ValueError(f"example must be a floating (B, 3, H, W) batch such as torch.rand(1, 3, 128, 128), got {what}")
    first = next((m for m in network.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None and example.shape[1] != first.in_channels:
        raise ValueError(f"example has {example.shape[1]} channels but the network's first convolution takes "
                         f"{first.in_channels}: use e.g. torch.rand(1, {first.in_channels}, 128, 128)")


def export_onnx(network: nn.Module, example: Tensor, path: str | Path) -> Path:
    """Export ``network`` (one image batch in, a tuple of tensors out) to ONNX with a dynamic batch axis.

    Uses PyTorch's ``torch.export``-based exporter (``dynamo=True``). Input name
    ``images``; outputs ``logits``, ``deltas``. Debug info is stripped.
    Checked: ``example`` a floating (B, C, H, W) tensor with the channels the network's
    first convolution takes (a clear error instead of torch.export's report).
    """
    _check_example(network, example)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    network = network.eval()
    with torch.no_grad():
        program = torch.onnx.export(
            network, (example,), dynamo=True, verbose=False, input_names=["images"], output_names=["logits", "deltas"],
            dynamic_shapes={next(iter(inspect.signature(network.forward).parameters)): {0: torch.export.Dim("batch")}},
        )
    program.save(str(path))
    return strip_onnx_debug_info(path)


def _check_input_shape(path: str | Path, shape: tuple[int, ...]) -> None:
    """The ONNX model's first input accepts ``shape`` (its fixed dimensions equal ``shape``'s)."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as err:  # noqa: BLE001 -- onnx raises DecodeError and others for a file that is not a model
        raise ValueError(f"{path}: not an ONNX model ({type(err).__name__}); export one with export_onnx") from err
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != len(shape) or any(d is not None and d != g for d, g in zip(dims, shape)):
        fixed = ["N" if d is None else d for d in dims]
        raise ValueError(f"calibration_images have shape {list(shape)}, but {path} takes {fixed}: calibrate on images of "
                         "the size the model was exported for")


CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def quantize_onnx(fp32_path: str | Path, int8_path: str | Path, calibration_images: Tensor,
                  per_channel: bool = True, batch_size: int = 16, method: str = "minmax",
                  nodes_to_exclude: Sequence[str] = (), quant_format: str = "qdq", reduce_range: bool = False,
                  int4_weights: Sequence[str] = ()) -> Path:
    """Static int8 quantization of an ONNX model with ONNX Runtime (QDQ format by default).

    Weights: int8, symmetric, per output channel (``per_channel``); activations:
    uint8, asymmetric, per tensor, ranges from ``calibration_images`` (N, 3, H, W) by
    ``method``: "minmax" (the observed min and max), "entropy" (the range that keeps the
    histogram's KL divergence smallest, with 2048 histogram bins: :func:`_entropy_ranges` says why the
    ranges are computed here) or "percentile" (a range that leaves out the rarest 0.001 % of values).
    ``nodes_to_exclude``: names of nodes to keep in float (their inputs and outputs are
    dequantized around them; :func:`course_utils.keep_float.quantizable_nodes` lists the names).
    ONNX Runtime fuses each DequantizeLinear -> Conv -> QuantizeLinear group into
    an integer convolution when it loads the model. ``quant_format="qoperator"`` writes those
    integer operators (``QLinearConv``...) into the file instead (the older format; same arithmetic).
    ``reduce_range=True`` gives the weights about 7 bits (-64 ... 64): on an x86 CPU without VNNI the u8 × s8 kernel adds
    pairs of products in 16 bits, and 7-bit weights keep every pair below its saturation
    (:func:`course_utils.int8_debug.pair_saturation` counts how often 8-bit ones would saturate), at the price of a
    grid twice as coarse.
    ``int4_weights``: names of conv weights (initializers, e.g. ``"detector.stage3.0.0.weight"``) stored as 4-bit
    integers instead (per output channel, ONNX's INT4, two per byte): a smaller file, but ONNX Runtime's CPU has no
    4-bit convolution, so those convs dequantize their weights and run in float on every call.
    """
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {list(CALIBRATION_METHODS)}, got {method!r}")
    if quant_format not in ("qdq", "qoperator"):
        raise ValueError(f"quant_format must be 'qdq' or 'qoperator', got {quant_format!r}")
    if not isinstance(reduce_range, bool):
        raise TypeError(f"reduce_range must be True (7-bit weights) or False (8-bit), got {reduce_range!r}")
    if isinstance(nodes_to_exclude, str) or not all(isinstance(n, str) for n in nodes_to_exclude):
        raise TypeError(f"nodes_to_exclude must be a list of node names (strings), got {nodes_to_exclude!r}")

    if not isinstance(calibration_images, Tensor):
        raise TypeError(f"calibration_images must be one (N, 3, H, W) tensor, got {type(calibration_images).__name__}; "
                        "for a list of images use torch.stack(images)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1 (e.g. 16), got {batch_size!r}")
    if not Path(fp32_path).is_file():
        raise FileNotFoundError(f"no ONNX file at {str(fp32_path)!r} (export one with export_onnx)")
    if calibration_images.ndim != 4 or len(calibration_images) == 0:
        raise ValueError(f"calibration_images must be a non-empty (N, 3, H, W) batch, got shape {tuple(calibration_images.shape)}")
    if not bool(torch.isfinite(calibration_images).all()):
        raise ValueError("calibration_images hold NaN or inf values; calibrate on real images (finite values in [0, 1])")
    from .outputs import same_file

    if same_file(fp32_path, int8_path):
        raise ValueError(f"int8_path {str(int8_path)!r} is the fp32 model itself; writing there would destroy it. "
                         "Choose another name, e.g. model.int8.onnx")
    _check_input_shape(fp32_path, tuple(calibration_images.shape))
    if isinstance(int4_weights, str) or not all(isinstance(n, str) for n in int4_weights):
        raise TypeError(f"int4_weights must be a list of weight names (strings), got {int4_weights!r}")
    if int4_weights and (quant_format != "qdq" or reduce_range or not per_channel):
        raise ValueError("int4_weights needs the defaults quant_format='qdq', reduce_range=False and per_channel=True "
                         f"(got {quant_format!r}, {reduce_range}, {per_channel}): 4-bit weights are stored per channel in a QDQ file")
    if nodes_to_exclude or int4_weights:  # ONNX Runtime ignores names it does not know: a typo would pass silently
        import onnx

        graph = onnx.load(str(fp32_path), load_external_data=False).graph
        names = {node.name for node in graph.node}
        unknown = sorted(set(nodes_to_exclude) - names)
        if unknown:
            raise ValueError(f"nodes_to_exclude: {unknown} are not nodes of {str(fp32_path)!r}; "
                             "list the names with course_utils.keep_float.quantizable_nodes(path)")
        conv_weights = {node.input[1] for node in graph.node if node.op_type == "Conv"}
        unknown = sorted(set(int4_weights) - conv_weights)
        if unknown:
            raise ValueError(f"int4_weights: {unknown} are not conv weights of {str(fp32_path)!r}; "
                             f"its conv weights are {sorted(conv_weights)}")

    class ImageReader(CalibrationDataReader):  # feeds the calibration batches, then None
        def __init__(self) -> None:
            self.batches = iter([{"images": calibration_images[i:i + batch_size].cpu().numpy()}
                                 for i in range(0, len(calibration_images), batch_size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    int8_path = Path(int8_path)
    extra_options: dict[str, Any] = {}
    overrides: dict[str, list[dict[str, Any]]] = {name: [{"quant_type": QuantType.QInt4, "axis": 0}] for name in int4_weights}
    if method == "entropy":  # ranges from the calibrator itself: quantize_static would give it too few bins (below)
        overrides.update({name: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
                          for name, (lo, hi) in _entropy_ranges(fp32_path, ImageReader()).items()})
    if overrides:
        extra_options["TensorQuantOverrides"] = overrides
    reader = ImageReader()
    # ONNX Runtime logs a suggestion to run its shape-inference pre-processing first; for this model it changed
    # neither the graph's speed nor its accuracy (measured), so the suggestion is silenced here.
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its calibrators print progress lines
            quantize_static(str(fp32_path), str(int8_path), reader, per_channel=per_channel,
                            quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.MinMax,
                                              "percentile": CalibrationMethod.Percentile}[method],
                            nodes_to_exclude=list(nodes_to_exclude), reduce_range=reduce_range, extra_options=extra_options)
    finally:
        root.setLevel(level)
    return strip_onnx_debug_info(int8_path)


def quantize_onnx_dynamic(fp32_path: str | Path, int8_path: str | Path) -> Path:
    """Dynamic int8 quantization with ONNX Runtime: int8 weights in the file, no calibration.

    Each Conv becomes a ``ConvInteger`` whose input is quantized **at run time** from that batch's own
    min and max (``DynamicQuantizeLinear``), and whose int32 result is turned back to float after it: every
    conv pays for a range search, a quantization and a dequantization on every run. Made for the
    MatMuls of language models, whose activation ranges vary from input to input.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .outputs import same_file

    if not Path(fp32_path).is_file():
        raise FileNotFoundError(f"no ONNX file at {str(fp32_path)!r} (export one with export_onnx)")
    if same_file(fp32_path, int8_path):
        raise ValueError(f"int8_path {str(int8_path)!r} is the fp32 model itself; writing there would destroy it. "
                         "Choose another name, e.g. model.dynamic.onnx")
    root = logging.getLogger()  # its suggestion to pre-process first is silenced, as in quantize_onnx
    level, root.level = root.level, logging.ERROR
    try:
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QUInt8)
    finally:
        root.setLevel(level)
    return strip_onnx_debug_info(int8_path)


def _entropy_ranges(fp32_path: str | Path, reader: Any, num_bins: int = 2048,
                    num_quantized_bins: int = 512) -> dict[str, tuple[float, float]]:
    """Each activation's (min, max) by ONNX Runtime's entropy (KL-divergence) calibrator, with 2048 histogram bins.

    ``quantize_static`` builds that calibrator with 128 histogram bins and 128 quantized bins: the search for the
    threshold then has few candidates (one, the full range, when the first batch holds the largest value), and on
    the course detector "entropy" gave exactly MinMax's ranges. Here the calibrator gets 2048 bins, so it can
    choose a range narrower than the largest value seen. Its histogram is signed, over ``[-t, t]``, so the KL
    search is fitted to ``num_quantized_bins`` levels across both sides: 512 gives the 256 levels uint8 has on
    the positive side of a ReLU output (TensorRT's 128 is for a histogram of ``|x|`` and signed int8).
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(str(fp32_path), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.Entropy,
                                       extra_options={"num_bins": num_bins, "num_quantized_bins": num_quantized_bins})
        calibrator.collect_data(reader)
        ranges = calibrator.compute_data()
    return {name: (float(td.range_value[0]), float(td.range_value[1])) for name, td in ranges.data.items()}


class OrtDetector(nn.Module):
    """A detector whose network runs in ONNX Runtime; anchors and post-processing stay in PyTorch.

    ``detector`` supplies ``anchors`` and ``postprocess`` (its float weights are not used).
    In eval mode ``model(images)`` returns detections like the PyTorch model, so
    :func:`course_utils.train.evaluate` scores it unchanged.
    """

    def __init__(self, session: Any, detector: nn.Module) -> None:
        super().__init__()
        self.session, self.detector = session, detector
        self.eval()

    def network(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Logits (B, A, K) and deltas (B, A, 4) from ONNX Runtime (the images' size must be the exported one
        where the export fixed it)."""
        get_inputs = getattr(self.session, "get_inputs", None)  # any object with run() works; ORT's also says its shapes
        expected = get_inputs()[0].shape if get_inputs is not None else []  # e.g. ['batch', 3, 128, 128]: ints are fixed
        got = tuple(images.shape)
        if len(expected) == len(got) and any(isinstance(e, int) and e != g for e, g in zip(expected, got)):
            raise ValueError(f"this ONNX network takes images of shape {expected}, got {list(got)}: export it again "
                             "with an example of the size you run (export_onnx(network, example, path))")
        logits, deltas = self.session.run(None, {"images": images.detach().cpu().numpy()})
        return torch.from_numpy(logits), torch.from_numpy(deltas)

    def forward(self, images: Tensor | Sequence[Tensor]) -> list[dict[str, Tensor]]:
        """Detections for a batch; the anchor grid is the network's output grid (see :meth:`feature_sizes`)."""
        x = _stack_images(images)
        check_images(x)
        _check_no_nan(x)
        logits, deltas = self.network(x)
        sizes = self.feature_sizes(tuple(x.shape[-2:]), logits.shape[1])
        anchors, _ = self.detector.all_anchors(sizes, torch.device("cpu"))
        raw = {"logits": logits, "deltas": deltas, "anchors": anchors}
        return self.detector.postprocess(raw, tuple(x.shape[-2:]))

    def feature_sizes(self, image_size: tuple[int, int], locations: int) -> list[tuple[int, int]]:
        """Each level's (h, w) grid of the network's ``locations`` outputs for an ``image_size`` input.

        The detector's stride-2 convs (padding 1) round up, so level ``s``'s grid is
        ``(ceil(H / s), ceil(W / s))`` -- as in the PyTorch model, whose anchors come
        from its feature maps. A ValueError if the network returned another number of
        locations (e.g. a network exported for another image size or another number of levels).
        """
        sizes = self.detector.level_sizes(image_size)
        expected = sum(h * w for h, w in sizes)
        if expected != locations:
            grids = " + ".join(f"{h}x{w}" for h, w in sizes)
            raise ValueError(f"the ONNX network returned {locations} locations for a {image_size[0]}x{image_size[1]} "
                             f"input, but the detector's grid (strides {list(self.detector.strides)}) has {grids} = "
                             f"{expected}; was it exported for another image size or another model?")
        return sizes


def _check_timing(warmup: int, runs: int, min_seconds: float) -> None:
    """``warmup`` an int >= 0, ``runs`` an int >= 1, ``min_seconds`` a finite number >= 0."""
    for name, value, low, typical in (("warmup", warmup, 0, "10"), ("runs", runs, 1, "50")):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name} must be an int >= {low} (typically {typical}), got {value!r}")
    if isinstance(min_seconds, bool) or not isinstance(min_seconds, numbers.Real) or not (
            math.isfinite(min_seconds) and min_seconds >= 0):
        raise ValueError(f"min_seconds must be a finite number >= 0 (e.g. 0.5), got {min_seconds!r}")


def measure_latency(fn: Callable[[], Any], warmup: int = 10, runs: int = 50, min_seconds: float = 0.0) -> dict[str, float]:
    """Time ``fn()``: ``warmup`` untimed calls, then at least ``runs`` timed calls (and ``min_seconds``).

    Returns milliseconds: median (the number to report), p10, p90, and the run count.
    Checked: ``fn`` callable, ``warmup >= 0``, ``runs >= 1`` (ints), ``min_seconds >= 0``.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable (e.g. lambda: model(x)), got {type(fn).__name__}")
    _check_timing(warmup, runs, min_seconds)
    return _measure(fn, warmup, runs, min_seconds)


def _measure(fn: Callable[[], Any], warmup: int, runs: int, min_seconds: float) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"median_ms": statistics.median(times), "p10_ms": times[len(times) // 10],
            "p90_ms": times[(9 * len(times)) // 10], "runs": len(times)}


def measure_interleaved(fns: dict[str, Callable[[], Any]], rounds: int = 3, runs: int = 50,
                        min_seconds: float = 0.5) -> dict[str, dict[str, float]]:
    """Time several functions in ``rounds`` interleaved rounds; keep each one's median round.

    Round r times every ``fns[name]`` once with :func:`measure_latency`, so a slow
    moment of the machine (other load, a clock-speed change) hits all of them
    alike instead of one; each round starts one name later than the round before
    (a, b, c; then b, c, a; ...), so no function always runs first, right after
    the warm-up, or always after the same neighbour. Returns, per name, the :func:`measure_latency` result
    of the round with the median ``median_ms``, plus ``round_medians_ms``: every
    round's median, in round order (what :func:`paired_speedup` divides round by
    round). Checked up front: ``fns`` a non-empty dict of callables, ``rounds`` and
    ``runs`` ints >= 1, ``min_seconds >= 0``.
    """
    if not isinstance(fns, Mapping) or not fns:
        raise ValueError(f"fns must be a non-empty dict {{name: function}} to time, got {fns!r}")
    not_callable = [name for name, fn in fns.items() if not callable(fn)]
    if not_callable:
        raise TypeError(f"fns[{not_callable[0]!r}] is not callable; give functions, e.g. {{'fp32': lambda: model(x)}}")
    if isinstance(rounds, bool) or not isinstance(rounds, numbers.Integral) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1 (typically 3), got {rounds!r}")
    _check_timing(10, runs, min_seconds)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order from round to round
            results[name].append(_measure(fns[name], 10, runs, min_seconds))
    return {name: {**sorted(r, key=lambda m: m["median_ms"])[len(r) // 2], "round_medians_ms": [m["median_ms"] for m in r]}
            for name, r in results.items()}


def _round_medians(timing: Any, what: str) -> list[float]:
    """The per-round medians of one :func:`measure_interleaved` result (or a plain list of them)."""
    values = timing.get("round_medians_ms") if isinstance(timing, Mapping) else timing
    if isinstance(values, (str, bytes, set, frozenset)) or (isinstance(values, Sequence) and any(isinstance(v, bool) for v in values)):
        raise ValueError(f"{what}: round medians must be a list of milliseconds, got {values!r}")
    if values is None:
        raise ValueError(f"{what} has no 'round_medians_ms': give a result of measure_interleaved (or a list of round medians)")
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{what}: round medians must be a list of milliseconds, got {values!r}") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{what}: round medians must be positive finite milliseconds, got {values}")
    return values


def paired_speedup(baseline: Any, candidate: Any) -> dict[str, Any]:
    """The speed-up of ``candidate`` over ``baseline`` from the same interleaved rounds, round by round.

    With round medians ``b_r`` and ``c_r`` (round r timed both, one just after the other)::

        ratio_r = b_r / c_r          speedup = median_r ratio_r

    A slow moment of the machine that hits a whole round slows both models of that round, so it
    cancels in the ratio: the paired estimate wanders less than the ratio of the two models' own
    median rounds (``tests/test_deploy.py`` simulates it). ``baseline``, ``candidate``: results of
    :func:`measure_interleaved` (or lists of round medians), from the same rounds. Returns
    ``{"speedup", "rounds": [ratio_r...], "low": min, "high": max}``; > 1 when the candidate is faster.
    Taught in: 08_capstone.
    """
    b, c = _round_medians(baseline, "baseline"), _round_medians(candidate, "candidate")
    if len(b) != len(c):
        raise ValueError(f"baseline has {len(b)} rounds and candidate {len(c)}: pair the rounds of one measure_interleaved call")
    ratios = [x / y for x, y in zip(b, c)]
    if not all(math.isfinite(r) for r in ratios):
        raise ValueError(f"the per-round ratios {ratios} overflow: give milliseconds (baseline {b}, candidate {c})")
    return {"speedup": statistics.median(ratios), "rounds": ratios, "low": min(ratios), "high": max(ratios)}


def file_size(path: str | Path) -> int:
    """Bytes on disk (plus an ONNX external-data file next to it, if any).

    Checked: ``path`` is an existing file (a folder's size is not a model's size).
    """
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "missing"
        raise FileNotFoundError(f"file_size needs a file, but {str(path)!r} is {what}")
    extra = Path(str(path) + ".data")
    return path.stat().st_size + (extra.stat().st_size if extra.exists() else 0)


#: The x86 flags (as /proc/cpuinfo spells them) that decide int8 and bf16 speed.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpu_int8_features(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, bool]:
    """Which int8- and bf16-relevant x86 instruction sets this CPU reports (False where unknown).

    ``avx2`` (int8 via 16-bit multiplies), ``avx512f``, ``avx512_vnni`` / ``avx_vnni``
    (a fused int8 dot-product instruction, VPDPBUSD), ``avx512_bf16`` (a bf16 dot product,
    VDPBF16PS), ``amx_int8`` / ``amx_bf16`` (tile matrix units: a whole 16x64 by 64x16 int8, or
    16x32 by 32x16 bf16, product per instruction); and two summaries: ``vnni`` (either VNNI) and
    ``bf16`` (AVX-512 BF16 or AMX-BF16: a runtime can run float layers in bf16).
    """
    flags = set(_cpuinfo_value(_cpuinfo_fields(cpuinfo), "flags", "").split())
    found = {name: name in flags for name in CPU_FLAGS}
    return {**found, "vnni": found["avx512_vnni"] or found["avx_vnni"], "bf16": found["avx512_bf16"] or found["amx_bf16"]}


def _cpuinfo_fields(cpuinfo: str | Path) -> list[tuple[str, str]]:
    """``(key, value)`` of each ``key : value`` line; [] for a missing, unreadable or non-UTF-8 file.

    Lines without a colon are skipped, so a malformed file gives "unknown" rather than a crash.
    """
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return [(key.strip(), value.strip()) for key, sep, value in (line.partition(":") for line in text.splitlines()) if sep]


def _cpuinfo_value(fields: list[tuple[str, str]], key: str, default: str) -> str:
    """The value of the first line whose key is exactly ``key`` (not merely starts with it)."""
    return next((value for name, value in fields if name == key), default)


def ort_nchwc_block_size(cpuinfo: str | Path = "/proc/cpuinfo") -> int:
    """Channel block of ONNX Runtime's NCHWc convolution kernels (MLAS) on this CPU.

    MLAS lays fp32 activations out as NCHWc -- channels in blocks of c, one SIMD
    register each -- with c = 16 floats on CPUs with AVX-512F (512-bit registers)
    and c = 8 on AVX2 (256-bit). A convolution whose channel counts are multiples
    of c fills every block; ONNX Runtime 1.32 also keeps counts that are multiples
    of 4 (or below c) on this path by padding them up to c, at the cost of the
    padding, and sends other counts to a slower generic kernel
    (``benchmarks/ort_block_size.py`` reads the kernels off the optimised graph).
    The int8 path (QLinearConv) does not use this layout. Returns 16, 8, or 1 (no
    NCHWc kernels: any count).
    """
    return _block_size(cpu_int8_features(cpuinfo))


def _block_size(features: dict[str, bool]) -> int:
    return 16 if features["avx512f"] else 8 if features["avx2"] else 1


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """What a benchmark JSON should record about the CPU it ran on.

    ``{"model": model name, "logical_cpus": count, "torch_threads": torch's thread
    count, "features": cpu_int8_features(), "ort_nchwc_block": ort_nchwc_block_size()}``.
    """
    fields = _cpuinfo_fields(cpuinfo)
    model = _cpuinfo_value(fields, "model name", "unknown")
    features = cpu_int8_features(cpuinfo)
    return {"model": model, "logical_cpus": sum(key == "processor" for key, _ in fields) or os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "features": features, "ort_nchwc_block": _block_size(features)}



def ort_network_runner(model: nn.Module, batch: int = 16, threads: int = 2, image_size: int = 128) -> Callable[[], Any]:
    """A function of no arguments that runs ``model``'s fp32 network once in ONNX Runtime: what to time.

    The network is the detector with batch norm folded (:func:`course_utils.quant.fuse_conv_bn`),
    without post-processing (:class:`DetectorNetwork`), exported to ONNX, in a session with
    ``threads`` intra-op threads, fed one fixed random batch of shape (``batch``, 3, S, S),
    S = ``image_size``. ``model`` itself is not changed. Pass several to :func:`measure_interleaved`.
    """
    import copy
    import tempfile
    import warnings

    from .quant import fuse_conv_bn

    for name, value in (("batch", batch), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an int >= 1 (image_size: one side S of the square S x S input), "
                             f"got {name}={value!r}")
    batch, image_size = int(batch), int(image_size)
    net = DetectorNetwork(fuse_conv_bn(copy.deepcopy(model).cpu().eval())).eval()
    x = torch.rand(batch, 3, image_size, image_size)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes
        session = ort_session(export_onnx(net, x[:1], Path(tmp) / "net.onnx"), threads=threads)
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


def checkpoint_bytes(model: nn.Module) -> tuple[int, int]:
    """Size of ``model``'s state dict as ``torch.save`` writes it, and gzip-compressed (level 6).

    Zeros compress, so the second number is what unstructured sparsity can save on disk; dense
    kernels (and the runtime) do not see it.
    """
    import gzip
    import io

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    raw = buffer.getvalue()
    return len(raw), len(gzip.compress(raw, compresslevel=6))
