"""The course's dataset: synthetic shapes, COCO files, and a validating loader.

Taught in: 00_setup_and_tour, 02_training_a_tiny_detector.

* :func:`render_scene` draws one image of shapes (circle, square, triangle) on a
  cluttered, noisy background, deterministically from a seed.
* :func:`write_coco_split` writes images + a COCO-format JSON file (how
  ``data/val`` and ``data/test`` were made; see ``data/README.md``).
* :class:`CocoDetection` reads *any* COCO-format folder and returns
  torchvision-style samples ``(image, target)``: ``image`` is a float tensor
  (3, H, W) in [0, 1]; ``target`` has ``boxes`` (N, 4) xyxy float32, ``labels``
  (N,) int64 in ``1..K`` and ``image_id``. Everything it reads is validated, and
  a bad file raises :class:`DatasetError` naming the file and the fix.
* :class:`SyntheticShapes` is the train split, generated on the fly from its seed.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError
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
@dataclass(frozen=True)
class SceneConfig:
    """Knobs of the synthetic scenes (defaults are the shipped dataset's)."""

    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 6
    min_size: float = 10.0  # smallest object side, pixels ("small objects")
    max_size: float = 48.0
    max_overlap: float = 0.35  # max fraction of the smaller box hidden by another
    noise_std: float = 8.0  # Gaussian pixel noise, in 0..255 units
    clutter_lines: int = 6  # random thin lines: clutter that is not an object
    supersample: int = 4  # anti-aliasing factor


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
    """
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


def write_coco_split(root: str | Path, seeds: list[int], config: SceneConfig = SceneConfig()) -> Path:
    """Render one image per seed into ``root/images/`` and write ``root/annotations.json``.

    Boxes are stored the COCO way, ``[x, y, width, height]``; ``area = w * h``.
    Returns the annotation file's path.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, seed in enumerate(seeds, start=1):
        pixels, objects = render_scene(seed, config)
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
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return ann_file


# --------------------------------------------------------------------------- #
# Loading any COCO-format folder
# --------------------------------------------------------------------------- #
def _load_annotation_file(ann_file: Path) -> dict[str, Any]:
    if not ann_file.is_file():
        raise DatasetError(f"{ann_file}: annotation file not found. Pass the path of a COCO-format JSON file.")
    try:
        data = json.loads(ann_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{ann_file}: not valid JSON ({err}). Fix the file or regenerate it.") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{ann_file}: expected a JSON object with keys 'images', 'annotations', 'categories'.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{ann_file}: missing list '{key}'. A COCO file needs 'images', 'annotations' and 'categories'.")
    return data


def _check_box(ann: dict[str, Any], image: dict[str, Any], ann_file: Path) -> list[float]:
    """Validate one COCO ``[x, y, w, h]`` box and return it as ``xyxy``."""
    where = f"{ann_file}: annotation id {ann.get('id')} (image '{image['file_name']}')"
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        raise DatasetError(f"{where}: 'bbox' must be a list of 4 numbers [x, y, width, height], got {bbox!r}.")
    x, y, w, h = (float(v) for v in bbox)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise DatasetError(f"{where}: bbox {bbox} has a non-finite value. Fix or delete this annotation.")
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
    return [x, y, x + w, y + h]


class CocoDetection(Dataset):
    """Detection samples from a COCO-format folder, validated up front.

    Args:
        ann_file: the COCO JSON file.
        image_dir: folder the ``file_name`` entries are relative to (default:
            ``images/`` beside ``ann_file``).

    ``dataset[i]`` returns ``(image, target)`` with ``image`` float32 (3, H, W) in
    [0, 1] and ``target = {"boxes": (N, 4) xyxy float32, "labels": (N,) int64,
    "image_id": int}``. Labels are contiguous ``1..K`` in the order of the sorted
    category ids; ``dataset.categories[k - 1]`` is label ``k``'s record and
    ``dataset.label_to_category_id`` maps back to the file's ids.

    Structure (JSON, ids, boxes, files present) is checked on construction;
    image bytes are decoded, and checked, when a sample is read
    (:meth:`verify_images` checks them all at once).
    """

    def __init__(self, ann_file: str | Path, image_dir: str | Path | None = None) -> None:
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir) if image_dir is not None else self.ann_file.parent / "images"
        data = _load_annotation_file(self.ann_file)

        self.categories = sorted(data["categories"], key=lambda c: c["id"])
        cat_to_label = {c["id"]: k for k, c in enumerate(self.categories, start=1)}
        self.label_to_category_id = {k: cid for cid, k in cat_to_label.items()}

        self.images: list[dict[str, Any]] = []
        by_id: dict[int, dict[str, Any]] = {}
        for img in data["images"]:
            if not all(k in img for k in ("id", "file_name", "width", "height")):
                raise DatasetError(f"{self.ann_file}: image entry {img!r} needs 'id', 'file_name', 'width', 'height'.")
            path = self.image_dir / img["file_name"]
            if not path.is_file():
                raise DatasetError(
                    f"{path}: image file listed in {self.ann_file.name} is missing. "
                    f"Put it in {self.image_dir} or remove image id {img['id']} from the JSON."
                )
            by_id[img["id"]] = img
            self.images.append(img)

        self._boxes: dict[int, list[list[float]]] = {img["id"]: [] for img in self.images}
        self._labels: dict[int, list[int]] = {img["id"]: [] for img in self.images}
        for ann in data["annotations"]:
            image = by_id.get(ann.get("image_id"))
            if image is None:
                raise DatasetError(
                    f"{self.ann_file}: annotation id {ann.get('id')} refers to unknown image_id {ann.get('image_id')!r}. "
                    "Add the image to 'images' or remove this annotation (or fix its image_id)."
                )
            if ann.get("category_id") not in cat_to_label:
                raise DatasetError(
                    f"{self.ann_file}: annotation id {ann.get('id')} has unknown category_id {ann.get('category_id')!r}; "
                    f"known ids are {sorted(cat_to_label)}. Add the category to 'categories' or fix the id."
                )
            self._boxes[image["id"]].append(_check_box(ann, image, self.ann_file))
            self._labels[image["id"]].append(cat_to_label[ann["category_id"]])

    def __len__(self) -> int:
        return len(self.images)

    def _read_image(self, img: dict[str, Any]) -> Tensor:
        path = self.image_dir / img["file_name"]
        try:
            with Image.open(path) as pil:
                pil = pil.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise DatasetError(f"{path}: cannot decode image ({err}). The file is corrupt or not an image; replace it.") from err
        if pil.size != (img["width"], img["height"]):
            raise DatasetError(
                f"{path}: image is {pil.size[0]}x{pil.size[1]} but {self.ann_file.name} says "
                f"{img['width']}x{img['height']}. Fix 'width'/'height' in the JSON."
            )
        return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float() / 255.0

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        img = self.images[index]
        target = {
            "boxes": torch.tensor(self._boxes[img["id"]], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(self._labels[img["id"]], dtype=torch.int64),
            "image_id": int(img["id"]),
        }
        return self._read_image(img), target

    def verify_images(self) -> None:
        """Decode every image once; raise :class:`DatasetError` on the first bad one."""
        for img in self.images:
            self._read_image(img)


class SyntheticShapes(Dataset):
    """The train split: ``length`` scenes rendered on the fly from ``seed + index``.

    Same sample format as :class:`CocoDetection`. Seeds of the shipped splits
    start at 1_000_000 (val) and 2_000_000 (test), so train seeds below that never
    collide with them.
    """

    def __init__(self, length: int, seed: int = 0, config: SceneConfig = SceneConfig()) -> None:
        if seed + length > 1_000_000:
            raise ValueError("train seeds must stay below 1_000_000 (the val/test seeds start there)")
        self.length, self.seed, self.config = length, seed, config
        self.categories = CATEGORIES

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        pixels, objects = render_scene(self.seed + index, self.config)
        image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0
        target = {
            "boxes": torch.tensor([o["bbox"] for o in objects], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([o["category_id"] for o in objects], dtype=torch.int64),
            "image_id": index,
        }
        return image, target


def collate_detection(batch: list[tuple[Tensor, dict[str, Any]]]) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """Keep images and targets as lists (objects per image differ), like torchvision."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def materialize(dataset: Dataset, progress: bool = True) -> list[tuple[Tensor, dict[str, Any]]]:
    """Read every sample once into a list, so later epochs skip rendering/decoding."""
    return [dataset[i] for i in tqdm(range(len(dataset)), desc="preparing images", disable=not progress, leave=False)]


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
