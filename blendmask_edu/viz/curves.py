"""Training curves from a run's metrics.jsonl (`blendmask-edu plot RUN_DIR` → curves.png).

metrics.jsonl holds two kinds of records:

    {"iter": 40, "loss_cls": .., "loss_box": .., ..., "loss": .., "lr": .., ...}   training
    {"iter": 200, "val": {"loss_cls": .., ..., "loss": ..}, "eval": {"bbox": {"AP": ..}, ..}}

Four panels: total loss (train vs val), each loss term (train solid, val dashed, one colour a
term), learning rate, box and mask AP. Training losses are noisy, so they are drawn faint with
a moving average on top.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

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


def plot_curves(run_dir: str | Path):
    """The four-panel figure of a run (see the module docstring)."""
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
            ax_terms.plot(val_iters, values, "o--", color=color, ms=4)
    ax_terms.plot([], [], "k-", label="train (solid)")
    ax_terms.plot([], [], "ko--", ms=4, label="val (dashed)")
    _style(ax_terms, "loss terms", "loss", legend=False)
    ax_terms.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # off the lines

    ax_lr.plot(iters, [r.get("lr", np.nan) for r in train], color="tab:green")
    _style(ax_lr, "learning rate", "lr", legend=False)

    aps = [r for r in evals if r.get("eval")]
    for kind, label, color in (("bbox", "box AP", "tab:blue"), ("segm", "mask AP", "tab:orange")):
        points = [(r["iter"], r["eval"][kind]) for r in aps if kind in r["eval"]]
        if points:
            x = [i for i, _ in points]
            ax_ap.plot(x, [m["AP"] for _, m in points], "o-", color=color, label=label)
            ax_ap.plot(x, [m["AP50"] for _, m in points], "o:", color=color, label=label + "50")
    _style(ax_ap, "COCO AP on the val set", "AP", legend=bool(aps))
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
