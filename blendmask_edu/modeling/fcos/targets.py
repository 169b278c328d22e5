"""FCOS target assignment (Tian et al. 2019, §3.1–3.2, plus center sampling).

For every location (x, y) on every level and every GT box (x0, y0, x1, y1):

    l* = x − x0,  t* = y − y0,  r* = x1 − x,  b* = y1 − y                      (Eq. 1)

A location is a *positive* for a box when
  1. it lies in the box's *center region*: a square of radius `radius · stride` around the
     box center, clipped to the box ("center sampling", FCOS improvements);
  2. the box's size fits the level: m_{i−1} ≤ max(l*, t*, r*, b*) ≤ m_i (§3.2; both
     bounds inclusive, as in the official code);
and when several boxes qualify, the one with the smallest area wins (§3.2).

    centerness* = sqrt( min(l*, r*)/max(l*, r*) · min(t*, b*)/max(t*, b*) )    (Eq. 3)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FCOSTargets:
    """Per-location targets for a batch; L = number of locations over all levels."""

    labels: torch.Tensor  # [B, L] int64, 0 = background, 1..C = class
    reg: torch.Tensor  # [B, L, 4] float, (l*, t*, r*, b*) in pixels
    gt_index: torch.Tensor  # [B, L] int64, index of the matched GT box in its image, −1 = none
    centerness: torch.Tensor  # [B, L] float, Eq. 3 (0 for background)


def level_size_ranges(sizes_of_interest, num_levels: int) -> list[tuple[float, float]]:
    """[m_{i−1}, m_i] per level: [−1, 64], [64, 128], ..., [512, ∞) for the defaults."""
    bounds = [-1.0, *[float(m) for m in sizes_of_interest], float("inf")]
    if len(bounds) - 1 != num_levels:
        raise ValueError(f"{len(sizes_of_interest)} sizes_of_interest for {num_levels} levels")
    return [(bounds[i], bounds[i + 1]) for i in range(num_levels)]


def centerness_target(reg: torch.Tensor) -> torch.Tensor:
    """Eq. 3 on [..., 4] (l, t, r, b) → [...]."""
    lr, tb = reg[..., [0, 2]], reg[..., [1, 3]]
    ratio = (lr.min(-1).values / lr.max(-1).values.clamp(min=1e-6)) * (
        tb.min(-1).values / tb.max(-1).values.clamp(min=1e-6)
    )
    return ratio.clamp(min=0).sqrt()


def assign_image(
    locations: torch.Tensor,  # [L, 2] (x, y)
    loc_stride: torch.Tensor,  # [L] stride of each location's level
    loc_range: torch.Tensor,  # [L, 2] [m_lo, m_hi] of each location's level
    boxes: torch.Tensor,  # [G, 4] xyxy
    labels: torch.Tensor,  # [G] 1..C
    radius: float,
):
    """Targets for one image → (labels [L], reg [L, 4], gt_index [L])."""
    L, G = locations.shape[0], boxes.shape[0]
    if G == 0:
        zeros = locations.new_zeros((L, 4))
        return (
            labels.new_zeros(L),
            zeros,
            torch.full((L,), -1, dtype=torch.long, device=zeros.device),
        )
    x, y = locations[:, 0:1], locations[:, 1:2]  # [L, 1]
    x0, y0, x1, y1 = boxes.unbind(1)  # [G] each
    reg = torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=2)  # [L, G, 4]  Eq. 1

    # 1. center sampling: the box center ± radius·stride, clipped to the box.
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2  # [G]
    r = radius * loc_stride[:, None]  # [L, 1]
    in_center = (
        (x > torch.maximum(cx - r, x0))
        & (x < torch.minimum(cx + r, x1))
        & (y > torch.maximum(cy - r, y0))
        & (y < torch.minimum(cy + r, y1))
    )  # [L, G]
    # 2. the level must be responsible for the box's size.
    max_reg = reg.max(dim=2).values  # [L, G]
    in_level = (max_reg >= loc_range[:, 0:1]) & (max_reg <= loc_range[:, 1:2])  # [L, G]

    # 3. ambiguity: the smallest box wins.
    area = ((x1 - x0) * (y1 - y0))[None, :].expand(L, G).clone()  # [L, G]
    area[~(in_center & in_level)] = float("inf")
    min_area, gt_index = area.min(dim=1)  # [L]
    positive = torch.isfinite(min_area)
    gt_index = torch.where(positive, gt_index, torch.full_like(gt_index, -1))
    loc_labels = torch.where(positive, labels[gt_index.clamp(min=0)], torch.zeros_like(gt_index))
    loc_reg = reg[torch.arange(L), gt_index.clamp(min=0)]  # [L, 4]
    return loc_labels, loc_reg, gt_index


def fcos_targets(
    locations: torch.Tensor,  # [L, 2]
    level_of_location: torch.Tensor,  # [L]
    targets: list[dict],  # per image: "boxes" [G, 4], "labels" [G]
    strides,
    sizes_of_interest,
    radius: float,
) -> FCOSTargets:
    """Assign every location of every image of the batch (see module docstring)."""
    ranges = torch.tensor(level_size_ranges(sizes_of_interest, len(strides)))  # [levels, 2]
    ranges = ranges.to(locations.device)
    loc_range = ranges[level_of_location]  # [L, 2]
    loc_stride = torch.tensor(strides, dtype=torch.float32, device=locations.device)[
        level_of_location
    ]  # [L]
    per_image = [
        assign_image(locations, loc_stride, loc_range, t["boxes"], t["labels"], radius)
        for t in targets
    ]
    labels = torch.stack([p[0] for p in per_image])  # [B, L]
    reg = torch.stack([p[1] for p in per_image])  # [B, L, 4]
    gt_index = torch.stack([p[2] for p in per_image]).to(labels.device)  # [B, L]
    ctr = torch.where(labels > 0, centerness_target(reg), torch.zeros_like(reg[..., 0]))
    return FCOSTargets(labels=labels, reg=reg, gt_index=gt_index, centerness=ctr)
