"""Multi-GPU BatchNorm conversion and frozen stages with timm backbones.

* `convert_sync_batchnorm` (what the trainer applies under torchrun on CUDA) must not change
  the network: in eval mode, SyncBatchNorm is BatchNorm with the running statistics (it runs
  on the CPU), so the converted model gives the same output as before. timm's BatchNorm +
  activation layers must keep their activation (torch's converter drops it).
* `freeze_at` / `freeze_bn`: the frozen layers have no trainable parameter and no statistic
  that a training step updates, also after a SyncBatchNorm conversion.
"""

from __future__ import annotations

import copy

import pytest
import torch
from timm.layers import BatchNormAct2d, FrozenBatchNormAct2d, SyncBatchNormAct
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from blendmask_edu.config import BackboneConfig, FPNConfig, get_preset
from blendmask_edu.distributed import convert_sync_batchnorm
from blendmask_edu.modeling.backbone import BackboneFPN
from blendmask_edu.modeling.segmenter import InstanceSegmenter


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Running statistics and affine parameters away from (0, 1), so that BatchNorm matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


def _features(model: InstanceSegmenter, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(model.eval().backbone(x).values())  # p3..p7 (+ c2)


def _preset_model(preset: str, **backbone) -> InstanceSegmenter:
    cfg = get_preset(preset).model
    cfg.backbone.weights_path = None  # random weights: no download, no PyPI package
    for name, value in backbone.items():
        setattr(cfg.backbone, name, value)
    torch.manual_seed(0)
    model = InstanceSegmenter(cfg)
    _randomise_batchnorm(model)
    return model.eval()


@pytest.mark.parametrize(
    "preset, backbone",
    [("shapes", {}), ("coco_r50_1x", {}), ("coco_r50_1x", {"freeze_bn": False})],
    ids=["shapes", "coco_r50_1x", "coco_r50_1x-live-bn"],
)
def test_sync_batchnorm_conversion_keeps_the_eval_output(preset, backbone):
    model = _preset_model(preset, **backbone)
    x = torch.rand(1, 3, 96, 128)
    before = _features(model, x)
    live_bn = sum(isinstance(m, _BatchNorm) for m in model.modules())
    norm_act = sum(isinstance(m, BatchNormAct2d) for m in model.modules())

    converted = convert_sync_batchnorm(copy.deepcopy(model))
    after = _features(converted, x)
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b)
    # Every live BatchNorm is synchronised; timm's norm+act layers stay norm+act.
    synced = [m for m in converted.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert len(synced) == live_bn
    assert sum(isinstance(m, SyncBatchNormAct) for m in converted.modules()) == norm_act
    if preset == "shapes":
        assert norm_act == 48  # every norm of EfficientNet-Lite0 is a BatchNormAct2d
        # The conversion the trainer used to apply drops their activation: a different net.
        plain = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
        assert not torch.allclose(_features(plain, x)[0], before[0])
    if preset == "coco_r50_1x" and not backbone:  # FrozenBN backbone; BN in the bottom module
        assert not any(isinstance(m, _BatchNorm) for m in converted.backbone.modules())


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize(
    "name, frozen_names, trained_stage",
    [
        ("efficientnet_lite0", ["conv_stem", "bn1", "blocks.0", "blocks.1"], "blocks.2"),
        ("resnet18", ["conv1", "bn1", "act1", "maxpool", "layer1"], "layer2"),
    ],
)
def test_freeze_at_leaves_nothing_trainable_or_updating(name, frozen_names, trained_stage):
    cfg = BackboneConfig(name=name, weights_path=None, freeze_at=2)
    torch.manual_seed(0)
    model = BackboneFPN(cfg, FPNConfig(channels=16))
    assert model.frozen == frozen_names
    frozen = [model.body.get_submodule(n) for n in frozen_names]
    assert not any(p.requires_grad for m in frozen for p in m.parameters())
    assert not any(isinstance(x, _BatchNorm) for m in frozen for x in m.modules())
    if name == "efficientnet_lite0":  # the stem's norm+act is frozen with its activation
        assert isinstance(model.body.bn1, FrozenBatchNormAct2d)
        assert isinstance(model.body.bn1.act, nn.ReLU6)

    # A training step (train mode, backward, optimiser step) changes nothing frozen.
    before = _snapshot(model.body)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.1, momentum=0.9, weight_decay=1e-4)
    out = model(torch.rand(2, 3, 64, 64))
    sum(v.square().mean() for v in out.values()).backward()
    optimizer.step()
    after = _snapshot(model.body)
    prefixes = tuple(n + "." for n in frozen_names)
    frozen_keys = [k for k in before if k.startswith(prefixes)]
    assert any(k.endswith("running_mean") for k in frozen_keys)
    for k in frozen_keys:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, msg=k)
    changed = [k for k in before if k.startswith(trained_stage + ".")]
    assert any(not torch.equal(after[k], before[k]) for k in changed if "running_mean" in k)
    assert any(not torch.equal(after[k], before[k]) for k in changed if k.endswith("weight"))

    # After the multi-GPU conversion the frozen layers are still the frozen ones, and
    # train() finds the live modules by name.
    converted = convert_sync_batchnorm(model).train()
    frozen = [converted.body.get_submodule(n) for n in frozen_names]
    assert not any(isinstance(x, _BatchNorm) for m in frozen for x in m.modules())
    assert all(not x.training for m in frozen for x in m.modules())
    live = converted.body.get_submodule(trained_stage)
    assert any(isinstance(x, nn.SyncBatchNorm) and x.training for x in live.modules())


def test_freeze_bn_freezes_every_batchnorm_and_keeps_the_output():
    torch.manual_seed(0)
    live = BackboneFPN(BackboneConfig(name="efficientnet_lite0"), FPNConfig(16))
    _randomise_batchnorm(live)
    frozen = BackboneFPN(BackboneConfig(name="efficientnet_lite0", freeze_bn=True), FPNConfig(16))
    frozen.load_state_dict(live.state_dict())  # FrozenBatchNorm drops num_batches_tracked
    assert not any(isinstance(m, _BatchNorm) for m in frozen.body.modules())
    assert sum(isinstance(m, FrozenBatchNormAct2d) for m in frozen.body.modules()) == 48
    assert not any(p.requires_grad for p in frozen.body.parameters() if p.ndim == 1)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(live.eval()(x).values(), frozen.train()(x).values(), strict=True):
            # frozen = eval-mode BatchNorm (its own arithmetic: x·scale + shift), even in train()
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
