"""FCOS as one module: head → (training) targets + losses, (inference) detections.

`forward` returns a dict of everything it computed, so notebooks can show each stage
(per-location predictions, the assigned targets, the decoded detections) and a mask branch
can read what it needs (the box tower for BlendMask's top layer, the positives' targets and
the batch's GT padded to [B, G], which their `gt_index` indexes).
"""

from __future__ import annotations

import torch
from torch import nn

from ...config import FCOSConfig
from .head import FCOSHead, compute_locations, flatten_levels, level_of_locations
from .inference import detect_image
from .loss import fcos_losses
from .targets_batched import fcos_targets_batched, pad_targets


class FCOS(nn.Module):
    def __init__(self, cfg: FCOSConfig, in_channels: int):
        super().__init__()
        self.cfg = cfg
        self.head = FCOSHead(cfg, in_channels)

    def forward(
        self,
        features: list[torch.Tensor],  # P3..P7, [B, D, H_i, W_i]
        image_sizes: list[tuple[int, int]],  # unpadded (H, W) of each image in the batch
        targets: list[dict] | None = None,  # per image "boxes" [G, 4], "labels" [G]
    ) -> dict:
        cfg = self.cfg
        head = self.head(features)
        sizes = [tuple(f.shape[-2:]) for f in features]
        device = features[0].device
        locations = compute_locations(sizes, cfg.strides, device)  # [L, 2]
        level = level_of_locations(sizes, device)  # [L]
        strides = torch.tensor(cfg.strides, dtype=torch.float32, device=device)
        loc_stride = strides[level] if cfg.norm_reg_targets else torch.ones_like(strides[level])
        out = {
            "cls_logits": flatten_levels(head["cls_logits"]),  # [B, L, C]
            "box_reg": flatten_levels(head["box_reg"]),  # [B, L, 4]
            "centerness": flatten_levels(head["centerness"]),  # [B, L, 1]
            "box_tower": head["box_tower"],  # per level [B, D, H_i, W_i]
            "locations": locations,
            "level": level,
            "loc_stride": loc_stride,
            "level_sizes": [h * w for h, w in sizes],
        }
        if targets is not None:
            # `fcos_targets` (targets.py) for the whole batch at once, tested equal.
            gt = pad_targets(targets)  # boxes [B, G, 4], labels [B, G], valid [B, G]
            t = fcos_targets_batched(
                locations,
                level,
                gt,
                cfg.strides,
                cfg.sizes_of_interest,
                cfg.center_sample_radius,
            )
            out["gt"] = gt  # the padded GT the targets index (gt_index), for the mask branch
            out["targets"] = t
            out["losses"] = fcos_losses(
                out["cls_logits"],
                out["box_reg"],
                out["centerness"],
                locations,
                loc_stride,
                t,
                cfg.focal_alpha,
                cfg.focal_gamma,
            )
        else:
            out["detections"] = [
                detect_image(
                    out["cls_logits"][b],
                    out["box_reg"][b],
                    out["centerness"][b],
                    locations,
                    loc_stride,
                    out["level_sizes"],
                    image_sizes[b],
                    cfg,
                )
                for b in range(len(image_sizes))
            ]
        return out
