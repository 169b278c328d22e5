"""Run a model over a dataset and score it with COCO AP (box and, with masks, segm)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.batching import collate
from .coco_eval import evaluate_coco


@torch.inference_mode()
def predict_dataset(model, dataset, device, batch_size: int = 8, progress: bool = True):
    """→ list of per-image predictions {"image_id", "boxes", "scores", "labels"[, "masks"]}
    at each image's original size, on the CPU."""
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=0)
    predictions = []
    for images, targets in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        images = [im.to(device) for im in images]
        orig_sizes = [tuple(int(s) for s in t["orig_size"]) for t in targets]
        for target, res in zip(targets, model(images, orig_sizes=orig_sizes)):
            res = {k: v.cpu() for k, v in res.items()}
            res["image_id"] = int(target["image_id"])
            predictions.append(res)
    model.train(was_training)
    return predictions


def evaluate_model(model, dataset, device, batch_size: int = 8, progress: bool = True) -> dict:
    """COCO metrics {"bbox": {...}, "segm": {...}} of `model` on `dataset` (a CocoInstances)."""
    predictions = predict_dataset(model, dataset, device, batch_size, progress)
    has_masks = any("masks" in p for p in predictions) or _has_mask_branch(model)
    iou_types = ("bbox", "segm") if has_masks else ("bbox",)
    return evaluate_coco(dataset.coco, predictions, dataset.label_to_cat_id, iou_types)


def _has_mask_branch(model) -> bool:
    model = getattr(model, "module", model)
    return getattr(model, "mask_branch", None) is not None
