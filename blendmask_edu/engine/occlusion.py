"""Where does a mask branch lose? Mask AP split by occlusion and by crowding (evaluation only).

* **Occlusion**: the shapes generator draws whole shapes and annotates their *visible* parts
  (data/shapes.py). Replaying it with the set's seed gives each annotation's full shape, hence
  the fraction of it that is hidden, 1 − visible area / full area (0 to 0.8: a shape showing
  less than 20 % is left out). Mask AP **on the GT boxes** (gt_boxes.py) is then computed per
  bucket of hidden fraction: every GT box gives exactly one mask, so a bucket is scored with its
  own instances and their masks only, the detector out of the picture.
* **Crowding**: images grouped by their number of instances; mask AP of the model's own
  detections and on the GT boxes, per group of images (COCOeval on a subset of images).

    hidden = hidden_fractions(val_dir)                  {annotation id: fraction hidden}
    occlusion_split(model, CocoInstances(val_dir, ...)) {"by_hidden": ..., "by_instances": ...}
"""

from __future__ import annotations

import json

import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import DataLoader

from ..data.batching import collate
from ..data.coco import annotation_path
from ..data.shapes import render_image
from .coco_eval import evaluate_coco
from .evaluate import predict_dataset
from .gt_boxes import run_on_gt_boxes

HIDDEN_BUCKETS = {
    "not hidden (0)": (0.0, 0.0),
    "≤ 25 % hidden": (1e-9, 0.25),
    "> 25 % hidden": (0.25 + 1e-9, 1.0),
}
INSTANCE_BUCKETS = {"1–2 instances": (1, 2), "3–4 instances": (3, 4), "5–8 instances": (5, 8)}


def hidden_fractions(data) -> dict[int, float]:
    """{annotation id: fraction of the shape hidden by shapes in front} for a set written by
    `make_shapes`: its generator is replayed from annotations.json's "info" (seed, number of
    images, size), and each replayed visible mask is checked against the annotation's area."""
    coco = json.loads(annotation_path(data).read_text())
    info = coco["info"]
    rng = np.random.default_rng(info["seed"])
    anns = iter(coco["annotations"])  # written image by image, bottom to top
    hidden = {}
    for _ in range(info["num_images"]):
        _, instances, full = render_image(rng, info["image_size"], return_full_masks=True)
        for (category_id, visible), whole in zip(instances, full):
            ann = next(anns)
            if ann["category_id"] != category_id or ann["area"] != float(visible.sum()):
                raise ValueError(f"{data}: annotation {ann['id']} is not what its seed draws")
            hidden[ann["id"]] = 1.0 - float(visible.sum()) / float(whole.sum())
    return hidden


@torch.inference_mode()
def gt_box_predictions(model, dataset, device="cpu", batch_size: int = 8) -> list[dict]:
    """Per image the masks of the model on its GT boxes (one per GT, in the order of the
    image's annotations) → {"image_id", "boxes", "scores", "labels", "masks", "ann_ids"}."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=0)
    predictions = []
    for images, targets in loader:
        out = run_on_gt_boxes(model, [im.to(device) for im in images], targets)
        orig_sizes = [tuple(int(s) for s in t["orig_size"]) for t in targets]
        for target, res in zip(targets, model.postprocess(out, orig_sizes)):
            predictions.append(with_ann_ids(dataset, target, res))
    return predictions


def with_ann_ids(dataset, target: dict, res: dict) -> dict:
    """A GT-box prediction dict on the CPU with the image id and its annotations' ids."""
    image_id = int(target["image_id"])
    anns = [a for a in dataset.coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]
    res = {k: v.cpu() for k, v in res.items()}
    res.update(image_id=image_id, ann_ids=[a["id"] for a in anns])
    return res


def subset_coco(coco: COCO, ann_ids: set[int]) -> COCO:
    """The same images and categories with only the annotations in `ann_ids`."""
    sub = COCO()
    sub.dataset = {**coco.dataset, "annotations": [coco.anns[i] for i in sorted(ann_ids)]}
    sub.createIndex()
    return sub


def ap_on_gt_boxes_for(predictions: list[dict], dataset, ann_ids: set[int]) -> dict:
    """Mask AP/AP50/AP75 on GT boxes of the instances `ann_ids` only (their masks only)."""
    kept = []
    for p in predictions:
        sel = torch.tensor([a in ann_ids for a in p["ann_ids"]], dtype=torch.bool)
        if sel.any():
            keys = ("boxes", "scores", "labels", "masks")
            kept.append({"image_id": p["image_id"], **{k: p[k][sel] for k in keys}})
    segm = evaluate_coco(
        subset_coco(dataset.coco, ann_ids), kept, dataset.label_to_cat_id, ("segm",)
    )["segm"]
    return {"AP": segm["AP"], "AP50": segm["AP50"], "AP75": segm["AP75"], "instances": len(ann_ids)}


def occlusion_split(model, dataset, device="cpu", gt_predictions=None) -> dict:
    """{"by_hidden": {bucket: mask AP on GT boxes}, "by_instances": {bucket: {"detections":
    mask AP of the model's detections, "gt_boxes": on GT boxes}}} for a shapes val set.
    `gt_predictions` (from `gt_box_predictions`, or the oracle's) replaces the model's own."""
    hidden = hidden_fractions(dataset.json_path)
    gt_preds = gt_predictions or gt_box_predictions(model, dataset, device)
    by_hidden = {}
    for name, (lo, hi) in HIDDEN_BUCKETS.items():
        ids = {a for a, f in hidden.items() if lo <= f <= hi}
        by_hidden[name] = ap_on_gt_boxes_for(gt_preds, dataset, ids)
    detections = predict_dataset(model, dataset, device, progress=False)
    by_instances = {}
    for name, (lo, hi) in INSTANCE_BUCKETS.items():
        images = {p["image_id"] for p in gt_preds if lo <= len(p["ann_ids"]) <= hi}
        dets = [p for p in detections if p["image_id"] in images]
        ids = {a for p in gt_preds if p["image_id"] in images for a in p["ann_ids"]}
        by_instances[name] = {
            "images": len(images),
            "detections": evaluate_coco(dataset.coco, dets, dataset.label_to_cat_id, ("segm",))[
                "segm"
            ]["AP"],
            "gt_boxes": ap_on_gt_boxes_for(gt_preds, dataset, ids)["AP"],
        }
    return {"by_hidden": by_hidden, "by_instances": by_instances}
