"""BlendMask's top layer: per-instance attention over the bases (paper §3.4).

One 3×3 conv on FCOS' box tower predicts, at every location, K·M·M numbers: for the instance
detected there, one coarse M×M attention map per basis.

    box tower, level i [B, D, H_i, W_i] ─ conv3×3 (D → K·M·M) ─► [B, K·M·M, H_i, W_i]

`TopLayer.forward` runs the conv everywhere (the reference, and what the figures show);
`TopLayer.at_locations` computes the same numbers only where instances are (the positives in
training, the detections at inference): it gathers the 3×3 neighbourhood of each such
location and applies the conv's weights to it. Tests check both give the same attention.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..config import BlenderConfig
from .fcos.head import flatten_levels


class LocationConv(nn.Module):
    """A 3×3 conv on the box tower whose output is only needed at a few locations.

    `forward` runs it everywhere → [B, L, C]; `at_locations` gives the same numbers for N
    chosen (image, location) pairs → [N, C]. Used by the top layer (C = K·M·M) and by the
    YOLACT-style coefficient head (C = k).
    """

    def __init__(self, in_channels: int, out_channels: int, init_std: float = 0.01):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        nn.init.normal_(self.conv.weight, std=init_std)  # as in the official code
        nn.init.zeros_(self.conv.bias)

    def forward(self, box_tower: list[torch.Tensor]) -> torch.Tensor:
        """Per-level box tower → the conv at every location, [B, L, C]."""
        return flatten_levels([self.conv(x) for x in box_tower])

    def at_locations(
        self,
        box_tower: list[torch.Tensor],  # per level [B, D, H_i, W_i]
        batch_index: torch.Tensor,  # [N]
        loc_index: torch.Tensor,  # [N] into the flattened locations (level-major, row-major)
    ) -> torch.Tensor:
        """The conv at N locations only, [N, C]; equals `forward(...)[b, l]`."""
        out = box_tower[0].new_zeros((loc_index.numel(), self.conv.out_channels))
        weight, bias = self.conv.weight, self.conv.bias  # [C, D, 3, 3], [C]
        start = 0
        offsets = torch.arange(3, device=loc_index.device)
        for x in box_tower:
            H, W = x.shape[-2:]
            sel = (loc_index >= start) & (loc_index < start + H * W)
            if sel.any():
                pos = loc_index[sel] - start
                ys, xs = pos // W, pos % W  # [n]
                padded = F.pad(x, (1, 1, 1, 1))  # [B, D, H+2, W+2], the conv's zero padding
                rows = (ys[:, None] + offsets)[:, :, None]  # [n, 3, 1]
                cols = (xs[:, None] + offsets)[:, None, :]  # [n, 1, 3]
                b = batch_index[sel][:, None, None]  # [n, 1, 1]
                patch = padded.permute(0, 2, 3, 1)[b, rows, cols]  # [n, 3, 3, D]
                out[sel] = torch.einsum("nijd,cdij->nc", patch, weight) + bias  # [n, C]
            start += H * W
        return out


class TopLayer(LocationConv):
    """The top layer: K·M·M attention numbers per location (paper §3.4)."""

    def __init__(self, cfg: BlenderConfig, in_channels: int):
        super().__init__(in_channels, cfg.K * cfg.M * cfg.M)
        self.K, self.M = cfg.K, cfg.M

    def at_locations(
        self,
        box_tower: list[torch.Tensor],  # per level [B, D, H_i, W_i]
        batch_index: torch.Tensor,  # [N]
        loc_index: torch.Tensor,  # [N]
    ) -> torch.Tensor:
        """Attention of N instances only, [N, K, M, M]; equals `forward(...)[b, l]` reshaped."""
        flat = super().at_locations(box_tower, batch_index, loc_index)  # [N, K·M·M]
        return flat.view(-1, self.K, self.M, self.M)
