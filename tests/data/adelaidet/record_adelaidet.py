"""Record AdelaiDet's own BlendMask outputs on real photos: the fixture of the fidelity test.

Runs OUTSIDE this repository's environment, with detectron2 and AdelaiDet importable (CPU is
enough; AdelaiDet's compiled ops are not used by BlendMask inference, an empty adet/_C.py
stands in for them). Nothing of AdelaiDet is copied here; this script only calls it:

    PYTHONPATH=/path/to/detectron2:/path/to/AdelaiDet:/path/to/blendmask_edu/tests \\
        python tests/data/adelaidet/record_adelaidet.py --adelaidet /path/to/AdelaiDet \\
        --checkpoint-dir /tmp/adelaidet_ckpt

1. builds `configs/BlendMask/R_50_1x.yaml` with AdelaiDet's code and fills it with the
   deterministic random weights of tests/adelaidet_recipe.py (seed below);
2. saves them with detectron2's own `DetectionCheckpointer` (the file convert-adelaidet reads);
3. runs the model on scikit-image's bundled photos at half size (no other resize) and writes
   boxes, scores, classes, per-instance masks (RLE) and the bases to outputs.npz/outputs.json,
   and every weight's shape and sha256 to weights.json (the test rebuilds the same weights).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import torch
from adelaidet_recipe import random_weights  # tests/ on PYTHONPATH

SEED = 19
CONFIG = "R_50_1x"
IMAGES = ("astronaut", "coffee", "chelsea")  # skimage.data.<name>()


def photo(name: str) -> np.ndarray:
    """scikit-image's bundled photo at half size (every other pixel: exact everywhere, and a
    fast test), [H, W, 3] uint8 RGB. The test reads the same pixels."""
    import skimage.data

    return getattr(skimage.data, name)()[::2, ::2].copy()


HERE = Path(__file__).resolve().parent


def build_adelaidet_model(adelaidet_dir: Path, config: str = CONFIG):
    from adet.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(str(adelaidet_dir / "configs" / "BlendMask" / f"{config}.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BLENDMASK.VISUALIZE = True  # the outputs then include the bases
    return build_model(cfg).eval(), cfg


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--adelaidet", required=True, type=Path)
    p.add_argument("--checkpoint-dir", required=True, type=Path)
    p.add_argument("--config", default=CONFIG, help="another BlendMask config (ad-hoc checks)")
    p.add_argument("--out-dir", type=Path, default=HERE)
    p.add_argument("--keys-only", action="store_true", help="write keys_<config>.json only")
    args = p.parse_args()
    from detectron2.checkpoint import DetectionCheckpointer

    model, cfg = build_adelaidet_model(args.adelaidet, args.config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if args.keys_only:  # every key and shape, for the key-table tests of other configs
        out = args.out_dir / f"keys_{args.config}.json"
        out.write_text(json.dumps({k: list(s) for k, s in shapes.items()}) + "\n")
        return
    weights = random_weights(shapes, SEED)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    args.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    DetectionCheckpointer(model, save_dir=str(args.checkpoint_dir)).save(f"adelaidet_{args.config}")
    manifest = {
        "config": args.config,
        "seed": SEED,
        "recipe": "tests/adelaidet_recipe.py",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "keys": {
            k: {"shape": list(v.shape), "sha256": hashlib.sha256(v.tobytes()).hexdigest()}
            for k, v in weights.items()
        },
    }
    (args.out_dir / "weights.json").write_text(json.dumps(manifest, indent=1) + "\n")

    arrays, records = {}, []
    for name in IMAGES:
        rgb = photo(name)  # [H, W, 3] uint8
        bgr = torch.from_numpy(rgb[:, :, ::-1].copy()).permute(2, 0, 1).float()  # [3, H, W]
        H, W = rgb.shape[:2]
        with torch.no_grad():
            out = model([{"image": bgr, "height": H, "width": W}])[0]
        inst = out["instances"]
        masks = inst.pred_masks.numpy().astype(np.uint8)  # [N, H, W]
        rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
        records.append(
            {
                "image": name,
                "size": [H, W],
                "masks_rle": [{"size": r["size"], "counts": r["counts"].decode()} for r in rles],
            }
        )
        arrays[f"{name}/boxes"] = inst.pred_boxes.tensor.numpy()
        arrays[f"{name}/scores"] = inst.scores.numpy()
        arrays[f"{name}/classes"] = inst.pred_classes.numpy()
        arrays[f"{name}/bases"] = out["bases"][0][0].numpy()  # [K, Hp/4, Wp/4]
        print(f"{name}: {len(inst)} detections, bases {tuple(out['bases'][0].shape)}")
    np.savez_compressed(args.out_dir / "outputs.npz", **arrays)
    (args.out_dir / "outputs.json").write_text(json.dumps(records) + "\n")


if __name__ == "__main__":
    main()
