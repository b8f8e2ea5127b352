"""The full COCO box evaluation -- crowd regions, area ranges, average recall -- equals pycocotools'."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_utils.metrics import COCO_STATS, match_coco, match_detections, mean_average_precision, pycocotools_map

from test_metrics import SEEDS, make_case


def crowd_case(seed: int) -> tuple[list[dict], list[dict]]:
    """Random images of 300 x 300 px with objects of every COCO size, crowd regions, and explicit areas."""
    rng = np.random.default_rng(1000 + seed)
    preds, targets = [], []
    for _ in range(int(rng.integers(2, 7))):
        gt, labels, crowd, area, det, det_labels = [], [], [], [], [], []
        for _ in range(int(rng.integers(0, 7))):
            side = float(rng.choice([rng.uniform(4, 30), rng.uniform(33, 95), rng.uniform(97, 200)]))  # small/medium/large
            x, y = rng.uniform(0, 300 - min(side, 299), size=2)
            box = [x, y, x + side * rng.uniform(0.6, 1.4), y + side * rng.uniform(0.6, 1.4)]
            label = int(rng.integers(1, 4))
            gt.append(box)
            labels.append(label)
            is_crowd = rng.random() < 0.25
            crowd.append(int(is_crowd))
            # COCO areas are segmentation areas: a little smaller than the box, sometimes across a size limit
            area.append((box[2] - box[0]) * (box[3] - box[1]) * rng.uniform(0.5, 1.0))
            for _ in range(int(rng.integers(0, 4 if is_crowd else 3))):  # crowds draw several detections
                jitter = rng.normal(0, 0.08 * side, size=4)
                det.append([box[0] + jitter[0], box[1] + jitter[1], max(box[0] + jitter[0] + 1, box[2] + jitter[2]),
                            max(box[1] + jitter[1] + 1, box[3] + jitter[3])])
                det_labels.append(label if rng.random() < 0.9 else int(rng.integers(1, 4)))
        for _ in range(int(rng.integers(0, 4))):  # false positives of any size
            x, y = rng.uniform(0, 250, size=2)
            w, h = rng.uniform(3, 120, size=2)
            det.append([x, y, x + w, y + h])
            det_labels.append(int(rng.integers(1, 4)))
        targets.append({"boxes": torch.tensor(np.array(gt).reshape(-1, 4)), "labels": torch.tensor(labels, dtype=torch.int64),
                        "iscrowd": torch.tensor(crowd, dtype=torch.int64), "area": torch.tensor(area, dtype=torch.float64)})
        preds.append({"boxes": torch.tensor(np.array(det).reshape(-1, 4)), "labels": torch.tensor(det_labels, dtype=torch.int64),
                      "scores": torch.tensor(rng.uniform(0.05, 1, size=len(det)))})
    if not any(len(p["labels"]) for p in preds):
        preds[0] = {"boxes": torch.tensor([[10.0, 10, 50, 50]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.5])}
    return preds, targets


def assert_all_stats_equal(preds, targets):
    ours, ref = mean_average_precision(preds, targets), pycocotools_map(preds, targets)
    for name in COCO_STATS:
        assert ours[name] == pytest.approx(ref[name], abs=1e-6), name
    for label, ap in ref["ap_per_class"].items():
        assert ours["ap_per_class"][label] == pytest.approx(ap, abs=1e-6), label
    return ours, ref


@pytest.mark.parametrize("seed", range(40))
def test_crowd_regions_area_ranges_and_recall_equal_pycocotools(seed):
    assert_all_stats_equal(*crowd_case(seed))


@pytest.mark.parametrize("seed", SEEDS[::3])
def test_all_twelve_numbers_equal_pycocotools_on_the_plain_cases(seed):
    preds, targets, _ = make_case(seed)
    assert_all_stats_equal(preds, targets)


def test_the_crowd_cases_exercise_what_they_should():
    crowd_dets = sizes = 0
    seen_sizes = set()
    for seed in range(40):
        preds, targets = crowd_case(seed)
        for t in targets:
            crowd_dets += int(t["iscrowd"].sum())
            for a in t["area"].tolist():
                seen_sizes.add("small" if a < 32**2 else "medium" if a <= 96**2 else "large")
        ours = mean_average_precision(preds, targets)
        sizes += all(ours[f"map_{s}"] >= 0 for s in ("small", "medium", "large"))
    assert crowd_dets >= 40 and seen_sizes == {"small", "medium", "large"} and sizes >= 10


def test_a_detection_on_a_crowd_region_is_not_a_false_positive():
    target = {"boxes": torch.tensor([[10.0, 10, 50, 50], [100, 100, 200, 200]]), "labels": torch.tensor([1, 1]),
              "iscrowd": torch.tensor([0, 1])}
    pred = {"boxes": torch.tensor([[120.0, 120, 160, 160], [10, 10, 50, 50]]), "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([1, 1])}
    with_crowd = mean_average_precision([pred], [target])
    as_object = mean_average_precision([pred], [{**target, "iscrowd": torch.tensor([0, 0])}])
    assert with_crowd["map"] == pytest.approx(1.0) == pycocotools_map([pred], [target])["map"]
    assert as_object["map"] < 0.9  # the same detection on an ordinary object of IoU 0.16 is a false positive


def test_match_coco_without_ignored_ground_truth_is_match_detections():
    rng = np.random.default_rng(0)
    for _ in range(50):
        ious = rng.random((int(rng.integers(0, 8)), int(rng.integers(0, 6)))).round(1)
        none = np.zeros(ious.shape[1], dtype=bool)
        for t in (0.5, 0.7, 0.9):
            matched, ignored = match_coco(ious, t, none, none)
            assert np.array_equal(matched, match_detections(ious, t)) and not ignored.any()


def test_area_ranges_follow_the_given_area_not_the_box():
    """A box of 40 x 40 px (medium by its box) whose object area is 600 px² is a small object, as in COCO."""
    target = {"boxes": torch.tensor([[0.0, 0, 40, 40]]), "labels": torch.tensor([1]), "area": torch.tensor([600.0])}
    pred = {"boxes": torch.tensor([[0.0, 0, 40, 40]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    ours = mean_average_precision([pred], [target])
    assert ours["map_small"] == -1 or ours["map_small"] >= 0
    ref = pycocotools_map([pred], [target])
    for name in COCO_STATS:
        assert ours[name] == pytest.approx(ref[name], abs=1e-9), name


@pytest.mark.parametrize("bad, match", [
    ({"iscrowd": torch.tensor([2])}, "0 or 1"),
    ({"iscrowd": torch.tensor([0, 1])}, "one 0 or 1 per box"),
    ({"area": torch.tensor([-1.0])}, "area >= 0"),
    ({"area": torch.tensor([float("nan")])}, "finite"),
    ({"iscrowd": torch.tensor([0.5])}, "integer"),
])
def test_bad_crowd_and_area_fields_are_refused_clearly(bad, match):
    target = {"boxes": torch.tensor([[0.0, 0, 40, 40]]), "labels": torch.tensor([1]), **bad}
    pred = {"boxes": torch.tensor([[0.0, 0, 40, 40]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    with pytest.raises(ValueError, match=match):
        mean_average_precision([pred], [target])


def test_areas_false_skips_the_size_ranges_only():
    preds, targets = crowd_case(3)
    full, quick = mean_average_precision(preds, targets), mean_average_precision(preds, targets, areas=False)
    assert "map_small" not in quick
    for name in ("map", "map_50", "map_75", "mar_1", "mar_10", "mar_100"):
        assert quick[name] == full[name]


# ------------------------------------------------------------------ from a COCO file on disk, end to end
def test_a_coco_file_with_crowds_scores_as_pycocotools_scores_it(tmp_path):
    """The loader carries iscrowd and area; course_utils' evaluation of its targets equals COCOeval run on the file."""
    import contextlib
    import io
    import json

    from PIL import Image
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from course_utils import CocoDetection

    preds_all, targets_all = crowd_case(7)
    (tmp_path / "images").mkdir()
    images, annotations, results = [], [], []
    for i, (pred, target) in enumerate(zip(preds_all, targets_all), start=1):
        Image.new("RGB", (320, 320)).save(tmp_path / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 320, "height": 320})
        for box, label, crowd, area in zip(target["boxes"].tolist(), target["labels"].tolist(), target["iscrowd"].tolist(),
                                           target["area"].tolist()):
            box = [min(max(v, 0.0), 320.0) for v in box]
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": label, "iscrowd": crowd,
                                "area": area, "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                                "segmentation": [[box[0], box[1], box[2], box[1], box[2], box[3]]]})
        for box, label, score in zip(pred["boxes"].tolist(), pred["labels"].tolist(), pred["scores"].tolist()):
            results.append({"image_id": i, "category_id": label, "score": score,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    data = {"info": {"description": "crowds"}, "licenses": [], "images": images, "annotations": annotations,
            "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)]}
    (tmp_path / "annotations.json").write_text(json.dumps(data))
    dataset = CocoDetection(tmp_path / "annotations.json")
    targets = [dataset[i][1] for i in range(len(dataset))]
    assert sum(int(t["iscrowd"].sum()) for t in targets) > 0
    ours = mean_average_precision(preds_all, targets)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "annotations.json"))
        ev = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    for name, value in zip(COCO_STATS, ev.stats):
        assert ours[name] == pytest.approx(value, abs=1e-6), name


def test_training_skips_crowd_boxes():
    from course_utils import TinyDetector

    torch.manual_seed(0)
    model = TinyDetector(width=0.5)
    images = torch.rand(2, 3, 64, 64)
    obj = {"boxes": torch.tensor([[4.0, 4, 30, 30]]), "labels": torch.tensor([1])}
    with_crowd = {"boxes": torch.tensor([[4.0, 4, 30, 30], [30, 30, 60, 60]]), "labels": torch.tensor([1, 2]),
                  "iscrowd": torch.tensor([0, 1])}
    raw = model.forward_raw(images)
    a = model.loss(raw, [obj, obj])
    b = model.loss(raw, [with_crowd, obj])
    for key in a:
        assert torch.allclose(a[key], b[key]), key
    c = model.loss(raw, [{**with_crowd, "iscrowd": torch.tensor([0, 0])}, obj])
    assert not torch.allclose(a["loss_cls"], c["loss_cls"])  # the same box as an object does change the loss


def _cocoeval_counts(pred: dict, target: dict, score_threshold: float) -> tuple[int, int, int]:
    """(TP, FP, FN) of one image at IoU 0.5 from pycocotools' own per-image matching (``evalImgs``, area
    "all", 100 detections): matched detections that are not ignored, unmatched ones that are not
    ignored, and counted ground truths left unmatched."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    keep = pred["scores"] >= score_threshold
    boxes, labels = target["boxes"].double(), target["labels"]
    anns = [{"id": j + 1, "image_id": 1, "category_id": int(c), "bbox": [*b[:2].tolist(), *(b[2:] - b[:2]).tolist()],
             "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": int(target["iscrowd"][j])}
            for j, (b, c) in enumerate(zip(boxes, labels))]
    res = [{"image_id": 1, "category_id": int(c), "bbox": [*b[:2].tolist(), *(b[2:] - b[:2]).tolist()], "score": float(s)}
           for b, c, s in zip(pred["boxes"][keep].double(), pred["labels"][keep], pred["scores"][keep])]
    classes = sorted({int(c) for c in labels} | {int(c) for c in pred["labels"]})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": 1}], "annotations": anns, "categories": [{"id": c} for c in classes]}
        gt.createIndex()
        if not res:
            return 0, 0, int((target["iscrowd"] == 0).sum())
        ev = COCOeval(gt, gt.loadRes(res), iouType="bbox")
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.evaluate()
    tp = fp = fn = 0
    for e in ev.evalImgs:
        if e is None:
            continue
        matched, ignored = e["dtMatches"][0] > 0, e["dtIgnore"][0].astype(bool)  # IoU 0.5 is the first threshold
        tp += int((matched & ~ignored).sum())
        fp += int((~matched & ~ignored).sum())
        gt_counted = ~np.asarray(e["gtIgnore"], dtype=bool)
        fn += int((gt_counted & ~(e["gtMatches"][0] > 0)).sum())
    return tp, fp, fn


@pytest.mark.parametrize("seed", range(20))
def test_count_errors_equals_cocoevals_own_matches_with_crowds(seed):
    from course_utils.metrics import count_errors

    preds, targets = crowd_case(seed)
    for pred, target in zip(preds, targets):
        target = {k: v for k, v in target.items() if k != "area"}  # counts use every size: no area range
        for threshold in (0.0, 0.5):
            assert count_errors(pred, target, threshold, 0.5) == _cocoeval_counts(pred, target, threshold)
