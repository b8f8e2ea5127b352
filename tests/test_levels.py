"""TinyDetector(levels=2 or 3): the multi-scale option for large objects (the default, levels=1, unchanged)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from course_utils import TinyDetector
from course_utils.deploy import DetectorNetwork, OrtDetector, export_onnx, ort_session, quantize_onnx
from course_utils.quant import fuse_conv_bn


def _randomise_bn(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0), m.running_mean.uniform_(-0.2, 0.2)
    return model


def test_the_default_detector_is_the_one_level_one():
    torch.manual_seed(0)
    model = TinyDetector()
    assert model.levels == 1 and model.strides == (8,)
    keys = set(model.state_dict())
    assert not any(k.startswith(("level_heads", "stage5", "lateral5")) for k in keys)
    assert "level_heads" not in repr(model)
    raw = model.forward_raw(torch.rand(2, 3, 64, 48))
    assert "strides" not in raw and raw["logits"].shape == (2, 8 * 6, 3)


@pytest.mark.parametrize("levels", [2, 3])
@pytest.mark.parametrize("size", [(128, 128), (97, 61), (64, 200)])
def test_every_level_gives_its_grid_of_anchors(levels, size):
    torch.manual_seed(0)
    model = TinyDetector(levels=levels, anchor_scale=4.0)
    raw = model.forward_raw(torch.rand(2, 3, *size))
    grids = [(math.ceil(size[0] / s), math.ceil(size[1] / s)) for s in model.strides]
    assert model.level_sizes(size) == grids
    total = sum(h * w for h, w in grids)
    assert raw["logits"].shape == (2, total, 3) and raw["deltas"].shape == (2, total, 4)
    assert raw["anchors"].shape == (total, 4) and raw["strides"].shape == (total,)
    assert raw["features"].shape[-2:] == grids[0]
    start = 0
    for (h, w), stride in zip(grids, model.strides):
        part = slice(start, start + h * w)
        start += h * w
        anchors = raw["anchors"][part]
        assert torch.all(raw["strides"][part] == stride)
        assert torch.allclose(anchors[:, 2] - anchors[:, 0], torch.full((h * w,), 4.0 * stride))
        centres = (anchors[:, :2] + anchors[:, 2:]) / 2  # cell centres, row-major
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        expected = torch.stack([(xs.flatten() + 0.5) * stride, (ys.flatten() + 0.5) * stride], 1).float()
        assert torch.allclose(centres, expected)


@pytest.mark.parametrize("levels", [2, 3])
def test_the_exported_network_is_the_eval_model(levels):
    torch.manual_seed(0)
    model = _randomise_bn(TinyDetector(levels=levels)).eval()
    x = torch.rand(2, 3, 96, 80)
    raw = model.forward_raw(x)
    logits, deltas = DetectorNetwork(model)(x)
    assert torch.equal(logits, raw["logits"]) and torch.equal(deltas, raw["deltas"])
    assert torch.equal(model.features(x), raw["features"])


@pytest.mark.parametrize("levels, side, expected_stride", [
    (3, 20, 8), (3, 40, 8), (3, 56, 16), (3, 80, 16), (3, 110, 32), (3, 150, 32),
    (2, 100, 16), (2, 170, 16),  # no stride-32 level: the largest boxes go to the coarsest one there is
])
def test_a_box_is_learned_on_the_level_nearest_its_size(levels, side, expected_stride):
    """Positives: only on level l* = clamp(round(log2(side / 32)), 0, levels - 1), and there exactly the
    locations a one-level detector of that stride would pick (centre sampling at that stride)."""
    model = TinyDetector(levels=levels)
    raw = model.forward_raw(torch.rand(1, 3, 192, 192))
    box = torch.tensor([[30.0, 20.0, 30.0 + side, 20.0 + side * 0.8]])
    level = min(max(round(math.log2(math.sqrt(side * side * 0.8) / 32)), 0), levels - 1)
    assert model.strides[level] == expected_stride
    match = model.assign(raw["anchors"], box, raw["strides"])
    assert (match == 0).any() and torch.all(raw["strides"][match == 0] == expected_stride)
    reference = TinyDetector()
    reference.stride = expected_stride  # the one-level rule at this level's stride
    on_level = raw["strides"] == expected_stride
    assert torch.equal(match[on_level], reference.assign(raw["anchors"][on_level], box))


def test_ties_and_two_sizes_in_one_image():
    model = TinyDetector(levels=3)
    raw = model.forward_raw(torch.rand(1, 3, 128, 128))
    boxes = torch.tensor([[4.0, 4.0, 124.0, 124.0], [56.0, 56.0, 72.0, 72.0]])  # a large box around a small one
    match = model.assign(raw["anchors"], boxes, raw["strides"])
    assert set(raw["strides"][match == 0].tolist()) == {32.0} and set(raw["strides"][match == 1].tolist()) == {8.0}


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
@pytest.mark.parametrize("levels", [2, 3])
def test_every_level_learns(levels):
    torch.manual_seed(0)
    model = TinyDetector(levels=levels)
    images = torch.rand(4, 3, 128, 128)
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 30.0, 26.0], [40.0, 40.0, 100.0, 100.0], [2.0, 4.0, 126.0, 124.0]]),
                "labels": torch.tensor([1, 2, 3])} for _ in range(4)]  # one box per level: ~20, ~60 and ~120 px
    losses = model(images, targets)
    sum(losses.values()).backward()
    for level in range(levels - 1):
        head = model.level_heads[level]
        assert head["cls_out"].weight.grad.abs().sum() > 0 and head["box_out"].weight.grad.abs().sum() > 0
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
    first = None
    for _ in range(25):
        loss = sum(model(images, targets).values())
        first = first if first is not None else loss.item()
        opt.zero_grad(), loss.backward(), opt.step()
    assert loss.item() < 0.5 * first


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
def test_onnx_runtime_runs_a_three_level_detector(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = _randomise_bn(TinyDetector(levels=3)).eval()
    images = torch.rand(8, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    fp32 = export_onnx(DetectorNetwork(fuse_conv_bn(model)), images[:2], tmp_path / "fp32.onnx")
    run = OrtDetector(ort_session(fp32), model)
    logits, _ = run.network(images[:3])
    assert torch.allclose(logits, model.forward_raw(images[:3])["logits"], atol=1e-4)
    with torch.no_grad():
        model.cls_out.bias.fill_(2.0), model.level_heads[1]["cls_out"].bias.fill_(2.0)  # make detections on P3 and P5
    fp32 = export_onnx(DetectorNetwork(fuse_conv_bn(model)), images[:2], tmp_path / "fp32b.onnx")
    got, want = OrtDetector(ort_session(fp32), model)(images[:2]), model(images[:2])
    for g, w in zip(got, want):
        assert len(w["boxes"]) > 0 and torch.allclose(g["boxes"], w["boxes"], atol=1e-3)
        assert torch.allclose(g["scores"], w["scores"], atol=1e-4)
    int8 = quantize_onnx(fp32, tmp_path / "int8.onnx", images)
    assert len(OrtDetector(ort_session(int8), model)(images[:2])) == 2
    with pytest.raises(ValueError, match=r"strides \[8, 16, 32\]"):  # a one-level model's ONNX file, read as three levels
        one = export_onnx(DetectorNetwork(fuse_conv_bn(TinyDetector().eval())), images[:2], tmp_path / "one.onnx")
        OrtDetector(ort_session(one), model)(images[:2])


@pytest.mark.parametrize("levels", [0, 4, 1.5, True, "3", None])
def test_bad_levels_are_refused(levels):
    with pytest.raises(ValueError, match="levels must be 1, 2 or 3"):
        TinyDetector(levels=levels)


def test_the_one_level_tools_refuse_a_multi_level_detector():
    from course_utils.prune import detector_channel_groups
    from course_utils.quant import integer_detector, prepare_qat

    model = TinyDetector(levels=2)
    with pytest.raises(ValueError, match="levels=2"):
        detector_channel_groups(model)
    with pytest.raises(ValueError, match="levels=2.*quantize_onnx"):
        integer_detector(prepare_qat(model), torch.rand(2, 3, 64, 64))
