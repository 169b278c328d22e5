"""Run a model over a dataset and score it with COCO AP (box and, with masks, segm), overall
and per category; when AP is below 0.01, say why (`diagnose.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.batching import collate
from ..modeling.segmenter import InstanceSegmenter
from .coco_eval import CocoResults, evaluate_results
from .diagnose import diagnose, format_findings


@torch.inference_mode()
def predict_dataset(model, dataset, device, batch_size: int = 8, progress: bool = True):
    """→ list of per-image predictions {"image_id", "boxes", "scores", "labels"[, "masks"]}
    at each image's original size, on the CPU. Every image's pasted masks [N, H, W] stay in
    memory: for small sets, pictures and tests; `evaluate_model` streams (`predict_coco_results`)."""
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


@torch.inference_mode()
def predict_coco_results(
    model, dataset, device, label_to_cat_id, batch_size: int = 8, progress: bool = True
) -> CocoResults:
    """Run `model` over `dataset` and keep only COCO result entries: each image's masks are
    pasted a few detections at a time and encoded to RLE as they are produced, so memory does
    not grow with the dataset beyond the entries themselves (benchmarks/eval_memory.py)."""
    was_training = model.training
    model.eval()
    inner = getattr(model, "module", model)  # DDP wraps it
    unpasted = isinstance(inner, InstanceSegmenter)  # other models paste their own masks
    has_masks = _has_mask_branch(model)
    results = CocoResults(label_to_cat_id, ("bbox", "segm"))
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=0)
    for images, targets in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        images = [im.to(device) for im in images]
        orig_sizes = [tuple(int(s) for s in t["orig_size"]) for t in targets]
        if unpasted:  # masks [N, R, R] over their boxes: pasted into RLEs by CocoResults
            outputs = inner(images, orig_sizes=orig_sizes, paste=False)
        else:
            outputs = model(images, orig_sizes=orig_sizes)
        for target, size, res in zip(targets, orig_sizes, outputs):
            has_masks |= "masks" in res or "box_masks" in res
            results.add({**res, "image_id": int(target["image_id"]), "image_size": size})
    model.train(was_training)
    if not has_masks:
        del results.results["segm"]
    return results


def evaluate_model(
    model, dataset, device, batch_size: int = 8, progress: bool = True, diagnose: bool = True
) -> dict:
    """COCO metrics {"bbox": {...}, "segm": {...}, "per_category": {...}} of `model` on
    `dataset` (a CocoInstances), in memory that does not grow with the dataset beyond the COCO
    results (`predict_coco_results`). With `diagnose`, an AP below 0.01 prints what went wrong."""
    predicted = predict_coco_results(
        model, dataset, device, dataset.label_to_cat_id, batch_size, progress
    )
    image_ids = sorted(set(predicted.image_ids))
    metrics = evaluate_results(dataset.coco, predicted.results, image_ids, per_category=True)
    if diagnose:
        detector = getattr(getattr(model, "module", model), "fcos", None)
        score_thresh = detector.cfg.score_thresh if detector is not None else None
        print_diagnosis(dataset.coco, predicted.results, metrics, score_thresh)
    return metrics


def print_diagnosis(coco_gt, results: dict, metrics: dict, score_thresh=None) -> None:
    """For each IoU type with AP < 0.01: the findings of `diagnose` on its results."""
    for iou_type, entries in results.items():
        if metrics[iou_type]["AP"] < 0.01:
            what = {"bbox": "box AP", "segm": "mask AP"}[iou_type]
            print(format_findings(diagnose(coco_gt, entries, score_thresh), what))


def evaluate_predictions_file(path, dataset) -> dict:
    """COCO metrics of a results file (e.g. predict's predictions.json) against `dataset`'s
    ground truth, over all its images; an AP below 0.01 prints the diagnosis."""
    try:
        entries = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({e})") from e
    keys = {"image_id", "category_id", "score"}
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and keys <= set(e) for e in entries
    ):
        raise ValueError(f"{path}: COCO results are a list of {{{', '.join(sorted(keys))}, ...}}")
    coco = dataset.coco
    results = {}
    if any("bbox" in e for e in entries) or not entries:
        results["bbox"] = [e for e in entries if "bbox" in e]
    if any("segmentation" in e for e in entries):  # loadRes reads any "bbox" as a box result
        results["segm"] = [
            {k: v for k, v in e.items() if k != "bbox"} for e in entries if "segmentation" in e
        ]
    # COCOeval refuses image ids outside the GT; those entries count for nothing (diagnosed).
    scored = {t: [e for e in r if e["image_id"] in coco.imgs] for t, r in results.items()}
    metrics = evaluate_results(coco, scored, sorted(coco.imgs), per_category=True)
    print_diagnosis(coco, results, metrics)
    return metrics


def _has_mask_branch(model) -> bool:
    model = getattr(model, "module", model)
    return getattr(model, "mask_branch", None) is not None
