"""course_utils.boxes: every from-scratch function equals its torchvision counterpart."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from course_utils import boxes as B

FORMATS = ("xyxy", "xywh", "cxcywh")


def random_boxes(gen: torch.Generator, n: int, size: float = 100.0, min_wh: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    """(n, 4) xyxy boxes with strictly positive width and height."""
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * size
    wh = min_wh + torch.rand(n, 2, generator=gen, dtype=torch.float64) * size / 2
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def distinct_scores(gen: torch.Generator, n: int) -> torch.Tensor:
    """n distinct scores in (0, 1), in random order (no ties for NMS to break)."""
    return ((torch.randperm(n, generator=gen).double() + torch.rand(n, generator=gen, dtype=torch.float64) * 0.5 + 0.25) / n).float()


# --------------------------------------------------------------------------- #
# box_convert / box_area / box_iou
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("in_fmt,out_fmt", list(itertools.permutations(FORMATS, 2)))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_convert_matches_torchvision(in_fmt, out_fmt, seed):
    gen = torch.Generator().manual_seed(seed)
    # Any (N, 4) tensor is a valid box in xywh / cxcywh as long as w, h > 0.
    boxes = torchvision.ops.box_convert(random_boxes(gen, 37), "xyxy", in_fmt)
    ours = B.box_convert(boxes, in_fmt, out_fmt)
    ref = torchvision.ops.box_convert(boxes, in_fmt, out_fmt)
    assert ours.shape == ref.shape == (37, 4)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
def test_box_convert_identity_and_empty(fmt):
    gen = torch.Generator().manual_seed(3)
    boxes = random_boxes(gen, 5)
    # same format: an exact copy, as in torchvision
    assert torch.equal(B.box_convert(boxes, fmt, fmt), torchvision.ops.box_convert(boxes, fmt, fmt))


    assert B.box_convert(torch.zeros(0, 4), fmt, "xyxy").shape == (0, 4)


def test_box_convert_does_not_modify_input():
    gen = torch.Generator().manual_seed(4)
    boxes = random_boxes(gen, 6)
    original = boxes.clone()
    for in_fmt, out_fmt in itertools.product(FORMATS, FORMATS):
        B.box_convert(boxes, in_fmt, out_fmt).add_(1.0)  # mutating the result must not touch the input
    torch.testing.assert_close(boxes, original, rtol=0, atol=0)


@pytest.mark.parametrize("in_fmt,out_fmt", [("xyxy", "xyxyz"), ("xywh", "XYXY"), ("ltrb", "xyxy"), ("xyxy", "")])
def test_box_convert_unknown_format_raises(in_fmt, out_fmt):
    with pytest.raises(ValueError, match="box format"):
        B.box_convert(torch.zeros(1, 4), in_fmt, out_fmt)


@pytest.mark.parametrize("seed", range(3))
def test_box_area_matches_torchvision(seed):
    gen = torch.Generator().manual_seed(seed)
    boxes = random_boxes(gen, 50)
    torch.testing.assert_close(B.box_area(boxes), torchvision.ops.box_area(boxes), rtol=1e-6, atol=1e-4)
    # hand-made: the continuous convention, no "+1"
    torch.testing.assert_close(B.box_area(torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 3.0, 5.0, 4.0]])), torch.tensor([100.0, 3.0]))


@pytest.mark.parametrize("seed", range(5))
def test_box_iou_matches_torchvision_random(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    b1, b2 = random_boxes(gen, 23), random_boxes(gen, 31)
    ours, ref = B.box_iou(b1, b2), torchvision.ops.box_iou(b1, b2)
    assert ours.shape == (23, 31)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    assert (ref > 0).any() and (ref == 0).any()  # the inputs exercise both overlap and no overlap


def test_box_iou_special_cases():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    cases = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # identical -> 1
            [20.0, 20.0, 30.0, 30.0],  # disjoint -> 0
            [10.0, 0.0, 20.0, 10.0],  # touching along an edge -> 0
            [10.0, 10.0, 20.0, 20.0],  # touching at a corner -> 0
            [5.0, 0.0, 15.0, 10.0],  # half overlap -> 50 / 150
            [2.0, 2.0, 8.0, 8.0],  # contained -> 36 / 100
        ]
    )
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0 / 3.0, 0.36]])
    ours = B.box_iou(a, cases)
    torch.testing.assert_close(ours, torchvision.ops.box_iou(a, cases))
    torch.testing.assert_close(ours, expected)
    # symmetric
    torch.testing.assert_close(B.box_iou(cases, a), ours.T)


@pytest.mark.parametrize("n,m", [(0, 5), (5, 0), (0, 0)])
def test_box_iou_empty_shapes(n, m):
    gen = torch.Generator().manual_seed(7)
    b1, b2 = random_boxes(gen, n), random_boxes(gen, m)
    ours, ref = B.box_iou(b1, b2), torchvision.ops.box_iou(b1, b2)
    assert ours.shape == ref.shape == (n, m)


# --------------------------------------------------------------------------- #
# NMS
# --------------------------------------------------------------------------- #
NMS_THRESHOLDS = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]


@pytest.mark.parametrize("threshold", NMS_THRESHOLDS)
def test_nms_matches_torchvision(threshold):
    gen = torch.Generator().manual_seed(int(threshold * 100))
    num_suppressed = 0
    for trial in range(40):
        n = int(torch.randint(1, 80, (1,), generator=gen))
        # Clustered boxes so that plenty of pairs overlap strongly.
        boxes = random_boxes(gen, n, size=60.0 if trial % 2 else 200.0, min_wh=2.0)
        scores = distinct_scores(gen, n)
        ours, ref = B.nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold)
        assert ours.dtype == torch.int64
        assert ours.tolist() == ref.tolist(), f"trial {trial}, n={n}"
        num_suppressed += n - len(ref)
    assert num_suppressed > 0  # the random sets actually exercise suppression


def test_nms_empty_input():
    boxes, scores = torch.zeros(0, 4), torch.zeros(0)
    ours, ref = B.nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5)
    assert ours.shape == ref.shape == (0,)
    assert ours.dtype == ref.dtype == torch.int64


def test_nms_hand_made():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 8]])
    scores = torch.tensor([0.6, 0.9, 0.3, 0.8])
    # 1 (0.9) is kept; 3 overlaps 1 with IoU 63/117 = 0.54 <= 0.6 -> kept;
    # 0 overlaps 1 with IoU 81/119 = 0.68 > 0.6 -> dropped; 2 overlaps nothing -> kept.
    assert B.nms(boxes, scores, 0.6).tolist() == [1, 3, 2]
    assert B.nms(boxes, scores, 0.6).tolist() == torchvision.ops.nms(boxes, scores, 0.6).tolist()


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.9])
def test_batched_nms_matches_torchvision(threshold):
    gen = torch.Generator().manual_seed(1000 + int(threshold * 10))
    for trial in range(30):
        n = int(torch.randint(1, 90, (1,), generator=gen))
        boxes = random_boxes(gen, n, size=60.0, min_wh=2.0)
        scores = distinct_scores(gen, n)
        idxs = torch.randint(0, 4, (n,), generator=gen)
        ours = B.batched_nms(boxes, scores, idxs, threshold)
        ref = torchvision.ops.batched_nms(boxes, scores, idxs, threshold)
        assert ours.tolist() == ref.tolist(), f"trial {trial}, n={n}"


def test_batched_nms_classes_do_not_suppress_each_other():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    idxs = torch.tensor([0, 1, 0])
    assert B.batched_nms(boxes, scores, idxs, 0.5).tolist() == [0, 1]
    empty = B.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64


# --------------------------------------------------------------------------- #
# Anchors
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "feature_size,stride,sizes,aspect_ratios",
    [
        ((4, 4), 8, (32.0,), (1.0,)),
        ((3, 5), 16, (12.0, 24.0, 48.0), (0.5, 1.0, 2.0)),
        ((7, 2), 4, (10.0, 21.0), (1.0, 3.0)),
        ((16, 16), 8, (32.0,), (0.5, 1.0)),
    ],
)
def test_make_anchors_matches_torchvision(feature_size, stride, sizes, aspect_ratios):
    h, w = feature_size
    images = torch.zeros(1, 3, h * stride, w * stride)
    image_list = ImageList(images, [(h * stride, w * stride)])
    feature = torch.zeros(1, 8, h, w)
    generator = AnchorGenerator(sizes=(tuple(sizes),), aspect_ratios=(tuple(aspect_ratios),))
    ref = generator(image_list, [feature])[0]
    ours = B.make_anchors(feature_size, stride, sizes, aspect_ratios)
    assert ours.shape == ref.shape == (h * w * len(sizes) * len(aspect_ratios), 4)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- #
# Box coding
# --------------------------------------------------------------------------- #
WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("seed", range(3))
def test_encode_matches_torchvision(weights, seed):
    gen = torch.Generator().manual_seed(seed)
    anchors, gt = random_boxes(gen, 64, min_wh=4.0), random_boxes(gen, 64, min_wh=4.0)
    coder = BoxCoder(weights)
    torch.testing.assert_close(B.encode_boxes(gt, anchors, weights), coder.encode_single(gt, anchors), rtol=0, atol=1e-5)


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("seed", range(3))
def test_decode_matches_torchvision(weights, seed):
    gen = torch.Generator().manual_seed(10 + seed)
    anchors = random_boxes(gen, 64, min_wh=4.0)
    deltas = torch.randn(64, 4, generator=gen) * torch.tensor([1.0, 1.0, 2.0, 2.0])
    deltas[:4, 2:] = torch.tensor([[40.0, 60.0], [-3.0, 80.0], [100.0, -1.0], [25.0, 25.0]])  # exercise the exp clamp
    coder = BoxCoder(weights, bbox_xform_clip=math.log(1000.0 / 16))
    ours = B.decode_boxes(deltas, anchors, weights)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, coder.decode_single(deltas, anchors), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_encode_decode_round_trip(weights):
    gen = torch.Generator().manual_seed(42)
    anchors64 = random_boxes(gen, 200, min_wh=4.0, dtype=torch.float64)
    gt64 = random_boxes(gen, 200, min_wh=4.0, dtype=torch.float64)
    back = B.decode_boxes(B.encode_boxes(gt64, anchors64, weights), anchors64, weights)
    torch.testing.assert_close(back, gt64, rtol=0, atol=1e-9)
    anchors32, gt32 = anchors64.float(), gt64.float()
    back32 = B.decode_boxes(B.encode_boxes(gt32, anchors32, weights), anchors32, weights)
    torch.testing.assert_close(back32, gt32, rtol=0, atol=1e-3)


def test_encode_of_anchor_itself_is_zero():
    gen = torch.Generator().manual_seed(5)
    anchors = random_boxes(gen, 10, min_wh=4.0)
    torch.testing.assert_close(B.encode_boxes(anchors, anchors), torch.zeros(10, 4), rtol=0, atol=1e-6)
