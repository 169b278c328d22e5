"""The paper's Table 1 on one bottom module (`compare --table1`) and the fair zoo:
the assembler is the blender with a fixed one-hot attention per cell (nested models), the RoI
head pools `roi_align(..., aligned=True)` on its level (with a stride-4 P2 from C2), predict
builds no visualisation intermediates, and the CLI runs the set on a tiny budget."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import instance_target
from test_fusion import BLENDER, TWO_BOXES, D, features_and_fcos, model_cfg
from torchvision.ops import roi_align
from torchvision.ops.poolers import initLevelMapper

from blendmask_edu.cli import main
from blendmask_edu.config import BlenderConfig, RoIHeadConfig
from blendmask_edu.engine.compare import NAMED_SETS, run_config
from blendmask_edu.modeling.fusion import roi
from blendmask_edu.modeling.segmenter import build_mask_branch

TARGETS = [
    instance_target(TWO_BOXES, [1, 3]),
    instance_target([[8, 8, 40, 30], [10, 12, 50, 44]], [2, 1]),
]


def cells_and_blender(M: int = 2):
    """An assembler (K = M² bases, M×M cells, nearest) and a blender of the same sizes whose
    top layer outputs, at every location, attention 0 on basis i·M + j in cell (i, j) and
    −10⁴ on the others (softmax → exactly one-hot), with the assembler's other weights."""
    sizes = {"K": M * M, "M": M, "R": 8, "interpolation": "nearest"}
    cfg = model_cfg("blender")
    cfg.blender = BlenderConfig(**{**BLENDER.__dict__, **sizes, "attention": "cells"})
    torch.manual_seed(0)
    assembler = build_mask_branch(cfg, D)
    cfg.blender = BlenderConfig(**{**BLENDER.__dict__, **sizes})
    blender = build_mask_branch(cfg, D)
    missing = blender.load_state_dict(assembler.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["top.conv.bias", "top.conv.weight"]  # the only extra part
    one_hot = torch.eye(M * M).view(M * M, M, M)  # [K, M, M]: basis k lights cell k
    with torch.no_grad():
        blender.top.conv.weight.zero_()
        blender.top.conv.bias.copy_(((one_hot - 1) * 1e4).flatten())
    return assembler, blender


def test_assembler_at_iteration_0_is_the_blender_with_one_hot_cell_attention():
    assembler, blender = cells_and_blender()
    assert assembler.top is None
    features, fcos_out = features_and_fcos(TARGETS)
    losses = [m.forward_train(features, fcos_out, TARGETS) for m in (assembler, blender)]
    assert losses[0]["loss_mask"] > 0.1
    for key in ("loss_mask", "loss_sem"):
        torch.testing.assert_close(losses[0][key], losses[1][key])
    features, fcos_out = features_and_fcos(TARGETS, training=False)
    dets = fcos_out["detections"]
    assert sum(len(d["boxes"]) for d in dets) > 0
    out = [m.forward_test(features, fcos_out, dets) for m in (assembler, blender)]
    for a, b in zip(*out):
        torch.testing.assert_close(a["masks"], b["masks"])
    # Without the one-hot attention the blender differs: the identity is not vacuous.
    with torch.no_grad():
        blender.top.conv.bias.zero_()
    other = blender.forward_test(features, fcos_out, dets)
    assert not torch.allclose(other[0]["masks"], out[0][0]["masks"])


def test_cells_attention_needs_k_equal_m_squared():
    cfg = model_cfg("blender")
    cfg.blender = BlenderConfig(**{**BLENDER.__dict__, "K": 4, "M": 4, "attention": "cells"})
    with pytest.raises(ValueError, match="K = M²"):
        build_mask_branch(cfg, D)


def test_table1_rows_are_the_papers_three_merging_methods():
    rows = {r.label: run_config("shapes", r, 0, 5, None, "cpu") for r in NAMED_SETS["table1"]}
    (ws, asm, bl) = (c.model.blender for c in rows.values())
    for b in (ws, asm, bl):  # one bottom module, R = 28, nearest, the blender's loss
        assert (b.R, b.interpolation, b.bottom_c2) == (28, "nearest", True)
    assert (ws.K, ws.M, ws.attention) == (4, 1, "predicted")
    assert (asm.K, asm.M, asm.attention) == (16, 4, "cells")
    assert (bl.K, bl.M, bl.attention) == (4, 4, "predicted")
    assert all(c.model.mask_branch == "blender" for c in rows.values())
    capacity = [run_config("shapes", r, 0, 5, None, "cpu") for r in NAMED_SETS["capacity"]]
    assert [c.model.fcis.k for c in capacity[::2]] == [2, 4]
    assert [(c.model.blender.K, c.model.blender.M) for c in capacity[1::2]] == [(4, 14), (16, 4)]


# ---------------------------------------------------------------------------------------
# The RoI head: aligned pooling on its level, a stride-4 P2 from C2
# ---------------------------------------------------------------------------------------


def roi_head_with_p2():
    cfg = model_cfg("roi")
    cfg.blender = BlenderConfig(**{**BLENDER.__dict__, "bottom_c2": True})
    torch.manual_seed(0)
    return build_mask_branch(cfg, D, c2_channels=24)


def test_roi_head_pools_roi_align_aligned_on_each_boxs_level():
    head = roi_head_with_p2()
    assert head.levels == ("p2", "p3", "p4", "p5")
    features, _ = features_and_fcos([instance_target([], [])] * 2)
    features["c2"] = torch.randn(2, 24, 16, 16)  # stride 4 on 64×64 images
    boxes = torch.tensor([[1.5, 2, 12, 9], [3, 3, 30, 40], [5, 5, 64, 64], [0, 4, 60, 20]])
    index = torch.tensor([0, 1, 0, 1])
    pooled = head.pool(features, boxes, index)
    levels = roi.roi_levels(boxes, head.cfg, head.levels)
    assert levels.tolist() == [2, 3, 4, 3]  # ⌊4 + log2(√(wh)/56)⌋ clamped to 2..5
    maps = head.pyramid(features)
    assert maps["p2"].shape == (2, D, 16, 16)
    S = head.cfg.pooler_size
    for n, level in enumerate(levels.tolist()):
        roi_box = torch.cat([index[n : n + 1, None].float(), boxes[n : n + 1]], dim=1)
        expected = roi_align(
            maps[f"p{level}"], roi_box, (S, S), 1 / 2**level, sampling_ratio=2, aligned=True
        )
        torch.testing.assert_close(pooled[n], expected[0])
        misaligned = roi_align(maps[f"p{level}"], roi_box, (S, S), 1 / 2**level, 2, False)
        assert not torch.allclose(pooled[n], misaligned[0])  # the half-cell shift matters


def test_roi_head_without_c2_pools_p3_to_p5_only():
    head = build_mask_branch(model_cfg("roi"), D)
    assert head.levels == ("p3", "p4", "p5") and head.p2_lateral is None


def test_roi_levels_agree_with_torchvision_level_mapper():
    cfg = RoIHeadConfig(canonical_scale=56, canonical_level=4)
    boxes = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 30, 40], [5, 5, 64, 64], [0, 0, 60, 20], [0, 0, 300, 300]]
    ).float()
    for levels in (("p3", "p4", "p5"), ("p2", "p3", "p4", "p5")):
        k_min = roi.LEVEL_OF[levels[0]]
        mapper = initLevelMapper(k_min, roi.LEVEL_OF[levels[-1]], 56, 4)
        expected = mapper([boxes]) + k_min  # torchvision counts from the lowest level
        torch.testing.assert_close(roi.roi_levels(boxes, cfg, levels), expected.long())


# ---------------------------------------------------------------------------------------
# predict builds no visualisation intermediates
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("branch", "extra"), [("fcis", "cell_crops"), ("yolact", "assembled")])
def test_masks_only_inference_gives_the_same_masks_without_intermediates(branch, extra):
    module = build_mask_branch(model_cfg(branch), D).eval()
    features, fcos_out = features_and_fcos(TARGETS, training=False)
    dets = fcos_out["detections"]
    full = module.forward_test(features, fcos_out, dets)
    lean = module.forward_test(features, fcos_out, dets, intermediates=False)
    for f, lite in zip(full, lean):
        assert extra in f and extra not in lite
        torch.testing.assert_close(lite["masks"], f["masks"])


def test_compare_table1_cli_on_a_tiny_budget(shapes_small, tmp_path):
    code = main([
        "compare", "--table1", "--train", str(shapes_small), "--val", str(shapes_small),
        "--output-dir", str(tmp_path), "--max-iters", "1", "--device", "cpu", "--threads", "2",
    ])  # fmt: skip
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["rows_set"] == "table1"
    assert [r["row"] for r in results["rows"]] == [r.label for r in NAMED_SETS["table1"]]
    runs = [r["run"] for r in results["rows"]]
    assert runs[1] == "blender_K-16_M-4_R-28_interpolation-nearest_attention-cells"
    for row in results["rows"]:
        assert (tmp_path / "runs" / f"{row['run']}_s0" / "eval.json").is_file()
        assert row["mask_branch_gflops"]["mean"] > 0
    params = [r["mask_branch_params"]["mean"] for r in results["rows"]]
    assert params[1] < params[0] < params[2]  # no top layer; 4·1·1 < 4·4·4 attention maps
    table = (tmp_path / "results.md").read_text()
    assert "mask-branch GFLOPs" in table and "ImageNet-pretrained" in table
