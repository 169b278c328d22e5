"""Figures and measurements the notebooks use: per-level maps, basis probes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import pytest  # noqa: E402
import torch  # noqa: E402
from tiny import tiny_config  # noqa: E402

from blendmask_edu.data.coco import CocoInstances  # noqa: E402
from blendmask_edu.modeling.fcos.head import flatten_levels  # noqa: E402
from blendmask_edu.modeling.segmenter import InstanceSegmenter  # noqa: E402
from blendmask_edu.viz.bases_probe import (  # noqa: E402
    cell_regions,
    plot_probe,
    position_correlation,
    probe_bases,
    region_means,
)
from blendmask_edu.viz.levels import plot_levels, split_levels  # noqa: E402


def test_split_levels_undoes_flatten_levels():
    per_level = [torch.randn(1, 3, 4, 5), torch.randn(1, 3, 2, 3)]
    flat = flatten_levels(per_level)[0]  # [26, 3]
    back = split_levels(flat, [(4, 5), (2, 3)])
    for b, p in zip(back, per_level):
        torch.testing.assert_close(b, p[0].permute(1, 2, 0))
    with pytest.raises(ValueError):
        split_levels(flat, [(4, 5)])
    fig = plot_levels(torch.rand(3, 32, 40), flat[:, 0], [(4, 5), (2, 3)], (8, 16), "t")
    assert [ax.get_title() for ax in fig.axes[1:3]] == ["P3 (stride 8, 4×5)", "P4 (stride 16, 2×3)"]


def test_cell_regions_on_a_square():
    masks = torch.zeros(1, 32, 32, dtype=torch.uint8)
    masks[0, 8:24, 8:24] = 1  # cells 2..5 of an 8×8 grid
    r = cell_regions(masks, stride=4)
    assert r["interior"].sum() == 4  # cells 3..4 × 3..4
    assert r["edge"][1:7, 1:7].sum() == 36 - 4 and r["edge"].sum() == 32
    assert (r["interior"] | r["edge"] | r["background"]).all()
    assert not (r["interior"] & r["edge"]).any()


def test_region_means_and_position_correlation_on_hand_made_bases():
    masks = torch.zeros(1, 32, 32, dtype=torch.uint8)
    masks[0, 8:24, 8:24] = 1
    regions = cell_regions(masks)
    xs = torch.arange(8.0).expand(8, 8)  # value = column
    bases = torch.stack([regions["interior"].float(), xs, -xs.T])  # [3, 8, 8]
    means = region_means(bases, regions)
    assert means["interior"][0] == 1 and means["background"][0] == 0
    corr = position_correlation(bases)
    torch.testing.assert_close(corr[1], torch.tensor([1.0, 0.0]))  # basis 2 follows x
    torch.testing.assert_close(corr[2], torch.tensor([0.0, -1.0]))  # basis 3 falls with y


def test_probe_bases_on_a_small_model(shapes_small):
    torch.manual_seed(0)
    cfg = tiny_config("blender")
    cfg.model.fcos.score_thresh = 0.0
    cfg.model.fcos.max_detections = 4
    model = InstanceSegmenter(cfg.model).eval()
    data = CocoInstances(shapes_small)
    stats = probe_bases(model, data, num_images=3, R=8, min_score=0.0)
    K = cfg.model.blender.K
    assert stats["region_means"].shape == (3, K) and stats["in_box_means"].shape == (K, 8, 8)
    assert stats["num_detections"] == 12
    torch.testing.assert_close(stats["attention_mean"].sum(0), torch.ones(8, 8))
    assert torch.isfinite(stats["class_means"]).all()
    assert stats["position_correlation"].abs().max() <= 1
    fig = plot_probe(stats, data.class_names)
    assert len(fig.axes) > 3 * K


def test_mask_iou_and_knockout_shape(shapes_small):
    from blendmask_edu.viz.bases_probe import _mask_iou, knockout_iou

    a = torch.zeros(2, 4, 4, dtype=torch.bool)
    b = torch.zeros(2, 4, 4, dtype=torch.bool)
    a[0, :2], b[0, 1:3] = True, True  # 4 shared of 12 pixels
    torch.testing.assert_close(_mask_iou(a, b), torch.tensor([1 / 3, 0.0]))
    torch.manual_seed(0)
    cfg = tiny_config("blender")
    cfg.model.fcos.score_thresh = 0.0
    model = InstanceSegmenter(cfg.model).eval()
    ious = knockout_iou(model, CocoInstances(shapes_small), num_images=2, min_score=0.0)
    assert ious.shape == (cfg.model.blender.K + 1,) and ((ious >= 0) & (ious <= 1)).all()


def test_knockout_renormalises_the_softmax_over_the_other_bases():
    """Switching basis k off must not turn "basis k says background" into logits ≈ 0: the
    softmax is taken over the K − 1 others, so the weights still sum to one."""
    from blendmask_edu.modeling.blender import blend
    from blendmask_edu.viz.bases_probe import blend_without

    # Basis 0 says "background" (−5) and dominates the attention; bases 1, 2 are +1 and −3.
    crops = torch.stack([torch.full((4, 4), -5.0), torch.ones(4, 4), torch.full((4, 4), -3.0)])
    att = torch.stack([torch.full((2, 2), 6.0), torch.zeros(2, 2), torch.zeros(2, 2)])
    crops, att = crops[None], att[None]  # [1, 3, 4, 4], [1, 3, 2, 2]
    torch.testing.assert_close(blend_without(crops, att, -1), blend(crops, att)["mask_logits"])
    # Without basis 0: equal weights on bases 1 and 2 → (1 − 3) / 2 = −1 everywhere.
    torch.testing.assert_close(blend_without(crops, att, 0), torch.full((1, 4, 4), -1.0))
    # Zeroing basis 0's crop instead would have given ≈ 0 (a coin flip at the threshold).
    zeroed = crops.clone()
    zeroed[:, 0] = 0
    assert blend(zeroed, att)["mask_logits"].abs().max() < 0.02
    # Without basis 2: softmax over (6, 0) → mostly basis 0.
    w = torch.tensor([6.0, 0.0]).softmax(0)
    torch.testing.assert_close(
        blend_without(crops, att, 2), torch.full((1, 4, 4), float(w[0] * -5 + w[1] * 1))
    )


def test_basis_roles_name_each_basis_by_its_largest_contrast():
    from blendmask_edu.viz.bases_probe import basis_roles, role_text

    R = 4
    box = torch.zeros(3, R, R)
    box[2, :, :2] = 3.0  # basis 3: high on the left half of boxes
    stats = {  # rows: interior, edge, background; columns: bases 1..3
        "region_means": torch.tensor([[2.0, -1.0, 0.0], [0.5, 1.0, 0.0], [-1.0, -1.0, 0.0]]),
        "in_box_means": box,
    }
    roles = basis_roles(stats)
    assert [(r["role"], round(r["value"], 3)) for r in roles] == [
        ("objects", 3.0),  # 2 − (−1); its edge value 0.5 lies between: no edge role
        ("edges", 2.0),  # 1 − max(−1, −1)
        ("left-right", 3.0),
    ]
    assert roles[0]["contrasts"]["edges"] == 0 and roles[0]["also"] is None
    assert [r["label"] for r in roles] == ["high on objects", "peaks on edges", "left side"]
    assert role_text(roles[0]).startswith("basis 1: higher inside objects than on background")
    assert "right" not in role_text(roles[2]).split("(")[0].replace("left", "")


def test_basis_labels_carry_the_sign_of_the_role():
    """A basis lower inside objects than on background is a background basis: its label
    says so, although its role (the contrast's name) is "objects"."""
    from blendmask_edu.viz.bases_probe import basis_roles

    R = 4
    box = torch.zeros(3, R, R)
    box[2, :, 2:] = 3.0  # basis 3: high on the right half of boxes
    stats = {  # rows: interior, edge, background; columns: bases 1..3
        "region_means": torch.tensor([[-3.0, 1.0, 0.0], [-1.0, -2.0, 0.0], [1.0, 1.0, 0.0]]),
        "in_box_means": box,
    }
    roles = basis_roles(stats)
    assert [(r["role"], r["label"]) for r in roles] == [
        ("objects", "high on background"),  # −3 − 1 = −4
        ("edges", "dips on edges"),  # −2 below min(1, 1) by 3
        ("left-right", "right side"),
    ]


def test_box_zones_are_disjoint_and_cover_the_box():
    from blendmask_edu.viz.bases_probe import box_zones

    for R in (4, 7, 28):
        zones = box_zones(R)
        assert list(zones) == ["centre", "top", "bottom", "left", "right"]
        count = torch.stack(list(zones.values())).sum(0)
        assert (count == 1).all(), R  # every pixel in exactly one zone
    zones = box_zones(28)
    assert zones["centre"][7:21, 7:21].all() and zones["centre"].sum() == 14 * 14
    assert zones["top"][0, 14] and zones["left"][14, 0] and zones["right"][14, 27]
    assert zones["bottom"][27, 14] and zones["top"][0, 0]  # a corner: the tie goes to "top"


def test_blend_without_two_bases():
    from blendmask_edu.viz.bases_probe import blend_without

    crops = torch.stack([torch.full((2, 2), v) for v in (-5.0, 1.0, -3.0, 7.0)])[None]
    att = torch.zeros(1, 4, 2, 2)
    torch.testing.assert_close(blend_without(crops, att, [0, 2]), torch.full((1, 2, 2), 4.0))
