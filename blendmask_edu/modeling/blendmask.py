"""BlendMask's mask branch = bottom module (bases) + top layer (attention) + blender.

Training (paper §3.4, AdelaiDet's defaults):
  * every positive location of FCOS contributes its attention; its proposal is the *GT box*
    it is matched to (not the predicted box);
  * the target is the GT mask cropped by that box and resized to R×R (RoIAlign, ≥ 0.5);
  * loss = Σ_d ctr*_d · mean_pixels BCE(m_d, target_d) / Σ_d ctr*_d  (centerness-weighted);
  * plus the auxiliary semantic-segmentation loss of the bottom module (§4).
Inference: attention at the detections' locations, bases cropped by the detected boxes.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torchvision.ops import roi_align

from ..config import BlenderConfig, FCOSConfig
from ..engine.distributed import reduce_mean
from .attention import TopLayer
from .bases import BottomModule, semantic_loss
from .blender import blend, crop_bases
from .mask_branch import MaskBranch, positive_instances


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


class BlendMaskBranch(MaskBranch):
    def __init__(self, cfg: BlenderConfig, in_channels: int, fcos_cfg: FCOSConfig):
        super().__init__()
        self.cfg = cfg
        self.bottom = BottomModule(cfg, in_channels, fcos_cfg.num_classes)
        self.top = TopLayer(cfg, in_channels)
        level_strides = dict(zip(("p3", "p4", "p5", "p6", "p7"), fcos_cfg.strides))
        self.bases_stride = level_strides[cfg.bottom_in_levels[0]] // 2  # 4 with P3 first

    def forward_train(self, features, fcos_out, targets) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        bottom = self.bottom(features, with_seg=True)
        bases = bottom["bases"]  # [B, K, H/4, W/4]
        pos = positive_instances(fcos_out, targets, cfg.max_instances_for_loss)
        attention = self.top.at_locations(
            fcos_out["box_tower"], pos["batch_index"], pos["loc_index"]
        )  # [P, K, M, M]
        crops = crop_bases(bases, pos["gt_boxes"], pos["batch_index"], cfg.R, self.bases_stride)
        logits = blend(crops, attention, cfg.interpolation)["mask_logits"]  # [P, R, R]
        target = mask_targets(targets, cfg.R).to(logits.device)[pos["gt_index"]]  # [P, R, R]
        ctr = pos["centerness"]  # [P]
        per_instance = F.binary_cross_entropy_with_logits(
            logits.float(), target, reduction="none"
        ).mean(dim=(1, 2))  # [P]
        loss_mask = (per_instance * ctr).sum() / reduce_mean(ctr.sum()).clamp(min=1e-6)
        # With no positives the sums above are over empty tensors: 0. Keep every parameter of
        # the bases and the top layer (its bias too) in the graph with a zero gradient (DDP).
        in_graph = bases.sum() + sum(p.sum() for p in self.top.parameters())
        loss_mask = loss_mask + 0.0 * in_graph
        losses = {"loss_mask": cfg.mask_loss_weight * loss_mask}
        if "seg_logits" in bottom:
            stride = self.bases_stride * 2
            losses["loss_sem"] = cfg.aux_seg_weight * semantic_loss(
                bottom["seg_logits"], targets, stride
            )
        return losses

    def forward_test(self, features, fcos_out, detections) -> list[dict[str, torch.Tensor]]:
        """Per image: "masks" [N, R, R] probabilities and the intermediates of the blender."""
        bases = self.bottom(features)["bases"]  # [B, K, H/4, W/4]
        boxes = torch.cat([d["boxes"] for d in detections])  # [ΣN, 4]
        batch_index = torch.cat([torch.full_like(d["labels"], b) for b, d in enumerate(detections)])
        loc_index = torch.cat([d["loc_index"] for d in detections])
        attention = self.top.at_locations(fcos_out["box_tower"], batch_index, loc_index)
        crops = crop_bases(bases, boxes, batch_index, self.cfg.R, self.bases_stride)
        blended = blend(crops, attention, self.cfg.interpolation)
        results = []
        for b in range(len(detections)):
            sel = batch_index == b
            results.append(
                {
                    "masks": blended["mask_logits"][sel].sigmoid(),  # [N, R, R]
                    "mask_logits": blended["mask_logits"][sel],  # [N, R, R]
                    "bases": bases[b],  # [K, H/4, W/4]
                    "attention": attention[sel],  # [N, K, M, M] (before softmax)
                    "attention_weights": blended["attention_weights"][
                        sel
                    ],  # [N, K, R, R] softmaxed
                    "basis_crops": crops[sel],  # [N, K, R, R]
                }
            )
        return results
