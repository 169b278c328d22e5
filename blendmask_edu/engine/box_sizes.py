"""Do the dataset's objects fit the detector's FPN levels? (`train` warns when they do not.)

FCOS gives each GT box to the level whose size range holds max(l*, t*, r*, b*) (FCOS §3.2;
`FCOSConfig.sizes_of_interest`) and makes positives only at that level's locations inside the
box's center region. A box that gets *no positive location at all* is never learned. It
happens to a box that is, after the training resize,
  * smaller than the finest stride (8 px at P3): no location falls inside it
    → enlarge the input (`DataConfig.train_min_sizes`, `test_min_size`);
  * thin for its level: its long side sends it to a coarse level whose stride is wider than
    its short side → raise `FCOSConfig.sizes_of_interest` (finer levels take larger boxes);
  * covered by smaller boxes on all its locations (crowds; nothing to configure).
Boxes larger than twice the last size of interest all land on the top level, whatever their
size → raise `FCOSConfig.sizes_of_interest`.

`box_coverage` runs the real target assignment (`fcos_targets`) on the resized boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.ops import box_convert

from ..config import DataConfig, FCOSConfig
from ..data.transforms import resized_shape
from ..modeling.fcos.head import compute_locations, level_of_locations
from ..modeling.fcos.targets import fcos_targets

WARN_SHARE = 0.10  # warn when more than this share of the boxes is not covered


@dataclass
class Coverage:
    num_boxes: int
    per_level: list[int]  # boxes each level is responsible for, by size (P3 first)
    no_positive: int  # boxes that get no positive location
    too_small: int  # ... of which shorter than the finest stride
    thin: int  # ... of which wider than their level's stride on the short side
    beyond_top: int  # boxes with max(w, h)/2 > 2 × the last size of interest


def box_coverage(boxes: list[torch.Tensor], sizes: list[tuple[int, int]], cfg: FCOSConfig):
    """`boxes`: per image [G, 4] xyxy in the (resized) image of size (H, W) → Coverage."""
    limits = [*cfg.sizes_of_interest, math.inf]  # level i takes max(w, h)/2 ≤ limits[i]
    per_level = [0] * len(cfg.strides)
    num = no_positive = too_small = thin = beyond = 0
    for b, (h, w) in zip(boxes, sizes):
        if len(b) == 0:
            continue
        grid = [(math.ceil(h / s), math.ceil(w / s)) for s in cfg.strides]  # cells in the image
        targets = [{"boxes": b.float(), "labels": torch.ones(len(b), dtype=torch.long)}]
        assigned = fcos_targets(
            compute_locations(grid, cfg.strides),
            level_of_locations(grid),
            targets,
            cfg.strides,
            cfg.sizes_of_interest,
            cfg.center_sample_radius,
        ).gt_index[0]  # [L], −1 = background
        covered = set(assigned[assigned >= 0].tolist())
        for g, (x0, y0, x1, y1) in enumerate(b.tolist()):
            half, short = max(x1 - x0, y1 - y0) / 2, min(x1 - x0, y1 - y0)
            level = next(i for i, m in enumerate(limits) if half <= m)
            per_level[level] += 1
            beyond += half > 2 * cfg.sizes_of_interest[-1]
            if g not in covered:
                no_positive += 1
                too_small += short < cfg.strides[0]
                thin += cfg.strides[0] <= short < cfg.strides[level]
        num += len(b)
    return Coverage(num, per_level, no_positive, too_small, thin, beyond)


def training_boxes(dataset, data_cfg: DataConfig, max_images: int = 500):
    """The non-crowd boxes of up to `max_images` images (evenly spread), resized as training
    resizes them (the middle of `train_min_sizes`) → (boxes per image, sizes). JSON only."""
    min_size = sorted(data_cfg.train_min_sizes)[len(data_cfg.train_min_sizes) // 2]
    ids = dataset.image_ids
    ids = ids[:: max(1, math.ceil(len(ids) / max_images))]
    boxes, sizes = [], []
    for image_id in ids:
        info = dataset.coco.imgs[image_id]
        h, w = info["height"], info["width"]
        new_h, new_w = resized_shape(h, w, min_size, data_cfg.train_max_size)
        anns = [a for a in dataset.coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        xyxy = box_convert(xywh, "xywh", "xyxy")  # [G, 4]
        boxes.append(xyxy * torch.tensor([new_w / w, new_h / h] * 2))
        sizes.append((new_h, new_w))
    return boxes, sizes


def coverage_warnings(cov: Coverage, data_cfg: DataConfig, fcos_cfg: FCOSConfig) -> list[str]:
    """Plain-language warnings that name the setting to change ([] when the sizes fit)."""
    if cov.num_boxes == 0:
        return []

    def share(n: int) -> str:
        return f"{n / cov.num_boxes:.0%}"

    levels = ", ".join(f"P{i + 3} {share(n)}" for i, n in enumerate(cov.per_level))
    out = []
    if cov.no_positive > WARN_SHARE * cov.num_boxes:
        lines = [
            f"{share(cov.no_positive)} of {cov.num_boxes} training boxes get no positive "
            f"location on the FPN levels, so the model never learns them (boxes per level "
            f"by size: {levels})"
        ]
        if cov.too_small:
            lines.append(
                f"{share(cov.too_small)} are shorter than the finest stride "
                f"({fcos_cfg.strides[0]} px) after resizing to a short side of "
                f"{data_cfg.train_min_sizes}: enlarge the input (DataConfig.train_min_sizes "
                f"and test_min_size, now {data_cfg.test_min_size})"
            )
        if cov.thin:
            lines.append(
                f"{share(cov.thin)} are thinner than the stride of the level their size sends "
                f"them to: raise FCOSConfig.sizes_of_interest (now "
                f"{tuple(fcos_cfg.sizes_of_interest)}) so they go to finer levels"
            )
        crowded = cov.no_positive - cov.too_small - cov.thin
        if crowded:
            lines.append(
                f"{share(crowded)} lose all their locations to smaller overlapping boxes "
                "(the smallest box wins a location, FCOS §3.2)"
            )
        out.append("\n    ".join(lines))
    if cov.beyond_top > WARN_SHARE * cov.num_boxes:
        out.append(
            f"{share(cov.beyond_top)} of the training boxes are over twice the largest size of "
            f"interest ({fcos_cfg.sizes_of_interest[-1]} px) and all land on P7 whatever their "
            f"size (boxes per level: {levels}): raise FCOSConfig.sizes_of_interest"
        )
    return out


def check_box_sizes(dataset, data_cfg: DataConfig, fcos_cfg: FCOSConfig) -> list[str]:
    """What `train` calls: the warnings for a CocoInstances training set."""
    cov = box_coverage(*training_boxes(dataset, data_cfg), fcos_cfg)
    return coverage_warnings(cov, data_cfg, fcos_cfg)
