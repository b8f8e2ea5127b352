"""Which layers should stay in float? A per-node sensitivity scan and an accuracy-controlled int8 search.

Taught in notebook 11 (when int8 goes wrong).

int8 rarely hurts every layer alike: a few nodes (often the first conv, the last ones, or
a layer whose activations have outliers) cause most of the loss. Keeping just those in
float recovers most of the accuracy at a small cost in speed. The idea is NNCF's
*accuracy-controlled quantization*; here it is written out on ONNX Runtime's static
quantizer (:func:`course_utils.deploy.quantize_onnx`, its ``nodes_to_exclude``):

1. :func:`node_sensitivity` -- for every quantizable node ``n``, the score with every node
   int8 **but** ``n`` (how much keeping ``n`` in float gives back);
2. :func:`keep_in_float_search` -- keep nodes in float in that order until the score is
   within ``max_drop`` of the float model's, then try to put each kept node back in int8
   (the last added first), keeping it there where the score stays within the budget: a
   small set, not provably the smallest.

``score`` is any callable from an ONNX file's path to a number, higher is better (the
detector's mAP on val via :class:`course_utils.deploy.OrtDetector`; in the tests, minus
the output error on fixed inputs). Every candidate file is written under ``work_dir``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from .deploy import quantize_onnx

QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def quantizable_nodes(path: str | Path) -> list[str]:
    """Names of the nodes ONNX Runtime's static quantizer turns into integer kernels (Conv, Gemm, MatMul), in graph order."""
    import onnx

    if not Path(path).is_file():
        raise FileNotFoundError(f"no ONNX file at {str(path)!r} (export one with course_utils.deploy.export_onnx)")
    nodes = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type in QUANTIZABLE_OPS]
    if not all(nodes):
        raise ValueError(f"{str(path)!r} has unnamed Conv/Gemm/MatMul nodes: re-export it with export_onnx, which names every node")
    return nodes


def _score(score: Callable[[Path], float], path: Path) -> float:
    value = score(path)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"score({path.name}) returned {value!r}: it must return a finite number, higher is better (e.g. mAP)")
    return float(value)


def _check(fp32_path: str | Path, work_dir: str | Path, score: Any) -> tuple[Path, Path]:
    if not callable(score):
        raise TypeError(f"score must be a callable from an ONNX path to a number (e.g. val mAP), got {type(score).__name__}")
    fp32_path, work_dir = Path(fp32_path), Path(work_dir)
    if not fp32_path.is_file():
        raise FileNotFoundError(f"no ONNX file at {str(fp32_path)!r} (export one with course_utils.deploy.export_onnx)")
    work_dir.mkdir(parents=True, exist_ok=True)
    return fp32_path, work_dir


def quantize_except(fp32_path: str | Path, int8_path: str | Path, calibration_images: Tensor, keep_float: Sequence[str],
                    **quantize_kwargs: Any) -> Path:
    """The static int8 model of ``fp32_path`` with the nodes in ``keep_float`` left in float (``quantize_onnx``)."""
    return quantize_onnx(fp32_path, int8_path, calibration_images, nodes_to_exclude=list(keep_float), **quantize_kwargs)


def node_sensitivity(fp32_path: str | Path, calibration_images: Tensor, score: Callable[[Path], float], work_dir: str | Path,
                     nodes: Sequence[str] | None = None, **quantize_kwargs: Any) -> dict[str, Any]:
    """Score of the all-int8 model and, per node ``n``, of the model with every node int8 except ``n``.

    Returns ``{"float": s_fp32, "int8": s_int8, "all_but": {n: s_n}, "gain": {n: s_n - s_int8}}``, nodes in
    graph order (``nodes``: a subset to scan; default every quantizable node). One quantization and one
    score per node: the scan costs ``len(nodes) + 1`` calibrations.
    """
    fp32_path, work_dir = _check(fp32_path, work_dir, score)
    nodes = quantizable_nodes(fp32_path) if nodes is None else list(nodes)
    s_float = _score(score, fp32_path)
    s_int8 = _score(score, quantize_except(fp32_path, work_dir / "all_int8.onnx", calibration_images, [], **quantize_kwargs))
    all_but = {}
    for i, node in enumerate(nodes):
        path = quantize_except(fp32_path, work_dir / f"float_{i}.onnx", calibration_images, [node], **quantize_kwargs)
        all_but[node] = _score(score, path)
    return {"float": s_float, "int8": s_int8, "all_but": all_but, "gain": {n: s - s_int8 for n, s in all_but.items()}}


def keep_in_float_search(fp32_path: str | Path, calibration_images: Tensor, score: Callable[[Path], float], max_drop: float,
                         work_dir: str | Path, sensitivity: dict[str, Any] | None = None,
                         **quantize_kwargs: Any) -> dict[str, Any]:
    """A small set of nodes to keep in float so that ``score(float) - score(mixed) <= max_drop``.

    Greedy, as accuracy-controlled quantization does it: add nodes to the float set in order of their
    :func:`node_sensitivity` gain (largest first) until the drop is within ``max_drop``; then try each
    kept node back in int8, the last added first, and leave it there while the drop stays within budget.
    Returns ``{"float_nodes", "score", "float", "int8", "drop", "met", "history": [(n_float, score)...]}``;
    ``met`` is False when even every node in float (the float model) cannot meet it -- impossible for
    ``max_drop >= 0`` -- or when the scan's nodes run out first. ``sensitivity``: a scan already made.
    """
    if isinstance(max_drop, bool) or not isinstance(max_drop, numbers.Real) or not math.isfinite(max_drop) or max_drop < 0:
        raise ValueError(f"max_drop must be a finite number >= 0 in the score's units (e.g. 0.005 for half a mAP point), "
                         f"got {max_drop!r}")
    fp32_path, work_dir = _check(fp32_path, work_dir, score)
    scan = sensitivity or node_sensitivity(fp32_path, calibration_images, score, work_dir, **quantize_kwargs)
    order = sorted(scan["gain"], key=lambda n: -scan["gain"][n])
    keep: list[str] = []
    current, history, step = scan["int8"], [(0, scan["int8"])], 0

    def trial(nodes: list[str]) -> float:
        nonlocal step
        step += 1
        return _score(score, quantize_except(fp32_path, work_dir / f"search_{step}.onnx", calibration_images, nodes,
                                             **quantize_kwargs))

    for node in order:
        if scan["float"] - current <= max_drop:
            break
        keep.append(node)
        current = trial(keep)
        history.append((len(keep), current))
    for node in reversed(list(keep)):  # put back in int8 what the budget allows, the last added first
        if scan["float"] - current > max_drop:
            break
        rest = [n for n in keep if n != node]
        s = trial(rest)
        if scan["float"] - s <= max_drop:
            keep, current = rest, s
            history.append((len(keep), current))
    drop = scan["float"] - current
    return {"float_nodes": keep, "score": current, "float": scan["float"], "int8": scan["int8"], "drop": drop,
            "met": drop <= max_drop, "history": history}
