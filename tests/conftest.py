"""Shared test fixtures.

`tiny_coco`: a three-image COCO dataset written into tmp_path, with category ids 3 and 7
(non-contiguous, listed out of order), polygon / compressed RLE / uncompressed RLE masks, a
crowd annotation, a grayscale image and a background (RGBA) image with no annotations.
`real_coco`: a five-image real-world-like set (tests/realistic.py), written into tmp_path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from helpers import uncompressed_rle
from PIL import Image


@dataclass
class TinyCoco:
    root: Path  # root/annotations.json, root/images/{a,b,c}.png
    json_path: Path
    data: dict  # the JSON content (a fresh copy per test: mutate freely)
    masks: dict  # annotation id → the mask it encodes, uint8 [H, W]

    def write(self, data: dict, name: str = "modified.json") -> Path:
        """Write `data` next to annotations.json (so images still resolve); return its path."""
        path = self.root / name
        path.write_text(json.dumps(data))
        return path


def _disk(height: int, width: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2).astype(np.uint8)  # [H, W]


def _annotation(ann_id, image_id, category_id, segmentation, mask, iscrowd=0) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": segmentation,
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],  # tight box of the mask
        "area": float(mask_utils.area(rle)),
        "iscrowd": iscrowd,
    }


def make_tiny_coco(root: Path) -> TinyCoco:
    """Write the tiny dataset under `root` and describe it."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(root / "images/a.png")
    Image.fromarray(rng.integers(0, 256, (32, 48), dtype=np.uint8)).save(root / "images/b.png")
    Image.fromarray(rng.integers(0, 256, (24, 24, 4), dtype=np.uint8)).save(root / "images/c.png")

    polygon = [[10.0, 5.0, 30.0, 5.0, 30.0, 25.0, 10.0, 25.0]]  # a square, image a
    square = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, 40, 60)))
    disk = _disk(40, 60, cy=20, cx=45, r=8)
    disk_rle = mask_utils.encode(np.asfortranarray(disk))
    crowd = np.zeros((40, 60), np.uint8)
    crowd[30:38, 2:20] = 1
    bar = np.zeros((32, 48), np.uint8)
    bar[4:12, 6:40] = 1
    triangle = [[5.0, 30.0, 20.0, 15.0, 35.0, 30.0]]  # image b
    tri = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(triangle, 32, 48)))

    compressed = {"size": [40, 60], "counts": disk_rle["counts"].decode("ascii")}
    annotations = [
        _annotation(1, 1, 3, polygon, square),
        _annotation(2, 1, 7, compressed, disk),
        _annotation(3, 1, 3, uncompressed_rle(crowd), crowd, iscrowd=1),
        _annotation(4, 2, 7, uncompressed_rle(bar), bar),
        _annotation(5, 2, 3, triangle, tri),
    ]
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 40, "width": 60},
            {"id": 2, "file_name": "b.png", "height": 32, "width": 48},
            {"id": 5, "file_name": "c.png", "height": 24, "width": 24},
        ],
        "annotations": annotations,
        "categories": [{"id": 7, "name": "disk"}, {"id": 3, "name": "square"}],
    }
    json_path = root / "annotations.json"
    json_path.write_text(json.dumps(data))
    masks = {1: square, 2: disk, 3: crowd, 4: bar, 5: tri}
    return TinyCoco(root=root, json_path=json_path, data=data, masks=masks)


@pytest.fixture
def tiny_coco(tmp_path) -> TinyCoco:
    return make_tiny_coco(tmp_path / "tiny_coco")


@pytest.fixture
def real_coco(tmp_path) -> Path:
    from realistic import make_realistic_coco

    return make_realistic_coco(tmp_path / "real_coco")


@pytest.fixture(scope="session")
def shapes_small(tmp_path_factory) -> Path:
    """A 12-image 64×64 shapes dataset (seed 3), made once per test session."""
    from blendmask_edu.data.shapes import make_shapes

    return make_shapes(tmp_path_factory.mktemp("shapes") / "small", 12, 64, seed=3)
