"""Evaluation in bounded memory: masks are pasted a few detections at a time and encoded to RLE
image by image (`CocoResults`), and the numbers are those of the reference path, which pastes
every image's masks at full size and keeps them all (`predict_dataset` + `evaluate_coco`)."""

from __future__ import annotations

import torch
from tiny import tiny_config

from blendmask_edu.data.coco import CocoInstances
from blendmask_edu.data.transforms import build_transforms
from blendmask_edu.engine import coco_eval
from blendmask_edu.engine.coco_eval import CocoResults, evaluate_coco, gt_as_predictions
from blendmask_edu.engine.evaluate import evaluate_model, predict_dataset
from blendmask_edu.modeling import paste
from blendmask_edu.modeling.mask_branch import mask_targets
from blendmask_edu.modeling.paste import PASTE_CHUNK, paste_masks, paste_masks_binary
from blendmask_edu.modeling.segmenter import InstanceSegmenter


class OracleSegmenter(InstanceSegmenter):
    """A test double with known, non-trivial AP: it "predicts" each image's ground truth (in
    the data loader's order), boxes jittered, masks cropped to R×R by the true box and pasted
    into the jittered one, random scores. The same every pass over the data (`rewind()`)."""

    def __init__(self, cfg, dataset, R: int = 14):
        super().__init__(cfg)
        self.truth = [dataset[i][1] for i in range(len(dataset))]
        self.R, self.seen = R, 0

    def rewind(self):
        self.seen = 0
        return self

    def run(self, images, targets=None, intermediates=True):
        _, image_sizes = self.preprocess(images)
        detections, masks = [], []
        for _ in images:
            t = self.truth[self.seen]
            g = torch.Generator().manual_seed(self.seen)
            self.seen += 1
            n = len(t["boxes"])
            boxes = t["boxes"] + torch.randn(n, 4, generator=g) * 1.5  # [n, 4]
            scores = torch.rand(n, generator=g)  # [n]
            detections.append({"boxes": boxes, "scores": scores, "labels": t["labels"]})
            masks.append({"masks": mask_targets([t], self.R) * 0.9})  # [n, R, R]
        out = {"image_sizes": image_sizes, "fcos": {"detections": detections}}
        if self.mask_branch is not None:
            out["masks"] = masks
        return out


def test_streamed_evaluation_equals_the_reference(shapes_small):
    cfg = tiny_config()
    dataset = CocoInstances(shapes_small, build_transforms(cfg.data, train=False))
    model = OracleSegmenter(cfg.model, dataset)
    predictions = predict_dataset(model.rewind(), dataset, "cpu", progress=False)  # all kept
    reference = evaluate_coco(dataset.coco, predictions, dataset.label_to_cat_id, per_category=True)
    assert 0.2 < reference["segm"]["AP"] < 0.95 and 0.2 < reference["bbox"]["AP"] < 0.95
    streamed = evaluate_model(model.rewind(), dataset, "cpu", progress=False, diagnose=False)
    assert streamed == reference


def test_a_detector_without_masks_is_scored_on_boxes_only(shapes_small):
    cfg = tiny_config("none")
    dataset = CocoInstances(shapes_small, build_transforms(cfg.data, train=False))
    model = OracleSegmenter(cfg.model, dataset)
    predictions = predict_dataset(model.rewind(), dataset, "cpu", progress=False)
    reference = evaluate_coco(
        dataset.coco, predictions, dataset.label_to_cat_id, ("bbox",), per_category=True
    )
    streamed = evaluate_model(model.rewind(), dataset, "cpu", progress=False, diagnose=False)
    assert set(streamed) == {"bbox", "per_category"} and streamed == reference


def test_box_masks_are_pasted_a_chunk_at_a_time_into_the_same_rles(real_coco, monkeypatch):
    dataset = CocoInstances(real_coco)
    pasted_sizes = []

    def spy(masks, boxes, image_size):
        pasted_sizes.append(len(masks))
        return paste_masks(masks, boxes, image_size)

    monkeypatch.setattr(paste, "paste_masks", spy)
    reference = CocoResults(dataset.label_to_cat_id)
    streamed = CocoResults(dataset.label_to_cat_id)
    most = 0  # detections in one image
    for gt in gt_as_predictions(dataset):
        n = len(gt["scores"])
        # 10× each GT instance as R×R box masks (COCO-like: many detections per image)
        box_masks = mask_targets([gt], 28).repeat(10, 1, 1)  # [10n, 28, 28] in {0, 1}
        box_masks = box_masks * torch.linspace(0.45, 1.0, len(box_masks))[:, None, None]
        pred = {k: gt[k].repeat(10, *[1] * (gt[k].dim() - 1)) for k in ("boxes", "labels")}
        pred.update(image_id=gt["image_id"], scores=torch.linspace(1, 0.1, 10 * n))
        most = max(most, 10 * n)
        size = tuple(gt["masks"].shape[-2:])
        reference.add({**pred, "masks": paste_masks(box_masks, pred["boxes"], size)})
        streamed.add({**pred, "box_masks": box_masks, "image_size": size})
    assert streamed.results == reference.results
    assert streamed.image_ids == reference.image_ids == dataset.image_ids
    assert max(pasted_sizes) <= PASTE_CHUNK < most  # only the streamed path went through spy
    metrics = coco_eval.evaluate_results(dataset.coco, streamed.results, dataset.image_ids)
    assert metrics["segm"]["AP50"] > 0.3  # GT masks cropped to 28×28, pasted back (+ copies)


def test_paste_masks_binary_is_the_thresholded_paste():
    torch.manual_seed(0)
    masks = torch.rand(PASTE_CHUNK * 2 + 3, 8, 8)
    boxes = torch.tensor([[2.0, 3.0, 30.0, 20.0]]).repeat(len(masks), 1)
    out = paste_masks_binary(masks, boxes, (24, 40))
    assert out.dtype == torch.bool
    assert torch.equal(out, paste_masks(masks, boxes, (24, 40)) > 0.5)
    assert paste_masks_binary(masks[:0], boxes[:0], (24, 40)).shape == (0, 24, 40)
