"""Transforms keep image, boxes and masks consistent; batching pads with zeros."""

from __future__ import annotations

import random

import pytest
import torch

from blendmask_edu.config import DataConfig
from blendmask_edu.data.batching import collate, pad_images, pad_masks, padded_size
from blendmask_edu.data.coco import CocoInstances
from blendmask_edu.data.transforms import (
    Compose,
    RandomHorizontalFlip,
    RandomVerticalFlip,
    ResizeShortestSide,
    build_transforms,
    resized_shape,
)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight xyxy boxes `[N, 4]` of masks `[N, H, W]` (pixel edges: max index + 1)."""
    boxes = []
    for mask in masks:
        ys, xs = torch.nonzero(mask, as_tuple=True)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return torch.tensor(boxes, dtype=torch.float32)


@pytest.fixture
def sample(tiny_coco):
    """Image 1 of the tiny dataset: [3, 40, 60] with a square and a disk."""
    return CocoInstances(tiny_coco.root)[0]


def test_boxes_of_fixture_are_tight_mask_boxes(sample):
    _, target = sample
    torch.testing.assert_close(mask_boxes(target["masks"]), target["boxes"])


@pytest.mark.parametrize(
    "hw, min_size, max_size, expected",
    [
        ((40, 60), 20, 1000, (20, 30)),  # short side → 20
        ((40, 60), 100, 120, (80, 120)),  # long side would be 150 > 120: capped
        ((60, 40), 80, 1000, (120, 80)),  # portrait
        ((10, 10), 32, 32, (32, 32)),
    ],
)
def test_resized_shape(hw, min_size, max_size, expected):
    assert resized_shape(*hw, min_size, max_size) == expected


@pytest.mark.parametrize("min_size, max_size", [(80, 1000), (100, 120), (25, 1000)])
def test_resize_keeps_masks_and_boxes_together(sample, min_size, max_size):
    image, target = sample
    new_image, new = ResizeShortestSide((min_size,), max_size)(image, target)
    h, w = resized_shape(40, 60, min_size, max_size)
    assert new_image.shape == (3, h, w)
    assert new["masks"].shape == (2, h, w) and new["masks"].dtype == torch.uint8
    assert set(new["masks"].unique().tolist()) == {0, 1}
    assert new["size"].tolist() == [h, w] and new["orig_size"].tolist() == [40, 60]
    # The box of the resized mask is the resized box, up to a pixel of rounding.
    torch.testing.assert_close(mask_boxes(new["masks"]), new["boxes"], atol=1.0, rtol=0)
    assert target["size"].tolist() == [40, 60]  # the input target is not modified


def test_resize_image_content(sample):
    image, target = sample
    flat = torch.full_like(image, 0.25)
    resized, _ = ResizeShortestSide((80,), 1000)(flat, target)
    torch.testing.assert_close(resized, torch.full((3, 80, 120), 0.25))


def test_resize_draws_min_size_per_call(sample):
    image, target = sample
    resize = ResizeShortestSide((20, 30, 40), 1000)
    random.seed(0)
    heights = [resize(image, target)[0].shape[1] for _ in range(30)]
    assert set(heights) == {20, 30, 40}
    random.seed(0)
    assert [resize(image, target)[0].shape[1] for _ in range(30)] == heights  # repeatable


def test_flip_keeps_masks_and_boxes_together(sample):
    image, target = sample
    flipped_image, flipped = RandomHorizontalFlip(p=1.0)(image, target)
    assert torch.equal(flipped_image, image.flip(-1))
    assert torch.equal(flipped["masks"], target["masks"].flip(-1))
    torch.testing.assert_close(mask_boxes(flipped["masks"]), flipped["boxes"])
    assert flipped["boxes"][0].tolist() == [60 - 30, 5, 60 - 10, 25]  # square x 10..30
    back_image, back = RandomHorizontalFlip(p=1.0)(flipped_image, flipped)
    assert torch.equal(back_image, image) and torch.equal(back["boxes"], target["boxes"])


def test_vertical_flip_keeps_masks_and_boxes_together(sample):
    image, target = sample  # [3, 40, 60]; the square spans y 5..25
    flipped_image, flipped = RandomVerticalFlip(p=1.0)(image, target)
    assert torch.equal(flipped_image, image.flip(-2))
    assert torch.equal(flipped["masks"], target["masks"].flip(-2))
    torch.testing.assert_close(mask_boxes(flipped["masks"]), flipped["boxes"])
    assert flipped["boxes"][0].tolist() == [10, 40 - 25, 30, 40 - 5]
    assert RandomVerticalFlip(p=0.0)(image, target)[0] is image
    cfg = DataConfig(train_min_sizes=(40,), train_max_size=100, hflip_prob=0.0, vflip_prob=1.0)
    assert torch.equal(build_transforms(cfg, train=True)(image, target)[0], image.flip(-2))


def test_flip_probability(sample):
    image, target = sample
    assert RandomHorizontalFlip(p=0.0)(image, target)[0] is image
    random.seed(1)
    flips = [
        not torch.equal(RandomHorizontalFlip(p=0.5)(image, target)[0], image) for _ in range(200)
    ]
    assert 60 < sum(flips) < 140


def test_transforms_on_empty_target_and_no_target(tiny_coco):
    image, target = CocoInstances(tiny_coco.root)[2]  # background image, 24x24
    transform = Compose([ResizeShortestSide((48,), 100), RandomHorizontalFlip(1.0)])
    new_image, new = transform(image, target)
    assert new_image.shape == (3, 48, 48)
    assert new["boxes"].shape == (0, 4) and new["masks"].shape == (0, 48, 48)
    assert transform(image, None)[1] is None


def test_build_transforms_reads_data_config(sample):
    image, target = sample
    cfg = DataConfig(train_min_sizes=(20,), train_max_size=25, test_min_size=80, hflip_prob=1.0)
    train_image, train_target = build_transforms(cfg, train=True)(image, target)
    assert train_image.shape == (3, 17, 25)  # 20 would give width 30 > 25: capped
    resized, _ = ResizeShortestSide((20,), 25)(image, target)
    assert torch.equal(train_image, resized.flip(-1))  # hflip_prob=1.0: always flipped
    torch.testing.assert_close(
        mask_boxes(train_target["masks"]), train_target["boxes"], atol=1.0, rtol=0
    )
    test_image, _ = build_transforms(cfg, train=False)(image, target)
    assert test_image.shape == (3, 80, 120)
    flipped_train = build_transforms(DataConfig(train_min_sizes=(40,), hflip_prob=1.0), True)
    assert torch.equal(flipped_train(image, target)[0], image.flip(-1))  # 40 = no resize


# --- batching --------------------------------------------------------------------------------


def test_collate_keeps_lists():
    batch = [(torch.zeros(3, 4, 5), {"a": 1}), (torch.zeros(3, 6, 2), {"a": 2})]
    images, targets = collate(batch)
    assert [im.shape for im in images] == [(3, 4, 5), (3, 6, 2)]
    assert targets == [{"a": 1}, {"a": 2}]


def test_pad_images_shapes_and_zero_padding():
    images = [torch.rand(3, 40, 60) + 0.1, torch.rand(3, 70, 33) + 0.1]
    batch, sizes = pad_images(images, size_divisibility=32)
    assert batch.shape == (2, 3, 96, 64)  # max (70, 60) rounded up to multiples of 32
    assert sizes == [(40, 60), (70, 33)]
    for b, (image, (h, w)) in enumerate(zip(images, sizes)):
        assert torch.equal(batch[b, :, :h, :w], image)
        assert batch[b, :, h:, :].abs().sum() == 0 and batch[b, :, :, w:].abs().sum() == 0


def test_pad_images_without_rounding():
    batch, sizes = pad_images([torch.ones(3, 5, 7), torch.ones(3, 6, 2)], size_divisibility=0)
    assert batch.shape == (2, 3, 6, 7) and sizes == [(5, 7), (6, 2)]
    assert padded_size([(64, 32)], 32) == (64, 32)  # already a multiple: unchanged


def test_pad_masks():
    masks = torch.ones(2, 3, 4, dtype=torch.uint8)
    padded = pad_masks(masks, (8, 8))
    assert padded.shape == (2, 8, 8) and padded.dtype == torch.uint8
    assert padded.sum() == 2 * 3 * 4 and padded[:, :3, :4].all()
    assert pad_masks(torch.zeros(0, 3, 4), (8, 8)).shape == (0, 8, 8)
