"""The ResNet of detectron2 (and so of AdelaiDet's published BlendMask models), written out.

timm's and torchvision's ResNets cannot load AdelaiDet's weights as they are: detectron2's
`MODEL.RESNETS` defaults describe the original MSRA ResNet, which differs in two places:

* `STRIDE_IN_1X1 = True`: a bottleneck that halves the resolution does it in its first 1×1
  conv (MSRA); timm/torchvision do it in the 3×3 conv. Same weights, other numbers.
* `NORM = "FrozenBN"`: every BatchNorm is a fixed affine map y = (x − μ)/√(σ² + ε)·γ + β,
  with μ, σ², γ, β stored as buffers, never trained and never updated.

The rest is the usual ResNet-50/101 (He et al. 2016): a 7×7/2 stem conv, 3×3/2 max-pool,
then stages res2..res5 of [3, 4, 6, 3] (R-50) or [3, 4, 23, 3] (R-101) bottlenecks, widths
256/512/1024/2048, strides 4/8/16/32. `RES5_DILATION = 1` (no dilation).

The module and parameter names are detectron2's (`stem.conv1.norm.weight`,
`res3.0.shortcut.weight`...), so AdelaiDet's `backbone.bottom_up.*` keys map one-to-one
(adelaidet_keys.py). `freeze_at` (detectron2's `FREEZE_AT = 2`: the stem and res2) is applied
by `backbone.freeze_stages` on `STAGES`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

STAGES = ("stem", "res2", "res3", "res4", "res5")  # strides 4, 4, 8, 16, 32
STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters (buffers, not parameters).

    y = (x − running_mean) / √(running_var + eps) · weight + bias, as BatchNorm in eval mode.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )


def make_norm(channels: int, frozen: bool) -> nn.Module:
    """FrozenBN (detectron2's default) or a trainable BatchNorm (the RT models' SyncBN)."""
    return FrozenBatchNorm2d(channels) if frozen else nn.BatchNorm2d(channels)


class ConvNorm(nn.Conv2d):
    """A bias-free conv followed by its norm, stored as `.norm` (detectron2's `Conv2d(norm=)`),
    so that the keys read `conv1.weight`, `conv1.norm.weight`."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, frozen: bool):
        super().__init__(c_in, c_out, kernel, stride, padding=(kernel - 1) // 2, bias=False)
        self.norm = make_norm(c_out, frozen)
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class Bottleneck(nn.Module):
    """1×1 (stride here, MSRA) → 3×3 → 1×1, each conv + norm, ReLU between, plus shortcut."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, stride: int, frozen: bool):
        super().__init__()
        self.shortcut = ConvNorm(c_in, c_out, 1, stride, frozen) if c_in != c_out else None
        self.conv1 = ConvNorm(c_in, c_mid, 1, stride, frozen)  # STRIDE_IN_1X1
        self.conv2 = ConvNorm(c_mid, c_mid, 3, 1, frozen)
        self.conv3 = ConvNorm(c_mid, c_out, 1, 1, frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))  # [B, c_mid, H/s, W/s]
        out = F.relu(self.conv2(out))
        out = self.conv3(out)  # [B, c_out, H/s, W/s]
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + shortcut)


class Stem(nn.Module):
    """7×7/2 conv + norm + ReLU, then 3×3/2 max-pool: [B, 3, H, W] → [B, 64, H/4, W/4]."""

    def __init__(self, frozen: bool):
        super().__init__()
        self.conv1 = ConvNorm(3, 64, 7, 2, frozen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class ResNetD2(nn.Module):
    """detectron2's ResNet-50/101 body → the feature maps at `out_strides` (e.g. 8, 16, 32:
    res3, res4, res5), in that order. `channels` gives their widths (512, 1024, 2048)."""

    def __init__(self, depth: int = 50, out_strides=(8, 16, 32), frozen_bn: bool = True):
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"detectron2 ResNet depth {depth}: choose one of 50, 101")
        self.stem = Stem(frozen_bn)
        c_in, c_mid, c_out = 64, 64, 256
        for i, (name, n) in enumerate(zip(STAGES[1:], BLOCKS_PER_STAGE[depth])):
            first_stride = 1 if i == 0 else 2  # res2 keeps the stem's stride 4
            blocks = [
                Bottleneck(
                    c_in if b == 0 else c_out,
                    c_mid,
                    c_out,
                    first_stride if b == 0 else 1,
                    frozen_bn,
                )
                for b in range(n)
            ]
            self.add_module(name, nn.Sequential(*blocks))
            c_in, c_mid, c_out = c_out, c_mid * 2, c_out * 2
        by_stride = {s: name for name, s in STRIDES.items()}
        missing = [s for s in out_strides if s not in by_stride]
        if missing:
            raise ValueError(f"detectron2 ResNet has no feature maps at strides {missing}")
        self.out_stages = [by_stride[s] for s in out_strides]
        widths = {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}
        self.channels = [widths[name] for name in self.out_stages]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)  # [B, 64, H/4, W/4]
        outs = []
        for name in STAGES[1:]:
            x = getattr(self, name)(x)  # res2 [B, 256, H/4, W/4] ... res5 [B, 2048, H/32, W/32]
            if name in self.out_stages:
                outs.append(x)
            if name == self.out_stages[-1]:
                break
        return outs
