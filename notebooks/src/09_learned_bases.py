# %% [markdown]
# # 09 · What the bases learned
#
# Nothing tells the bottom module what a basis should be: the four maps are whatever makes
# the blended masks right. The BlendMask paper (Chen et al. 2020) pictures the bases of
# its COCO model and describes position-sensitive patterns (parts of an object, like FCIS'
# score maps) and semantic ones (object vs background). Do ours? This notebook looks at the bases
# of the trained `shapes` model, measures them over the val set, and says in words what
# each one appears to encode — and where that is not clear.
#
# **What you will learn**
# - how to look at learned maps: many images, one scale per map, signed colours;
# - how to back up what you see with measurements: by region (background / edge /
#   interior), by position, by class, inside the box, and by switching a basis off;
# - what our four bases encode, and how the attention uses them.
#
# The words below describe the model of the committed run (fast mode, 300 iterations on
# the CPU). A model trained longer (`BLENDMASK_EDU_FULL=1`) or with another seed may order
# and sign its bases differently; the measurements tell which is which.

# %%
import matplotlib.pyplot as plt
import torch

from blendmask_edu.tutorial import cached_model, describe, pick, val_dataset
from blendmask_edu.viz.bases_probe import knockout_iou, plot_probe, probe_bases
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
# What I see (the committed run; look at your own pictures if you re-ran):
# - **Basis 1** is red (positive) inside many shapes: the yellow ring's band in row 1, the
#   triangles of rows 2 and 6, the magenta and the red circle of row 3, the dark square of
#   row 5. Each red region stops at the shape's border, often with a thin blue line inside it.
# - **Basis 3** marks edges of one orientation: red along the *left* side of shapes (the
#   yellow ring in row 1, the magenta circle in row 3, the triangle in row 6), blue along
#   their right side.
# - **Bases 2 and 4** are blue (negative) nearly everywhere, darkest inside and along
#   shapes; basis 4 leaves thin white (≈ 0) outlines around them. With the C2 input of
#   notebook 04 all four are sharp: their lines are one bases cell wide.
# - No basis is red for one class only: triangles, circles, rings and squares all light up
#   in basis 1.
# - Some of it is not about shapes: basis 1 is pale red on much of the background of row 1,
#   and the backgrounds' noise leaves speckle in every basis.

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
# The measurements agree with the pictures, and add what the eye cannot average:
# - **Region.** Basis 1 is strongly positive on interiors (+5.0), weakly at edges (+1.1)
#   and on background (+0.6). Bases 2 and 4 are negative everywhere, most on interiors
#   (−4.9 and −8.8), about half that at edges and on background. Basis 3 is weak: slightly
#   positive on interiors (+0.4), negative on background (−1.0).
# - **Position in the image.** Every correlation with x or y is below 0.1 in size: no basis
#   encodes where in the image something is.
# - **Position in the box.** The mean crops in GT boxes separate *left from right*: basis 3
#   is red on the left half of the box and blue on the right half, basis 2 most negative
#   left of centre, basis 1 positive in the middle, a little to the right. Basis 3 is a
#   position-sensitive map in the sense of FCIS — "left part of an object" — for one axis
#   only; nothing separates top from bottom.
# - **Attention.** The mean weights are the zones of notebook 05, and they use basis 3
#   where it fits: basis 3 on a band along the left of the box, basis 1 in the centre,
#   basis 2 on a strip along the right edge, basis 4 at the border. The spread across
#   detections is largest where these zones meet (up to ≈ 0.22): that is where each
#   detection adapts the mix to its object.
# - **Class.** Class differences follow geometry, not identity. A ring's body is thin, so
#   few of its cells are "interior" and basis 1 is weakest on rings (3.7 against 4.4–5.9).
#   Stars and crosses, with their thin arms, are the only classes where basis 3 is negative
#   on interiors.
#
# ## 3. Which bases do the masks need?
#
# Switch one basis off — set its crop to zero in Eq. 4, so the mask is mixed from the
# others with the same attention — and measure the mask IoU (in the box, against the GT)
# of the detections that overlap a GT box by at least 0.5:

# %%
ious = knockout_iou(model, val, num_images=n_images)
print(f"all bases:          mask IoU {ious[0]:.3f}")
for k in range(1, len(ious)):
    print(f"without basis {k}:    mask IoU {ious[k]:.3f}  ({ious[k] - ious[0]:+.3f})")

# %% [markdown]
# Basis 1 matters most (−0.20 IoU without it), then basis 3 (−0.11). Bases 2 and 4 cost
# little (−0.03 and −0.01). They hold the right edge and the border of the box: zones that
# are mostly background, which they push towards "off". Exercise 3 shows what a mask looks
# like without them: grey, undecided, where they were.
#
# ## 4. In words
#
# For this model (300 CPU iterations, K = 4):
#
# | basis | what it appears to encode | where the attention uses it | without it |
# |---|---|---|---|
# | 1 | "inside a shape": positive on interiors, weaker at edges, slightly positive on background | the centre of the box | −0.20 IoU |
# | 2 | "off": negative everywhere, most inside shapes | a strip along the right edge, varying per detection | −0.03 |
# | 3 | "left side": red on the left half of a box and along left edges, blue on the right | a band along the left of the box, varying per detection | −0.11 |
# | 4 | "off": strongly negative everywhere, most inside shapes | the border of the box | −0.01 |
#
# So the work is split between the two branches. The attention is a *position* prior
# (left band / centre / right strip / border) that changes a little with each object. The
# bases say, at each position, *whether there is a shape and where it ends* — and basis 3
# says it for left edges in particular, which the attention uses on the left of the box.
# Together they make masks that follow a shape's outline.
#
# **Where the bases are not interpretable.** Bases 2 and 4 are both "off" and cost little
# when switched off (0.03 and 0.01 IoU): why the model keeps two, and why basis 2 sits
# only at the right edge, is not clear. The pale red background of basis 1 (row 1) follows
# the background, not a shape. No basis encodes a class; and only left/right, not
# top/bottom, is encoded inside the box, unlike the position-sensitive bases the paper
# pictures — maybe because our shapes look the same rotated, maybe because 300 iterations
# are not enough. Longer training (`BLENDMASK_EDU_FULL=1`) is the first thing to try.
#
# ## Summary
# - Look at many images with a symmetric colour scale per map before believing a story;
#   then measure: regions, position, class, in-box averages, knock-outs.
# - Here: basis 1 marks shape interiors, basis 3 the left side of a shape, bases 2 and 4
#   "off"; the attention is a position prior (left band, centre, right strip, border); no
#   basis encodes class, one encodes left vs right inside the box.
#
# ## Exercises
# 1. Run the probe on 30 *training* images instead of val images. Do the numbers change?
# 2. Which detection's attention differs most from the mean attention? Show it with
#    `plot_detection_blending` (notebook 06).
# 3. Knock out two bases at once (the pair that matters least alone). What is left?

# %% tags=["solution"]
# 1. The same signs and the same order of the bases, with differences of a few tenths on
#    values up to 9: the bases describe shapes, not memorised images.
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
# 3. Switch off the two bases whose knock-out cost least (see section 3). Where they held
#    the border of the box, the logits go to 0: probability 0.5, grey. They were the "off".
from blendmask_edu.modeling.blender import blend

two = (ious[1:] - ious[0]).argsort(descending=True)[:2].tolist()  # 0-based basis indices
mb, det = run["masks"][0], run["fcos"]["detections"][0]
crops = mb["basis_crops"].clone()
crops[:, two] = 0
m = blend(crops, mb["attention"])["mask_logits"].sigmoid()
fig, axes = plt.subplots(1, 2, figsize=(4.4, 2.3), layout="constrained")
axes[0].imshow(mb["masks"][0], cmap="gray", vmin=0, vmax=1)
axes[0].set_title("all bases", fontsize=9)
axes[1].imshow(m[0], cmap="gray", vmin=0, vmax=1)
axes[1].set_title(f"without bases {two[0] + 1} and {two[1] + 1}", fontsize=9)
for ax in axes:
    ax.set_axis_off()
