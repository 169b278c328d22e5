"""FCOS losses (Tian et al. 2019, Eq. 2 and §3.3), normalised as in the official code.

    L_cls = Σ_all focal(p, c*) / N_pos                       sigmoid focal loss (α=.25, γ=2)
    L_box = Σ_pos ctr* · GIoU_loss(b̂, b*) / Σ_pos ctr*      weighted by the centerness target
    L_ctr = Σ_pos BCE(ĉtr, ctr*) / N_pos

N_pos and Σ ctr* are averaged across processes under DDP (`reduce_mean`), so the loss of one
process that sees the whole batch and the DDP average of per-process losses give equal gradients.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from ...distributed import reduce_mean
from .targets import FCOSTargets


def distances_to_boxes(locations: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
    """(x, y) [..., 2] and distances (l, t, r, b) [..., 4] → boxes xyxy [..., 4] (Eq. 1 inverted)."""
    x, y = locations[..., 0], locations[..., 1]
    return torch.stack([x - ltrb[..., 0], y - ltrb[..., 1], x + ltrb[..., 2], y + ltrb[..., 3]], -1)


def fcos_losses(
    cls_logits: torch.Tensor,  # [B, L, C]
    box_reg: torch.Tensor,  # [B, L, 4] predicted (l, t, r, b), in stride units if normalised
    centerness: torch.Tensor,  # [B, L, 1] logits
    locations: torch.Tensor,  # [L, 2]
    loc_stride: torch.Tensor,  # [L] stride of each location (1 when targets not normalised)
    targets: FCOSTargets,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> dict[str, torch.Tensor]:
    B, L, C = cls_logits.shape
    pos = targets.labels > 0  # [B, L]
    num_pos = reduce_mean(pos.sum().float()).clamp(min=1.0)

    # Classification over every location: one-hot over C classes, background = all zeros.
    onehot = F.one_hot(targets.labels, C + 1)[..., 1:].float()  # [B, L, C]
    loss_cls = (
        sigmoid_focal_loss(cls_logits.float(), onehot, alpha, gamma, reduction="sum") / num_pos
    )

    # Box and centerness terms on positives only.
    ctr_t = targets.centerness[pos]  # [P]
    ctr_sum = reduce_mean(ctr_t.sum()).clamp(min=1e-6)
    pos_loc = locations[None].expand(B, L, 2)[pos]  # [P, 2]
    stride = loc_stride[None].expand(B, L)[pos, None]  # [P, 1]
    pred_boxes = distances_to_boxes(pos_loc, box_reg[pos].float() * stride)  # [P, 4]
    gt_boxes = distances_to_boxes(pos_loc, targets.reg[pos])  # [P, 4]
    giou = generalized_box_iou_loss(pred_boxes, gt_boxes, reduction="none")  # [P]
    loss_box = (giou * ctr_t).sum() / ctr_sum
    bce = F.binary_cross_entropy_with_logits(centerness[pos][:, 0].float(), ctr_t, reduction="sum")
    loss_ctr = bce / num_pos
    if pos.sum() == 0:  # keep every head in the graph with a zero loss (DDP needs all grads)
        loss_box = box_reg.sum() * 0.0
        loss_ctr = centerness.sum() * 0.0
    return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_ctr": loss_ctr}
