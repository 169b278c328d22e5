"""Joint image + target transforms: resize by the shortest side, horizontal flip.

Every transform is a callable `(image, target) -> (image, target)` where `image` is a
float `[3, H, W]` tensor and `target` the dict made by `CocoInstances` (boxes `[N, 4]`
xyxy, masks `[N, H, W]`, size `(H, W)`). `target` may be None (inference on a bare image).

Randomness comes from Python's `random` module, so `random.seed(k)` makes a run repeatable
and PyTorch's DataLoader seeds it differently in each worker. Pixel normalisation is not
done here: images stay in [0, 1] and the model normalises them.
"""

from __future__ import annotations

import random

import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from blendmask_edu.config import DataConfig


class Compose:
    """Apply transforms one after the other."""

    def __init__(self, transforms: list):
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: dict | None = None):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Scale so the short side is `min_size`, unless the long side would pass `max_size`."""
    scale = min_size / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


class ResizeShortestSide:
    """Resize keeping the aspect ratio; the short side is drawn from `min_sizes` per call.

    Image: bilinear (antialiased when shrinking). Masks: nearest neighbour, so they stay
    binary. Boxes: scaled by the same x and y factors as the pixels.
    """

    def __init__(self, min_sizes: tuple[int, ...], max_size: int):
        self.min_sizes = tuple(min_sizes)
        self.max_size = max_size

    def __call__(self, image: torch.Tensor, target: dict | None = None):
        height, width = image.shape[-2:]
        new_h, new_w = resized_shape(height, width, random.choice(self.min_sizes), self.max_size)
        image = F.resize(image, [new_h, new_w], InterpolationMode.BILINEAR, antialias=True)
        if target is None:
            return image, None
        target = dict(target)
        scale = torch.tensor([new_w / width, new_h / height] * 2)  # [4] for x1, y1, x2, y2
        target["boxes"] = target["boxes"] * scale  # [N, 4]
        if "masks" in target:
            # NEAREST_EXACT samples each output pixel at its centre (no half-pixel shift).
            target["masks"] = F.resize(
                target["masks"], [new_h, new_w], InterpolationMode.NEAREST_EXACT
            )  # [N, new_h, new_w]
        target["size"] = torch.tensor([new_h, new_w], dtype=torch.int64)
        return image, target

    def __repr__(self) -> str:
        return f"ResizeShortestSide(min_sizes={self.min_sizes}, max_size={self.max_size})"


def flip(image: torch.Tensor, target: dict | None, dim: int):
    """Mirror along `dim` (−1: left↔right, −2: top↔bottom); boxes and masks follow the image."""
    size = image.shape[dim]
    image = image.flip(dim)  # [3, H, W]
    if target is None:
        return image, None
    target = dict(target)
    x1, y1, x2, y2 = target["boxes"].unbind(-1)  # each [N]
    # A pixel row/column i ↦ size − 1 − i, so a box edge at coordinate c ↦ size − c.
    if dim == -1:
        x1, x2 = size - x2, size - x1
    else:
        y1, y2 = size - y2, size - y1
    target["boxes"] = torch.stack([x1, y1, x2, y2], dim=-1)  # [N, 4]
    if "masks" in target:
        target["masks"] = target["masks"].flip(dim)  # [N, H, W]
    return image, target


class RandomHorizontalFlip:
    """Mirror left↔right with probability `p`; boxes and masks follow the image."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image: torch.Tensor, target: dict | None = None):
        if random.random() >= self.p:
            return image, target
        return flip(image, target, dim=-1)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomVerticalFlip:
    """Mirror top↔bottom with probability `p` (only for data whose classes do not care)."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image: torch.Tensor, target: dict | None = None):
        if random.random() >= self.p:
            return image, target
        return flip(image, target, dim=-2)

    def __repr__(self) -> str:
        return f"RandomVerticalFlip(p={self.p})"


def build_transforms(data_cfg: DataConfig, train: bool) -> Compose:
    """Multi-scale resize + flip for training; one fixed-scale resize for testing."""
    if train:
        steps = [
            ResizeShortestSide(data_cfg.train_min_sizes, data_cfg.train_max_size),
            RandomHorizontalFlip(data_cfg.hflip_prob),
        ]
        if data_cfg.vflip_prob > 0:
            steps.append(RandomVerticalFlip(data_cfg.vflip_prob))
        return Compose(steps)
    return Compose([ResizeShortestSide((data_cfg.test_min_size,), data_cfg.test_max_size)])
