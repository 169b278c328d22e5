"""Turning a list of differently sized images into one padded batch tensor.

The DataLoader's `collate` keeps images and targets as lists (sizes differ after the
multi-scale resize); the model pads them with `pad_images` once they are on the device.
Padding goes at the bottom and right, so pixel coordinates (and boxes) do not change.
"""

from __future__ import annotations

import math

import torch


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """`[(image, target), ...]` → `([image, ...], [target, ...])`, sizes left as they are."""
    images = [image for image, _ in batch]
    targets = [target for _, target in batch]
    return images, targets


def move_targets(targets: list[dict], device) -> list[dict]:
    """Every tensor of every target dict onto `device` (image ids and such stay as they are)."""
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


def padded_size(sizes: list[tuple[int, int]], size_divisibility: int = 32) -> tuple[int, int]:
    """The largest height and width in `sizes`, each rounded up to a multiple."""
    height = max(h for h, _ in sizes)
    width = max(w for _, w in sizes)
    if size_divisibility > 1:
        height = math.ceil(height / size_divisibility) * size_divisibility
        width = math.ceil(width / size_divisibility) * size_divisibility
    return height, width


def pad_images(
    images: list[torch.Tensor], size_divisibility: int = 32
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Stack `[3, H_i, W_i]` images into a zero-padded `[B, 3, Hp, Wp]` batch.

    Returns the batch and the `(H_i, W_i)` of each image before padding (needed to crop
    predictions back). Hp, Wp are the batch maxima rounded up to `size_divisibility`, so every
    FPN stride divides them (a value <= 1 means no rounding).
    """
    image_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    height, width = padded_size(image_sizes, size_divisibility)
    batch = images[0].new_zeros((len(images), images[0].shape[0], height, width))  # [B,3,Hp,Wp]
    for b, (image, (h, w)) in enumerate(zip(images, image_sizes)):
        batch[b, :, :h, :w] = image
    return batch, image_sizes


def pad_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-pad masks `[N, H, W]` at the bottom/right to `[N, Hp, Wp]` = `size`."""
    height, width = masks.shape[-2:]
    out = masks.new_zeros((masks.shape[0], *size))  # [N, Hp, Wp]
    out[:, :height, :width] = masks
    return out
