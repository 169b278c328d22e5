"""YOLACT-style fusion, the "weighted sum" (Bolya et al., YOLACT, ICCV 2019, §3, Eq. 1).

How it differs from the blender: an instance mixes the bases with *one scalar per basis*
(k coefficients) instead of an M×M attention map per basis, so the mixing weights are the same
at every pixel of its box. YOLACT also mixes the *whole* prototype map and crops the result
to the box, where the blender mixes RoI crops of the bases.

    bottom module (the blender's) ─► prototypes P [B, k, H/4, W/4]   (ReLU, as YOLACT's ProtoNet)
    box tower ─ conv3×3 (D → k), tanh ─► coefficients c_d [k] at the instance's location
    m_d = σ( Σ_k c_d,k · P_k )            (Eq. 1: M = σ(P Cᵀ))          [H/4, W/4]
    crop m_d to the box: 0 outside it                                       [H/4, W/4]

Training uses the proposals of every branch of the zoo: the GT box of each positive location
of FCOS (BlendMask §3.5), with the same cap. Loss (YOLACT §3.3 and its code): per-pixel BCE of
the assembled map against the GT mask at the prototype resolution, summed inside the GT box and
divided by the box's area; averaged over instances.
Inference: the same map cropped by the detected box, read on an R×R grid over the box
(RoIAlign), so the segmenter pastes it like every other branch. RoIAlign is linear, so this
equals Σ_k c_k · RoIAlign(P_k, box) before the sigmoid (the tests check it).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ...config import BlenderConfig, FCOSConfig, YolactConfig
from ...distributed import reduce_mean
from ..attention import LocationConv
from ..bases import BottomModule, semantic_loss
from ..blender import crop_bases
from ..mask_branch import (
    MaskBranch,
    gather_detections,
    split_per_image,
    zero_touch,
)
from ..targets_batched import positive_instances_batched


def assemble(prototypes: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Eq. 1 before the sigmoid: Σ_k c_d,k · P_k.
    prototypes [k, h, w] (one image), coefficients [N, k] → mask logits [N, h, w]."""
    return torch.einsum("nk,khw->nhw", coefficients, prototypes)


def box_mask(boxes: torch.Tensor, size: tuple[int, int], stride: int) -> torch.Tensor:
    """1 inside each box, 0 outside, on a map at 1/stride of the image → [N, h, w].
    A map cell is inside when its centre ((j + 0.5)·stride, (i + 0.5)·stride) is."""
    h, w = size
    ys = (torch.arange(h, device=boxes.device) + 0.5) * stride  # [h] image-plane centres
    xs = (torch.arange(w, device=boxes.device) + 0.5) * stride  # [w]
    x0, y0, x1, y1 = (v[:, None, None] for v in boxes.unbind(1))  # [N, 1, 1] each
    inside_y = (ys[None, :, None] >= y0) & (ys[None, :, None] < y1)  # [N, h, 1]
    inside_x = (xs[None, None, :] >= x0) & (xs[None, None, :] < x1)  # [N, 1, w]
    return (inside_y & inside_x).float()  # [N, h, w]


def downsample_masks(masks: torch.Tensor, size: tuple[int, int], stride: int) -> torch.Tensor:
    """GT masks [G, H, W] → the prototype grid [G, h, w] in {0, 1}: zero-pad to h·stride ×
    w·stride (the padded batch), average each stride×stride cell, keep cells ≥ 0.5."""
    h, w = size
    H, W = masks.shape[-2:]
    padded = F.pad(masks.float(), (0, w * stride - W, 0, h * stride - H))  # [G, h·s, w·s]
    return (F.avg_pool2d(padded[:, None], stride)[:, 0] >= 0.5).float()  # [G, h, w]


def grid_masks(masks: torch.Tensor, stride: int = 4) -> torch.Tensor:
    """GT masks [G, H, W] → their YOLACT-style targets (`downsample_masks` on the 1/stride
    grid of the padded image), upsampled back (bilinear) to [G, H, W]: the best a mask
    assembled on that grid and trained on those targets can draw."""
    H, W = masks.shape[-2:]
    h, w = -(-H // stride), -(-W // stride)
    coarse = downsample_masks(masks, (h, w), stride)  # [G, h, w] in {0, 1}
    up = F.interpolate(
        coarse[:, None], (h * stride, w * stride), mode="bilinear", align_corners=False
    )
    return up[:, 0, :H, :W]


class YolactBranch(MaskBranch):
    def __init__(
        self,
        cfg: YolactConfig,
        bottom_cfg: BlenderConfig,
        in_channels: int,
        fcos_cfg: FCOSConfig,
        c2_channels: int = 0,  # the backbone's stride-4 map, read with `bottom_cfg.bottom_c2`
    ):
        super().__init__()
        self.cfg = cfg
        self.bottom_cfg = bottom_cfg  # the bottom module's settings and the proposal cap
        self.bottom = BottomModule(
            bottom_cfg,
            in_channels,
            fcos_cfg.num_classes,
            num_outputs=cfg.num_prototypes,
            c2_channels=c2_channels,
        )
        self.coefficients = LocationConv(in_channels, cfg.num_prototypes)
        level_strides = dict(zip(("p3", "p4", "p5", "p6", "p7"), fcos_cfg.strides))
        self.proto_stride = level_strides[bottom_cfg.bottom_in_levels[0]] // 2  # 4 with P3

    def prototypes_and_coefficients(
        self, features, box_tower, batch_index, loc_index, with_seg: bool = False
    ):
        """→ prototypes [B, k, H/4, W/4] (ReLU), coefficients [N, k] (tanh), bottom outputs
        (with the auxiliary semantic logits when `with_seg`)."""
        bottom = self.bottom(features, with_seg=with_seg)
        prototypes = F.relu(bottom["bases"])  # [B, k, H/4, W/4]
        coefficients = self.coefficients.at_locations(box_tower, batch_index, loc_index).tanh()
        return prototypes, coefficients, bottom

    def forward_train(self, features, fcos_out, targets) -> dict[str, torch.Tensor]:
        pos = positive_instances_batched(fcos_out, self.bottom_cfg.max_instances_for_loss)
        prototypes, coefficients, bottom = self.prototypes_and_coefficients(
            features, fcos_out["box_tower"], pos["batch_index"], pos["loc_index"], with_seg=True
        )  # [B, k, h, w], [P, k]
        size, s = tuple(prototypes.shape[-2:]), self.proto_stride
        gt_masks = torch.cat([downsample_masks(t["masks"], size, s) for t in targets])  # [ΣG, h, w]
        loss_sum = prototypes.new_zeros(())
        for b in range(len(targets)):
            sel = pos["batch_index"] == b
            if not sel.any():
                continue
            logits = assemble(prototypes[b], coefficients[sel])  # [p, h, w]
            crop = box_mask(pos["gt_boxes"][sel], size, s)  # [p, h, w]
            target = gt_masks[pos["gt_index"][sel]]  # [p, h, w]
            bce = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
            area = crop.sum(dim=(1, 2)).clamp(min=1)  # [p] box area in prototype cells
            loss_sum = loss_sum + ((bce * crop).sum(dim=(1, 2)) / area).sum()
        num_pos = reduce_mean(prototypes.new_tensor(float(len(pos["batch_index"]))))
        loss_mask = loss_sum / num_pos.clamp(min=1) + zero_touch(prototypes, self.coefficients)
        losses = {"loss_mask": self.cfg.mask_loss_weight * loss_mask}
        if "seg_logits" in bottom:
            losses["loss_sem"] = self.bottom_cfg.aux_seg_weight * semantic_loss(
                bottom["seg_logits"], targets, 2 * s
            )
        return losses

    def forward_test(
        self, features, fcos_out, detections, intermediates: bool = True
    ) -> list[dict[str, torch.Tensor]]:
        """Per image: "masks" [N, R, R] probabilities over each box, "coefficients" [N, k];
        with `intermediates` also "prototypes" [k, H/4, W/4] and "assembled" [N, H/4, W/4]
        (the cropped map σ(Σ_k c_k P_k), 0 outside the box: the whole-image assembly, which
        `predict` does not need)."""
        dets = gather_detections(detections)
        prototypes, coefficients, _ = self.prototypes_and_coefficients(
            features, fcos_out["box_tower"], dets["batch_index"], dets["loc_index"]
        )
        size, s = tuple(prototypes.shape[-2:]), self.proto_stride
        # The map over each box on an R×R grid, as every branch returns (RoIAlign is linear:
        # the same as combining RoIAligned prototypes with the coefficients).
        R = self.bottom_cfg.R
        logits_rr = torch.einsum(
            "nk,nkij->nij",
            coefficients,
            crop_bases(prototypes, dets["boxes"], dets["batch_index"], R, s),
        )  # [ΣN, R, R]
        per_detection = {
            "masks": logits_rr.sigmoid(),
            "mask_logits": logits_rr,
            "coefficients": coefficients,
        }
        if not intermediates:
            return split_per_image(dets["batch_index"], len(detections), per_detection)
        assembled = prototypes.new_zeros((len(dets["boxes"]), *size))  # [ΣN, h, w]
        for b in range(len(detections)):
            sel = dets["batch_index"] == b
            logits = assemble(prototypes[b], coefficients[sel])  # [n, h, w]
            assembled[sel] = logits.sigmoid() * box_mask(dets["boxes"][sel], size, s)
        per_detection["assembled"] = assembled
        return split_per_image(
            dets["batch_index"], len(detections), per_detection, {"prototypes": prototypes}
        )
