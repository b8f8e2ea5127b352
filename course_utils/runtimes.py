"""Two runtimes for one exported ONNX network: ONNX Runtime and OpenVINO, behind one interface.

Taught in: 05_qat_and_int8 (which runtime and precision to deploy on which CPU) and 09.

Both read the same ``.onnx`` file -- fp32, or int8 in QDQ form (:func:`course_utils.deploy.quantize_onnx`) --
and both are called the same way, ``session.run(None, {"images": x}) -> [logits, deltas]``, so
:class:`course_utils.deploy.OrtDetector` runs either, and a benchmark times them side by side:

* :func:`ort_session` -- ONNX Runtime's CPU execution provider (its MLAS kernels);
* :func:`openvino_session` -- OpenVINO's CPU plugin (oneDNN kernels), in fp32 or, on a CPU with bf16
  instructions (AVX-512 BF16 or AMX-BF16), in bf16: the float parts of the network run with bfloat16
  inputs (8 bits of mantissa instead of 23) and float32 accumulation.

An int8 QDQ file runs as int8 in both; its precision hint only concerns the layers left in float.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ort_session", "openvino_session", "OpenVinoSession", "OPENVINO_PRECISIONS"]

#: Precisions :func:`openvino_session` runs a float network in (OpenVINO's ``INFERENCE_PRECISION_HINT``).
OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def _check_threads(threads: Any, runtime: str) -> int:
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 0:
        raise ValueError(f"threads must be an int >= 0 (0 lets {runtime} choose), got {threads!r}")
    return int(threads)


def _check_model_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {str(path)!r} (export one with export_onnx)")
    return path


def ort_session(path: str | Path, threads: int = 2, spin: bool = True, optimization: str = "all",
                optimized_model_path: str | Path | None = None, config: Mapping[str, str] | None = None) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads and all graph optimisations.

    ``optimization``: ONNX Runtime's graph optimization level: ``"disable"``; ``"basic"`` (constant
    folding, redundant nodes -- a QDQ model still runs DQ → float Conv → Q); ``"extended"`` (fuses
    each QDQ group into an integer kernel such as ``QLinearConv``); ``"all"`` (the default; adds
    layout changes: NCHWc blocks for float convs, NHWC for integer ones).
    ``optimized_model_path``: also write the optimized graph there (to see which kernels run).
    ``config``: extra session config entries, e.g. ``{"session.qdqisint8allowed": "1"}``.

    By default ONNX Runtime's worker threads spin for a while after each call,
    waiting for more work: fastest for one session, but they tax whatever runs
    next in the same process. ``spin=False`` lets them sleep -- use it when
    several sessions (or PyTorch) are timed in turn in one process.
    Checked: ``threads`` an int >= 0 (0: ONNX Runtime's default), ``path`` an existing file.
    """
    import onnxruntime as ort

    threads = _check_threads(threads, "ONNX Runtime")
    _check_model_file(path)
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if optimization not in levels:
        raise ValueError(f"optimization must be one of {list(levels)}, got {optimization!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[optimization]
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
        options.log_severity_level = 3  # ORT warns that an "all"-level graph is specific to this CPU: known, it is only read
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in (config or {}).items():
        options.add_session_config_entry(str(key), str(value))
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own classes (InvalidProtobuf, Fail, ...): not importable by name everywhere
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"{path}: ONNX Runtime cannot load this file ({first}); make it with export_onnx "
                         "(or quantize_onnx) from a model") from err


class OpenVinoSession:
    """An ONNX (or OpenVINO IR) network compiled by OpenVINO for the CPU; ``run`` is called like ONNX Runtime's.

    Made by :func:`openvino_session`. ``run(None, {"images": x})`` returns the outputs as NumPy arrays in
    the file's output order; ``precision`` is what the float layers run in ("fp32" or "bf16").
    """

    def __init__(self, compiled: Any, precision: str, threads: int) -> None:
        self.compiled, self.precision, self.threads = compiled, precision, threads
        self._request = compiled.create_infer_request()
        self._input = compiled.inputs[0]

    def run(self, output_names: Any, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The network's outputs for ``feed`` (one input, by any name), like ``InferenceSession.run``."""
        if output_names is not None:
            raise ValueError("OpenVinoSession.run returns every output: pass None as output_names, as the course does")
        if len(feed) != 1:
            raise ValueError(f"the network has one input (images); got {len(feed)}: {sorted(feed)}")
        (x,) = feed.values()
        results = self._request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return [np.asarray(results[out]) for out in self.compiled.outputs]


def openvino_session(path: str | Path, threads: int = 2, precision: str = "fp32", batch: int | None = None) -> OpenVinoSession:
    """OpenVINO's CPU plugin running the network in ``path`` (an ONNX file: fp32 or int8 QDQ, as for ONNX Runtime).

    ``threads``: inference threads (0: OpenVINO's default); one stream, latency mode (one request at a
    time, all threads on it), as ONNX Runtime's session is timed. ``precision``: "fp32" or "bf16" for the
    float layers (bf16 only on a CPU that has bf16 instructions: :func:`course_utils.deploy.cpu_int8_features`
    ``["bf16"]``; OpenVINO would silently run fp32 elsewhere, so it is refused there). OpenVINO picks bf16
    *by default* on such CPUs; this function always sets the precision explicitly. ``batch``: fix the batch
    size (compiled for that shape only; a little faster than a dynamic batch), or None to keep the file's.
    """
    import openvino as ov

    threads = _check_threads(threads, "OpenVINO")
    path = _check_model_file(path)
    if precision not in OPENVINO_PRECISIONS:
        raise ValueError(f"precision must be one of {list(OPENVINO_PRECISIONS)}, got {precision!r}")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1):
        raise ValueError(f"batch must be None or an int >= 1, got {batch!r}")
    core = ov.Core()
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise ValueError("precision='bf16': this CPU has no bf16 instructions (AVX-512 BF16 or AMX-BF16), so OpenVINO "
                         "would run fp32 instead; use precision='fp32'")
    try:
        model = core.read_model(str(path))
    except Exception as err:  # OpenVINO raises its own RuntimeError subclasses for an unreadable file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: OpenVINO cannot read this file ({first}); make it with export_onnx "
                         "(or quantize_onnx) from a model") from err
    if batch is not None:
        shape = list(model.inputs[0].get_partial_shape())
        model.reshape({model.inputs[0].get_any_name(): [int(batch), *shape[1:]]})
    config = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY",
              "NUM_STREAMS": 1}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return OpenVinoSession(core.compile_model(model, "CPU", config), precision, threads)
