"""Validation losses (eval mode, no gradients, BatchNorm untouched) logged at each evaluation,
and `plot` drawing them with the training losses, lr and AP."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import tiny_config

from blendmask_edu.cli import main
from blendmask_edu.data.coco import CocoInstances
from blendmask_edu.data.transforms import build_transforms
from blendmask_edu.engine.trainer import Trainer
from blendmask_edu.engine.val_loss import validation_losses
from blendmask_edu.modeling.segmenter import InstanceSegmenter


def test_validation_losses_learn_nothing(shapes_small):
    cfg = tiny_config()
    cfg.model.backbone.freeze_bn = False  # BatchNorm live: its statistics must not move
    torch.manual_seed(0)
    model = InstanceSegmenter(cfg.model).train()
    full = CocoInstances(shapes_small, build_transforms(cfg.data, train=False))
    dataset = torch.utils.data.Subset(full, range(4))
    images, targets = zip(*[dataset[i] for i in range(2)])
    train_terms = set(model(list(images), list(targets)))  # the training loss terms
    state = {k: v.clone() for k, v in model.state_dict().items()}

    val = validation_losses(model, dataset, "cpu", batch_size=2)

    assert set(val) == train_terms | {"loss"}  # the auxiliary semantic loss included
    assert all(np.isfinite(v) and v > 0 for v in val.values())
    assert val["loss"] == sum(v for k, v in val.items() if k != "loss")
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # running means/vars and weights unchanged
    # Same model, same data: the same numbers again (nothing random, nothing learned).
    assert validation_losses(model, dataset, "cpu", batch_size=2) == val


def test_evaluations_log_val_losses_and_plot_draws_them(shapes_small, tmp_path, capsys):
    cfg = tiny_config(max_iters=4, eval_period=2, log_period=1)
    Trainer(cfg, shapes_small, shapes_small, tmp_path, progress=False).train()
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval" in r]
    assert [r["iter"] for r in evals] == [2, 4]  # a periodic one, the final one
    terms = {k for k in train[0] if k.startswith("loss")}
    for r in evals:
        assert set(r["val"]) == terms  # the val losses sit next to the training ones
        assert all(np.isfinite(v) for v in r["val"].values())
        assert {"bbox", "segm", "per_category"} <= set(r["eval"])

    assert main(["plot", str(tmp_path)]) == 0
    assert "curves.png" in capsys.readouterr().out
    with Image.open(tmp_path / "curves.png") as im:
        assert im.size == (1200, 800)
        pixels = np.asarray(im.convert("RGB"))
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert red.sum() > 50  # the val curve (tab:red) is drawn


def test_plot_without_a_run_is_a_clear_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 1
    assert "metrics.jsonl" in capsys.readouterr().err


def test_centerness_floor_is_the_lowest_loss_ctr():
    """`loss_ctr` reaches `centerness_floor` when the predicted centerness equals its soft
    target, and not below: the floor the curves draw."""
    from blendmask_edu.config import FCOSConfig
    from blendmask_edu.modeling.fcos.head import compute_locations, level_of_locations
    from blendmask_edu.modeling.fcos.loss import fcos_losses
    from blendmask_edu.modeling.fcos.targets import fcos_targets
    from blendmask_edu.viz.curves import centerness_floor

    cfg = FCOSConfig(num_classes=2)
    target = {"boxes": torch.tensor([[10.0, 20.0, 70.0, 50.0], [64.0, 64.0, 120.0, 127.0]]),
              "labels": torch.tensor([1, 2])}  # fmt: skip
    dataset = [(torch.zeros(3, 128, 128), target)]
    floor = centerness_floor(dataset, cfg)
    assert 0.1 < floor < np.log(2)  # soft targets: above 0, and never above a coin's entropy
    sizes = [(-(-128 // s),) * 2 for s in cfg.strides]
    locations = compute_locations(sizes, cfg.strides)
    t = fcos_targets(locations, level_of_locations(sizes), [target], cfg.strides,
                     cfg.sizes_of_interest, cfg.center_sample_radius)  # fmt: skip
    L = len(locations)
    perfect = torch.logit(t.centerness.clamp(1e-6, 1 - 1e-6))[..., None]  # [1, L, 1]

    def loss_ctr(ctr):
        return float(fcos_losses(torch.zeros(1, L, 2), torch.ones(1, L, 4), ctr, locations,
                                 torch.ones(L), t)["loss_ctr"])  # fmt: skip

    assert loss_ctr(perfect) == pytest.approx(floor, rel=1e-4)
    assert loss_ctr(perfect + 0.5) > floor and loss_ctr(perfect - 0.5) > floor
