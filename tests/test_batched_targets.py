"""The batched targets (fcos/targets_batched.py, targets_batched.py) equal the per-image
references (fcos/targets.py, bases.py, mask_branch.py) exactly: on seeded random batches,
empty images, an all-empty batch, crowded images with equal-area ties, and mixed sizes."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from blendmask_edu.modeling.bases import semantic_targets
from blendmask_edu.modeling.fcos.head import compute_locations, level_of_locations
from blendmask_edu.modeling.fcos.targets import fcos_targets, level_size_ranges
from blendmask_edu.modeling.fcos.targets_batched import (
    PaddedTargets,
    assign_batch,
    fcos_targets_batched,
    pad_targets,
    to_slots,
)
from blendmask_edu.modeling.mask_branch import mask_targets, positive_instances
from blendmask_edu.modeling.targets_batched import (
    crop_masks,
    mask_targets_batched,
    one_size_masks,
    positive_instances_batched,
    semantic_targets_batched,
)

STRIDES = (8, 16, 32, 64, 128)
SIZES_OF_INTEREST = (16, 32, 64, 128)  # the shapes preset's


def grid(height: int, width: int):
    """Locations [L, 2] and levels [L] of a (padded) height × width batch."""
    sizes = [(-(-height // s), -(-width // s)) for s in STRIDES]
    return compute_locations(sizes, STRIDES), level_of_locations(sizes)


def random_target(gen: torch.Generator, G: int, size=(128, 128)) -> dict:
    """G random boxes inside an H × W image, each with a random blob mask inside its box."""
    H, W = size
    xy = torch.rand(G, 2, generator=gen) * torch.tensor([W, H]) * 0.8
    wh = 2 + torch.rand(G, 2, generator=gen) * torch.tensor([W, H]) * 0.6
    boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([W, H]))], dim=1)  # [G, 4]
    masks = torch.zeros(G, H, W, dtype=torch.uint8)
    noise = torch.rand(G, H, W, generator=gen) > 0.3
    for g, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        masks[g, int(y0) : int(y1) + 1, int(x0) : int(x1) + 1] = 1
    masks &= noise  # holes inside the box, nothing outside
    return {"boxes": boxes, "labels": torch.randint(1, 7, (G,), generator=gen), "masks": masks}


def crowded_target(size=(128, 128)) -> dict:
    """40 boxes around one point: every location near it has many candidates. Equal areas
    (16×64, 32×32, 64×16) and exact duplicates with other labels make ties for "smallest"."""
    boxes, labels = [], []
    for k in range(10):
        cx, cy = 60 + k % 3, 60 + k % 2
        for w, h in ((16, 64), (32, 32), (64, 16), (32, 32)):  # 4 boxes of one area
            boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
            labels.append(1 + len(labels) % 6)
    boxes = torch.tensor(boxes)  # [40, 4]
    masks = torch.zeros(40, *size, dtype=torch.uint8)
    for g, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
        masks[g, y0:y1, x0:x1] = 1
    return {"boxes": boxes, "labels": torch.tensor(labels), "masks": masks}


def batch(name: str) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    if name == "random":
        return [random_target(gen, G) for G in (3, 1, 7, 12, 2, 5)]
    if name == "with_empty":
        return [random_target(gen, G) for G in (0, 4, 0, 9)]
    if name == "all_empty":
        return [random_target(gen, 0) for _ in range(3)]
    if name == "crowded":
        return [crowded_target(), random_target(gen, 2), crowded_target()]
    if name == "one_image":
        return [random_target(gen, 6)]
    raise KeyError(name)


BATCHES = ("random", "with_empty", "all_empty", "crowded", "one_image")


def mixed_sizes() -> list[dict]:
    """Images of different sizes, as the multi-scale resize makes them (before padding)."""
    gen = torch.Generator().manual_seed(1)
    sizes = ((96, 128), (128, 80), (64, 64), (96, 128), (112, 100))
    return [random_target(gen, G, s) for G, s in zip((4, 3, 0, 6, 2), sizes)]


# ---------------------------------------------------------------------------------------
# pad_targets
# ---------------------------------------------------------------------------------------


def test_pad_targets_by_hand():
    a = {"boxes": torch.tensor([[1.0, 2, 3, 4]]), "labels": torch.tensor([5])}
    a["masks"] = torch.ones(1, 2, 3, dtype=torch.uint8)
    b = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    b["masks"] = torch.zeros(0, 4, 2, dtype=torch.uint8)
    c = {"boxes": torch.tensor([[0.0, 0, 1, 1], [2, 2, 3, 3]]), "labels": torch.tensor([1, 2])}
    c["masks"] = torch.ones(2, 4, 3, dtype=torch.uint8)
    gt = pad_targets([a, b, c])
    assert gt.boxes.shape == (3, 2, 4)  # G = 2
    assert gt.valid.tolist() == [[True, False], [False, False], [True, True]]
    assert gt.labels.tolist() == [[5, 0], [0, 0], [1, 2]]
    assert torch.equal(gt.boxes[0, 0], a["boxes"][0]) and (gt.boxes[0, 1] == 0).all()
    same_size = one_size_masks([a, b, c])  # H = 4, W = 3: the largest of each
    assert [tuple(m.shape) for m in same_size] == [(1, 4, 3), (0, 4, 3), (2, 4, 3)]
    assert same_size[2] is c["masks"]  # already the right size: left as it is
    masks = to_slots(torch.cat(same_size), gt.valid)  # [B, G, H, W]
    assert masks.shape == (3, 2, 4, 3)
    assert masks[0, 0, :2].all() and not masks[0, 0, 2:].any()  # padded at the bottom
    assert not masks[0, 1].any() and not masks[1].any() and masks[2].all()


def test_pad_targets_all_empty_keeps_one_padding_slot():
    gt = pad_targets(batch("all_empty"))
    assert gt.boxes.shape == (3, 1, 4) and gt.labels.shape == (3, 1)
    assert not gt.valid.any() and (gt.labels == 0).all()


# ---------------------------------------------------------------------------------------
# FCOS assignment
# ---------------------------------------------------------------------------------------


def assert_same_fcos_targets(locations, level, targets):
    args = (STRIDES, SIZES_OF_INTEREST, 1.5)
    ref = fcos_targets(locations, level, targets, *args)
    out = fcos_targets_batched(locations, level, pad_targets(targets), *args)
    assert torch.equal(out.labels, ref.labels)
    assert torch.equal(out.gt_index, ref.gt_index)
    torch.testing.assert_close(out.reg, ref.reg)
    torch.testing.assert_close(out.centerness, ref.centerness)
    return ref


@pytest.mark.parametrize("name", BATCHES)
def test_fcos_targets_batched_equal_the_reference(name):
    targets = batch(name)
    ref = assert_same_fcos_targets(*grid(128, 128), targets)
    num_pos = int((ref.labels > 0).sum())
    assert (num_pos == 0) == (name == "all_empty")  # the cases exercise real assignments


def test_fcos_targets_batched_mixed_sizes():
    targets = mixed_sizes()
    assert_same_fcos_targets(*grid(128, 128), targets)  # the batch padded to 128 × 128


def test_crowded_ties_go_to_the_first_smallest_box():
    # All 40 boxes have area 1024 (16×64, 32×32, 64×16): every multi-candidate location is a
    # tie, which the reference breaks by the first index; the batched version must agree.
    targets = [crowded_target()]
    locations, level = grid(128, 128)
    t = assert_same_fcos_targets(locations, level, targets)
    boxes = targets[0]["boxes"]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert len(area.unique()) == 1  # every box has area 1024: all ties
    i = ((locations[:, 0] == 60) & (locations[:, 1] == 60) & (level == 0)).nonzero().item()
    # (60, 60) on P3 (max distance ≤ 16): the 32×32 boxes centred on it, 1, 3 (k = 0) and 25,
    # 27 (k = 6), are its candidates; the first, box 1, wins.
    assert t.gt_index[0, i] == 1 and t.labels[0, i] == targets[0]["labels"][1]


def test_padding_boxes_never_win():
    # A padding slot holding a box that covers everything (valid = False) must stay unused.
    locations, level = grid(64, 64)
    ranges = torch.tensor(level_size_ranges(SIZES_OF_INTEREST, len(STRIDES)))[level]
    stride = torch.tensor(STRIDES, dtype=torch.float32)[level]
    gt = PaddedTargets(
        boxes=torch.tensor([[[40.0, 40, 56, 56], [0, 0, 64, 64]], [[0, 0, 64, 64], [0, 0, 4, 4]]]),
        labels=torch.tensor([[1, 2], [3, 4]]),
        valid=torch.tensor([[True, False], [False, False]]),
    )
    labels, reg, gt_index = assign_batch(locations, stride, ranges, gt, 1.5)
    assert set(labels[0].tolist()) == {0, 1} and set(gt_index[0].tolist()) == {-1, 0}
    assert (labels[1] == 0).all() and (gt_index[1] == -1).all() and (reg[1] == 0).all()


# ---------------------------------------------------------------------------------------
# Semantic targets
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BATCHES)
@pytest.mark.parametrize("stride", (4, 8))
def test_semantic_targets_batched_equal_the_reference(name, stride):
    targets = batch(name)
    size = (128 // stride, 128 // stride)
    ref = semantic_targets(targets, size, stride)
    out = semantic_targets_batched(targets, size, stride)
    assert out.dtype == torch.long and torch.equal(out, ref)
    if name == "crowded":  # overlapping instances: later ones on top, several labels show
        assert len(ref[0].unique()) > 3


def test_semantic_targets_batched_mixed_sizes_and_padding():
    targets = mixed_sizes()
    ref = semantic_targets(targets, (17, 18), 8)  # the feature map is larger than any mask
    assert torch.equal(semantic_targets_batched(targets, (17, 18), 8), ref)
    assert (ref[:, 16:] == 0).all() and (ref[:, :, 16:] == 0).all()  # padding: background


# ---------------------------------------------------------------------------------------
# Mask targets
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BATCHES)
def test_mask_targets_batched_equal_the_reference(name):
    targets = batch(name)
    ref = mask_targets(targets, 14)
    out = mask_targets_batched(targets, 14)
    assert out.shape == ref.shape == (sum(len(t["boxes"]) for t in targets), 14, 14)
    torch.testing.assert_close(out, ref)


def test_mask_targets_batched_mixed_sizes():
    targets = mixed_sizes()
    torch.testing.assert_close(mask_targets_batched(targets, 14), mask_targets(targets, 14))


def test_mask_targets_are_not_read_from_zero_padded_masks():
    # RoIAlign reads the edge pixel for samples in [H − 1, H]. A full 8×8 mask cropped by a
    # thin box at its bottom edge is all ones; zero-padded to 16×16 (the other image's size)
    # the bottom-right corner would read the padding and drop to 0.
    full = {"boxes": torch.tensor([[0.0, 7.2, 8.0, 8.0]]), "masks": torch.ones(1, 8, 8)}
    other = {"boxes": torch.tensor([[2.0, 2.0, 9.0, 9.0]]), "masks": torch.ones(1, 16, 16)}
    padded = crop_masks(F.pad(full["masks"], (0, 8, 0, 8)), full["boxes"], 7)
    assert padded[0, -1, -1] == 0  # what a zero-padded batch would give
    out = mask_targets_batched([full, other], 7)
    assert (out[0] == 1).all()
    torch.testing.assert_close(out, mask_targets([full, other], 7))


# ---------------------------------------------------------------------------------------
# Positive instances
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BATCHES)
@pytest.mark.parametrize("max_instances", (-1, 10))
def test_positive_instances_batched_equal_the_reference(name, max_instances):
    targets = batch(name)
    locations, level = grid(128, 128)
    t = fcos_targets(locations, level, targets, STRIDES, SIZES_OF_INTEREST, 1.5)
    fcos_out = {"targets": t, "gt": pad_targets(targets)}  # what FCOS returns
    torch.manual_seed(3)  # the same random subset when capped
    ref = positive_instances(fcos_out, targets, max_instances)
    torch.manual_seed(3)
    out = positive_instances_batched(fcos_out, max_instances)
    assert out.keys() == ref.keys()
    for key in ("batch_index", "loc_index", "gt_index", "labels"):
        assert torch.equal(out[key], ref[key]), key
    for key in ("gt_boxes", "centerness"):
        torch.testing.assert_close(out[key], ref[key])
    if max_instances > 0 and name != "all_empty":
        assert len(ref["gt_index"]) == max_instances  # the cap is exercised
