"""Two processes (gloo, CPU) under DDP give the gradients of one process on the global batch.

This holds because every loss normaliser (number of positives, Σ centerness) is averaged over
processes, BatchNorm statistics are frozen (`freeze_bn`), and heads use GroupNorm.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny import tiny_config
from torch.nn.parallel import DistributedDataParallel

from blendmask_edu.data.coco import CocoInstances
from blendmask_edu.modeling.segmenter import InstanceSegmenter


def _model():
    torch.manual_seed(0)
    model = InstanceSegmenter(tiny_config("blender").model)
    return model.train()


def _grads(model) -> dict:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, world: int, port: int, batch_file: str, out_file: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    images, targets = torch.load(batch_file, weights_only=False)
    half = len(images) // world
    model = DistributedDataParallel(_model())
    losses = model(
        images[rank * half : (rank + 1) * half], targets[rank * half : (rank + 1) * half]
    )
    sum(losses.values()).backward()
    if rank == 0:
        torch.save(_grads(model.module), out_file)
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_single_process_gradients(shapes_small, tmp_path):
    data = CocoInstances(shapes_small)
    samples = [data[i] for i in range(4)]
    images = [im for im, _ in samples]
    targets = [{k: t[k] for k in ("boxes", "labels", "masks")} for _, t in samples]
    batch_file, out_file = str(tmp_path / "batch.pt"), str(tmp_path / "grads.pt")
    torch.save((images, targets), batch_file)

    mp.spawn(_worker, args=(2, _free_port(), batch_file, out_file), nprocs=2, join=True)
    ddp_grads = torch.load(out_file)

    model = _model()
    losses = model(images, targets)
    assert losses["loss_mask"] > 0  # the mask branch takes part in the comparison
    sum(losses.values()).backward()
    single = _grads(model)
    assert ddp_grads.keys() == single.keys() and len(single) > 50
    for name, g in single.items():
        torch.testing.assert_close(ddp_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)
