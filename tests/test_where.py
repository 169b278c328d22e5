"""Where a mask branch loses (issue 17): the shapes' hidden fractions replayed from the seed,
the oracle attention fit on a hand-made case, and both analyses end to end on a tiny model."""

from __future__ import annotations

import json

import torch
from tiny import tiny_config

from blendmask_edu.data.coco import CocoInstances
from blendmask_edu.data.transforms import build_transforms
from blendmask_edu.engine.occlusion import hidden_fractions, occlusion_split
from blendmask_edu.engine.oracle import fit_attention, oracle_attention_ap
from blendmask_edu.modeling.blender import blend
from blendmask_edu.modeling.segmenter import InstanceSegmenter


def test_hidden_fractions_replay_the_generator(shapes_small):
    hidden = hidden_fractions(shapes_small)  # also checks every replayed area
    anns = json.loads((shapes_small / "annotations.json").read_text())["annotations"]
    assert sorted(hidden) == [a["id"] for a in anns]
    assert all(0.0 <= f <= 0.8 + 1e-9 for f in hidden.values())  # ≥ 20 % of a shape shows
    assert min(hidden.values()) == 0.0 and max(hidden.values()) > 0.0  # top shapes, and hidden


def test_fit_attention_finds_the_basis_that_draws_the_target():
    # Basis 0 is the target (+5 inside, −5 outside), basis 1 its opposite; equal attention
    # starts at a blurred 0 logit everywhere, the fit must pick basis 0 at every pixel.
    target = torch.zeros(1, 8, 8)
    target[0, 2:6, 1:5] = 1
    crops = torch.stack([10 * target - 5, 5 - 10 * target], dim=1)  # [1, 2, 8, 8]
    start = torch.zeros(1, 2, 4, 4)
    fitted = fit_attention(crops, start, target, "bilinear", steps=100, lr=0.2)
    probs = blend(crops, fitted, "bilinear")["mask_logits"].sigmoid()
    assert (probs[target == 1] > 0.95).all() and (probs[target == 0] < 0.05).all()
    assert (fitted[:, 0] > fitted[:, 1]).all()


def test_oracle_and_occlusion_split_end_to_end(shapes_small):
    cfg = tiny_config("blender")
    torch.manual_seed(0)
    model = InstanceSegmenter(cfg.model).eval()
    val = CocoInstances(shapes_small, build_transforms(cfg.data, train=False))
    out = oracle_attention_ap(model, val, steps=20)
    assert out["mean_bce_oracle"] < out["mean_bce_predicted"]  # the fit lowers the loss
    assert 0.0 <= out["predicted"]["AP"] <= out["oracle"]["AP"] <= 1.0
    split = occlusion_split(model, val)
    assert list(split["by_hidden"]) == ["not hidden (0)", "≤ 25 % hidden", "> 25 % hidden"]
    assert sum(b["instances"] for b in split["by_hidden"].values()) == len(val.coco.anns)
    assert sum(g["images"] for g in split["by_instances"].values()) == len(val)
