"""The ipywidgets explorers, built headless: every control is driven and the picture changes."""

from __future__ import annotations

import base64

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
import torch  # noqa: E402
from tiny import tiny_config  # noqa: E402

from blendmask_edu.data.coco import CocoInstances  # noqa: E402
from blendmask_edu.modeling.segmenter import InstanceSegmenter  # noqa: E402
from blendmask_edu.viz.blending import (  # noqa: E402
    detection_intermediates,
    plot_basis,
    plot_detection_blending,
)
from blendmask_edu.viz.explorers import BasesExplorer, BlendingExplorer  # noqa: E402

PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def model_and_data(shapes_small):
    torch.manual_seed(0)
    cfg = tiny_config("blender")
    cfg.model.fcos.score_thresh = 0.0  # random weights: keep detections to look at
    cfg.model.fcos.max_detections = 5
    return InstanceSegmenter(cfg.model).eval(), CocoInstances(shapes_small)


def test_blending_explorer_redraws_for_every_control(model_and_data):
    model, data = model_and_data
    ex = BlendingExplorer(model, data, data.class_names)
    assert ex.renders == 1 and ex.png.startswith(PNG)
    options = [v for _, v in ex.controls["detection"].options]
    assert options == list(range(5))  # the detections of image 0, best first

    first = ex.png
    ex.controls["detection"].value = 3
    assert ex.renders == 2 and ex.png != first

    before = ex.png
    ex.controls["image"].value = 2  # new image: detections re-listed, one redraw
    assert ex.renders == 3 and ex.png != before
    assert ex.controls["detection"].value == 0
    assert ex._cache.keys() == {0, 2}


def test_bases_explorer_redraws_for_every_control(model_and_data):
    model, data = model_and_data
    ex = BasesExplorer(model, data)
    K = model.mask_branch.cfg.K
    assert (ex.controls["basis"].min, ex.controls["basis"].max) == (1, K)
    seen = {ex.png}
    ex.controls["basis"].value = 2
    seen.add(ex.png)
    ex.controls["image"].value = 1
    seen.add(ex.png)
    assert ex.renders == 3 and len(seen) == 3


def test_explorer_display_falls_back_to_a_png(model_and_data):
    model, data = model_and_data
    ex = BasesExplorer(model, data)
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # live in Jupyter
    assert base64.b64decode(bundle["image/png"]) == ex.png  # static where widgets don't render
    assert "image=0" in bundle["text/plain"]


def test_blending_figure_products_sum_to_the_mask_logits(model_and_data):
    model, data = model_and_data
    image, target = data[0]
    with torch.no_grad():
        run = model.run([image])
    inter = detection_intermediates(run["masks"][0], 1)
    K, R = inter["basis_crops"].shape[:2]
    assert inter["attention_weights"].shape == (K, R, R)
    torch.testing.assert_close(inter["attention_weights"].sum(0), torch.ones(R, R))
    box = run["fcos"]["detections"][0]["boxes"][1]
    fig = plot_detection_blending(image, box, inter, "t", gt_mask=torch.zeros(R, R))
    products = [ax.images[0].get_array() for ax in fig.axes if ax.get_title().startswith("s$_")
                and "∘" in ax.get_title()]  # fmt: skip
    assert len(products) == K
    total = sum(torch.as_tensor(p.data) for p in products)
    torch.testing.assert_close(total, inter["mask_logits"], atol=1e-5, rtol=0)
    fig = plot_basis(image, run["masks"][0]["bases"], 1, target)
    assert fig.axes[1].get_title().startswith("basis 2 of")
