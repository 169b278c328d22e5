"""How far above its bars does each overfit test land? One line of JSON per (branch, seed,
iteration count).

tests/test_overfit.py trains on one shapes image and asserts learned numbers (losses fell
tenfold / fivefold, box AP, mask AP, mask AP on GT boxes). A bar at the edge of what the model
reaches makes CI depend on the CPU's kernels, so each bar is set from the spread this script
measures over initialisation seeds and thread counts:

    for t in 1 2; do OMP_NUM_THREADS=$t python benchmarks/overfit_spread.py \\
        --branches none,blender,yolact,fcis,roi --seeds 0,1,2 >> spread.jsonl; done

The learning rate is constant, so one run measured at several iteration counts (--at) is the
same as separate runs of those lengths. Each line: branch, seed, threads, iteration, the test's
measured numbers and the ratios it bounds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_overfit import (  # noqa: E402  (the tests' own training and measurements)
    DETECTOR_ITERS,
    MASK_ITERS,
    ROI_MASK_ITERS,
    centerness_floor,
    grid_ceiling,
    overfit,
    shapes_image_with_instances,
)

from blendmask_edu.engine.evaluate import evaluate_model  # noqa: E402
from blendmask_edu.engine.gt_boxes import evaluate_masks_on_gt_boxes  # noqa: E402


def measure(branch: str, dataset, model, history, seed: int, t0: float) -> dict:
    first, last = history[0], history[-1]
    row = {"branch": branch, "seed": seed, "threads": torch.get_num_threads()}
    row["iters"] = len(history)
    if branch == "none":  # last/first of each loss term (the test bounds them by 1/10)
        image, target = dataset[0]  # loss_ctr: the part above its floor, as the test does
        floor = centerness_floor(model, [image, image], [target, target])
        low = {k: floor if k == "loss_ctr" else 0.0 for k in first}
        row["loss_ratio"] = {k: round((last[k] - low[k]) / (first[k] - low[k]), 4) for k in first}
    else:  # the test bounds loss_mask's ratio by 1/5
        row["mask_loss_ratio"] = round(last["loss_mask"] / first["loss_mask"], 4)
    results = evaluate_model(model, dataset, "cpu", progress=False, diagnose=False)
    row["box_AP"] = round(results["bbox"]["AP"], 4)
    if branch != "none":
        row["mask_AP"] = round(results["segm"]["AP"], 4)
        on_gt = evaluate_masks_on_gt_boxes(model, dataset, "cpu", progress=False)["AP"]
        row["mask_AP_gt_boxes"] = round(on_gt, 4)
    if branch == "yolact":
        row["grid_ceiling"] = round(grid_ceiling(dataset), 4)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--branches", default="none,blender,yolact,fcis,roi")
    p.add_argument("--seeds", default="0")
    p.add_argument(
        "--at", default=None, help="iteration counts, e.g. 300,500 (default: the test's)"
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as root:
        dataset = shapes_image_with_instances(Path(root))
        for branch in args.branches.split(","):
            default = {"none": DETECTOR_ITERS, "roi": ROI_MASK_ITERS}.get(branch, MASK_ITERS)
            at = sorted(int(a) for a in args.at.split(",")) if args.at else [default]
            for seed in map(int, args.seeds.split(",")):
                t0 = time.perf_counter()

                def observe(it, model, history, branch=branch, seed=seed, at=at, t0=t0):
                    if it in at:
                        row = measure(branch, dataset, model, history, seed, t0)
                        print(json.dumps(row), flush=True)

                overfit(branch, dataset, max(at), seed, observe)


if __name__ == "__main__":
    main()
