"""Mask R-CNN-style top-down mask head on FCOS' boxes (He et al., Mask R-CNN, ICCV 2017, §3–4).

How it differs from the blender: each box pools its own features from the FPN (RoIAlign at a
level chosen by the box's size) and a small fully-convolutional network predicts its mask from
them; nothing is shared between instances below the RoI, and the mask resolution is fixed by
the head (28×28). The blender crops image-wide bases and mixes them with a per-instance
attention.

    [P2,] P3..P5 ─ RoIAlign(box, aligned) 14×14 at level k ─► [N, D, 14, 14]
                   k = ⌊k0 + log2(√(wh)/s0)⌋ (FPN Eq. 1), clamped to the head's levels
      ─ 4 × (conv3×3 + ReLU) ─ deconv 2×2 stride 2 + ReLU ─► [N, D, 28, 28]
      ─ conv1×1 ─► [N, C, 28, 28] (one mask per class; 1 when class-agnostic)
      ─ the channel of the box's class ─► mask logits [N, 28, 28]

Same inputs as the other branches of the zoo: pooling uses `aligned=True` (the half-pixel
correction of Detectron2's ROIAlignV2), as the mask targets and the blender's crops do
(torchvision's `MultiScaleRoIAlign` uses `aligned=False`: half a feature cell off); and when the
bottom module reads the backbone's stride-4 map (`BlenderConfig.bottom_c2`), the head gets a
stride-4 level too, P2 = conv3×3(conv1×1(C2) + up×2(P3)) as in FPN's top-down path (Mask R-CNN
pools P2..P5).

Training uses the proposals of every branch of the zoo: the GT box of each positive location of
FCOS (BlendMask §3.4) with the same cap, instead of RPN proposals. Loss (Mask R-CNN §3): the
mean per-pixel BCE of the GT class's mask against the GT mask cropped to the box at 28×28.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import roi_align

from ...config import BlenderConfig, FCOSConfig, RoIHeadConfig
from ..mask_branch import (
    MaskBranch,
    gather_detections,
    split_per_image,
    unique_instances,
    weighted_mask_bce,
    zero_touch,
)
from ..targets_batched import mask_targets_batched, positive_instances_batched

LEVEL_OF = {"p2": 2, "p3": 3, "p4": 4, "p5": 5, "p6": 6, "p7": 7}


def roi_levels(
    boxes: torch.Tensor, cfg: RoIHeadConfig, levels: tuple[str, ...] | None = None
) -> torch.Tensor:
    """FPN Eq. 1: the pyramid level a box is pooled from, ⌊k0 + log2(√(wh) / s0)⌋, clamped to
    `levels` (default the head's `cfg.in_levels`) → [N] (3 = P3). torchvision's LevelMapper
    computes the same (the tests check it)."""
    size = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0).sqrt()
    level = torch.floor(cfg.canonical_level + torch.log2(size / cfg.canonical_scale + 1e-8) + 1e-6)
    numbers = [LEVEL_OF[name] for name in (levels or cfg.in_levels)]
    return level.clamp(min(numbers), max(numbers)).long()


class RoIMaskHead(MaskBranch):
    def __init__(
        self,
        cfg: RoIHeadConfig,
        bottom_cfg: BlenderConfig,
        in_channels: int,
        fcos_cfg: FCOSConfig,
        c2_channels: int = 0,  # the backbone's stride-4 map, read with `bottom_cfg.bottom_c2`
    ):
        super().__init__()
        self.cfg = cfg
        self.max_instances = bottom_cfg.max_instances_for_loss  # the proposal cap of the zoo
        self.strides = dict(zip(("p3", "p4", "p5", "p6", "p7"), fcos_cfg.strides))
        self.levels = tuple(cfg.in_levels)  # the pyramid levels boxes are pooled from
        layers, c_in = [], in_channels
        for _ in range(cfg.num_convs):
            layers += [nn.Conv2d(c_in, cfg.channels, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = cfg.channels
        self.convs = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(cfg.channels, cfg.channels, 2, stride=2)
        self.predictor = nn.Conv2d(
            cfg.channels, 1 if cfg.class_agnostic else fcos_cfg.num_classes, 1
        )
        for m in self.modules():  # Mask R-CNN: He (fan-out) init, zero biases
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)  # start near p = 0.5 (detectron2)
        self.p2_lateral = self.p2_output = None
        if bottom_cfg.bottom_c2:  # FPN's P2 from C2, as the other branches' bottom module reads C2
            if c2_channels <= 0:
                raise ValueError("BlenderConfig.bottom_c2 needs the backbone's C2 channels")
            self.p2_lateral = nn.Conv2d(c2_channels, in_channels, 1)
            self.p2_output = nn.Conv2d(in_channels, in_channels, 3, padding=1)
            self.levels = ("p2", *self.levels)
            self.strides["p2"] = self.strides["p3"] // 2  # 4
        self.R = 2 * cfg.pooler_size  # 28

    def pyramid(self, features) -> dict[str, torch.Tensor]:
        """The maps boxes are pooled from: the head's FPN levels, and P2 [B, D, H/4, W/4] =
        conv3×3(conv1×1(C2) + nearest ×2 (P3)) when the head has a stride-4 level."""
        maps = {name: features[name] for name in self.levels if name != "p2"}
        if self.p2_lateral is not None:
            lateral = self.p2_lateral(features["c2"])  # [B, D, H/4, W/4]
            top_down = F.interpolate(features["p3"], size=lateral.shape[-2:], mode="nearest")
            maps["p2"] = self.p2_output(lateral + top_down)
        return maps

    def pool(self, features, boxes: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        """RoI features of N boxes → [N, D, S, S] (S = pooler size), in input order: each box
        RoIAligned (aligned=True, 2×2 samples a bin) on its level `roi_levels`."""
        maps = self.pyramid(features)
        levels = roi_levels(boxes, self.cfg, self.levels)  # [N]
        rois = torch.cat([batch_index[:, None].to(boxes.dtype), boxes], dim=1)  # [N, 5]
        S, first = self.cfg.pooler_size, maps[self.levels[0]]
        out = first.new_zeros((len(boxes), first.shape[1], S, S))  # [N, D, S, S]
        for name in self.levels:
            sel = levels == LEVEL_OF[name]
            if sel.any():
                out[sel] = roi_align(
                    maps[name],
                    rois[sel].to(first.dtype),
                    (S, S),
                    spatial_scale=1.0 / self.strides[name],
                    sampling_ratio=2,
                    aligned=True,
                )
        return out

    def mask_logits(self, roi_features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """[N, D, 14, 14] → the mask logits of each box's class [N, 28, 28]."""
        x = F.relu(self.deconv(self.convs(roi_features)))  # [N, D, 28, 28]
        logits = self.predictor(x)  # [N, C or 1, 28, 28]
        if self.cfg.class_agnostic:
            return logits[:, 0]
        return logits[torch.arange(len(labels), device=labels.device), labels - 1]

    def forward_train(self, features, fcos_out, targets) -> dict[str, torch.Tensor]:
        pos = positive_instances_batched(fcos_out, self.max_instances)
        # The mask depends on the box alone: once per GT instance, weighted by its number of
        # positives (= the mean over all positives).
        inst = unique_instances(pos, torch.ones_like(pos["centerness"]))
        roi_features = self.pool(features, inst["gt_boxes"], inst["batch_index"])
        logits = self.mask_logits(roi_features, inst["labels"])  # [U, 28, 28]
        target = mask_targets_batched(targets, self.R).to(logits.device)  # [ΣG, 28, 28]
        target = target[inst["gt_index"]]  # [U, 28, 28]
        loss_mask = weighted_mask_bce(logits, target, inst["weight"])
        loss_mask = loss_mask + zero_touch(self)  # every parameter in the graph (DDP)
        return {"loss_mask": self.cfg.mask_loss_weight * loss_mask}

    def forward_test(
        self, features, fcos_out, detections, intermediates: bool = True
    ) -> list[dict[str, torch.Tensor]]:
        """Per image: "masks" [N, 28, 28] probabilities and the intermediates "roi_features"
        [N, D, 14, 14] and "levels" [N] (the FPN level each box was pooled from); they cost
        nothing extra, so `intermediates` changes nothing."""
        dets = gather_detections(detections)
        roi_features = self.pool(features, dets["boxes"], dets["batch_index"])
        logits = self.mask_logits(roi_features, dets["labels"])  # [ΣN, 28, 28]
        per_detection = {
            "masks": logits.sigmoid(),
            "mask_logits": logits,
            "roi_features": roi_features,
            "levels": roi_levels(dets["boxes"], self.cfg, self.levels),
        }
        return split_per_image(dets["batch_index"], len(detections), per_detection)
