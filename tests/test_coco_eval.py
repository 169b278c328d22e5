"""COCO evaluation: perfect predictions score 1, perturbed ones less, none score 0."""

from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from blendmask_edu.data.coco import CocoInstances
from blendmask_edu.engine.coco_eval import (
    STAT_NAMES,
    evaluate_coco,
    gt_as_predictions,
    predictions_to_coco_results,
)


@pytest.fixture
def dataset(tiny_coco):
    return CocoInstances(tiny_coco.root)


def _evaluate(dataset, predictions, **kwargs):
    return evaluate_coco(dataset.coco, predictions, dataset.label_to_cat_id, **kwargs)


def test_ground_truth_scores_one(dataset):
    metrics = _evaluate(dataset, gt_as_predictions(dataset))
    assert set(metrics) == {"bbox", "segm"}
    for iou_type in ("bbox", "segm"):
        assert list(metrics[iou_type]) == list(STAT_NAMES)
        assert all(isinstance(v, float) for v in metrics[iou_type].values())
        for name in ("AP", "AP50", "AP75", "AR100"):
            assert metrics[iou_type][name] == pytest.approx(1.0), (iou_type, name)


def test_results_format(dataset):
    predictions = gt_as_predictions(dataset)
    results = predictions_to_coco_results(predictions, dataset.label_to_cat_id)
    json.dumps(results)  # plain JSON types only (RLE counts as str)
    assert len(results["bbox"]) == len(results["segm"]) == 4  # 4 non-crowd annotations
    first_ann = dataset.coco.anns[1]
    box = results["bbox"][0]
    assert box["image_id"] == 1 and box["category_id"] == 3 and box["score"] == 1.0
    assert box["bbox"] == pytest.approx(first_ann["bbox"])  # [x, y, w, h]
    assert "bbox" not in results["segm"][0]
    rle = results["segm"][1]["segmentation"]  # annotation 2, stored as compressed RLE
    assert rle == dataset.coco.anns[2]["segmentation"]


def test_probability_masks_are_thresholded_at_half(dataset):
    predictions = gt_as_predictions(dataset)
    soft = predictions[0]["masks"].float() * 0.6 + 0.3  # inside 0.9, outside 0.3
    predictions[0] = dict(predictions[0], masks=soft)
    results = predictions_to_coco_results(predictions[:1], dataset.label_to_cat_id, ("segm",))
    decoded = mask_utils.decode(results["segm"][0]["segmentation"])  # [H, W]
    assert np.array_equal(decoded, dataset.coco.annToMask(dataset.coco.anns[1]))


def test_shifted_instance_scores_below_one(dataset):
    predictions = gt_as_predictions(dataset)
    first = predictions[0]
    shift = 8  # pixels to the right: the square's IoU drops to 12/28 < 0.5
    first["boxes"] = first["boxes"].clone()
    first["boxes"][0, [0, 2]] += shift
    first["masks"] = first["masks"].clone()
    first["masks"][0] = torch.roll(first["masks"][0], shifts=shift, dims=1)
    metrics = _evaluate(dataset, predictions)
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] < 0.95, iou_type
        assert metrics[iou_type]["AP"] > 0.0, iou_type


def test_dropped_instance_scores_below_one(dataset):
    predictions = gt_as_predictions(dataset)
    keep = torch.tensor([True, False])  # drop the disk of image 1
    predictions[0] = {k: v[keep] if torch.is_tensor(v) else v for k, v in predictions[0].items()}
    metrics = _evaluate(dataset, predictions)
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] < 1.0
        assert metrics[iou_type]["AR100"] < 1.0


def test_no_predictions_gives_zeros(dataset):
    zeros = dict.fromkeys(STAT_NAMES, 0.0)
    assert _evaluate(dataset, []) == {"bbox": zeros, "segm": zeros}
    empty = [
        {
            "image_id": image_id,
            "boxes": torch.zeros(0, 4),
            "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, 40, 60),
        }
        for image_id in dataset.image_ids
    ]
    assert _evaluate(dataset, empty) == {"bbox": zeros, "segm": zeros}


def test_only_listed_images_are_evaluated(dataset):
    predictions = gt_as_predictions(dataset)[:1]  # image 1 only
    metrics = _evaluate(dataset, predictions, iou_types=("bbox",))
    assert set(metrics) == {"bbox"}
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)


def test_bbox_only_predictions(dataset):
    predictions = [{k: v for k, v in p.items() if k != "masks"} for p in gt_as_predictions(dataset)]
    assert _evaluate(dataset, predictions, iou_types=("bbox",))["bbox"]["AP"] == pytest.approx(1)
    with pytest.raises(ValueError, match="no 'masks'"):
        _evaluate(dataset, predictions)


def test_masks_at_the_wrong_size_are_refused(dataset):
    predictions = gt_as_predictions(dataset)
    predictions[0]["masks"] = predictions[0]["masks"][:, :20, :30]
    with pytest.raises(ValueError, match="image id 1.*original image size"):
        _evaluate(dataset, predictions)


def test_verbose_prints_cocoeval_summary(dataset, capsys):
    _evaluate(dataset, gt_as_predictions(dataset), iou_types=("bbox",))
    assert capsys.readouterr().out == ""
    _evaluate(dataset, gt_as_predictions(dataset), iou_types=("bbox",), verbose=True)
    assert "Average Precision" in capsys.readouterr().out


# --- per category ------------------------------------------------------------------------


def test_per_category_ap_by_name(real_coco):
    dataset = CocoInstances(real_coco)  # car (id 2) 2, dog (id 5) 3, person (id 9) 3
    predictions = gt_as_predictions(dataset)
    for p in predictions:  # drop every dog (label 2): dog AP 0, the others still 1
        keep = p["labels"] != 2
        p.update({k: p[k][keep] for k in ("boxes", "scores", "labels", "masks")})
    metrics = _evaluate(dataset, predictions, per_category=True)
    per = metrics["per_category"]
    assert list(per) == ["car", "dog", "person"]  # category id order
    assert [per[n]["instances"] for n in per] == [2, 3, 3]  # crowd region not counted
    for iou_type in ("bbox", "segm"):
        assert per["car"][iou_type]["AP"] == pytest.approx(1.0)
        assert per["person"][iou_type]["AP"] == pytest.approx(1.0)
        assert per["dog"][iou_type]["AP"] == 0.0
        assert per["dog"][iou_type]["APl"] == -1.0  # no large dog in the ground truth
        assert per["car"][iou_type]["APl"] == pytest.approx(1.0)  # the 120×90 car
        # the summary AP is the mean over the categories
        mean = np.mean([per[n][iou_type]["AP"] for n in per])
        assert metrics[iou_type]["AP"] == pytest.approx(mean)


def test_evaluate_per_category_prints_a_table(real_coco, tmp_path, capsys):
    from blendmask_edu.cli import main

    dataset = CocoInstances(real_coco)
    results = predictions_to_coco_results(gt_as_predictions(dataset), dataset.label_to_cat_id)
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps(results["bbox"] + results["segm"]))
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--predictions", str(path), "--data", str(real_coco),
                 "--per-category", "--output", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "diagnosis" not in printed  # AP is 1: nothing to explain
    row = next(line for line in printed.splitlines() if line.startswith("dog"))
    assert row.split()[:3] == ["dog", "3", "1.000"]
    assert json.loads(out.read_text())["per_category"]["dog"]["segm"]["AP"] == pytest.approx(1)
