"""One detection through the blender, every intermediate on one figure (paper §3.4, Eq. 1–4).

    row 1  softmax_K(a_d)            at M×M: the attention as predicted, made comparable
                                     (a view only: the blender never computes it)
    row 2  s_d = softmax_K(up(a_d))  at R×R: the weights the blender uses (Eq. 2–3)
    row 3  r_d                       the basis crops, RoIAlign of the K bases (Eq. 1)
    row 4  s_d ∘ r_d                 the K products; their sum is the mask logits (Eq. 4)
    last column: the image and box, m_d = Σ_k s_d^k ∘ r_d^k, sigmoid(m_d), the GT crop

`detection_intermediates` picks one detection out of `InstanceSegmenter.run`'s output.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch


def detection_intermediates(masks_out: dict, index: int) -> dict[str, torch.Tensor]:
    """The blender's tensors of detection `index` of one image (`run(...)["masks"][b]`).

    → attention [K, M, M] (before softmax), attention_weights [K, R, R] (after softmax),
    basis_crops [K, R, R], mask_logits [R, R], masks [R, R] (probabilities).
    """
    keys = ("attention", "attention_weights", "basis_crops", "mask_logits", "masks")
    return {k: masks_out[k][index].detach().float().cpu() for k in keys}


def _signed_limit(*tensors: torch.Tensor) -> float:
    return max(float(t.abs().max()) for t in tensors) or 1.0


def plot_detection_blending(
    image: torch.Tensor,  # [3, H, W] in [0, 1]
    box: torch.Tensor,  # [4] xyxy in image pixels
    inter: dict[str, torch.Tensor],  # detection_intermediates(...)
    title: str = "detection",
    gt_mask: torch.Tensor | None = None,  # [R, R] in {0, 1}
):
    """The figure described in the module docstring; returns it."""
    att = inter["attention"]  # [K, M, M]
    s, r = inter["attention_weights"], inter["basis_crops"]  # [K, R, R] each
    prod = s * r  # [K, R, R]  the terms of Eq. 4
    K, M, R = att.shape[0], att.shape[-1], r.shape[-1]
    fig, axes = plt.subplots(4, K + 1, figsize=(2.0 * (K + 1) + 1.2, 8.4), layout="constrained")

    rows = [  # maps [K, ·, ·], title of panel k (1-based), colour map, fixed limits
        (att.softmax(dim=0), lambda k: f"softmax$_K$(a)$_{k}$ {M}×{M} (view)", "viridis", (0, 1)),
        (s, lambda k: f"s$_{k}$ = softmax$_K$(up(a))$_{k}$  {R}×{R}", "viridis", (0, 1)),
        (r, lambda k: f"r$_{k}$ basis crop", "RdBu_r", None),
        (prod, lambda k: f"s$_{k}$∘r$_{k}$", "RdBu_r", None),
    ]
    lim = _signed_limit(r, prod)  # rows 3–4 share one scale, so products compare to crops
    for row, (maps, name, cmap, limits) in enumerate(rows):
        vmin, vmax = limits if limits else (-lim, lim)
        for k in range(K):
            im = axes[row, k].imshow(maps[k], cmap=cmap, vmin=vmin, vmax=vmax)
            axes[row, k].set_title(name(k + 1), fontsize=8)
        if row in (1, 3):  # one colour bar per pair of rows with the same scale
            fig.colorbar(im, ax=axes[row - 1 : row + 1, :K], shrink=0.8, aspect=30)

    axes[0, K].imshow(image.permute(1, 2, 0).clamp(0, 1).cpu(), interpolation="nearest")
    x0, y0, x1, y1 = box.tolist()
    axes[0, K].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="w", lw=2))
    axes[0, K].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="k", lw=1))
    axes[0, K].set_title(title, fontsize=8)
    logits = inter["mask_logits"]
    lim_m = _signed_limit(logits)
    im = axes[1, K].imshow(logits, cmap="RdBu_r", vmin=-lim_m, vmax=lim_m)
    axes[1, K].set_title("m = Σ$_k$ s$_k$∘r$_k$ (logits)", fontsize=8)
    fig.colorbar(im, ax=axes[1, K], shrink=0.8)
    axes[2, K].imshow(inter["masks"], cmap="gray", vmin=0, vmax=1)
    axes[2, K].set_title("sigmoid(m)", fontsize=8)
    if gt_mask is not None:
        axes[3, K].imshow(gt_mask.cpu(), cmap="gray", vmin=0, vmax=1)
        axes[3, K].set_title("GT mask in the box", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if gt_mask is None:
        axes[3, K].set_axis_off()
    return fig


def plot_basis(
    image: torch.Tensor,  # [3, H, W]
    bases: torch.Tensor,  # [K, H/4, W/4] (padded size allowed)
    k: int,
    target: dict | None = None,  # GT "masks" [G, H, W], drawn as contours
):
    """Basis k of an image: the image, the basis (own colour bar), the basis over the image."""
    h, w = image.shape[-2:]
    basis = bases[k].detach().float().cpu()[: (h + 3) // 4, : (w + 3) // 4]  # [h/4, w/4]
    lim = _signed_limit(basis)
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.2), layout="constrained")
    axes[0].imshow(image.permute(1, 2, 0).clamp(0, 1).cpu(), interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    im = axes[1].imshow(basis, cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[1].set_title(f"basis {k + 1} of {bases.shape[0]} ({basis.shape[0]}×{basis.shape[1]})")
    fig.colorbar(im, ax=axes[1], shrink=0.85)
    axes[2].imshow(
        image.permute(1, 2, 0).clamp(0, 1).cpu().mean(-1), cmap="gray", interpolation="nearest"
    )
    axes[2].imshow(
        basis, cmap="RdBu_r", vmin=-lim, vmax=lim, alpha=0.6, extent=(0, w, h, 0)
    )  # the basis stretched over the image (4 pixels per cell)
    if target is not None and len(target["masks"]):
        for m in target["masks"]:
            axes[2].contour(m.cpu().numpy(), levels=[0.5], colors="k", linewidths=0.8)
    axes[2].set_title("basis over the image, GT outlines", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1].title.set_fontsize(9)
    return fig
