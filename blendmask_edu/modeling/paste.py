"""Paste box-relative R×R masks back into the image (the last step of every mask branch).

A detection's mask is predicted on an R×R grid laid over its box. To put it in the image,
every image pixel inside the box asks: where am I in the box, in [−1, 1]²? and samples the
R×R grid there bilinearly (`grid_sample`, align_corners=False: pixel centers at +0.5).
Only the pixels of the box are computed, one detection at a time.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def paste_masks(
    masks: torch.Tensor,  # [N, R, R] probabilities in box coordinates
    boxes: torch.Tensor,  # [N, 4] xyxy in image pixels
    image_size: tuple[int, int],  # (H, W)
) -> torch.Tensor:
    """→ [N, H, W] probabilities (0 outside each box)."""
    H, W = image_size
    out = masks.new_zeros((masks.shape[0], H, W))
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        # integer pixel range covered by the box, clipped to the image
        c0, c1 = max(int(math.floor(x0)), 0), min(int(math.ceil(x1)), W)
        r0, r1 = max(int(math.floor(y0)), 0), min(int(math.ceil(y1)), H)
        if c1 <= c0 or r1 <= r0:
            continue
        xs = (torch.arange(c0, c1, device=masks.device) + 0.5 - x0) / max(x1 - x0, 1e-6)
        ys = (torch.arange(r0, r1, device=masks.device) + 0.5 - y0) / max(y1 - y0, 1e-6)
        gy, gx = torch.meshgrid(ys * 2 - 1, xs * 2 - 1, indexing="ij")  # [h, w] each in [-1, 1]
        grid = torch.stack([gx, gy], dim=-1)[None].to(masks.dtype)  # [1, h, w, 2]
        crop = F.grid_sample(masks[i][None, None], grid, align_corners=False)  # [1, 1, h, w]
        out[i, r0:r1, c0:c1] = crop[0, 0]
    return out


# At COCO's 800×1333, [100, H, W] float32 is 426 MB per image: paste a few detections at a
# time and keep one bit per pixel (the evaluation thresholds at 0.5 anyway).
PASTE_CHUNK = 16  # detections per chunk: 16 × 800 × 1333 × 4 B = 68 MB of float at a time


def paste_masks_in_chunks(
    masks: torch.Tensor,  # [N, R, R] probabilities in box coordinates
    boxes: torch.Tensor,  # [N, 4] xyxy in image pixels
    image_size: tuple[int, int],  # (H, W)
    chunk_size: int = PASTE_CHUNK,
    threshold: float = 0.5,
):
    """Yield the binary pasted masks `[n, H, W]` bool, n ≤ `chunk_size` detections at a time
    (in order): `paste_masks(...) > threshold` in bounded memory."""
    for start in range(0, masks.shape[0], chunk_size):
        end = start + chunk_size
        yield paste_masks(masks[start:end], boxes[start:end], image_size) > threshold


def paste_masks_binary(
    masks: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int], threshold: float = 0.5
) -> torch.Tensor:
    """→ [N, H, W] bool: `paste_masks(...) > threshold`, one byte per pixel instead of four
    and never more than `PASTE_CHUNK` detections of float at a time."""
    chunks = list(paste_masks_in_chunks(masks, boxes, image_size, threshold=threshold))
    if not chunks:
        return torch.zeros((0, *image_size), dtype=torch.bool, device=masks.device)
    return torch.cat(chunks)
