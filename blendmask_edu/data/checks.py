"""The checks a COCO instances set must pass, shared by the loader and `check-data`.

Every check *describes* what is wrong as a `Problem` (file, field, message) instead of raising:

    json_problems(data, json_path)      structure, ids, boxes, segmentation format (no image read)
    read_image_file(path, info, ...)    the image file opens and has the size the JSON says
    decode_annotation(ann, h, w, ...)   the mask decodes and agrees with its box

`CocoInstances` raises the first error as a `DatasetError` (`raise_first_error`), so training
stops at once; `check-data` collects them all. An "error" is something training refuses; a
"warning" is allowed but worth a look (a category without instances, a tiny box off its mask).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

BOX_TOLERANCE = 1.0  # pixels a bbox may stick out of its image (rounding in annotation tools)
MIN_MASK_BOX_IOU = 0.5  # a mask's own box must overlap the annotation's bbox at least this much
SMALL_BOX_SIDE = 8.0  # below this (pixels), a mask/box disagreement is only a warning (rounding)


class DatasetError(ValueError):
    """A dataset file is missing, malformed, or disagrees with itself."""


@dataclass(frozen=True)
class Problem:
    file: str  # the file at fault: the annotation JSON or an image
    field: str  # where, e.g. "annotations[3] (id 4).bbox"
    message: str  # what is wrong
    severity: str = "error"  # "error" (training refuses it) | "warning"
    image_id: int | None = None  # the image concerned, when there is one

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.message}"


def raise_first_error(problems: Iterable[Problem]) -> None:
    """What the loader does with the checks: stop at the first error, ignore warnings."""
    for problem in problems:
        if problem.severity == "error":
            raise DatasetError(str(problem))


# ---------------------------------------------------------------------------------------
# The JSON: structure, ids, boxes, segmentation format
# ---------------------------------------------------------------------------------------


def json_problems(data: dict, json_path: Path) -> Iterator[Problem]:
    """Every inconsistency between images, categories and annotations, in file order.

    Lazy: the loader stops at the first error, `check-data` reads them all. A field that
    cannot be checked because another one is broken (the bbox of an annotation whose image is
    unknown) is skipped rather than reported twice.
    """
    file = str(json_path)
    cat_ids = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or "name" not in cat:
            yield Problem(file, f"categories[{i}]", "needs an integer 'id' and a 'name'")
        elif cat["id"] in cat_ids:
            yield Problem(file, f"categories[{i}].id", f"duplicate category id {cat['id']}")
        else:
            cat_ids.add(cat["id"])
    images = {}  # id → (index, entry) of images with a usable size
    seen_images, seen_files = set(), {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not isinstance(img.get("id"), int):
            yield Problem(file, f"images[{i}].id", "missing or not an integer")
            continue
        if img["id"] in seen_images:
            yield Problem(file, f"images[{i}].id", f"duplicate image id {img['id']}")
            continue
        seen_images.add(img["id"])
        where = f"images[{i}].{{}} (image id {img['id']})"
        name = img.get("file_name")
        if not isinstance(name, str):
            yield Problem(file, where.format("file_name"), "missing or not a string")
        elif name in seen_files:
            msg = f"{name!r} is also images[{seen_files[name]}]'s file"
            yield Problem(file, where.format("file_name"), msg, "warning", img["id"])
        else:
            seen_files[name] = i
        bad_size = [k for k in ("width", "height") if not _positive_int(img.get(k))]
        for key in bad_size:
            yield Problem(file, where.format(key), "not a positive integer", image_id=img["id"])
        if not bad_size:
            images[img["id"]] = (i, img)
    ann_ids, used_cats = set(), set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not isinstance(ann.get("id"), int):
            yield Problem(file, f"annotations[{i}].id", "missing or not an integer")
            continue
        if ann["id"] in ann_ids:
            yield Problem(file, f"annotations[{i}].id", f"duplicate annotation id {ann['id']}")
        ann_ids.add(ann["id"])
        where = f"annotations[{i}] (id {ann['id']})"
        image_id, cat_id = ann.get("image_id"), ann.get("category_id")
        image_id = image_id if isinstance(image_id, int) else repr(image_id)  # hashable
        if not isinstance(cat_id, int) or cat_id not in cat_ids:
            msg = f"{cat_id!r} is not in categories {sorted(cat_ids)}"
            yield Problem(file, f"{where}.category_id", msg, image_id=image_id)
        elif not ann.get("iscrowd", 0):
            used_cats.add(cat_id)
        if image_id not in images:
            known = "is not an image id" if image_id not in seen_images else "has no valid size"
            yield Problem(file, f"{where}.image_id", f"{image_id} {known}")
            continue
        height, width = images[image_id][1]["height"], images[image_id][1]["width"]
        problem = bbox_problem(ann.get("bbox"), height, width)
        if problem:
            yield Problem(file, f"{where}.bbox", problem, image_id=image_id)
        problem = segmentation_problem(ann.get("segmentation"), height, width)
        if problem:
            yield Problem(file, f"{where}.segmentation", problem, image_id=image_id)
    for i, cat in enumerate(data["categories"]):
        if isinstance(cat, dict) and cat.get("id") in cat_ids - used_cats:
            msg = f"{cat.get('name')!r} (id {cat['id']}) has no instances: the model never sees it"
            yield Problem(file, f"categories[{i}]", msg, "warning")


def _positive_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def bbox_problem(bbox, height: int, width: int) -> str | None:
    """Describe what is wrong with a COCO `[x, y, w, h]` box, or return None."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
        return f"expected [x, y, width, height] numbers, got {bbox!r}"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return f"degenerate box: width and height must be positive, got {bbox}"
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        return f"{bbox} lies outside the {width}x{height} image"
    return None


def _is_polygon(poly) -> bool:
    """A flat list [x1, y1, x2, y2, ...] of at least 3 points."""
    return (
        isinstance(poly, list)
        and len(poly) >= 6
        and len(poly) % 2 == 0
        and all(map(_is_number, poly))
    )


def segmentation_problem(seg, height: int, width: int) -> str | None:
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
# The image files
# ---------------------------------------------------------------------------------------


def read_image_file(
    path: Path, info: dict, index: int, json_path: Path
) -> tuple[np.ndarray | None, Problem | None]:
    """Read an image as RGB uint8 `[H, W, 3]` and check its size against `images[index]`.

    → (pixels, None), or (None, the problem) when the file is missing, unreadable, or its size
    disagrees with the JSON's width/height (a swapped height/width is the classic case).
    """
    image_id = info["id"]
    try:
        with Image.open(path) as pil:
            rgb = np.asarray(pil.convert("RGB"))  # grayscale, palette, RGBA → RGB; decodes all
    except Exception as e:  # missing, unreadable or truncated file
        field = f"images[{index}].file_name (image id {image_id})"
        return None, Problem(str(path), field, f"cannot read image: {e}", image_id=image_id)
    if rgb.shape[:2] != (info["height"], info["width"]):
        (h, w), field = rgb.shape[:2], f"images[{index}].height/width (image id {image_id})"
        swapped = " (swapped?)" if (h, w) == (info["width"], info["height"]) else ""
        msg = (
            f"the file is {h}x{w} (HxW) but {json_path.name} says {info['height']}x{info['width']}"
        )
        return None, Problem(str(path), field, msg + swapped, image_id=image_id)
    return rgb, None


# ---------------------------------------------------------------------------------------
# Masks: decoding, and agreement with the box
# ---------------------------------------------------------------------------------------


def decode_annotation(
    ann: dict, height: int, width: int, where: str, json_path: Path
) -> tuple[np.ndarray | None, list[Problem]]:
    """Decode `ann["segmentation"]` → (mask uint8 `[H, W]` or None, problems).

    Problems: the segmentation does not decode, or the mask lies elsewhere than `ann["bbox"]`.
    `where` names the annotation, e.g. "annotations[3] (id 4)".
    """
    file, image_id = str(json_path), ann.get("image_id")
    try:
        mask = segmentation_to_mask(ann["segmentation"], height, width)  # [H, W]
    except (KeyError, ValueError, TypeError) as e:
        msg = f"does not decode: {e}"
        return None, [Problem(file, f"{where}.segmentation", msg, image_id=image_id)]
    if bbox_problem(ann.get("bbox"), height, width):  # reported by json_problems already
        return mask, []
    disagreement = mask_box_problem(mask, ann["bbox"])
    if disagreement is None:
        return mask, []
    severity, msg = disagreement
    return mask, [Problem(file, f"{where}.segmentation/bbox", msg, severity, image_id)]


def mask_box_problem(mask: np.ndarray, bbox) -> tuple[str, str] | None:
    """(severity, message) when a decoded mask `[H, W]` and its `[x, y, w, h]` box disagree.

    The mask's own box must overlap `bbox` with IoU ≥ 0.5. For boxes under 8 pixels a side,
    rasterisation alone can break that, so there it is only a warning.
    """
    x, y, w, h = bbox
    severity = "warning" if min(w, h) < SMALL_BOX_SIDE else "error"
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return severity, f"decodes to an empty mask, but bbox is {w:g}x{h:g} px"
    mx0, my0, mx1, my1 = cols[0], rows[0], cols[-1] + 1, rows[-1] + 1  # pixel edges
    inter_w = max(0.0, min(mx1, x + w) - max(mx0, x))
    inter_h = max(0.0, min(my1, y + h) - max(my0, y))
    inter = inter_w * inter_h
    iou = inter / ((mx1 - mx0) * (my1 - my0) + w * h - inter)
    if iou >= MIN_MASK_BOX_IOU:
        return None
    mask_box = [int(mx0), int(my0), int(mx1 - mx0), int(my1 - my0)]
    return severity, f"the mask's box {mask_box} and bbox {bbox} overlap with IoU {iou:.2f} (< 0.5)"


def segmentation_to_mask(seg, height: int, width: int) -> np.ndarray:
    """Decode a COCO polygon list or RLE (compressed or not) into a uint8 mask `[H, W]`.

    Raises ValueError with the reason when it does not decode.
    """
    problem = segmentation_problem(seg, height, width)
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
