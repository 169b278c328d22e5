"""The one interface every mask branch of the zoo implements (blender, yolact, fcis, roi).

A mask branch sits beside FCOS and shares its backbone/FPN features:

* `forward_train(features, fcos_out, targets)` → dict of losses. It learns from the
  *positive locations* of FCOS' target assignment and their matched GT instances
  (`positive_instances` collects them).
* `forward_test(features, fcos_out, detections)` → per image a dict whose "masks" are
  [N, R, R] probabilities in box coordinates for the N detections, plus whatever
  intermediates it wants to show (bases, attentions...). The segmenter pastes them back.
"""

from __future__ import annotations

import torch
from torch import nn


class MaskBranch(nn.Module):
    def forward_train(
        self, features: dict[str, torch.Tensor], fcos_out: dict, targets: list[dict]
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward_test(
        self, features: dict[str, torch.Tensor], fcos_out: dict, detections: list[dict]
    ) -> list[dict[str, torch.Tensor]]:
        raise NotImplementedError


def positive_instances(fcos_out: dict, targets: list[dict], max_instances: int = -1) -> dict:
    """The positive locations of a batch and the GT instance each one is matched to.

    Returns (P = number of positives):
      batch_index [P], loc_index [P] (into the flattened locations), gt_index [P] (into the
      batch-wide concatenation of GT instances), gt_boxes [P, 4], labels [P],
      centerness [P] (the centerness target, BlendMask's mask-loss weight).
    With `max_instances` > 0, a random subset of at most that many positives is kept.
    """
    t = fcos_out["targets"]
    batch_index, loc_index = (t.labels > 0).nonzero(as_tuple=True)  # [P] each
    if max_instances > 0 and batch_index.numel() > max_instances:
        keep = torch.randperm(batch_index.numel(), device=batch_index.device)[:max_instances]
        batch_index, loc_index = batch_index[keep], loc_index[keep]
    offsets = torch.tensor(
        [0] + [len(x["boxes"]) for x in targets], device=batch_index.device
    ).cumsum(0)  # [B + 1]
    local_gt = t.gt_index[batch_index, loc_index]  # [P] index inside its image
    all_boxes = torch.cat([x["boxes"] for x in targets])  # [ΣG, 4]
    gt_index = offsets[batch_index] + local_gt  # [P]
    return {
        "batch_index": batch_index,
        "loc_index": loc_index,
        "gt_index": gt_index,
        "gt_boxes": all_boxes[gt_index],
        "labels": t.labels[batch_index, loc_index],
        "centerness": t.centerness[batch_index, loc_index],
    }
