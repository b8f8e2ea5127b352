"""course_utils.data: the validating COCO loader, the shipped splits, the synthetic scenes."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from course_utils.data import (
    CATEGORIES,
    CocoDetection,
    DatasetError,
    SceneConfig,
    SyntheticShapes,
    collate_detection,
    render_scene,
    write_coco_split,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = [REPO / "data" / "val", REPO / "data" / "test"]


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    """A valid three-image COCO folder: tmp/annotations.json + tmp/images/0000{1,2,3}.jpg."""
    write_coco_split(tmp_path, seeds=[1, 2, 3])
    return tmp_path


def read_json(root: Path) -> dict:
    return json.loads((root / "annotations.json").read_text())


def write_json(root: Path, data: dict) -> None:
    (root / "annotations.json").write_text(json.dumps(data))


def load_error(root: Path, read_all: bool = False) -> DatasetError:
    """Build the dataset (and optionally read every sample); return the DatasetError it raised."""
    with pytest.raises(DatasetError) as info:
        ds = CocoDetection(root / "annotations.json")
        if read_all:
            for i in range(len(ds)):
                ds[i]
    return info.value


def assert_names_file_and_fix(err: Exception, file_name: str, *fix_words: str) -> None:
    """``file_name`` and every fix word appear in the message; the words are looked for with the
    folders of every path stripped, so the test's own tmp folder name cannot supply them."""
    msg = str(err)
    text = re.sub(r"(/[^/\s:']+)+/", "", msg)
    assert file_name in text, f"error does not name {file_name!r}: {msg}"
    for word in fix_words:
        assert word.lower() in text.lower(), f"error does not say {word!r}: {msg}"


# --------------------------------------------------------------------------- #
# Bad inputs -> DatasetError naming the file and the fix
# --------------------------------------------------------------------------- #
def test_malformed_json(coco_dir):
    ann = coco_dir / "annotations.json"
    text = ann.read_text()
    ann.write_text(text[: len(text) // 2])  # truncated mid-write
    err = load_error(coco_dir)
    assert_names_file_and_fix(err, "annotations.json", "not valid JSON", "regenerate")


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DatasetError) as info:
        CocoDetection(tmp_path / "nope.json")
    assert_names_file_and_fix(info.value, "nope.json", "not found", "path")


@pytest.mark.parametrize("key", ["annotations", "images", "categories"])
def test_json_without_required_list(coco_dir, key):
    data = read_json(coco_dir)
    del data[key]
    write_json(coco_dir, data)
    err = load_error(coco_dir)
    assert_names_file_and_fix(err, "annotations.json", f"missing list '{key}'", "needs")


def test_json_not_an_object(coco_dir):
    write_json(coco_dir, [1, 2, 3])  # type: ignore[arg-type]
    err = load_error(coco_dir)
    assert_names_file_and_fix(err, "annotations.json", "expected a JSON object")


def test_missing_image_file(coco_dir):
    (coco_dir / "images" / "00002.jpg").unlink()
    err = load_error(coco_dir)
    assert_names_file_and_fix(err, "00002.jpg", "missing", "remove image id 2")


def test_corrupt_image_bytes(coco_dir):
    (coco_dir / "images" / "00003.jpg").write_bytes(b"this is not a JPEG" * 20)
    ds = CocoDetection(coco_dir / "annotations.json")  # structure is fine: loads
    ds[0], ds[1]  # the good images still read
    with pytest.raises(DatasetError) as info:
        ds[2]
    assert_names_file_and_fix(info.value, "00003.jpg", "cannot decode", "replace")
    with pytest.raises(DatasetError) as info:
        ds.verify_images()
    assert_names_file_and_fix(info.value, "00003.jpg", "corrupt", "replace")


def test_truncated_image(coco_dir):
    path = coco_dir / "images" / "00001.jpg"
    path.write_bytes(path.read_bytes()[:200])  # a real JPEG header, cut short
    ds = CocoDetection(coco_dir / "annotations.json")
    with pytest.raises(DatasetError) as info:
        ds.verify_images()
    assert_names_file_and_fix(info.value, "00001.jpg", "replace")


def test_image_size_disagrees_with_json(coco_dir):
    data = read_json(coco_dir)
    data["images"][1]["width"] = 256
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 2]
    write_json(coco_dir, data)
    ds = CocoDetection(coco_dir / "annotations.json")
    with pytest.raises(DatasetError) as info:
        ds.verify_images()
    assert_names_file_and_fix(info.value, "00002.jpg", "128x128", "width")


@pytest.mark.parametrize("index,value", [(2, 0.0), (3, 0.0), (2, -5.0), (3, -0.5)])
def test_box_with_non_positive_size(coco_dir, index, value):
    data = read_json(coco_dir)
    data["annotations"][1]["bbox"][index] = value
    ann_id = data["annotations"][1]["id"]
    write_json(coco_dir, data)
    err = load_error(coco_dir)
    assert_names_file_and_fix(err, "annotations.json", f"annotation id {ann_id}", "width and height must be > 0", "fix or delete")


@pytest.mark.parametrize("index,value", [(0, -10.0), (1, -10.0), (0, 120.0), (1, 125.0)])
def test_box_outside_image(coco_dir, index, value):
    data = read_json(coco_dir)
    data["annotations"][0]["bbox"][index] = value
    write_json(coco_dir, data)
    err = load_error(coco_dir)
    assert_names_file_and_fix(err, "annotations.json", "annotation id 1", "outside", "clip")


@pytest.mark.parametrize("bbox", [[1, 2, 3], "10 10 5 5", [1, 2, "3", 4], [1.0, 2.0, float("nan"), 4.0]])
def test_box_not_four_numbers(coco_dir, bbox):
    data = read_json(coco_dir)
    data["annotations"][0]["bbox"] = bbox
    (coco_dir / "annotations.json").write_text(json.dumps(data))  # json writes NaN for nan
    err = load_error(coco_dir)
    assert_names_file_and_fix(err, "annotations.json", "annotation id 1")
    assert "4 numbers" in str(err) or "non-finite" in str(err)


def test_unknown_category_id(coco_dir):
    data = read_json(coco_dir)
    data["annotations"][0]["category_id"] = 99
    write_json(coco_dir, data)
    err = load_error(coco_dir)
    assert_names_file_and_fix(err, "annotations.json", "unknown category_id 99", "add the category")


def test_annotation_with_unknown_image_id(coco_dir):
    data = read_json(coco_dir)
    data["annotations"][-1]["image_id"] = 42
    write_json(coco_dir, data)
    err = load_error(coco_dir)
    assert_names_file_and_fix(err, "annotations.json", "unknown image_id 42", "add the image", "remove this annotation")


def test_image_entry_missing_keys(coco_dir):
    data = read_json(coco_dir)
    del data["images"][0]["file_name"]
    write_json(coco_dir, data)
    err = load_error(coco_dir)
    assert_names_file_and_fix(err, "annotations.json", "needs 'id', 'file_name'")


# --------------------------------------------------------------------------- #
# A valid folder
# --------------------------------------------------------------------------- #
def test_valid_folder_loads(coco_dir):
    data = read_json(coco_dir)
    ds = CocoDetection(coco_dir / "annotations.json")
    assert len(ds) == 3
    ds.verify_images()
    for i, img in enumerate(data["images"]):
        image, target = ds[i]
        # image: float (3, H, W) in [0, 1], equal to the file decoded by PIL
        assert image.dtype == torch.float32 and image.shape == (3, img["height"], img["width"])
        assert 0.0 <= image.min() and image.max() <= 1.0
        pixels = np.asarray(Image.open(coco_dir / "images" / img["file_name"]).convert("RGB"))
        torch.testing.assert_close(image, torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1))
        # boxes: xyxy, converted from the JSON's xywh
        anns = [a for a in data["annotations"] if a["image_id"] == img["id"]]
        expected = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float64).reshape(-1, 4)
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (len(anns), 4)
        np.testing.assert_allclose(target["boxes"].numpy(), expected, rtol=0, atol=1e-4)
        assert target["labels"].dtype == torch.int64
        assert target["labels"].tolist() == [a["category_id"] for a in anns]  # ids are already 1..3
        assert target["image_id"] == img["id"]


def test_labels_are_contiguous_for_arbitrary_category_ids(coco_dir):
    """Category ids 7, 30, 12 become labels 1, 3, 2 (sorted by id); label_to_category_id maps back."""
    data = read_json(coco_dir)
    remap = {1: 7, 2: 30, 3: 12}
    data["categories"] = [{"id": remap[c["id"]], "name": c["name"]} for c in data["categories"]]
    for a in data["annotations"]:
        a["category_id"] = remap[a["category_id"]]
    write_json(coco_dir, data)
    ds = CocoDetection(coco_dir / "annotations.json")
    assert ds.label_to_category_id == {1: 7, 2: 12, 3: 30}
    assert [c["id"] for c in ds.categories] == [7, 12, 30]
    seen = []
    for i, img in enumerate(data["images"]):
        _, target = ds[i]
        got = [ds.label_to_category_id[int(k)] for k in target["labels"]]
        assert got == [a["category_id"] for a in data["annotations"] if a["image_id"] == img["id"]]
        seen += target["labels"].tolist()
    assert set(seen) <= {1, 2, 3}


def test_image_without_annotations_gives_empty_target(coco_dir):
    data = read_json(coco_dir)
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 1]
    write_json(coco_dir, data)
    _, target = CocoDetection(coco_dir / "annotations.json")[0]
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64


def test_write_coco_split_format(coco_dir):
    data = read_json(coco_dir)
    assert [img["id"] for img in data["images"]] == [1, 2, 3]
    assert [img["seed"] for img in data["images"]] == [1, 2, 3]
    assert data["categories"] == CATEGORIES
    assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))
    for img in data["images"]:
        _, objects = render_scene(img["seed"])
        anns = [a for a in data["annotations"] if a["image_id"] == img["id"]]
        assert len(anns) == len(objects)
        for a, o in zip(anns, objects):
            x1, y1, x2, y2 = o["bbox"]
            assert a["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.011)
            assert a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3], abs=0.01)
            assert a["category_id"] == o["category_id"] and a["iscrowd"] == 0


# --------------------------------------------------------------------------- #
# The shipped splits
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("root", SHIPPED, ids=lambda p: p.name)
def test_shipped_split(root):
    ds = CocoDetection(root / "annotations.json")
    ds.verify_images()
    data = read_json(root)
    assert len(ds) == len(data["images"]) > 0
    assert len(ds.categories) >= 3
    per_image = Counter(a["image_id"] for a in data["annotations"])
    counts = [per_image.get(img["id"], 0) for img in data["images"]]
    assert min(counts) >= 1 and max(counts) <= 6
    min_sides = [min(a["bbox"][2], a["bbox"][3]) for a in data["annotations"]]
    assert sum(s < 16 for s in min_sides) >= 10, "expected some small objects (min side < 16 px)"
    labels = Counter()
    for i in range(0, len(ds), 25):
        image, target = ds[i]
        assert image.shape[0] == 3 and image.dtype == torch.float32
        assert 1 <= len(target["labels"]) <= 6
        labels.update(target["labels"].tolist())
    assert set(labels) <= set(range(1, len(ds.categories) + 1))


@pytest.mark.parametrize("root", SHIPPED, ids=lambda p: p.name)
def test_shipped_images_are_the_rendered_scenes(root):
    """JSON and JPEGs line up: each image is (up to JPEG loss) render_scene(seed), with its boxes."""
    ds = CocoDetection(root / "annotations.json")
    for i in (0, len(ds) // 2, len(ds) - 1):
        seed = ds.images[i]["seed"]
        pixels, objects = render_scene(seed)
        image, target = ds[i]
        diff = (image - torch.from_numpy(pixels).permute(2, 0, 1).float() / 255).abs().mean()
        assert diff < 0.05
        np.testing.assert_allclose(target["boxes"].numpy(), np.array([o["bbox"] for o in objects]), atol=0.02)


def test_val_and_test_seeds_do_not_overlap():
    seeds = [{img["seed"] for img in read_json(root)["images"]} for root in SHIPPED]
    assert not seeds[0] & seeds[1]
    assert min(min(s) for s in seeds) >= 1_000_000  # disjoint from any SyntheticShapes train seed


# --------------------------------------------------------------------------- #
# Rendering and the synthetic train split
# --------------------------------------------------------------------------- #
def test_render_scene_is_deterministic():
    a_pixels, a_objects = render_scene(123)
    b_pixels, b_objects = render_scene(123)
    assert a_pixels.dtype == np.uint8 and a_pixels.shape == (128, 128, 3)
    np.testing.assert_array_equal(a_pixels, b_pixels)
    assert a_objects == b_objects


def test_render_scene_different_seeds_differ():
    scenes = [render_scene(s) for s in range(5)]
    for i in range(5):
        for j in range(i + 1, 5):
            assert not np.array_equal(scenes[i][0], scenes[j][0])
            assert scenes[i][1] != scenes[j][1]


def test_render_scene_objects_respect_config():
    config = SceneConfig(image_size=96, min_objects=2, max_objects=4, min_size=12.0, max_size=30.0)
    for seed in range(10):
        pixels, objects = render_scene(seed, config)
        assert pixels.shape == (96, 96, 3)
        assert 1 <= len(objects) <= 4
        for o in objects:
            x1, y1, x2, y2 = o["bbox"]
            assert -0.01 <= x1 < x2 <= 96.01 and -0.01 <= y1 < y2 <= 96.01
            assert max(x2 - x1, y2 - y1) <= 30.0 + 0.02
            assert o["category_id"] in {c["id"] for c in CATEGORIES}


def test_synthetic_shapes_sample_format():
    ds = SyntheticShapes(4, seed=10)
    assert len(ds) == 4
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.dtype == torch.float32 and image.shape == (3, 128, 128)
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert target["boxes"].dtype == torch.float32 and target["boxes"].ndim == 2 and target["boxes"].shape[1] == 4
        assert target["labels"].dtype == torch.int64 and len(target["labels"]) == len(target["boxes"]) >= 1
        assert set(target["labels"].tolist()) <= {1, 2, 3}
        assert isinstance(target["image_id"], int)
        # it is render_scene(seed + index)
        pixels, objects = render_scene(10 + i)
        torch.testing.assert_close(image, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)
        torch.testing.assert_close(target["boxes"], torch.tensor([o["bbox"] for o in objects], dtype=torch.float32))
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(ValueError):
        SyntheticShapes(10, seed=999_995)


def test_collate_detection_keeps_lists():
    ds = SyntheticShapes(3, seed=0)
    images, targets = collate_detection([ds[0], ds[1], ds[2]])
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 3
    assert targets[1]["image_id"] == 1
