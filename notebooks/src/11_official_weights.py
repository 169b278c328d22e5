# %% [markdown]
# # 11 · The official BlendMask on real photos
#
# The notebooks so far look at a small model trained for minutes on 128-pixel shapes. The
# BlendMask of the paper is AdelaiDet's COCO model: a ResNet-50 + FPN, FCOS, a bottom module
# with K = 4 bases at 1/4 of the image, 14×14 attentions and 56×56 masks. Its trained weights
# are published, and `blendmask-edu convert-adelaidet` turns them into a checkpoint of ours
# (`docs/adelaidet.md`: the preset `coco_r50_1x` takes every value of AdelaiDet's
# `R_50_1x.yaml`, and with the same random weights it reproduces AdelaiDet's detections,
# boxes, bases and masks to within float error; the test-time resize differs slightly). This notebook runs that model on three photos that ship
# with scikit-image and draws its insides: the predictions, the four bases, the attentions of
# chosen instances and the blended masks — the pictures of the paper's Fig. 1, made by you.
#
# **Without the converted weights, this notebook runs on RANDOM weights** (the fidelity test's
# fixture: the same model, untrained). Then every picture below shows the machinery — shapes,
# crops, the softmax, the sum — and nothing learned. The committed outputs are of that kind;
# the first cell of section 1 prints which model you are looking at.
#
# **What you will learn**
# - how to get AdelaiDet's published weights, convert them and load them as any checkpoint;
# - the test-time preprocessing of a detectron2 model (BGR, 0..255, short side 800);
# - the four bases of a real photo, and how to lay them over it;
# - for instances chosen by a rule (the top score), the attention, the basis crops, their
#   products and the blended mask — recomputed by hand with `crop_bases` and `blend`.

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import skimage.data
import torch
from torchvision.ops import clip_boxes_to_image

from blendmask_edu.data.transforms import build_transforms
from blendmask_edu.engine.checkpoint import model_from_checkpoint
from blendmask_edu.modeling.blender import blend, crop_bases
from blendmask_edu.modeling.paste import paste_masks
from blendmask_edu.tutorial import WEIGHTS_ENV, adelaidet_fixture, describe, pick
from blendmask_edu.viz.blending import detection_intermediates, plot_detection_blending
from blendmask_edu.viz.blendmask_figures import plot_bases
from blendmask_edu.viz.overlay import draw_instances

# The converted official weights: set this path, or BLENDMASK_EDU_WEIGHTS=path/to/converted.pt
WEIGHTS = os.environ.get(WEIGHTS_ENV, "")  # e.g. "../r50_1x.pt" (relative to notebooks/)
REPO = Path.cwd().resolve().parent  # the notebook runs in notebooks/


def shown(path) -> str:
    """A path as printed here: relative to the repository (no machine's absolute paths)."""
    path = Path(path).resolve()
    if path.is_relative_to(REPO):
        return str(path.relative_to(REPO))
    return f"…/{path.parent.name}/{path.name}"


torch.set_printoptions(precision=3, sci_mode=False)
plt.rcParams["figure.dpi"] = 80  # photos compress poorly: smaller pictures in the notebook file

# %% [markdown]
# ## 1. The weights
#
# AdelaiDet's README lists the BlendMask models with their COCO mask AP (R_50_1x: 35.8;
# R_50_3x: 37.8; R_101_3x: 39.5) and links to the files. Where those links no longer work,
# the same files are mirrored on the Hugging Face hub in the repository `ZjuCv/AdelaiDet`,
# under names like `R_50_1x.pth`. Download one by hand (this library never downloads
# anything), then, in the repository's folder:
#
# ```bash
# blendmask-edu convert-adelaidet R_50_1x.pth r50_1x.pt --config R_50_1x
# BLENDMASK_EDU_WEIGHTS=$PWD/r50_1x.pt jupyter lab notebooks/11_official_weights.ipynb
# ```
#
# The converter reads the file without running any code from it (tensors and numpy arrays
# only), renames every key by one table (`blendmask_edu/modeling/adelaidet_keys.py`) and
# stops, listing them, if a key is left over on either side. `--config` names the AdelaiDet
# config the file was trained with (`R_50_1x`, `R_50_3x`, `R_101_3x`, `550_R_50_3x` and
# `RT_R_50_4x_syncbn_shtw` are accepted; the DCN models, `RT_R_50_4x_bn-head_syncbn_shtw` and
# `DLA_34_syncbn_4x` are refused, each with its reason). Without a file, the next cell makes the fixture instead: the
# R_50_1x model with the fidelity test's random weights, saved under AdelaiDet's key names
# and converted by the same function.

# %%
if WEIGHTS and Path(WEIGHTS).is_file():
    checkpoint, RANDOM = Path(WEIGHTS), False
else:
    if WEIGHTS:
        print(f"{WEIGHTS_ENV}={WEIGHTS}: no such file")
    print("no converted weights given: get R_50_1x.pth (Hugging Face hub: ZjuCv/AdelaiDet), run\n"
          "  blendmask-edu convert-adelaidet R_50_1x.pth r50_1x.pt --config R_50_1x\n"
          f"and set {WEIGHTS_ENV}=$PWD/r50_1x.pt (or WEIGHTS above). Until then: the fixture.")
    checkpoint, RANDOM = adelaidet_fixture("R_50_1x"), True
model, cfg, categories = model_from_checkpoint(checkpoint)
names = [c["name"] for c in categories]
print("checkpoint:", shown(checkpoint))
print(f"{len(names)} classes ({names[0]}, {names[1]}, ..., {names[-1]}); "
      f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
if RANDOM:
    print("\n*** THE PICTURES BELOW COME FROM RANDOM WEIGHTS: they show the machinery, "
          "nothing learned. ***")
else:
    print("\nofficial weights: the pictures below are what the trained model computes.")

# %% [markdown]
# ## 2. Real photos, as detectron2 feeds them
#
# The three photos ship inside scikit-image's wheel (no download): an astronaut, a cup of
# coffee, a cat. The model takes RGB in [0, 1] like every model here; its config says how to
# turn that into what AdelaiDet was trained on: BGR channel order, pixel values 0..255 minus
# detectron2's mean (std 1), a short side of 800 pixels (long side at most 1333), padded to a
# multiple of 32.
#
# **Fast mode** (the default, and the committed outputs) resizes to a short side of **256**
# pixels instead of 800, so that this ResNet-50 runs in seconds on a CPU; the full size
# (`BLENDMASK_EDU_FULL=1`) is the paper's. Small objects suffer most from the smaller input.

# %%
print(f"input: {cfg.model.input_format}, ×{cfg.model.pixel_scale:g}, "
      f"mean {cfg.model.pixel_mean}, std {cfg.model.pixel_std}; "
      f"test size {cfg.data.test_min_size} / max {cfg.data.test_max_size}")
cfg.data.test_min_size = pick(256, cfg.data.test_min_size)
resize = build_transforms(cfg.data, train=False)
PHOTOS = ["astronaut", "coffee", "chelsea"]
images = []
for name in PHOTOS:
    rgb = getattr(skimage.data, name)()  # [H, W, 3] uint8
    image = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0  # [3, H, W]
    images.append(resize(image)[0])
    print(f"{name:10s} {tuple(rgb.shape)} → {tuple(images[-1].shape)}")

# %% [markdown]
# `model.run` returns every stage; `model.postprocess` turns the detections into boxes,
# scores, labels and masks pasted into the image (notebook 00). One image at a time:

# %%
runs, results = [], []
with torch.inference_mode():
    for image in images:
        out = model.run([image])
        runs.append({"det": out["fcos"]["detections"][0], "mb": out["masks"][0]})
        results.append(model.postprocess(out)[0])
mb = runs[0]["mb"]
describe("bases (astronaut)", mb["bases"])
describe("attention", mb["attention"])
describe("basis crops r", mb["basis_crops"])
describe("weights s = softmax(a')", mb["attention_weights"])
describe("masks (R×R)", mb["masks"])
for name, res in zip(PHOTOS, results):
    top = res["scores"].argsort(descending=True)[:3]
    print(f"{name:10s} {len(res['scores']):3d} detections; top 3:",
          ", ".join(f"{names[int(res['labels'][i]) - 1]} {float(res['scores'][i]):.2f}"
                    for i in top))

# %% [markdown]
# The shapes: the bases are `[K, H/4, W/4]` = `[4, 64, 64]` for the 256×256 astronaut; each
# detection has an attention `[K, M, M]` = `[4, 14, 14]`, basis crops and weights `[4, 56, 56]`
# and a 56×56 mask. The five best detections of each photo, drawn:

# %%
TOP = 5
fig, axes = plt.subplots(1, len(images), figsize=(3.5 * len(images), 3.0), layout="constrained")
for ax, image, res, name in zip(axes, images, results, PHOTOS):
    top = res["scores"].argsort(descending=True)[:TOP]
    draw_instances(ax, image, {k: v[top] for k, v in res.items()}, names, score_thresh=0.0)
    tag = " (RANDOM weights)" if RANDOM else ""
    ax.set_title(f"{name}: top {len(top)} of {len(res['scores'])}{tag}", fontsize=9)

# %% [markdown]
# With random weights, these boxes, classes and scores mean nothing: the class bias of the
# fixture lets a few locations pass the score threshold, and their class, box and mask are
# whatever random filters make of the photo — no box follows the astronaut, the cup or the
# cat. AdelaiDet's README reports 35.8 mask AP on COCO val2017 for the trained R_50_1x model
# (at its full test size, short side 800); with the official weights, expect this row to
# show the photos' people and objects — check it, especially in fast mode, where the
# 256-pixel input makes small objects harder.
#
# ## 3. The four bases
#
# The bottom module computes K = 4 bases for the whole image, once; every detection crops
# the same four maps. They are signed and unbounded: one colour scale per basis, red
# positive, blue negative, white zero (as in notebooks 04 and 09).

# %%
fig = plot_bases(images, [r["mb"]["bases"] for r in runs], max_images=len(images))
fig.suptitle("bases of the " + ("RANDOM-weight fixture" if RANDOM else "official model"),
             fontsize=10)
fig.tight_layout()
for name, image, r in zip(PHOTOS, images, runs):
    h, w = image.shape[-2:]
    b = r["mb"]["bases"][:, : (h + 3) // 4, : (w + 3) // 4]  # [K, h/4, w/4] without the padding
    print(f"{name:10s} share of positive cells per basis:",
          [f"{float((bk > 0).float().mean()):.2f}" for bk in b])

# %% [markdown]
# Read the pictures of random weights for what they are: each basis is a fixed, untrained
# function of the pixels. On these photos bases 1, 2 and 4 are positive almost everywhere
# and basis 3 is negative on about nine cells in ten (the shares printed above); each shows
# faint traces of the photo — the rim of the cup in bases 2 and 4 of the coffee photo — and
# a frame along the image's border. None separates an object from its background. The
# paper reports (abstract) that the trained bottom module predicts "dense per-pixel
# position-sensitive instance features": maps whose value depends on where a pixel lies
# within its object, as FCIS' score maps do (notebook 08). With the official weights,
# look for that here — and measure it, as notebook 09 does, before believing a story.
#
# One basis over its photo, at the image's size (a bases cell covers 4×4 pixels):

# %%
k_show = 0
image, bases = images[0], runs[0]["mb"]["bases"]
h, w = image.shape[-2:]
basis = bases[k_show, : (h + 3) // 4, : (w + 3) // 4]
lim = float(basis.abs().max())
fig, ax = plt.subplots(figsize=(4, 4))
ax.imshow(image.permute(1, 2, 0).mean(-1), cmap="gray")
ax.imshow(basis, cmap="RdBu_r", vmin=-lim, vmax=lim, alpha=0.6, extent=(0, w, h, 0))
ax.set_title(f"{PHOTOS[0]}: basis {k_show + 1} over the image", fontsize=9)
ax.set_axis_off()

# %% [markdown]
# ## 4. The attentions of chosen instances, and the blended masks
#
# Which instances to look at is a rule computed here, not a hand-picked index: the
# **top-scoring detection of each photo**. For the first, the figure of notebook 06: the
# attention $a$ (its softmax over the K bases shown at M×M as a view), the weights
# $s_k$ = softmax over K of the attention upsampled to R×R (Eq. 2–3), the basis crops
# $r_k$ (Eq. 1), the products $s_k \circ r_k$ and their sum, the mask logits (Eq. 4).

# %%
chosen = [(p, int(r["det"]["scores"].argmax())) for p, r in enumerate(runs)]  # rule: top score
for p, i in chosen:
    det = runs[p]["det"]
    print(f"{PHOTOS[p]:10s} detection #{i}: {names[int(det['labels'][i]) - 1]} "
          f"{float(det['scores'][i]):.2f}, box {[round(v) for v in det['boxes'][i].tolist()]}")

# %%
p, i = chosen[0]
det, mb = runs[p]["det"], runs[p]["mb"]
title = f"{PHOTOS[p]} #{i}: {names[int(det['labels'][i]) - 1]} {float(det['scores'][i]):.2f}"
plot_detection_blending(images[p], det["boxes"][i], detection_intermediates(mb, i),
                        title + (" (RANDOM)" if RANDOM else ""));

# %% [markdown]
# ### The paper's Fig. 1, by hand
#
# The paper's Fig. 1 draws the blending of one instance: four bases, four attentions, each
# product, the sum. Here it is recomputed from the two tensors the model hands back — the
# bases and the instance's raw attention — with the library's `crop_bases` (Eq. 1) and
# `blend` (Eq. 2–4), and checked against the model's own mask logits:

# %%
R = cfg.model.blender.R
fig, axes = plt.subplots(len(chosen), 2 * cfg.model.blender.K + 2, figsize=(13, 1.7 * len(chosen)),
                         layout="constrained", squeeze=False)
for row, (p, i) in enumerate(chosen):
    det, mb = runs[p]["det"], runs[p]["mb"]
    box = det["boxes"][i : i + 1]  # [1, 4]
    crops = crop_bases(mb["bases"][None], box, torch.zeros(1), R)  # [1, K, R, R]  Eq. 1
    mine = blend(crops, mb["attention"][i : i + 1], cfg.model.blender.interpolation)
    assert torch.allclose(mine["mask_logits"][0], mb["mask_logits"][i], atol=1e-4)
    r, s, m = crops[0], mine["attention_weights"][0], mine["mask_logits"][0]  # [K,R,R] ×2, [R,R]
    lim = float(r.abs().max())
    for k in range(len(r)):
        axes[row, k].imshow(r[k], cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[row, k].set_title(f"r{k + 1} (basis crop)", fontsize=8)
        axes[row, len(r) + k].imshow(s[k], cmap="viridis", vmin=0, vmax=1)
        axes[row, len(r) + k].set_title(f"s{k + 1} (weight)", fontsize=8)
    axes[row, -2].imshow(m, cmap="RdBu_r", vmin=-float(m.abs().max()), vmax=float(m.abs().max()))
    axes[row, -2].set_title("m = Σ s∘r", fontsize=8)
    axes[row, -1].imshow(m.sigmoid(), cmap="gray", vmin=0, vmax=1)
    axes[row, -1].set_title(f"{PHOTOS[p]}: mask", fontsize=8)
for ax in axes.flat:
    ax.set_axis_off()
print("crop_bases + blend == the model's mask logits, for", len(chosen), "instances")

# %% [markdown]
# With random weights, the crops are pieces of the untrained bases, and the attention is a
# random function of the box tower's features: the weights $s_k$ are a patchwork of blobs
# about the size of an attention cell (14×14 cells stretched to 56×56), unrelated to the
# photo. Since the crops of bases 1, 2 and 4 are positive and that of basis 3 negative, the
# mask is "on" wherever $s$ picks one of the first three and "off" where it picks basis 3:
# mostly on, with holes. The computation, though, is exactly the trained model's: Eq. 1–4
# on these tensors.
#
# ## 5. The blended masks in the photos
#
# Each mask is the sigmoid of $m$ at 56×56, pasted into its box (`paste_masks`, bilinear)
# and cut at 0.5. The masks of the chosen instances, filled, over their photos:

# %%
fig, axes = plt.subplots(1, len(chosen), figsize=(3.5 * len(chosen), 3.0), layout="constrained")
for ax, (p, i) in zip(axes, chosen):
    det, mb = runs[p]["det"], runs[p]["mb"]
    size = images[p].shape[-2:]
    box = clip_boxes_to_image(det["boxes"][i : i + 1], size)  # [1, 4], as postprocess does
    pasted = paste_masks(mb["masks"][i : i + 1], box, size)  # [1, H, W] probabilities
    one = {"boxes": box, "labels": det["labels"][i : i + 1], "scores": det["scores"][i : i + 1],
           "masks": pasted}
    draw_instances(ax, images[p], one, names, score_thresh=0.0, alpha=0.6)
    area = float((box[0, 2] - box[0, 0]) * (box[0, 3] - box[0, 1]))
    share = float((pasted >= 0.5).sum()) / area
    ax.set_title(f"{PHOTOS[p]} #{i}: mask ≥ 0.5 on {share:.0%} of its box", fontsize=9)

# %% [markdown]
# What the cell above shows depends on the weights. With the official ones, these are the
# masks of the model whose COCO mask AP AdelaiDet reports as 35.8 (measured at short side
# 800; fast mode's 256-pixel input gives different, usually worse, masks). On the random fixture,
# each mask covers most of its box, with the holes of the figure above: a shape the photo
# did not decide.
#
# ## Summary
# - AdelaiDet's published BlendMask weights (Hugging Face mirror `ZjuCv/AdelaiDet`,
#   `R_50_1x.pth`, ...) become a checkpoint of ours with
#   `blendmask-edu convert-adelaidet IN.pth OUT.pt --config R_50_1x`; `model_from_checkpoint`
#   loads it like any other, with the 80 COCO class names.
# - The preset carries detectron2's preprocessing (BGR, 0..255, short side 800); fast mode
#   uses 256.
# - `model.run` returns the four bases `[K, H/4, W/4]` and, per detection, the attention
#   `[K, M, M]`, the basis crops and weights `[K, R, R]` and the mask; `crop_bases` + `blend`
#   recompute the mask from the bases and the attention (asserted).
# - Without the official weights everything runs on random weights and shows no learning:
#   read the pictures as the machinery only.
#
# ## Exercises
# 1. Choose the instances by another rule: the largest box of each photo. Redraw the
#    figure of section 4 for the cat's.
# 2. How much does each basis count for the top instance of the cat photo? Compute the mean
#    weight $s_k$ over its R×R box, per basis; do they sum to 1?
# 3. How many numbers does the top layer predict per location for this model, and how many
#    filters does its convolution have? Check against `K·M·M`.

# %% tags=["solution"]
# 1. The area of each box; argmax per photo. Then the same figure as section 4.
largest = []
for p, r in enumerate(runs):
    b = r["det"]["boxes"]
    largest.append((p, int(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).argmax())))
print("largest box per photo:", largest, " top score:", chosen)
p, i = largest[2]
plot_detection_blending(images[p], runs[p]["det"]["boxes"][i],
                        detection_intermediates(runs[p]["mb"], i), f"{PHOTOS[p]} #{i}: largest box");

# %% tags=["solution"]
# 2. The softmax makes the K weights sum to 1 at every position, so their means do too.
p, i = chosen[2]
s = runs[p]["mb"]["attention_weights"][i]  # [K, R, R]
print("mean weight per basis:", s.mean(dim=(1, 2)), " sum:", float(s.mean(dim=(1, 2)).sum()))

# %% tags=["solution"]
# 3. The top layer is one 3×3 convolution with K·M·M output channels (§3.4).
b = cfg.model.blender
print(f"K·M·M = {b.K}·{b.M}·{b.M} = {b.K * b.M * b.M}; conv filters:",
      model.mask_branch.top.conv.out_channels)
