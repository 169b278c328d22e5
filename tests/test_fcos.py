"""FCOS on hand-computed tiny cases: locations, target assignment, losses, decoding, head.

Every expected number below is worked out by hand in the comment next to it (Eq. numbers
refer to Tian et al., ICCV 2019).
"""

from __future__ import annotations

import math

import pytest
import torch

from blendmask_edu.config import FCOSConfig
from blendmask_edu.modeling.fcos import FCOSHead
from blendmask_edu.modeling.fcos.head import (
    compute_locations,
    flatten_levels,
    level_of_locations,
)
from blendmask_edu.modeling.fcos.inference import detect_image
from blendmask_edu.modeling.fcos.loss import distances_to_boxes, fcos_losses
from blendmask_edu.modeling.fcos.targets import (
    FCOSTargets,
    assign_image,
    centerness_target,
    fcos_targets,
    level_size_ranges,
)


def grid(sizes, strides):
    """Locations [L, 2] and their level [L] for feature maps of `sizes`."""
    return compute_locations(sizes, strides), level_of_locations(sizes)


def positives(t: FCOSTargets, locations, level, b: int = 0) -> set[tuple[int, int, int]]:
    """{(level, x, y)} of the positive locations of image b."""
    idx = (t.labels[b] > 0).nonzero().flatten().tolist()
    return {(int(level[i]), int(locations[i, 0]), int(locations[i, 1])) for i in idx}


def index_of(locations, level, lvl: int, x: float, y: float) -> int:
    hit = (level == lvl) & (locations[:, 0] == x) & (locations[:, 1] == y)
    (i,) = hit.nonzero().flatten().tolist()
    return i


def target(boxes, labels) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


# ---------------------------------------------------------------------------------------
# Locations
# ---------------------------------------------------------------------------------------


def test_compute_locations_tiny_case():
    # 2 rows × 3 columns at stride 8: x = 8·j + 4 = 4, 12, 20; y = 4, 12; row-major order.
    loc = compute_locations([(2, 3)], [8])
    expected = torch.tensor(
        [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]], dtype=torch.float32
    )
    torch.testing.assert_close(loc, expected)


def test_compute_locations_two_levels_and_level_index():
    sizes = [(2, 2), (1, 1)]
    loc = compute_locations(sizes, [8, 16])
    # level 0: 4 cells at (4|12, 4|12); level 1: one cell at 16//2 = 8.
    expected = torch.tensor([[4, 4], [12, 4], [4, 12], [12, 12], [8, 8]], dtype=torch.float32)
    torch.testing.assert_close(loc, expected)
    assert level_of_locations(sizes).tolist() == [0, 0, 0, 0, 1]
    assert level_of_locations([(2, 3), (1, 2), (1, 1)]).tolist() == [0] * 6 + [1] * 2 + [2]


# ---------------------------------------------------------------------------------------
# Target assignment
# ---------------------------------------------------------------------------------------


def test_level_size_ranges_defaults():
    cfg = FCOSConfig()
    ranges = level_size_ranges(cfg.sizes_of_interest, len(cfg.strides))
    inf = float("inf")
    assert ranges == [(-1, 64), (64, 128), (128, 256), (256, 512), (512, inf)]
    with pytest.raises(ValueError):
        level_size_ranges((64, 128), 5)  # 2 bounds give 3 levels, not 5


def test_centerness_target_by_hand():
    reg = torch.tensor(
        [
            [2.0, 2.0, 2.0, 2.0],  # l = r, t = b → 1
            [1.0, 2.0, 3.0, 2.0],  # l=1, t=2, r=3, b=2 → sqrt(1/3 · 1)
            [1.0, 1.0, 4.0, 2.0],  # sqrt(1/4 · 1/2)
            [0.0, 3.0, 5.0, 3.0],  # on the box edge (l = 0) → 0
        ]
    )
    expected = torch.tensor([1.0, math.sqrt(1 / 3), math.sqrt(1 / 8), 0.0])
    torch.testing.assert_close(centerness_target(reg), expected)


def test_center_sampling_clipped_to_the_box():
    # One level, stride 8, a 4 × 4 grid at x, y ∈ {4, 12, 20, 28}, every size accepted.
    locations, level = grid([(4, 4)], [8])
    t = fcos_targets(locations, level, [target([[2, 2, 30, 14]], [3])], [8], [], 1.5)
    # Box center (16, 8), radius 1.5 · 8 = 12:
    #   x ∈ (max(16−12, 2), min(16+12, 30)) = (4, 28)  → x ∈ {12, 20}  (strict inequalities)
    #   y ∈ (max(8−12, 2),  min(8+12, 14))  = (2, 14)  → y ∈ {4, 12}   (y=20 cut by the clip)
    assert positives(t, locations, level) == {(0, 12, 4), (0, 20, 4), (0, 12, 12), (0, 20, 12)}
    assert set(t.labels[0].tolist()) == {0, 3}
    assert set(t.gt_index[0][t.labels[0] > 0].tolist()) == {0}
    assert (t.gt_index[0][t.labels[0] == 0] == -1).all()

    # Eq. 1 at (12, 4): l = 12−2, t = 4−2, r = 30−12, b = 14−4; at (20, 12): 18, 10, 10, 2.
    i = index_of(locations, level, 0, 12, 4)
    torch.testing.assert_close(t.reg[0, i], torch.tensor([10.0, 2.0, 18.0, 10.0]))
    j = index_of(locations, level, 0, 20, 12)
    torch.testing.assert_close(t.reg[0, j], torch.tensor([18.0, 10.0, 10.0, 2.0]))
    # Eq. 3: sqrt(10/18 · 2/10) = sqrt(1/9) = 1/3 at both (the box is symmetric about them).
    torch.testing.assert_close(t.centerness[0, i], torch.tensor(1 / 3))
    torch.testing.assert_close(t.centerness[0, j], torch.tensor(1 / 3))
    assert (t.centerness[0][t.labels[0] == 0] == 0).all()


def test_center_region_is_clipped_on_every_side():
    # 5 × 5 grid at x, y ∈ {4, 12, 20, 28, 36}; box (12, 12, 27, 26), center (19.5, 19).
    locations, level = grid([(5, 5)], [8])
    t = fcos_targets(locations, level, [target([[12, 12, 27, 26]], [1])], [8], [], 1.5)
    # x ∈ (max(7.5, 12), min(31.5, 27)) = (12, 27), y ∈ (max(7, 12), min(31, 26)) = (12, 26):
    # only (20, 20). Without the clip, x = 12 / y = 12 (left/top) or x = 28 / y = 28
    # (right/bottom) would be positives too.
    assert positives(t, locations, level) == {(0, 20, 20)}
    i = index_of(locations, level, 0, 20, 20)
    torch.testing.assert_close(t.reg[0, i], torch.tensor([8.0, 8.0, 7.0, 6.0]))
    torch.testing.assert_close(t.centerness[0, i], torch.tensor(math.sqrt(7 / 8 * 6 / 8)))


def test_size_ranges_send_boxes_to_levels():
    # Levels stride 8 (4×4 grid, max(l,t,r,b) ≤ 16) and stride 16 (2×2 at 8|24, > 16).
    locations, level = grid([(4, 4), (2, 2)], [8, 16])
    small, large = [0, 0, 16, 16], [0, 0, 32, 32]
    t = fcos_targets(locations, level, [target([small, large], [1, 2])], [8, 16], [16], 1.5)
    # small: stride 8, center (8, 8) ± 12 clipped to (0, 16) → x, y ∈ {4, 12}; the largest
    #   distance there is 12 ≤ 16. At stride 16 only (8, 8) is in the center region, max 8 ≤ 16.
    # large: stride 8, center (16, 16) ± 12 → x, y ∈ {12, 20}, max distance 20 > 16: not P3;
    #   stride 16, center ± 24 clipped to (0, 32) → all of {8, 24}², max ≥ 24 > 16: P4.
    expected_small = {(0, 4, 4), (0, 12, 4), (0, 4, 12), (0, 12, 12)}
    expected_large = {(1, 8, 8), (1, 24, 8), (1, 8, 24), (1, 24, 24)}
    assert positives(t, locations, level) == expected_small | expected_large
    for lvl, x, y in expected_small:
        i = index_of(locations, level, lvl, x, y)
        assert (t.labels[0, i].item(), t.gt_index[0, i].item()) == (1, 0)
    for lvl, x, y in expected_large:
        i = index_of(locations, level, lvl, x, y)
        assert (t.labels[0, i].item(), t.gt_index[0, i].item()) == (2, 1)
    # (24, 8) for the large box: l=24, t=8, r=8, b=24 → centerness sqrt(8/24 · 8/24) = 1/3.
    i = index_of(locations, level, 1, 24, 8)
    torch.testing.assert_close(t.reg[0, i], torch.tensor([24.0, 8.0, 8.0, 24.0]))
    torch.testing.assert_close(t.centerness[0, i], torch.tensor(1 / 3))


@pytest.mark.parametrize("small_first", [True, False])
def test_smallest_area_wins(small_first):
    # One level, stride 8, 6 × 6 grid at 4, 12, ..., 44; every size accepted.
    locations, level = grid([(6, 6)], [8])
    big, small = [0, 0, 40, 40], [8, 8, 24, 24]
    boxes, labels = ([small, big], [2, 1]) if small_first else ([big, small], [1, 2])
    t = fcos_targets(locations, level, [target(boxes, labels)], [8], [], 1.5)
    small_index = 0 if small_first else 1
    # small: center (16, 16) ± 12 clipped to (8, 24) → x, y ∈ {12, 20}
    # big:   center (20, 20) ± 12 clipped to (8, 32) → x, y ∈ {12, 20, 28}
    # Where both qualify the smaller area (256 < 1600) wins, whatever the order.
    both = {(0, x, y) for x in (12, 20) for y in (12, 20)}
    big_only = {(0, x, y) for x in (12, 20, 28) for y in (12, 20, 28)} - both
    assert positives(t, locations, level) == both | big_only
    for _, x, y in both:
        i = index_of(locations, level, 0, x, y)
        assert t.labels[0, i].item() == 2
        assert t.gt_index[0, i].item() == small_index
    for _, x, y in big_only:
        i = index_of(locations, level, 0, x, y)
        assert t.labels[0, i].item() == 1
        assert t.gt_index[0, i].item() == 1 - small_index
    # Regression targets refer to the winning (small) box: at (12, 12) → 4, 4, 12, 12.
    i = index_of(locations, level, 0, 12, 12)
    torch.testing.assert_close(t.reg[0, i], torch.tensor([4.0, 4.0, 12.0, 12.0]))


def test_image_without_boxes_is_all_background():
    locations, level = grid([(4, 4), (2, 2)], [8, 16])
    empty = target([], [])
    one = target([[0, 0, 16, 16]], [4])
    t = fcos_targets(locations, level, [empty, one], [8, 16], [16], 1.5)
    L = locations.shape[0]
    assert t.labels.shape == (2, L) and t.reg.shape == (2, L, 4)
    assert (t.labels[0] == 0).all()
    assert (t.gt_index[0] == -1).all()
    assert (t.centerness[0] == 0).all()
    assert (t.reg[0] == 0).all()
    # The other image of the batch is assigned as usual (4 positives, see the size test).
    assert (t.labels[1] == 4).sum().item() == 4


def test_assign_image_directly():
    # The per-image function with explicit per-location stride and size range; box (0,0,20,20).
    locations = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [4.0, 4.0], [8.0, 8.0]])
    loc_stride = torch.tensor([8.0, 8.0, 8.0, 16.0, 16.0])
    p3, p4 = [-1.0, 16.0], [16.0, float("inf")]
    loc_range = torch.tensor([p3, p3, p3, p4, p4])
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    labels, reg, gt_index = assign_image(
        locations, loc_stride, loc_range, boxes, torch.tensor([7]), 1.5
    )
    # Center region (max(10 − r, 0), min(10 + r, 20)) = (0, 20) for r = 12 and r = 24.
    # (4, 4) at stride 8: max(4, 4, 16, 16) = 16 ≤ 16 (upper bound included) → positive.
    # (12, 4) at stride 8: max(12, 4, 8, 16) = 16 → positive.
    # (20, 4) at stride 8: x = 20 is not < 20 (on the box edge) → negative.
    # (4, 4) at stride 16: max 16 ≥ 16 (lower bound included, as in AdelaiDet) → positive.
    # (8, 8) at stride 16: max(8, 8, 12, 12) = 12 → negative.
    assert labels.tolist() == [7, 7, 0, 7, 0]
    assert gt_index.tolist() == [0, 0, -1, 0, -1]
    torch.testing.assert_close(reg[:2], torch.tensor([[4.0, 4.0, 16.0, 16.0], [12, 4, 8, 16]]))


def test_distances_to_boxes_inverts_the_regression_targets():
    locations, level = grid([(8, 8), (4, 4)], [8, 16])
    g = torch.Generator().manual_seed(0)
    xy0 = torch.rand(5, 2, generator=g) * 30
    boxes = torch.cat([xy0, xy0 + 8 + torch.rand(5, 2, generator=g) * 30], dim=1)
    t = fcos_targets(locations, level, [target(boxes.tolist(), [1] * 5)], [8, 16], [16], 1.5)
    pos = t.labels[0] > 0
    assert pos.sum() > 0
    decoded = distances_to_boxes(locations[pos], t.reg[0, pos])
    torch.testing.assert_close(decoded, boxes[t.gt_index[0, pos]])
    # And by hand: (x, y) = (10, 20), (l, t, r, b) = (1, 2, 3, 4) → (9, 18, 13, 24).
    out = distances_to_boxes(torch.tensor([10.0, 20.0]), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(out, torch.tensor([9.0, 18.0, 13.0, 24.0]))


# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------


def focal(logit: float, is_target: bool, alpha=0.25, gamma=2.0) -> float:
    """Sigmoid focal loss of one logit (Lin et al. 2017, Eq. 5), written out."""
    p = 1 / (1 + math.exp(-logit))
    if is_target:
        return -alpha * (1 - p) ** gamma * math.log(p)
    return -(1 - alpha) * p**gamma * math.log(1 - p)


def bce(logit: float, t: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def test_fcos_losses_by_hand():
    # One image, 3 locations at stride 8, C = 2 classes.
    locations = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0]])
    loc_stride = torch.full((3,), 8.0)
    labels = [2, 0, 1]  # loc 0 → class 2, loc 1 → background, loc 2 → class 1
    reg_t = torch.tensor([[4.0, 4.0, 12.0, 12.0], [0, 0, 0, 0], [4.0, 4.0, 4.0, 4.0]])
    ctr_t = [math.sqrt(4 / 12 * 4 / 12), 0.0, 1.0]  # Eq. 3: 1/3, background, 1
    targets = FCOSTargets(
        labels=torch.tensor([labels]),
        reg=reg_t[None],
        gt_index=torch.tensor([[0, -1, 1]]),
        centerness=torch.tensor([ctr_t]),
    )
    cls = [[0.5, -1.0], [2.0, -0.3], [-1.5, 1.0]]
    ctr = [0.2, -0.7, 1.1]
    # Predicted (l, t, r, b) in stride units (× 8 = pixels):
    #   loc 0: (0.5, 1, 2, 0.5) → (4, 8, 16, 4) px → box (0, −4, 20, 8); GT (0, 0, 16, 16).
    #   loc 2: (1, .5, .5, .5)  → (8, 4, 4, 4) px  → box (12, 0, 24, 8); GT (16, 0, 24, 8).
    box = [[0.5, 1.0, 2.0, 0.5], [0.0, 0.0, 0.0, 0.0], [1.0, 0.5, 0.5, 0.5]]
    losses = fcos_losses(
        torch.tensor([cls]),
        torch.tensor([box]),
        torch.tensor([ctr])[..., None],
        locations,
        loc_stride,
        targets,
    )
    num_pos = 2
    # Focal loss over all 3 × 2 logits, target 1 only at (loc 0, class 2), (loc 2, class 1).
    onehot = [[0, 1], [0, 0], [1, 0]]
    expected_cls = (
        sum(focal(cls[i][c], onehot[i][c] == 1) for i in range(3) for c in range(2)) / num_pos
    )
    # GIoU loc 0: intersection x∈[0,16], y∈[0,8] → 128; areas 20·12 = 240 and 256;
    #   union 240 + 256 − 128 = 368; enclosing x∈[0,20], y∈[−4,16] → 400.
    giou0 = 128 / 368 - (400 - 368) / 400
    # GIoU loc 2: intersection 8·8 = 64, pred area 96 = union = enclosing → 64/96.
    giou2 = 64 / 96
    expected_box = (ctr_t[0] * (1 - giou0) + ctr_t[2] * (1 - giou2)) / (ctr_t[0] + ctr_t[2])
    expected_ctr = (bce(ctr[0], ctr_t[0]) + bce(ctr[2], ctr_t[2])) / num_pos
    torch.testing.assert_close(losses["loss_cls"], torch.tensor(expected_cls))
    torch.testing.assert_close(losses["loss_box"], torch.tensor(expected_box))
    torch.testing.assert_close(losses["loss_ctr"], torch.tensor(expected_ctr))


def test_fcos_losses_without_positives_are_finite_and_backpropagate():
    cfg = FCOSConfig(num_classes=3, num_convs=1, strides=(8, 16))
    head = FCOSHead(cfg, in_channels=8)
    features = [torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)]
    sizes = [(4, 4), (2, 2)]
    locations, level = grid(sizes, cfg.strides)
    out = head(features)
    cls_logits = flatten_levels(out["cls_logits"])
    t = fcos_targets(locations, level, [target([], [])], cfg.strides, [16], 1.5)
    losses = fcos_losses(
        cls_logits,
        flatten_levels(out["box_reg"]),
        flatten_levels(out["centerness"]),
        locations,
        torch.tensor([8.0] * 16 + [16.0] * 4),
        t,
    )
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box"].item() == 0 and losses["loss_ctr"].item() == 0
    # All-background focal loss, normalised by max(num_pos, 1) = 1.
    expected_cls = sum(focal(v, False) for v in cls_logits.flatten().tolist())
    torch.testing.assert_close(losses["loss_cls"], torch.tensor(expected_cls), rtol=1e-4, atol=0)
    sum(losses.values()).backward()
    for name in ("cls_logits", "box_reg", "centerness"):
        assert getattr(head, name).weight.grad is not None, name
    assert head.cls_logits.weight.grad.abs().sum() > 0  # background pushes scores down
    assert (head.box_reg.weight.grad == 0).all()
    assert all(s.scale.grad is not None for s in head.scales)


# ---------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def detection_inputs():
    """Level 0: 2×2 at stride 8, level 1: 1×1 at stride 16 → 5 locations, 3 classes.

    loc 0 (4, 4)   class 1 p=.9, ctr .8, ltrb (1,1,1,1)·8       → (−4,−4,12,12) → clip (0,0,12,12)
    loc 1 (12, 4)  class 1 p=.6, ctr .5, ltrb (12,4,0,9) px     → (0,0,12,13): IoU 144/156 with
                                                                   loc 0, same class → suppressed
    loc 2 (4, 12)  class 2 p=.7, ctr .9, ltrb (4,12,8,0) px     → (0,0,12,12): IoU 1 with loc 0,
                                                                   other class → kept
    loc 3 (12, 12) class 3 p=.04 < 0.05 (ctr .99)               → below the score threshold
                   class 2 p=.95 but ltrb = 0                   → empty box, removed
    loc 4 (8, 8)   class 3 p=.1, ctr .1 (cls·ctr = .01 < .05),
                   ltrb (.25,.25,.25,.25)·16                     → (4,4,12,12), kept: the
                                                                   threshold is on cls alone
    """
    sizes = [(2, 2), (1, 1)]
    locations = compute_locations(sizes, [8, 16])
    loc_stride = torch.tensor([8.0, 8.0, 8.0, 8.0, 16.0])
    cls = torch.full((5, 3), -10.0)  # sigmoid(−10) ≈ 4.5e−5: below every threshold
    cls[0, 0], cls[1, 0], cls[2, 1] = logit(0.9), logit(0.6), logit(0.7)
    cls[3, 2], cls[3, 1], cls[4, 2] = logit(0.04), logit(0.95), logit(0.1)
    ctr = torch.tensor([[logit(0.8)], [logit(0.5)], [logit(0.9)], [logit(0.99)], [logit(0.1)]])
    box = torch.tensor(
        [
            [1.0, 1.0, 1.0, 1.0],
            [12 / 8, 4 / 8, 0.0, 9 / 8],
            [4 / 8, 12 / 8, 8 / 8, 0.0],
            [0.0, 0.0, 0.0, 0.0],
            [0.25, 0.25, 0.25, 0.25],
        ]
    )
    return cls, box, ctr, locations, loc_stride, [4, 1]


def test_detect_image_threshold_score_nms_clip():
    cfg = FCOSConfig(num_classes=3, score_thresh=0.05, nms_thresh=0.6, max_detections=100)
    det = detect_image(*detection_inputs(), image_size=(32, 32), cfg=cfg)
    # Sorted by score: sqrt(.9·.8) = sqrt(.72), sqrt(.7·.9) = sqrt(.63), sqrt(.1·.1) = .1
    torch.testing.assert_close(det["scores"], torch.tensor([math.sqrt(0.72), math.sqrt(0.63), 0.1]))
    assert det["labels"].tolist() == [1, 2, 3]
    assert det["loc_index"].tolist() == [0, 2, 4]
    expected_boxes = torch.tensor([[0.0, 0, 12, 12], [0, 0, 12, 12], [4, 4, 12, 12]])
    torch.testing.assert_close(det["boxes"], expected_boxes)


def test_detect_image_clips_to_a_small_image_and_caps_detections():
    cfg = FCOSConfig(num_classes=3, max_detections=2)
    det = detect_image(*detection_inputs(), image_size=(10, 11), cfg=cfg)  # (H, W)
    assert det["labels"].tolist() == [1, 2]  # the two best, the third is cut by the cap
    # (0,0,12,12) clipped to W = 11, H = 10.
    expected = torch.tensor([[0.0, 0, 11, 10], [0, 0, 11, 10]])
    torch.testing.assert_close(det["boxes"], expected)


def test_detect_image_pre_nms_topk_per_level():
    # Keep 1 candidate per level: level 0 keeps loc 3 class 2 (p .95 · ctr .99, highest
    # product), whose box is empty and dropped; level 1 keeps loc 4.
    cfg = FCOSConfig(num_classes=3, pre_nms_topk=1)
    det = detect_image(*detection_inputs(), image_size=(32, 32), cfg=cfg)
    assert det["loc_index"].tolist() == [4]
    assert det["labels"].tolist() == [3]


def test_detect_image_with_nothing_above_threshold():
    cls, box, ctr, locations, loc_stride, level_sizes = detection_inputs()
    cfg = FCOSConfig(num_classes=3)
    det = detect_image(
        torch.full_like(cls, -10.0), box, ctr, locations, loc_stride, level_sizes, (32, 32), cfg
    )
    assert det["boxes"].shape == (0, 4)
    assert det["scores"].shape == det["labels"].shape == det["loc_index"].shape == (0,)


# ---------------------------------------------------------------------------------------
# Head
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("prior", [0.01, 0.2])
def test_fcos_head_shapes_and_prior_bias(prior):
    cfg = FCOSConfig(num_classes=3, num_convs=2, strides=(8, 16, 32), prior_prob=prior)
    head = FCOSHead(cfg, in_channels=16)
    sizes = [(8, 12), (4, 6), (2, 3)]
    out = head([torch.randn(2, 16, h, w) for h, w in sizes])
    for i, (h, w) in enumerate(sizes):
        assert out["cls_logits"][i].shape == (2, 3, h, w)
        assert out["box_reg"][i].shape == (2, 4, h, w)
        assert out["centerness"][i].shape == (2, 1, h, w)
        assert out["box_tower"][i].shape == (2, 16, h, w)
        assert (out["box_reg"][i] >= 0).all()  # ReLU on normalised distances
    # −log((1 − π)/π): 0.01 → −4.595..., so every class starts at probability π.
    expected = torch.full((3,), -math.log((1 - prior) / prior))
    torch.testing.assert_close(head.cls_logits.bias.data, expected)
    assert (head.box_reg.bias == 0).all() and (head.centerness.bias == 0).all()


def test_fcos_head_exp_when_targets_not_normalised():
    cfg = FCOSConfig(num_classes=2, num_convs=1, strides=(8,), norm_reg_targets=False)
    torch.manual_seed(0)  # unseeded, about 1 draw in 75 strays past the 0.2 tolerance
    head = FCOSHead(cfg, in_channels=8)
    out = head([torch.randn(1, 8, 3, 3)])
    # Zero-bias, std-0.01 weights: exp(≈0) ≈ 1, strictly positive everywhere.
    assert (out["box_reg"][0] > 0).all()
    torch.testing.assert_close(out["box_reg"][0], torch.ones(1, 4, 3, 3), atol=0.2, rtol=0)
