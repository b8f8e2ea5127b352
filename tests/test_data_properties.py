"""Property-based tests of course_utils.data.CocoDetection (hypothesis, the "ci" profile of conftest.py).

1. Random mutations of a small valid COCO file (a field's type or value changed, keys
   deleted, entries duplicated, NaN/inf/negative/huge/tiny numbers, boxes outside the
   image, odd file names): the loader either returns samples that are all valid, or
   raises a DatasetError naming the file. No other exception may escape.
2. Random images in every PIL mode and several formats: each loads as float32
   (3, H, W) in [0, 1] with the documented scaling, or is refused with a DatasetError
   naming the file and its mode -- and modes the loader documents as readable are
   never refused.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st
from PIL import Image

from course_utils.data import CocoDetection, DatasetError

# --------------------------------------------------------------------------- #
# 1. Mutated COCO files
# --------------------------------------------------------------------------- #
BASE: dict[str, Any] = {
    "images": [
        {"id": 1, "file_name": "a.png", "width": 16, "height": 16},
        {"id": 2, "file_name": "b.png", "width": 24, "height": 20},
        {"id": 3, "file_name": "sub/c.png", "width": 8, "height": 8},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 7, "bbox": [0, 0, 24, 20]},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [10.5, 3.25, 2, 7.5]},
    ],
    "categories": [{"id": 1, "name": "x"}, {"id": 7, "name": "y"}],
}
ABS_OUTSIDE, ABS_INSIDE = "<absolute path of ../outside.png>", "<absolute path of a.png>"
FILE_NAMES = ["a.png", "b.png", "sub/c.png", "sub", "../outside.png", "../images/a.png", "sub/../a.png", "./a.png",
              "link.png", "", ".", "..", "a.png\x00", "nope.png", "/", "x" * 300, ABS_OUTSIDE, ABS_INSIDE]
NUMBERS = st.one_of(
    st.integers(-3, 40), st.integers(), st.floats(),
    st.sampled_from([0, -0.0, 1e-30, 1e-45, 1e30, 10 ** 400, 2 ** 53 + 1, 2 ** 24, 16, 16.0, 15.9999, 16.0001, 24.0005]),
)
VALUES = st.one_of(
    NUMBERS, st.none(), st.booleans(), st.text(max_size=4), st.sampled_from(FILE_NAMES),
    st.lists(NUMBERS, min_size=3, max_size=5), st.dictionaries(st.sampled_from(["id", "x"]), NUMBERS, max_size=2),
)


#: plausible values per field: mostly valid, often at an edge (a box at the border, a tiny side)
COORDS = st.one_of(st.floats(0, 8), st.sampled_from([0, 1e-30, 1e-7, 1e-3, 2.5, 15.9999, 16, 16.0001, 20, 24.0005, -0.0005]))
PLAUSIBLE = {
    "bbox": st.lists(COORDS, min_size=4, max_size=4),
    "width": st.sampled_from([8, 16, 20, 24]), "height": st.sampled_from([8, 16, 20, 24]),
    "id": st.integers(4, 10 ** 12), "image_id": st.sampled_from([1, 2, 3, 1]), "category_id": st.sampled_from([1, 7]),
    "file_name": st.sampled_from(["a.png", "b.png", "sub/c.png", "./a.png", "sub/../b.png", ABS_INSIDE, "../outside.png"]),
}


def refusal_kind(msg: str) -> str:
    """A short label for a DatasetError message (for hypothesis' statistics)."""
    kinds = ["duplicate", "outside the image folder", "float32", "outside the", "degenerate", "non-finite", "4 numbers",
             "integer", "max_pixels", "missing", "not a list", "expected a JSON object", "needs", "has no 'id'",
             "must be an object", "is a folder", "cannot access", "unknown", "file_name", "image is"]
    return next((kind for kind in kinds if kind in msg), "other: " + msg[-60:])


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    """root/images/{a,b,sub/c}.png (the sizes of BASE), a folder, a symlink leading out, root/outside.png."""
    root = tmp_path_factory.mktemp("coco")
    (root / "images" / "sub").mkdir(parents=True)
    for img in BASE["images"]:
        Image.new("RGB", (img["width"], img["height"]), (img["id"] * 40, 7, 200)).save(root / "images" / img["file_name"])
    Image.new("RGB", (16, 16)).save(root / "outside.png")
    (root / "images" / "link.png").symlink_to(root / "outside.png")
    return root


def nodes(doc: Any, path: tuple = ()) -> list[tuple]:
    """The path (keys and indices from the root) of every value in ``doc``."""
    children = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    return [path] + [p for key, child in children for p in nodes(child, path + (key,))]


def plausible_change(doc: Any, data: st.DataObject) -> Any:
    """Set one field that has a plausible-value strategy (a box coordinate, a size, an id, a file name)."""
    def is_field(path: tuple) -> bool:
        in_box = path[-2:-1] == ("bbox",)
        return in_box or (bool(path) and path[-1] in PLAUSIBLE and isinstance(_get(doc, path[:-1]), dict))

    path = data.draw(st.sampled_from([p for p in nodes(doc) if is_field(p)]), label="field")
    strategy = COORDS if path[-2:-1] == ("bbox",) else PLAUSIBLE[path[-1]]
    _get(doc, path[:-1])[path[-1]] = data.draw(strategy, label="plausible value")
    return doc


def mutate(doc: Any, data: st.DataObject) -> Any:
    """One random change of ``doc`` (returned; changed in place where possible)."""
    everything = nodes(doc)
    leaves = [p for p in everything if not isinstance(_get(doc, p), (dict, list))]
    # mostly a scalar field (a structural change mostly ends in the same early refusal)
    path = data.draw(st.sampled_from(leaves if leaves and data.draw(st.integers(0, 3)) else everything), label="path")
    op = data.draw(st.sampled_from(["replace", "replace", "replace", "nudge", "delete", "duplicate"]), label="op")
    if not path:
        return data.draw(VALUES) if op == "replace" else doc
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key, value = path[-1], parent[path[-1]]
    if op == "delete":
        del parent[key]
    elif op == "duplicate" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(value))  # same ids twice
    elif op == "nudge" and isinstance(value, (int, float)) and not isinstance(value, bool):
        parent[key] = data.draw(st.sampled_from(nudges(value)), label="nudged")
    elif isinstance(parent, dict) and key in PLAUSIBLE and data.draw(st.integers(0, 2), label="plausible"):
        parent[key] = data.draw(PLAUSIBLE[key], label="plausible value")
    elif isinstance(key, int) and path[-2:-1] == ("bbox",) and data.draw(st.integers(0, 2), label="plausible"):
        parent[key] = data.draw(COORDS, label="plausible coordinate")
    else:
        parent[key] = data.draw(VALUES, label="value")
    return doc


def nudges(value: int | float) -> list[Any]:
    """Values near ``value`` or of another type: sign, tiny and large changes, str, list, NaN, inf."""
    out: list[Any] = [-value, str(value), [value], float("nan"), float("inf"), value * 10 ** 6]
    for change in (lambda v: v + 1e-30, lambda v: v * 1e-30, lambda v: v + 0.5, float):
        try:
            out.append(change(value))
        except OverflowError:  # an int too large for a float
            pass
    return out


def resolve_file_names(doc: Any, root: Path) -> None:
    """Swap the placeholder file names for absolute paths in this run's folder."""
    for path in nodes(doc):
        if path and isinstance(value := _get(doc, path), str) and value in (ABS_OUTSIDE, ABS_INSIDE):
            _get(doc, path[:-1])[path[-1]] = str(root / "outside.png" if value == ABS_OUTSIDE else root / "images" / "a.png")


def _get(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def check_sample(ds: CocoDetection, doc: dict[str, Any], index: int, image: torch.Tensor, target: dict[str, Any]) -> None:
    """Everything the loader promises about one sample."""
    img = ds.images[index]
    width, height = img["width"], img["height"]
    assert image.dtype == torch.float32 and image.shape == (3, height, width)
    assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    root = (ds.image_dir).resolve()
    assert (ds.image_dir / img["file_name"]).resolve().is_relative_to(root)  # never read from outside the folder
    boxes, labels = target["boxes"], target["labels"]
    assert boxes.dtype == torch.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert labels.dtype == torch.int64 and labels.shape == (len(boxes),)
    assert torch.isfinite(boxes).all()
    x1, y1, x2, y2 = boxes.unbind(1)
    assert (x2 > x1).all() and (y2 > y1).all() and ((x2 - x1) * (y2 - y1) > 0).all()
    tol = 1e-3 + 2 * max(width, height) * 2.0 ** -23  # the loader's tolerance, plus float32 rounding
    assert (x1 >= -tol).all() and (y1 >= -tol).all() and (x2 <= width + tol).all() and (y2 <= height + tol).all()
    assert ((labels >= 1) & (labels <= len(ds.categories))).all()
    assert target["image_id"] == img["id"] and isinstance(target["image_id"], int)
    # the targets are exactly this image's annotations, in file order (nothing merged from other images)
    anns = [a for a in doc["annotations"] if a["image_id"] == img["id"]]
    assert [ds.label_to_category_id[int(k)] for k in labels] == [a["category_id"] for a in anns]
    expected = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=torch.float32)
    assert torch.equal(boxes, expected.reshape(-1, 4))


@given(data=st.data())
def test_mutated_coco_file_loads_valid_samples_or_raises_dataset_error(coco_root, data):
    doc = copy.deepcopy(BASE)
    # half the examples only set fields to plausible values (mostly valid files with edge cases:
    # boxes at the border, tiny sides, ...), half apply arbitrary mutations
    change = plausible_change if data.draw(st.booleans(), label="plausible only") else mutate
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        doc = change(doc, data)
    resolve_file_names(doc, coco_root)
    ann = coco_root / "mutated.json"
    ann.write_text(json.dumps(doc))
    try:
        ds = CocoDetection(ann, image_dir=coco_root / "images")
    except DatasetError as err:
        assert "mutated.json" in str(err) or str(coco_root / "images") in str(err), str(err)
        event("refused on construction: " + refusal_kind(str(err)))
        return
    ids = [c["id"] for c in ds.categories]
    assert ids == sorted(set(ids))  # unique, sorted
    for i in range(len(ds)):
        try:
            image, target = ds[i]
        except DatasetError as err:  # e.g. width/height disagree with the file
            assert str(ds.image_dir) in str(err), str(err)
            event("a sample refused: " + refusal_kind(str(err)))
            continue
        check_sample(ds, doc, i, image, target)
    event(f"loaded ({len(ds)} images, {sum(len(o['boxes']) for o in ds._objects.values())} boxes)")


# --------------------------------------------------------------------------- #
# 2. Images in every PIL mode
# --------------------------------------------------------------------------- #
MODES = ["1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV",
         "I;16", "I;16B", "I;16L", "I;16N", "I", "F", "La", "RGBa"]
FORMATS = {"PNG": ".png", "TIFF": ".tif", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "PPM": ".ppm", "WEBP": ".webp"}
#: documented as readable: never refused (16-bit 'I' comes from PNG/PGM only)
READABLE = {"1", "L", "P", "RGB", "RGBA", "RGBX", "LA", "PA", "CMYK", "YCbCr", "LAB", "HSV", "I;16", "I;16B", "I;16L", "I;16N"}
SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}


def _saves(mode: str, fmt: str) -> bool:
    try:
        Image.new(mode, (2, 2)).save(io.BytesIO(), fmt)
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


SAVABLE = {mode: [fmt for fmt in FORMATS if _saves(mode, fmt)] for mode in MODES}
SAVABLE = {mode: formats for mode, formats in SAVABLE.items() if formats}  # La, RGBa, HSV, ...: no file holds them


@st.composite
def images(draw: st.DrawFn) -> tuple[Image.Image, str]:
    """A small image in a random mode, with random pixels, and a format that can store it."""
    mode = draw(st.sampled_from(sorted(SAVABLE)), label="mode")
    fmt = draw(st.sampled_from(SAVABLE[mode]), label="format")
    width, height = draw(st.integers(1, 12), label="width"), draw(st.integers(1, 12), label="height")
    if mode == "F" and draw(st.booleans(), label="unit floats"):  # also reach the accepted case
        values = draw(st.lists(st.floats(0, 1, width=32), min_size=width * height, max_size=width * height))
        return Image.fromarray(np.array(values, np.float32).reshape(height, width)), fmt
    size = len(Image.new(mode, (width, height)).tobytes())
    return Image.frombytes(mode, (width, height), draw(st.binary(min_size=size, max_size=size), label="pixels")), fmt


def expected_pixels(pil: Image.Image) -> np.ndarray | None:
    """What the loader documents for a file PIL opens as ``pil``: (H, W, 3) in [0, 1], or None if it refuses."""
    if pil.mode in READABLE - SIXTEEN_BIT:
        return np.asarray(pil.convert("RGB"), np.float32) / 255
    if pil.mode in SIXTEEN_BIT or (pil.mode == "I" and pil.format in ("PNG", "PPM")):
        gray = np.asarray(pil).astype(np.float32) / np.float32(65535)
    elif pil.mode == "F":
        gray = np.asarray(pil, np.float32)
    else:
        return None
    if not (np.isfinite(gray).all() and gray.min() >= 0 and gray.max() <= 1):
        return None
    return np.repeat(gray[..., None], 3, axis=2)


@given(image_and_format=images())
def test_any_image_mode_loads_scaled_into_unit_rgb_or_is_refused_naming_its_mode(tmp_path_factory, image_and_format):
    pil, fmt = image_and_format
    root = tmp_path_factory.mktemp("mode")
    (root / "images").mkdir()
    name = "x" + FORMATS[fmt]
    pil.save(root / "images" / name, fmt)
    doc = {"images": [{"id": 1, "file_name": name, "width": pil.width, "height": pil.height}], "annotations": [],
           "categories": []}
    (root / "a.json").write_text(json.dumps(doc))
    with Image.open(root / "images" / name) as stored:
        mode, want = stored.mode, expected_pixels(stored)
    try:
        image = CocoDetection(root / "a.json")[0][0]
    except DatasetError as err:
        assert want is None, f"documented-readable {mode} ({fmt}) refused: {err}"
        assert name in str(err) and repr(mode) in str(err), str(err)
        event(f"refused: {pil.mode} {fmt}" + (f" (opens as {mode})" if pil.mode != mode else ""))
        return
    assert want is not None, f"{mode} ({fmt}) should have been refused"
    assert image.dtype == torch.float32 and image.shape == (3, pil.height, pil.width)
    assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), want)
    event(f"loaded: {pil.mode} {fmt}" + (f" (opens as {mode})" if pil.mode != mode else ""))
