"""BlendMask's mask branch on tiny hand-computed cases: blender, crops, targets, top layer,
gradients, empty images, the intermediates API and pasting masks back into the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import instance_target

from blendmask_edu.config import (
    BackboneConfig,
    BlenderConfig,
    FCOSConfig,
    FPNConfig,
    ModelConfig,
)
from blendmask_edu.modeling.attention import TopLayer
from blendmask_edu.modeling.bases import semantic_targets
from blendmask_edu.modeling.blender import blend, crop_bases
from blendmask_edu.modeling.blendmask import BlendMaskBranch
from blendmask_edu.modeling.fcos import FCOS
from blendmask_edu.modeling.fcos.head import compute_locations, level_of_locations
from blendmask_edu.modeling.fcos.targets import fcos_targets
from blendmask_edu.modeling.mask_branch import mask_targets, positive_instances
from blendmask_edu.modeling.paste import paste_masks
from blendmask_edu.modeling.segmenter import InstanceSegmenter

# Small mask-branch settings shared by the module-level tests.
BLENDER = BlenderConfig(K=2, M=4, R=8, bottom_channels=16, bottom_num_convs=1)
FCOS_CFG = FCOSConfig(num_classes=3, num_convs=1, sizes_of_interest=(16, 32, 64, 128))


# ---------------------------------------------------------------------------------------
# blend(): Eq. 2–4
# ---------------------------------------------------------------------------------------


def upsample_2_to_4(a: np.ndarray) -> np.ndarray:
    """Bilinear 2×2 → 4×4, align_corners=False, by hand.

    Output pixel i samples source coordinate (i + 0.5)·2/4 − 0.5 = −0.25, 0.25, 0.75, 1.25;
    outside [0, 1] it is clamped to the edge. As a matrix: row i gives the two source weights.
    """
    U = np.array([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])  # [4, 2]
    return U @ a @ U.T


def softmax_over_k(x: np.ndarray) -> np.ndarray:  # [K, R, R]
    e = np.exp(x - x.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


ATT = np.array(  # [K=2, M=2, M=2]
    [[[1.0, -1.0], [0.5, 2.0]], [[0.0, 0.5], [-1.0, 1.0]]]
)
CROPS = np.arange(2 * 4 * 4, dtype=np.float64).reshape(2, 4, 4) / 10 - 1  # [K, R, R]


def test_blend_bilinear_by_hand():
    out = blend(torch.tensor(CROPS)[None], torch.tensor(ATT)[None], "bilinear")
    up = np.stack([upsample_2_to_4(a) for a in ATT])  # Eq. 2   [K, R, R]
    weights = softmax_over_k(up)  # Eq. 3
    mask = (weights * CROPS).sum(axis=0)  # Eq. 4   [R, R]
    np.testing.assert_allclose(out["attention_weights"][0].numpy(), weights, rtol=1e-6)
    np.testing.assert_allclose(out["mask_logits"][0].numpy(), mask, rtol=1e-6)
    # One value fully by hand: pixel (1, 1) of basis 0 is
    # .75·(.75·1 + .25·−1) + .25·(.75·.5 + .25·2) = .75·.5 + .25·.875 = .59375.
    assert up[0, 1, 1] == pytest.approx(0.59375)


def test_blend_nearest_by_hand():
    out = blend(torch.tensor(CROPS)[None], torch.tensor(ATT)[None], "nearest")
    # nearest 2 → 4: output i takes source ⌊i · 2/4⌋ = 0, 0, 1, 1 (each value becomes a 2×2 block)
    up = ATT.repeat(2, axis=1).repeat(2, axis=2)  # [K, 4, 4]
    mask = (softmax_over_k(up) * CROPS).sum(axis=0)
    np.testing.assert_allclose(out["mask_logits"][0].numpy(), mask, rtol=1e-6)


def test_blend_rejects_unknown_interpolation():
    with pytest.raises(ValueError, match="interpolation"):
        blend(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2), "bicubic")


def test_k1_uses_a_sigmoid_on_both_the_basis_and_the_attention():
    """The paper's K = 1 row (Table 3 caption): mask = σ(a') ∘ σ(r), returned as its logit."""
    crop = torch.tensor([[[[2.0, -2.0], [0.0, 30.0]]]])  # [N=1, K=1, R=2, R=2]
    att = torch.tensor([[[[4.0, 4.0], [-4.0, 30.0]]]])  # M = R: no interpolation to think about
    out = blend(crop, att, "bilinear")
    mask = att[:, 0].sigmoid() * crop[:, 0].sigmoid()  # [1, 2, 2]
    torch.testing.assert_close(out["mask_logits"].sigmoid(), mask, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(out["attention_weights"], att.sigmoid())
    assert out["mask_logits"].isfinite().all()  # σ(30)·σ(30) rounds to 1: still a finite logit
    # A negative basis value can no longer flip into a confident "object" (σ(r) < 1/2):
    # pixel (0, 1) has r = −2 and an attention of σ(4) ≈ 1, so p = σ(4)σ(−2) < 0.5.
    assert out["mask_logits"][0, 0, 1] < 0 and out["mask_logits"][0, 0, 0] > 0
    # Gradients reach both the basis and the attention.
    crop.requires_grad_(True)
    att.requires_grad_(True)
    blend(crop, att)["mask_logits"][0, 0, 0].backward()
    assert crop.grad[0, 0, 0, 0] > 0 and att.grad[0, 0, 0, 0] > 0


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_softmax_over_k(interpolation):
    g = torch.Generator().manual_seed(0)
    crops = torch.randn(3, 4, 8, 8, generator=g)  # N=3, K=4, R=8
    att = torch.randn(3, 4, 5, 5, generator=g) * 3  # M=5
    out = blend(crops, att, interpolation)
    assert out["mask_logits"].shape == (3, 8, 8)
    assert out["attention_weights"].shape == (3, 4, 8, 8)
    torch.testing.assert_close(out["attention_weights"].sum(dim=1), torch.ones(3, 8, 8))
    # Adding the same number (or the same map) to all K attention maps changes nothing.
    shifted = blend(crops, att + 7.0, interpolation)
    torch.testing.assert_close(shifted["mask_logits"], out["mask_logits"])
    per_pixel = torch.randn(3, 1, 5, 5, generator=g)  # broadcast over K
    shifted = blend(crops, att + per_pixel, interpolation)
    torch.testing.assert_close(shifted["mask_logits"], out["mask_logits"])
    # With equal crops the mixture is that crop, whatever the attention (Σ_k s_k = 1).
    same = crops[:, :1].expand(-1, 4, -1, -1)
    torch.testing.assert_close(blend(same, att, interpolation)["mask_logits"], crops[:, 0])


# ---------------------------------------------------------------------------------------
# crop_bases(): Eq. 1
# ---------------------------------------------------------------------------------------


def x_coordinate_bases(h: int, w: int) -> torch.Tensor:
    """[2, 2, h, w]: image 0 = (x index, constant 3), image 1 = (−x index, constant −1)."""
    x = torch.arange(w, dtype=torch.float32).expand(h, w)
    img0 = torch.stack([x, torch.full((h, w), 3.0)])
    img1 = torch.stack([-x, torch.full((h, w), -1.0)])
    return torch.stack([img0, img1])


@pytest.mark.parametrize("stride", [4, 8])
def test_crop_bases_of_a_linear_basis(stride):
    # Bases pixel j (stride s) is centred on image x = s·j + s/2, so (aligned boxes) the
    # basis "value = j" reads x/s − 1/2 at image coordinate x. With one sample per bin, bin c of
    # a box [x0, x1] is sampled at its centre x0 + (c + 1/2)(x1 − x0)/R.
    bases = x_coordinate_bases(16, 16)  # [B=2, K=2, 16, 16]
    boxes = torch.tensor([[16.0, 8.0, 48.0, 40.0], [16.0, 8.0, 48.0, 40.0]])
    R = 4
    crops = crop_bases(bases, boxes, torch.tensor([0, 1]), R, bases_stride=stride)
    assert crops.shape == (2, 2, R, R)
    centres = 16 + (torch.arange(R) + 0.5) * 32 / R  # 20, 28, 36, 44
    expected_x = (centres / stride - 0.5).expand(R, R)  # same in every row
    # stride 4 → 4.5, 6.5, 8.5, 10.5; stride 8 → 2, 3, 4, 5
    first = {4: [4.5, 6.5, 8.5, 10.5], 8: [2.0, 3.0, 4.0, 5.0]}[stride]
    assert expected_x[0].tolist() == first
    torch.testing.assert_close(crops[0, 0], expected_x)
    torch.testing.assert_close(crops[0, 1], torch.full((R, R), 3.0))
    # batch_index picks image 1 for the second box
    torch.testing.assert_close(crops[1, 0], -expected_x)
    torch.testing.assert_close(crops[1, 1], torch.full((R, R), -1.0))


# ---------------------------------------------------------------------------------------
# mask_targets()
# ---------------------------------------------------------------------------------------


def test_mask_targets_crop_the_mask_by_its_box():
    masks = torch.zeros(2, 16, 16, dtype=torch.uint8)
    masks[0, 4:12, 4:8] = 1  # left half of box 0 = (4, 4, 12, 12)
    masks[1, 0:4, 8:16] = 1  # top half of box 1 = (8, 0, 16, 8)
    masks[1, 12:, :] = 1  # outside box 1: must not leak in
    with_masks = {
        "boxes": torch.tensor([[4.0, 4.0, 12.0, 12.0], [8.0, 0.0, 16.0, 8.0]]),
        "masks": masks,
        "labels": torch.tensor([1, 2]),
    }
    empty = {
        "boxes": torch.zeros(0, 4),
        "masks": torch.zeros(0, 16, 16, dtype=torch.uint8),
        "labels": torch.zeros(0, dtype=torch.long),
    }
    third = {
        "boxes": torch.tensor([[4.0, 4.0, 12.0, 12.0]]),
        "masks": masks[:1].clone(),
        "labels": torch.tensor([3]),
    }
    out = mask_targets([with_masks, empty, third], R=4)
    assert out.shape == (3, 4, 4)  # one per GT instance, the empty image adds none
    left = torch.tensor([[1.0, 1.0, 0.0, 0.0]]).expand(4, 4)
    top = torch.tensor([[1.0], [1.0], [0.0], [0.0]]).expand(4, 4)
    torch.testing.assert_close(out[0], left)
    torch.testing.assert_close(out[1], top)
    torch.testing.assert_close(out[2], left)


def test_mask_targets_threshold_at_one_half():
    # Box (0, 0, 8, 8), R = 4: bin c averages mask columns 2c and 2c + 1. Columns 0..2 filled:
    # bin 0 → 1, bin 1 → 0.5 (kept, ≥ 0.5), bins 2, 3 → 0.
    masks = torch.zeros(1, 8, 8)
    masks[0, :, :3] = 1
    out = mask_targets([{"boxes": torch.tensor([[0.0, 0.0, 8.0, 8.0]]), "masks": masks}], R=4)
    torch.testing.assert_close(out[0], torch.tensor([[1.0, 1.0, 0.0, 0.0]]).expand(4, 4))


def test_mask_targets_all_empty():
    empty = {"boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 8, 8)}
    assert mask_targets([empty, empty], R=5).shape == (0, 5, 5)


# ---------------------------------------------------------------------------------------
# Top layer
# ---------------------------------------------------------------------------------------


def test_top_layer_at_locations_equals_forward_gathered():
    torch.manual_seed(0)
    top = TopLayer(BlenderConfig(K=2, M=3), in_channels=4)
    with torch.no_grad():  # larger weights than the init, so differences would show
        top.conv.weight.normal_()
        top.conv.bias.normal_()
    sizes = [(5, 6), (3, 3), (2, 2)]  # L = 30 + 9 + 4 = 43
    tower = [torch.randn(3, 4, h, w, requires_grad=True) for h, w in sizes]
    # first/last cells of each level (zero padding at the borders) and some random ones
    loc = torch.tensor([0, 5, 29, 30, 38, 39, 42, 17, 17, 3])
    b = torch.tensor([0, 2, 1, 0, 2, 1, 2, 0, 1, 2])
    w = torch.randn(len(loc), 2, 3, 3)  # an arbitrary linear function of the outputs

    dense = top(tower)  # [B, L, K·M·M]
    assert dense.shape == (3, 43, 2 * 3 * 3)
    expected = dense[b, loc].view(-1, 2, 3, 3)
    (expected * w).sum().backward()
    grads_dense = [top.conv.weight.grad.clone(), top.conv.bias.grad.clone()]
    grads_dense += [t.grad.clone() for t in tower]
    top.zero_grad()
    for t in tower:
        t.grad = None

    sparse = top.at_locations(tower, b, loc)  # [N, K, M, M]
    torch.testing.assert_close(sparse, expected, rtol=1e-5, atol=1e-5)
    (sparse * w).sum().backward()
    grads_sparse = [top.conv.weight.grad, top.conv.bias.grad] + [t.grad for t in tower]
    for gd, gs in zip(grads_dense, grads_sparse):
        torch.testing.assert_close(gs, gd, rtol=1e-4, atol=1e-4)


def test_top_layer_init():
    top = TopLayer(BlenderConfig(K=4, M=14), in_channels=32)
    assert top.conv.out_channels == 4 * 14 * 14 and top.conv.kernel_size == (3, 3)
    assert (top.conv.bias == 0).all()
    assert 0.005 < top.conv.weight.std().item() < 0.015  # N(0, 0.01²)


# ---------------------------------------------------------------------------------------
# The branch: gradients, empty images
# ---------------------------------------------------------------------------------------


def branch_step(targets: list[dict]):
    """FCOS + BlendMaskBranch on random P3..P7 of 64×64 images; returns (branch, losses)."""
    torch.manual_seed(0)
    # 64 channels: GroupNorm(32) then has 2 values per group even on the 1×1 P6/P7 maps.
    D = 64
    fcos = FCOS(FCOS_CFG, D)
    branch = BlendMaskBranch(BLENDER, D, FCOS_CFG)
    names = ("p3", "p4", "p5", "p6", "p7")
    sizes = (8, 4, 2, 1, 1)  # 64 / stride (P6, P7 rounded up)
    features = {n: torch.randn(len(targets), D, s, s) for n, s in zip(names, sizes)}
    fcos_out = fcos(list(features.values()), [(64, 64)] * len(targets), targets)
    return branch, fcos_out, branch.forward_train(features, fcos_out, targets)


def test_mask_loss_gradients_reach_bases_and_attention():
    # Both boxes get positives: (4,4,28,28) e.g. on P3 at (12, 12), max distance 16 ≤ 16;
    # (30,20,60,60) on P4, e.g. at (40, 40): max(10, 20, 20, 20) = 20 ∈ (16, 32].
    targets = [instance_target([[4, 4, 28, 28], [30, 20, 60, 60]], [1, 3])]
    branch, fcos_out, losses = branch_step(targets)
    t = fcos_out["targets"]
    assert set(t.gt_index[t.labels > 0].tolist()) == {0, 1}
    assert set(losses) == {"loss_mask", "loss_sem"}
    assert torch.isfinite(losses["loss_mask"]) and losses["loss_mask"] > 0
    losses["loss_mask"].backward()
    assert branch.bottom.to_bases.weight.grad.abs().sum() > 0  # bases
    assert branch.top.conv.weight.grad.abs().sum() > 0  # attention


def test_image_without_instances_gives_zero_mask_loss():
    branch, fcos_out, losses = branch_step([instance_target([], [])])
    assert (fcos_out["targets"].labels == 0).all()
    assert losses["loss_mask"].item() == 0.0  # finite, not NaN (no 0/0)
    assert torch.isfinite(losses["loss_sem"])
    (losses["loss_mask"] + losses["loss_sem"]).backward()
    for name, p in branch.top.named_parameters():  # in the graph (DDP), but zero
        assert p.grad is not None, name
        assert (p.grad == 0).all(), name
    assert branch.bottom.to_bases.weight.grad is not None


def test_batch_with_one_empty_image():
    targets = [instance_target([], []), instance_target([[4, 4, 28, 28]], [2])]
    _, fcos_out, losses = branch_step(targets)
    labels = fcos_out["targets"].labels
    # (4,4,28,28), center (16, 16): P3 center region (4, 28)² → (12|20, 12|20), max ≤ 16;
    # P4 region (4, 28)² → (8|24, 8|24), max distance 20 ∈ (16, 32]. 8 positives.
    assert (labels[0] == 0).all() and (labels[1] == 2).sum() == 8
    assert torch.isfinite(losses["loss_mask"]) and losses["loss_mask"] > 0


def test_positive_instances_index_the_batch_wide_gt_list():
    locations = compute_locations([(8, 8)], [8])
    level = level_of_locations([(8, 8)])
    targets = [
        instance_target([[4, 4, 28, 28]], [1]),
        instance_target([[36, 4, 60, 28], [4, 36, 28, 60]], [2, 3]),
    ]
    t = fcos_targets(locations, level, targets, [8], [], 1.5)
    pos = positive_instances({"targets": t}, targets)
    # each box gets the 4 cells around its center: (12|20, 12|20) for the first, etc.
    assert len(pos["batch_index"]) == 12
    assert pos["batch_index"].tolist() == [0] * 4 + [1] * 8
    # gt_index runs over [image 0's box, image 1's box 0, image 1's box 1]
    assert sorted(pos["gt_index"].tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    all_boxes = torch.cat([x["boxes"] for x in targets])
    all_labels = torch.cat([x["labels"] for x in targets])
    torch.testing.assert_close(pos["gt_boxes"], all_boxes[pos["gt_index"]])
    assert torch.equal(pos["labels"], all_labels[pos["gt_index"]])
    assert torch.equal(pos["labels"], t.labels[pos["batch_index"], pos["loc_index"]])
    # box (4,4,28,28) at (12, 12): l=t=8, r=b=16 → centerness sqrt(8/16 · 8/16) = 1/2
    torch.testing.assert_close(pos["centerness"], torch.full((12,), 0.5))
    sub = positive_instances({"targets": t}, targets, max_instances=5)
    assert len(sub["gt_index"]) == 5
    torch.testing.assert_close(sub["gt_boxes"], all_boxes[sub["gt_index"]])


# ---------------------------------------------------------------------------------------
# The whole model: intermediates and pasted masks
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def segmenter():
    cfg = ModelConfig(
        backbone=BackboneConfig(name="resnet18", pretrained=False, weights_path=None),
        fpn=FPNConfig(channels=64),  # GroupNorm(32) needs > 1 value per group on 1×1 P7
        fcos=FCOSConfig(num_classes=3, num_convs=1, prior_prob=0.5, max_detections=5),
        blender=BLENDER,
    )
    torch.manual_seed(0)
    model = InstanceSegmenter(cfg).eval()
    with torch.no_grad():  # every location predicts a (1,1,1,1)·stride box: detections exist
        model.fcos.head.box_reg.bias.fill_(1.0)
    return model


def test_run_returns_blender_intermediates(segmenter):
    images = [torch.rand(3, 64, 96), torch.rand(3, 48, 64)]  # padded batch: 64 × 96
    with torch.no_grad():
        out = segmenter.run(images)
    K, M, R = BLENDER.K, BLENDER.M, BLENDER.R
    assert len(out["masks"]) == 2
    for b in range(2):
        N = len(out["fcos"]["detections"][b]["boxes"])
        assert N == 5  # max_detections
        m = out["masks"][b]
        assert m["bases"].shape == (K, 64 // 4, 96 // 4)
        assert m["attention"].shape == (N, K, M, M)
        assert m["attention_weights"].shape == (N, K, R, R)
        assert m["basis_crops"].shape == (N, K, R, R)
        assert m["masks"].shape == (N, R, R)
        assert (m["masks"] >= 0).all() and (m["masks"] <= 1).all()
        torch.testing.assert_close(m["masks"], m["mask_logits"].sigmoid())


def test_forward_pastes_masks_at_orig_sizes(segmenter):
    images = [torch.rand(3, 64, 96), torch.rand(3, 48, 64)]
    # image 0 was resized ×1 in x and ×0.5 in y, image 1 ×0.5 in both
    orig = [(128, 96), (96, 128)]
    scale = [torch.tensor([1.0, 2.0, 1.0, 2.0]), torch.tensor([2.0, 2.0, 2.0, 2.0])]
    with torch.no_grad():
        run = segmenter.run(images)
        results = segmenter(images, orig_sizes=orig)
    for b, res in enumerate(results):
        N = len(res["boxes"])
        assert res["masks"].shape == (N, *orig[b])
        assert res["scores"].shape == res["labels"].shape == (N,)
        assert (res["masks"] >= 0).all() and (res["masks"] <= 1).all()
        torch.testing.assert_close(res["boxes"], run["fcos"]["detections"][b]["boxes"] * scale[b])
        # outside its box a pasted mask is 0
        x0, y0, x1, y1 = res["boxes"][0].tolist()
        outside = torch.ones(orig[b], dtype=torch.bool)
        outside[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = False
        assert (res["masks"][0][outside] == 0).all()
    # without orig_sizes the masks come at the input sizes
    with torch.no_grad():
        plain = segmenter(images)
    assert plain[1]["masks"].shape[-2:] == (48, 64)


# ---------------------------------------------------------------------------------------
# paste_masks()
# ---------------------------------------------------------------------------------------


def test_paste_ones_into_an_integer_box():
    # Box 4×4 = R: each image pixel centre lands exactly on an R×R cell centre.
    out = paste_masks(torch.ones(1, 4, 4), torch.tensor([[2.0, 3.0, 6.0, 7.0]]), (10, 10))
    expected = torch.zeros(10, 10)
    expected[3:7, 2:6] = 1
    torch.testing.assert_close(out[0], expected)
    # A larger box (8×8 for R = 4): > 0.5 exactly on the box, 1 inside its 1-pixel rim.
    out = paste_masks(torch.ones(1, 4, 4), torch.tensor([[2.0, 2.0, 10.0, 10.0]]), (12, 12))
    expected = torch.zeros(12, 12, dtype=torch.bool)
    expected[2:10, 2:10] = True
    assert torch.equal(out[0] > 0.5, expected)
    assert (out[0, 3:9, 3:9] == 1).all()


def test_paste_left_half_mask():
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]]).expand(4, 4)[None]  # [1, R=4, R]
    out = paste_masks(mask, torch.tensor([[0.0, 0.0, 8.0, 8.0]]), (8, 8))[0]
    # Image column k samples mask column (k + 0.5)·4/8 − 0.5 = (k − 0.5)/2:
    # k = 3 → 1.25: .75·1 + .25·0 = .75; k = 4 → 1.75: .25·1 + .75·0 = .25; k ≥ 5 → 0.
    # (Rows 1..6: rows 0 and 7, like column 0, sample half a cell beyond the R×R grid.)
    inner = out[1:7]
    assert (inner[:, 1:3] == 1).all()
    torch.testing.assert_close(inner[:, 3], torch.full((6,), 0.75))
    torch.testing.assert_close(inner[:, 4], torch.full((6,), 0.25))
    assert (out[:, 5:] == 0).all()
    assert ((out > 0.5) == torch.tensor([1, 1, 1, 1, 0, 0, 0, 0]).bool().expand(8, 8)).all()


def test_paste_boxes_partly_or_fully_outside_the_image():
    mask = torch.arange(64, dtype=torch.float32).view(1, 8, 8)  # distinct values, R = 8
    boxes = torch.tensor([[-4.0, -4.0, 4.0, 4.0], [4.0, 2.0, 12.0, 10.0], [20.0, 20.0, 28.0, 28.0]])
    out = paste_masks(mask.expand(3, 8, 8), boxes, (6, 8))
    assert out.shape == (3, 6, 8)
    # Box 0 (size 8 = R) starts 4 pixels before the image: the image sees mask rows/cols 4..7.
    expected = torch.zeros(6, 8)
    expected[:4, :4] = mask[0, 4:, 4:]
    torch.testing.assert_close(out[0], expected)
    # Box 1 is cut by the right and bottom edges: the image sees mask rows 0..3, cols 0..3.
    expected = torch.zeros(6, 8)
    expected[2:6, 4:8] = mask[0, :4, :4]
    torch.testing.assert_close(out[1], expected)
    assert (out[2] == 0).all()  # entirely outside


# ---------------------------------------------------------------------------------------
# Auxiliary semantic targets (bottom module)
# ---------------------------------------------------------------------------------------


def test_semantic_targets_at_stride_8():
    # 32×32 image, stride 8 → a 4×4 map whose cells are read at pixels 4, 12, 20, 28.
    masks = torch.zeros(3, 32, 32, dtype=torch.uint8)
    masks[0, 0:16, 0:16] = 1  # label 2: cells rows 0–1, cols 0–1
    masks[1, 10:32, 10:14] = 1  # label 5: covers column pixel 12 → col 1, rows 1–3 (on top)
    masks[2, 0:4, 24:32] = 1  # label 1: misses row pixel 4 → no cell at all
    t = {"masks": masks, "labels": torch.tensor([2, 5, 1]), "boxes": torch.zeros(3, 4)}
    empty = {
        "masks": torch.zeros(0, 24, 24, dtype=torch.uint8),
        "labels": torch.zeros(0, dtype=torch.long),
        "boxes": torch.zeros(0, 4),
    }
    sem = semantic_targets([t, empty], size=(5, 6), stride=8)  # padded feature map
    expected = torch.tensor(
        [
            [2, 2, 0, 0, 0, 0],
            [2, 5, 0, 0, 0, 0],
            [0, 5, 0, 0, 0, 0],
            [0, 5, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],  # padding row
        ]
    )
    assert sem.dtype == torch.long and sem.shape == (2, 5, 6)
    assert torch.equal(sem[0], expected)
    assert (sem[1] == 0).all()


def test_bottom_module_reads_c2_when_asked():
    """`bottom_c2`: the stride-4 map is added after the ×2 upsample and gets gradients."""
    from blendmask_edu.modeling.bases import BottomModule

    cfg = BlenderConfig(K=4, bottom_channels=16, bottom_num_convs=1, bottom_c2=True)
    bottom = BottomModule(cfg, in_channels=8, num_classes=3, c2_channels=5)
    feats = {f"p{i}": torch.randn(2, 8, 64 // 2**i, 64 // 2**i) for i in (3, 4, 5)}
    feats["c2"] = torch.randn(2, 5, 16, 16, requires_grad=True)
    bases = bottom(feats)["bases"]
    assert bases.shape == (2, 4, 16, 16)
    bases.square().sum().backward()
    assert feats["c2"].grad.abs().sum() > 0 and bottom.c2[0].weight.grad.abs().sum() > 0
    changed = dict(feats, c2=feats["c2"].detach() + 1.0)  # C2 changes the bases
    assert not torch.allclose(bottom(changed)["bases"], bases)
    with pytest.raises(ValueError, match="C2 channels"):
        BottomModule(cfg, in_channels=8, num_classes=3)
