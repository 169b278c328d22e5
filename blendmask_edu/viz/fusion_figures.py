"""Pictures of the fusion zoo (notebook 08, explorer (c)): how each mask branch turns one box
into a mask, and one detection under every branch side by side.

    masks_for_detection(model, image, detection)   a model's mask branch on a given box
    plot_yolact(...)   YOLACT: the prototypes it weighs most, all coefficients, σ(Σ c_k P_k)
    plot_fcis(...)     FCIS: the k² score maps, their crops in the box, the assembled cells
    plot_roi(...)      Mask R-CNN head: the RoI features of the box, its FPN level, the mask
    plot_zoo_detection(...)   one row per branch: how it mixes, logits, mask, mask on the image

Every function reads the per-image dict that the branch's `forward_test` returns (the keys are
listed in each branch's docstring) and the index of the detection in it.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..modeling.backbone import pyramid_levels
from ..modeling.paste import paste_masks
from .overlay import to_numpy_image


@torch.inference_mode()
def masks_for_detection(model, image: torch.Tensor, detection: dict) -> dict:
    """Run `model` (an `InstanceSegmenter`) on one image, but give its mask branch the boxes
    of `detection` ({"boxes" [N, 4], "labels", "scores", "loc_index" [N]}) instead of its own
    detections → the branch's per-image outputs ("masks" [N, R, R], intermediates).
    Every model of the zoo has the same FPN locations, so a `loc_index` found by one model
    is a valid location of the others."""
    device = next(model.parameters()).device
    x, sizes = model.preprocess([image.to(device)])
    features = model.backbone(x)
    fcos_out = model.fcos(pyramid_levels(features), sizes)
    detection = {k: v.to(device) for k, v in detection.items()}
    out = model.mask_branch.forward_test(features, fcos_out, [detection])[0]
    return {k: v.detach().float().cpu() for k, v in out.items()}


def branch_kind(out: dict) -> str:
    """Which branch produced `out`, from its intermediates."""
    for key, kind in (("attention_weights", "blender"), ("coefficients", "yolact"),
                      ("cell_crops", "fcis"), ("roi_features", "roi")):  # fmt: skip
        if key in out:
            return kind
    raise ValueError(f"not the output of a known mask branch: keys {sorted(out)}")


def _box_patch(ax, box, stride: float = 1.0) -> None:
    x0, y0, x1, y1 = (v / stride for v in box.tolist())
    for color, lw in (("w", 2.0), ("k", 1.0)):
        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                   color=color, lw=lw))  # fmt: skip


def _signed(ax, x: torch.Tensor, title: str, fig=None, colorbar: bool = True):
    lim = float(x.abs().max()) or 1.0
    im = ax.imshow(x, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(title, fontsize=8)
    if colorbar and fig is not None:
        fig.colorbar(im, ax=ax, shrink=0.8)
    return im


def _bare(axes) -> None:
    for ax in np.ravel(axes):
        ax.set_xticks([])
        ax.set_yticks([])


def _tile(maps: torch.Tensor, k: int, gap: float = float("nan")) -> torch.Tensor:
    """[k², h, w] → one [k·(h+1) − 1, k·(w+1) − 1] image, map i·k + j at row i, column j,
    with a one-pixel gap (NaN: drawn blank) between maps."""
    _, h, w = maps.shape
    out = torch.full((k * (h + 1) - 1, k * (w + 1) - 1), gap)
    for n, m in enumerate(maps):
        i, j = divmod(n, k)
        out[i * (h + 1) : i * (h + 1) + h, j * (w + 1) : j * (w + 1) + w] = m
    return out


# ---------------------------------------------------------------------------------------
# One branch, in detail
# ---------------------------------------------------------------------------------------


def plot_yolact(image, box, out: dict, d: int, gt_mask=None, stride: int = 4, show: int = 6):
    """YOLACT, detection `d`: the `show` prototypes with the largest |c_k| (each with its
    coefficient), all k coefficients, the assembled map σ(Σ_k c_k P_k) cropped to the box,
    the R×R mask and the GT."""
    P, c = out["prototypes"], out["coefficients"][d]  # [k, h, w], [k]
    h, w = image.shape[-2:]
    P = P[:, : (h + stride - 1) // stride, : (w + stride - 1) // stride]  # drop the padding
    top = c.abs().argsort(descending=True)[:show].tolist()
    fig = plt.figure(figsize=(2.0 * show, 4.6), layout="constrained")
    upper, lower = fig.subfigures(2, 1, height_ratios=[1, 1.15])
    axes = upper.subplots(1, show)
    vmax = float(P[top].max()) or 1.0
    for ax, k in zip(axes, top):
        im = ax.imshow(P[k], cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title(f"P$_{{{k}}}$  c = {float(c[k]):+.2f}", fontsize=8)
        _box_patch(ax, box, stride)
    upper.colorbar(im, ax=axes, shrink=0.8, label="prototype (ReLU)")
    upper.suptitle(f"the {show} prototypes (of {len(c)}) with the largest |c$_k$|", fontsize=9)
    bars, assembled, mask, gt = lower.subplots(1, 4, width_ratios=[2.4, 1, 1, 1])
    bars.bar(range(len(c)), c.numpy(), color=["tab:red" if v > 0 else "tab:blue" for v in c])
    bars.axhline(0, color="k", lw=0.6)
    bars.set_ylim(-1, 1)
    bars.set_xlabel("prototype k", fontsize=8)
    bars.set_title("coefficients c$_k$ (tanh) of this detection", fontsize=8)
    bars.tick_params(labelsize=7)
    im = assembled.imshow(out["assembled"][d][: P.shape[1], : P.shape[2]], cmap="gray",
                          vmin=0, vmax=1)  # fmt: skip
    assembled.set_title(f"σ(Σ c$_k$P$_k$), box crop\n{P.shape[1]}×{P.shape[2]} grid", fontsize=8)
    _box_patch(assembled, box, stride)
    R = out["masks"].shape[-1]
    mask.imshow(out["masks"][d], cmap="gray", vmin=0, vmax=1)
    mask.set_title(f"mask read at {R}×{R}\nover the box", fontsize=8)
    if gt_mask is not None:
        gt.imshow(gt_mask, cmap="gray", vmin=0, vmax=1)
        gt.set_title("GT mask in the box", fontsize=8)
    lower.colorbar(im, ax=[assembled, mask, gt], shrink=0.8, label="probability")
    _bare([*axes, assembled, mask, gt])
    return fig


def plot_fcis(image, box, out: dict, d: int, gt_mask=None, stride: int = 4):
    """FCIS, detection `d`: the k² position-sensitive score maps over the image, every map
    cropped to the box (the cell it contributes outlined), and the assembled logits, the
    mask and the GT."""
    maps, crops = out["score_maps"], out["cell_crops"][d]  # [k², h, w], [k², R, R]
    k, R = int(round(maps.shape[0] ** 0.5)), crops.shape[-1]
    h, w = image.shape[-2:]
    maps = maps[:, : (h + stride - 1) // stride, : (w + stride - 1) // stride]
    fig = plt.figure(figsize=(11, 8.4), layout="constrained")
    upper, lower = fig.subfigures(2, 1, height_ratios=[1.6, 1])
    tiles = upper.subplots(1, 2)
    lim = float(max(maps.abs().max(), crops.abs().max())) or 1.0
    kw = dict(cmap="RdBu_r", vmin=-lim, vmax=lim)
    tiles[0].imshow(_tile(maps, k), **kw)
    tiles[0].set_title(f"the {k}×{k} = {k * k} score maps over the image\n"
                       f"(map i·{k}+j at row i, column j)", fontsize=9)  # fmt: skip
    im = tiles[1].imshow(_tile(crops, k), **kw)
    c = R / k
    for n in range(k * k):  # in tile (i, j), the cell (i, j) is what the assembler keeps
        i, j = divmod(n, k)
        tiles[1].add_patch(plt.Rectangle((j * (R + 1) + j * c - 0.5, i * (R + 1) + i * c - 0.5),
                                         c, c, fill=False, color="k", lw=1.2))  # fmt: skip
    tiles[1].set_title(f"each map cropped to the box ({R}×{R});\n"
                       "outlined: the cell it contributes", fontsize=9)  # fmt: skip
    upper.colorbar(im, ax=tiles, shrink=0.7, label="score (logit)")
    axes = lower.subplots(1, 4)
    axes[0].imshow(to_numpy_image(image), interpolation="nearest")
    _box_patch(axes[0], box)
    axes[0].set_title("the box", fontsize=9)
    logits = out["mask_logits"][d]
    axes[1].imshow(logits, **kw)
    for t in range(1, k):
        axes[1].axhline(t * c - 0.5, color="k", lw=0.4)
        axes[1].axvline(t * c - 0.5, color="k", lw=0.4)
    axes[1].set_title(f"assembled logits: cell (i, j)\nfrom map (i, j), {R}×{R}", fontsize=9)
    im = axes[2].imshow(out["masks"][d], cmap="gray", vmin=0, vmax=1)
    axes[2].set_title("mask σ(logits)", fontsize=9)
    if gt_mask is not None:
        axes[3].imshow(gt_mask, cmap="gray", vmin=0, vmax=1)
        axes[3].set_title("GT mask in the box", fontsize=9)
    lower.colorbar(im, ax=axes[2:], shrink=0.8, label="probability")
    _bare([*tiles, *axes])
    return fig


def plot_roi(image, box, out: dict, d: int, gt_mask=None, show: int = 6):
    """Mask R-CNN head, detection `d`: the image and box with the FPN level it was pooled
    from, the `show` RoI-feature channels of largest variance (14×14), the logits of the
    box's class (28×28), the mask and the GT."""
    feats = out["roi_features"][d]  # [D, 14, 14]
    top = feats.flatten(1).var(dim=1).argsort(descending=True)[:show].tolist()
    fig = plt.figure(figsize=(2.0 * show, 4.6), layout="constrained")
    upper, lower = fig.subfigures(2, 1)
    axes = upper.subplots(1, show)
    lim = float(feats[top].abs().max()) or 1.0
    for ax, ch in zip(axes, top):
        im = ax.imshow(feats[ch], cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(f"channel {ch}", fontsize=8)
    upper.colorbar(im, ax=axes, shrink=0.8, label="RoI feature")
    S = feats.shape[-1]
    upper.suptitle(f"RoIAlign of the box on P{int(out['levels'][d])}: [{feats.shape[0]}, {S}, "
                   f"{S}]; the {show} channels that vary most", fontsize=9)  # fmt: skip
    ax_img, ax_log, ax_mask, ax_gt = lower.subplots(1, 4)
    ax_img.imshow(to_numpy_image(image), interpolation="nearest")
    _box_patch(ax_img, box)
    ax_img.set_title(f"the box (pooled from P{int(out['levels'][d])})", fontsize=8)
    R = out["masks"].shape[-1]
    _signed(ax_log, out["mask_logits"][d], f"logits of its class, {R}×{R}", lower)
    im = ax_mask.imshow(out["masks"][d], cmap="gray", vmin=0, vmax=1)
    ax_mask.set_title("mask σ(logits)", fontsize=8)
    if gt_mask is not None:
        ax_gt.imshow(gt_mask, cmap="gray", vmin=0, vmax=1)
        ax_gt.set_title("GT mask in the box", fontsize=8)
    lower.colorbar(im, ax=[ax_mask, ax_gt], shrink=0.8, label="probability")
    _bare([*axes, ax_img, ax_log, ax_mask, ax_gt])
    return fig


# ---------------------------------------------------------------------------------------
# One detection, every branch
# ---------------------------------------------------------------------------------------

MIXING_TITLES = {
    "blender": "which basis weighs most\n(argmax$_k$ s$_k$, soft, learned)",
    "yolact": "one coefficient per prototype\n(the same at every pixel)",
    "fcis": "which score map each pixel\nreads (fixed k×k cells)",
    "roi": "no mixing: RoI features\n(mean |feature| of 14×14)",
}


def _mixing(ax, fig, kind: str, out: dict, d: int) -> None:
    """The panel that shows how a branch combines its inputs for detection d."""
    if kind == "blender":
        s = out["attention_weights"][d]  # [K, R, R]
        K = s.shape[0]
        im = ax.imshow(s.argmax(0), cmap="tab10", vmin=-0.5, vmax=9.5, interpolation="nearest")
        bar = fig.colorbar(im, ax=ax, shrink=0.8, ticks=range(K))
        bar.ax.set_ylim(-0.5, K - 0.5)
        bar.ax.set_yticklabels([f"basis {k + 1}" for k in range(K)], fontsize=7)
    elif kind == "yolact":
        c = out["coefficients"][d]
        ax.bar(range(len(c)), c.numpy(), color=["tab:red" if v > 0 else "tab:blue" for v in c])
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylim(-1, 1)
        ax.set_xlabel("prototype k", fontsize=7)
        ax.tick_params(labelsize=7)
    elif kind == "fcis":
        index = out["cell_index"]  # [R, R]
        k = int(round(float(index.max() + 1) ** 0.5))
        checker = (index // k + index % k) % 2  # cells alternate, like a chessboard
        ax.imshow(checker, cmap="Greys", vmin=0, vmax=3, interpolation="nearest")
        R = index.shape[-1]
        for n in range(k * k):
            i, j = divmod(n, k)
            ax.text((j + 0.5) * R / k - 0.5, (i + 0.5) * R / k - 0.5, str(n), fontsize=5,
                    ha="center", va="center")  # fmt: skip
    else:
        im = ax.imshow(out["roi_features"][d].abs().mean(0), cmap="magma")
        fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(MIXING_TITLES[kind], fontsize=8)


def plot_zoo_detection(image, box, outputs: dict[str, dict], gt_mask=None, title: str = ""):
    """One detection under every branch. `outputs`: label → the branch's per-image outputs
    for this one box (`masks_for_detection`). Top row: the image with the box and the GT in
    the box; then one row per branch: how it mixes, its mask logits (signed, own scale), its
    mask at R×R, and the mask pasted into the image (p ≥ 0.5 outlined)."""
    n = len(outputs)
    fig, axes = plt.subplots(n + 1, 4, figsize=(11, 2.5 * (n + 1)), layout="constrained",
                             squeeze=False)  # fmt: skip
    img = to_numpy_image(image)
    H, W = img.shape[:2]
    axes[0, 0].imshow(img, interpolation="nearest")
    _box_patch(axes[0, 0], box)
    axes[0, 0].set_title(title or "the detection", fontsize=8)
    if gt_mask is not None:
        axes[0, 1].imshow(gt_mask, cmap="gray", vmin=0, vmax=1)
        axes[0, 1].set_title("GT mask in the box", fontsize=8)
    else:
        axes[0, 1].set_visible(False)
    axes[0, 2].set_visible(False)
    axes[0, 3].set_visible(False)
    for r, (label, out) in enumerate(outputs.items(), start=1):
        kind = branch_kind(out)
        _mixing(axes[r, 0], fig, kind, out, 0)
        axes[r, 0].set_ylabel(label, fontsize=11, fontweight="bold")
        R = out["masks"].shape[-1]
        _signed(axes[r, 1], out["mask_logits"][0], f"mask logits, {R}×{R}", fig)
        im = axes[r, 2].imshow(out["masks"][0], cmap="gray", vmin=0, vmax=1)
        axes[r, 2].set_title(f"mask σ(logits), {R}×{R}", fontsize=8)
        fig.colorbar(im, ax=axes[r, 2], shrink=0.8)
        pasted = paste_masks(out["masks"][:1], box[None].float(), (H, W))[0]  # [H, W]
        axes[r, 3].imshow(img, interpolation="nearest")
        axes[r, 3].imshow(np.ma.masked_less(pasted.numpy(), 0.5), cmap="autumn", alpha=0.55,
                          vmin=0.5, vmax=1, interpolation="nearest")  # fmt: skip
        axes[r, 3].contour(pasted.numpy(), levels=[0.5], colors="k", linewidths=0.8)
        axes[r, 3].set_title("mask pasted (p ≥ 0.5)", fontsize=8)
    _bare(axes[:, :])
    for r in range(1, n + 1):  # the coefficient bars keep their axis
        if branch_kind(list(outputs.values())[r - 1]) == "yolact":
            axes[r, 0].tick_params(labelbottom=True, labelleft=True, bottom=True, left=True)
            axes[r, 0].set_yticks([-1, 0, 1])
    return fig
