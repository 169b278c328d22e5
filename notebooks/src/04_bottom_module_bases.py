# %% [markdown]
# # 04 · The bottom module: K bases for the whole image
#
# BlendMask's *bottom-up* half (Chen et al. 2020, §3.3) predicts a few full-image maps,
# the **bases**, once per image. They are shared by all objects: no basis belongs to an
# object. An object's mask is later mixed from the bases *inside its box*
# (notebooks 05–06). This notebook builds the module that predicts them, looks at what a
# trained one predicts, and at the auxiliary loss that shapes the features it reads.
#
# **What you will learn**
# - the bottom module: P3, P4, P5 → one map at stride 8 → ×2 upsample → K bases at 1/4 of
#   the input;
# - the option this library adds for small images: the backbone's stride-4 map C2 after the
#   upsample (`bottom_c2`, on in the `shapes` preset);
# - the shapes of each step, for a module built alone with its own small config;
# - what trained bases look like (signed maps, not masks);
# - the auxiliary semantic-segmentation loss (§4) and its targets.

# %%
import matplotlib.pyplot as plt
import torch

from blendmask_edu.config import BlenderConfig
from blendmask_edu.modeling.bases import BottomModule, semantic_loss, semantic_targets
from blendmask_edu.tutorial import cached_model, describe, val_dataset

_ = torch.manual_seed(0)  # the random features below are the same on every run

# %% [markdown]
# ## 1. The module, built alone
#
# ```
# P3 [B, D, H/8,  W/8 ] ─ conv3×3 ─┐
# P4 [B, D, H/16, W/16] ─ conv3×3 ─┼─ upsample to H/8 and sum ─► n × conv3×3
# P5 [B, D, H/32, W/32] ─ conv3×3 ─┘     ─► ×2 upsample ─► conv3×3 ─► conv1×1 ─► bases [B, K, H/4, W/4]
# ```
#
# It is the decoder of the paper's §3.3 (like YOLACT's ProtoNet and DeepLab's decoder):
# every conv is followed by a normalisation and ReLU, except the last 1×1 conv, whose
# outputs are the bases, unbounded and signed. The normalisation here is GroupNorm, the
# library's choice (it does not depend on the batch size or its split across GPUs); the
# paper does not fix it, and AdelaiDet's code uses BatchNorm (SyncBN on several GPUs) with
# 128 channels and 3 tower convs, where the `shapes` preset uses 64 channels and 2. `BottomModule` takes only a `BlenderConfig`, the FPN width
# and the number of classes (for the auxiliary head), so it can be built here with random
# weights and fed random features of the right shapes:

# %%
cfg = BlenderConfig(K=4, bottom_channels=64, bottom_num_convs=2)  # shapes preset, C2 off (§1b)
bottom = BottomModule(cfg, in_channels=64, num_classes=6)
features = {name: torch.randn(2, 64, 128 // s, 128 // s)  # two 128×128 images
            for name, s in (("p3", 8), ("p4", 16), ("p5", 32))}
for name, f in features.items():
    describe(name, f)
bottom.eval()
with torch.no_grad():
    out = bottom(features)
describe("bases", out["bases"])
print("parameters:", sum(p.numel() for p in bottom.parameters()))

# %% [markdown]
# `[B, K, H/4, W/4]` = `[2, 4, 32, 32]`. The same steps, one submodule at a time, so every
# intermediate shape is visible (and equal to the module's output at the end):

# %%
import torch.nn.functional as F

with torch.no_grad():
    size = features["p3"].shape[-2:]
    x = 0
    for name in ("p3", "p4", "p5"):
        y = bottom.refine[name](features[name])
        describe(f"refine[{name}]", y)
        x = x + F.interpolate(y, size=size, mode="bilinear", align_corners=False)
    describe("sum at stride 8", x)
    x = bottom.tower(x)
    describe("tower", x)
    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    describe("×2 upsample", x)
    bases = bottom.to_bases(bottom.after_upsample(x))
    describe("bases", bases)
assert torch.allclose(bases, out["bases"])

# %% [markdown]
# The bases are at 1/4 of the input, twice as fine as P3: a mask is cut from them at
# $R \times R$ (28 here, 56 in the paper) inside each box, and the finer the bases, the
# sharper the mask edges.
#
# ### 1b. Small images: the stride-4 map C2 (`bottom_c2`)
#
# Twice as fine as P3 is only a grid: the upsample adds no detail. At 128 px P3 is 16×16,
# one cell per 8×8 pixels, and AdelaiDet's bottom module, which reads P3..P5 and upsamples
# ×2 (the paper also allows the backbone's features C as its input), cannot draw what P3
# cannot see — the hole of a ring, the arms of a 20-px star.
# `BlenderConfig(bottom_c2=True)` (beyond the paper; on in the `shapes` preset) adds
# conv3×3(C2) after the ×2 upsample, where C2 is the backbone's own stride-4 map (not
# through the FPN). The idea is DeepLabv3+'s decoder, which brings in the backbone's
# low-level features at 1/4; the way differs: DeepLabv3+ reduces them with a 1×1 conv and
# *concatenates* them, this library *adds* a conv3×3 of C2:
#
# ```
# tower ─► ×2 upsample ─► (+) ─► conv3×3 ─► conv1×1 ─► bases [B, K, H/4, W/4]
#                          ▲
# C2 [B, 24, H/4, W/4] ─ conv3×3
# ```
#
# The bases keep their shape; only one conv (and its GroupNorm) is added, but it runs at
# 1/4 resolution. The measurements behind the choice are recorded next to the preset, in
# `config.py` (mask AP with and without C2), and in `docs/measurements.md` (the cost per
# CPU training step); the next cell prints both records. On COCO-sized images P3 is fine
# enough and the option is off by default.

# %%
import inspect

import blendmask_edu.config as config_module
from blendmask_edu.tutorial import docs_path

preset_source = inspect.getsource(config_module.shapes_preset).splitlines()
start = next(i for i, ln in enumerate(preset_source) if "stride-4 map (C2)" in ln)
print("\n".join(ln.strip() for ln in preset_source[start : start + 3]))
table = docs_path("measurements.md").read_text().splitlines()
row = next(i for i, ln in enumerate(table) if "C2 costs" in ln)
head = max(i for i in range(row) if table[i].startswith("| tried"))  # the table's header
print("\ndocs/measurements.md, one CPU training step (batch 16) with and without C2:")
print("\n".join([table[head], next(ln for ln in table[head:row] if "the preset" in ln), table[row]]))

# %%
cfg_c2 = BlenderConfig(K=4, bottom_channels=64, bottom_num_convs=2, bottom_c2=True)  # the preset
bottom_c2 = BottomModule(cfg_c2, in_channels=64, num_classes=6, c2_channels=24)  # Lite0's C2: 24 ch
features_c2 = {**features, "c2": torch.randn(2, 24, 128 // 4, 128 // 4)}  # C2 [B, 24, H/4, W/4]
bottom_c2.eval()
with torch.no_grad():
    describe("bases without C2", bottom(features)["bases"])
    describe("bases with C2", bottom_c2(features_c2)["bases"])
print("parameters of the C2 conv:", sum(p.numel() for p in bottom_c2.c2.parameters()))

# %% [markdown]
# ## 2. Trained bases
#
# The bases of the trained model for four val images. A diverging colour map: red
# positive, blue negative, white zero, each panel scaled to its own largest absolute value
# (its colour bar gives the scale).

# %%
from blendmask_edu.viz.blendmask_figures import plot_bases

tm = cached_model()
model = tm.model
val = val_dataset(tm.cfg)
images, targets = zip(*[val[i] for i in range(4)])
with torch.inference_mode():
    run = model.run(list(images))
describe("bases of image 0", run["masks"][0]["bases"])
plot_bases(images, [m["bases"] for m in run["masks"]]);

# %% [markdown]
# Which basis does what is learned, and another training run (another CPU, a GPU, full
# mode) orders and shapes them differently. So instead of describing "basis 1" by eye, the
# cell below *measures* a role for each basis of this model, over the first val images
# (`basis_roles`, notebook 09 explains the measures): the mean inside objects, on their
# edges and on background, and the mean crop of the basis in the ground-truth boxes, left
# half vs right half and top vs bottom. Each basis is named by its largest contrast, and by
# a second one too when that is at least half as large. The `edges` number is how far the
# mean on edge cells lies *beyond* both the inside and the background mean (above the higher
# or below the lower); it is 0 when the edge mean lies between them, i.e. when the edge is only
# the step from one to the other.

# %%
from blendmask_edu.tutorial import pick
from blendmask_edu.viz.bases_probe import basis_roles, probe_bases, role_text

roles = basis_roles(probe_bases(model, val, num_images=pick(40, 200)))
for r in roles:
    print(role_text(r))

# %% [markdown]
# What to notice, in the figure and the numbers:
# - the bases are not masks of objects: they are signed maps over the whole image, and
#   every object is covered by all four;
# - in this run's figure they follow the objects' outlines (one bases cell is 4 pixels);
# - they need not all do different things: in a short run several bases can share the same
#   main contrast (objects against background, with either sign) and differ in a second one
#   (one side of the box, edges) — the printed roles give both, for this model;
# - the sign matters. The attention's weights are a softmax over K (each ≥ 0, summing to 1,
#   notebook 06), so at every pixel the mask logit is a weighted average of the bases' values
#   there, between the smallest and the largest. A pixel can only be foreground (logit > 0)
#   where some basis is positive, so some basis must be positive inside objects. A basis that
#   is "lower inside objects" cannot draw an object; it can say "background" wherever the
#   attention gives it the weight. How much this run's masks depend on each basis is measured
#   in notebook 09 (knock-outs);
# - whether a basis is tied to one class is measured in notebook 09 (each basis' mean per
#   class);
# - in this run's figure every basis carries some speckle from the noisy backgrounds.
#
# **What C2 adds.** The same trained model, its C2 term switched off (a forward hook makes
# `conv3×3(C2)` output zeros) — not a model trained without C2, only what this model's
# bases owe to the stride-4 path:

# %%
hook = model.mask_branch.bottom.c2.register_forward_hook(lambda mod, inp, out: torch.zeros_like(out))
try:
    with torch.inference_mode():
        without = model.run([images[0]])["masks"][0]["bases"]
finally:
    hook.remove()
with_c2 = run["masks"][0]["bases"]
plot_bases([images[0], images[0]], [with_c2, without]);
change = (with_c2 - without).abs().mean((1, 2)) / with_c2.abs().mean((1, 2))
print("mean |change| without the C2 term, relative to the basis' mean |value|:",
      [f"{float(c):.0%}" for c in change])

# %% [markdown]
# Top row: the bases as trained; bottom row: the same model without its C2 term, i.e. what
# P3..P5 alone (8 pixels a cell, upsampled ×2) give. What differs between the rows is what
# the C2 path contributes; the printed numbers say how much of each basis it carries in
# this model.
#
# Each basis on its own, with the image under it — move the sliders (in Jupyter; on GitHub
# you see the first image and basis 1):

# %%
from blendmask_edu.viz.explorers import BasesExplorer

BasesExplorer(model, val)

# %% [markdown]
# ## 3. The auxiliary semantic-segmentation loss
#
# The mask loss reaches the bases only through the pixels inside boxes. The paper (§4)
# adds a semantic-segmentation head, trained with a per-pixel cross-entropy over $C + 1$
# classes (0 = background), for a dense signal everywhere. The library's head reads **P3
# directly**, not the bottom module's layers: its gradient trains the backbone and the FPN
# — the features the bottom module (and FCOS) read — and never reaches the convs that make the bases (`refine`, `tower`, `after_upsample`,
# `to_bases`). Its targets are built on the fly from the instance masks: a P3 cell gets the
# class of the instance covering its centre pixel.

# %%
sem = semantic_targets(list(targets), size=(16, 16), stride=8)
describe("semantic targets", sem)
with torch.no_grad():  # the loss path asks for the semantic logits: with_seg=True
    x, _ = model.preprocess(list(images))
    feats = model.backbone(x)
    seg_logits = model.mask_branch.bottom(feats, with_seg=True)["seg_logits"]
describe("seg_logits", seg_logits)
aux_weight = model.mask_branch.cfg.aux_seg_weight
print(f"loss_sem before its weight: {semantic_loss(seg_logits, list(targets), 8).item():.3f} "
      f"(training adds it × aux_seg_weight = {aux_weight:g})")

names = ["background"] + tm.class_names
fig, axes = plt.subplots(3, 4, figsize=(10, 7.6), layout="constrained")
for i in range(4):
    axes[0, i].imshow(images[i].permute(1, 2, 0))
    axes[0, i].set_title(f"val image {i}", fontsize=9)
    axes[1, i].imshow(sem[i], cmap="tab10", vmin=-0.5, vmax=9.5)
    axes[1, i].set_title("semantic target (16×16)", fontsize=9)
    im = axes[2, i].imshow(seg_logits[i].argmax(0), cmap="tab10", vmin=-0.5, vmax=9.5)
    axes[2, i].set_title("predicted class (argmax)", fontsize=9)
for ax in axes.flat:
    ax.set_axis_off()
cbar = fig.colorbar(im, ax=axes[1:, :], ticks=range(7), shrink=0.7)
cbar.ax.set_ylim(-0.5, 6.5)
cbar.ax.set_yticklabels(names);

# %% [markdown]
# At stride 8 a 128×128 image is 16×16 cells, so small shapes are one or two cells and
# the semantic map is coarse. Compare the rows for this run's model: where its predicted map is wrong, is it a missed
# shape or a wrong class? Only the loss asks for it (`with_seg=True`, in training and for the validation
# loss); inference skips it, and only its effect on the shared backbone/FPN features stays.
#
# ## Summary
# - The bottom module merges P3..P5 at stride 8, refines, upsamples ×2 and predicts K
#   signed bases at 1/4 resolution: `[B, K, H/4, W/4]`. With `bottom_c2` (the `shapes`
#   preset) it also adds the backbone's stride-4 map C2 after the upsample: same shape,
#   real detail at 1/4.
# - Bases are shared by all instances; they are not masks. Instances differ only in how
#   they mix the bases (the attention, notebook 05).
# - The auxiliary semantic loss (weighted by `aux_seg_weight`, printed in section 3) trains a class map on
#   P3 from targets made of the instance masks; it shapes the backbone/FPN features, not
#   the bottom module's own layers.
#
# ## Exercises
# 1. What are the sizes of P3 and of the bases for a 96×160 image?
# 2. Build the module with K = 8. Which layer changes, and by how many parameters?
# 3. Build it with `aux_seg_loss=False`: what does it return when asked for the semantic
#    logits (`with_seg=True`) now?

# %% tags=["solution"]
# 1. 96×160 is already a multiple of 32: P3 is 12×20, the bases 24×40.
with torch.no_grad():
    f = {n: torch.randn(1, 64, 96 // s, 160 // s) for n, s in (("p3", 8), ("p4", 16), ("p5", 32))}
    describe("bases", bottom(f)["bases"])

# %% tags=["solution"]
# 2. Only the last 1×1 conv: 64·K weights + K biases, so K = 8 adds 4·65 = 260 parameters.
b8 = BottomModule(BlenderConfig(K=8, bottom_channels=64, bottom_num_convs=2), 64, 6)
print(b8.to_bases, sum(p.numel() for p in b8.parameters()) - sum(p.numel() for p in bottom.parameters()))

# %% tags=["solution"]
# 3. Only the bases: there is no semantic head to run.
b0 = BottomModule(BlenderConfig(K=4, bottom_channels=64, bottom_num_convs=2, aux_seg_loss=False), 64, 6)
print(sorted(b0(features, with_seg=True)))
