"""The models can learn: each overfits one shapes image (a classic sanity check of a detector).

Uses the `shapes` preset (ImageNet EfficientNet-Lite0 from the PyPI package, no download).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from blendmask_edu.config import shapes_preset
from blendmask_edu.data.coco import CocoInstances
from blendmask_edu.data.shapes import make_shapes
from blendmask_edu.engine.evaluate import evaluate_model
from blendmask_edu.engine.schedule import build_optimizer
from blendmask_edu.modeling.segmenter import InstanceSegmenter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def one_image(tmp_path_factory):
    root = tmp_path_factory.mktemp("one")
    for seed in range(100):  # the first seed whose image holds at least 3 instances
        path = make_shapes(root / f"s{seed}", 1, 128, seed=seed)
        ds = CocoInstances(path)
        if len(ds[0][1]["boxes"]) >= 3:
            return ds
    raise AssertionError("no shapes image with 3 instances in 100 seeds")


def centerness_floor(model, images, targets) -> float:
    """The smallest value the centerness BCE can take: the entropy of its soft targets."""
    with torch.no_grad():
        t = model.run(images, targets)["fcos"]["targets"]
        ctr = t.centerness[t.labels > 0]
        return F.binary_cross_entropy(ctr, ctr, reduction="sum").item() / max(len(ctr), 1)


def overfit(mask_branch: str, dataset, iters: int):
    torch.manual_seed(0)
    cfg = shapes_preset()
    cfg.model.mask_branch = mask_branch
    cfg.optim.lr = 1e-3
    model = InstanceSegmenter(cfg.model).train()
    optimizer = build_optimizer(model, cfg.optim)
    image, target = dataset[0]
    images, targets = [image, image], [target, target]
    history = []
    for _ in range(iters):
        losses = model(images, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})
    floor = centerness_floor(model, images, targets)
    return model, history, floor


def assert_losses_fell_tenfold(history, floor):
    first, last = history[0], history[-1]
    for term in first:
        if term == "loss_ctr":  # BCE with soft targets: compare the part above its minimum
            assert last[term] - floor <= (first[term] - floor) / 10, (term, first, last, floor)
        else:
            assert last[term] <= first[term] / 10, (term, first[term], last[term])


def test_detector_overfits_one_image(one_image):
    model, history, floor = overfit("none", one_image, iters=200)
    assert_losses_fell_tenfold(history, floor)
    results = evaluate_model(model, one_image, "cpu", progress=False)
    assert results["bbox"]["AP"] >= 0.9, results["bbox"]


def test_blendmask_overfits_one_image(one_image):
    model, history, floor = overfit("blender", one_image, iters=250)
    assert_losses_fell_tenfold(history, floor)
    results = evaluate_model(model, one_image, "cpu", progress=False)
    assert results["bbox"]["AP"] >= 0.9, results["bbox"]
    assert results["segm"]["AP"] >= 0.9, results["segm"]
