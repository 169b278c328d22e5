"""The numbers `compare` reports for one finished training run, measured once and cached.

RUN/eval.json             → mask AP, AP50, AP75, APs, APm, APl; box AP
masks on the GT boxes     → mask AP with GT boxes (see gt_boxes.py)
the model                 → mask-branch and total parameters
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
from .checkpoint import load_checkpoint, model_from_checkpoint
from .gt_boxes import evaluate_masks_on_gt_boxes

MEASUREMENTS = "measurements.json"


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
    if cached.exists():
        return json.loads(cached.read_text())
    from .trainer import CHECKPOINT

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
    numbers["inference_ms_per_image"] = inference_ms_per_image(model, val)
    numbers["train_s_per_iter"] = ckpt["elapsed"] / max(ckpt["iteration"], 1)
    numbers["iterations"] = ckpt["iteration"]
    cached.write_text(json.dumps(numbers, indent=2) + "\n")
    return numbers
