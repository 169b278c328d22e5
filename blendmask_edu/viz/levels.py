"""Per-location values of FCOS, drawn back as one map per FPN level (P3..P7).

FCOS flattens its outputs over levels and cells into [L, ·] (level-major, row-major, see
`flatten_levels`); `split_levels` undoes that, and `plot_levels` draws each level's map
stretched over the image (a cell of stride s covers s×s pixels) so the levels line up.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch


def split_levels(flat: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """[L, ...] → per level [h_i, w_i, ...], with L = Σ h_i·w_i."""
    counts = [h * w for h, w in sizes]
    if flat.shape[0] != sum(counts):
        raise ValueError(f"{flat.shape[0]} locations, but the level sizes give {sum(counts)}")
    parts = torch.split(flat, counts)
    return [p.reshape(h, w, *flat.shape[1:]) for p, (h, w) in zip(parts, sizes)]


def plot_levels(
    image: torch.Tensor,  # [3, H, W]
    flat: torch.Tensor,  # [L] one value per location
    sizes: list[tuple[int, int]],  # (h_i, w_i) per level
    strides,
    title: str,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    boxes: torch.Tensor | None = None,  # [G, 4] drawn on every panel
    categorical: bool = False,  # integer ids, −1 = none (e.g. the matched GT of each cell)
):
    """The image, then one panel per level; one shared colour bar (unless categorical)."""
    maps = split_levels(flat.detach().float().cpu(), sizes)
    n = len(maps)
    fig, axes = plt.subplots(1, n + 1, figsize=(2.6 * (n + 1) + 0.8, 2.9), layout="constrained")
    H, W = image.shape[-2:]
    axes[0].imshow(image.permute(1, 2, 0).clamp(0, 1).cpu(), interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    if categorical:
        vmin, vmax, cmap = -0.5, 9.5, "tab10"
    else:
        vmin = float(flat.min()) if vmin is None else vmin
        vmax = float(flat.max()) if vmax is None else vmax
    for level, (ax, m, s) in enumerate(zip(axes[1:], maps, strides)):
        h, w = m.shape
        ax.imshow(
            image.permute(1, 2, 0).clamp(0, 1).cpu().mean(-1),
            cmap="gray",
            alpha=0.35,
            interpolation="nearest",
        )
        shown = np.ma.masked_less(m.numpy(), 0) if categorical else m.numpy()
        im = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, alpha=0.85,
                       extent=(0, w * s, h * s, 0))  # fmt: skip
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
        ax.set_title(f"P{level + 3} (stride {s}, {h}×{w})", fontsize=9)
    for ax in axes:
        if boxes is not None:  # categorical: box g in the colour of id g, so they match
            for g, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
                color = plt.get_cmap("tab10")(g % 10) if categorical else "w"
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=color,
                                           lw=1.2))  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
    if not categorical:
        fig.colorbar(im, ax=axes[1:].tolist(), shrink=0.85, aspect=25)
    fig.suptitle(title, fontsize=10)
    return fig
