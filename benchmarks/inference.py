"""Inference time: our R-50-FPN models (FCOS + each mask branch of the zoo) vs torchvision's
Mask R-CNN R-50-FPN, in one run.

Both with random weights, one 800×800 image, the same number of threads, both forced to
return the same number of detections (score thresholds 0, 100 detections per image, so the
mask heads do equal work), warm-up runs, then the median of N timed runs. On CPU, and on CUDA
when present. Mask R-CNN is torchvision's `maskrcnn_resnet50_fpn` (1000 RPN proposals at
test time, 4-conv 14×14 mask head); ours is the `coco_r50_1x` preset — AdelaiDet's BlendMask
R_50_1x exactly (detectron2's R-50 with FrozenBN, FCOS with 4-conv towers, K=4, M=14, R=56;
tests/test_adelaidet_fidelity.py) — with each mask branch: blender, yolact (32 prototypes),
fcis (7×7 cells), roi (Mask R-CNN's 4-conv head on FCOS' boxes), and none (the detector alone).

    python benchmarks/inference.py [--size 800] [--runs 5] [--threads 2] [--branches blender,...]
                                   [--out runs/bench_inference.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from blendmask_edu.config import coco_r50_1x_preset
from blendmask_edu.modeling.segmenter import InstanceSegmenter


def ours(num_dets: int, branch: str = "blender"):
    cfg = coco_r50_1x_preset().model
    cfg.mask_branch = branch
    cfg.backbone.pretrained, cfg.backbone.weights_path = False, None
    cfg.fcos.score_thresh = 0.0  # random weights score ~0.01: keep every candidate
    cfg.fcos.max_detections = num_dets
    model = InstanceSegmenter(cfg).eval()
    # Random weights predict boxes of size ~0, which the AdelaiDet presets (clipping after
    # NMS) drop at the end: give them a few strides so that `num_dets` masks are made.
    torch.nn.init.constant_(model.fcos.head.box_reg.bias, 2.0)
    return model


def maskrcnn(num_dets: int, size: int):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    return maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=81,
        min_size=size,
        max_size=max(1333, size),
        box_score_thresh=0.0,
        box_detections_per_img=num_dets,
    ).eval()


@torch.inference_mode()
def time_model(model, image, runs: int, warmup: int, device) -> dict:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        out = model([image])
    times = []
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        out = model([image])
        sync()
        times.append(time.perf_counter() - t0)
    return {
        "median_s": statistics.median(times),
        "times": times,
        "detections": int(len(out[0]["boxes"])),
        "mask_shape": list(out[0]["masks"].shape) if "masks" in out[0] else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=800)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--detections", type=int, default=100)
    ap.add_argument("--branches", default="blender,yolact,fcis,roi,none")
    ap.add_argument("--out", default="runs/bench_inference.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    branches = [b for b in args.branches.split(",") if b]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    report = {"size": args.size, "threads": args.threads, "torch": torch.__version__}
    for device in devices:
        torch.manual_seed(0)
        image = torch.rand(3, args.size, args.size, device=device)
        row = {}
        models = [(f"ours_{b}", lambda b=b: ours(args.detections, b)) for b in branches]
        models.append(("torchvision_maskrcnn", lambda: maskrcnn(args.detections, args.size)))
        for name, build in models:
            torch.manual_seed(0)
            row[name] = time_model(build().to(device), image, args.runs, args.warmup, device)
            print(
                f"[{device.type}] {name:22s} median {row[name]['median_s'] * 1000:8.1f} ms "
                f"({row[name]['detections']} detections, masks {row[name]['mask_shape']})"
            )
        peer = row["torchvision_maskrcnn"]["median_s"]
        for b in branches:
            ratio = row[f"ours_{b}"]["median_s"] / peer
            row[f"ratio_{b}_over_maskrcnn"] = ratio
            print(
                f"[{device.type}] ours ({b}) / Mask R-CNN time = {ratio:.2f}  ({1 / ratio:.2f}× speed)"
            )
        report[device.type] = row
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
