"""The numbers `compare` reports for one finished training run, measured once and cached.

RUN/eval.json             → mask AP, AP50, AP75, APs, APm, APl; box AP
masks on the GT boxes     → mask AP with GT boxes (see gt_boxes.py)
the model                 → mask-branch and total parameters, mask-branch GFLOPs (fixed input)
timed on val images       → inference ms/img (batch 1, median after warm-up)
RUN/checkpoint_last.pt    → train s/iter (training time / iterations), iterations
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from ..data.coco import CocoInstances
from ..data.transforms import build_transforms
from ..modeling.backbone import pyramid_levels
from .checkpoint import load_checkpoint, model_from_checkpoint
from .gt_boxes import evaluate_masks_on_gt_boxes

MEASUREMENTS = "measurements.json"
FLOPS_NOTE = (
    "multiply-adds ×2 of the convolutions and matrix products of the mask branch's inference "
    "(torch.utils.flop_counter) on one 128×128 image with 8 fixed boxes of 16–72 px; "
    "RoIAlign, softmax, interpolation and element-wise ops are not counted"
)


@torch.no_grad()
def mask_branch_gflops(model, image_size: int = 128, num_boxes: int = 8) -> float:
    """GFLOPs of `mask_branch.forward_test` (masks only) on a fixed input: a zero image of
    image_size² and `num_boxes` boxes of sizes 16, 24, ... px, each detected at the P3
    location of its centre. The same input for every branch (see FLOPS_NOTE)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    device = model.pixel_mean.device
    x = torch.zeros(1, 3, image_size, image_size, device=device)
    features = model.backbone(x)
    fcos_out = model.fcos(pyramid_levels(features), [(image_size, image_size)])
    i = torch.arange(num_boxes, device=device, dtype=torch.float32)
    size = 16 + 8 * i  # [n] 16, 24, ..., box sides in pixels
    x0 = (image_size - size) * i / max(num_boxes - 1, 1)  # spread along the diagonal
    boxes = torch.stack([x0, x0, x0 + size, x0 + size], dim=1)  # [n, 4]
    p3_width = image_size // model.fcos.cfg.strides[0]
    centre = ((x0 + size / 2) // model.fcos.cfg.strides[0]).long()  # [n] P3 cell of the centre
    detections = [
        {
            "boxes": boxes,
            "labels": torch.ones(num_boxes, dtype=torch.long, device=device),
            "scores": torch.ones(num_boxes, device=device),
            "loc_index": centre * p3_width + centre,
        }
    ]
    with FlopCounterMode(display=False) as counter:
        model.mask_branch.forward_test(features, fcos_out, detections, intermediates=False)
    model.train(was_training)
    return counter.get_total_flops() / 1e9


@torch.inference_mode()
def inference_ms_per_image(model, dataset, num_images: int = 20, warmup: int = 3) -> float:
    """Median wall time of `model([image])` over the first images of `dataset`, in ms."""
    times = []
    for i in range(min(num_images + warmup, len(dataset))):
        image, _ = dataset[i]
        t0 = time.perf_counter()
        model([image])
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def measure_run(run_dir: Path, val_path, progress: bool = True) -> dict[str, float]:
    """Measure a finished run (cached in RUN/measurements.json)."""
    run_dir = Path(run_dir)
    cached = run_dir / MEASUREMENTS
    from .trainer import CHECKPOINT

    if cached.exists():
        numbers = json.loads(cached.read_text())
        if "mask_branch_gflops" not in numbers:  # measured before the FLOPs column existed
            model, _, _ = model_from_checkpoint(run_dir / CHECKPOINT, "cpu")
            numbers["mask_branch_gflops"] = mask_branch_gflops(model)
            cached.write_text(json.dumps(numbers, indent=2) + "\n")
        return numbers

    evaluation = json.loads((run_dir / "eval.json").read_text())
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    model, cfg, _ = model_from_checkpoint(run_dir / CHECKPOINT, "cpu")
    val = CocoInstances(val_path, build_transforms(cfg.data, train=False))
    segm = evaluation["segm"]
    numbers = {f"mask_{k}": segm[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    numbers["box_AP"] = evaluation["bbox"]["AP"]
    numbers["mask_AP_gt_boxes"] = evaluate_masks_on_gt_boxes(model, val, "cpu", progress=progress)[
        "AP"
    ]
    numbers["mask_branch_params"] = sum(p.numel() for p in model.mask_branch.parameters())
    numbers["total_params"] = sum(p.numel() for p in model.parameters())
    numbers["mask_branch_gflops"] = mask_branch_gflops(model)
    numbers["inference_ms_per_image"] = inference_ms_per_image(model, val)
    numbers["train_s_per_iter"] = ckpt["elapsed"] / max(ckpt["iteration"], 1)
    numbers["iterations"] = ckpt["iteration"]
    cached.write_text(json.dumps(numbers, indent=2) + "\n")
    return numbers
