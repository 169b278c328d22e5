"""The ipywidgets explorers, built headless: every control is driven and the picture changes."""

from __future__ import annotations

import base64

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
import torch  # noqa: E402
from tiny import tiny_config  # noqa: E402

from blendmask_edu.config import FCISConfig, RoIHeadConfig, YolactConfig  # noqa: E402
from blendmask_edu.data.coco import CocoInstances  # noqa: E402
from blendmask_edu.modeling.segmenter import InstanceSegmenter  # noqa: E402
from blendmask_edu.viz.blending import (  # noqa: E402
    detection_intermediates,
    plot_basis,
    plot_detection_blending,
)
from blendmask_edu.viz.explorers import BasesExplorer, BlendingExplorer, ZooExplorer  # noqa: E402
from blendmask_edu.viz.fusion_figures import (  # noqa: E402
    branch_kind,
    masks_for_detection,
    plot_fcis,
    plot_roi,
    plot_yolact,
)

PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def model_and_data(shapes_small):
    torch.manual_seed(0)
    cfg = tiny_config("blender")
    cfg.model.fcos.score_thresh = 0.0  # random weights: keep detections to look at
    cfg.model.fcos.max_detections = 5
    return InstanceSegmenter(cfg.model).eval(), CocoInstances(shapes_small)


def pick_detection_then_image(ex, detection: int, image: int) -> None:
    """Another detection, then another image: one redraw each, and the new image's detections
    are re-listed from the best one."""
    first = ex.png
    ex.controls["detection"].value = detection
    assert ex.renders == 2 and ex.png != first
    before = ex.png
    ex.controls["image"].value = image
    assert ex.renders == 3 and ex.png != before
    assert ex.controls["detection"].value == 0


def test_blending_explorer_redraws_for_every_control(model_and_data):
    model, data = model_and_data
    ex = BlendingExplorer(model, data, data.class_names)
    assert ex.renders == 1 and ex.png.startswith(PNG)
    options = [v for _, v in ex.controls["detection"].options]
    assert options == list(range(5))  # the detections of image 0, best first

    pick_detection_then_image(ex, detection=3, image=2)
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


def tiny_model(branch: str, seed: int):
    """A random-weight model of `branch`, small, keeping every detection."""
    torch.manual_seed(seed)
    cfg = tiny_config(branch)
    cfg.model.yolact = YolactConfig(num_prototypes=4)
    cfg.model.fcis = FCISConfig(k=2, R=8)
    cfg.model.roi = RoIHeadConfig(channels=8, num_convs=1, canonical_scale=32)
    cfg.model.fcos.score_thresh = 0.0
    cfg.model.fcos.max_detections = 5
    return InstanceSegmenter(cfg.model).eval()


@pytest.fixture(scope="module")
def zoo(shapes_small):
    branches = ("blender", "yolact", "fcis", "roi")
    return {b: tiny_model(b, i) for i, b in enumerate(branches)}, CocoInstances(shapes_small)


def test_zoo_explorer_redraws_one_detection_under_every_branch(zoo):
    models, data = zoo
    ex = ZooExplorer(models, data, data.class_names)
    assert ex.reference == "blender" and ex.renders == 1 and ex.png.startswith(PNG)
    outputs = ex.outputs(0, 0)
    assert [branch_kind(o) for o in outputs.values()] == list(models)
    box = ex.predict(0).detections["boxes"][0]
    for out in outputs.values():  # every branch made one mask, for the reference's box
        assert out["masks"].shape[0] == 1
    assert "roi" in outputs and outputs["roi"]["levels"].shape == (1,)

    pick_detection_then_image(ex, detection=2, image=3)
    assert set(ex._outputs) == {(0, 0), (0, 2), (3, 0)}
    torch.testing.assert_close(ex.predict(0).detections["boxes"][0], box)


def test_masks_for_detection_uses_the_given_box(zoo):
    models, data = zoo
    image, _ = data[1]
    reference = models["blender"]
    with torch.no_grad():
        run = reference.run([image])
    det = run["fcos"]["detections"][0]
    one = {k: det[k][1:2] for k in ("boxes", "scores", "labels", "loc_index")}
    # On its own detection, the reference model gives what `run` gave.
    out = masks_for_detection(reference, image, one)
    torch.testing.assert_close(out["masks"][0], run["masks"][0]["masks"][1])
    # A detection far from the reference's: the RoI head pools exactly that box.
    shifted = dict(one, boxes=torch.tensor([[2.0, 2.0, 30.0, 30.0]]))
    out = masks_for_detection(models["roi"], image, shifted)
    assert out["roi_features"].shape[0] == 1


def test_branch_figures_draw_their_intermediates(zoo):
    models, data = zoo
    image, target = data[0]
    with torch.no_grad():
        outs = {b: m.run([image])["masks"][0] for b, m in models.items()}
    box = models["yolact"].run([image])["fcos"]["detections"][0]["boxes"][0]
    fig = plot_yolact(image, box, outs["yolact"], 0, gt_mask=torch.zeros(8, 8), show=3)
    titles = [ax.get_title() for ax in fig.axes]
    assert sum(t.startswith("P$_") for t in titles) == 3
    fig = plot_fcis(image, box, outs["fcis"], 0, gt_mask=torch.zeros(8, 8))
    assert fig.axes[0].images[0].get_array().shape == (2 * 17 - 1, 2 * 17 - 1)  # 2×2 maps of 16×16
    fig = plot_roi(image, box, outs["roi"], 0, show=2)
    assert any(t.startswith("the box (pooled from P") for t in (ax.get_title() for ax in fig.axes))
    with pytest.raises(ValueError, match="known mask branch"):
        branch_kind({"masks": torch.zeros(1, 8, 8)})
