"""FCOS targets for the whole batch at once: the fast path beside `targets.py`.

`targets.py` assigns one image at a time (`assign_image`), which is the version to read. Here
the batch's GT is first padded to G = the largest number of boxes in an image,

    boxes [B, G, 4]   labels [B, G] (0 in the padding)   valid [B, G] (False in the padding)

and every location of every image meets every box in one set of tensor operations
[B, L, G]: no Python loop over images, so on a GPU the number of kernel launches does not grow
with the batch. `fcos_targets_batched(..., pad_targets(targets), ...)` returns exactly what
`fcos_targets(..., targets, ...)` returns (the tests compare them on random, empty, crowded and
tied batches). FCOS pads once and hands the padded GT on (`fcos_out["gt"]`) to the mask branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .targets import FCOSTargets, centerness_target, level_size_ranges


@dataclass
class PaddedTargets:
    """A batch's GT padded to G = the largest number of instances in one image."""

    boxes: torch.Tensor  # [B, G, 4] xyxy, zeros in the padding
    labels: torch.Tensor  # [B, G] int64, 0 in the padding
    valid: torch.Tensor  # [B, G] bool, True for the real instances


def to_slots(flat: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The instances of a batch in order, [ΣG, ...] (image 0's, then image 1's, ...) →
    [B, G, ...] with instance g of image b at [b, g] and zeros in the padding. `valid` [B, G]
    marks the real slots; `masked_scatter_` fills them in order (one call for the batch)."""
    out = flat.new_zeros((*valid.shape, *flat.shape[1:]))  # [B, G, ...]
    mask = valid.view(*valid.shape, *[1] * (flat.dim() - 1)).expand_as(out)
    return out.masked_scatter_(mask, flat)


def pad_targets(targets: list[dict]) -> PaddedTargets:
    """Per image "boxes" [G_i, 4], "labels" [G_i] → one `PaddedTargets`: instance g of
    image b stays at [b, g], padding goes after the last one. G = max(1, max_i G_i): a batch
    without any instance keeps one padding slot, so that reductions over G stay defined."""
    counts = [len(t["boxes"]) for t in targets]
    device = targets[0]["boxes"].device
    G = max(1, *counts)
    valid = torch.arange(G, device=device) < torch.tensor(counts, device=device)[:, None]
    boxes = to_slots(torch.cat([t["boxes"] for t in targets]), valid)  # [B, G, 4]
    labels = to_slots(torch.cat([t["labels"] for t in targets]).long(), valid)  # [B, G]
    return PaddedTargets(boxes=boxes, labels=labels, valid=valid)


def assign_batch(
    locations: torch.Tensor,  # [L, 2] (x, y)
    loc_stride: torch.Tensor,  # [L] stride of each location's level
    loc_range: torch.Tensor,  # [L, 2] [m_lo, m_hi] of each location's level
    gt: PaddedTargets,  # boxes [B, G, 4], labels [B, G], valid [B, G]
    radius: float,
):
    """`assign_image` for every image at once → (labels [B, L], reg [B, L, 4], gt_index [B, L]).

    The same three rules as `assign_image` (center sampling, the level's size range, the
    smallest box wins), on [B, L, G] instead of [L, G]; padding boxes are never candidates.
    Memory: B·L·G·4 distances (under 1 MB for the shapes preset's batch of 16 at 128 px,
    about 16 × 20k × 50 × 16 B = 256 MB for 16 COCO images at 800 px).
    """
    B, G = gt.valid.shape
    L = locations.shape[0]
    x = locations[None, :, 0:1]  # [1, L, 1]
    y = locations[None, :, 1:2]  # [1, L, 1]
    x0, y0, x1, y1 = (v[:, None, :] for v in gt.boxes.unbind(2))  # [B, 1, G] each
    reg = torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=3)  # [B, L, G, 4]  Eq. 1

    # 1. center sampling: the box center ± radius·stride, clipped to the box.
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2  # [B, 1, G]
    r = radius * loc_stride[None, :, None]  # [1, L, 1]
    in_center = (
        (x > torch.maximum(cx - r, x0))
        & (x < torch.minimum(cx + r, x1))
        & (y > torch.maximum(cy - r, y0))
        & (y < torch.minimum(cy + r, y1))
    )  # [B, L, G]
    # 2. the level must be responsible for the box's size.
    max_reg = reg.max(dim=3).values  # [B, L, G]
    in_level = (max_reg >= loc_range[None, :, 0:1]) & (max_reg <= loc_range[None, :, 1:2])

    # 3. ambiguity: the smallest box wins. Padding comes after the real boxes and is never a
    # candidate, so `min` (first minimum on ties) picks the index `assign_image` picks.
    candidate = in_center & in_level & gt.valid[:, None, :]  # [B, L, G]
    area = ((x1 - x0) * (y1 - y0)).expand(B, L, G)  # [B, L, G]
    area = torch.where(candidate, area, torch.full_like(area, float("inf")))
    min_area, gt_index = area.min(dim=2)  # [B, L]
    positive = torch.isfinite(min_area)
    gt_index = torch.where(positive, gt_index, torch.full_like(gt_index, -1))
    matched = gt_index.clamp(min=0)  # [B, L], box 0 for the background (as `assign_image`)
    loc_labels = torch.where(positive, gt.labels.gather(1, matched), torch.zeros_like(matched))
    loc_reg = reg.gather(2, matched[:, :, None, None].expand(B, L, 1, 4))[:, :, 0]  # [B, L, 4]
    # An image without boxes gets zeros, as `assign_image` gives it.
    loc_reg = torch.where(gt.valid[:, :1, None], loc_reg, torch.zeros_like(loc_reg))
    return loc_labels, loc_reg, gt_index


def fcos_targets_batched(
    locations: torch.Tensor,  # [L, 2]
    level_of_location: torch.Tensor,  # [L]
    gt: PaddedTargets,  # `pad_targets(targets)`: boxes [B, G, 4], labels [B, G], valid [B, G]
    strides,
    sizes_of_interest,
    radius: float,
) -> FCOSTargets:
    """`fcos_targets(locations, level_of_location, targets, ...)` for `gt = pad_targets(targets)`,
    with one `assign_batch` call instead of one `assign_image` per image."""
    ranges = torch.tensor(level_size_ranges(sizes_of_interest, len(strides)))  # [levels, 2]
    loc_range = ranges.to(locations.device)[level_of_location]  # [L, 2]
    loc_stride = torch.tensor(strides, dtype=torch.float32, device=locations.device)[
        level_of_location
    ]  # [L]
    labels, reg, gt_index = assign_batch(locations, loc_stride, loc_range, gt, radius)
    ctr = torch.where(labels > 0, centerness_target(reg), torch.zeros_like(reg[..., 0]))
    return FCOSTargets(labels=labels, reg=reg, gt_index=gt_index, centerness=ctr)
