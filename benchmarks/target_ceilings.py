"""How good can a mask branch's *targets* be? Mask AP of the ground truth passed through them.

Each branch learns to reproduce a target, so the target bounds what its masks can look like:
  * YOLACT-style: the GT mask binarised on the prototype grid (1/4 of the image,
    `fusion/yolact.downsample_masks`), upsampled back bilinearly over the whole image;
  * the blender (and FCIS-style, RoI head): the GT mask cropped by its own box at R×R and
    binarised (`mask_branch.mask_targets`), pasted back into the image (`paste_masks`).
Scored as predictions on the GT boxes (score 1) with COCOeval on a val set:

    python benchmarks/target_ceilings.py --val data/shapes_val --out docs/results/target_ceilings
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from blendmask_edu.data.coco import CocoInstances
from blendmask_edu.engine.coco_eval import evaluate_coco
from blendmask_edu.modeling.fusion.yolact import grid_masks
from blendmask_edu.modeling.mask_branch import mask_targets
from blendmask_edu.modeling.paste import paste_masks


def box_target(target: dict, R: int) -> torch.Tensor:
    """[G, H, W]: each GT mask as an R×R target over its own box, pasted back."""
    return paste_masks(
        mask_targets([target], R), target["boxes"], tuple(target["masks"].shape[-2:])
    )


def ceilings(dataset: CocoInstances, Rs: tuple[int, ...]) -> dict:
    """Mask AP on GT boxes of each kind of target, over the whole set."""
    kinds = {"1/4 grid (YOLACT-style)": lambda t: grid_masks(t["masks"])}
    kinds.update({f"R = {R} over the box": (lambda t, R=R: box_target(t, R)) for R in Rs})
    out = {}
    for name, make in kinds.items():
        predictions = []
        for image_id in dataset.image_ids:
            t = dataset.load_target(image_id)
            if len(t["boxes"]) == 0:
                continue
            masks = make(t)
            predictions.append({"image_id": image_id, "boxes": t["boxes"], "labels": t["labels"],
                                "scores": torch.ones(len(masks)), "masks": masks})  # fmt: skip
        m = evaluate_coco(dataset.coco, predictions, dataset.label_to_cat_id, ("segm",))["segm"]
        out[name] = {k: round(m[k], 4) for k in ("AP", "AP50", "AP75", "APs", "APm")}
        print(f"{name:26s} mask AP {m['AP']:.3f}  AP75 {m['AP75']:.3f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--val", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--R", type=int, nargs="*", default=[28, 56])
    args = ap.parse_args()
    dataset = CocoInstances(args.val)
    results = {
        "val": Path(args.val).name,
        "images": len(dataset),
        "ceilings": ceilings(dataset, tuple(args.R)),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ceilings.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
