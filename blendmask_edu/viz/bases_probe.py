"""What do the learned bases encode? Measurements over a dataset, and their figures.

The BlendMask paper (Chen et al. 2020) pictures learned bases with position-sensitive and
semantic patterns. These probes ask what our own model's bases encode, per basis k, at the
bases' resolution (1/4 of the input):

* `region_means`   — mean value on background cells, on cells at an object's edge, and on
                     object interiors;
* `position_correlation` — correlation of the basis value with x and with y;
* `class_means`    — mean value on the interiors of each class;
* `in_box_means`   — the basis cropped to every GT box (R×R), averaged: a pattern fixed to
                     the box (left/right, centre/border) shows here;
* the mean and spread over detections of the attention weights (softmax over K), which say
  how much each detection's attention differs from the others;
* `knockout_iou`   — mask IoU against the GT when basis k is switched off: Eq. 3's softmax
                     taken over the other K − 1 bases only (`blend_without`), so the weights
                     still sum to 1 and the mask is what the remaining bases say. (Setting
                     r_k to 0 instead would leave logits ≈ 0 where basis k dominated, which the
                     threshold reads as background: a basis whose job is to say "background"
                     would look useless.) Masks are thresholded as everywhere in the library:
                     probability σ(m) > 0.5, i.e. logit m > 0.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.nn import functional as F

from ..modeling.blender import blend, crop_bases, upsample_attention
from .blendmask_figures import gt_crop_for


def cell_regions(masks: torch.Tensor, stride: int = 4) -> dict[str, torch.Tensor]:
    """Instance masks [G, H, W] → boolean maps [h, w] on the bases grid (h = ⌈H/stride⌉):
    "interior" (inside an object, not at its edge), "edge" (within one cell of an object's
    border, inside or out), "background" (neither)."""
    H, W = masks.shape[-2:]
    h, w = -(-H // stride), -(-W // stride)
    if len(masks) == 0:
        empty = torch.zeros((h, w), dtype=torch.bool)
        return {"interior": empty, "edge": empty.clone(), "background": ~empty}
    m = F.pad(masks[:, None].float(), (0, w * stride - W, 0, h * stride - H))
    cells = F.avg_pool2d(m, stride) > 0.5  # [G, 1, h, w] a cell belongs to an object
    grow = F.max_pool2d(cells.float(), 3, 1, 1) > 0  # one cell more
    shrink = -F.max_pool2d(-cells.float(), 3, 1, 1) > 0  # one cell less
    edge = (grow & ~shrink).any(0)[0]
    interior = (shrink.any(0)[0]) & ~edge
    return {"interior": interior, "edge": edge, "background": ~(interior | edge)}


def region_means(bases: torch.Tensor, regions: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mean of each basis [K, h, w] over each region → name: [K] (NaN for an empty region)."""
    return {name: bases[:, r].mean(dim=1) for name, r in regions.items()}


def position_correlation(bases: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each basis [K, h, w] with the cell's x and y → [K, 2]."""
    K, h, w = bases.shape
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    v = bases.reshape(K, -1) - bases.reshape(K, -1).mean(1, keepdim=True)  # [K, h·w]
    out = []
    for coord in (xs, ys):
        c = coord.flatten() - coord.mean()
        out.append((v @ c) / (v.norm(dim=1) * c.norm()).clamp(min=1e-12))
    return torch.stack(out, dim=1)


@torch.inference_mode()
def probe_bases(model, dataset, num_images: int, R: int = 28, min_score: float = 0.3) -> dict:
    """Run `model` on the first `num_images` of `dataset` and measure its bases (module
    docstring). Returns tensors: region means [3, K] (interior, edge, background), position
    correlation [K, 2], class means [K, C], in-box means [K, R, R], and attention-weight mean
    and std over detections with score ≥ min_score [K, R, R] (+ the count)."""
    K = model.mask_branch.cfg.K
    C = model.fcos.cfg.num_classes
    sums = {"interior": 0, "edge": 0, "background": 0}
    counts = dict.fromkeys(sums, 0)
    corr, box_sum, n_boxes = [], torch.zeros(K, R, R), 0
    cls_sum, cls_n = torch.zeros(K, C), torch.zeros(C)
    att = []
    for i in range(num_images):
        image, target = dataset[i]
        run = model.run([image])
        bases = run["masks"][0]["bases"].float().cpu()  # [K, Hp/4, Wp/4]
        regions = cell_regions(target["masks"])
        h, w = regions["interior"].shape
        bases = bases[:, :h, :w]
        for name, r in regions.items():
            sums[name] = sums[name] + bases[:, r].sum(1)
            counts[name] += int(r.sum())
        corr.append(position_correlation(bases))
        for mask, label in zip(target["masks"], target["labels"]):
            inner = cell_regions(mask[None])["interior"]
            cls_sum[:, label - 1] += bases[:, inner].sum(1)
            cls_n[label - 1] += int(inner.sum())
        if len(target["boxes"]):
            crops = crop_bases(bases[None], target["boxes"], torch.zeros(len(target["boxes"])), R)
            box_sum += crops.sum(0)
            n_boxes += len(crops)
        det = run["fcos"]["detections"][0]
        keep = det["scores"] >= min_score
        if keep.any():
            att.append(run["masks"][0]["attention_weights"][keep].float().cpu())
    att = torch.cat(att) if att else torch.zeros(0, K, R, R)
    return {
        "regions": ("interior", "edge", "background"),
        "region_means": torch.stack([sums[n] / max(counts[n], 1) for n in sums]),  # [3, K]
        "position_correlation": torch.stack(corr).mean(0),  # [K, 2]
        "class_means": cls_sum / cls_n.clamp(min=1),  # [K, C]
        "in_box_means": box_sum / max(n_boxes, 1),  # [K, R, R]
        "attention_mean": att.mean(0) if len(att) else torch.zeros(K, R, R),
        "attention_std": att.std(0) if len(att) > 1 else torch.zeros(K, R, R),
        "num_detections": len(att),
    }


ROLES = {
    "objects": "inside objects minus background",
    "edges": "on edges, beyond both inside and background",
    "left-right": "left half of a box minus its right half",
    "top-bottom": "top half of a box minus its bottom half",
}


def basis_roles(stats: dict) -> list[dict]:
    """A measured role for each basis (from `probe_bases`' statistics), so that a notebook
    names a basis by what it does in *this* model, not by its index, which another training
    run permutes. Four contrasts, in the basis's own units (module docstring):

        objects     mean(interior) − mean(background)
        edges       how far mean(edge) lies above the larger (or below the smaller) of
                    mean(interior) and mean(background); 0 when it lies between them
        left-right  in-box mean over the left half − over the right half
        top-bottom  in-box mean over the top half − over the bottom half

    The role is the contrast of largest magnitude, with its sign; a second contrast at least
    half as large is kept as "also" (None otherwise) → per basis {"basis": k (0-based),
    "role": name, "value": contrast, "label": the role's short name *with its sign* ("high
    on objects" or "high on background", "left side" or "right side", ...), "also": name or
    None, "contrasts": {name: value}}. Name a basis by its "label", not by "role": a basis
    that is lower inside objects than on background has role "objects" but is a background
    basis."""
    interior, edge, background = stats["region_means"]  # [K] each
    box = stats["in_box_means"]  # [K, R, R]
    half = box.shape[-1] // 2
    hi, lo = torch.maximum(interior, background), torch.minimum(interior, background)
    contrasts = {
        "objects": interior - background,
        # how far the edge value lies outside [min, max] of interior and background (0 inside)
        "edges": (edge - hi).clamp(min=0) + (edge - lo).clamp(max=0),
        "left-right": box[:, :, :half].mean((1, 2)) - box[:, :, -half:].mean((1, 2)),
        "top-bottom": box[:, :half].mean((1, 2)) - box[:, -half:].mean((1, 2)),
    }
    roles = []
    for k in range(len(interior)):
        values = {name: float(c[k]) for name, c in contrasts.items()}
        role, second = sorted(values, key=lambda n: -abs(values[n]))[:2]
        also = second if abs(values[second]) >= 0.5 * abs(values[role]) else None
        label = _role_names(role, values[role])[0]
        roles.append(
            {"basis": k, "role": role, "value": values[role], "label": label, "also": also,
             "contrasts": values}
        )  # fmt: skip
    return roles


def role_text(role: dict) -> str:
    """'basis 2: lower inside objects than on background (objects −3.10, edges ...)'."""
    words = _role_names(role["role"], role["value"])[1]
    if role.get("also"):
        words += ", and " + _role_names(role["also"], role["contrasts"][role["also"]])[1]
    others = ", ".join(f"{n} {v:+.2f}" for n, v in role["contrasts"].items())
    return f"basis {role['basis'] + 1}: {words} ({others})"


# Each role, by the sign of its contrast: (short label, words for a sentence).
_ROLE_NAMES = {
    ("objects", 1): ("high on objects", "higher inside objects than on background"),
    ("objects", -1): ("high on background", "lower inside objects than on background"),
    ("edges", 1): ("peaks on edges", "peaks on object edges"),
    ("edges", -1): ("dips on edges", "dips on object edges"),
    ("left-right", 1): ("left side", "higher on the left side of a box"),
    ("left-right", -1): ("right side", "higher on the right side of a box"),
    ("top-bottom", 1): ("top side", "higher on the top side of a box"),
    ("top-bottom", -1): ("bottom side", "higher on the bottom side of a box"),
}


def _role_names(role: str, value: float) -> tuple[str, str]:
    """(label, words) of a role whose contrast is `value`."""
    return _ROLE_NAMES[(role, 1 if value >= 0 else -1)]


def box_zones(R: int) -> dict[str, torch.Tensor]:
    """Five disjoint zones of an R×R grid over a box that together cover it → name: [R, R]
    bool. "centre": the middle half in each direction (rows and columns R//4 .. R − R//4);
    the ring around it split into its "top", "bottom", "left" and "right" sides, each ring
    pixel going to the box side it is nearest to (ties in that order)."""
    q = R // 4
    centre = torch.zeros(R, R, dtype=torch.bool)
    centre[q : R - q, q : R - q] = True
    ys, xs = torch.meshgrid(torch.arange(R), torch.arange(R), indexing="ij")
    distance = torch.stack([ys, R - 1 - ys, xs, R - 1 - xs])  # to top, bottom, left, right
    nearest = distance.argmin(0)  # the first of equal distances: ties go top, bottom, left
    zones = {"centre": centre}
    for i, side in enumerate(("top", "bottom", "left", "right")):
        zones[side] = (nearest == i) & ~centre
    return zones


def _mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU of binary masks [N, R, R] vs [N, R, R] → [N]."""
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float()
    return inter / union.clamp(min=1)


def blend_without(
    basis_crops: torch.Tensor,  # [N, K, R, R]
    attention: torch.Tensor,  # [N, K, M, M]
    k: int | list[int],
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Eq. 2–4 with basis k (or the bases in list k) switched off: the softmax over the other
    bases only → mask logits [N, R, R]. k = −1 switches nothing off (= `blend`)."""
    off = {k} if isinstance(k, int) else set(k)
    off.discard(-1)
    if not off:
        return blend(basis_crops, attention, interpolation)["mask_logits"]
    others = [j for j in range(basis_crops.shape[1]) if j not in off]
    upsampled = upsample_attention(attention[:, others], basis_crops.shape[-1], interpolation)
    weights = upsampled.softmax(dim=1)  # over the K − 1 remaining bases   [N, K − 1, R, R]
    return (weights * basis_crops[:, others]).sum(dim=1)


@torch.inference_mode()
def knockout_iou(model, dataset, num_images: int, min_score: float = 0.3) -> torch.Tensor:
    """Mean mask IoU (in the box, R×R, σ(m) > 0.5) of the detections with score ≥ min_score
    against the GT instance they overlap most (box IoU ≥ 0.5), with all bases and with basis k
    switched off (`blend_without`: softmax over the other K − 1) → [K + 1] (index 0: all
    bases; index k: without basis k). Needs K ≥ 2."""
    from torchvision.ops import box_iou

    cfg = model.mask_branch.cfg
    ious = []
    for i in range(num_images):
        image, target = dataset[i]
        run = model.run([image])
        det, mb = run["fcos"]["detections"][0], run["masks"][0]
        keep = (det["scores"] >= min_score).nonzero().flatten().tolist()
        if not keep or len(target["boxes"]) == 0:
            continue
        overlap = box_iou(det["boxes"][keep], target["boxes"]).max(1).values  # [n]
        keep = [d for d, o in zip(keep, overlap.tolist()) if o >= 0.5]
        if not keep:
            continue
        gt = torch.stack([gt_crop_for(det["boxes"][d], target, cfg.R) for d in keep]).bool()
        crops, att = mb["basis_crops"][keep], mb["attention"][keep]  # [n, K, R, R], [n, K, M, M]
        row = []
        for k in range(-1, cfg.K):  # −1: nothing switched off
            logits = blend_without(crops, att, k, cfg.interpolation)
            row.append(_mask_iou(logits > 0, gt))  # σ(m) > 0.5
        ious.append(torch.stack(row, 1))  # [n, K + 1]
    return torch.cat(ious).mean(0) if ious else torch.zeros(cfg.K + 1)


def plot_probe(stats: dict, class_names: list[str]):
    """Two rows: per basis the in-box mean, the mean attention weight and its spread over
    detections; then bars of the region means and a class × basis table."""
    K = stats["in_box_means"].shape[0]
    fig = plt.figure(figsize=(3.0 * K + 1.5, 9.8), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[3, 1.3])
    axes = top.subplots(3, K)
    std_max = max(float(stats["attention_std"].max()), 1e-3)
    rows = [
        (stats["in_box_means"], "mean crop in GT boxes", "RdBu_r", None),
        (stats["attention_mean"], "mean attention weight", "viridis", (0, 1)),
        (stats["attention_std"], "its std over detections", "magma", (0, std_max)),
    ]
    for row, (maps, name, cmap, limits) in enumerate(rows):
        lim = float(maps.abs().max()) or 1.0
        vmin, vmax = limits if limits else (-lim, lim)
        for k in range(K):
            im = axes[row, k].imshow(maps[k], cmap=cmap, vmin=vmin, vmax=vmax)
            axes[row, k].set_title(f"basis {k + 1}: {name}", fontsize=8)
            axes[row, k].set_xticks([])
            axes[row, k].set_yticks([])
        top.colorbar(im, ax=axes[row, :].tolist(), shrink=0.85)
    ax_bar, ax_cls = bottom.subplots(1, 2, width_ratios=[1, 1.3])
    width = 0.8 / len(stats["regions"])
    xs = np.arange(K)
    for j, name in enumerate(stats["regions"]):
        ax_bar.bar(xs + j * width, stats["region_means"][j].numpy(), width, label=name)
    ax_bar.axhline(0, color="k", lw=0.6)
    ax_bar.set_xticks(xs + width, [f"basis {k + 1}" for k in range(K)])
    ax_bar.set_title("mean value by region", fontsize=9)
    ax_bar.legend(fontsize=8)
    cm = stats["class_means"]
    lim = float(cm.abs().max()) or 1.0
    im = ax_cls.imshow(cm, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax_cls.set_xticks(range(len(class_names)), class_names, fontsize=8)
    ax_cls.set_yticks(range(K), [f"basis {k + 1}" for k in range(K)], fontsize=8)
    for k in range(K):
        for c in range(len(class_names)):
            v = float(cm[k, c])
            ax_cls.text(c, k, f"{v:.1f}", ha="center", va="center", fontsize=8,
                        color="w" if abs(v) > 0.6 * lim else "k")  # fmt: skip
    ax_cls.set_title("mean value on object interiors, by class", fontsize=9)
    bottom.colorbar(im, ax=ax_cls)
    return fig
