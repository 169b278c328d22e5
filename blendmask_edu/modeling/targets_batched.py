"""The mask branches' targets for the whole batch at once: the fast path of three references.

    semantic_targets_batched    = bases.semantic_targets          (a loop over images, instances)
    mask_targets_batched        = mask_branch.mask_targets        (one RoIAlign per image)
    positive_instances_batched  = mask_branch.positive_instances  (lists built per image)

Each returns the same tensors as its reference (the tests check they are equal on random,
empty, crowded and mixed-size batches); the training step uses these, the notebooks read the
references. The GT is padded to [B, G] (`pad_targets`, `to_slots` in fcos/targets_batched.py),
so the work is a few tensor operations whatever the batch size; positive instances read the
padded GT that FCOS returns instead of the list of targets.
"""

from __future__ import annotations

import itertools

import torch
from torch.nn import functional as F
from torchvision.ops import roi_align

from ..data.batching import pad_masks
from .fcos.targets_batched import pad_targets, to_slots


def one_size_masks(targets: list[dict]) -> list[torch.Tensor]:
    """Each image's masks [G_i, H_i, W_i], zero-padded at the bottom/right to the batch's
    largest H and W (as `pad_images` pads the images); untouched when all sizes agree."""
    H = max(t["masks"].shape[-2] for t in targets)
    W = max(t["masks"].shape[-1] for t in targets)
    return [
        t["masks"] if t["masks"].shape[-2:] == (H, W) else pad_masks(t["masks"], (H, W))
        for t in targets
    ]


def semantic_targets_batched(
    targets: list[dict], size: tuple[int, int], stride: int
) -> torch.Tensor:
    """`semantic_targets` without loops → [B, h, w] int64: each cell takes the label of the
    last instance whose mask covers the cell's centre pixel, 0 where none (and in padding)."""
    h, w = size
    gt = pad_targets(targets)  # labels [B, G] (0 in the padding), valid [B, G]
    B, G = gt.labels.shape
    masks = torch.cat(one_size_masks(targets))  # [ΣG, H, W]
    # Read the masks at the cell centres (stride·i + stride/2), as the reference does.
    centres = masks[:, stride // 2 :: stride, stride // 2 :: stride][:, :h, :w]  # [ΣG, ≤h, ≤w]
    centres = to_slots(centres.bool().contiguous(), gt.valid)  # [B, G, ≤h, ≤w]
    centres = F.pad(centres, (0, w - centres.shape[-1], 0, h - centres.shape[-2]))  # [B, G, h, w]
    # 1 + the index of the last (topmost) instance covering each cell, 0 where none does.
    order = torch.arange(1, G + 1, device=masks.device).view(1, G, 1, 1)  # [1, G, 1, 1]
    top = torch.where(centres, order, torch.zeros_like(order)).amax(dim=1)  # [B, h, w]
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


def positive_instances_batched(fcos_out: dict, max_instances: int = -1) -> dict:
    """`positive_instances(fcos_out, targets, max_instances)` read from the padded GT that
    FCOS returns (`fcos_out["gt"]`): a positive's box is at [its image, its gt_index], and its
    batch-wide index is the image's offset + gt_index. No list of the images is built."""
    t, gt = fcos_out["targets"], fcos_out["gt"]
    batch_index, loc_index = (t.labels > 0).nonzero(as_tuple=True)  # [P] each
    if max_instances > 0 and batch_index.numel() > max_instances:
        keep = torch.randperm(batch_index.numel(), device=batch_index.device)[:max_instances]
        batch_index, loc_index = batch_index[keep], loc_index[keep]
    counts = gt.valid.sum(dim=1)  # [B] instances per image
    offsets = counts.cumsum(0) - counts  # [B] batch-wide index of each image's first instance
    local_gt = t.gt_index[batch_index, loc_index]  # [P] index inside its image
    return {
        "batch_index": batch_index,
        "loc_index": loc_index,
        "gt_index": offsets[batch_index] + local_gt,  # [P] into the batch's ΣG instances
        "gt_boxes": gt.boxes[batch_index, local_gt],  # [P, 4]
        "labels": t.labels[batch_index, loc_index],
        "centerness": t.centerness[batch_index, loc_index],
    }
