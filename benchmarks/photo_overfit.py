"""The `photo` preset on real photos: overfit four of scikit-image's sample photos.

scikit-image ships a few photos inside its wheel (no download): the astronaut, a coffee cup,
Chelsea the cat, a rocket on its pad. `make_photo_set` writes them as a COCO set with masks
drawn by hand as polygons (below: rough outlines, a few pixels off, as a quick labelme session
would give). Training on it and evaluating on the same images measures what the preset costs
per step on real photo sizes and that it can learn them (an overfit: AP near 1 says the
pipeline works on photos, not that it generalises).

    pip install scikit-image
    python benchmarks/photo_overfit.py --iters 300 --batch-size 2 [--device cpu]

Prints the seconds per step (wall clock, median of the logged steps; and CPU seconds, which
stay meaningful on a shared machine) and the box/mask AP at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = ["person", "helmet", "spacecraft", "cup", "saucer", "spoon", "cat", "tower"]


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 32) -> list[tuple]:
    return [
        (cx + rx * math.cos(2 * math.pi * i / n), cy + ry * math.sin(2 * math.pi * i / n))
        for i in range(n)
    ]


# image name in skimage.data → [(category, polygon [(x, y), ...])], drawn on the originals.
# fmt: off
OBJECTS = {
    "astronaut": [
        ("person", [(155, 25), (215, 12), (290, 40), (300, 140), (300, 190), (345, 270),
                    (362, 340), (362, 512), (22, 512), (22, 330), (40, 270), (110, 205),
                    (160, 160)]),
        ("helmet", _ellipse(398, 440, 118, 100)),
        ("spacecraft", [(398, 0), (432, 0), (440, 45), (455, 60), (458, 210), (452, 262),
                        (370, 262), (355, 225), (378, 190), (380, 80), (392, 45)]),
    ],
    "coffee": [
        ("saucer", _ellipse(278, 232, 202, 152)),
        ("cup", [(178, 45), (215, 22), (300, 16), (372, 25), (405, 60), (410, 140),
                 (385, 215), (330, 265), (260, 280), (240, 300), (200, 300), (195, 240),
                 (180, 150)]),
        ("spoon", [(398, 70), (420, 68), (412, 130), (385, 230), (405, 270), (398, 310),
                   (365, 328), (332, 315), (328, 275), (350, 245), (378, 225), (395, 130)]),
    ],
    "chelsea": [
        ("cat", [(30, 0), (390, 0), (375, 60), (365, 180), (335, 260), (300, 300),
                 (0, 300), (0, 20)]),
    ],
    "rocket": [
        ("spacecraft", [(322, 126), (312, 150), (308, 180), (310, 400), (336, 400),
                        (336, 180), (332, 150)]),
        ("tower", [(195, 122), (205, 122), (206, 190), (212, 400), (172, 400), (185, 190)]),
        ("tower", [(443, 122), (452, 122), (458, 190), (472, 400), (432, 400), (440, 190)]),
    ],
}
# fmt: on


def make_photo_set(out_dir: str | Path) -> Path:
    """Write OUT/images/*.png and OUT/annotations.json (COCO polygons); return OUT."""
    import skimage.data

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    cat_ids = {name: i + 1 for i, name in enumerate(CATEGORIES)}
    images, annotations = [], []
    for image_id, (name, objects) in enumerate(OBJECTS.items(), start=1):
        pixels = getattr(skimage.data, name)()  # [H, W, 3] uint8, shipped in the wheel
        h, w = pixels.shape[:2]
        Image.fromarray(pixels).save(out / "images" / f"{name}.png")
        images.append({"id": image_id, "file_name": f"{name}.png", "height": h, "width": w})
        for category, polygon in objects:
            xy = np.clip(np.asarray(polygon, dtype=float), 0, [w - 1, h - 1])  # [P, 2]
            x0, y0 = xy.min(0)
            x1, y1 = xy.max(0)
            area = 0.5 * abs(
                np.dot(xy[:, 0], np.roll(xy[:, 1], 1)) - np.dot(xy[:, 1], np.roll(xy[:, 0], 1))
            )
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat_ids[category],
                    "segmentation": [xy.round(1).ravel().tolist()],
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "area": float(area),
                    "iscrowd": 0,
                }
            )
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for n, i in cat_ids.items()],
    }
    (out / "annotations.json").write_text(json.dumps(coco))
    return out


def main() -> None:
    from blendmask_edu.config import get_preset, set_image_size
    from blendmask_edu.engine.trainer import train

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/photo_overfit")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--image-size", type=int, default=None, help="as train --image-size")
    args = ap.parse_args()
    data = make_photo_set(Path(args.out) / "data")
    cfg = get_preset("photo")
    cfg.train.max_iters, cfg.train.batch_size, cfg.train.device = (
        args.iters,
        args.batch_size,
        args.device,
    )
    cfg.train.log_period, cfg.train.checkpoint_period = 10, args.iters
    cfg.optim.warmup_iters = min(cfg.optim.warmup_iters, args.iters // 5)
    if args.image_size:
        set_image_size(cfg, args.image_size)
    cpu0 = time.process_time()  # CPU seconds of all threads: the cost on a machine shared by others
    results = train(cfg, data, data, Path(args.out) / "run")
    cpu = time.process_time() - cpu0
    log = [json.loads(line) for line in (Path(args.out) / "run" / "metrics.jsonl").open()]
    steps = [r["sec_per_iter"] for r in log if "sec_per_iter" in r]
    row = {
        "iters": args.iters,
        "batch_size": args.batch_size,
        "image_size": args.image_size or cfg.data.train_min_sizes,
        "sec_per_iter_median": round(statistics.median(steps), 3),  # wall clock
        "cpu_sec_per_iter": round(cpu / args.iters, 2),  # incl. the final evaluation (4 images)
        **{f"box_{k}": round(results["bbox"][k], 3) for k in ("AP", "AP50")},
        **{f"mask_{k}": round(results["segm"][k], 3) for k in ("AP", "AP50", "AP75")},
    }
    print("RESULT " + json.dumps(row))


if __name__ == "__main__":
    main()
