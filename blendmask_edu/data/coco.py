"""COCO instance segmentation as a PyTorch dataset (pycocotools underneath).

    dataset = CocoInstances("data/shapes_train")   # DIR/annotations.json + DIR/images/
    image, target = dataset[0]
    # image: float32 [3, H, W] in [0, 1]
    # target: boxes [N, 4] xyxy, labels [N] in 1..C, masks uint8 [N, H, W], image_id,
    #         orig_size (H, W) as read from disk, size (H, W) after the transforms

COCO category ids may have gaps (COCO itself uses 1..90 for 80 classes); the model wants
contiguous labels, so category ids are sorted and numbered 1..C (0 is left for background).
`cat_id_to_label` / `label_to_cat_id` translate both ways; evaluation uses the second one.

Bad input fails early with a `DatasetError` that names the file and the field: the JSON
structure is checked when the dataset is built, images and masks when an item is read.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import NoReturn

import numpy as np
import pycocotools.mask as mask_utils
import torch
from PIL import Image
from pycocotools.coco import COCO

BOX_TOLERANCE = 1.0  # pixels a bbox may stick out of its image (rounding in annotation tools)


class DatasetError(ValueError):
    """A dataset file is missing, malformed, or disagrees with itself."""


# ---------------------------------------------------------------------------------------
# Where the annotations and the images are
# ---------------------------------------------------------------------------------------


def resolve_dataset(path: str | Path) -> tuple[Path, Path]:
    """Return `(json_path, image_root)` for a dataset argument.

    A directory means `DIR/annotations.json` with images under `DIR/images/`. A JSON file
    means a COCO file whose `file_name`s resolve relative to the JSON's folder or its
    `images/` subfolder, whichever holds the first image.
    """
    json_path = _json_path(path)
    return json_path, _image_root(json_path, load_coco_json(json_path), Path(path).is_dir())


def _json_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "annotations.json"
    if not path.is_file():
        raise DatasetError(f"{path}: no such annotation file")
    return path


def _image_root(json_path: Path, data: dict, is_dir: bool) -> Path:
    """Pick the folder the `file_name`s are relative to, by looking for the first image."""
    folder = json_path.parent
    candidates = [folder / "images"] if is_dir else [folder, folder / "images"]
    if not data["images"]:
        return candidates[-1]
    file_name = data["images"][0]["file_name"]
    for root in candidates:
        if (root / file_name).is_file():
            return root
    tried = " or ".join(str(root / file_name) for root in candidates)
    raise DatasetError(f"{json_path}: images[0].file_name {file_name!r}: not found at {tried}")


# ---------------------------------------------------------------------------------------
# Reading and checking the JSON (structure only: no image is opened here)
# ---------------------------------------------------------------------------------------


def load_coco_json(json_path: Path) -> dict:
    """Parse a COCO instances file and check it has the three lists COCO needs."""
    try:
        data = json.loads(Path(json_path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{json_path}: not a readable JSON file ({e})") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{json_path}: a COCO file is a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{json_path}: not a COCO instances file: missing list {key!r}")
    return data


def validate_coco(data: dict, json_path: Path) -> None:
    """Raise `DatasetError` on the first inconsistency between images, categories, annotations."""

    def fail(where: str, problem: str) -> NoReturn:
        raise DatasetError(f"{json_path}: {where}: {problem}")

    cat_ids = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or "name" not in cat:
            fail(f"categories[{i}]", "needs an integer 'id' and a 'name'")
        if cat["id"] in cat_ids:
            fail(f"categories[{i}].id", f"duplicate category id {cat['id']}")
        cat_ids.add(cat["id"])
    images = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not isinstance(img.get("id"), int):
            fail(f"images[{i}].id", "missing or not an integer")
        if img["id"] in images:
            fail(f"images[{i}].id", f"duplicate image id {img['id']}")
        if not isinstance(img.get("file_name"), str):
            fail(f"images[{i}].file_name (image id {img['id']})", "missing or not a string")
        for key in ("width", "height"):
            if not isinstance(img.get(key), int) or img[key] <= 0:
                fail(f"images[{i}].{key} (image id {img['id']})", "not a positive integer")
        images[img["id"]] = img
    ann_ids = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "id" not in ann:
            fail(f"annotations[{i}].id", "missing")
        if ann["id"] in ann_ids:
            fail(f"annotations[{i}].id", f"duplicate annotation id {ann['id']}")
        ann_ids.add(ann["id"])
        where = f"annotations[{i}] (id {ann['id']})"
        if ann.get("category_id") not in cat_ids:
            cid = ann.get("category_id")
            fail(f"{where}.category_id", f"{cid!r} is not in categories {sorted(cat_ids)}")
        if ann.get("image_id") not in images:
            fail(f"{where}.image_id", f"{ann.get('image_id')!r} is not an image id")
        img = images[ann["image_id"]]
        problem = _bbox_problem(ann.get("bbox"), img["height"], img["width"])
        if problem:
            fail(f"{where}.bbox", problem)
        problem = _segmentation_problem(ann.get("segmentation"), img["height"], img["width"])
        if problem:
            fail(f"{where}.segmentation", problem)


def _bbox_problem(bbox, height: int, width: int) -> str | None:
    """Describe what is wrong with a COCO `[x, y, w, h]` box, or return None."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
        return f"expected [x, y, width, height] numbers, got {bbox!r}"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return f"width and height must be positive, got {bbox}"
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        return f"{bbox} lies outside the {width}x{height} image"
    return None


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_polygon(poly) -> bool:
    """A flat list [x1, y1, x2, y2, ...] of at least 3 points."""
    return (
        isinstance(poly, list)
        and len(poly) >= 6
        and len(poly) % 2 == 0
        and all(map(_is_number, poly))
    )


def _segmentation_problem(seg, height: int, width: int) -> str | None:
    """Cheap structural check of a polygon list or RLE dict (no decoding)."""
    if isinstance(seg, list):
        if not seg:
            return "empty polygon list"
        if not all(_is_polygon(poly) for poly in seg):
            return "each polygon must be a flat list [x1, y1, x2, y2, ...] of >= 3 points"
        return None
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        counts = seg["counts"]
        if seg["size"] != [height, width]:
            return f"RLE size {seg['size']} differs from the image's [height, width]"
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts):
                return "uncompressed RLE counts must be non-negative integers"
            if sum(counts) != height * width:
                return f"uncompressed RLE counts sum to {sum(counts)}, not {height * width}"
        elif not isinstance(counts, (str, bytes)):
            return "RLE counts must be a list of run lengths or a compressed string"
        return None
    return "expected a list of polygons or an RLE dict with 'counts' and 'size'"


# ---------------------------------------------------------------------------------------
# Decoding masks
# ---------------------------------------------------------------------------------------


def segmentation_to_mask(seg, height: int, width: int) -> np.ndarray:
    """Decode a COCO polygon list or RLE (compressed or not) into a uint8 mask `[H, W]`.

    Raises ValueError with the reason when it does not decode.
    """
    problem = _segmentation_problem(seg, height, width)
    if problem:
        raise ValueError(problem)
    if isinstance(seg, list):  # polygons → one RLE per polygon → their union
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):  # uncompressed RLE → compressed
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = {"size": [height, width], "counts": seg["counts"]}
        _check_rle_string(seg["counts"], height * width)
    return mask_utils.decode(rle)  # [H, W] uint8


def _check_rle_string(counts: str | bytes, num_pixels: int) -> None:
    """Check that a compressed RLE string has non-negative runs covering every pixel once.

    pycocotools decodes without checking bounds, so a corrupt string can yield garbage.
    Format: each run length is written in 5-bit groups (char − 48), low bits first, 0x20
    meaning "another group follows" and 0x10 in the last group the sign; from the third run
    on, the value stored is the difference to the run two places before.
    """
    text = counts.decode("ascii") if isinstance(counts, bytes) else counts
    runs: list[int] = []
    value, shift = 0, 0
    for char in text:
        group = ord(char) - 48
        if not 0 <= group < 64:
            raise ValueError(f"invalid character {char!r} in compressed RLE")
        value |= (group & 0x1F) << shift
        shift += 5
        if group & 0x20:
            continue
        if group & 0x10:  # negative: sign-extend
            value -= 1 << shift
        runs.append(value + (runs[-2] if len(runs) > 2 else 0))
        value, shift = 0, 0
    if shift or any(r < 0 for r in runs) or sum(runs) != num_pixels:
        raise ValueError(f"compressed RLE does not cover the {num_pixels} pixels of the image")


# ---------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------


class CocoInstances(torch.utils.data.Dataset):
    """COCO instances as `(image, target)` pairs with torchvision detection conventions.

    `transforms` is a callable `(image, target) -> (image, target)` (see `transforms.py`).
    Images without annotations are kept (empty targets); `iscrowd=1` annotations are left
    out of the targets (COCOeval still uses them, through `self.coco`, as ignore regions).
    """

    def __init__(self, path: str | Path, transforms=None, validate: bool = True):
        self.json_path = _json_path(path)
        data = load_coco_json(self.json_path)
        if validate:
            validate_coco(data, self.json_path)
        self.image_root = _image_root(self.json_path, data, Path(path).is_dir())
        for ann in data["annotations"]:  # COCOeval needs both; fill the usual defaults
            ann.setdefault("iscrowd", 0)
            ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()
        self._ann_index = {ann["id"]: i for i, ann in enumerate(data["annotations"])}
        self._image_index = {img["id"]: i for i, img in enumerate(data["images"])}

        self.categories = sorted(
            ({"id": c["id"], "name": c["name"]} for c in data["categories"]),
            key=lambda c: c["id"],
        )
        self.cat_id_to_label = {c["id"]: i + 1 for i, c in enumerate(self.categories)}
        self.label_to_cat_id = {label: cid for cid, label in self.cat_id_to_label.items()}
        self.class_names = [c["name"] for c in self.categories]  # index = label − 1
        self.image_ids = [img["id"] for img in data["images"]]
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image_id = self.image_ids[index]
        image = self.load_image(image_id)  # [3, H, W]
        target = self.load_target(image_id)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def image_path(self, image_id: int) -> Path:
        return self.image_root / self.coco.imgs[image_id]["file_name"]

    def load_image(self, image_id: int) -> torch.Tensor:
        """Read an image file as float32 RGB `[3, H, W]` in [0, 1] and check its size."""
        path, info = self.image_path(image_id), self.coco.imgs[image_id]
        try:
            with Image.open(path) as pil:
                pil = pil.convert("RGB")  # grayscale, palette, RGBA → RGB
        except Exception as e:  # missing, unreadable or corrupt file
            raise DatasetError(f"{path} (image id {image_id}): cannot read image: {e}") from e
        if (pil.height, pil.width) != (info["height"], info["width"]):
            where = f"images[{self._image_index[image_id]}].height/width"
            raise DatasetError(
                f"{path} (image id {image_id}): file is {pil.height}x{pil.width} (HxW) but "
                f"{self.json_path} {where} say {info['height']}x{info['width']}"
            )
        array = np.asarray(pil, dtype=np.uint8)  # [H, W, 3]
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0  # [3, H, W]

    def load_target(self, image_id: int) -> dict:
        """Boxes, contiguous labels and masks of the non-crowd instances of one image."""
        info = self.coco.imgs[image_id]
        height, width = info["height"], info["width"]
        anns = [a for a in self.coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        masks = [self._decode(ann, height, width) for ann in anns]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        labels = [self.cat_id_to_label[a["category_id"]] for a in anns]
        if masks:
            masks = torch.from_numpy(np.stack(masks))  # [N, H, W] uint8
        else:
            masks = torch.zeros((0, height, width), dtype=torch.uint8)
        size = torch.tensor([height, width], dtype=torch.int64)
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),  # [N, 4] xyxy
            "labels": torch.tensor(labels, dtype=torch.int64),  # [N]
            "masks": masks,  # [N, H, W]
            "image_id": image_id,
            "orig_size": size,
            "size": size.clone(),
        }

    def _decode(self, ann: dict, height: int, width: int) -> np.ndarray:
        try:
            return segmentation_to_mask(ann["segmentation"], height, width)  # [H, W]
        except (KeyError, ValueError, TypeError) as e:
            where = f"annotations[{self._ann_index[ann['id']]}] (id {ann['id']}).segmentation"
            raise DatasetError(f"{self.json_path}: {where}: does not decode: {e}") from e
