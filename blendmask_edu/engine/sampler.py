"""An infinite, deterministic, resumable batch sampler that also splits batches across DDP ranks.

Iteration `it` uses global positions [it·G, (it+1)·G) of an endless stream made of one
random permutation of the dataset per epoch (seeded by `seed + epoch`). Under DDP, rank r of W
takes the r-th slice of each global batch, so W processes together see exactly the batch
that one process would. Each item is `(index, aug_seed)`: the dataset wrapper seeds the
random augmentations with `aug_seed`, so an image is augmented the same way whether the run
was resumed or not, and whatever the number of data-loading workers.

(torch's DistributedSampler is per-epoch and cannot restart mid-epoch; this one starts at any
iteration, which is what `--resume` needs.)
"""

from __future__ import annotations

import random

import torch
from torch.utils.data import Dataset, Sampler


class InfiniteBatchSampler(Sampler):
    def __init__(
        self,
        dataset_size: int,
        global_batch: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_iter: int = 0,
    ):
        if dataset_size <= 0:
            raise ValueError("the training set is empty")
        if global_batch % world_size:
            raise ValueError(
                f"batch size {global_batch} is not divisible by {world_size} processes"
            )
        self.n, self.G, self.seed = dataset_size, global_batch, seed
        self.rank, self.W, self.start_iter = rank, world_size, start_iter
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g)}  # keep one epoch cached
        return self._perms[epoch]

    def batch(self, it: int) -> list[tuple[int, int]]:
        """This rank's items of global batch `it`: [(dataset index, augmentation seed)]."""
        local = self.G // self.W
        first = it * self.G + self.rank * local
        items = []
        for pos in range(first, first + local):
            epoch, offset = divmod(pos, self.n)
            items.append((int(self._perm(epoch)[offset]), self.seed * 1_000_003 + pos))
        return items

    def __iter__(self):
        it = self.start_iter
        while True:
            yield self.batch(it)
            it += 1


class SeededAugmentation(Dataset):
    """Wraps a dataset: `ds[(index, aug_seed)]` seeds `random` (used by the transforms)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, aug_seed = item
        random.seed(aug_seed)
        return self.dataset[index]
