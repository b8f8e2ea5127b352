"""course_utils.data: what the COCO loader and the scene generator refuse, and how.

Every bad input must end in a :class:`DatasetError` (or ``ValueError`` for the
generator's knobs) that names the offending value and says the fix -- never a
``TypeError``/``KeyError`` from deep inside numpy, PIL or torch, and never a
silently wrong sample.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from course_utils.data import CocoDetection, DatasetError, SceneConfig, SyntheticShapes


# --------------------------------------------------------------------------- #
# Helpers: a one-image COCO folder with a 32x32 'a.png'
# --------------------------------------------------------------------------- #
def I(**k: Any) -> dict[str, Any]:  # noqa: E743 - short names keep the cases readable
    return {"id": 1, "file_name": "a.png", "width": 32, "height": 32, **k}


def A(**k: Any) -> dict[str, Any]:
    return {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], **k}


def mk(root: Path, images: Any = None, anns: Any = None, cats: Any = None, doc: Any = None,
       files: dict[str, Any] | None = None) -> Path:
    """Write root/images/<files> and root/a.json; return the JSON's path."""
    (root / "images").mkdir(exist_ok=True)
    for name, image in (files if files is not None else {"a.png": (32, 32)}).items():
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        (image if isinstance(image, Image.Image) else Image.new("RGB", image)).save(root / "images" / name)
    if doc is None:
        doc = {"images": [I()] if images is None else images, "annotations": [A()] if anns is None else anns,
               "categories": [{"id": 1}] if cats is None else cats}
    (root / "a.json").write_text(json.dumps(doc))
    return root / "a.json"


def error_of(ann_file: Path, read: bool = False, **kwargs: Any) -> str:
    """The DatasetError message from building (and with ``read``, reading) the dataset."""
    with pytest.raises(DatasetError) as info:
        ds = CocoDetection(ann_file, **kwargs)
        if read:
            for i in range(len(ds)):
                ds[i]
    return str(info.value)


def assert_says(msg: str, *words: str) -> None:
    """Every word appears in ``msg`` with the folders of its paths stripped (so the test's own
    tmp folder name cannot supply them)."""
    text = re.sub(r"(/[^/\s:']+)+/", "", msg).lower()
    for word in words:
        assert word.lower() in text, f"error does not say {word!r}: {msg}"


# --------------------------------------------------------------------------- #
# 1. Boxes must survive float32
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("bbox", [
    [2, 2, 1e-30, 1e-30],  # x + w == x in float32
    [2, 2, 10, 1e-9],  # height vanishes in float32
    [0, 0, 1e-30, 1e-30],  # sides survive, area underflows to 0
])
def test_box_with_zero_area_in_float32(tmp_path, bbox):
    msg = error_of(mk(tmp_path, anns=[A(id=7, bbox=bbox)]))
    assert_says(msg, "annotation id 7", "float32", "delete")


def test_tiny_but_representable_box_loads(tmp_path):
    _, target = CocoDetection(mk(tmp_path, anns=[A(bbox=[0, 0, 1e-3, 1e-3])]))[0]
    assert (target["boxes"][:, 2:] > target["boxes"][:, :2]).all()


# --------------------------------------------------------------------------- #
# 2. Image modes: right scaling into [0, 1] RGB, or a clear refusal
# --------------------------------------------------------------------------- #
def load_image(tmp_path: Path, image: Image.Image, name: str = "a.png") -> torch.Tensor:
    ann = mk(tmp_path, images=[I(file_name=name, width=image.width, height=image.height)], anns=[], files={name: image})
    return CocoDetection(ann)[0][0]


def refusal_of(tmp_path: Path, image: Image.Image, name: str) -> str:
    ann = mk(tmp_path, images=[I(file_name=name, width=image.width, height=image.height)], anns=[], files={name: image})
    return error_of(ann, read=True)


def test_16bit_png_is_scaled_by_65535_not_clipped(tmp_path):
    image = load_image(tmp_path, Image.fromarray(np.full((32, 32), 30000, np.uint16)))
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert image.mean().item() == pytest.approx(30000 / 65535, abs=1e-6)


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16bit_tiff_any_byte_order(tmp_path, mode):
    values = np.array([[0, 1000, 30000, 65535]], np.uint16)
    pil = Image.frombytes(mode, (4, 1), values.astype(">u2" if mode.endswith("B") else "<u2").tobytes())
    image = load_image(tmp_path, pil, "a.tif")
    np.testing.assert_allclose(image[0, 0].numpy(), values[0] / 65535, atol=1e-7)
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])


def test_16bit_pgm_opened_as_mode_I_is_scaled_by_65535(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.pgm").write_bytes(b"P5\n2 1\n65535\n" + np.array([30000, 65535], ">u2").tobytes())
    assert Image.open(tmp_path / "images" / "a.pgm").mode == "I"
    ann = mk(tmp_path, images=[I(file_name="a.pgm", width=2, height=1)], anns=[], files={})
    np.testing.assert_allclose(CocoDetection(ann)[0][0][:, 0].numpy(), [[30000 / 65535, 1.0]] * 3, atol=1e-7)


def test_32bit_integer_tiff_is_refused(tmp_path):
    msg = refusal_of(tmp_path, Image.fromarray(np.array([[0, 70000]], np.int32)), "a.tif")
    assert_says(msg, "a.tif", "mode 'I'", "range", "16-bit")


def test_float_image_in_unit_range_loads_as_is(tmp_path):
    values = np.array([[0.0, 0.25, 1.0]], np.float32)
    image = load_image(tmp_path, Image.fromarray(values), "a.tif")
    np.testing.assert_array_equal(image.numpy(), np.repeat(values[None], 3, axis=0))


@pytest.mark.parametrize("values", [[0.0, 2.0], [-0.5, 0.5], [0.5, float("nan")]])
def test_float_image_outside_unit_range_is_refused(tmp_path, values):
    msg = refusal_of(tmp_path, Image.fromarray(np.array([values], np.float32)), "a.tif")
    assert_says(msg, "a.tif", "mode 'F'", "[0, 1]", "rescale")


@pytest.mark.parametrize("mode", ["1", "L", "P", "LA", "RGB", "RGBA", "CMYK"])
def test_8bit_modes_load_like_pil_converts_them(tmp_path, mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8))
    pil = rgb.convert(mode)
    name = "a.tif" if mode == "CMYK" else "a.png"
    image = load_image(tmp_path, pil, name)
    expected = np.asarray(Image.open(tmp_path / "images" / name).convert("RGB"), np.float32) / 255
    assert image.shape == (3, 5, 7)
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected, atol=0)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_dropped_not_composited(tmp_path, mode):
    """A fully transparent pixel keeps its stored colour (documented: alpha is ignored)."""
    color = (200, 100, 50, 0) if mode == "RGBA" else (200, 0)
    image = load_image(tmp_path, Image.new(mode, (2, 2), color))
    want = [200, 100, 50] if mode == "RGBA" else [200, 200, 200]
    np.testing.assert_allclose(image[:, 0, 0].numpy(), np.array(want) / 255, atol=1e-7)


def test_palette_transparency_is_dropped(tmp_path):
    pil = Image.new("P", (2, 1))
    pil.putpalette([10, 20, 30, 200, 100, 50])
    pil.putpixel((1, 0), 1)
    pil.info["transparency"] = 1
    image = load_image(tmp_path, pil)
    np.testing.assert_allclose(image[:, 0, 1].numpy(), np.array([200, 100, 50]) / 255, atol=1e-7)


# --------------------------------------------------------------------------- #
# 3. Duplicate ids
# --------------------------------------------------------------------------- #
def test_duplicate_image_id(tmp_path):
    ann = mk(tmp_path, images=[I(), I(file_name="b.png")], files={"a.png": (32, 32), "b.png": (32, 32)})
    assert_says(error_of(ann), "duplicate image id 1", "unique")


def test_duplicate_category_id(tmp_path):
    msg = error_of(mk(tmp_path, cats=[{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]))
    assert_says(msg, "duplicate category id 1", "unique")


def test_duplicate_annotation_id(tmp_path):
    msg = error_of(mk(tmp_path, anns=[A(), A(bbox=[5, 5, 3, 3])]))
    assert_says(msg, "duplicate annotation id 1", "unique")


# --------------------------------------------------------------------------- #
# 4. Wrong types and values: DatasetError naming the field and the fix
# --------------------------------------------------------------------------- #
NAN, INF = float("nan"), float("inf")
BAD_DOCS = {
    "width is a string": (dict(images=[I(width="32")]), ["'width'", "'32'", "integer"]),
    "height is a float": (dict(images=[I(height=32.5)]), ["'height'", "32.5", "integer"]),
    "width is NaN": (dict(images=[I(width=NAN)]), ["'width'", "nan"]),
    "width is inf": (dict(images=[I(width=INF)]), ["'width'", "inf"]),
    "width is True": (dict(images=[I(width=True)]), ["'width'", "True", "integer"]),
    "width is 0": (dict(images=[I(width=0)], anns=[]), ["'width'", "0", "positive"]),
    "category without id": (dict(cats=[{"name": "x"}]), ["categor", "'id'"]),
    "category is a string": (dict(cats=["circle"]), ["categor", "'circle'", "object"]),
    "category id is a string": (dict(cats=[{"id": "1"}]), ["categor", "'1'", "integer"]),
    "ids '1' and 2 mixed": (dict(cats=[{"id": "1"}, {"id": 2}]), ["'1'", "integer"]),
    "image id is a string": (dict(images=[I(id="1")], anns=[A(image_id="1")]), ["image", "'1'", "integer"]),
    "file_name is a number": (dict(images=[I(file_name=5)]), ["'file_name'", "5", "string"]),
    "file_name is empty": (dict(images=[I(file_name="")]), ["'file_name'", "empty"]),
    "file_name has a NUL byte": (dict(images=[I(file_name="a.png\x00")]), ["'file_name'", "null"]),
    "image id is a list": (dict(images=[I(id=[1])]), ["image", "[1]", "integer"]),
    "image id is True": (dict(images=[I(id=True)], anns=[A(image_id=True)]), ["image", "True", "integer"]),
    "image entry is a list": (dict(images=[[1, "a.png", 32, 32]]), ["images[0]", "object"]),
    "annotation is a list": (dict(anns=[[1, 1, 1, [2, 2, 10, 10]]]), ["annotations[0]", "object"]),
    "annotation id is a list": (dict(anns=[A(id=[1])]), ["annotation", "[1]", "integer"]),
    "annotation without id": (dict(anns=[{"image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}]), ["annotations[0]", "'id'"]),
    "image_id is a list": (dict(anns=[A(image_id=[1])]), ["annotation id 1", "image_id", "[1]"]),
    "image_id is True": (dict(anns=[A(image_id=True)]), ["annotation id 1", "image_id", "True"]),
    "image_id is 1.0": (dict(anns=[A(image_id=1.0)]), ["annotation id 1", "image_id", "1.0"]),
    "category_id is True": (dict(anns=[A(category_id=True)]), ["annotation id 1", "category_id", "True"]),
    "category_id is a dict": (dict(anns=[A(category_id={})]), ["annotation id 1", "category_id", "{}"]),
    "bbox with a bool": (dict(anns=[A(bbox=[True, 2, 10, 10])]), ["annotation id 1", "4 numbers"]),
    "bbox with inf": (dict(anns=[A(bbox=[2, 2, INF, 10])]), ["annotation id 1", "non-finite"]),
    "bbox with a huge int": (dict(anns=[A(bbox=[2, 2, 10 ** 400, 10])]), ["annotation id 1", "non-finite"]),
    "huge width": (dict(images=[I(width=10 ** 400)]), ["'width'", "max_pixels"]),
}


@pytest.mark.parametrize("case", BAD_DOCS, ids=list(BAD_DOCS))
def test_bad_field_gives_dataset_error_naming_it(tmp_path, case):
    kwargs, words = BAD_DOCS[case]
    assert_says(error_of(mk(tmp_path, **kwargs)), "a.json", *words)


@pytest.mark.parametrize("doc", [None, "text", 3, [], [{"images": []}]])
def test_top_level_not_an_object(tmp_path, doc):
    path = mk(tmp_path)
    path.write_text(json.dumps(doc))
    assert_says(error_of(path), "a.json", "expected a JSON object")


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
@pytest.mark.parametrize("value", ["missing", None, {}, "x"])
def test_top_level_key_missing_or_not_a_list(tmp_path, key, value):
    doc = {"images": [I()], "annotations": [A()], "categories": [{"id": 1}]}
    if value == "missing":
        del doc[key]
    else:
        doc[key] = value
    assert_says(error_of(mk(tmp_path, doc=doc)), "a.json", f"'{key}'", "list")


@pytest.mark.parametrize("text", ['{"images": ' + "[" * 100_000 + "]" * 100_000 + "}",  # RecursionError
                                  '{"images": [], "x": ' + "9" * 5000 + "}"])  # int over Python's 4300 digits
def test_json_python_cannot_parse(tmp_path, text):
    path = mk(tmp_path)
    path.write_text(text)
    assert_says(error_of(path), "a.json", "not valid JSON")


# --------------------------------------------------------------------------- #
# 5. Huge image headers are refused before decoding
# --------------------------------------------------------------------------- #
def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR says width x height, with no pixel data: decoding it would fail."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture
def no_decoding(monkeypatch):
    """Call it to make the test fail from then on if PIL decodes pixels."""
    def load(self):
        raise AssertionError("PIL decoded the pixels")

    def forbid() -> None:
        monkeypatch.setattr(Image.Image, "load", load)
        monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return forbid


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [10_000, 20_000])
def test_huge_header_refused_before_decoding(tmp_path, no_decoding, side):
    ann = mk(tmp_path, anns=[])
    (tmp_path / "images" / "a.png").write_bytes(png_header_only(side, side))
    ds = CocoDetection(ann)
    no_decoding()
    with pytest.raises(DatasetError) as info:
        ds[0]
    size = f"{side}x{side}" if side == 10_000 else f"{side * side} pixels"  # PIL's own limit reports the count
    assert_says(str(info.value), "a.png", size, "32x32", "before decoding")


def test_header_over_max_pixels_refused_before_decoding(tmp_path, no_decoding):
    ann = mk(tmp_path, images=[I(width=32, height=32)], anns=[])
    (tmp_path / "images" / "a.png").write_bytes(png_header_only(64, 64))
    ds = CocoDetection(ann, max_pixels=2000)
    no_decoding()
    with pytest.raises(DatasetError) as info:
        ds[0]
    assert_says(str(info.value), "a.png", "64x64", "max_pixels")


def test_json_size_over_max_pixels_refused_on_construction(tmp_path):
    ann = mk(tmp_path, images=[I(width=10_000, height=10_000)], anns=[])
    assert_says(error_of(ann), "a.json", "image id 1", "10000x10000", "max_pixels")
    assert_says(error_of(mk(tmp_path), max_pixels=100), "image id 1", "32x32", "max_pixels=100")


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "big"])
def test_max_pixels_must_be_a_positive_int(tmp_path, value):
    with pytest.raises(ValueError, match="max_pixels"):
        CocoDetection(mk(tmp_path), max_pixels=value)


# --------------------------------------------------------------------------- #
# 6. file_name stays inside the image folder
# --------------------------------------------------------------------------- #
@pytest.fixture
def outside(tmp_path) -> Path:
    """tmp/outside.png (a real image next to the dataset) and tmp/ds/ (the dataset root)."""
    Image.new("RGB", (32, 32)).save(tmp_path / "outside.png")
    (tmp_path / "ds").mkdir()
    return tmp_path / "outside.png"


@pytest.mark.parametrize("name", ["../../outside.png", "../images/../../outside.png", "ABSOLUTE"])
def test_file_name_outside_the_image_folder(tmp_path, outside, name):
    name = str(outside) if name == "ABSOLUTE" else name
    msg = error_of(mk(tmp_path / "ds", images=[I(file_name=name)]))
    assert repr(name) in msg
    assert_says(msg, "outside", "relative")


def test_symlink_inside_the_image_folder_is_followed_wherever_it_points(tmp_path, outside):
    """git-annex and DVC keep images as symlinks into a store: the dataset owner's links are followed;
    only the *name* in the JSON is confined to the folder."""
    ann = mk(tmp_path / "ds")
    (tmp_path / "ds" / "images" / "link.png").symlink_to(outside)
    doc = json.loads(ann.read_text())
    doc["images"][0]["file_name"] = "link.png"
    ann.write_text(json.dumps(doc))
    image, _ = CocoDetection(ann)[0]
    assert image.shape[0] == 3


def test_file_names_in_subfolders_still_load(tmp_path):
    ann = mk(tmp_path, images=[I(file_name="sub/a.png"), I(id=2, file_name="sub/../b.png")],
             files={"sub/a.png": (32, 32), "b.png": (32, 32)})
    ds = CocoDetection(ann)
    assert len(ds) == 2 and ds[1][0].shape == (3, 32, 32)


def test_file_name_too_long_for_the_file_system(tmp_path):
    assert_says(error_of(mk(tmp_path, images=[I(file_name="x" * 300)])), "'file_name'", "too long", "fix the name")


def test_file_name_that_is_a_folder(tmp_path):
    ann = mk(tmp_path, files={"a.png": (32, 32), "sub/b.png": (32, 32)}, images=[I(file_name="sub")])
    assert_says(error_of(ann), "sub", "not a file")


# --------------------------------------------------------------------------- #
# 7. SceneConfig and SyntheticShapes validate their arguments
# --------------------------------------------------------------------------- #
BAD_CONFIGS = [
    (dict(min_objects=5, max_objects=1), ["min_objects=5", "max_objects=1"]),
    (dict(min_objects=-1), ["min_objects=-1", ">= 0"]),
    (dict(max_objects=2.5), ["max_objects=2.5", "integer"]),
    (dict(max_objects=True), ["max_objects=True", "integer"]),
    (dict(image_size=0), ["image_size=0", ">= 1"]),
    (dict(image_size=128.0), ["image_size=128.0", "integer"]),
    (dict(min_size=-3.0), ["min_size=-3.0", "> 0"]),
    (dict(min_size=0), ["min_size=0", "> 0"]),
    (dict(min_size=30.0, max_size=20.0), ["min_size=30.0", "max_size=20.0"]),
    (dict(max_size=200.0), ["max_size=200.0", "image_size=128"]),
    (dict(max_size=float("nan")), ["max_size=nan"]),
    (dict(max_overlap=1.5), ["max_overlap=1.5", "[0, 1]"]),
    (dict(noise_std=-1.0), ["noise_std=-1.0", ">= 0"]),
    (dict(noise_std="8"), ["noise_std='8'", "number"]),
    (dict(clutter_lines=-2), ["clutter_lines=-2", ">= 0"]),
    (dict(supersample=0), ["supersample=0", ">= 1"]),
]


@pytest.mark.parametrize("kwargs,words", BAD_CONFIGS, ids=[str(k) for k, _ in BAD_CONFIGS])
def test_scene_config_refuses_impossible_values(kwargs, words):
    with pytest.raises(ValueError) as info:
        SceneConfig(**kwargs)
    assert_says(str(info.value), "SceneConfig", *words)


def test_scene_config_accepts_edge_values():
    SceneConfig(image_size=16, min_objects=0, max_objects=0, min_size=16, max_size=16, max_overlap=0,
                noise_std=0, clutter_lines=0, supersample=1)
    SceneConfig(max_objects=np.int64(3), min_size=np.float32(12))  # numpy numbers are numbers


@pytest.mark.parametrize("kwargs,words", [
    (dict(length=10, seed=-5), ["seed=-5", ">= 0"]),
    (dict(length=-1), ["length=-1", ">= 0"]),
    (dict(length=2.0), ["length=2.0", "integer"]),
    (dict(length=10, seed=1.5), ["seed=1.5", "integer"]),
    (dict(length=10, seed=999_995), ["seed + length = 1000005", "1_000_000"]),
    (dict(length=10, config={"image_size": 64}), ["config", "SceneConfig("]),
])
def test_synthetic_shapes_refuses_bad_arguments(kwargs, words):
    with pytest.raises(ValueError) as info:
        SyntheticShapes(**kwargs)
    assert_says(str(info.value), *words)


def test_synthetic_shapes_small_config_renders():
    image, target = SyntheticShapes(1, seed=3, config=SceneConfig(image_size=32, max_size=16))[0]
    assert image.shape == (3, 32, 32)
    assert (target["boxes"] >= -0.01).all() and (target["boxes"] <= 32.01).all()
