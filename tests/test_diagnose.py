"""The AP ≈ 0 diagnosis names the planted cause: wrong category ids, xyxy written as xywh, a
score threshold too high; and the other checks on hand-made faults. Perfect results: silent."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import tiny_config

from blendmask_edu.cli import main
from blendmask_edu.data.coco import CocoInstances
from blendmask_edu.data.transforms import build_transforms
from blendmask_edu.engine.coco_eval import gt_as_predictions, predictions_to_coco_results
from blendmask_edu.engine.diagnose import diagnose
from blendmask_edu.engine.evaluate import evaluate_model
from blendmask_edu.modeling.segmenter import InstanceSegmenter


def _perfect(dataset) -> dict:
    """The ground truth as COCO results: {"bbox": [...], "segm": [...]}, AP 1."""
    return predictions_to_coco_results(gt_as_predictions(dataset), dataset.label_to_cat_id)


def _evaluate_file(entries, data, tmp_path, capsys) -> tuple[dict, str]:
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps(entries))
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--predictions", str(path), "--data", str(data),
                 "--output", str(out)]) == 0  # fmt: skip
    return json.loads(out.read_text()), capsys.readouterr().out


def _checks(dataset, entries) -> list[str]:
    return [f.check for f in diagnose(dataset.coco, entries)]


def test_perfect_results_raise_no_finding(real_coco):
    dataset = CocoInstances(real_coco)
    for entries in _perfect(dataset).values():
        assert diagnose(dataset.coco, entries) == []


# --- the three planted causes, end to end -----------------------------------------------


def test_planted_wrong_category_ids(real_coco, tmp_path, capsys):
    dataset = CocoInstances(real_coco)  # category ids 2, 5, 9 → labels 1, 2, 3
    cat_to_label = {cid: label for label, cid in dataset.label_to_cat_id.items()}
    results = _perfect(dataset)
    entries = [dict(e, category_id=cat_to_label[e["category_id"]]) for e in results["segm"]]
    metrics, out = _evaluate_file(entries, real_coco, tmp_path, capsys)
    assert metrics["segm"]["AP"] < 0.01
    assert "mask AP < 0.01; diagnosis:" in out
    assert "category ids [1, 3] are not GT category ids [2, 5, 9]" in out
    assert "contiguous labels 1..C" in out
    assert _checks(dataset, entries) == ["category_ids"]


def test_planted_xyxy_written_as_xywh(shapes_small, tmp_path, capsys):
    dataset = CocoInstances(shapes_small)
    entries = [
        dict(e, bbox=[x, y, x + w, y + h])
        for e in _perfect(dataset)["bbox"]
        for x, y, w, h in [e["bbox"]]
    ]
    metrics, out = _evaluate_file(entries, shapes_small, tmp_path, capsys)
    assert metrics["bbox"]["AP"] < 0.01
    assert "box AP < 0.01; diagnosis:" in out
    assert "look like [x1, y1, x2, y2] written as COCO's [x, y, width, height]" in out
    assert _checks(dataset, entries) == ["xyxy_as_xywh"]


def test_planted_score_threshold_too_high(real_coco, capsys):
    cfg = tiny_config()
    cfg.model.fcos.score_thresh = 0.99  # nothing an untrained model says is that sure
    torch.manual_seed(0)
    model = InstanceSegmenter(cfg.model)
    dataset = CocoInstances(real_coco, build_transforms(cfg.data, train=False))
    metrics = evaluate_model(model, dataset, "cpu", progress=False)
    out = capsys.readouterr().out
    assert metrics["bbox"]["AP"] == 0.0 and metrics["segm"]["AP"] == 0.0
    assert out.count("no detections scored above the score threshold 0.99") == 2  # box, mask
    assert "FCOSConfig.score_thresh" in out


def test_results_cut_at_a_high_threshold(real_coco):
    dataset = CocoInstances(real_coco)
    entries = [dict(e, score=0.93) for e in _perfect(dataset)["bbox"][:2]]  # 2 of 8 objects
    assert _checks(dataset, entries) == ["score_threshold"]
    assert _checks(dataset, []) == ["no_detections"]
    # At the usual threshold, no detections is an untrained model, not a threshold to lower.
    (finding,) = diagnose(dataset.coco, [], score_thresh=0.05)
    assert finding.check == "no_detections" and "sure of nothing" in finding.message


# --- the other checks ------------------------------------------------------------------


def test_image_ids_of_predict_are_mapped_by_file_name(real_coco, tmp_path, capsys):
    dataset = CocoInstances(real_coco)
    position = {image_id: i for i, image_id in enumerate(dataset.image_ids)}
    entries = [
        dict(
            e,
            image_id=position[e["image_id"]],
            file_name=dataset.coco.imgs[e["image_id"]]["file_name"],
        )
        for e in _perfect(dataset)["bbox"]
    ]  # what `predict` writes: image ids are the positions on the command line
    metrics, out = _evaluate_file(entries, real_coco, tmp_path, capsys)
    assert metrics["bbox"]["AP"] == 0.0
    assert "result image ids are not GT image ids" in out
    assert "'street_01.jpg' is image id 10, not 0" in out


def test_shuffled_category_map(real_coco):
    dataset = CocoInstances(real_coco)
    shuffle = {2: 5, 5: 9, 9: 2}
    entries = [dict(e, category_id=shuffle[e["category_id"]]) for e in _perfect(dataset)["bbox"]]
    assert _checks(dataset, entries) == ["permuted_categories"]


def test_x_and_y_swapped(real_coco):
    dataset = CocoInstances(real_coco)
    entries = [dict(e, bbox=[y, x, h, w]) for e in _perfect(dataset)["bbox"]
               for x, y, w, h in [e["bbox"]]]  # fmt: skip
    assert _checks(dataset, entries) == ["sizes_swapped"]


@pytest.mark.parametrize("fault", ["empty", "full", "swapped"])
def test_mask_faults(real_coco, fault):
    dataset = CocoInstances(real_coco)
    predictions = gt_as_predictions(dataset)
    for p in predictions:
        if fault == "empty":
            p["masks"] = torch.zeros_like(p["masks"])
        elif fault == "full":
            p["masks"] = torch.ones_like(p["masks"])
        else:
            p["masks"] = p["masks"].transpose(1, 2)  # [N, W, H]
    entries = predictions_to_coco_results(predictions, dataset.label_to_cat_id, ("segm",))["segm"]
    expected = {"empty": "empty_masks", "full": "full_masks", "swapped": "sizes_swapped"}[fault]
    assert _checks(dataset, entries) == [expected]
