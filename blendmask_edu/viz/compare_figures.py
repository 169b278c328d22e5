"""Figures of `blendmask-edu compare`: AP bars with seed error bars, and the same val images
under every row of the table (ground truth first)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .overlay import PALETTE, draw_instances

BARS = (  # (measured key, legend)
    ("mask_AP", "mask AP"),
    ("mask_AP_gt_boxes", "mask AP, GT boxes"),
    ("mask_AP75", "mask AP75"),
    ("box_AP", "box AP"),
)


def plot_comparison(table: list[dict]):
    """Grouped bars: one group per row of the table, one bar per metric, ± std over seeds."""
    labels = [r["row"] for r in table]
    x = np.arange(len(labels))
    width = 0.8 / len(BARS)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(labels) + 2), 4))
    for i, (key, legend) in enumerate(BARS):
        means = [r[key]["mean"] for r in table]
        stds = [r[key]["std"] for r in table]
        ax.bar(
            x + (i - (len(BARS) - 1) / 2) * width,
            means,
            width,
            yerr=stds,
            capsize=3,
            label=legend,
            color=PALETTE[i],
        )
    ax.set_xticks(x, [label.replace(" (", "\n(") for label in labels], fontsize=8)
    ax.set_ylabel("COCO AP (val)")
    ax.set_ylim(0, 1)
    seeds = len(table[0]["mask_AP"]["values"])
    ax.set_title(
        "Mask branches compared: same data, detector architecture, loop and budget;\n"
        "each run trains its own detector from the same ImageNet-pretrained backbone\n"
        f"({seeds} seed{'s' if seeds > 1 else ''}; bars: mean ± std)",
        fontsize=9,
    )
    ax.legend(ncols=len(BARS), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def pick_images(dataset, num: int = 4, min_instances: int = 2) -> list[int]:
    """The first `num` images with at least `min_instances` non-crowd instances (then any)."""

    def count(i):
        anns = dataset.coco.imgToAnns[dataset.image_ids[i]]
        return sum(not a.get("iscrowd", 0) for a in anns)

    chosen = [i for i in range(len(dataset)) if count(i) >= min_instances]
    return (chosen + [i for i in range(len(dataset)) if i not in chosen])[:num]


@torch.inference_mode()
def plot_qualitative(
    run_dirs: dict[str, Path], val_path, num_images: int = 4, score_thresh: float = 0.5
):
    """Rows: val images; columns: ground truth, then each run's predictions (score ≥ 0.5)."""
    from ..data.coco import CocoInstances
    from ..data.transforms import build_transforms
    from ..engine.checkpoint import model_from_checkpoint
    from ..engine.trainer import CHECKPOINT

    loaded = {label: model_from_checkpoint(Path(d) / CHECKPOINT) for label, d in run_dirs.items()}
    models = {label: model for label, (model, _, _) in loaded.items()}
    cfg = next(iter(loaded.values()))[1]
    val = CocoInstances(val_path, build_transforms(cfg.data, train=False))
    indices = pick_images(val, num_images)
    cols = 1 + len(models)
    fig, axes = plt.subplots(
        len(indices), cols, figsize=(2.4 * cols, 2.4 * len(indices)), squeeze=False
    )
    for r, i in enumerate(indices):
        image, target = val[i]
        draw_instances(axes[r, 0], image, target, val.class_names, 0.0)
        for c, model in enumerate(models.values(), start=1):
            draw_instances(axes[r, c], image, model([image])[0], val.class_names, score_thresh)
    for c, label in enumerate(["ground truth", *models], start=0):
        axes[0, c].set_title(label, fontsize=10)
    fig.tight_layout()
    return fig
