"""BlendMask's bottom module: K *bases* shared by all instances of an image (paper §3.3).

    P3 [B, D, H/8,  W/8 ] ─ conv3×3 ─┐
    P4 [B, D, H/16, W/16] ─ conv3×3 ─┼─ upsample to H/8 and sum ─► n × conv3×3
    P5 [B, D, H/32, W/32] ─ conv3×3 ─┘     ─► ×2 upsample ─► conv3×3 ─► conv1×1 ─► bases [B, K, H/4, W/4]
                                                        (+ conv3×3(C2) with `bottom_c2`)

This is the ProtoNet/DeepLab-style decoder of the paper (§3.3; AdelaiDet's "basis module").
An auxiliary semantic-segmentation head on P3 (paper §4, "semantic segmentation loss") is
trained with per-pixel class targets built on the fly from the batch's instance masks; it
reads P3 directly, so its gradient trains the backbone and FPN that the bottom module reads,
not the bottom module's own layers. Normalisation is GroupNorm by default (the library's
choice: results do not depend on the batch split across GPUs); AdelaiDet uses (Sync)BatchNorm,
128 channels and 3 tower convs (`bottom_norm="BN"` gives its BatchNorm, for its published
weights). With `bottom_c2` the conv3×3 of C2 is *added* after the upsample (DeepLabv3+
instead concatenates its low-level map after a 1×1 conv).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..config import BlenderConfig
from .fcos.head import group_norm
from .targets_batched import semantic_targets_batched


def conv_gn_relu(c_in: int, c_out: int, norm: str = "GN") -> nn.Sequential:
    """3×3 conv (no bias) → norm → ReLU. `norm` "GN" (ours) or "BN" (AdelaiDet's SyncBN)."""
    if norm not in ("GN", "BN"):
        raise ValueError(f"BlenderConfig.bottom_norm {norm!r}: use 'GN' or 'BN'")
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        group_norm(c_out) if norm == "GN" else nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class BottomModule(nn.Module):
    def __init__(
        self,
        cfg: BlenderConfig,
        in_channels: int,
        num_classes: int,
        num_outputs: int | None = None,
        c2_channels: int = 0,
    ):
        """`num_outputs` maps (default `cfg.K` bases; YOLACT's prototypes and FCIS'
        position-sensitive maps come from this same module with another count).
        `c2_channels`: channels of the backbone's stride-4 map, read when `cfg.bottom_c2`."""
        super().__init__()
        self.in_levels = cfg.bottom_in_levels
        C, norm = cfg.bottom_channels, cfg.bottom_norm
        self.refine = nn.ModuleDict(
            {name: conv_gn_relu(in_channels, C, norm) for name in self.in_levels}
        )
        self.tower = nn.Sequential(*[conv_gn_relu(C, C, norm) for _ in range(cfg.bottom_num_convs)])
        self.c2 = None
        if cfg.bottom_c2:
            if c2_channels <= 0:
                raise ValueError("BlenderConfig.bottom_c2 needs the backbone's C2 channels")
            self.c2 = conv_gn_relu(c2_channels, C, norm)
        self.after_upsample = conv_gn_relu(C, C, norm)
        self.to_bases = nn.Conv2d(C, num_outputs or cfg.K, 1)
        self.seg_head = None
        if cfg.aux_seg_loss:  # classes 0..C, 0 = background
            self.seg_head = nn.Sequential(
                conv_gn_relu(in_channels, C, norm),
                conv_gn_relu(C, C, norm),
                nn.Conv2d(C, num_classes + 1, 1),
            )

    def forward(
        self, features: dict[str, torch.Tensor], with_seg: bool = False
    ) -> dict[str, torch.Tensor]:
        """→ {"bases": [B, K, 2·h, 2·w]} (+ "seg_logits" [B, C+1, h, w] with `with_seg`, for
        the auxiliary loss), where h × w is the size of the first input level (P3: H/8 × W/8).
        The loss path asks for it, in train or eval mode alike (validation loss)."""
        first = features[self.in_levels[0]]
        size = first.shape[-2:]  # h, w
        x = 0
        for name in self.in_levels:
            y = self.refine[name](features[name])  # [B, C, h_l, w_l]
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            x = x + y  # [B, C, h, w]
        x = self.tower(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        if self.c2 is not None:
            x = x + self.c2(features["c2"])  # [B, C, 2h, 2w]: the stride-4 detail
        bases = self.to_bases(self.after_upsample(x))  # [B, K, 2h, 2w]
        out = {"bases": bases}
        if self.seg_head is not None and with_seg:
            out["seg_logits"] = self.seg_head(first)  # [B, C+1, h, w]
        return out


def semantic_targets(targets: list[dict], size: tuple[int, int], stride: int) -> torch.Tensor:
    """Per-pixel class targets at 1/stride of the input from instance masks → [B, h, w] int64.

    A feature cell takes the label of the instance covering its center pixel (later instances
    on top), 0 where none does. Cells in the padding are background.
    """
    h, w = size
    out = []
    for t in targets:
        sem = torch.zeros((h, w), dtype=torch.long, device=t["labels"].device)
        masks = t["masks"][:, stride // 2 :: stride, stride // 2 :: stride]  # [G, ≤h, ≤w]
        mh, mw = masks.shape[-2:]
        for mask, label in zip(masks, t["labels"]):
            sem[:mh, :mw][mask.bool()] = label
        out.append(sem)
    return torch.stack(out)


def semantic_loss(seg_logits: torch.Tensor, targets: list[dict], stride: int) -> torch.Tensor:
    """Cross-entropy of the auxiliary semantic head (paper §4). The targets are
    `semantic_targets` above, computed for the whole batch at once (targets_batched.py)."""
    sem = semantic_targets_batched(targets, seg_logits.shape[-2:], stride)  # [B, h, w]
    return F.cross_entropy(seg_logits.float(), sem)
