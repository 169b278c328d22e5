"""The fusion zoo (YOLACT-style, FCIS-style, Mask R-CNN-style) on tiny hand-checked cases,
and every branch's training/inference shapes, gradients and empty images."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from helpers import instance_target

from blendmask_edu.config import (
    MASK_BRANCHES,
    BlenderConfig,
    FCISConfig,
    FCOSConfig,
    ModelConfig,
    RoIHeadConfig,
    YolactConfig,
)
from blendmask_edu.modeling import bases
from blendmask_edu.modeling.bases import semantic_targets
from blendmask_edu.modeling.blender import blend, crop_bases
from blendmask_edu.modeling.fcos import FCOS, detector
from blendmask_edu.modeling.fcos.targets import fcos_targets
from blendmask_edu.modeling.fusion import fcis, roi, yolact
from blendmask_edu.modeling.mask_branch import (
    mask_targets,
    positive_instances,
    unique_instances,
    weighted_mask_bce,
)
from blendmask_edu.modeling.segmenter import build_mask_branch

BLENDER = BlenderConfig(K=2, M=4, R=8, bottom_channels=16, bottom_num_convs=1)
FCOS_CFG = FCOSConfig(num_classes=3, num_convs=1, sizes_of_interest=(16, 32, 64, 128))
ZOO = ("blender", "yolact", "fcis", "roi")
D = 64  # feature channels (GroupNorm keeps ≥ 2 values a group on 1×1 maps)


def model_cfg(branch: str) -> ModelConfig:
    return ModelConfig(
        fcos=FCOS_CFG,
        mask_branch=branch,
        blender=BLENDER,
        yolact=YolactConfig(num_prototypes=6),
        fcis=FCISConfig(k=2, R=8),
        roi=RoIHeadConfig(pooler_size=7, num_convs=2, channels=16, canonical_scale=56),
    )


def features_and_fcos(targets, training=True):
    """FCOS on random P3..P7 of 64×64 images (seeded) → (features, fcos_out)."""
    torch.manual_seed(0)
    fcos = FCOS(FCOS_CFG, D)
    names, sizes = ("p3", "p4", "p5", "p6", "p7"), (8, 4, 2, 1, 1)  # 64 / stride
    features = {n: torch.randn(len(targets), D, s, s) for n, s in zip(names, sizes)}
    if not training:
        fcos.cfg = FCOSConfig(**{**FCOS_CFG.__dict__, "score_thresh": 0.0, "max_detections": 5})
    fcos_out = fcos(
        list(features.values()), [(64, 64)] * len(targets), targets if training else None
    )
    return features, fcos_out


TWO_BOXES = [[4, 4, 28, 28], [30, 20, 60, 60]]  # positives on P3 and on P4


# ---------------------------------------------------------------------------------------
# Every branch: training shapes, gradients, empty images; inference shapes
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("branch", ZOO)
def test_branch_trains_every_parameter(branch):
    targets = [instance_target(TWO_BOXES, [1, 3]), instance_target([[8, 8, 40, 30]], [2])]
    features, fcos_out = features_and_fcos(targets)
    torch.manual_seed(1)
    module = build_mask_branch(model_cfg(branch), D)
    losses = module.forward_train(features, fcos_out, targets)
    assert "loss_mask" in losses and torch.isfinite(losses["loss_mask"])
    assert losses["loss_mask"] > 0.1  # BCE of untrained logits is about log 2
    sum(losses.values()).backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, name
    head = {"blender": "top.conv", "yolact": "coefficients.conv", "fcis": "bottom.to_bases"}
    head = head.get(branch, "predictor")
    assert module.get_parameter(head + ".weight").grad.abs().sum() > 0, head


@pytest.mark.parametrize("branch", ZOO)
def test_empty_image_gives_zero_finite_mask_loss(branch):
    targets = [instance_target([], [])]
    features, fcos_out = features_and_fcos(targets)
    module = build_mask_branch(model_cfg(branch), D)
    losses = module.forward_train(features, fcos_out, targets)
    assert losses["loss_mask"].item() == 0.0
    sum(losses.values()).backward()
    for name, p in module.named_parameters():  # in the graph (DDP) ...
        assert p.grad is not None, name
        if not name.startswith("bottom.seg_head"):  # ... with zero gradient from the mask loss
            assert torch.isfinite(p.grad).all(), name


INTERMEDIATES = {
    "blender": {"attention": (2, 4, 4), "attention_weights": (2, 8, 8), "basis_crops": (2, 8, 8)},
    "yolact": {"coefficients": (6,), "assembled": (16, 16)},
    "fcis": {"cell_crops": (4, 8, 8)},
    "roi": {"roi_features": (D, 7, 7), "levels": ()},
}


@pytest.mark.parametrize("branch", ZOO)
def test_training_losses_equal_those_from_the_per_image_targets(branch, monkeypatch):
    # The training step builds its targets with the batched functions; swapping in the
    # per-image references must give the same losses (FCOS' and the branch's).
    targets = [
        instance_target(TWO_BOXES, [1, 3]),
        instance_target([], []),
        instance_target([[8, 8, 40, 30], [10, 12, 50, 44], [0, 30, 20, 64]], [2, 1, 3]),
    ]
    module = build_mask_branch(model_cfg(branch), D)

    def losses():
        features, fcos_out = features_and_fcos(targets)
        torch.manual_seed(1)  # the same subset of positives when capped
        return {**fcos_out["losses"], **module.forward_train(features, fcos_out, targets)}

    batched = losses()
    branch_module = importlib.import_module(type(module).__module__)

    def fcos_reference(locations, level, gt, *args):  # takes the list, not the padded GT
        return fcos_targets(locations, level, targets, *args)

    def positives_reference(fcos_out, cap):
        return positive_instances(fcos_out, targets, cap)

    swaps = [  # the batched function → its per-image reference
        (detector, "fcos_targets_batched", fcos_reference),
        (bases, "semantic_targets_batched", semantic_targets),
        (branch_module, "positive_instances_batched", positives_reference),
        (branch_module, "mask_targets_batched", mask_targets),  # YOLACT has none
    ]
    swaps = [swap for swap in swaps if hasattr(swap[0], swap[1])]
    assert len(swaps) == (3 if branch == "yolact" else 4)
    for where, name, reference in swaps:
        monkeypatch.setattr(where, name, reference)
    per_image = losses()
    assert batched.keys() == per_image.keys() and batched["loss_mask"] > 0
    for key in batched:
        torch.testing.assert_close(batched[key], per_image[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("branch", ZOO)
def test_inference_masks_and_intermediates(branch):
    targets = [instance_target([], []), instance_target([], [])]
    features, fcos_out = features_and_fcos(targets, training=False)
    dets = fcos_out["detections"]
    assert [len(d["boxes"]) for d in dets] == [5, 5]
    dets[1] = {k: v[:3] for k, v in dets[1].items()}  # images with different counts
    module = build_mask_branch(model_cfg(branch), D).eval()
    with torch.no_grad():
        out = module.forward_test(features, fcos_out, dets)
    R = 14 if branch == "roi" else 8  # the RoI head's 2 × pooler size
    for b, n in enumerate((5, 3)):
        assert out[b]["masks"].shape == (n, R, R)
        assert ((out[b]["masks"] >= 0) & (out[b]["masks"] <= 1)).all()
        torch.testing.assert_close(out[b]["masks"], out[b]["mask_logits"].sigmoid())
        for key, shape in INTERMEDIATES[branch].items():
            assert out[b][key].shape == (n, *shape), key


def test_unknown_mask_branch_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="blender, yolact, fcis, roi, none"):
        build_mask_branch(model_cfg("solo"), D)
    assert MASK_BRANCHES == ("blender", "yolact", "fcis", "roi", "none")


# ---------------------------------------------------------------------------------------
# YOLACT: a linear combination of prototypes, then the crop
# ---------------------------------------------------------------------------------------


def test_yolact_assembles_then_crops_by_hand():
    P = torch.tensor(  # k = 2 prototypes on a 2×4 map
        [[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]], [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]]
    )
    c = torch.tensor([[0.5, -2.0]])  # one instance
    logits = yolact.assemble(P, c)  # 0.5·P0 − 2·P1
    expected = torch.tensor([[[-1.5, 1.0, -0.5, 2.0], [2.5, 1.0, 3.5, 2.0]]])
    torch.testing.assert_close(logits, expected)
    # Crop at stride 4: the box x ∈ [4, 12), y ∈ [0, 4) holds cell centres x = 6, 10 of row 0.
    crop = yolact.box_mask(torch.tensor([[4.0, 0.0, 12.0, 4.0]]), (2, 4), stride=4)
    torch.testing.assert_close(crop, torch.tensor([[[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]))
    cropped = logits.sigmoid() * crop
    assert cropped[0, 0, 1].item() == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert cropped[0, 0, 2].item() == pytest.approx(1 / (1 + math.exp(0.5)))
    assert cropped[0, 1].abs().sum() == 0 and cropped[0, 0, 0] == 0


def test_yolact_downsampled_masks_keep_cells_at_least_half_covered():
    m = torch.zeros(1, 6, 8, dtype=torch.uint8)
    m[0, 0:1, 0:4] = 1  # cell (0, 0): 4 of 16 pixels
    m[0, 0:4, 4:6] = 1  # cell (0, 1): 8 of 16 → kept
    out = yolact.downsample_masks(m, (2, 2), stride=4)  # pads 6×8 to 8×8
    torch.testing.assert_close(out, torch.tensor([[[0.0, 1.0], [0.0, 0.0]]]))


def test_yolact_r_by_r_masks_equal_the_assembled_map_read_over_the_box():
    # RoIAlign is linear: combining RoIAligned prototypes = RoIAligning the combined map.
    g = torch.Generator().manual_seed(0)
    P = torch.rand(1, 5, 16, 16, generator=g)
    c = torch.randn(3, 5, generator=g)
    boxes = torch.tensor([[4.0, 8.0, 40.0, 30.0], [0.0, 0.0, 64.0, 64.0], [10.0, 12.0, 22.0, 50.0]])
    index = torch.zeros(3, dtype=torch.long)
    via_crops = torch.einsum("nk,nkij->nij", c, crop_bases(P, boxes, index, 8, 4))
    maps = yolact.assemble(P[0], c)[:, None]  # [3, 1, 16, 16]
    via_map = torch.stack(
        [crop_bases(maps[n : n + 1], boxes[n : n + 1], index[:1], 8, 4)[0, 0] for n in range(3)]
    )
    torch.testing.assert_close(via_crops, via_map)


def test_yolact_loss_by_hand():
    # One image, one positive: the loss is the mean BCE over the prototype cells in its box.
    targets = [instance_target([[4, 4, 28, 28]], [1])]
    features, fcos_out = features_and_fcos(targets)
    module = build_mask_branch(model_cfg("yolact"), D)
    pos = positive_instances(fcos_out, targets)
    with torch.no_grad():
        P, c, _ = module.prototypes_and_coefficients(
            features, fcos_out["box_tower"], pos["batch_index"], pos["loc_index"]
        )
        loss = module.forward_train(features, fcos_out, targets)["loss_mask"]
    # box (4, 4, 28, 28) at stride 4 holds cell centres 6, 10, ..., 26: cells 1..6, a 6×6 crop,
    # all inside the GT mask (the box is filled).
    logits = yolact.assemble(P[0], c)[:, 1:7, 1:7]  # [P, 6, 6]
    per = torch.nn.functional.softplus(-logits).mean(dim=(1, 2))  # BCE with target 1
    torch.testing.assert_close(loss, per.mean())


# ---------------------------------------------------------------------------------------
# FCIS: cell (i, j) is read from map (i, j)
# ---------------------------------------------------------------------------------------


def test_fcis_cell_i_j_comes_from_map_i_j():
    k, R = 2, 4
    crops = torch.arange(k * k, dtype=torch.float32)[None, :, None, None].expand(1, k * k, R, R)
    out = fcis.assemble(crops, k)  # map m is the constant m: the output names the map read
    expected = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    torch.testing.assert_close(out[0], expected.float())
    # k = 3 over R = 7: cell rows ⌊y·3/7⌋ = 0,0,0,1,1,2,2
    assert fcis.cell_index(3, 7)[:, 0].tolist() == [0, 0, 0, 3, 3, 6, 6]


def test_fcis_equals_the_blender_with_a_fixed_one_hot_attention():
    g = torch.Generator().manual_seed(0)
    k, R = 2, 8
    crops = torch.randn(3, k * k, R, R, generator=g)
    one_hot = torch.nn.functional.one_hot(fcis.cell_index(k, R), k * k).permute(2, 0, 1).float()
    weights = (one_hot * 1e4)[None].expand(3, -1, -1, -1)  # softmax → one-hot, as logits
    blended = blend(crops, weights, "nearest")["mask_logits"]  # M = R: no interpolation
    torch.testing.assert_close(fcis.assemble(crops, k), blended)


@pytest.mark.parametrize("k,R,stride", [(2, 8, 4), (7, 28, 4), (3, 9, 8)])
def test_fcis_fast_assembly_equals_the_reference(k, R, stride):
    g = torch.Generator().manual_seed(k)
    maps = torch.randn(2, k * k, 16, 16, generator=g)
    boxes = torch.tensor([[3.0, 5.0, 41.0, 30.0], [0.0, 0.0, 64.0, 64.0], [20.5, 7.25, 33.0, 60.0]])
    index = torch.tensor([0, 1, 1])
    reference = fcis.assemble(crop_bases(maps, boxes, index, R, stride), k)
    fast = fcis.assemble_cells(maps, boxes, index, k, R, stride)
    torch.testing.assert_close(fast, reference)


def test_one_mask_per_instance_gives_the_loss_over_all_positives():
    # FCIS and the RoI head compute each GT instance once, weighted by its positives.
    g = torch.Generator().manual_seed(0)
    pos = {
        "gt_index": torch.tensor([2, 0, 2, 2, 0]),
        "gt_boxes": torch.tensor(
            [[2.0, 2, 9, 9], [0, 0, 5, 5], [2, 2, 9, 9], [2, 2, 9, 9], [0, 0, 5, 5]]
        ),
        "labels": torch.tensor([1, 3, 1, 1, 3]),
        "batch_index": torch.tensor([1, 0, 1, 1, 0]),
    }
    ctr = torch.rand(5, generator=g)
    per_gt_logits = torch.randn(3, 4, 4, generator=g)
    per_gt_target = (torch.rand(3, 4, 4, generator=g) > 0.5).float()
    full = weighted_mask_bce(per_gt_logits[pos["gt_index"]], per_gt_target[pos["gt_index"]], ctr)
    inst = unique_instances(pos, ctr)
    assert inst["gt_index"].tolist() == [0, 2]
    assert inst["labels"].tolist() == [3, 1] and inst["batch_index"].tolist() == [0, 1]
    assert inst["inverse"].tolist() == [1, 0, 1, 1, 0]  # each positive's instance
    torch.testing.assert_close(
        inst["weight"], torch.stack([ctr[[1, 4]].sum(), ctr[[0, 2, 3]].sum()])
    )
    deduped = weighted_mask_bce(
        per_gt_logits[inst["gt_index"]], per_gt_target[inst["gt_index"]], inst["weight"]
    )
    torch.testing.assert_close(deduped, full)


def test_blender_crops_each_instance_once_with_the_same_values_and_gradients():
    # BlendMaskBranch.forward_train crops the bases once per GT instance and gathers the crop
    # for each positive: the same numbers and the same gradients as one crop per positive.
    g = torch.Generator().manual_seed(1)
    bases = torch.randn(2, 4, 16, 16, generator=g, requires_grad=True)
    pos = {
        "gt_index": torch.tensor([2, 0, 2, 2, 0]),
        "gt_boxes": torch.tensor(
            [[8.0, 4, 40, 36], [0, 0, 20, 28], [8, 4, 40, 36], [8, 4, 40, 36], [0, 0, 20, 28]]
        ),
        "labels": torch.tensor([1, 3, 1, 1, 3]),
        "batch_index": torch.tensor([1, 0, 1, 1, 0]),
    }
    per_positive = crop_bases(bases, pos["gt_boxes"], pos["batch_index"], 8)  # [5, 4, 8, 8]
    inst = unique_instances(pos, torch.ones(5))
    shared = crop_bases(bases, inst["gt_boxes"], inst["batch_index"], 8)[inst["inverse"]]
    torch.testing.assert_close(shared, per_positive)
    w = torch.randn(per_positive.shape, generator=g)
    (grad_direct,) = torch.autograd.grad((per_positive * w).sum(), bases)
    (grad_shared,) = torch.autograd.grad((shared * w).sum(), bases)
    torch.testing.assert_close(grad_shared, grad_direct)


# ---------------------------------------------------------------------------------------
# RoI head: FPN level by box size; outputs in input order
# ---------------------------------------------------------------------------------------


def test_roi_levels_follow_fpn_equation_1():
    cfg = RoIHeadConfig(canonical_scale=224, canonical_level=4)
    boxes = torch.tensor(
        [[0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 111, 111], [0, 0, 448, 448], [0, 0, 20, 20]]
    ).float()
    # ⌊4 + log2(s/224)⌋: 224 → 4; 112 → 3; 111 → 2.99 → 2 → clamped to 3; 448 → 5; 20 → 3
    assert roi.roi_levels(boxes, cfg).tolist() == [4, 3, 3, 5, 3]


def test_roi_pool_returns_boxes_in_input_order():
    targets = [instance_target([], [])] * 2
    features, _ = features_and_fcos(targets)
    head = build_mask_branch(model_cfg("roi"), D)
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 30, 40], [5, 5, 64, 64]]).float()
    index = torch.tensor([1, 0, 1])
    together = head.pool(features, boxes, index)
    for n in range(3):
        alone = head.pool(features, boxes[n : n + 1], index[n : n + 1])
        torch.testing.assert_close(together[n], alone[0])


def test_roi_class_specific_masks_pick_the_class_channel():
    head = build_mask_branch(model_cfg("roi"), D)
    x = torch.randn(2, D, 7, 7)
    logits = head.mask_logits(x, torch.tensor([3, 1]))
    everything = head.predictor(torch.relu(head.deconv(head.convs(x))))  # [2, C, 14, 14]
    torch.testing.assert_close(logits, everything[[0, 1], [2, 0]])


def test_mask_targets_used_by_the_roi_head_are_28_by_28():
    targets = [instance_target([[4, 4, 28, 28]], [1])]
    assert mask_targets(targets, 28).shape == (1, 28, 28)
    assert mask_targets(targets, 28).sum() == 28 * 28  # a filled box


@pytest.mark.parametrize("branch", ["blender", "yolact", "fcis"])
def test_bottom_c2_trains_end_to_end(branch):
    """`bottom_c2`: the segmenter asks its backbone for C2, the mask loss reaches it through
    the bottom module, and inference gives one mask per detection."""
    from blendmask_edu.config import BackboneConfig, FPNConfig
    from blendmask_edu.modeling.segmenter import InstanceSegmenter

    cfg = model_cfg(branch)
    cfg.backbone = BackboneConfig(name="resnet18", weights_path=None)
    cfg.fpn = FPNConfig(channels=D)
    cfg.blender = BlenderConfig(**{**BLENDER.__dict__, "bottom_c2": True})
    torch.manual_seed(0)
    model = InstanceSegmenter(cfg).train()
    assert model.backbone.with_c2 and model.backbone.c2_channels == 64  # resnet18's layer1
    targets = [instance_target(TWO_BOXES, [1, 2])]
    run = model.run([torch.rand(3, 64, 64)], targets)
    assert all(torch.isfinite(v) for v in run["losses"].values())
    c2 = run["features"]["c2"]  # [1, 64, 16, 16]: resnet18's layer1 output
    assert c2.shape == (1, 64, 16, 16)
    c2.retain_grad()
    run["losses"]["loss_mask"].backward()
    assert c2.grad.abs().sum() > 0
    assert model.mask_branch.bottom.c2[0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)])[0]
    assert out["masks"].shape == (len(out["boxes"]), 64, 64)
