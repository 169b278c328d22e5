"""Mask AP with ground-truth boxes: each branch's masks scored on the GT boxes as detections.

The shared detector's mistakes (missed, loose or misclassified boxes) cost every mask branch
the same way. Given the GT boxes and classes instead (score 1), what is left of the mask AP is
how well the branch turns a box into a mask: the fusion's own quality.

Branches that read something at a location (the blender's attention, YOLACT's coefficients)
take it at one location per box: the positive location to which FCOS' target assignment gives
the highest centerness target; when a box has no positive (a box smaller than the stride), the
P3 location nearest to its centre.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.batching import collate
from ..modeling.backbone import pyramid_levels
from ..modeling.fcos.targets import fcos_targets
from .coco_eval import evaluate_coco


def gt_detections(fcos_out: dict, targets: list[dict], fcos_cfg) -> list[dict]:
    """The GT instances of each image as FCOS-style detections: boxes [G, 4], labels [G],
    scores [G] (ones) and loc_index [G] (the location each box is read at, see above)."""
    locations, level = fcos_out["locations"], fcos_out["level"]  # [L, 2], [L]
    t = fcos_targets(
        locations,
        level,
        targets,
        fcos_cfg.strides,
        fcos_cfg.sizes_of_interest,
        fcos_cfg.center_sample_radius,
    )
    p3 = (level == 0).nonzero()[:, 0]  # [L3] indices of the P3 locations
    detections = []
    for b, target in enumerate(targets):
        boxes = target["boxes"].to(locations.device)  # [G, 4]
        G = len(boxes)
        # score[g, l] = centerness target where location l is a positive of box g, else −1
        is_pos = t.gt_index[b][None, :] == torch.arange(G, device=boxes.device)[:, None]
        score = t.centerness[b][None, :].expand(G, -1).masked_fill(~is_pos, -1.0)  # [G, L]
        best, loc_index = score.max(dim=1)  # [G] each
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # [G, 2]
        nearest = p3[torch.cdist(centres, locations[p3]).argmin(dim=1)]  # [G]
        loc_index = torch.where(best >= 0, loc_index, nearest)
        detections.append(
            {
                "boxes": boxes,
                "labels": target["labels"].to(locations.device),
                "scores": torch.ones(G, device=locations.device),
                "loc_index": loc_index,
            }
        )
    return detections


@torch.inference_mode()
def run_on_gt_boxes(model, images: list[torch.Tensor], targets: list[dict]) -> dict:
    """Like `InstanceSegmenter.run` at inference, with the GT boxes as the detections."""
    x, image_sizes = model.preprocess(images)
    features = model.backbone(x)
    fcos_out = model.fcos(pyramid_levels(features), image_sizes)
    detections = gt_detections(fcos_out, targets, model.fcos.cfg)
    masks = model.mask_branch.forward_test(features, fcos_out, detections, intermediates=False)
    return {"image_sizes": image_sizes, "fcos": {"detections": detections}, "masks": masks}


def evaluate_masks_on_gt_boxes(
    model, dataset, device, batch_size: int = 8, progress: bool = True
) -> dict[str, float]:
    """COCO mask AP ({"AP", "AP50", ...}) of the model's masks on `dataset`'s GT boxes."""
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=0)
    predictions = []
    for images, targets in tqdm(
        loader, desc="masks on GT boxes", disable=not progress, leave=False
    ):
        images = [im.to(device) for im in images]
        out = run_on_gt_boxes(model, images, targets)
        orig_sizes = [tuple(int(s) for s in t["orig_size"]) for t in targets]
        for target, res in zip(targets, model.postprocess(out, orig_sizes)):
            res = {k: v.cpu() for k, v in res.items()}
            res["image_id"] = int(target["image_id"])
            predictions.append(res)
    model.train(was_training)
    return evaluate_coco(dataset.coco, predictions, dataset.label_to_cat_id, ("segm",))["segm"]
