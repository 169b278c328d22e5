"""Training curves from a run's `metrics.jsonl` (one JSON object per logged step).

Two kinds of lines: training steps {"iter", "loss", "loss_cls", ..., "lr", "sec_per_iter"}
and evaluations {"iter", "eval": {"bbox": {"AP", ...}, "segm": {...}}}.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt


def read_metrics(run_dir_or_file) -> tuple[list[dict], list[dict]]:
    """→ (training records, evaluation records), each sorted by iteration."""
    path = Path(run_dir_or_file)
    if path.is_dir():
        path = path / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = sorted((r for r in records if "eval" not in r), key=lambda r: r["iter"])
    evals = sorted((r for r in records if "eval" in r), key=lambda r: r["iter"])
    return train, evals


def plot_training_curves(run_dir_or_file, title: str | None = None):
    """Loss terms (log scale), learning rate, and COCO AP of the evaluations, against iteration."""
    train, evals = read_metrics(run_dir_or_file)
    if not train:
        raise ValueError(f"{run_dir_or_file}: no training records in metrics.jsonl")
    its = [r["iter"] for r in train]
    terms = sorted(k for k in train[0] if k.startswith("loss"))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    for name in terms:
        axes[0].plot(its, [r[name] for r in train], lw=2.2 if name == "loss" else 1.2,
                     label=name)  # fmt: skip
    axes[0].set_yscale("log")
    axes[0].set_title("training losses")
    axes[0].legend(fontsize=7, ncol=2)
    axes[1].plot(its, [r["lr"] for r in train])
    axes[1].set_title("learning rate")
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-2, 2), useOffset=False)
    for kind, marker in (("bbox", "o"), ("segm", "s")):
        points = [(r["iter"], r["eval"][kind]["AP"]) for r in evals if kind in r["eval"]]
        if points:
            axes[2].plot(*zip(*points), marker=marker, label=f"{kind} AP")
    axes[2].set_xlim(axes[0].get_xlim())  # same iterations as the losses, even for one point
    axes[2].set_title("val COCO AP" if evals else "val COCO AP (no evaluation logged)")
    axes[2].set_ylim(0, 1)
    if evals:
        axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig
