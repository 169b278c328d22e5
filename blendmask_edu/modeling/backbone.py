"""Backbone (any timm model, `features_only`) + Feature Pyramid Network → P3..P7.

    image [B, 3, H, W]
      └─ timm backbone ─► C3 [B, c3, H/8, W/8], C4 [B, c4, H/16, W/16], C5 [B, c5, H/32, W/32]
           └─ FPN (Lin et al. 2017) ─► P3, P4, P5 [B, D, H/s, W/s]
                └─ FCOS' extra levels (Tian et al. 2019, §3.2): P6 = conv3×3/2(P5), P7 = conv3×3/2(relu(P6))

We teach the detector and the mask branch, not the backbone, so the backbone is timm's and
the FPN is `torchvision.ops.FeaturePyramidNetwork`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelP6P7

from ..config import BackboneConfig, FPNConfig
from .weights import load_backbone_weights

FEATURE_STRIDES = (8, 16, 32)  # C3, C4, C5


def create_timm_backbone(
    cfg: BackboneConfig, strides: tuple[int, ...] = FEATURE_STRIDES
) -> tuple[nn.Module, list[str]]:
    """A timm model returning its feature maps at `strides` (default 8/16/32: C3, C4, C5), and
    the names of the modules that end each of its stages (strides 2, 4, 8, ...)."""
    import timm

    kwargs = dict(features_only=True, pretrained=False, **cfg.timm_kwargs)
    probe = timm.create_model(cfg.name, **kwargs)
    reductions = probe.feature_info.reduction()
    missing = [s for s in strides if s not in reductions]
    if missing:
        raise ValueError(f"backbone {cfg.name!r} has no feature maps at strides {missing}")
    out_indices = tuple(reductions.index(s) for s in strides)
    if cfg.pretrained:
        body = _timm_pretrained(cfg.name, out_indices, cfg.timm_kwargs)
    else:
        body = timm.create_model(cfg.name, out_indices=out_indices, **kwargs)
        if cfg.weights_path:
            load_backbone_weights(body, cfg.name, cfg.weights_path)
    return body, [info["module"] for info in probe.feature_info.get_dicts()]


D2_RESNETS = {"d2_resnet50": 50, "d2_resnet101": 101}  # resnet_d2.py


def create_d2_resnet(
    cfg: BackboneConfig, strides: tuple[int, ...] = FEATURE_STRIDES
) -> tuple[nn.Module, list[str]]:
    """detectron2's ResNet (stride in the 1×1 conv, FrozenBN when `cfg.freeze_bn`), and its
    stage names (stem, res2..res5) for `freeze_stages`."""
    from .resnet_d2 import STAGES, ResNetD2

    if cfg.pretrained or cfg.weights_path:
        raise ValueError(
            f"backbone {cfg.name!r} takes no ImageNet weights here; its weights come with a "
            "converted AdelaiDet checkpoint (blendmask-edu convert-adelaidet)"
        )
    body = ResNetD2(D2_RESNETS[cfg.name], strides, frozen_bn=cfg.freeze_bn)
    return body, list(STAGES)


def frozen_stage_names(body: nn.Module, stage_modules: list[str], freeze_at: int) -> list[str]:
    """The outermost modules of `body` that come before stage `freeze_at` (0-based in
    `stage_modules`), e.g. Lite0, freeze_at=2 → ["conv_stem", "bn1", "blocks.0", "blocks.1"]
    (the stem and the first two stages); ResNet → ["conv1", "bn1", "act1", "maxpool", "layer1"]."""
    if freeze_at <= 0:
        return []
    if freeze_at >= len(stage_modules):
        raise ValueError(f"freeze_at={freeze_at}: the backbone has {len(stage_modules)} stages")
    first_trained = stage_modules[freeze_at]
    names: list[str] = []

    def walk(module: nn.Module, prefix: str) -> bool:  # True once `first_trained` is reached
        for name, child in module.named_children():
            full = prefix + name
            if full == first_trained:
                return True
            if first_trained.startswith(full + "."):  # the stage lies inside: descend
                return walk(child, full + ".")
            names.append(full)
        return False

    walk(body, "")
    return names


def freeze_stages(body: nn.Module, stage_modules: list[str], freeze_at: int) -> list[str]:
    """Freeze everything before stage `freeze_at`: no gradient for its parameters, and each of
    its BatchNorm layers (timm's BatchNorm+activation too) replaced in place by a frozen one
    (statistics and affine fixed, `timm.utils.model.freeze`); returns the frozen modules' names.

    Frozen layers are buffers, not parameters, so a later SyncBatchNorm conversion leaves them
    alone and nothing can update them."""
    from timm.utils.model import freeze

    names = frozen_stage_names(body, stage_modules, freeze_at)
    if names:
        freeze(body, names, include_bn_running_stats=True)
    return names


def freeze_batchnorm(body: nn.Module) -> nn.Module:
    """Every BatchNorm of `body` → a frozen one (timm's `freeze_batch_norm_2d`: BatchNorm2d →
    torchvision's FrozenBatchNorm2d, BatchNormAct2d → FrozenBatchNormAct2d, the activation
    kept): running statistics and affine parameters fixed, as detectron2's "FrozenBN"."""
    from timm.layers import freeze_batch_norm_2d

    return freeze_batch_norm_2d(body)


def _timm_pretrained(name: str, out_indices: tuple[int, ...], timm_kwargs: dict) -> nn.Module:
    import timm

    try:
        return timm.create_model(
            name, features_only=True, pretrained=True, out_indices=out_indices, **timm_kwargs
        )
    except Exception as err:  # no internet, no hub cache, hub offline mode...
        raise RuntimeError(
            f"could not get timm's pretrained weights for backbone {name!r} ({type(err).__name__}: "
            f"{err}). This machine may be offline. Download the weights elsewhere, e.g. "
            f"`torch.save(timm.create_model({name!r}, pretrained=True).state_dict(), 'w.pth')`, "
            "then pass the file with `--backbone-weights w.pth` (BackboneConfig.weights_path) "
            "and leave `pretrained` off."
        ) from err


class LastLevelP6(ExtraFPNBlock):
    """One extra level, P6 = conv3×3/2(P5) (AdelaiDet's FCOS.TOP_LEVELS 1, its 550 models)."""

    def __init__(self, channels: int):
        super().__init__()
        self.p6 = nn.Conv2d(channels, channels, 3, 2, 1)
        nn.init.kaiming_uniform_(self.p6.weight, a=1)
        nn.init.zeros_(self.p6.bias)

    def forward(self, results, x, names):
        return [*results, self.p6(results[-1])], [*names, "p6"]


def pyramid_levels(features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """P3..P7 from the backbone's output, in order (without the optional "c2")."""
    return [f for name, f in features.items() if name.startswith("p")]


class BackboneFPN(nn.Module):
    """timm backbone + FPN. `forward(x)` → OrderedDict p3..p7, each [B, D, H/s, W/s].

    `with_c2=True` adds "c2": the backbone's own stride-4 map [B, c2, H/4, W/4] (not through
    the FPN), for a bottom module that reads fine detail (`BlenderConfig.bottom_c2`).
    """

    def __init__(self, backbone_cfg: BackboneConfig, fpn_cfg: FPNConfig, with_c2: bool = False):
        super().__init__()
        self.with_c2 = with_c2
        strides = (4, *FEATURE_STRIDES) if with_c2 else FEATURE_STRIDES
        if backbone_cfg.name in D2_RESNETS:  # detectron2's MSRA ResNet (AdelaiDet's weights)
            self.body, stage_modules = create_d2_resnet(backbone_cfg, strides)
            in_channels = list(self.body.channels)  # [512, 1024, 2048] for R-50
        else:
            self.body, stage_modules = create_timm_backbone(backbone_cfg, strides)
            in_channels = self.body.feature_info.channels()  # e.g. [40, 112, 320] for lite0
        # The names (not the modules) of the frozen stages: a SyncBatchNorm conversion
        # replaces modules, and `train()` must find the live ones.
        self.frozen = freeze_stages(self.body, stage_modules, backbone_cfg.freeze_at)
        if backbone_cfg.freeze_bn:  # keep the pretrained statistics (small batches)
            self.body = freeze_batchnorm(self.body)
        self.channels_last = backbone_cfg.channels_last
        if self.channels_last:
            self.body.to(memory_format=torch.channels_last)
        self.c2_channels = 0  # channels of "c2" in the output; 0 = not returned
        if with_c2:
            self.c2_channels, *in_channels = in_channels  # e.g. 24 for lite0
        D = fpn_cfg.channels
        # P6 is made from P5 (in_channels == out_channels), as in FCOS.
        if fpn_cfg.top_levels not in (0, 1, 2):
            raise ValueError(f"FPNConfig.top_levels {fpn_cfg.top_levels}: use 0, 1 or 2")
        extra = None  # top_levels 0: P3..P5 only
        if fpn_cfg.top_levels == 2:
            extra = LastLevelP6P7(D, D)
        elif fpn_cfg.top_levels == 1:
            extra = LastLevelP6(D)
        self.fpn = FeaturePyramidNetwork(in_channels, D, extra_blocks=extra)
        self.out_channels = D
        self.strides = (8, 16, 32, 64, 128)[: 3 + fpn_cfg.top_levels]  # P3..P7

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        *c2, c3, c4, c5 = self.body(x)
        features = self.fpn(OrderedDict(p3=c3, p4=c4, p5=c5))  # p3..p7
        if self.with_c2:
            features["c2"] = c2[0]  # [B, c2, H/4, W/4]
        return features

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:  # frozen stages behave as at test time (no dropout / drop-path either)
            for name in self.frozen:
                self.body.get_submodule(name).eval()
        return self
