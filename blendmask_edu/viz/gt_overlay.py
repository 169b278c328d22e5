"""Ground truth drawn over its images (`check-data --overlays`): masks, boxes, class names.

Drawn straight from the JSON, so faulty annotations show too: a box beside its mask is what a
"mask disagrees with its box" error looks like. Crowd regions are tagged "(crowd)".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_convert

from ..data.checks import read_image_file, segmentation_to_mask
from .overlay import save_overlay


def save_gt_overlays(
    data: dict,
    json_path: Path,
    image_root: Path,
    out_dir: str | Path,
    num: int = 8,
    first_ids=(),
) -> list[Path]:
    """Write `<file stem>_gt.png` for up to `num` readable images; `first_ids` go first (the
    images with problems), then the others in file order. Returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = {}
    for index, img in enumerate(data["images"]):
        if isinstance(img, dict) and isinstance(img.get("file_name"), str):
            images.setdefault(img.get("id"), (index, img))
    order = [i for i in dict.fromkeys(first_ids) if i in images]
    order += [i for i in images if i not in order]
    names = {}
    for c in data["categories"]:
        if isinstance(c, dict):
            names.setdefault(c.get("id"), c.get("name"))  # a duplicate id keeps its first name
    written = []
    for image_id in order:
        if len(written) == num:
            break
        index, info = images[image_id]
        pixels, problem = read_image_file(image_root / info["file_name"], info, index, json_path)
        if problem:
            continue  # unreadable or the wrong size: check-data reports it
        anns = [a for a in data["annotations"] if isinstance(a, dict)]
        anns = [a for a in anns if a.get("image_id") == image_id]
        result = gt_instances(anns, names, *pixels.shape[:2])
        path = out / f"{Path(info['file_name']).stem}_gt.png"
        save_overlay(pixels, result, path, class_names=result.pop("names"))
        written.append(path)
    return written


def gt_instances(anns: list[dict], cat_names: dict, height: int, width: int) -> dict:
    """Annotations → {"boxes" [N, 4] xyxy, "labels" [N] = 1..N, "masks" [N, H, W], "names"}:
    one label per instance, so each gets its own colour and its own tag."""
    boxes, masks, names = [], [], []
    for ann in anns:
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):
            continue
        try:
            mask = segmentation_to_mask(ann.get("segmentation"), height, width)  # [H, W]
        except (ValueError, TypeError, KeyError):
            mask = np.zeros((height, width), np.uint8)  # does not decode: the box alone
        boxes.append(bbox)  # COCO [x, y, w, h]
        masks.append(mask)
        name = str(cat_names.get(ann.get("category_id"), f"id {ann.get('category_id')}?"))
        names.append(name + (" (crowd)" if ann.get("iscrowd", 0) else ""))
    return {
        "boxes": box_convert(torch.tensor(boxes).reshape(-1, 4).float(), "xywh", "xyxy"),  # [N, 4]
        "labels": torch.arange(1, len(boxes) + 1),  # [N]
        "masks": torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, height, width),
        "names": names,
    }
