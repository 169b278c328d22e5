"""Our `coco_r50_1x` model vs AdelaiDet's own BlendMask R_50_1x, on the same weights.

tests/data/adelaidet/ holds what AdelaiDet computed (record_adelaidet.py, run outside this
repository with detectron2 + AdelaiDet) on three real photos with deterministic random
weights: boxes, scores, classes, masks, bases — and the shape and sha256 of every weight.
Here the same weights are rebuilt from the seed (tests/adelaidet_recipe.py), saved as a
detectron2-style checkpoint, converted by `convert_adelaidet`, loaded as any checkpoint of
ours, and run on the same photos at the same size.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from adelaidet_recipe import random_weights

from blendmask_edu.engine.checkpoint import model_from_checkpoint
from blendmask_edu.engine.convert_adelaidet import convert_adelaidet

DATA = Path(__file__).parent / "data" / "adelaidet"


def photo(name: str) -> np.ndarray:
    """The photo as record_adelaidet.py gave it to AdelaiDet: half size, [H, W, 3] uint8."""
    import skimage.data

    return getattr(skimage.data, name)()[::2, ::2].copy()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """AdelaiDet-format checkpoint of the recorded weights → converted → (model, manifest)."""
    manifest = json.loads((DATA / "weights.json").read_text())
    shapes = {k: tuple(v["shape"]) for k, v in manifest["keys"].items()}
    weights = random_weights(shapes, manifest["seed"])
    differ = [
        k
        for k, v in weights.items()
        if hashlib.sha256(v.tobytes()).hexdigest() != manifest["keys"][k]["sha256"]
    ]
    assert not differ, f"the recipe no longer rebuilds AdelaiDet's weights: {differ[:5]}"
    tmp = tmp_path_factory.mktemp("adelaidet")
    src, dst = tmp / "model_final.pth", tmp / "converted.pt"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in weights.items()}}, src)
    del weights
    convert_adelaidet(src, dst, config=manifest["config"])
    src.unlink()
    model, cfg, categories = model_from_checkpoint(dst)
    return model, cfg, categories


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.mark.slow
def test_ours_reproduces_adelaidet_on_photos(converted):
    model, cfg, categories = converted
    assert len(categories) == 80 and categories[0]["name"] == "person"
    reference = np.load(DATA / "outputs.npz")
    records = json.loads((DATA / "outputs.json").read_text())
    for rec in records:
        name = rec["image"]
        rgb = photo(name)  # [H, W, 3] uint8, as AdelaiDet saw it (in BGR)
        image = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0
        with torch.no_grad():
            out = model.run([image])
            res = model.postprocess(out)[0]
        boxes, scores = reference[f"{name}/boxes"], reference[f"{name}/scores"]
        assert len(res["boxes"]) == len(boxes), name
        # classes: AdelaiDet's 0..79, ours 1..80
        np.testing.assert_array_equal(res["labels"].numpy() - 1, reference[f"{name}/classes"])
        np.testing.assert_allclose(res["boxes"].numpy(), boxes, rtol=1e-3, atol=1e-2)
        np.testing.assert_allclose(res["scores"].numpy(), scores, rtol=1e-4, atol=1e-5)
        bases = out["masks"][0]["bases"].numpy()  # [K, Hp/4, Wp/4]
        ref_bases = reference[f"{name}/bases"]
        assert bases.shape == ref_bases.shape
        assert np.abs(bases - ref_bases).max() < 1e-3, name  # bases are ±4 here
        ref_masks = mask_utils.decode(rec["masks_rle"]).transpose(2, 0, 1)  # [N, H, W]
        ours = (res["masks"] >= 0.5).numpy()
        ious = [mask_iou(a, b) for a, b in zip(ours, ref_masks.astype(bool))]
        assert min(ious) >= 0.99, (name, min(ious))
