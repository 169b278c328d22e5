"""BlendMask's mask branch = bottom module (bases) + top layer (attention) + blender.

Training (paper §3.4, AdelaiDet's defaults):
  * every positive location of FCOS contributes its attention; its proposal is the *GT box*
    it is matched to (not the predicted box);
  * the target is the GT mask cropped by that box and resized to R×R (RoIAlign, ≥ 0.5);
  * loss = Σ_d ctr*_d · mean_pixels BCE(m_d, target_d) / Σ_d ctr*_d  (centerness-weighted);
  * plus the auxiliary semantic-segmentation loss of the bottom module (§4).
Inference: attention at the detections' locations, bases cropped by the detected boxes.

With `BlenderConfig.attention = "cells"` the top layer is gone: the paper's Table 1
"assembler" (FCIS-style), where cell (i, j) of the M×M grid over the box takes basis i·M + j
alone. It is the blender with a fixed one-hot attention per cell and nearest interpolation
(the tests check this identity), trained on the same crops, targets and loss.
"""

from __future__ import annotations

import torch

from ..config import BlenderConfig, FCOSConfig
from .attention import TopLayer
from .bases import BottomModule, semantic_loss
from .blender import blend, crop_bases
from .mask_branch import (
    MaskBranch,
    gather_detections,
    split_per_image,
    unique_instances,
    weighted_mask_bce,
    zero_touch,
)
from .targets_batched import mask_targets_batched, positive_instances_batched


class BlendMaskBranch(MaskBranch):
    def __init__(
        self, cfg: BlenderConfig, in_channels: int, fcos_cfg: FCOSConfig, c2_channels: int = 0
    ):
        super().__init__()
        self.cfg = cfg
        self.bottom = BottomModule(cfg, in_channels, fcos_cfg.num_classes, c2_channels=c2_channels)
        if cfg.attention not in ("predicted", "cells"):
            raise ValueError(f"BlenderConfig.attention {cfg.attention!r}: 'predicted' or 'cells'")
        if cfg.attention == "cells" and cfg.K != cfg.M * cfg.M:
            raise ValueError(f"attention='cells' needs K = M² bases (K={cfg.K}, M={cfg.M})")
        self.top = TopLayer(cfg, in_channels) if cfg.attention == "predicted" else None
        level_strides = dict(zip(("p3", "p4", "p5", "p6", "p7"), fcos_cfg.strides))
        self.bases_stride = level_strides[cfg.bottom_in_levels[0]] // 2  # 4 with P3 first

    def forward_train(self, features, fcos_out, targets) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        bottom = self.bottom(features, with_seg=True)
        bases = bottom["bases"]  # [B, K, H/4, W/4]
        pos = positive_instances_batched(fcos_out, cfg.max_instances_for_loss)
        attention = self.attention(fcos_out, pos["batch_index"], pos["loc_index"])  # [P, K, M, M]
        # The crop depends on the box alone, and the positives of one instance share its GT
        # box: crop each instance once and hand every positive its instance's crop (the same
        # numbers and gradients as cropping per positive; U ≈ P/10 RoIAligns on shapes).
        inst = unique_instances(pos, pos["centerness"])
        crops = crop_bases(bases, inst["gt_boxes"], inst["batch_index"], cfg.R, self.bases_stride)
        crops = crops[inst["inverse"]]  # [U, K, R, R] → [P, K, R, R]
        logits = self.mix(crops, attention)["mask_logits"]  # [P, R, R]
        target = mask_targets_batched(targets, cfg.R).to(logits.device)  # [ΣG, R, R]
        target = target[pos["gt_index"]]  # [P, R, R] the target of each positive's instance
        loss_mask = weighted_mask_bce(logits, target, pos["centerness"])  # centerness-weighted
        # With no positives the loss is 0; keep every parameter in the graph (DDP).
        loss_mask = loss_mask + zero_touch(bases, *([self.top] if self.top else []))
        losses = {"loss_mask": cfg.mask_loss_weight * loss_mask}
        if "seg_logits" in bottom:
            stride = self.bases_stride * 2
            losses["loss_sem"] = cfg.aux_seg_weight * semantic_loss(
                bottom["seg_logits"], targets, stride
            )
        return losses

    def attention(self, fcos_out, batch_index, loc_index) -> torch.Tensor | None:
        """The top layer's attention at N locations [N, K, M, M]; None for "cells"."""
        if self.top is None:
            return None
        return self.top.at_locations(fcos_out["box_tower"], batch_index, loc_index)

    def mix(self, crops: torch.Tensor, attention: torch.Tensor | None) -> dict:
        """Eq. 2–4 (`blend`), or the assembler: pixel (y, x) of the R×R grid reads basis
        i·M + j of its cell (i, j) = (⌊y·M/R⌋, ⌊x·M/R⌋), FCIS-style → {"mask_logits" [N, R, R]}."""
        if attention is not None:
            return blend(crops, attention, self.cfg.interpolation)
        from .fusion.fcis import assemble  # the same gather as the FCIS-style branch

        return {"mask_logits": assemble(crops, self.cfg.M)}

    def forward_test(
        self, features, fcos_out, detections, intermediates: bool = True
    ) -> list[dict[str, torch.Tensor]]:
        """Per image: "masks" [N, R, R] probabilities and the intermediates of the blender
        (they cost nothing extra here, so `intermediates` changes nothing)."""
        bases = self.bottom(features)["bases"]  # [B, K, H/4, W/4]
        dets = gather_detections(detections)  # boxes [ΣN, 4], batch_index, loc_index [ΣN]
        attention = self.attention(fcos_out, dets["batch_index"], dets["loc_index"])
        crops = crop_bases(bases, dets["boxes"], dets["batch_index"], self.cfg.R, self.bases_stride)
        blended = self.mix(crops, attention)
        per_detection = {
            "masks": blended["mask_logits"].sigmoid(),  # [N, R, R]
            "mask_logits": blended["mask_logits"],  # [N, R, R]
            "basis_crops": crops,  # [N, K, R, R]
        }
        if attention is not None:
            per_detection["attention"] = attention  # [N, K, M, M] (before softmax)
            per_detection["attention_weights"] = blended["attention_weights"]  # [N, K, R, R]
        return split_per_image(
            dets["batch_index"], len(detections), per_detection, {"bases": bases}
        )  # bases per image: [K, H/4, W/4]
