"""The models can learn: each overfits one shapes image (a classic sanity check of a detector).

Uses the `shapes` preset (ImageNet EfficientNet-Lite0 from the PyPI package, no download), with
the paper's R = 56 for the blender and FCIS (at the preset's R = 28 the R×R targets themselves
score 0.975 mask AP on this image).

Blender and RoI head reach about 0.9–0.95 mask AP here; two fusions cannot, whatever they
learn, and are held to what their representation allows instead (numbers measured when the
test was written; the bars and their margins are beside the constants below):
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
from blendmask_edu.modeling.fusion.yolact import grid_masks
from blendmask_edu.modeling.segmenter import InstanceSegmenter

pytestmark = pytest.mark.slow

DETECTOR_ITERS = 200
MASK_ITERS = 500
# The RoI head converges sooner (mask loss at 1e-4 of its first value by 200-300 iterations)
# and, at this constant learning rate (AdamW), drifts afterwards: seed 0, 2 threads, mask AP
# 0.944 at 300 iterations, 0.754 at 500, 0.738 at 800 (on GT boxes 0.975, 0.866, 0.798).
ROI_MASK_ITERS = 300

# The bars. Each sits below every number a working model was measured to reach and above what
# a broken one scores on this image. Measured by `benchmarks/overfit_spread.py` (1 thread, seed
# 0, on a 2-core machine under heavy load; a run at 300 iterations shows how far from
# converged 500 is); broken masks are checked by `test_the_bars_fail_a_broken_mask_branch`,
# broken boxes by hand (all 7 boxes 1 px off: box AP 0.864, 2 px: 0.723).
# Detector alone: box AP 0.992 after 200 iterations; its loss terms fell to 0.0004 (cls),
# 0.047 (box) and 0.0004 (ctr, above its floor) of their first values, against the 1/10 bar.
BOX_AP_BAR = 0.9
# With a mask branch the box AP is lower where the branch shares the features: blender 0.938
# (300 it) / 0.975 (500 it), roi 0.991 / 1.0 (seed 1: 0.969 / 0.994). The detector's quality
# is the test above; here the bar catches a mask branch that wrecks the shared features.
MASK_TEST_BOX_AP_BAR = 0.85
# Blender / RoI mask AP after 500 iterations: blender 0.913 (0.866 at 300); the earlier RoI
# head (unaligned, P3..P5) 0.952 (0.938 at 300; seed 1: 0.930, 0.938 at 300), and 0.895 on
# another 2-core machine: the CI failure under the old bar, 0.9.
# Broken masks on the GT boxes: 1 px off diagonally 0.730, eroded by 1 px 0.597, box-filled
# 0.180. Mask AP on GT boxes: blender 1.0, roi 0.975.
MASK_AP_BAR = 0.8
# RoI head (aligned RoIAlign from P2..P5) after ROI_MASK_ITERS: mask AP 0.944 (seed 0, 2
# threads), 0.842 (seed 0, 1 thread), 0.902 (seed 1, 2 threads); on GT boxes 0.975 in each.
ROI_MASK_AP_BAR = 0.75
# FCIS: 0.857 (0.876 on GT boxes) measured when the test was written; 0.8 left 0.057.
FCIS_MASK_AP_BAR = 0.75
# YOLACT, on GT boxes, as a fraction of its grid's ceiling (0.805): 0.797 = 0.99 of it when the
# test was written; 0.95 left 0.032. GT masks 2 px off: 0.658 = 0.82 of it; box-filled 0.180.
YOLACT_BAR_OF_CEILING = 0.9


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
    assert results["bbox"]["AP"] >= BOX_AP_BAR, results["bbox"]


def mask_ap_on_gt_boxes(dataset, masks: torch.Tensor) -> float:
    """Mask AP of `masks` [G, H, W] given as the GT instances' masks (GT boxes, score 1)."""
    target = dataset.load_target(dataset.image_ids[0])
    scores = torch.ones(len(masks))
    pred = {"image_id": dataset.image_ids[0], **target, "scores": scores, "masks": masks}
    return evaluate_coco(dataset.coco, [pred], dataset.label_to_cat_id, ("segm",))["segm"]["AP"]


def grid_ceiling(dataset, stride: int = 4) -> float:
    """Mask AP of the GT masks passed through a 1/stride grid and upsampled back (bilinear):
    the best a mask assembled on that grid (YOLACT's prototypes) can score."""
    target = dataset.load_target(dataset.image_ids[0])
    return mask_ap_on_gt_boxes(dataset, grid_masks(target["masks"], stride))


@pytest.mark.parametrize("branch", ["blender", "yolact", "fcis", "roi"])
def test_mask_branch_overfits_one_image(one_image, branch):
    model, history, _ = overfit(
        branch, one_image, ROI_MASK_ITERS if branch == "roi" else MASK_ITERS
    )
    first, last = history[0]["loss_mask"], history[-1]["loss_mask"]
    assert last <= first / 5, (first, last)
    results = evaluate_model(model, one_image, "cpu", progress=False)
    on_gt_boxes = evaluate_masks_on_gt_boxes(model, one_image, "cpu", progress=False)["AP"]
    assert results["bbox"]["AP"] >= MASK_TEST_BOX_AP_BAR, results["bbox"]
    if branch == "yolact":  # what the 1/4 grid allows, less a margin (see the docstring)
        assert on_gt_boxes >= YOLACT_BAR_OF_CEILING * grid_ceiling(one_image), on_gt_boxes
    elif branch == "fcis":  # shared position-sensitive maps and overlapping instances
        assert results["segm"]["AP"] >= FCIS_MASK_AP_BAR, results["segm"]
        assert on_gt_boxes >= FCIS_MASK_AP_BAR, on_gt_boxes
    elif branch == "roi":  # its masks on the GT boxes, and with its own (shared) detector
        assert on_gt_boxes >= MASK_AP_BAR, on_gt_boxes
        assert results["segm"]["AP"] >= ROI_MASK_AP_BAR, results["segm"]
    else:
        assert results["segm"]["AP"] >= MASK_AP_BAR, results["segm"]


def test_the_bars_fail_a_broken_mask_branch(one_image):
    """No training: masks a broken branch would give, on the GT boxes, score below every bar."""
    target = one_image.load_target(one_image.image_ids[0])
    gt = target["masks"].float()  # [G, H, W]
    box_filled = torch.zeros_like(gt)  # learned the box, not the shape
    for g, (x0, y0, x1, y1) in enumerate(target["boxes"].round().int().tolist()):
        box_filled[g, y0:y1, x0:x1] = 1
    shifted = torch.roll(gt, (1, 1), dims=(-2, -1))  # one pixel off, diagonally
    eroded = -F.max_pool2d(-gt[:, None], 3, 1, 1)[:, 0]  # one pixel thin all round
    for name, masks in {"box": box_filled, "shift": shifted, "erode": eroded}.items():
        ap = mask_ap_on_gt_boxes(one_image, masks)
        assert ap < min(MASK_AP_BAR, FCIS_MASK_AP_BAR), (name, ap)
    ceiling = grid_ceiling(one_image)
    two_px = torch.roll(gt, 2, dims=-1)  # YOLACT's coarse grid: a 2-pixel shift fails it
    for name, masks in {"box": box_filled, "2px": two_px}.items():
        ap = mask_ap_on_gt_boxes(one_image, masks)
        assert ap < YOLACT_BAR_OF_CEILING * ceiling, (name, ap)
