"""`blendmask-edu predict`: a checkpoint on image files → predictions.json + overlay PNGs.

The checkpoint carries the category names and the dataset's own category ids, so no
training data is needed here. predictions.json is in the COCO results format (one entry per
detection: image_id, file_name, category_id, bbox [x, y, w, h], score, segmentation as RLE);
image ids are the images' positions on the command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.ops import box_convert

from ..data.transforms import build_transforms
from ..viz.overlay import save_overlay
from .checkpoint import model_from_checkpoint
from .coco_eval import encode_masks
from .trainer import resolve_device


def read_image(path: Path) -> torch.Tensor:
    """An image file → float [3, H, W] in [0, 1], with a clear error for a bad file."""
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such image") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: cannot read image ({err})") from err
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0


def to_coco_entries(image_id: int, file_name: str, res: dict, label_to_cat_id: dict) -> list:
    entries = []
    boxes = box_convert(res["boxes"].float(), "xyxy", "xywh")  # [N, 4] COCO (x, y, w, h)
    rles = encode_masks(res["masks"]) if "masks" in res else None  # masks cut at 0.5
    for i in range(len(res["boxes"])):
        entry = {
            "image_id": image_id,
            "file_name": file_name,
            "category_id": label_to_cat_id[int(res["labels"][i])],
            "bbox": boxes[i].tolist(),
            "score": float(res["scores"][i]),
        }
        if rles is not None:
            entry["segmentation"] = rles[i]
        entries.append(entry)
    return entries


@torch.inference_mode()
def predict_images(checkpoint, images, output_dir, device="auto", score_thresh=0.5) -> list:
    device = resolve_device(device)
    model, cfg, categories = model_from_checkpoint(checkpoint, device)
    # The detector drops candidates below its own threshold (0.05) before NMS; a lower
    # --score-thresh asks to see those too, so lower the detector's threshold with it.
    model.fcos.cfg.score_thresh = min(model.fcos.cfg.score_thresh, score_thresh)
    label_to_cat_id = {i + 1: c["id"] for i, c in enumerate(categories)}
    class_names = [c["name"] for c in categories]
    resize = build_transforms(cfg.data, train=False)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for image_id, name in enumerate(images):
        path = Path(name)
        image = read_image(path)
        resized, _ = resize(image, None)
        res = model([resized.to(device)], orig_sizes=[tuple(image.shape[-2:])])[0]
        res = {k: v.cpu() for k, v in res.items()}
        entries += [
            e
            for e in to_coco_entries(image_id, path.name, res, label_to_cat_id)
            if e["score"] >= score_thresh
        ]
        save_overlay(image, res, out / f"{path.stem}_pred.png", class_names, score_thresh)
    (out / "predictions.json").write_text(json.dumps(entries) + "\n")
    print(
        f"wrote {out / 'predictions.json'} ({len(entries)} detections ≥ {score_thresh}) "
        f"and {len(images)} overlay PNGs"
    )
    return entries
