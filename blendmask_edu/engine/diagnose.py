"""Why is AP (almost) 0? Concrete checks over COCO ground truth and COCO-format results.

"AP is 0 but the pictures look fine" is nearly always bookkeeping, not learning:

    check (Finding.check)      what it looks at
    score_threshold            no detections left, or only high-scoring ones (a cut threshold)
    no_detections              an empty results list
    image_ids                  result image_ids that are not GT image ids
    category_ids               category_ids that are not GT ids (labels 1..C written instead)
    permuted_categories        boxes on GT objects of another category (a shuffled id map)
    xyxy_as_xywh               boxes fit the GT far better read as [x1, y1, x2, y2]
    sizes_swapped              masks of size [W, H]; boxes that fit only with x and y swapped
    empty_masks / full_masks   segmentations with no pixel / with (nearly) every pixel
    no_overlap                 boxes that overlap no GT of their image (ids or scale wrong)

`diagnose(coco_gt, results)` takes any results list, e.g. a user's predictions.json; results
are COCO's format: {"image_id", "category_id", "score", "bbox": [x, y, w, h]} and/or
{"segmentation": RLE}.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO

MAX_CHECKED = 5000  # results looked at by the box and mask checks (evenly spaced)


@dataclass
class Finding:
    check: str  # the check's name, see the table above
    message: str  # what was seen, and what to change


def diagnose(
    coco_gt: COCO, results: list[dict], score_thresh: float | None = None
) -> list[Finding]:
    """The findings that explain a near-zero AP, most specific first ([] when none fires)."""
    if not results:
        if score_thresh is not None and score_thresh > 0.05:
            msg = (
                f"no detections scored above the score threshold {score_thresh:g}: lower it "
                "(FCOSConfig.score_thresh, or predict --score-thresh; COCO AP wants 0.05)"
            )
            return [Finding("score_threshold", msg)]
        if score_thresh is not None:
            msg = (
                f"no detections scored above {score_thresh:g}: the model is sure of nothing "
                "yet (too few iterations, or a learning-rate problem: plot the curves)"
            )
            return [Finding("no_detections", msg)]
        msg = "no detections at all (was the file written with a high --score-thresh?)"
        return [Finding("no_detections", msg)]
    findings = _score_cut(coco_gt, results, score_thresh)
    findings += _image_ids(coco_gt, results)
    findings += _category_ids(coco_gt, results)
    known = [r for r in results if r["image_id"] in coco_gt.imgs]
    known = known[:: max(1, len(known) // MAX_CHECKED)]  # the geometry checks use a sample
    findings += _box_checks(coco_gt, [r for r in known if "bbox" in r], findings)
    findings += _mask_checks(coco_gt, [r for r in known if "segmentation" in r])
    return findings


def format_findings(findings: list[Finding], what: str = "AP") -> str:
    if not findings:
        return (
            f"{what} < 0.01, and none of the checks (score threshold, image and category ids, "
            "box format, sizes, masks) found a cause: the model may be under-trained; "
            "look at its curves (blendmask-edu plot RUN_DIR)"
        )
    return f"{what} < 0.01; diagnosis:\n" + "\n".join(f"  - {f.message}" for f in findings)


def _score_cut(coco_gt: COCO, results: list[dict], score_thresh) -> list[Finding]:
    """Fewer detections than GT objects and none with a low score: cut at a high threshold."""
    num_gt = len(coco_gt.getAnnIds(iscrowd=False))
    lowest = min(r["score"] for r in results)
    if len(results) >= num_gt or lowest < 0.3:
        return []
    where = f" (the threshold is {score_thresh:g})" if score_thresh is not None else ""
    msg = (
        f"only {len(results)} detections for {num_gt} GT objects, the lowest scoring "
        f"{lowest:.2f}: the results look cut at a high score threshold{where}. COCO AP "
        "ranks by score and needs low-scoring detections too: keep those above 0.05"
    )
    return [Finding("score_threshold", msg)]


def _image_ids(coco_gt: COCO, results: list[dict]) -> list[Finding]:
    ids = {r["image_id"] for r in results}
    unknown = sorted(ids - set(coco_gt.imgs), key=str)
    if not unknown:
        return []
    msg = (
        f"{len(unknown)} of {len(ids)} result image ids are not GT image ids (e.g. "
        f"{unknown[:5]}; the GT has {sorted(coco_gt.imgs)[:5]}...)"
    )
    by_name = {img["file_name"]: img["id"] for img in coco_gt.imgs.values()}
    named = [r for r in results if r.get("file_name") in by_name]
    if named:  # predict writes file_name next to image_id (its position on the command line)
        example = named[0]
        msg += (
            f"; the results' file names are GT images: '{example['file_name']}' is image id "
            f"{by_name[example['file_name']]}, not {example['image_id']}"
        )
    return [Finding("image_ids", msg)]


def _category_ids(coco_gt: COCO, results: list[dict]) -> list[Finding]:
    cats, gt_cats = {r["category_id"] for r in results}, sorted(coco_gt.cats)
    unknown = sorted(cats - set(gt_cats), key=str)
    if not unknown:
        return []
    msg = f"category ids {unknown} are not GT category ids {gt_cats}"
    for first, kind in ((1, "the model's contiguous labels 1..C"), (0, "0-based class indices")):
        if cats <= set(range(first, len(gt_cats) + first)):
            msg += f": they look like {kind}; write the dataset's ids (label_to_cat_id)"
            break
    return [Finding("category_ids", msg)]


def _best_ious(coco_gt: COCO, results: list[dict], transform=None) -> tuple[np.ndarray, list]:
    """For each result box (optionally transformed): the best IoU with a non-crowd GT box of
    its image, any category → ([D] IoUs, [D] category of that GT or None)."""
    ious, cats = [], []
    for r in results:
        gts = [a for a in coco_gt.imgToAnns[r["image_id"]] if not a.get("iscrowd", 0)]
        box = transform(r["bbox"]) if transform else r["bbox"]
        if not gts or box is None:
            ious.append(0.0)
            cats.append(None)
            continue
        iou = mask_utils.iou([box], [a["bbox"] for a in gts], [0] * len(gts))[0]  # [G]
        ious.append(float(iou.max()))
        cats.append(gts[int(iou.argmax())]["category_id"])
    return np.asarray(ious), cats


def _xyxy(box):
    x1, y1, x2, y2 = box
    return [x1, y1, x2 - x1, y2 - y1] if x2 > x1 and y2 > y1 else None


def _transposed(box):
    x, y, w, h = box
    return [y, x, h, w]


def _box_checks(coco_gt: COCO, results: list[dict], found: list[Finding]) -> list[Finding]:
    if not results:
        return []
    findings = []
    as_is, near_cats = _best_ious(coco_gt, results)
    as_xyxy, _ = _best_ious(coco_gt, results, _xyxy)
    transposed, _ = _best_ious(coco_gt, results, _transposed)
    outside = np.mean([_sticks_out(coco_gt.imgs[r["image_id"]], r["bbox"]) for r in results])
    if np.median(as_xyxy) >= 0.5 and np.median(as_xyxy) > np.median(as_is) + 0.2:
        msg = (
            f"the boxes look like [x1, y1, x2, y2] written as COCO's [x, y, width, height]: "
            f"median best IoU with the GT {np.median(as_is):.2f} as written, "
            f"{np.median(as_xyxy):.2f} read as corners ({outside:.0%} stick out of their image)"
        )
        findings.append(Finding("xyxy_as_xywh", msg))
    elif np.median(transposed) >= 0.5 and np.median(transposed) > np.median(as_is) + 0.2:
        msg = (
            f"the boxes fit the GT with x and y swapped (median best IoU {np.median(as_is):.2f} "
            f"as written, {np.median(transposed):.2f} transposed): height and width are swapped"
        )
        findings.append(Finding("sizes_swapped", msg))
    matched = as_is >= 0.5  # [D] boxes that sit on some GT object
    wrong = np.asarray([c != r["category_id"] for c, r in zip(near_cats, results)])  # [D]
    other = wrong[matched].mean() if matched.any() else 0.0
    ids_wrong = any(f.check == "category_ids" for f in found)
    if matched.mean() >= 0.3 and other > 0.5 and not ids_wrong:
        msg = (
            f"{other:.0%} of the boxes that sit on a GT object (IoU ≥ 0.5) carry another "
            "category id than that object: the label → category id map is shuffled"
        )
        findings.append(Finding("permuted_categories", msg))
    if not findings and np.median(as_is) < 0.1 and not found:
        msg = (
            f"most boxes overlap no GT box of their image (median best IoU "
            f"{np.median(as_is):.2f}): check the image ids and that boxes are in the original "
            "image's pixels (not the resized input's)"
        )
        findings.append(Finding("no_overlap", msg))
    return findings


def _sticks_out(info: dict, box, tol: float = 1.0) -> bool:
    x, y, w, h = box
    return x + w > info["width"] + tol or y + h > info["height"] + tol


def _mask_checks(coco_gt: COCO, results: list[dict]) -> list[Finding]:
    if not results:
        return []
    findings = []
    infos = [coco_gt.imgs[r["image_id"]] for r in results]
    swapped = [
        isinstance(r["segmentation"], dict)
        and list(r["segmentation"]["size"])
        == [i["width"], i["height"]]
        != [i["height"], i["width"]]
        for r, i in zip(results, infos)
    ]
    if np.mean(swapped) > 0.5:
        msg = "the masks are [width, height] of their images: height and width are swapped"
        return [Finding("sizes_swapped", msg)]
    rles = [coco_gt.annToRLE(r) for r in results]  # polygons or RLE → compressed RLE
    # One call per mask: this pycocotools' batched area() fails beyond 255 masks.
    areas = np.asarray([mask_utils.area(rle) for rle in rles], dtype=float)  # [D]
    image_areas = np.asarray([i["height"] * i["width"] for i in infos], dtype=float)  # [D]
    if np.mean(areas == 0) > 0.5:
        msg = f"{np.mean(areas == 0):.0%} of the masks are empty (threshold or paste problem)"
        findings.append(Finding("empty_masks", msg))
    full = np.mean(areas >= 0.9 * image_areas)
    if full > 0.5:
        msg = (
            f"{full:.0%} of the masks cover (nearly) the whole image: probabilities not cut at "
            "0.5, or masks not pasted into their boxes"
        )
        findings.append(Finding("full_masks", msg))
    return findings
