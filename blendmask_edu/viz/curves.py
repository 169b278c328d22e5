"""Training curves from a run's metrics.jsonl (`blendmask-edu plot RUN_DIR` → curves.png).

metrics.jsonl holds two kinds of records:

    {"iter": 40, "loss_cls": .., "loss_box": .., ..., "loss": .., "lr": .., ...}   training
    {"iter": 200, "val": {"loss_cls": .., ..., "loss": ..}, "eval": {"bbox": {"AP": ..}, ..}}

Four panels: total loss (train vs val), each loss term (train a line, val circles, one colour
a term), learning rate, box and mask AP (AP circles, AP50 squares, the last value written
beside them, so that one or two evaluations still read). Training losses are noisy, so they
are drawn faint with a moving average on top.

`loss_ctr` cannot reach 0: its targets are soft (centerness* ∈ (0, 1], FCOS Eq. 3), and the
BCE of a prediction against a soft target c is at least the target's own entropy
H(c) = −c·log c − (1 − c)·log(1 − c), reached when the prediction equals c. The mean of H over
a data set's positives is the floor of the curve; `centerness_floor` computes it, and
`plot_curves(..., ctr_floor=...)` draws it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.nn import functional as F

from ..engine.run_folder import read_jsonl

COLORS = plt.get_cmap("tab10").colors


def read_metrics(run_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """→ (training records, evaluation records), each sorted by iteration."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics (is {run_dir} a training run folder?)")
    records = read_jsonl(path)  # a torn last line (a kill mid-write) is skipped with a note
    train = sorted((r for r in records if "loss" in r), key=lambda r: r["iter"])
    evals = sorted((r for r in records if "eval" in r or "val" in r), key=lambda r: r["iter"])
    return train, evals


def smooth(values: list[float], window: int) -> np.ndarray:
    """Moving average over the last `window` values (shorter at the start)."""
    x = np.asarray(values, dtype=float)
    cumsum = np.cumsum(np.insert(x, 0, 0.0))
    starts = np.maximum(np.arange(1, len(x) + 1) - window, 0)
    return (cumsum[1:] - cumsum[starts]) / (np.arange(1, len(x) + 1) - starts)


@torch.inference_mode()
def centerness_floor(dataset, fcos_cfg, num_images: int | None = None, size_divisor: int = 32):
    """The lowest `loss_ctr` possible on `dataset` (module docstring): the mean over all
    positive locations of the first `num_images` images (all by default) of the entropy of
    their centerness target, with the model's own target assignment (`fcos_targets`) on the
    padded image (sides a multiple of `size_divisor`)."""
    from ..modeling.fcos.head import compute_locations, level_of_locations
    from ..modeling.fcos.targets import fcos_targets

    total, positives = 0.0, 0
    for i in range(len(dataset) if num_images is None else min(num_images, len(dataset))):
        image, target = dataset[i]
        H, W = (-(-n // size_divisor) * size_divisor for n in image.shape[-2:])
        sizes = [(-(-H // s), -(-W // s)) for s in fcos_cfg.strides]
        t = fcos_targets(
            compute_locations(sizes, fcos_cfg.strides),
            level_of_locations(sizes),
            [target],
            fcos_cfg.strides,
            fcos_cfg.sizes_of_interest,
            fcos_cfg.center_sample_radius,
        )
        c = t.centerness[t.labels > 0].clamp(1e-6, 1 - 1e-6)  # [P] the soft targets
        total += float(F.binary_cross_entropy(c, c, reduction="sum"))  # Σ H(c)
        positives += len(c)
    return total / max(positives, 1)


def plot_curves(run_dir: str | Path, ctr_floor: float | None = None):
    """The four-panel figure of a run (see the module docstring); `ctr_floor` (from
    `centerness_floor`) draws the lowest value `loss_ctr` can take."""
    train, evals = read_metrics(run_dir)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    (ax_loss, ax_terms), (ax_lr, ax_ap) = axes
    iters = [r["iter"] for r in train]
    window = max(1, len(train) // 20)
    terms = [k for k in (train[0] if train else {}) if k.startswith("loss_")]
    val = [r for r in evals if r.get("val")]
    val_iters = [r["iter"] for r in val]

    label = f"train (mean of {window})" if window > 1 else "train"
    _train_line(ax_loss, iters, [r["loss"] for r in train], window, "black", label)
    if val:
        ax_loss.plot(
            val_iters, [r["val"]["loss"] for r in val], "o--", color="tab:red", label="val"
        )
    _style(ax_loss, "total loss", "loss")
    for color, term in zip(COLORS, terms):
        _train_line(ax_terms, iters, [r[term] for r in train], window, color, term, faint=False)
        if val:
            values = [r["val"].get(term, np.nan) for r in val]
            ax_terms.plot(val_iters, values, "o--", color=color, ms=5, lw=0.8)
        if term == "loss_ctr" and ctr_floor is not None:
            ax_terms.axhline(ctr_floor, color=color, ls=":", lw=1.2)
            ax_terms.annotate(f"loss_ctr floor {ctr_floor:.3f}\n(entropy of the soft targets)",
                              (0.5, ctr_floor), xycoords=("axes fraction", "data"),
                              ha="center", va="top", fontsize=7, color=color)  # fmt: skip
    ax_terms.plot([], [], "k-", label="train (line)")
    ax_terms.plot([], [], "ko--", ms=5, lw=0.8, label="val (circles)")
    _style(ax_terms, "loss terms", "loss", legend=False)
    ax_terms.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # off the lines

    ax_lr.plot(iters, [r.get("lr", np.nan) for r in train], color="tab:green")
    _style(ax_lr, "learning rate", "lr", legend=False)

    aps = [r for r in evals if r.get("eval")]
    for kind, label, color in (("bbox", "box AP", "tab:blue"), ("segm", "mask AP", "tab:orange")):
        points = [(r["iter"], r["eval"][kind]) for r in aps if kind in r["eval"]]
        if points:
            x = [i for i, _ in points]
            for key, marker, style in (("AP", "o", "-"), ("AP50", "s", ":")):
                y = [m[key] for _, m in points]
                name = label + ("50" if key == "AP50" else "")
                ax_ap.plot(x, y, marker=marker, ls=style, color=color, ms=7, label=name)
                ax_ap.annotate(f"{name} {y[-1]:.3f}", (x[-1], y[-1]), xytext=(-8, 0),
                               textcoords="offset points", ha="right", va="center",
                               fontsize=7, color=color)  # fmt: skip
    _style(ax_ap, "COCO AP on the val set", "AP", legend=bool(aps))
    if aps:
        ax_ap.set_ylim(0, 1)
    if not val:
        # bottom left: a falling loss curve is not there
        ax_loss.text(0.03, 0.05, "no validation losses in this run", transform=ax_loss.transAxes,
                     ha="left", color="gray")  # fmt: skip
    last = max(iters + [r["iter"] for r in evals], default=1)
    for ax in axes.flat:  # one iteration axis for the four panels
        ax.set_xlim(0, last * 1.02)
    plural = "" if len(evals) == 1 else "s"
    fig.suptitle(f"{Path(run_dir).resolve().name}: {len(train)} logged iterations, "
                 f"{len(evals)} evaluation{plural}")  # fmt: skip
    fig.tight_layout()
    return fig


def _train_line(ax, iters, values, window, color, label, faint=True) -> None:
    """Raw values faint (when `faint`), their moving average solid and labelled."""
    if faint and window > 1:
        ax.plot(iters, values, color=color, alpha=0.25, lw=0.8)
    ax.plot(iters, smooth(values, window), color=color, lw=1.6, label=label)


def _style(ax, title: str, ylabel: str, legend: bool = True) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)


def save_curves(run_dir: str | Path) -> Path:
    """Write RUN_DIR/curves.png and return its path."""
    fig = plot_curves(run_dir)
    path = Path(run_dir) / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
