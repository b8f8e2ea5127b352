"""The keep-in-float search (``course_utils.keep_float``) on a small model whose int8 failure is planted in one node."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from course_utils.deploy import export_onnx, ort_session, quantize_onnx
from course_utils.keep_float import keep_in_float_search, node_sensitivity, quantizable_nodes


class Net(nn.Module):
    """Three convs; the last one's output channel 0 is scaled up 10,000x. One per-tensor uint8 grid for that
    output then has a step far larger than channels 1-3 ever move: int8 wipes them out, unless conv3 stays float."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.conv3.weight[0] *= 1e4
            self.conv3.bias[0] *= 1e4

    def forward(self, images):
        y = self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(images)))))
        return y, y[:, :1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("keep_float")
    torch.manual_seed(1)
    calib, x = torch.rand(16, 3, 12, 12), torch.rand(8, 3, 12, 12)
    net = Net().eval()
    path = export_onnx(net, x[:2], work / "fp32.onnx")
    with torch.no_grad():
        ref = net(x)[0][:, 1:].numpy()

    def score(p):  # minus the error on the small channels, relative to their spread: 0 is perfect
        out = ort_session(p, threads=1).run(None, {"images": x.numpy()})[0][:, 1:]
        return -float(np.sqrt(np.mean((out - ref) ** 2)) / ref.std())

    return path, calib, score, work


def test_the_scan_finds_the_planted_node_and_the_search_keeps_only_it(setup):
    path, calib, score, work = setup
    nodes = quantizable_nodes(path)
    assert len(nodes) == 3 and len(set(nodes)) == 3  # the three convs, in graph order
    scan = node_sensitivity(path, calib, score, work / "scan")
    assert scan["float"] == pytest.approx(0, abs=1e-5) and scan["int8"] < -0.2  # the failure is visible in the number
    assert max(scan["gain"], key=scan["gain"].get) == nodes[2]  # conv3 gives back the most
    found = keep_in_float_search(path, calib, score, max_drop=0.05, work_dir=work / "search", sensitivity=scan)
    assert found["met"] and found["float_nodes"] == [nodes[2]] and found["drop"] <= 0.05
    assert found["history"][0] == (0, scan["int8"])
    # a budget the all-int8 model already meets keeps nothing in float
    loose = keep_in_float_search(path, calib, score, max_drop=scan["float"] - scan["int8"] + 0.01, work_dir=work / "loose",
                                 sensitivity=scan)
    assert loose["float_nodes"] == [] and loose["met"]


def test_the_search_puts_back_what_the_budget_allows(setup):
    """A scan that ranks the harmless nodes first makes the greedy pass keep all three; the second pass must
    put the two harmless ones back in int8 and keep only conv3."""
    path, calib, score, work = setup
    nodes = quantizable_nodes(path)
    scan = node_sensitivity(path, calib, score, work / "scan2")
    misleading = {**scan, "gain": {nodes[0]: 3.0, nodes[1]: 2.0, nodes[2]: 1.0}}
    found = keep_in_float_search(path, calib, score, max_drop=0.05, work_dir=work / "search2", sensitivity=misleading)
    assert found["float_nodes"] == [nodes[2]] and found["met"]
    assert [n for n, _ in found["history"]] == [0, 1, 2, 3, 2, 1]


def test_quantize_onnx_refuses_unknown_nodes_and_methods(setup, tmp_path):
    path, calib, _, _ = setup
    with pytest.raises(ValueError, match="not nodes of"):
        quantize_onnx(path, tmp_path / "a.onnx", calib, nodes_to_exclude=["no_such_node"])
    with pytest.raises(ValueError, match="method must be one of"):
        quantize_onnx(path, tmp_path / "b.onnx", calib, method="kl")
    with pytest.raises(TypeError, match="list of node names"):
        quantize_onnx(path, tmp_path / "c.onnx", calib, nodes_to_exclude="node_conv2d")
    for method in ("entropy", "percentile"):  # the other calibrators run and give a loadable model
        out = quantize_onnx(path, tmp_path / f"{method}.onnx", calib, method=method)
        assert ort_session(out, threads=1).run(None, {"images": calib[:2].numpy()})[0].shape == (2, 4, 12, 12)


def test_bad_arguments_get_clear_errors(setup, tmp_path):
    path, calib, score, _ = setup
    for bad in (-0.1, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="max_drop"):
            keep_in_float_search(path, calib, score, max_drop=bad, work_dir=tmp_path)
    with pytest.raises(TypeError, match="score must be a callable"):
        node_sensitivity(path, calib, 0.5, tmp_path)
    with pytest.raises(ValueError, match="finite number"):
        node_sensitivity(path, calib, lambda p: float("nan"), tmp_path)
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        quantizable_nodes(tmp_path / "missing.onnx")
