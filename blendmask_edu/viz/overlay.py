"""Instances drawn over an image: contoured masks with a light fill, boxes, "label score" tags."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

PALETTE = plt.get_cmap("tab10").colors


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] float in [0, 1] → [H, W, 3]."""
    return image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()


def instance_color(instance_id: int) -> tuple[float, float, float]:
    """The colour of instance `instance_id` (its index in the result it comes from): the same
    instance has the same colour in every figure that passes its id."""
    return PALETTE[int(instance_id) % len(PALETTE)]


def draw_instances(
    ax,
    image,
    result: dict,
    class_names=None,
    score_thresh: float = 0.3,
    alpha: float = 0.3,
    ids=None,
) -> None:
    """Draw `result` ({"boxes", "labels"[, "scores", "masks"]}) over `image` on axes `ax`.

    Each instance: its mask as a light fill (`alpha`) with a solid contour (white under the
    colour, so it shows on any background), its box dashed, a "label score" tag. Instance i
    gets colour `instance_color(ids[i])` (default ids: 0, 1, 2, ... = its index in `result`),
    so that an object keeps its colour from one figure to the next whatever `score_thresh`
    hides; pass `ids` when `result` is a slice of a larger result."""
    canvas = to_numpy_image(image).copy() if torch.is_tensor(image) else np.asarray(image) / 255.0
    scores = result.get("scores", torch.ones(len(result["boxes"])))
    ids = list(range(len(result["boxes"]))) if ids is None else [int(i) for i in ids]
    keep = (scores >= score_thresh).nonzero().flatten().tolist()
    masks = {}
    for i in keep:
        if "masks" in result:
            m = result["masks"][i].detach().cpu().numpy() > 0.5
            masks[i] = m
            color = np.array(instance_color(ids[i]))
            canvas[m] = (1 - alpha) * canvas[m] + alpha * color
    ax.imshow(canvas, interpolation="nearest")  # pixels as they are (and small PNGs)
    for i, m in masks.items():
        if m.any():
            color = instance_color(ids[i])
            ax.contour(m.astype(float), levels=[0.5], colors=["white"], linewidths=2.6)
            ax.contour(m.astype(float), levels=[0.5], colors=[color], linewidths=1.4)
    placed: list[tuple[float, float, float, float]] = []  # tags drawn so far (x0, y0, x1, y1)
    for i in keep:
        x0, y0, x1, y1 = result["boxes"][i].tolist()
        color = instance_color(ids[i])
        style = "--" if "masks" in result else "-"  # a mask's box is secondary to its contour
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=color,
                                   lw=1.2, ls=style))  # fmt: skip
        label = int(result["labels"][i])
        name = class_names[label - 1] if class_names else str(label)
        text = f"{name} {float(scores[i]):.2f}" if "scores" in result else name
        tx, ty = _tag_position(ax, canvas.shape[0], text, (x0, y0, x1, y1), placed)
        ax.text(tx, ty, text, fontsize=7, color="white", va="top",
                bbox=dict(facecolor=color, alpha=0.85, pad=1, lw=0))  # fmt: skip
    ax.set_axis_off()


def _tag_position(ax, image_height: int, text: str, box, placed: list) -> tuple[float, float]:
    """Where to put a box's tag so it does not cover earlier tags: above the box's top-left
    corner, else inside it, else below it. Sizes are estimated from the axes' size on the
    figure (7-point text), in image pixels; `placed` is updated."""
    x0, y0, x1, y1 = box
    per_px = max(ax.bbox.height, 1.0) / image_height  # screen pixels per image pixel
    points = ax.figure.dpi / 72 / per_px  # image pixels per typographic point
    h, w = 10 * points, (0.6 * 7 * len(text) + 3) * points
    for top in (y0 - h, y0, y1):  # above, inside, below
        rect = (x0, top, x0 + w, top + h)
        if not any(r[0] < rect[2] and rect[0] < r[2] and r[1] < rect[3] and rect[1] < r[3]
                   for r in placed):  # fmt: skip
            break
    else:
        rect = (x0, y0 - h, x0 + w, y0)  # nowhere free: the usual place
    placed.append(rect)
    return rect[0], rect[1]


def save_overlay(image, result: dict, path, class_names=None, score_thresh: float = 0.3) -> None:
    """Write the overlay as a PNG twice the image's size. A bare `Figure` (no pyplot), so
    no GUI backend is involved and nobody's backend is switched (notebooks keep theirs)."""
    h, w = image.shape[-2:] if torch.is_tensor(image) else np.asarray(image).shape[:2]
    fig = Figure(figsize=(w / 100 * 2, h / 100 * 2), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    draw_instances(ax, image, result, class_names, score_thresh)
    fig.savefig(path)


def predictions_grid(
    images, results, targets=None, class_names=None, score_thresh=0.3, cols: int = 4
):
    """A figure: one column per image, predictions (top row) and, given, ground truth (below)."""
    rows = 2 if targets is not None else 1
    n = len(images)
    fig, axes = plt.subplots(
        rows * ((n + cols - 1) // cols),
        cols,
        figsize=(3 * cols, 3 * rows * ((n + cols - 1) // cols)),
        squeeze=False,
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (image, result) in enumerate(zip(images, results)):
        r, c = divmod(i, cols)
        draw_instances(axes[r * rows, c], image, result, class_names, score_thresh)
        axes[r * rows, c].set_title("prediction", fontsize=8)
        if targets is not None:
            draw_instances(axes[r * rows + 1, c], image, targets[i], class_names, 0.0)
            axes[r * rows + 1, c].set_title("ground truth", fontsize=8)
    fig.tight_layout()
    return fig
