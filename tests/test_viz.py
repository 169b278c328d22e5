"""Figures of the model's insides are built from the intermediates API, with the right panels."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from tiny import tiny_config  # noqa: E402

from blendmask_edu.data.coco import CocoInstances  # noqa: E402
from blendmask_edu.modeling.segmenter import InstanceSegmenter  # noqa: E402
from blendmask_edu.viz.blendmask_figures import (  # noqa: E402
    gt_crop_for,
    plot_attention_grid,
    plot_bases,
)
from blendmask_edu.viz.overlay import predictions_grid, save_overlay  # noqa: E402


@pytest.fixture(scope="module")
def outputs(shapes_small):
    torch.manual_seed(0)
    cfg = tiny_config("blender")
    cfg.model.fcos.score_thresh = 0.0  # random weights: keep detections to draw
    cfg.model.fcos.max_detections = 5
    model = InstanceSegmenter(cfg.model).eval()
    data = CocoInstances(shapes_small)
    images, targets = zip(*[data[i] for i in range(3)])
    with torch.no_grad():
        run = model.run(list(images))
        results = model.postprocess(run)
    return list(images), list(targets), run, results, data.class_names


def test_bases_figure_has_image_and_k_bases_per_row(outputs):
    images, _, run, _, _ = outputs
    fig = plot_bases(images, [m["bases"] for m in run["masks"]], max_images=2)
    K = run["masks"][0]["bases"].shape[0]
    panels = [ax for ax in fig.axes if ax.images]  # the image and the K bases per row
    assert len(panels) == 2 * (K + 1)
    assert len(fig.axes) == 2 * (K + 1) + 2 * K  # + one colour bar per basis panel
    assert panels[1].images[0].get_array().shape == tuple(run["masks"][0]["bases"].shape[-2:])


def test_attention_figure_shows_a_s_r_mask_and_gt(outputs):
    images, targets, run, results, names = outputs
    R = run["masks"][0]["masks"].shape[-1]
    gt = gt_crop_for(results[0]["boxes"][0], targets[0], R)
    assert gt.shape == (R, R) and set(gt.unique().tolist()) <= {0.0, 1.0}
    rows = [{"image": images[0], "det": results[0], "intermediates": run["masks"][0],
             "index": 0, "gt_mask": gt}]  # fmt: skip
    fig = plot_attention_grid(rows, names)
    K = run["masks"][0]["attention"].shape[1]
    titles = [ax.get_title() for ax in fig.axes]
    assert [f"a{k + 1}" for k in range(K)] == [t for t in titles if t.startswith("a")]
    assert "mask Σ s∘r" in titles and "GT (R×R)" in titles


def test_overlay_png_has_the_image_size_and_draws_masks(outputs, tmp_path):
    images, targets, _, _, names = outputs
    path = tmp_path / "o.png"
    save_overlay(images[0], targets[0], path, names, score_thresh=0.0)
    drawn = np.asarray(Image.open(path).convert("RGB"))
    h, w = images[0].shape[-2:]
    assert drawn.shape[:2] == (2 * h, 2 * w)
    grid = predictions_grid(images, outputs[3], targets, names)
    assert len(grid.axes) == 2 * 4  # predictions row + ground-truth row, 4 columns
