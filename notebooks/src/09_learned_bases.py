# %% [markdown]
# # 09 · What the bases learned
#
# Nothing tells the bottom module what a basis should be: the four maps are whatever makes
# the blended masks right. The paper (Chen et al. 2020, §4.3, Fig. 5) finds that
# BlendMask's bases respond to position inside objects and to semantics, like YOLACT's
# prototypes and FCIS' position-sensitive maps. Do ours? This notebook looks at the bases
# of the trained `shapes` model, measures them over the val set, and says in words what
# each one appears to encode — and where that is not clear.
#
# **What you will learn**
# - how to look at learned maps: many images, one scale per map, signed colours;
# - how to back up what you see with measurements: by region (background / edge /
#   interior), by position, by class, inside the box, and by switching a basis off;
# - what our four bases encode, and how the attention uses them.
#
# The words below describe the model of the committed run (fast mode, 400 iterations on
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
# WORDS-LOOK

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
# WORDS-MEASURE
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
# WORDS-KNOCKOUT
#
# ## 4. In words
#
# WORDS-SUMMARY
#
# ## Summary
# - Look at many images with a symmetric colour scale per map before believing a story;
#   then measure: regions, position, class, in-box averages, knock-outs.
# - SUMMARY-BULLET
#
# ## Exercises
# 1. Run the probe on 30 *training* images instead of val images. Do the numbers change?
# 2. Which detection's attention differs most from the mean attention? Show it with
#    `plot_detection_blending` (notebook 06).
# 3. Knock out two bases at once (the pair that matters least alone). What is left?

# %% solution
# 1. Nearly the same: the bases describe shapes and positions, not memorised images.
from blendmask_edu.tutorial import train_dataset

train_stats = probe_bases(model, train_dataset(tm.cfg), num_images=30, R=model.mask_branch.cfg.R)
print((train_stats["region_means"] - stats["region_means"]).abs().max())

# %% solution
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

# %% solution
# 3. Switch off the two bases whose knock-out cost least (see section 3).
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
