"""convert-adelaidet: the key table, unmatched keys, safe loading, refused configs; the
detectron2 ResNet and the coco_r50_1x preset (values read from AdelaiDet/detectron2)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from blendmask_edu.config import get_preset
from blendmask_edu.engine.convert_adelaidet import (
    convert_state_dict,
    preset_for,
    read_adelaidet_weights,
)
from blendmask_edu.modeling.adelaidet_keys import key_table, rename, rename_back
from blendmask_edu.modeling.resnet_d2 import FrozenBatchNorm2d, ResNetD2
from blendmask_edu.modeling.segmenter import InstanceSegmenter

DATA = Path(__file__).parent / "data" / "adelaidet"


def adelaidet_shapes() -> dict[str, tuple]:
    """Every key and shape of AdelaiDet's BlendMask R_50_1x, as its own code built it."""
    keys = json.loads((DATA / "weights.json").read_text())["keys"]
    return {k: tuple(v["shape"]) for k, v in keys.items()}


@pytest.fixture(scope="module")
def ours_state():
    return InstanceSegmenter(get_preset("coco_r50_1x").model).state_dict()


def cheap(shapes: dict) -> dict:
    """Tensors of the right shapes without the memory (one zero broadcast)."""
    return {k: torch.zeros(()).expand(s) for k, s in shapes.items()}


def test_every_adelaidet_key_has_exactly_one_place(ours_state):
    shapes = adelaidet_shapes()
    assert len(shapes) == len(ours_state) == 379
    converted = convert_state_dict(cheap(shapes), ours_state)
    assert list(converted) == list(ours_state)
    renamed = [rename(k, key_table()) for k in shapes]
    assert len(set(renamed)) == len(renamed)  # one-to-one
    assert rename("top_layer.weight", key_table()) == "mask_branch.top.conv.weight"
    assert rename("basis_module.tower.4.1.running_var", key_table()) == (
        "mask_branch.bottom.after_upsample.1.running_var"
    )


def test_rename_back_gives_adelaidets_names(ours_state):
    """Read right to left, the table names our model's keys as AdelaiDet does: the fixture of
    notebook 11 (tutorial.adelaidet_fixture) draws its weights under these names."""
    table = key_table()
    theirs = {rename_back(k, table): tuple(v.shape) for k, v in ours_state.items()}
    assert theirs == adelaidet_shapes()
    assert all(rename(rename_back(k, table), table) == k for k in ours_state)


def test_unmatched_keys_on_both_sides_are_all_listed(ours_state):
    theirs = cheap(adelaidet_shapes())
    theirs["proposal_generator.fcos_head.mystery.weight"] = torch.zeros(1)
    theirs["backbone.bottom_up.res5.9.conv1.weight"] = torch.zeros(1)  # renamed, not ours
    del theirs["top_layer.bias"], theirs["backbone.fpn_output4.weight"]
    theirs["backbone.fpn_lateral3.bias"] = torch.zeros(7)
    with pytest.raises(ValueError) as err:
        convert_state_dict(theirs, ours_state)
    text = str(err.value)
    for name in (
        "proposal_generator.fcos_head.mystery.weight",
        "backbone.bottom_up.res5.9.conv1.weight",
        "mask_branch.top.conv.bias",
        "backbone.fpn.layer_blocks.1.0.weight",
        "backbone.fpn.inner_blocks.0.0.bias: (7,)",
    ):
        assert name in text


def test_pkl_of_numpy_arrays_loads_and_code_is_refused(tmp_path):
    good = tmp_path / "w.pkl"
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.int64)}
    good.write_bytes(pickle.dumps({"model": arrays, "__author__": "someone"}))
    state = read_adelaidet_weights(good)
    assert torch.equal(state["a"], torch.arange(6.0).view(2, 3)) and state["b"].dtype == torch.int64

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"model": {"a": Evil()}}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load posix.system|os.system"):
        read_adelaidet_weights(bad)
    bad_pth = tmp_path / "evil.pth"
    torch.save({"model": {"a": Evil()}}, bad_pth)
    with pytest.raises(ValueError, match="refused"):
        read_adelaidet_weights(bad_pth)


def test_dcn_configs_are_refused_by_name():
    with pytest.raises(ValueError, match="deformable"):
        preset_for("R_101_dcni3_5x")
    with pytest.raises(ValueError, match="supported are"):
        preset_for("MEInst_R_50_1x")
    assert preset_for("configs/BlendMask/R_101_3x.yaml").model.backbone.name == "d2_resnet101"


def test_d2_resnet_puts_the_stride_in_the_1x1_conv_and_freezes_bn():
    body = ResNetD2(50, out_strides=(4, 8, 16, 32))
    assert body.res3[0].conv1.stride == (2, 2) and body.res3[0].conv2.stride == (1, 1)
    assert body.res2[0].conv1.stride == (1, 1)  # res2 keeps the stem's stride 4
    assert body.channels == [256, 512, 1024, 2048]
    feats = body(torch.rand(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    # FrozenBN everywhere: no BatchNorm, and the only parameters are conv weights
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    assert all(p.dim() == 4 for p in body.parameters())
    # FrozenBN = BatchNorm in eval mode with the same statistics
    frozen, bn = FrozenBatchNorm2d(5), nn.BatchNorm2d(5).eval()
    for t in ("weight", "bias", "running_mean", "running_var"):
        value = torch.rand(5) + 0.5
        getattr(frozen, t).copy_(value)
        getattr(bn, t).data.copy_(value)
    x = torch.randn(2, 5, 3, 3)
    torch.testing.assert_close(frozen(x), bn(x))


def test_coco_r50_1x_preset_is_adelaidets_r_50_1x():
    m = get_preset("coco_r50_1x").model
    assert (m.backbone.name, m.backbone.freeze_bn, m.backbone.freeze_at) == ("d2_resnet50", True, 2)
    assert (m.fpn.channels, m.fcos.num_convs, m.fcos.strides) == (256, 4, (8, 16, 32, 64, 128))
    assert not m.fcos.use_scale and m.fcos.thresh_with_ctr and m.fcos.centerness_on_reg
    assert (m.fcos.score_thresh, m.fcos.nms_thresh, m.fcos.pre_nms_topk) == (0.05, 0.6, 1000)
    assert m.fcos.max_detections == 100 and m.fcos.sizes_of_interest == (64, 128, 256, 512)
    b = m.blender
    assert (b.K, b.M, b.R, b.bottom_channels, b.bottom_num_convs) == (4, 14, 56, 128, 3)
    assert (b.bottom_norm, b.bottom_in_levels, b.aux_seg_weight) == ("BN", ("p3", "p4", "p5"), 0.3)
    assert (m.input_format, m.pixel_scale) == ("BGR", 255.0)
    assert m.pixel_mean == (103.53, 116.28, 123.675) and m.pixel_std == (1.0, 1.0, 1.0)
    d = get_preset("coco_r50_1x").data
    assert (d.test_min_size, d.test_max_size, d.size_divisibility) == (800, 1333, 32)


@pytest.mark.parametrize("config", ["R_101_3x", "550_R_50_3x", "RT_R_50_4x_syncbn_shtw"])
def test_other_published_configs_convert_without_leftovers(config):
    """Keys and shapes of AdelaiDet's own models of these configs (record_adelaidet.py
    --keys-only) fill our preset of the same name exactly."""
    shapes = json.loads((DATA / f"keys_{config}.json").read_text())
    cfg = preset_for(config)
    ours = InstanceSegmenter(cfg.model).state_dict()
    converted = convert_state_dict(
        cheap({k: tuple(s) for k, s in shapes.items()}), ours, cfg.model.blender.bottom_num_convs
    )
    assert list(converted) == list(ours)


def test_real_time_presets_run_on_their_levels():
    for name, levels in (("coco_550_r50_3x", 4), ("coco_rt_r50_4x", 3)):
        cfg = get_preset(name)
        model = InstanceSegmenter(cfg.model).eval()
        with torch.no_grad():
            out = model.run([torch.rand(3, 64, 96)])
        assert len(out["fcos"]["box_tower"]) == levels
        assert out["masks"][0]["bases"].shape == (4, 16, 24)
