"""The mask branches' targets for the whole batch at once: the fast path of three references.

    semantic_targets_batched    = bases.semantic_targets          (a loop over images, instances)
    mask_targets_batched        = mask_branch.mask_targets        (one RoIAlign per image)
    positive_instances_batched  = mask_branch.positive_instances  (lists built per image)

Each takes the same arguments and returns the same tensors as its reference (the tests check
they are equal on random, empty, crowded and mixed-size batches); the training step uses these,
the notebooks read the references. The GT is padded to [B, G] by `pad_targets` (see
fcos/targets_batched.py), so the work is a few tensor operations whatever the batch size.
"""

from __future__ import annotations

import itertools

import torch
from torch.nn import functional as F
from torchvision.ops import roi_align

from .fcos.targets_batched import pad_targets


def semantic_targets_batched(
    targets: list[dict], size: tuple[int, int], stride: int
) -> torch.Tensor:
    """`semantic_targets` without loops → [B, h, w] int64: each cell takes the label of the
    last instance whose mask covers the cell's centre pixel, 0 where none (and in padding)."""
    h, w = size
    gt = pad_targets(targets, with_masks=True)  # masks [B, G, H, W], labels [B, G]
    B, G = gt.labels.shape
    # Read the masks at the cell centres (stride·i + stride/2), as the reference does.
    masks = gt.masks[:, :, stride // 2 :: stride, stride // 2 :: stride][:, :, :h, :w].bool()
    mh, mw = masks.shape[-2:]
    masks = F.pad(masks, (0, w - mw, 0, h - mh))  # [B, G, h, w], cells past the masks: none
    # 1 + the index of the last (topmost) instance covering each cell, 0 where none does.
    order = torch.arange(1, G + 1, device=masks.device).view(1, G, 1, 1)  # [1, G, 1, 1]
    top = torch.where(masks, order, torch.zeros_like(order)).amax(dim=1)  # [B, h, w]
    labels = F.pad(gt.labels, (1, 0))  # [B, 1 + G], column 0 = background
    return labels.gather(1, top.flatten(1)).view(B, h, w)  # [B, h, w]


def crop_masks(masks: torch.Tensor, boxes: torch.Tensor, R: int) -> torch.Tensor:
    """Mask n [N, H, W] cropped by box n [N, 4] and resized to R×R, ≥ 0.5 → [N, R, R] in {0, 1}
    (one RoIAlign call; the per-image step of `mask_targets`)."""
    index = torch.arange(len(masks), device=masks.device)[:, None].float()  # [N, 1]
    rois = torch.cat([index, boxes.float()], dim=1)  # [N, 5], box n crops mask n
    crop = roi_align(masks[:, None].float(), rois, (R, R), 1.0, sampling_ratio=0, aligned=True)
    return (crop[:, 0] >= 0.5).float()  # [N, R, R]


def mask_targets_batched(targets: list[dict], R: int) -> torch.Tensor:
    """`mask_targets` with one RoIAlign for all images of one size → [ΣG, R, R] in {0, 1},
    instances in batch order (image 0's, then image 1's, ...).

    Images of different sizes are not zero-padded into one tensor: RoIAlign reads the edge
    row/column for sample points in [H − 1, H], and padding would change those values. Each
    group of same-sized images gets its own call instead (one group when the batch is padded
    to a common size).
    """
    counts = [len(t["boxes"]) for t in targets]
    starts = [0, *itertools.accumulate(counts)]  # first row of each image
    groups: dict[tuple[int, int], list[int]] = {}  # mask size → images
    for b, t in enumerate(targets):
        groups.setdefault(tuple(t["masks"].shape[-2:]), []).append(b)
    if len(groups) == 1:  # the usual case: the whole batch in one call
        return crop_masks(
            torch.cat([t["masks"] for t in targets]), torch.cat([t["boxes"] for t in targets]), R
        )
    out = targets[0]["boxes"].new_zeros((sum(counts), R, R))  # [ΣG, R, R]
    for images in groups.values():
        rows = [starts[b] + g for b in images for g in range(counts[b])]  # their batch order
        masks = torch.cat([targets[b]["masks"] for b in images])  # [N, H, W], one size
        boxes = torch.cat([targets[b]["boxes"] for b in images])  # [N, 4]
        out[torch.tensor(rows, dtype=torch.long, device=out.device)] = crop_masks(masks, boxes, R)
    return out


def positive_instances_batched(
    fcos_out: dict, targets: list[dict], max_instances: int = -1
) -> dict:
    """`positive_instances` on padded GT: the boxes are read at [image, index in image]
    and the batch-wide index is the image's offset + the index in the image."""
    t = fcos_out["targets"]
    batch_index, loc_index = (t.labels > 0).nonzero(as_tuple=True)  # [P] each
    if max_instances > 0 and batch_index.numel() > max_instances:
        keep = torch.randperm(batch_index.numel(), device=batch_index.device)[:max_instances]
        batch_index, loc_index = batch_index[keep], loc_index[keep]
    gt = pad_targets(targets)  # boxes [B, G, 4], valid [B, G]
    counts = gt.valid.sum(dim=1)  # [B] instances per image
    offsets = counts.cumsum(0) - counts  # [B] first batch-wide index of each image
    local_gt = t.gt_index[batch_index, loc_index]  # [P] index inside its image
    return {
        "batch_index": batch_index,
        "loc_index": loc_index,
        "gt_index": offsets[batch_index] + local_gt,  # [P] into the batch's ΣG instances
        "gt_boxes": gt.boxes[batch_index, local_gt],  # [P, 4]
        "labels": t.labels[batch_index, loc_index],
        "centerness": t.centerness[batch_index, loc_index],
    }
