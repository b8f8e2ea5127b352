"""The course's dataset: synthetic shapes, COCO files, and a validating loader.

Taught in: 00_setup_and_tour, 02_training_a_tiny_detector.

* :func:`render_scene` draws one image of shapes (circle, square, triangle) on a
  cluttered, noisy background, deterministically from a seed.
* :func:`write_coco_split` writes images + a COCO-format JSON file (how
  ``data/val`` and ``data/test`` were made; see ``data/README.md``).
* :class:`CocoDetection` reads *any* COCO-format folder and returns
  torchvision-style samples ``(image, target)``: ``image`` is a float tensor
  (3, H, W) in [0, 1]; ``target`` has ``boxes`` (N, 4) xyxy float32, ``labels``
  (N,) int64 in ``1..K``, ``iscrowd`` and ``area`` (N,) and ``image_id``. Everything it reads is validated, and
  a bad file raises :class:`DatasetError` naming the file and the fix.
* :class:`SyntheticShapes` is the train split, generated on the fly from its seed.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

__all__ = [
    "CATEGORIES",
    "DatasetError",
    "SceneConfig",
    "render_scene",
    "write_coco_split",
    "CocoDetection",
    "read_image",
    "SyntheticShapes",
    "collate_detection",
    "materialize",
    "load_digits",
]

#: COCO category records of the synthetic dataset. Label ``k`` in targets is
#: ``CATEGORIES[k - 1]``; label 0 is kept free for "background" (torchvision).
CATEGORIES: list[dict[str, Any]] = [
    {"id": 1, "name": "circle"},
    {"id": 2, "name": "square"},
    {"id": 3, "name": "triangle"},
]


class DatasetError(ValueError):
    """A dataset file is malformed; the message names the file and the fix."""


# --------------------------------------------------------------------------- #
# Rendering
# --------------------------------------------------------------------------- #
def _is_int(value: Any) -> bool:
    """True for Python and numpy integers; False for bools (``True`` is an ``int`` in Python)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    """True for Python and numpy ints and floats; False for bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


#: Largest side of the supersampled drawing canvas SceneConfig allows (an RGB canvas of 8192^2 is 200 MB).
_MAX_CANVAS = 8192


@dataclass(frozen=True)
class SceneConfig:
    """Knobs of the synthetic scenes (defaults are the shipped dataset's).

    Checked on construction (``ValueError`` naming the value and the fix):
    ``image_size``, ``supersample`` integers >= 1; ``min_objects <= max_objects``
    integers >= 0; ``1 <= min_size <= max_size <= image_size`` (finite numbers, pixels);
    ``max_overlap`` in [0, 1]; ``noise_std >= 0``; ``clutter_lines`` integer >= 0;
    ``image_size * supersample <= 8192`` (the drawing canvas's side).
    """

    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 6
    min_size: float = 10.0  # smallest object side, pixels ("small objects")
    max_size: float = 48.0
    max_overlap: float = 0.35  # max fraction of the smaller box hidden by another
    noise_std: float = 8.0  # Gaussian pixel noise, in 0..255 units
    clutter_lines: int = 6  # random thin lines: clutter that is not an object
    supersample: int = 4  # anti-aliasing factor

    def __post_init__(self) -> None:
        for name, low in (("image_size", 1), ("min_objects", 0), ("max_objects", 0), ("clutter_lines", 0), ("supersample", 1)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise ValueError(f"SceneConfig: {name}={value!r}; it must be an integer >= {low}, "
                                 f"e.g. {name}={getattr(SceneConfig, name)}.")
        for name in ("min_size", "max_size", "max_overlap", "noise_std"):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value):
                raise ValueError(f"SceneConfig: {name}={value!r}; it must be a finite number, "
                                 f"e.g. {name}={getattr(SceneConfig, name)}.")
        self._check_ranges()

    def _check_ranges(self) -> None:
        """The relations between the knobs (their types are already checked)."""
        if self.min_objects > self.max_objects:
            raise ValueError(f"SceneConfig: min_objects={self.min_objects} > max_objects={self.max_objects}; "
                             "make min_objects <= max_objects.")
        if not self.min_size > 0:
            raise ValueError(f"SceneConfig: min_size={self.min_size!r}; object sides must be > 0 pixels.")
        if self.min_size < 1:
            raise ValueError(f"SceneConfig: min_size={self.min_size!r} is below one pixel; such objects are not drawn "
                             "and their boxes (stored to 0.01 px) can have zero width: use min_size >= 1.")
        if self.min_size > self.max_size:
            raise ValueError(f"SceneConfig: min_size={self.min_size!r} > max_size={self.max_size!r}; make min_size <= max_size.")
        if self.max_size > self.image_size:
            raise ValueError(f"SceneConfig: max_size={self.max_size!r} is larger than image_size={self.image_size}; "
                             "objects must fit in the image: lower max_size or raise image_size.")
        if self.image_size * self.supersample > _MAX_CANVAS:
            raise ValueError(f"SceneConfig: image_size * supersample = {self.image_size} * {self.supersample} = "
                             f"{self.image_size * self.supersample} px per side exceeds {_MAX_CANVAS} (the drawing canvas "
                             "would need gigabytes): lower supersample (4 is plenty) or image_size.")
        if not 0 <= self.max_overlap <= 1:
            raise ValueError(f"SceneConfig: max_overlap={self.max_overlap!r} is a fraction of a box; it must lie in [0, 1].")
        if self.noise_std < 0:
            raise ValueError(f"SceneConfig: noise_std={self.noise_std!r}; a standard deviation must be >= 0.")


def _random_color(rng: random.Random, background: float) -> tuple[int, int, int]:
    """A saturated colour whose brightness differs clearly from the background."""
    while True:
        color = tuple(rng.randint(0, 255) for _ in range(3))
        if abs(sum(color) / 3 - background) > 60 and max(color) - min(color) > 60:
            return color  # type: ignore[return-value]


def _shape_points(kind: str, cx: float, cy: float, size: float, angle: float) -> list[tuple[float, float]]:
    """Polygon vertices of a square or triangle of side-extent ``size``."""
    if kind == "square":
        half = size / 2
        return [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
    # Triangle: vertices on a circle, rotated by ``angle``; box is its extent.
    r = size / 2
    return [(cx + r * math.cos(angle + k * 2 * math.pi / 3), cy + r * math.sin(angle + k * 2 * math.pi / 3)) for k in range(3)]


def _overlap_ok(box: list[float], boxes: list[list[float]], max_overlap: float) -> bool:
    """True if ``box`` hides at most ``max_overlap`` of any placed box and vice versa."""
    for other in boxes:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw <= 0 or ih <= 0:
            continue
        smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
        if iw * ih / smaller > max_overlap:
            return False
    return True


def render_scene(seed: int, config: SceneConfig = SceneConfig()) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Draw one synthetic image, deterministically from ``seed``.

    Returns ``(image, objects)``: ``image`` is uint8 (H, W, 3); ``objects`` is a list
    of ``{"bbox": [x1, y1, x2, y2], "category_id": int}`` in drawing order (later
    objects may partly occlude earlier ones; at most ``max_overlap`` of either box).
    ``seed`` must be an integer >= 0 and ``config`` a :class:`SceneConfig` (``ValueError``).
    """
    _check_seeds([seed], "render_scene")
    if not isinstance(config, SceneConfig):
        raise ValueError(f"render_scene: config={config!r}; pass a SceneConfig(...), e.g. SceneConfig(image_size=64).")
    return _render_scene(int(seed), config)  # numpy ints too: random.Random takes only Python ints


def _check_seeds(seeds: Any, caller: str) -> None:
    """Every seed an integer >= 0 (numpy's generator refuses negative seeds)."""
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ValueError(f"{caller}: seeds must be a list of integers >= 0, one image per seed (e.g. range(200)), "
                         f"got {seeds!r}")
    for seed in seeds:
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"{caller}: seed={seed!r}; seeds must be integers >= 0.")


def _render_scene(seed: int, config: SceneConfig) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """:func:`render_scene` without the argument checks (callers have done them)."""
    rng = random.Random(seed)
    size, ss = config.image_size, config.supersample
    # Background: a smooth random gradient ...
    base = rng.uniform(40, 200)
    gx, gy = rng.uniform(-60, 60), rng.uniform(-60, 60)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    bg = base + gx * ramp[None, :] + gy * ramp[:, None]  # (H, W)
    tint = np.array([rng.uniform(-25, 25) for _ in range(3)], dtype=np.float32)
    img = Image.fromarray(np.clip(bg[..., None] + tint, 0, 255).astype(np.uint8))
    img = img.resize((size * ss, size * ss), Image.Resampling.BILINEAR)  # draw at ss x resolution
    draw = ImageDraw.Draw(img)
    # ... plus clutter: thin random lines that are not objects.
    for _ in range(config.clutter_lines):
        pts = [rng.uniform(0, size * ss) for _ in range(4)]
        draw.line(pts, fill=_random_color(rng, base), width=rng.randint(1, 2) * ss // 2)

    objects: list[dict[str, Any]] = []
    for _ in range(rng.randint(config.min_objects, config.max_objects)):
        for _attempt in range(50):  # rejection sampling for limited occlusion
            kind = rng.choice(["circle", "square", "triangle"])
            # log-uniform size: as many small objects as large ones
            obj = math.exp(rng.uniform(math.log(config.min_size), math.log(config.max_size)))
            cx, cy = rng.uniform(obj / 2, size - obj / 2), rng.uniform(obj / 2, size - obj / 2)
            if kind == "circle":
                box = [cx - obj / 2, cy - obj / 2, cx + obj / 2, cy + obj / 2]
                pts = None
            else:
                pts = _shape_points(kind, cx, cy, obj, rng.uniform(0, 2 * math.pi))
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                box = [min(xs), min(ys), max(xs), max(ys)]
            if _overlap_ok(box, [o["bbox"] for o in objects], config.max_overlap):
                break
        else:
            continue  # no room left for another object
        color = _random_color(rng, base)
        if pts is None:
            draw.ellipse([c * ss for c in box], fill=color)
        else:
            draw.polygon([(x * ss, y * ss) for x, y in pts], fill=color)
        category_id = next(c["id"] for c in CATEGORIES if c["name"] == kind)
        objects.append({"bbox": [round(v, 2) for v in box], "category_id": category_id})

    img = img.reduce(ss)  # average each ss x ss block: anti-aliased edges
    noise = np.random.default_rng(seed).normal(0, config.noise_std, (size, size, 3))
    pixels = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return pixels, objects


def write_coco_split(root: str | Path, seeds: list[int], config: SceneConfig = SceneConfig(),
                     overwrite: bool = False) -> Path:
    """Render one image per seed into ``root/images/`` and write ``root/annotations.json``.

    Boxes are stored the COCO way, ``[x, y, width, height]``; ``area = w * h``.
    Returns the annotation file's path. Seeds must be integers >= 0 (``ValueError``).
    A folder that already holds ``annotations.json`` or files in ``images/`` is refused
    (``FileExistsError``: its dataset would be overwritten) unless ``overwrite=True``; then the
    images the old ``annotations.json`` listed and the new one does not are removed (nothing else).
    """
    _check_seeds(seeds, "write_coco_split")
    if not isinstance(config, SceneConfig):
        raise ValueError(f"write_coco_split: config={config!r}; pass a SceneConfig(...).")
    root = Path(root)
    _refuse_existing_dataset(root, overwrite)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, seed in enumerate(seeds, start=1):
        seed = int(seed)  # numpy ints too (random.Random and json take only Python ints)
        pixels, objects = _render_scene(seed, config)
        file_name = f"{image_id:05d}.jpg"
        Image.fromarray(pixels).save(root / "images" / file_name, quality=90, optimize=True)
        images.append({"id": image_id, "file_name": file_name, "width": pixels.shape[1], "height": pixels.shape[0], "seed": seed})
        for obj in objects:
            x1, y1, x2, y2 = obj["bbox"]
            w, h = round(x2 - x1, 2), round(y2 - y1, 2)
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": obj["category_id"],
                 "bbox": [x1, y1, w, h], "area": round(w * h, 2), "iscrowd": 0}
            )
    ann_file = root / "annotations.json"
    stale = _listed_images(ann_file) - {img["file_name"] for img in images}
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    for name in stale:  # only files the old split itself named, inside its images folder
        (root / "images" / name).unlink(missing_ok=True)
    return ann_file


def _listed_images(ann_file: Path) -> set[str]:
    """The plain file names an existing annotation file lists (empty if there is none or it is unreadable)."""
    try:
        listed = json.loads(ann_file.read_text()).get("images", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {img["file_name"] for img in listed if isinstance(img, dict) and isinstance(img.get("file_name"), str)
            and img["file_name"] == Path(img["file_name"]).name}


def _refuse_existing_dataset(root: Path, overwrite: bool) -> None:
    """FileExistsError if ``root`` already holds a dataset (annotations.json or images) and not ``overwrite``."""
    if overwrite:
        return
    images = root / "images"
    existing = [p for p in (root / "annotations.json",) if p.exists()]
    if images.is_dir() and any(images.iterdir()):
        existing.append(images)
    if existing:
        raise FileExistsError(f"write_coco_split: {root} already holds a dataset ({', '.join(p.name for p in existing)}); "
                              "writing would overwrite it. Choose an empty folder, or pass overwrite=True.")


# --------------------------------------------------------------------------- #
# Loading any COCO-format folder
# --------------------------------------------------------------------------- #
#: Default of ``CocoDetection(max_pixels=...)``: 25 megapixels (a 6000x4000 photo). Its float32
#: (3, H, W) tensor takes 12 bytes per pixel, 300 MB; larger images are refused before decoding.
DEFAULT_MAX_PIXELS = 25_000_000

#: Modes with 8-bit channels, converted exactly by PIL's ``convert("RGB")`` (alpha is dropped).
_RGB_CONVERTIBLE_MODES = frozenset({"1", "L", "P", "RGB", "RGBA", "RGBX", "LA", "PA", "CMYK", "YCbCr", "LAB", "HSV"})
#: 16-bit grey modes, any byte order: scaled by 1 / 65535.
_UINT16_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
#: Formats whose 32-bit integer ('I') images hold 16-bit samples: PGM/PPM with maxval > 255
#: (PIL rescales them to 0..65535) and 16-bit PNGs (opened as 'I' by older Pillow).
_UINT16_AS_I_FORMATS = frozenset({"PNG", "PPM"})


def _show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a JSON value may be huge)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_float(value: int | float) -> float:
    """``float(value)``; an int too large for a float becomes ``inf`` (caught as non-finite)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _load_annotation_file(ann_file: Path) -> dict[str, Any]:
    """Read the JSON; check it is an object holding the lists 'images', 'annotations', 'categories'."""
    if not ann_file.is_file():
        raise DatasetError(f"{ann_file}: annotation file not found. Pass the path of a COCO-format JSON file.")
    try:
        data = json.loads(ann_file.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, int over 4300 digits, deep nesting
        raise DatasetError(f"{ann_file}: not valid JSON ({type(err).__name__}: {err}). Fix the file or regenerate it.") from err
    except OSError as err:
        raise DatasetError(f"{ann_file}: cannot read the annotation file ({err}). Check its permissions.") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{ann_file}: expected a JSON object with keys 'images', 'annotations', 'categories', "
                           f"got a JSON {type(data).__name__}. Fix the file or regenerate it.")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetError(f"{ann_file}: missing list '{key}'. A COCO file needs 'images', 'annotations' and 'categories'.")
        if not isinstance(data[key], list):
            raise DatasetError(f"{ann_file}: '{key}' is {_show(data[key])}, not a list. A COCO file needs lists "
                               "'images', 'annotations' and 'categories' (each possibly empty: [])")
    return data


def _check_id(value: Any, where: str, seen: set[int], kind: str) -> None:
    """``value`` is an integer id not in ``seen`` (then added to it)."""
    if not _is_int(value):
        raise DatasetError(f"{where}: 'id' is {_show(value)}; COCO ids are integers: write 1, not \"1\", 1.0 or true.")
    if value in seen:
        raise DatasetError(f"{where}: duplicate {kind} id {value}. {kind.capitalize()} ids must be unique: "
                           f"renumber or merge the {kind}s that share it.")
    seen.add(value)


def _check_categories(categories: list[Any], ann_file: Path) -> list[dict[str, Any]]:
    """Each category is an object with a unique integer 'id' and, if it has a 'name', a unique non-empty
    string name; returns them sorted by id."""
    seen: set[int] = set()
    names: dict[str, int] = {}
    for k, cat in enumerate(categories):
        where = f"{ann_file}: categories[{k}]"
        if not isinstance(cat, dict):
            raise DatasetError(f'{where} is {_show(cat)}; each category must be an object like {{"id": 1, "name": "circle"}}.')
        if "id" not in cat:
            raise DatasetError(f"{where} has no 'id'; give every category a unique integer 'id'.")
        _check_id(cat["id"], where, seen, "category")
        name = cat.get("name")
        if "name" in cat and not (isinstance(name, str) and name.strip()):
            raise DatasetError(f"{where}: 'name' is {_show(name)}; a category's name must be a non-empty string, "
                               'e.g. "circle" (or leave "name" out to call the class by its id).')
        if isinstance(name, str) and name in names:
            raise DatasetError(f"{where}: duplicate category name {name!r} (also category id {names[name]}); "
                               "results are reported per name, so give each category its own name or merge them.")
        if isinstance(name, str):
            names[name] = cat["id"]
    return sorted(categories, key=lambda c: c["id"])


def _check_size(img: dict[str, Any], where: str, max_pixels: int) -> None:
    """'width' and 'height' are positive integers with ``width * height <= max_pixels``."""
    for key in ("width", "height"):
        if not _is_int(img[key]) or img[key] <= 0:
            raise DatasetError(f"{where}: '{key}' is {_show(img[key])}; it must be a positive integer "
                               f"(the image's size in pixels), e.g. 128.")
    if img["width"] * img["height"] > max_pixels:
        raise DatasetError(f"{where}: 'width' x 'height' = {_show(img['width'], 20)}x{_show(img['height'], 20)} pixels is more "
                           f"than max_pixels={max_pixels}. Downscale the image (and its boxes), or pass a larger "
                           "CocoDetection(..., max_pixels=...) if you have the memory (12 bytes per pixel).")


def _image_path(img: dict[str, Any], where: str, ann_file: Path, image_dir: Path, root: Path) -> Path:
    """``image_dir / file_name``, checked to be an existing file inside ``image_dir``: the *name* may not
    lead out of the folder (an absolute path, or '..' past it, is refused). Symlinks inside the folder are
    followed wherever they point: they are the dataset owner's choice (git-annex and DVC store images so)."""
    name = img["file_name"]
    if not isinstance(name, str) or not name or "\x00" in name:
        problem = "empty" if name == "" else "with a null byte" if isinstance(name, str) else "not a string"
        raise DatasetError(f"{where}: 'file_name' is {_show(name)} ({problem}); it must be the image's path "
                           f"relative to the image folder {image_dir}, e.g. \"00001.jpg\".")
    path = image_dir / name
    try:
        inside = Path(os.path.normpath(os.path.abspath(path))).is_relative_to(root)
        is_file, is_dir = path.is_file(), path.is_dir()
    except (OSError, ValueError, RuntimeError) as err:  # name too long, symlink loop, ...
        reason = getattr(err, "strerror", None) or err
        raise DatasetError(f"{where}: cannot access 'file_name' {_show(name)} ({reason}). Fix the name.") from err
    if not inside:
        raise DatasetError(f"{where}: 'file_name' {name!r} points outside the image folder {image_dir}. Give a path "
                           "relative to that folder, without a leading '/' or '..' leading out of it.")
    if is_dir:
        raise DatasetError(f"{where}: 'file_name' {name!r} is a folder, not a file. Name the image file inside it.")
    if not is_file:
        raise DatasetError(f"{path}: image file listed in {ann_file.name} is missing. "
                           f"Put it in {image_dir} or remove image id {img['id']} from the JSON.")
    return path


def _check_images(images: list[Any], ann_file: Path, image_dir: Path, max_pixels: int) -> list[Path]:
    """Each image is an object with a unique integer 'id', a positive integer 'width' and 'height'
    (at most ``max_pixels`` in all) and a 'file_name' naming a file inside ``image_dir``.
    Returns the image files' paths, in order."""
    if images and not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: image folder not found (for {ann_file.name}). "
                           "Pass CocoDetection(ann_file, image_dir=...) naming the folder the 'file_name' entries are in.")
    root, seen, paths = Path(os.path.normpath(os.path.abspath(image_dir))), set(), []  # lexical: symlinks are followed, not judged
    for k, img in enumerate(images):
        where = f"{ann_file}: images[{k}]"
        if not isinstance(img, dict):
            raise DatasetError(f"{where} is {_show(img)}; each image must be an object with "
                               "'id', 'file_name', 'width', 'height'.")
        if not all(key in img for key in ("id", "file_name", "width", "height")):
            raise DatasetError(f"{ann_file}: image entry {_show(img, 200)} needs 'id', 'file_name', 'width', 'height'.")
        _check_id(img["id"], where, seen, "image")
        where = f"{ann_file}: image id {img['id']}"
        _check_size(img, where, max_pixels)
        paths.append(_image_path(img, where, ann_file, image_dir, root))
    return paths


def _check_box(ann: dict[str, Any], image: dict[str, Any], ann_file: Path) -> list[float]:
    """Validate one COCO ``[x, y, w, h]`` box and return it as ``xyxy``.

    Checked: four finite numbers (no bools); ``w, h > 0``; inside the image (1e-3 px
    tolerance); and, stored as float32 like the targets, still a box with positive width,
    height and area (``[2, 2, 1e-30, 1e-30]`` is not).
    """
    where = f"{ann_file}: annotation id {ann['id']} (image '{image['file_name']}')"
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_real(v) for v in bbox)):
        raise DatasetError(f"{where}: 'bbox' must be a list of 4 numbers [x, y, width, height], got {_show(bbox)}.")
    x, y, w, h = (_as_float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise DatasetError(f"{where}: bbox {_show(bbox)} has a non-finite value. Fix or delete this annotation.")
    if w <= 0 or h <= 0:
        raise DatasetError(
            f"{where}: degenerate box {bbox} (width and height must be > 0). "
            "COCO boxes are [x, y, width, height], not [x1, y1, x2, y2]; fix or delete this annotation."
        )
    tol = 1e-3
    if x < -tol or y < -tol or x + w > image["width"] + tol or y + h > image["height"] + tol:
        raise DatasetError(
            f"{where}: box {bbox} lies outside the {image['width']}x{image['height']} image. "
            "Clip it to the image or fix the image's width/height."
        )
    x1, y1, x2, y2 = np.array([x, y, x + w, y + h], dtype=np.float32)
    if not (x2 > x1 and y2 > y1 and (x2 - x1) * (y2 - y1) > 0):
        raise DatasetError(
            f"{where}: box {bbox} is too small to store: in float32 (the targets' dtype) it becomes "
            f"[{x1}, {y1}, {x2}, {y2}] (x1, y1, x2, y2), with zero width, height or area, which no detector can "
            "learn from. Fix its width/height or delete this annotation."
        )
    return [x, y, x + w, y + h]


def _check_annotations(annotations: list[Any], ann_file: Path, by_id: dict[int, dict[str, Any]],
                       cat_to_label: dict[int, int]) -> dict[int, dict[str, list[Any]]]:
    """Each annotation is an object with a unique integer 'id', the integer 'image_id' of a known
    image, the integer 'category_id' of a known category and a valid 'bbox' (:func:`_check_box`);
    'iscrowd', if present, is 0, 1, false, true or null (null: an ordinary object) and 'area', if
    present, a finite number >= 0 and at most the image's area (null: use the box's area). Other keys ('segmentation', ...)
    are allowed and not read. Returns per image id the xyxy boxes, labels, crowd flags and areas."""
    per_image: dict[int, dict[str, list[Any]]] = {i: {"boxes": [], "labels": [], "iscrowd": [], "area": []} for i in by_id}
    seen: set[int] = set()
    for k, ann in enumerate(annotations):
        where = f"{ann_file}: annotations[{k}]"
        if not isinstance(ann, dict):
            raise DatasetError(f"{where} is {_show(ann)}; each annotation must be an object with "
                               "'id', 'image_id', 'category_id', 'bbox'.")
        if "id" not in ann:
            raise DatasetError(f"{where} has no 'id'; give every annotation a unique integer 'id'.")
        _check_id(ann["id"], where, seen, "annotation")
        where = f"{ann_file}: annotation id {ann['id']}"
        for key, known in (("image_id", by_id), ("category_id", cat_to_label)):
            if not _is_int(ann.get(key)):
                raise DatasetError(f"{where}: '{key}' is {_show(ann.get(key))}; it must be the integer id of an entry in "
                                   f"'{'images' if key == 'image_id' else 'categories'}'.")
        image = by_id.get(ann["image_id"])
        if image is None:
            raise DatasetError(
                f"{where} refers to unknown image_id {ann['image_id']!r}. "
                "Add the image to 'images' or remove this annotation (or fix its image_id)."
            )
        if ann["category_id"] not in cat_to_label:
            raise DatasetError(
                f"{where} has unknown category_id {ann['category_id']!r}; "
                f"known ids are {sorted(cat_to_label)}. Add the category to 'categories' or fix the id."
            )
        crowd = ann.get("iscrowd", 0)
        if crowd is not None and (not isinstance(crowd, (int, bool)) or crowd not in (0, 1)):
            raise DatasetError(f"{where}: iscrowd={_show(crowd)}; it must be 0 (an object) or 1 (a crowd region, "
                               "which mAP ignores and training skips), as in COCO.")
        box = _check_box(ann, image, ann_file)
        area = ann.get("area")
        if area is not None and not (_is_real(area) and math.isfinite(_as_float(area)) and _as_float(area) >= 0):
            raise DatasetError(f"{where}: area={_show(area)}; it must be a number >= 0 (the object's area in px², which "
                               "decides its COCO size range) -- or leave it out to use the box's area.")
        if area is not None and _as_float(area) > 1.01 * image["width"] * image["height"]:
            raise DatasetError(f"{where}: area={_show(area)} px² is more than its whole {image['width']}x{image['height']} "
                               "image; it must be the object's area in px² (it decides the COCO size range) -- fix it, "
                               "or leave it out to use the box's area.")
        entry = per_image[image["id"]]
        entry["boxes"].append(box)
        entry["labels"].append(cat_to_label[ann["category_id"]])
        entry["iscrowd"].append(int(bool(crowd)))
        entry["area"].append(_as_float(area) if area is not None else (box[2] - box[0]) * (box[3] - box[1]))
    return per_image


def _open_image(path: Path, json_size: str) -> Image.Image:
    """``Image.open(path)``: reads the header only; any failure becomes a :class:`DatasetError`."""
    try:
        return Image.open(path)
    except FileNotFoundError as err:
        raise DatasetError(f"{path}: image file has disappeared since the dataset was built. Put it back.") from err
    except Image.DecompressionBombError as err:  # PIL's own limit, checked while reading the header
        raise DatasetError(f"{path}: refused before decoding: the JSON says {json_size} but PIL reports: {err} "
                           "Replace the file with the real image, or downscale it.") from err
    except MemoryError:
        raise
    except Exception as err:  # PIL's format plugins raise many types on a malformed header
        raise DatasetError(f"{path}: cannot decode image ({err}). The file is corrupt or not an image; replace it.") from err


def _decode(pil: Image.Image, path: Path) -> Tensor:
    """The pixels as float32 (3, H, W) in [0, 1] (the modes: see :class:`CocoDetection`)."""
    mode = pil.mode
    try:
        if mode in _RGB_CONVERTIBLE_MODES:
            return torch.from_numpy(np.asarray(pil.convert("RGB")).copy()).permute(2, 0, 1).float() / 255.0
        if mode in _UINT16_MODES or (mode == "I" and pil.format in _UINT16_AS_I_FORMATS):
            unit = np.asarray(pil).astype(np.float32) / np.float32(65535)
        elif mode == "F":
            unit = np.array(pil, dtype=np.float32)  # a copy: torch wants a writable array
        else:
            unit = None
    except MemoryError:
        raise
    except Exception as err:  # truncated or corrupt pixel data: OSError, SyntaxError, ValueError, ...
        raise DatasetError(f"{path}: cannot decode image ({err}). The file is corrupt or not an image; replace it.") from err
    if unit is None:
        raise DatasetError(
            f"{path}: image mode {mode!r} (format {pil.format}) has no defined range, so it cannot be scaled into [0, 1]. "
            "Readable modes: 1, L, P, RGB, RGBA, RGBX, LA, PA, CMYK, YCbCr, LAB, HSV, 16-bit grey (I;16) and float (F) "
            "in [0, 1]. Save it as an 8-bit (L/RGB) or 16-bit (I;16) PNG."
        )
    if unit.size and not (np.isfinite(unit).all() and unit.min() >= 0 and unit.max() <= 1):
        raise DatasetError(
            f"{path}: mode {mode!r} image has values outside [0, 1] (min {unit.min()}, max {unit.max()}); float "
            "images are read as they are. Rescale it to [0, 1], or save it as an 8-bit or 16-bit PNG."
        )
    return torch.from_numpy(unit).unsqueeze(0).repeat(3, 1, 1)


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """One image file as float32 (3, H, W) in [0, 1], decoded exactly as :class:`CocoDetection` decodes
    its images (the modes and their scaling: see there). Training, evaluation, export calibration and
    ``predict`` all read images through this one decoder.

    Refused with :class:`DatasetError` (naming the file): a missing file, a file that is not an image
    or is truncated, a mode with no defined range, and an image whose header says more than
    ``max_pixels`` pixels (checked before the pixels are decoded).
    """
    if not _is_int(max_pixels) or max_pixels <= 0:
        raise ValueError(f"read_image: max_pixels={max_pixels!r}; it must be a positive integer, e.g. {DEFAULT_MAX_PIXELS}")
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path}: is a folder, not an image file. Name the image files themselves.")
    if not path.is_file():
        raise DatasetError(f"{path}: image file not found. Check the path.")
    with _open_image(path, "an image") as pil:
        width, height = pil.size
        if width * height > max_pixels:
            raise DatasetError(f"{path}: the file's header says {width}x{height} = {width * height:,} pixels, more than "
                               f"max_pixels={max_pixels:,}; refused before decoding (12 bytes per pixel as a float "
                               "tensor). Downscale the image first.")
        return _decode(pil, path)


class CocoDetection(Dataset):
    """Detection samples from a COCO-format folder, validated up front.

    Args:
        ann_file: the COCO JSON file.
        image_dir: folder the ``file_name`` entries are relative to (default:
            ``images/`` beside ``ann_file``).
        max_pixels: largest image accepted, ``width * height`` (default
            :data:`DEFAULT_MAX_PIXELS`, 25 million: 300 MB as a float tensor).

    ``dataset[i]`` returns ``(image, target)`` with ``image`` float32 (3, H, W) in
    [0, 1] and ``target = {"boxes": (N, 4) xyxy float32, "labels": (N,) int64,
    "iscrowd": (N,) int64, "area": (N,) float32, "image_id": int}``: ``iscrowd`` 1 marks a COCO
    crowd region (ignored by :func:`~course_utils.metrics.mean_average_precision`, skipped by the
    detectors' losses), ``area`` is the file's object area (the box's if the file has none). Labels are contiguous ``1..K`` in the order of the sorted
    category ids; ``dataset.categories[k - 1]`` is label ``k``'s record and
    ``dataset.label_to_category_id`` maps back to the file's ids.

    Checked on construction (a :class:`DatasetError` names the file, the entry and the fix):

    * the JSON is an object with lists ``images``, ``annotations``, ``categories``;
    * every entry is an object; ids (image, category, annotation, and the
      ``image_id``/``category_id`` references) are integers -- not strings, floats or
      bools -- unique within their list, and references point at existing entries;
    * ``width``/``height`` are positive integers, at most ``max_pixels`` in all;
    * ``file_name`` is a string naming an existing file *inside* ``image_dir``: absolute
      paths and ``..`` leading out of the folder are refused (symlinks inside it are followed);
    * every box is 4 finite numbers ``[x, y, w, h]`` with ``w, h > 0``, inside its image,
      and keeps positive width, height and area in float32 (the targets' dtype).
    * a category's ``name``, if given, is a non-empty string, unique in the file;
    * an annotation's ``area``, if given, is a finite number >= 0, at most its image's area.

    Checked when a sample is read (:meth:`verify_images` reads them all), from the image
    file's header *before* its pixels are decoded: the size equals the JSON's
    ``width``/``height`` and is at most ``max_pixels``. Then the pixels are scaled into
    [0, 1] by mode: 8-bit modes (1, L, P, RGB, RGBX, CMYK, YCbCr, LAB, HSV, and with alpha
    RGBA, LA, PA) through PIL's ``convert("RGB")`` divided by 255; 16-bit grey (I;16,
    I;16B, I;16L, I;16N, and 'I' read from PNG or PGM/PPM, which hold 16-bit samples)
    divided by 65535; float 'F' taken as is if all values are finite and in [0, 1].
    Refused: 'F' outside [0, 1] or non-finite, 'I' from other formats (32-bit integers
    with no defined range, e.g. TIFF), and any other mode. Grey images are repeated into
    3 channels. **Alpha is dropped, not composited**: every pixel keeps its stored colour,
    however transparent (composite onto a background yourself first if you need that).
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if not _is_int(max_pixels) or max_pixels <= 0:
            raise ValueError(f"CocoDetection: max_pixels={max_pixels!r}; it must be a positive integer, "
                             f"e.g. {DEFAULT_MAX_PIXELS} (the default).")
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir) if image_dir is not None else self.ann_file.parent / "images"
        self.max_pixels = int(max_pixels)
        data = _load_annotation_file(self.ann_file)

        self.categories = _check_categories(data["categories"], self.ann_file)
        cat_to_label = {c["id"]: k for k, c in enumerate(self.categories, start=1)}
        self.label_to_category_id = {k: cid for cid, k in cat_to_label.items()}

        self._paths = _check_images(data["images"], self.ann_file, self.image_dir, self.max_pixels)
        self.images: list[dict[str, Any]] = list(data["images"])
        by_id = {img["id"]: img for img in self.images}
        self._objects = _check_annotations(data["annotations"], self.ann_file, by_id, cat_to_label)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_objects(self) -> int:
        """Annotated objects that count (crowd regions, ``iscrowd=1``, excluded), over all images."""
        return sum(len(o["iscrowd"]) - sum(o["iscrowd"]) for o in self._objects.values())

    def _check_header(self, pil: Image.Image, img: dict[str, Any], path: Path) -> None:
        """The size in the file's header (read without decoding) fits ``max_pixels`` and matches the JSON."""
        width, height = pil.size
        json_size = f"{img['width']}x{img['height']}"
        if width * height > self.max_pixels:
            raise DatasetError(
                f"{path}: the file's header says {width}x{height} = {width * height:,} pixels ({self.ann_file.name} says "
                f"{json_size}), more than max_pixels={self.max_pixels}; refused before decoding. Downscale the image, "
                "or pass a larger CocoDetection(..., max_pixels=...) if you have the memory (12 bytes per pixel)."
            )
        if pil.size != (img["width"], img["height"]):
            raise DatasetError(
                f"{path}: image is {width}x{height} but {self.ann_file.name} says "
                f"{json_size}. Fix 'width'/'height' in the JSON."
            )

    def _read_image(self, index: int) -> Tensor:
        img, path = self.images[index], self._paths[index]
        with _open_image(path, f"{img['width']}x{img['height']}") as pil:
            self._check_header(pil, img, path)
            return _decode(pil, path)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        img = self.images[index]
        objects = self._objects[img["id"]]
        target = {
            "boxes": torch.tensor(objects["boxes"], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(objects["labels"], dtype=torch.int64),
            "iscrowd": torch.tensor(objects["iscrowd"], dtype=torch.int64),
            "area": torch.tensor(objects["area"], dtype=torch.float32),
            "image_id": int(img["id"]),
        }
        return self._read_image(index), target

    def verify_images(self) -> None:
        """Decode every image once; raise :class:`DatasetError` on the first bad one."""
        for index in range(len(self.images)):
            self._read_image(index)


class SyntheticShapes(Dataset):
    """The train split: ``length`` scenes rendered on the fly from ``seed + index``.

    Same sample format as :class:`CocoDetection`. Seeds of the shipped splits
    start at 1_000_000 (val) and 2_000_000 (test), so train seeds below that never
    collide with them.
    """

    def __init__(self, length: int, seed: int = 0, config: SceneConfig = SceneConfig()) -> None:
        """Checks: ``length`` and ``seed`` integers >= 0 with ``seed + length <= 1_000_000``;
        ``config`` a :class:`SceneConfig` (``ValueError`` naming the value and the fix)."""
        for name, value in (("length", length), ("seed", seed)):
            if not _is_int(value) or value < 0:
                raise ValueError(f"SyntheticShapes: {name}={value!r}; it must be an integer >= 0.")
        if seed + length > 1_000_000:
            raise ValueError(f"SyntheticShapes: seed + length = {seed + length} > 1_000_000; train seeds must stay below "
                             "1_000_000 (the val/test seeds start there): lower seed or length.")
        if not isinstance(config, SceneConfig):
            raise ValueError(f"SyntheticShapes: config={config!r}; pass a SceneConfig(...), e.g. SceneConfig(image_size=64).")
        self.length, self.seed, self.config = int(length), int(seed), config
        self.categories = CATEGORIES

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        """Sample ``index``: an int (numpy ints and 0-dim integer tensors too; negative counts from the end, like a list)."""
        if isinstance(index, Tensor) and index.ndim == 0 and not index.is_floating_point() and index.dtype != torch.bool:
            index = int(index)  # e.g. from torch.randperm or a sampler
        if not _is_int(index):
            raise TypeError(f"SyntheticShapes index must be an int, got {index!r}; for several samples use "
                            "torch.utils.data.Subset or [dataset[i] for i in ...]")
        index = int(index)
        if not -self.length <= index < self.length:
            raise IndexError(f"SyntheticShapes index {index} out of range for a dataset of length {self.length}")
        index %= self.length
        pixels, objects = _render_scene(self.seed + index, self.config)
        image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0
        target = {
            "boxes": torch.tensor([o["bbox"] for o in objects], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([o["category_id"] for o in objects], dtype=torch.int64),
            "image_id": index,
        }
        return image, target


class Letterbox(Dataset):
    """``dataset`` with every image resized to fit ``size × size`` (aspect kept) and padded: one size for a batch.

    An image of H × W is resized by ``s = size / max(H, W)`` to ``h' × w' = round(s H) × round(s W)``
    (bilinear, antialiased) and padded at the bottom and right with grey 0.5 -- the value the
    detector centres to 0 -- to ``size × size``. Boxes are mapped with the exact factors
    ``s_x = w' / W`` and ``s_y = h' / H``; ``area`` by ``s_x s_y``. The target keeps what is needed to
    map predictions back (:func:`undo_letterbox`): ``letterbox = (s_x, s_y, W, H)`` and the
    original target under ``original``. So one dataset may mix image sizes, and
    :func:`~course_utils.train.evaluate` scores in the original pixels (COCO's size ranges are in
    those). Checked: ``size`` an int >= 16.
    """

    def __init__(self, dataset: Dataset, size: int) -> None:
        if not _is_int(size) or size < 16:
            raise ValueError(f"Letterbox: size={size!r}; it must be an int >= 16 (the side of the square training "
                             "images, e.g. 128 or 320)")
        self.dataset, self.size = dataset, int(size)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        image, target = self.dataset[index]
        return letterbox(image, target, self.size)


def letterbox(image: Tensor, target: dict[str, Any], size: int) -> tuple[Tensor, dict[str, Any]]:
    """One sample of :class:`Letterbox`: image (3, H, W) -> (3, size, size), target boxes mapped."""
    import torch.nn.functional as F

    height, width = image.shape[-2:]
    s = size / max(height, width)
    new_h, new_w = max(1, round(height * s)), max(1, round(width * s))
    resized = image if (new_h, new_w) == (height, width) else F.interpolate(
        image[None].float(), size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)
    out = torch.full((image.shape[0], size, size), 0.5, dtype=resized.dtype)
    out[:, :new_h, :new_w] = resized
    sx, sy = new_w / width, new_h / height
    new = dict(target)
    new["boxes"] = target["boxes"].reshape(-1, 4) * torch.tensor([sx, sy, sx, sy], dtype=target["boxes"].dtype)
    if "area" in target:
        new["area"] = target["area"] * (sx * sy)
    new["letterbox"] = torch.tensor([sx, sy, float(width), float(height)], dtype=torch.float64)
    new["original"] = target
    return out, new


def undo_letterbox(preds: list[dict[str, Tensor]], targets: list[dict[str, Any]]) -> tuple[list[dict[str, Tensor]], list[dict[str, Any]]]:
    """Predictions and targets of :class:`Letterbox` images back in the original images' pixels.

    Boxes are divided by ``(s_x, s_y)`` and clipped to the original ``W × H`` (a box in the padding
    becomes empty and is dropped); targets become the ``original`` ones. Samples without
    ``letterbox`` pass through unchanged.
    """
    out_preds, out_targets = [], []
    for pred, target in zip(preds, targets):
        if not isinstance(target, dict) or "letterbox" not in target:
            out_preds.append(pred), out_targets.append(target)
            continue
        sx, sy, width, height = (float(v) for v in target["letterbox"])
        boxes = pred["boxes"].reshape(-1, 4) / torch.tensor([sx, sy, sx, sy], dtype=pred["boxes"].dtype, device=pred["boxes"].device)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        out_preds.append({**pred, "boxes": boxes[keep], "scores": pred["scores"][keep], "labels": pred["labels"][keep]})
        out_targets.append(target["original"])
    return out_preds, out_targets


def collate_detection(batch: list[tuple[Tensor, dict[str, Any]]]) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """Keep images and targets as lists (objects per image differ), like torchvision.

    Checked: a non-empty batch of ``(image, target)`` pairs (ValueError otherwise).
    """
    if len(batch) == 0:
        raise ValueError("collate_detection got an empty batch; a batch needs at least one (image, target) sample")
    if not all(isinstance(sample, (tuple, list)) and len(sample) == 2 for sample in batch):
        raise ValueError("collate_detection needs a batch of (image, target) pairs, as the datasets' samples are; "
                         f"got an item of type {type(batch[0]).__name__}")
    images, targets = zip(*batch)
    return list(images), list(targets)


def progress_bar(iterable: Any, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm(iterable, **kwargs)`` (a widget bar in Jupyter, text elsewhere), or tqdm's plain text
    bar when ``COURSE_STATIC_WIDGETS=1``: a widget can stall a notebook executed without a browser (the
    reason ``make grade`` sets it; see ``course_utils.widgets``)."""
    if os.environ.get("COURSE_STATIC_WIDGETS") == "1":
        from tqdm.std import tqdm as text_tqdm

        return text_tqdm(iterable, **kwargs)
    return tqdm(iterable, **kwargs)


def materialize(dataset: Dataset, progress: bool = True) -> list[tuple[Tensor, dict[str, Any]]]:
    """Read every sample once into a list, so later epochs skip rendering/decoding.

    ``dataset`` must have a length and integer indexing (a Dataset or a list; TypeError otherwise).
    """
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(f"materialize needs a dataset with len() and indexing (a Dataset or a list), "
                        f"got {type(dataset).__name__}; for a generator use list(...)")
    return [dataset[i] for i in progress_bar(range(len(dataset)), desc="preparing images", disable=not progress, leave=False)]


def load_digits(split: str = "train", seed: int = 0) -> list[tuple[Tensor, dict[str, Tensor]]]:
    """scikit-learn's 1,797 handwritten digits (8x8, shipped inside the package), as samples.

    Returns ``(image, {"labels": label})`` pairs: ``image`` float32 (1, 8, 8) in
    [0, 1], ``label`` an int64 scalar 0..9 -- the same (image, target) shape as the
    detection data, so :func:`course_utils.train.fit` trains on it unchanged.
    Split 80/20 into ``"train"``/``"test"`` by a fixed permutation from ``seed``.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    digits = sk_load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    cut = int(0.8 * len(order))
    chosen = order[:cut] if split == "train" else order[cut:]
    images = torch.from_numpy(digits.images[chosen] / 16.0).float().unsqueeze(1)
    labels = torch.from_numpy(digits.target[chosen]).long()
    return [(img, {"labels": lab}) for img, lab in zip(images, labels)]
