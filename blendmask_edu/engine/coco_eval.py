"""COCO box and mask AP of a model's predictions, with pycocotools' COCOeval.

A prediction is one dict per image, in the original image's pixel coordinates:

    {"image_id": int,
     "boxes":  [N, 4] xyxy,   "scores": [N],   "labels": [N] contiguous 1..C,
     "masks":  [N, H, W] bool / uint8, or float probabilities (thresholded at 0.5)}

`predictions_to_coco_results` turns them into COCO's results format (what `loadRes` reads and
what `predictions.json` holds) and `evaluate_coco` scores them. `CocoResults` does the same one
image at a time (what `evaluate_model` uses: a dataset's pasted masks never all sit in memory):

    {"bbox": {"AP": .., "AP50": .., ..., "ARl": ..}, "segm": {...}}

with COCO's 12 summary numbers, as fractions in [0, 1] (COCO writes -1 where a size range
has no ground truth), and on request the same per category (`per_category_metrics`).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pycocotools.mask as mask_utils
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_convert

from ..modeling.paste import paste_masks_in_chunks

# The order of COCOeval.stats after summarize().
STAT_NAMES = (
    *("AP", "AP50", "AP75", "APs", "APm", "APl"),  # precision: IoU .50:.95, .50, .75; by area
    *("AR1", "AR10", "AR100", "ARs", "ARm", "ARl"),  # recall: 1, 10, 100 detections; by area
)


def predictions_to_coco_results(
    predictions: list[dict], label_to_cat_id: dict[int, int], iou_types=("bbox", "segm")
) -> dict[str, list[dict]]:
    """COCO results, one list per IoU type: `{"bbox": [...], "segm": [...]}`.

    Each entry is `{"image_id", "category_id", "score"}` plus `"bbox": [x, y, w, h]` or
    `"segmentation": {"size": [H, W], "counts": str}` (compressed RLE). The two types are kept
    apart because `COCO.loadRes` treats any entry that has a "bbox" as a box result.
    """
    results = CocoResults(label_to_cat_id, iou_types)
    for i, pred in enumerate(predictions):
        no_masks = pred.get("masks") is None and pred.get("box_masks") is None
        if "segm" in iou_types and no_masks and len(pred["scores"]):
            raise ValueError(
                f"predictions[{i}] (image id {pred['image_id']}) has no 'masks'; "
                "evaluate with iou_types=('bbox',) for a detector without masks"
            )
        results.add(pred)
    return results.results


class CocoResults:
    """COCO results gathered one image at a time, in bounded memory: `add(pred)` turns an
    image's prediction into result entries at once (masks → compressed RLE strings) and
    keeps nothing else of it. What grows with the dataset is only the entries themselves
    (≈ 0.5–2 kB per detection at 800×1333), as in any COCO results file.

    `pred`: {"image_id", "boxes" [N, 4] xyxy, "scores" [N], "labels" [N]} and, for masks,
    either "masks" [N, H, W] (pasted: probabilities or binary) or "box_masks" [N, R, R] over
    each box (pasted here, `PASTE_CHUNK` detections at a time) plus "image_size" (H, W).
    """

    def __init__(self, label_to_cat_id: dict[int, int], iou_types=("bbox", "segm")):
        self.label_to_cat_id = label_to_cat_id
        self.results: dict[str, list[dict]] = {iou_type: [] for iou_type in iou_types}
        self.image_ids: list[int] = []  # every image added, with or without detections

    def add(self, pred: dict) -> None:
        image_id = int(pred["image_id"])
        self.image_ids.append(image_id)
        scores = pred["scores"].detach().float().cpu().tolist()
        if not scores:
            return
        common = [
            {"image_id": image_id, "category_id": self.label_to_cat_id[label], "score": s}
            for label, s in zip(pred["labels"].cpu().tolist(), scores)
        ]
        if "bbox" in self.results:
            corners = pred["boxes"].detach().float().cpu()  # [N, 4] (x1, y1, x2, y2)
            boxes = box_convert(corners, "xyxy", "xywh")  # [N, 4] COCO (x, y, width, height)
            for entry, box in zip(common, boxes.tolist()):
                self.results["bbox"].append({**entry, "bbox": box})
        has_masks = pred.get("masks") is not None or pred.get("box_masks") is not None
        if "segm" in self.results and has_masks:  # a detector alone gives boxes only
            for entry, rle in zip(common, _image_rles(pred)):
                self.results["segm"].append({**entry, "segmentation": rle})


def _image_rles(pred: dict) -> list[dict]:
    """One compressed RLE per detection of an image, from pasted or box-relative masks."""
    if pred.get("masks") is not None:  # [N, H, W]
        return encode_masks(pred["masks"])
    rles = []
    chunks = paste_masks_in_chunks(pred["box_masks"], pred["boxes"], pred["image_size"])
    for chunk in chunks:  # [n, H, W] bool, n ≤ PASTE_CHUNK
        rles += encode_masks(chunk)
    return rles


def encode_masks(masks: torch.Tensor) -> list[dict]:
    """Binary (or probability, cut at 0.5) masks `[N, H, W]` → compressed RLEs, counts as str."""
    masks = masks.detach().cpu()
    binary = masks > 0.5 if masks.is_floating_point() else masks != 0  # [N, H, W] bool
    # pycocotools wants a Fortran-ordered uint8 array [H, W, N].
    array = np.asfortranarray(binary.permute(1, 2, 0).numpy().astype(np.uint8))
    rles = mask_utils.encode(array)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")  # bytes → str, so it is JSON-friendly
    return rles


def evaluate_coco(
    coco_gt: COCO,
    predictions: list[dict],
    label_to_cat_id: dict[int, int],
    iou_types=("bbox", "segm"),
    verbose: bool = False,
    per_category: bool = False,
) -> dict[str, dict]:
    """Run COCOeval for each IoU type; returns `{iou_type: {"AP": .., ..., "ARl": ..}}`.

    Only the images listed in `predictions` are evaluated (an image with no detections
    still counts, as long as its dict is there), so a subset of a dataset can be scored.
    No detections at all gives zeros (pycocotools cannot load an empty result list).
    With `per_category`, the dict also has "per_category" (see `evaluate_results`).
    """
    _check_mask_sizes(coco_gt, predictions, iou_types)
    results = predictions_to_coco_results(predictions, label_to_cat_id, iou_types)
    image_ids = sorted({int(p["image_id"]) for p in predictions})
    return evaluate_results(coco_gt, results, image_ids, verbose, per_category)


def evaluate_results(
    coco_gt: COCO,
    results: dict[str, list[dict]],
    image_ids: list[int],
    verbose: bool = False,
    per_category: bool = False,
) -> dict[str, dict]:
    """COCO metrics of results already in COCO's format (`{"bbox": [...], "segm": [...]}`,
    e.g. read from a predictions.json). With `per_category`, adds

        "per_category": {name: {"instances": n, "bbox": {"AP", "AP50", "AP75", "APs",
                                 "APm", "APl"}, "segm": {...}}}

    in category id order; −1 where the category has no GT (in that size range).
    """
    metrics, evaluators = {}, {}
    for iou_type, entries in results.items():
        metrics[iou_type], evaluators[iou_type] = _run_cocoeval(
            coco_gt, entries, image_ids, iou_type, verbose
        )
    if per_category:
        metrics["per_category"] = per_category_metrics(coco_gt, evaluators, image_ids)
    return metrics


def _run_cocoeval(
    coco_gt: COCO, results: list[dict], image_ids: list[int], iou_type: str, verbose: bool
) -> tuple[dict[str, float], COCOeval | None]:
    """COCOeval's evaluate → accumulate → summarize, its printing silenced unless verbose."""
    if not results:
        return dict.fromkeys(STAT_NAMES, 0.0), None
    output = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with output:
        coco_dt = coco_gt.loadRes([dict(r) for r in results])  # it adds keys to each entry
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats)}, evaluator


# COCOeval.eval["precision"] is [T, R, K, A, M]: 10 IoU thresholds (.50:.05:.95) × 101 recall
# points × K categories × 4 area ranges (all, small, medium, large) × 3 detection caps
# (1, 10, 100), −1 where a category has no GT. AP = the mean of the entries > −1.
PER_CATEGORY = {  # name → (IoU threshold index or None for all, area index)
    "AP": (None, 0),
    "AP50": (0, 0),
    "AP75": (5, 0),
    "APs": (None, 1),
    "APm": (None, 2),
    "APl": (None, 3),
}


def per_category_metrics(coco_gt: COCO, evaluators: dict, image_ids: list[int]) -> dict:
    """Per category (by name): its number of GT instances and AP per IoU type."""
    out = {}
    names = [c["name"] for c in coco_gt.cats.values()]
    for k, cat_id in enumerate(sorted(coco_gt.cats)):
        name = coco_gt.cats[cat_id]["name"]
        key = name if names.count(name) == 1 else f"{name} (id {cat_id})"
        n = len(coco_gt.getAnnIds(imgIds=image_ids, catIds=[cat_id], iscrowd=False))
        out[key] = {"instances": n}
        for iou_type, evaluator in evaluators.items():
            if evaluator is None:  # no detections at all
                out[key][iou_type] = dict.fromkeys(PER_CATEGORY, 0.0 if n else -1.0)
                continue
            precision = evaluator.eval["precision"][:, :, k, :, -1]  # [T, R, A], 100 dets
            out[key][iou_type] = {
                metric: _mean_valid(precision[t if t is not None else slice(None), ..., a])
                for metric, (t, a) in PER_CATEGORY.items()
            }
    return out


def _mean_valid(precision: np.ndarray) -> float:
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else -1.0


def _check_mask_sizes(coco_gt: COCO, predictions: list[dict], iou_types) -> None:
    """Masks must be pasted at the original image size before evaluation."""
    if "segm" not in iou_types:
        return
    for pred in predictions:
        if pred.get("masks") is None or len(pred["masks"]) == 0:
            continue
        info = coco_gt.imgs[int(pred["image_id"])]
        if tuple(pred["masks"].shape[-2:]) != (info["height"], info["width"]):
            raise ValueError(
                f"image id {pred['image_id']}: masks are {tuple(pred['masks'].shape[-2:])}, "
                f"the image is {(info['height'], info['width'])} (H, W); paste masks into "
                "the original image size first"
            )


def gt_as_predictions(dataset) -> list[dict]:
    """The ground truth of a `CocoInstances` written as predictions with score 1.

    Evaluating it gives AP 1.0: a check of the evaluation path, and a baseline to perturb in a
    notebook. Reads annotations only (no image is decoded); crowd regions are left out, as in
    the training targets.
    """
    predictions = []
    for image_id in dataset.image_ids:
        target = dataset.load_target(image_id)  # original size, no transforms
        predictions.append(
            {
                "image_id": image_id,
                "boxes": target["boxes"],  # [N, 4]
                "scores": torch.ones(len(target["labels"])),  # [N]
                "labels": target["labels"],  # [N]
                "masks": target["masks"],  # [N, H, W]
            }
        )
    return predictions
