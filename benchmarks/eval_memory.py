"""Peak memory of COCO evaluation on a COCO-sized workload, and the AP against the old path.

Synthetic images at 800×1333 (no pixels: only their ground truth, 8 ellipses of 4 classes
each) and synthetic model outputs — 100 detections per image, each a box and a 56×56 mask
over it, as `InstanceSegmenter(..., paste=False)` returns — go through the accumulation path
of `evaluate_model` (`CocoResults.add`: paste 16 detections at a time, encode to RLE, keep the
result entries), then COCOeval. Each dataset size runs in its own process; the peak resident
set size (VmHWM, reset between phases) is printed per phase:

    python benchmarks/eval_memory.py --images 100 400             # streamed (the evaluator)
    python benchmarks/eval_memory.py --images 2 4 --reference     # the old path, for contrast
    python benchmarks/eval_memory.py --checkpoint RUN/checkpoint_last.pt --data data/shapes_val

`--reference` keeps every image's pasted float masks [100, H, W] until the end, as
`evaluate_model` did before (`predict_dataset` + `evaluate_coco`): ≈ 426 MB per image. The
last form evaluates a trained model both ways on a real val set and checks the numbers agree.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO

from blendmask_edu.engine.coco_eval import CocoResults, evaluate_coco, evaluate_results
from blendmask_edu.modeling.paste import paste_masks

H, W = 800, 1333  # COCO's test size (short side 800, long side ≤ 1333)
GT_PER_IMAGE, DETECTIONS, R, CLASSES = 8, 100, 56, 4


def rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


def ellipse_polygon(cx, cy, rx, ry, n=32) -> list[float]:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1).ravel().round(2).tolist()


def synthetic_gt(num_images: int) -> tuple[COCO, dict]:
    """A COCO ground truth of `num_images` 800×1333 images, 8 ellipses each (polygons);
    → (COCO, {image id: [(cx, cy, rx, ry, label), ...]})."""
    rng = np.random.default_rng(0)
    images, anns, shapes = [], [], {}
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": H, "width": W})
        shapes[image_id] = []
        for _ in range(GT_PER_IMAGE):
            rx, ry = rng.uniform(15, 200, 2)
            cx, cy = rng.uniform(rx, W - rx), rng.uniform(ry, H - ry)
            label = int(rng.integers(1, CLASSES + 1))
            anns.append({
                "id": len(anns) + 1, "image_id": image_id, "category_id": label, "iscrowd": 0,
                "segmentation": [ellipse_polygon(cx, cy, rx, ry)],
                "bbox": [cx - rx, cy - ry, 2 * rx, 2 * ry], "area": math.pi * rx * ry,
            })  # fmt: skip
            shapes[image_id].append((cx, cy, rx, ry, label))
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": f"class{c}"} for c in range(1, CLASSES + 1)],
    }
    coco.createIndex()
    return coco, shapes


def synthetic_outputs(image_id: int, shapes: list) -> dict:
    """What the model returns for one image with `paste=False`: 100 detections (a jittered
    copy or two of each GT ellipse, the rest random), box masks [100, 56, 56] in [0, 1]."""
    g = torch.Generator().manual_seed(image_id)
    boxes, labels = [], []
    for k in range(DETECTIONS):
        if k < 2 * len(shapes):  # two guesses per object
            cx, cy, rx, ry, label = shapes[k % len(shapes)]
            jitter = 1 + 0.1 * torch.randn(4, generator=g)
            boxes.append([cx - rx * jitter[0], cy - ry * jitter[1],
                          cx + rx * jitter[2], cy + ry * jitter[3]])  # fmt: skip
        else:  # background guesses
            x0, y0 = float(torch.rand(1, generator=g)) * W, float(torch.rand(1, generator=g)) * H
            w, h = (10 + 300 * torch.rand(2, generator=g)).tolist()
            boxes.append([x0, y0, min(x0 + w, W), min(y0 + h, H)])
            label = int(torch.randint(1, CLASSES + 1, (1,), generator=g))
        labels.append(label)
    boxes = torch.tensor(boxes).clamp(min=0)  # [100, 4] xyxy
    scores = torch.cat([0.5 + 0.5 * torch.rand(2 * len(shapes), generator=g),
                        0.5 * torch.rand(DETECTIONS - 2 * len(shapes), generator=g)])  # fmt: skip
    # An ellipse inscribed in its box, soft-edged, plus noise: [100, R, R] probabilities.
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, R), torch.linspace(-1, 1, R), indexing="ij")
    inside = (1.2 - (xx**2 + yy**2)).clamp(0, 1)[None]  # [1, R, R]
    noise = 0.3 * torch.rand(DETECTIONS, R, R, generator=g)
    box_masks = (inside + noise).clamp(0, 1)  # [100, R, R]
    return {"image_id": image_id, "boxes": boxes, "scores": scores,
            "labels": torch.tensor(labels), "box_masks": box_masks}  # fmt: skip


def measure(num_images: int, reference: bool) -> dict:
    """Evaluate `num_images` synthetic images in this process; → one row of numbers."""
    coco, shapes = synthetic_gt(num_images)
    label_to_cat_id = {c: c for c in range(1, CLASSES + 1)}
    base = rss_mb("VmRSS")
    reset_peak()
    t0 = time.time()
    if reference:  # before: every image's pasted float masks kept until the end
        predictions = []
        for image_id in range(1, num_images + 1):
            out = synthetic_outputs(image_id, shapes[image_id])
            out["masks"] = paste_masks(out.pop("box_masks"), out["boxes"], (H, W))
            predictions.append(out)
    else:  # now: evaluate_model's accumulation path
        accumulated = CocoResults(label_to_cat_id)
        for image_id in range(1, num_images + 1):
            accumulated.add({**synthetic_outputs(image_id, shapes[image_id]), "image_size": (H, W)})
    accumulate_s = time.time() - t0
    row = {
        "images": num_images,
        "path": "reference" if reference else "streamed",
        "rss_base_mb": round(base),
        "peak_accumulate_mb": round(rss_mb("VmHWM")),
        "held_after_accumulate_mb": round(rss_mb("VmRSS") - base),
    }
    if not reference:
        entries = accumulated.results["segm"]
        row["detections"] = len(entries)
        row["rle_chars_mb"] = round(
            sum(len(e["segmentation"]["counts"]) for e in entries) / 2**20, 1
        )
        row["results_json_mb"] = round(len(json.dumps(accumulated.results)) / 2**20, 1)
    reset_peak()
    t0 = time.time()
    if reference:
        metrics = evaluate_coco(coco, predictions, label_to_cat_id)
    else:
        metrics = evaluate_results(coco, accumulated.results, accumulated.image_ids)
    row.update(
        peak_cocoeval_mb=round(rss_mb("VmHWM")),
        accumulate_s=round(accumulate_s, 1),
        cocoeval_s=round(time.time() - t0, 1),
        mask_AP=round(metrics["segm"]["AP"], 4),
        box_AP=round(metrics["bbox"]["AP"], 4),
    )
    return row


def compare_on_checkpoint(checkpoint: str, data: str, device: str) -> None:
    """A trained model on a real val set: the streamed evaluator vs the old path."""
    from blendmask_edu.data.coco import CocoInstances
    from blendmask_edu.data.transforms import build_transforms
    from blendmask_edu.engine.checkpoint import model_from_checkpoint
    from blendmask_edu.engine.evaluate import evaluate_model, predict_dataset

    model, cfg, _ = model_from_checkpoint(checkpoint, device)
    dataset = CocoInstances(data, build_transforms(cfg.data, train=False))
    t0 = time.time()
    streamed = evaluate_model(model, dataset, device, progress=False, diagnose=False)
    t1 = time.time()
    predictions = predict_dataset(model, dataset, device, progress=False)
    old = evaluate_coco(dataset.coco, predictions, dataset.label_to_cat_id, per_category=True)
    t2 = time.time()
    for iou_type in ("bbox", "segm"):
        print(f"{iou_type}: streamed AP {streamed[iou_type]['AP']:.4f} AP50 "
              f"{streamed[iou_type]['AP50']:.4f} | old path AP {old[iou_type]['AP']:.4f} "
              f"AP50 {old[iou_type]['AP50']:.4f}")  # fmt: skip
    print(
        f"all metrics equal (incl. per category): {streamed == old}; "
        f"{len(dataset)} images, streamed {t1 - t0:.1f} s, old path {t2 - t1:.1f} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, nargs="*", default=[100, 400])
    ap.add_argument("--reference", action="store_true", help="the old path (all masks kept)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one size, this process
    ap.add_argument("--checkpoint", help="compare both paths on a trained model instead")
    ap.add_argument("--data", help="the val set for --checkpoint (DIR or JSON)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        compare_on_checkpoint(args.checkpoint, args.data, args.device)
        return
    if args.child is not None:
        print(json.dumps(measure(args.child, args.reference)), flush=True)
        return
    for n in args.images:  # a fresh process per size: peaks do not carry over
        cmd = [sys.executable, __file__, "--child", str(n), "--threads", str(args.threads)]
        proc = subprocess.run(cmd + (["--reference"] if args.reference else []),
                              capture_output=True, text=True)  # fmt: skip
        if proc.returncode:
            sys.exit(proc.stderr)
        print(proc.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
