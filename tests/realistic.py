"""A small real-world-like COCO set for the data tools (check-data, import, training on it).

Five images of different non-square sizes and formats (JPEG, PNG, grayscale, RGBA), image ids
10..50, category ids 9, 2, 5 (non-contiguous, listed out of order), polygons (one instance in
two parts), compressed and uncompressed RLE, a crowd region, and an image with no annotations.
`EXPECTED` holds its statistics, counted by hand from the list below.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import torch
from helpers import uncompressed_rle
from PIL import Image

from blendmask_edu.engine.coco_eval import encode_masks

CATEGORIES = [{"id": 9, "name": "person"}, {"id": 2, "name": "car"}, {"id": 5, "name": "dog"}]
# id, file name, width, height, PIL mode
IMAGES = [
    (10, "street_01.jpg", 160, 120, "RGB"),
    (20, "street_02.png", 96, 128, "RGB"),
    (30, "park_03.png", 120, 80, "L"),
    (40, "empty_04.jpg", 100, 60, "RGB"),
    (50, "park_05.png", 64, 100, "RGBA"),
]


def _rect(x0, y0, x1, y1) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _rect_mask(h, w, x0, y0, x1, y1) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask  # [H, W]


def _disk_mask(h, w, cx, cy, r) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (((xx - cx) ** 2 + (yy - cy) ** 2) <= r**2).astype(np.uint8)  # [H, W]


def compressed_rle(mask: np.ndarray) -> dict:
    return encode_masks(torch.from_numpy(mask)[None])[0]  # the library's encoder (pycocotools)


# annotation id, image id, category id, segmentation (h, w → COCO segmentation), iscrowd;
# sizes by area: large ≥ 96², medium ≥ 32², small below.
ANNOTATIONS = [
    (101, 10, 2, lambda h, w: [_rect(20, 20, 140, 110)], 0),  # car 120×90: large
    (102, 10, 9, lambda h, w: [_rect(60, 30, 90, 75)], 0),  # person 30×45: medium
    (103, 20, 9, lambda h, w: [_rect(10, 10, 40, 40), _rect(10, 50, 40, 70)], 0),  # 2 parts: medium
    (104, 20, 5, lambda h, w: compressed_rle(_disk_mask(h, w, 70, 100, 12)), 0),  # dog: small
    (105, 20, 9, lambda h, w: uncompressed_rle(_rect_mask(h, w, 5, 100, 45, 120)), 1),  # crowd
    (106, 30, 5, lambda h, w: [[10.0, 60.0, 30.0, 40.0, 50.0, 60.0]], 0),  # dog triangle: small
    (107, 30, 5, lambda h, w: [_rect(70, 50, 90, 70)], 0),  # dog 20×20: small
    (108, 30, 9, lambda h, w: [_rect(100, 10, 115, 45)], 0),  # person 15×35: small
    (109, 50, 2, lambda h, w: compressed_rle(_rect_mask(h, w, 5, 20, 55, 70)), 0),  # car: medium
]

EXPECTED = {
    "images": 5,
    "empty_images": 1,
    "instances": 8,
    "crowd_annotations": 1,
    "images_with_crowd": 1,
    "per_category": {"car": 2, "dog": 3, "person": 3},  # category id order: 2, 5, 9
    "instances_per_image": {"min": 0, "mean": 1.6, "max": 3},
    "sizes": {"small": 4, "medium": 3, "large": 1},
}


def make_realistic_coco(root: Path) -> Path:
    """Write root/annotations.json and root/images/*; return root."""
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    sizes = {}
    images = []
    for image_id, name, w, h, mode in IMAGES:
        channels = {"L": (h, w), "RGB": (h, w, 3), "RGBA": (h, w, 4)}[mode]
        pixels = rng.integers(0, 256, channels, dtype=np.uint8)
        Image.fromarray(pixels, mode).save(root / "images" / name)
        sizes[image_id] = (h, w)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
    annotations = []
    for ann_id, image_id, cat_id, make_seg, crowd in ANNOTATIONS:
        h, w = sizes[image_id]
        seg = make_seg(h, w)
        if isinstance(seg, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        elif isinstance(seg["counts"], list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
        annotations.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": cat_id,
                "segmentation": seg,
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],  # the mask's tight box
                "area": float(mask_utils.area(rle)),
                "iscrowd": crowd,
            }
        )
    data = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / "annotations.json").write_text(json.dumps(data, indent=1))
    return root
