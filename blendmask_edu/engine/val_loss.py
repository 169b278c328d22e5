"""Validation loss: the training loss terms on the validation set, learning nothing from it.

    model.eval()              # BatchNorm uses its running statistics and updates nothing
    with torch.no_grad():     # no graph, no gradients
        losses = model.compute_losses(images, targets)   # the same terms as in training

A training loss that keeps falling while the validation loss rises is over-fitting; both
flat is a learning rate or a data problem. Terms are averaged over the batches, weighted by
their number of images (the normalisers, e.g. the number of positives, are per batch, as in
training). The data are the val set with its test-time transforms (no flips). Memory is one
batch: only the running sums are kept, so a COCO-sized val set costs no more than a small one.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from ..data.batching import collate, move_targets


@torch.no_grad()
def validation_losses(model, dataset, device, batch_size: int = 8) -> dict[str, float]:
    """{"loss_cls": .., ..., "loss": their sum} on `dataset`; {} for a model without
    `compute_losses` (a torchvision detector in the benchmarks, say)."""
    model = getattr(model, "module", model)  # DDP wraps it
    if not hasattr(model, "compute_losses"):
        return {}
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=0)
    sums: dict[str, float] = {}
    count = 0
    for images, targets in loader:
        images = [im.to(device) for im in images]
        losses = model.compute_losses(images, move_targets(targets, device))
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + float(value) * len(images)
        count += len(images)
    model.train(was_training)
    out = {name: total / max(count, 1) for name, total in sums.items()}
    out["loss"] = sum(out.values())
    return out
