"""The FCOS head (Tian et al., ICCV 2019, §3.1 and Fig. 2), shared across P3..P7.

    P_i [B, D, H_i, W_i] ─┬─ cls tower (n × conv3×3-GN-ReLU) ─► cls_logits  [B, C, H_i, W_i]
                          └─ box tower (n × conv3×3-GN-ReLU) ─┬► box_reg  [B, 4, H_i, W_i]
                                                              └► centerness [B, 1, H_i, W_i]

The box tower's output is returned too: BlendMask's top layer (attention) sits on it.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ...config import FCOSConfig


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (Wu & He 2018), fewer for narrow layers: ≥ 2 channels a group,
    so a group never normalises a single value on a 1×1 map (P7 of a small image)."""
    return nn.GroupNorm(max(1, min(32, channels // 2)), channels)


def conv_gn_relu_tower(channels: int, num_convs: int) -> nn.Sequential:
    """`num_convs` × (3×3 conv → GroupNorm(32) → ReLU), channels kept."""
    layers = []
    for _ in range(num_convs):
        layers += [
            nn.Conv2d(channels, channels, 3, padding=1),
            group_norm(channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class Scale(nn.Module):
    """A learnable scalar per FPN level: the levels share the head but not their box scale."""

    def __init__(self, init: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class FCOSHead(nn.Module):
    def __init__(self, cfg: FCOSConfig, in_channels: int):
        super().__init__()
        self.cfg = cfg
        D = in_channels
        self.cls_tower = conv_gn_relu_tower(D, cfg.num_convs)
        self.box_tower = conv_gn_relu_tower(D, cfg.num_convs)
        self.cls_logits = nn.Conv2d(D, cfg.num_classes, 3, padding=1)
        self.box_reg = nn.Conv2d(D, 4, 3, padding=1)
        self.centerness = nn.Conv2d(D, 1, 3, padding=1)
        # AdelaiDet's BlendMask configs have no per-level scale (FCOS.USE_SCALE False).
        self.scales = nn.ModuleList(Scale() for _ in cfg.strides) if cfg.use_scale else None
        # AdelaiDet's real-time models: a tower shared by cls and box, before them
        self.share_tower = None
        if cfg.num_share_convs:
            self.share_tower = conv_gn_relu_tower(D, cfg.num_share_convs)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        # Focal-loss prior (Lin et al. 2017, §4.1): start with P(object) = π everywhere.
        pi = self.cfg.prior_prob
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - pi) / pi))

    def forward(self, features: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        """features: P3..P7, each [B, D, H_i, W_i]. Returns per-level lists."""
        out = {"cls_logits": [], "box_reg": [], "centerness": [], "box_tower": []}
        for level, p in enumerate(features):
            if self.share_tower is not None:
                p = self.share_tower(p)  # [B, D, H_i, W_i]
            cls_feat = self.cls_tower(p)  # [B, D, H_i, W_i]
            box_feat = self.box_tower(p)  # [B, D, H_i, W_i]
            reg = self.box_reg(box_feat)  # [B, 4, H_i, W_i]
            if self.scales is not None:
                reg = self.scales[level](reg)
            # Distances l,t,r,b are positive: ReLU on stride-normalised targets, else exp (§3.1).
            reg = F.relu(reg) if self.cfg.norm_reg_targets else torch.exp(reg)
            ctr_in = box_feat if self.cfg.centerness_on_reg else cls_feat
            out["cls_logits"].append(self.cls_logits(cls_feat))  # [B, C, H_i, W_i]
            out["box_reg"].append(reg)
            out["centerness"].append(self.centerness(ctr_in))  # [B, 1, H_i, W_i]
            out["box_tower"].append(box_feat)
        return out


def flatten_levels(per_level: list[torch.Tensor]) -> torch.Tensor:
    """[B, X, H_i, W_i] per level → [B, L, X] with L = Σ_i H_i·W_i (level-major, row-major)."""
    return torch.cat([t.permute(0, 2, 3, 1).flatten(1, 2) for t in per_level], dim=1)


def compute_locations(sizes: list[tuple[int, int]], strides, device=None) -> torch.Tensor:
    """Image-plane (x, y) of every feature-map cell, [L, 2] (FCOS §3.1: ⌊s/2⌋ + x·s)."""
    points = []
    for (h, w), s in zip(sizes, strides):
        ys = torch.arange(h, device=device, dtype=torch.float32) * s + s // 2
        xs = torch.arange(w, device=device, dtype=torch.float32) * s + s // 2
        y, x = torch.meshgrid(ys, xs, indexing="ij")  # [h, w] each
        points.append(torch.stack([x.flatten(), y.flatten()], dim=1))  # [h·w, 2]
    return torch.cat(points)


def level_of_locations(sizes: list[tuple[int, int]], device=None) -> torch.Tensor:
    """Level index (0 for P3, ...) of every location, [L]."""
    return torch.cat(
        [torch.full((h * w,), i, dtype=torch.long, device=device) for i, (h, w) in enumerate(sizes)]
    )
