"""Mask R-CNN-style top-down mask head on FCOS' boxes (He et al., Mask R-CNN, ICCV 2017, §3–4).

How it differs from the blender: each box pools its own features from the FPN (RoIAlign at a
level chosen by the box's size) and a small fully-convolutional network predicts its mask from
them; nothing is shared between instances below the RoI, and the mask resolution is fixed by
the head (28×28). The blender crops image-wide bases and mixes them with a per-instance
attention.

    P3..P5 ─ MultiScaleRoIAlign(box) 14×14 ─► [N, D, 14, 14]    level k = ⌊k0 + log2(√(wh)/224)⌋
      ─ 4 × (conv3×3 + ReLU) ─ deconv 2×2 stride 2 + ReLU ─► [N, D, 28, 28]
      ─ conv1×1 ─► [N, C, 28, 28] (one mask per class; 1 when class-agnostic)
      ─ the channel of the box's class ─► mask logits [N, 28, 28]

Training uses the proposals of every branch of the zoo: the GT box of each positive location of
FCOS (BlendMask §3.5) with the same cap, instead of RPN proposals. Loss (Mask R-CNN §3): the
mean per-pixel BCE of the GT class's mask against the GT mask cropped to the box at 28×28.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import MultiScaleRoIAlign

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

LEVEL_OF = {"p3": 3, "p4": 4, "p5": 5, "p6": 6, "p7": 7}


def roi_levels(boxes: torch.Tensor, cfg: RoIHeadConfig) -> torch.Tensor:
    """FPN Eq. 1: the pyramid level a box is pooled from, ⌊k0 + log2(√(wh) / s0)⌋, clamped to
    the head's levels → [N] (3 = P3). What MultiScaleRoIAlign computes inside."""
    size = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0).sqrt()
    level = torch.floor(cfg.canonical_level + torch.log2(size / cfg.canonical_scale + 1e-8) + 1e-6)
    levels = [LEVEL_OF[name] for name in cfg.in_levels]
    return level.clamp(min(levels), max(levels)).long()


class RoIMaskHead(MaskBranch):
    def __init__(
        self,
        cfg: RoIHeadConfig,
        bottom_cfg: BlenderConfig,
        in_channels: int,
        fcos_cfg: FCOSConfig,
    ):
        super().__init__()
        self.cfg = cfg
        self.max_instances = bottom_cfg.max_instances_for_loss  # the proposal cap of the zoo
        self.strides = dict(zip(("p3", "p4", "p5", "p6", "p7"), fcos_cfg.strides))
        self.pooler = MultiScaleRoIAlign(
            list(cfg.in_levels),
            cfg.pooler_size,
            sampling_ratio=2,
            canonical_scale=cfg.canonical_scale,
            canonical_level=cfg.canonical_level,
        )
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
        self.R = 2 * cfg.pooler_size  # 28

    def pool(self, features, boxes: torch.Tensor, batch_index: torch.Tensor, num_images: int):
        """RoI features of N boxes → [N, D, 14, 14]."""
        first = features[self.cfg.in_levels[0]]
        stride = self.strides[self.cfg.in_levels[0]]
        image_size = (first.shape[-2] * stride, first.shape[-1] * stride)  # the padded batch
        per_image = [boxes[batch_index == b] for b in range(num_images)]
        pooled = self.pooler(features, per_image, [image_size] * num_images)
        # MultiScaleRoIAlign returns the boxes image by image; put them back in input order.
        order = torch.cat([(batch_index == b).nonzero()[:, 0] for b in range(num_images)])
        out = torch.empty_like(pooled)
        out[order] = pooled
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
        roi_features = self.pool(features, inst["gt_boxes"], inst["batch_index"], len(targets))
        logits = self.mask_logits(roi_features, inst["labels"])  # [U, 28, 28]
        target = mask_targets_batched(targets, self.R).to(logits.device)  # [ΣG, 28, 28]
        target = target[inst["gt_index"]]  # [U, 28, 28]
        loss_mask = weighted_mask_bce(logits, target, inst["weight"])
        loss_mask = loss_mask + zero_touch(self)  # every parameter in the graph (DDP)
        return {"loss_mask": self.cfg.mask_loss_weight * loss_mask}

    def forward_test(self, features, fcos_out, detections) -> list[dict[str, torch.Tensor]]:
        """Per image: "masks" [N, 28, 28] probabilities and the intermediates "roi_features"
        [N, D, 14, 14] and "levels" [N] (the FPN level each box was pooled from)."""
        dets = gather_detections(detections)
        roi_features = self.pool(features, dets["boxes"], dets["batch_index"], len(detections))
        logits = self.mask_logits(roi_features, dets["labels"])  # [ΣN, 28, 28]
        per_detection = {
            "masks": logits.sigmoid(),
            "mask_logits": logits,
            "roi_features": roi_features,
            "levels": roi_levels(dets["boxes"], self.cfg),
        }
        return split_per_image(dets["batch_index"], len(detections), per_detection)
