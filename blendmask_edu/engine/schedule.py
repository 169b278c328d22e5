"""Optimiser and learning-rate schedule: linear warmup, then step decay or cosine.

    lr(it) = base_lr · warmup(it) · decay(it)
    warmup(it) = f + (1 − f)·it/T_w  for it < T_w, else 1         (Goyal et al. 2017)
    decay(it)  = γ^(number of steps ≤ it)                          ("step")
               = ½·(1 + cos(π·it/T))                               ("cosine", T = total iters)

`total_iters` is a one-element list so that a time budget can set it once the speed of the
machine is known (the trainer does this); it is saved in the checkpoint.
"""

from __future__ import annotations

import bisect
import math

import torch
from torch import nn

from ..config import OptimConfig


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """No weight decay on biases and normalisation parameters (1-D tensors); the pretrained
    backbone body (`model.backbone.body`) learns at `lr · backbone_lr_mult`, BlendMask's top
    layer (`model.mask_branch.top`, the attention conv of §3.4) at `lr · top_lr_mult`. The top
    layer gets groups of its own only when its factor is not 1, so the groups (and checkpoints)
    of every other run keep their layout. Build it after moving the model to its device (fused
    updates on CUDA)."""
    body = getattr(getattr(model, "backbone", None), "body", None)
    top = getattr(getattr(model, "mask_branch", None), "top", None)
    part_of = {id(p): "body" for p in body.parameters()} if body is not None else {}
    if top is not None and cfg.top_lr_mult != 1.0:
        part_of.update({id(p): "top" for p in top.parameters()})
    lr_mult = {"body": cfg.backbone_lr_mult, "rest": 1.0, "top": cfg.top_lr_mult}
    groups = []
    for part in ("body", "rest", "top"):
        for decay in (True, False):
            params = [
                p
                for p in model.parameters()
                if p.requires_grad and part_of.get(id(p), "rest") == part and (p.ndim > 1) == decay
            ]
            if params:
                groups.append({"params": params, "lr": cfg.lr * lr_mult[part],
                               "weight_decay": cfg.weight_decay if decay else 0.0})  # fmt: skip
    # On CUDA one fused kernel updates every parameter (instead of one launch per tensor).
    fused = True if all(p.is_cuda for g in groups for p in g["params"]) else None
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=fused)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused)
    raise ValueError(f"optim.name: unknown optimiser {cfg.name!r}; choose 'sgd' or 'adamw'")


def lr_factor(it: int, cfg: OptimConfig, total_iters: int) -> float:
    warm = 1.0
    if it < cfg.warmup_iters:
        warm = cfg.warmup_factor + (1 - cfg.warmup_factor) * it / cfg.warmup_iters
    if cfg.schedule == "step":
        return warm * cfg.gamma ** bisect.bisect_right(list(cfg.steps), it)
    if cfg.schedule == "cosine":
        progress = min(it / max(total_iters, 1), 1.0)
        return warm * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"optim.schedule: unknown schedule {cfg.schedule!r}; 'step' or 'cosine'")


def build_scheduler(optimizer, cfg: OptimConfig, total_iters: list[int]):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(it, cfg, total_iters[0])
    )
