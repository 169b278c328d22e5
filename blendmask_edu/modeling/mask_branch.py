"""The one interface every mask branch of the zoo implements (blender, yolact, fcis, roi).

A mask branch sits beside FCOS and shares its backbone/FPN features:

* `forward_train(features, fcos_out, targets)` → dict of losses. Every branch learns from the
  same proposals: the *positive locations* of FCOS' target assignment, each with the *GT box*
  of the instance it is matched to (BlendMask §3.4), at most `max_instances` of them
  (`positive_instances` collects them).
* `forward_test(features, fcos_out, detections)` → per image a dict whose "masks" are
  [N, R, R] probabilities in box coordinates for the N detections, plus whatever
  intermediates it wants to show (bases, attentions...); with `intermediates=False` it may
  skip those that cost extra work (what `predict` runs). The segmenter pastes them back.

The small helpers below are shared by the branches: the R×R mask targets, the
centerness-weighted BCE, and the bookkeeping between "all detections of a batch" and
"per image". `positive_instances` and `mask_targets` are the readable references; the
training step calls their loop-free twins in targets_batched.py (tested equal).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import roi_align

from ..distributed import reduce_mean


class MaskBranch(nn.Module):
    def forward_train(
        self, features: dict[str, torch.Tensor], fcos_out: dict, targets: list[dict]
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward_test(
        self,
        features: dict[str, torch.Tensor],
        fcos_out: dict,
        detections: list[dict],
        intermediates: bool = True,  # False: the masks only (predict, evaluate, timing)
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


def mask_targets(targets: list[dict], R: int) -> torch.Tensor:
    """Each GT mask cropped by its own box and resized to R×R → [ΣG, R, R] in {0, 1}."""
    crops = []
    for t in targets:
        if len(t["boxes"]) == 0:
            continue
        masks = t["masks"][:, None].float()  # [G, 1, H, W]
        rois = torch.cat(
            [torch.arange(len(masks), device=masks.device)[:, None].float(), t["boxes"].float()],
            dim=1,
        )  # [G, 5], box g crops mask g
        crop = roi_align(masks, rois, (R, R), spatial_scale=1.0, sampling_ratio=0, aligned=True)
        crops.append((crop[:, 0] >= 0.5).float())  # [G, R, R]
    if not crops:
        return torch.zeros((0, R, R))
    return torch.cat(crops)


def weighted_mask_bce(
    logits: torch.Tensor,  # [P, R, R]
    target: torch.Tensor,  # [P, R, R] in {0, 1}
    weights: torch.Tensor,  # [P]
) -> torch.Tensor:
    """Σ_d w_d · mean_pixels BCE(m_d, t_d) / Σ_d w_d.

    BlendMask's mask loss with w_d = the centerness target of positive d (AdelaiDet); a plain
    mean over positives with w_d = 1. The normaliser is averaged over processes (DDP); with no
    positives the loss is 0.
    """
    per_instance = F.binary_cross_entropy_with_logits(
        logits.float(), target, reduction="none"
    ).mean(dim=(1, 2))  # [P]
    return (per_instance * weights).sum() / reduce_mean(weights.sum()).clamp(min=1e-6)


def unique_instances(pos: dict, weights: torch.Tensor) -> dict:
    """The distinct GT instances among the positives, each with the sum of its positives'
    `weights` [P] → {"gt_index", "gt_boxes", "labels", "batch_index", "weight"}, [U] each,
    and "inverse" [P]: the instance of each positive (so `x_u[inverse]` is `x` per positive).

    A branch whose mask depends on the box alone (FCIS, the RoI head) predicts the same mask
    for every positive of one instance: computing it once per instance with the summed weight
    gives exactly the loss over all positives, U instead of P times.
    """
    gt_index, inverse = pos["gt_index"].unique(return_inverse=True)  # [U], [P]
    first = torch.zeros_like(gt_index).scatter_(
        0, inverse, torch.arange(len(inverse), device=inverse.device)
    )  # [U] a positive of each instance
    return {
        "gt_index": gt_index,
        "gt_boxes": pos["gt_boxes"][first],
        "labels": pos["labels"][first],
        "batch_index": pos["batch_index"][first],
        "weight": torch.zeros_like(gt_index, dtype=weights.dtype).index_add_(0, inverse, weights),
        "inverse": inverse,
    }


def zero_touch(*parts) -> torch.Tensor:
    """0 · (sum of every tensor / every parameter of every module in `parts`).

    Added to a loss, it keeps all of a branch's parameters in the autograd graph with a zero
    gradient when a batch has no positives (DDP wants every parameter to get a gradient).
    """
    total = 0.0
    for part in parts:
        tensors = part.parameters() if isinstance(part, nn.Module) else [part]
        total = total + sum(t.sum() for t in tensors)
    return 0.0 * total


def gather_detections(detections: list[dict]) -> dict[str, torch.Tensor]:
    """Per-image detections → one batch: boxes [ΣN, 4], labels [ΣN], loc_index [ΣN] and
    batch_index [ΣN] (the image of each detection)."""
    return {
        "boxes": torch.cat([d["boxes"] for d in detections]),
        "labels": torch.cat([d["labels"] for d in detections]),
        "loc_index": torch.cat([d["loc_index"] for d in detections]),
        "batch_index": torch.cat(
            [torch.full_like(d["labels"], b) for b, d in enumerate(detections)]
        ),
    }


def split_per_image(
    batch_index: torch.Tensor,  # [ΣN]
    num_images: int,
    per_detection: dict[str, torch.Tensor],  # each [ΣN, ...]
    per_image: dict[str, torch.Tensor] | None = None,  # each [B, ...]
) -> list[dict[str, torch.Tensor]]:
    """The inverse of `gather_detections` for a branch's outputs: for each image b, every
    `per_detection` tensor restricted to the detections of b, plus `per_image[key][b]`."""
    results = []
    for b in range(num_images):
        sel = batch_index == b
        out = {key: value[sel] for key, value in per_detection.items()}
        out.update({key: value[b] for key, value in (per_image or {}).items()})
        results.append(out)
    return results
