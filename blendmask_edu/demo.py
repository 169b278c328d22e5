"""`make demo`: the whole story on the embedded shapes data, on a CPU in minutes.

1. generate shapes train (1000 images, seed 0) and val (200 images, seed 1), 128×128
2. train the `shapes` preset BlendMask (time budget; CUDA when present)
3. evaluate on val with COCO AP (box and mask) → eval.json
4. pictures: predictions.png, bases.png, attention.png
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402

from .config import shapes_preset  # noqa: E402
from .data.coco import CocoInstances  # noqa: E402
from .data.shapes import make_shapes  # noqa: E402
from .data.transforms import build_transforms  # noqa: E402
from .engine.trainer import CHECKPOINT, train  # noqa: E402


def ensure_shapes(path: Path, num_images: int, seed: int, image_size: int = 128) -> Path:
    if not (path / "annotations.json").exists():
        make_shapes(path, num_images, image_size, seed)
    return path


def write_pictures(model, dataset, out: Path, num_images: int = 8) -> None:
    from .viz.blendmask_figures import gt_crop_for, plot_attention_grid, plot_bases
    from .viz.overlay import predictions_grid

    model.eval()
    samples = [dataset[i] for i in range(num_images)]
    images = [im for im, _ in samples]
    targets = [t for _, t in samples]
    with torch.inference_mode():
        run = model.run(images)
        results = model.postprocess(run)
    names = dataset.class_names
    fig = predictions_grid(images, results, targets, names, score_thresh=0.5)
    fig.savefig(out / "predictions.png", dpi=110)
    fig = plot_bases(images, [m["bases"] for m in run["masks"]])
    fig.savefig(out / "bases.png", dpi=110)
    rows = []
    R = run["masks"][0]["masks"].shape[-1]
    for b in range(num_images):
        if len(results[b]["boxes"]) and len(rows) < 6:
            box = results[b]["boxes"][0]
            rows.append(
                {
                    "image": images[b],
                    "det": results[b],
                    "intermediates": run["masks"][b],
                    "index": 0,
                    "gt_mask": gt_crop_for(box, targets[b], R),
                }
            )
    if rows:
        fig = plot_attention_grid(rows, names)
        fig.savefig(out / "attention.png", dpi=110)


def run_demo(output_dir="runs/demo", time_budget_min=None, device="auto") -> dict:
    start = time.time()
    out = Path(output_dir)
    train_dir = ensure_shapes(out / "data" / "shapes_train", 1000, seed=0)
    val_dir = ensure_shapes(out / "data" / "shapes_val", 200, seed=1)
    cfg = shapes_preset()
    cfg.train.device = device
    if time_budget_min is not None:
        cfg.train.time_budget_min = time_budget_min
    results = train(cfg, train_dir, val_dir, out)

    from .engine.checkpoint import model_from_checkpoint

    model, cfg, _ = model_from_checkpoint(out / CHECKPOINT, "cpu")
    val = CocoInstances(val_dir, build_transforms(cfg.data, train=False))
    write_pictures(model, val, out)
    minutes = (time.time() - start) / 60
    print("\n=== blendmask_edu demo ===")
    print(
        f"mask AP {results['segm']['AP']:.3f}  (AP50 {results['segm']['AP50']:.3f})   "
        f"box AP {results['bbox']['AP']:.3f}   on 200 val images, in {minutes:.1f} min"
    )
    print(f"metrics: {out / 'eval.json'}   log: {out / 'metrics.jsonl'}")
    print(f"pictures: {out / 'predictions.png'}, {out / 'bases.png'}, {out / 'attention.png'}")
    (out / "demo_summary.json").write_text(json.dumps({"minutes": minutes, **results}) + "\n")
    return results
