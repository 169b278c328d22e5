# %% [markdown]
# # 09 · What the bases learned
#
# Nothing tells the bottom module what a basis should be: the four maps are whatever makes
# the blended masks right. The BlendMask paper (Chen et al. 2020) pictures the bases of
# its COCO model and describes position-sensitive patterns (parts of an object, like FCIS'
# score maps) and semantic ones (object vs background). Do ours? This notebook looks at the bases
# of the trained `shapes` model, measures them over the first val images (the cells print
# how many), and says in words what
# each one appears to encode — and where that is not clear.
#
# **What you will learn**
# - how to look at learned maps: many images, one scale per map, signed colours;
# - how to back up what you see with measurements: by region (background / edge /
#   interior), by position, by class, inside the box, and by switching a basis off;
# - what our four bases encode, and how the attention uses them.
#
# Every conclusion below is computed from this run's model and printed (or rendered) by the
# cells: a model trained on another machine, on a GPU, longer (`BLENDMASK_EDU_FULL=1`) or
# with another seed may order and sign its bases differently, so the text names a basis by
# its **measured role**, never by its index alone.

# %%
import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

from blendmask_edu.tutorial import cached_model, describe, pick, val_dataset
from blendmask_edu.viz.bases_probe import (basis_roles, blend_without, box_zones, knockout_iou,
                                           plot_probe, probe_bases, role_text)
from blendmask_edu.viz.blendmask_figures import plot_bases

tm = cached_model()
model, names = tm.model, tm.class_names
val = val_dataset(tm.cfg)

# %% [markdown]
# ## 1. Look first
#
# Six val images and their four bases (red positive, blue negative, one colour scale per
# panel, symmetric around zero):

# %%
images, targets = zip(*[val[i] for i in range(6)])
with torch.inference_mode():
    run = model.run(list(images))
describe("bases", torch.stack([m["bases"] for m in run["masks"]]))
plot_bases(images, [m["bases"] for m in run["masks"]], max_images=6);

# %% [markdown]
# What to look for before measuring anything: is a basis red (or blue) *inside* shapes and
# near zero outside? Does it change sign at a shape's border, or only along one side of it
# (left, right, top, bottom)? Is it the same for every class? Does it follow the
# background's texture? Write down what you think each basis does; section 2 checks it.

# %% [markdown]
# ## 2. Measure
#
# `probe_bases` runs the model over val images and averages, per basis:
# - its value on **background** cells, on cells at an object's **edge** (within one bases
#   cell of the border), and on object **interiors**;
# - its correlation with the cell's x and y position in the image;
# - its value on object interiors **per class**;
# - its **crop in the GT boxes** at R×R, averaged over all objects — a pattern tied to the
#   box (left vs right half, centre vs border) survives the averaging, anything else
#   washes out;
# - the **attention weights** $s_k$ (after the softmax over K) of the detections with
#   score ≥ 0.3: their mean, and their spread across detections.

# %%
n_images = pick(60, 200)
stats = probe_bases(model, val, num_images=n_images, R=model.mask_branch.cfg.R)
print(f"{n_images} val images, {stats['num_detections']} detections with score ≥ 0.3\n")
print(f"{'':9s}" + "".join(f"{r:>12s}" for r in stats["regions"]) + f"{'corr x':>9s}{'corr y':>9s}")
for k in range(stats["region_means"].shape[1]):
    row = "".join(f"{float(v):12.2f}" for v in stats["region_means"][:, k])
    cx, cy = stats["position_correlation"][k].tolist()
    print(f"basis {k + 1}:{row}{cx:9.2f}{cy:9.2f}")
plot_probe(stats, names);

# %% [markdown]
# **Which detections these statistics average.** The attention rows average every detection
# with score ≥ 0.3 — not every object. Many of them are duplicates (a second box on an object
# already found) or false positives (no object under them); counted here with a simple,
# class-agnostic matching (box IoU ≥ 0.5, each object taken by its best-scoring box; COCO's
# matching is per class and would give a box its next-best free object):

# %%
from torchvision.ops import box_iou

counts = {"true positive": 0, "duplicate": 0, "false positive": 0}
for i in range(n_images):
    image_i, target_i = val[i]
    with torch.inference_mode():
        det_i = model.run([image_i])["fcos"]["detections"][0]
    keep = det_i["scores"] >= 0.3
    boxes_i = det_i["boxes"][keep]  # sorted by score
    taken = set()
    iou = box_iou(boxes_i, target_i["boxes"]) if len(target_i["boxes"]) else torch.zeros(len(boxes_i), 0)
    for row in iou:
        g = int(row.argmax()) if row.numel() else -1
        if g < 0 or row[g] < 0.5:
            counts["false positive"] += 1
        elif g in taken:
            counts["duplicate"] += 1
        else:
            taken.add(g)
            counts["true positive"] += 1
total = sum(counts.values())
print(", ".join(f"{k}: {v} ({v / total:.0%})" for k, v in counts.items()), f"of {total} detections")

# %% [markdown]
# So the mean attention is weighted towards whatever the model detects most often, duplicates
# and false positives included (the printed shares say how much). Now each basis' measured
# role (the largest of four contrasts, `basis_roles`, plus a second contrast when it is at
# least half as large), named by its sign ("high on objects" or "high on background" — relative:
# lower inside objects than on background, not necessarily positive there — "left side" or
# "right side", ...), and what the numbers above
# say, rendered from them. Where the mean attention weights a basis most is read on five
# **disjoint** zones of the box (`box_zones`): its centre (the middle half in each
# direction) and the ring around it split into top, bottom, left and right sides, each ring
# pixel going to the side it is nearest to; a basis is said to be weighted most in the zone
# where its mean weight is highest.

# %%
roles = basis_roles(stats)
for r in roles:
    print(role_text(r))
K = len(roles)
corr = stats["position_correlation"].abs().max()
std = stats["attention_std"]
zones = box_zones(std.shape[-1])  # centre, top, bottom, left, right: disjoint, cover the box
where = []
for k in range(K):
    m = stats["attention_mean"][k]
    z = max(zones, key=lambda z: float(m[zones[z]].mean()))
    where.append("centre" if z == "centre" else f"{z} side")
lines = [
    f"- **Region and box.** {'; '.join(role_text(r).split(' (')[0] for r in roles)}.",
    f"- **Position in the image.** The largest correlation of a basis with x or y is "
    f"{float(corr):.2f}: {'no basis encodes where in the image something is' if corr < 0.2 else 'some basis follows the image position'}.",
    f"- **Attention.** The zone where the mean weight of each basis is highest: "
    + ", ".join(f"basis {k + 1} ({roles[k]['label']}) the {where[k]}" for k in range(K))
    + f". The spread across detections reaches {float(std.max()):.2f} (std of a weight in [0, 1]).",
]
display(Markdown("\n".join(lines)))

# %% [markdown]
# In the class table (bottom right of the figure), compare a basis' row across classes:
# differences that follow geometry (thin rings, stars' and crosses' arms leave few
# "interior" cells) are not the same as a basis that encodes a class.
#
# ## 3. Which bases do the masks need?
#
# Switch one basis off and measure the mask IoU (in the box, against the GT) of the
# detections (score ≥ 0.3, duplicates included) that overlap a GT box by at least 0.5. *How* to switch it off matters. Setting
# its crop to zero in Eq. 4 would leave the mask logits ≈ 0 wherever that basis had the
# weight — and a logit of 0 is a probability of 0.5, which the threshold reads as
# "background". A basis whose job is to say "background" (strongly negative where there is
# no object) would then look useless, because zero also ends up as background. So
# `knockout_iou` takes the softmax of Eq. 3 over the **other K − 1 bases** only: the
# weights still sum to one, and the mask is what the remaining bases say there. Masks are
# thresholded as everywhere in the tutorial: probability σ(m) > 0.5, i.e. logit m > 0.

# %%
ious = knockout_iou(model, val, num_images=n_images)
print(f"all bases:          mask IoU {ious[0]:.3f}")
for k in range(1, len(ious)):
    print(f"without basis {k}:    mask IoU {ious[k]:.3f}  ({ious[k] - ious[0]:+.3f})")

# %% [markdown]
# ## 4. In words
#
# The table is rendered from the measurements above (this run's model): each basis' role,
# the zone of the box where the attention gives it the most weight on average (of the five
# disjoint zones of section 2), and the IoU cost of switching it off.

# %%
drop = [float(ious[k + 1] - ious[0]) for k in range(K)]
rows = ["| basis | measured role | mean attention highest in | change in mask IoU without it |", "|---|---|---|---|"]
for k, r in enumerate(roles):
    rows.append(f"| {k + 1} | {role_text(r).split(': ', 1)[1].split(' (')[0]} (contrast {r['role']} "
                f"{r['value']:+.2f}) | the {where[k]} | {drop[k]:+.3f} |")
most = max(range(K), key=lambda k: -drop[k])
rows.append("")
rows.append(f"The masks need basis {most + 1} ({roles[most]['label']}) most: without it the mask IoU "
            f"falls from {float(ious[0]):.3f} to {float(ious[most + 1]):.3f}. A knock-out cost near 0 "
            "means the other bases can say the same thing there, not that the basis is useless.")
display(Markdown("\n".join(rows)))

# %% [markdown]
# How the work is split, in general terms (check each point against the table): the
# *mean* attention is a layout over the box — which basis tends to be used in the centre,
# at the border, on one side — and the bases say, at each position, whether there is a
# shape and where it ends. But the attention is **not** a position prior by construction: it
# is predicted per detection, so it can depart from the mean layout and take its object's
# shape. How far it does in this run is measured, not assumed: exercise 2 prints the largest
# mean departure from the mean weights over the detections of section 1 and pictures that
# detection. The paper's view is that the attention carries coarse instance-level shape and
# pose, the bases the fine detail; a model trained this briefly may use the attention
# mostly as a layout.
#
# **Where the bases are not interpretable.** Two bases with the same role, a basis whose
# contrasts are all small, a pattern that follows the background's texture rather than a
# shape: the printed roles show the first two (the same label on two bases, small contrasts),
# the pictures of section 1 the third. Only the class table
# could show a basis that encodes a class (read it as section 2 says: geometry first); and
# the paper's position-sensitive bases (several parts of an object, along both
# axes) need not appear in a model trained for minutes on shapes that look alike rotated.
# Longer training (`BLENDMASK_EDU_FULL=1`) is the first thing to try.
#
# ## Summary
# - Look at many images with a symmetric colour scale per map before believing a story;
#   then measure: regions, position, class, in-box averages, knock-outs.
# - Name a basis by its measured role (this run's), not by its index: another run may
#   permute and flip them. Knock-outs renormalise the softmax over the remaining bases, so a basis
#   that says "background" is not mistaken for a useless one.
# - The mean attention is a layout over the box, read on five disjoint zones; each
#   detection's attention can depart from it (exercise 2 measures by how much), and the
#   statistics average duplicates and false positives too.
#
# ## Exercises
# 1. Run the probe on 30 *training* images instead of val images. Do the numbers change?
# 2. Which detection's attention differs most from the mean attention? Show it with
#    `plot_detection_blending` (notebook 06).
# 3. Knock out two bases at once (the pair that matters least alone). What is left?

# %% tags=["solution"]
# 1. Compare the two tables printed below: close values (the same signs, differences small
#    against the values' size) mean the bases describe shapes, not memorised images.
from blendmask_edu.tutorial import train_dataset

train_stats = probe_bases(model, train_dataset(tm.cfg), num_images=30, R=model.mask_branch.cfg.R)
for name, st in (("val", stats), ("train", train_stats)):
    print(f"{name:5s} interior / edge / background per basis:")
    print(st["region_means"].T.round(decimals=2))

# %% tags=["solution"]
# 2. The distance of each detection's weights s [K, R, R] from the mean weights.
from blendmask_edu.viz.blending import detection_intermediates, plot_detection_blending
from blendmask_edu.viz.blendmask_figures import gt_crop_for

best = (0.0, None)
for b, mb in enumerate(run["masks"]):
    det = run["fcos"]["detections"][b]
    for d in (det["scores"] >= 0.3).nonzero().flatten().tolist():
        dist = float((mb["attention_weights"][d] - stats["attention_mean"]).abs().mean())
        best = max(best, (dist, (b, d)), key=lambda t: t[0])
dist, (b, d) = best
print(f"image {b}, detection {d}: mean |s - mean s| = {dist:.3f}")
box = run["fcos"]["detections"][b]["boxes"][d]
plot_detection_blending(images[b], box, detection_intermediates(run["masks"][b], d), f"image {b} #{d}",
                        gt_crop_for(box, targets[b], model.mask_branch.cfg.R));

# %% tags=["solution"]
# 3. Switch off the two bases whose knock-out cost least (see section 3), the softmax taken
#    over the two that remain. What is left is the mask those two alone make: compare it with
#    the full mask, and with the roles of the two that remain (section 2's printout).
two = (ious[1:] - ious[0]).argsort(descending=True)[:2].tolist()  # 0-based basis indices
mb, det = run["masks"][0], run["fcos"]["detections"][0]
m = blend_without(mb["basis_crops"], mb["attention"], two).sigmoid()
print("switched off:", [role_text(roles[k]).split(" (")[0] for k in two])
fig, axes = plt.subplots(1, 2, figsize=(4.4, 2.3), layout="constrained")
axes[0].imshow(mb["masks"][0], cmap="gray", vmin=0, vmax=1)
axes[0].set_title("all bases", fontsize=9)
axes[1].imshow(m[0], cmap="gray", vmin=0, vmax=1)
axes[1].set_title(f"without bases {two[0] + 1} and {two[1] + 1}", fontsize=9)
for ax in axes:
    ax.set_axis_off()
