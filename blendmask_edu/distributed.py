"""Distributed-data-parallel helpers, used by the models (loss normalisers) and the loop.

They live outside `engine/` so that a model never imports the training loop
(`torchrun --nproc_per_node N -m blendmask_edu.cli train ...`).

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; we initialise the process group from them
(NCCL on CUDA, gloo on CPU). Loss normalisers (number of positives, Σ centerness) are averaged
over processes with `reduce_mean`, so the DDP-averaged gradients equal the gradients of one
process that sees the whole global batch.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


def init_from_env(device: torch.device) -> bool:
    """Join the process group when launched by torchrun; returns True when distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Average of `x` over processes (identity when not distributed)."""
    if not is_distributed():
        return x
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / dist.get_world_size()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def convert_sync_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Every BatchNorm of `model` → its synchronised version, for multi-GPU training: the
    statistics of a batch are computed over the global batch, not each process' share.

    timm's BatchNorm+activation layers (`BatchNormAct2d`, all 48 norms of EfficientNet-Lite0)
    become `SyncBatchNormAct`, activation kept; torch's own converter would turn them into plain
    `SyncBatchNorm` and silently drop the activation. timm's converter turns plain BatchNorm
    into `torch.nn.SyncBatchNorm` exactly as torch's does, so one walk over the whole model
    suffices (a second walk by torch's converter would undo the timm layers). Frozen BatchNorm
    (`freeze_bn`, `freeze_at`) has no statistics to share and is left alone. The parameters
    are the same tensors, so an optimiser built before the conversion still holds them."""
    from timm.layers import convert_sync_batchnorm as timm_convert_sync_batchnorm

    return timm_convert_sync_batchnorm(model)
