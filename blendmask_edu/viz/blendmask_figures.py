"""Figures of BlendMask's insides: the K bases, and for a detection its attention maps,
basis crops, blended mask and ground truth (paper Fig. 1 and 3, on our data)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from .overlay import draw_instances, to_numpy_image


def plot_bases(images, bases_list, max_images: int = 4):
    """One row per image: the image, then its K bases (signed, so a diverging colormap)."""
    n = min(len(images), max_images)
    K = bases_list[0].shape[0]
    fig, axes = plt.subplots(n, K + 1, figsize=(2.2 * (K + 1), 2.2 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(to_numpy_image(images[i]), interpolation="nearest")
        axes[i, 0].set_title("image", fontsize=8)
        h, w = images[i].shape[-2:]
        for k in range(K):
            basis = bases_list[i][k][: (h + 3) // 4, : (w + 3) // 4].detach().cpu()
            lim = float(basis.abs().max()) or 1.0
            im = axes[i, k + 1].imshow(basis, cmap="RdBu_r", vmin=-lim, vmax=lim)
            axes[i, k + 1].set_title(f"basis {k + 1}", fontsize=8)
            bar = fig.colorbar(im, ax=axes[i, k + 1], fraction=0.046, pad=0.03)
            bar.ax.tick_params(labelsize=6)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def plot_blending(
    image, det: dict, intermediates: dict, index: int, class_names=None, gt_mask=None, axes_row=None
):
    """One detection: attention maps a_k (M×M), softmaxed weights s_k (R×R), crops r_k, and
    the blended mask m = Σ_k s_k∘r_k (paper Eq. 1–4), next to the image and the GT mask."""
    K = intermediates["attention"].shape[1]
    cols = 3 + 3 * K
    own = axes_row is None
    if own:
        fig, axes_row = plt.subplots(1, cols, figsize=(1.6 * cols, 1.9))
    one = {k: v[index : index + 1] for k, v in det.items() if k in ("boxes", "labels", "scores")}
    draw_instances(axes_row[0], image, one, class_names, score_thresh=0.0, ids=[index])
    axes_row[0].set_title("detection", fontsize=7)
    col = 1
    for name, key, cmap in (
        ("a", "attention", "viridis"),
        ("s", "attention_weights", "viridis"),
        ("r", "basis_crops", "RdBu_r"),
    ):
        for k in range(K):
            x = intermediates[key][index, k].detach().cpu()
            if cmap == "RdBu_r":
                lim = float(x.abs().max()) or 1.0
                axes_row[col].imshow(x, cmap=cmap, vmin=-lim, vmax=lim)
            else:
                axes_row[col].imshow(
                    x,
                    cmap=cmap,
                    vmin=0 if key == "attention_weights" else None,
                    vmax=1 if key == "attention_weights" else None,
                )
            axes_row[col].set_title(f"{name}{k + 1}", fontsize=7)
            col += 1
    axes_row[col].imshow(intermediates["masks"][index].detach().cpu(), cmap="gray", vmin=0, vmax=1)
    axes_row[col].set_title("mask Σ s∘r", fontsize=7)
    if gt_mask is not None:
        axes_row[col + 1].imshow(gt_mask.cpu(), cmap="gray", vmin=0, vmax=1)
        axes_row[col + 1].set_title("GT (R×R)", fontsize=7)
    for ax in axes_row:
        ax.set_axis_off()
    return axes_row[0].figure if own else None


def plot_attention_grid(rows: list[dict], class_names=None):
    """Several detections (each a dict of plot_blending's arguments), one per row."""
    K = rows[0]["intermediates"]["attention"].shape[1]
    cols = 3 + 3 * K
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.9 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        plot_blending(
            row["image"],
            row["det"],
            row["intermediates"],
            row["index"],
            class_names,
            row.get("gt_mask"),
            axes_row=axes[r],
        )
    fig.tight_layout()
    return fig


def gt_crop_for(det_box: torch.Tensor, target: dict, R: int):
    """The GT mask that best overlaps a detected box, cropped to it at R×R (for comparison)."""
    from torchvision.ops import box_iou, roi_align

    if len(target["boxes"]) == 0:
        return None
    iou = box_iou(det_box[None].float(), target["boxes"].float())[0]
    g = int(iou.argmax())
    masks = target["masks"][g][None, None].float()
    rois = torch.cat([torch.zeros(1, 1), det_box[None].float()], dim=1)
    return (roi_align(masks, rois, (R, R), 1.0, 0, True)[0, 0] >= 0.5).float()
