# %% [markdown]
# # 08 · The fusion zoo: four ways to turn a box into a mask
#
# BlendMask's claim (Chen et al. 2020, §3.5 and Table 1) is that its *blender* — a learned
# M×M attention per instance over K shared bases — fuses top-down and bottom-up information
# better than the older ways. The paper compares it with YOLACT's *weighted sum* and FCIS'
# *assembler* on the same detector. The library has those, and Mask R-CNN's *RoI head*, as
# mask branches of the same `InstanceSegmenter`, one config string apart
# (`ModelConfig.mask_branch`, `--mask-branch blender|yolact|fcis|roi`):
#
# | branch | file | an instance's mask is … |
# |---|---|---|
# | blender | `modeling/blendmask.py` | Σ over K basis crops, each weighted by a learned, soft M×M attention of the instance |
# | yolact | `modeling/fusion/yolact.py` | Σ over k prototypes (whole image), each weighted by *one* coefficient of the instance, cropped to the box |
# | fcis | `modeling/fusion/fcis.py` | k×k cells; cell (i, j) copied from score map (i, j): a *fixed*, one-hot attention |
# | roi | `modeling/fusion/roi.py` | predicted from the box's own RoI features by a small conv net; nothing shared |
#
# **What you will learn**
# - each branch built from the library's modules, and the shapes of what it returns;
# - YOLACT's prototypes and coefficients, FCIS' position-sensitive maps and assembled
#   cells, the RoI head's features — pictured for one detection of trained models;
# - how `blendmask-edu compare` trains and measures the branches alike, what it measured on
#   shapes (3 seeds, 400 iterations each), and what that does and does not say;
# - an explorer: one detection under every fusion, side by side.

# %%
import json

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

from blendmask_edu.config import shapes_preset
from blendmask_edu.modeling.segmenter import InstanceSegmenter
from blendmask_edu.tutorial import cached_zoo, describe, docs_path, full_mode, picture, shown, val_dataset
from blendmask_edu.viz.blendmask_figures import gt_crop_for
from blendmask_edu.viz.fusion_figures import masks_for_detection, plot_fcis, plot_roi, plot_yolact

torch.set_printoptions(precision=3, sci_mode=False)
RESULTS = docs_path("results")  # the measured comparisons, committed (in a clone)
print("full mode" if full_mode() else "fast mode")

# %% [markdown]
# ## 1. One detector, four mask branches
#
# The same `shapes` config, four values of `mask_branch`. Everything but the mask branch
# (EfficientNet-Lite0 + FPN + FCOS, 3.33 M parameters) is identical:

# %%
cfg = shapes_preset()
for branch in ("blender", "yolact", "fcis", "roi"):
    cfg.model.mask_branch = branch
    model = InstanceSegmenter(cfg.model)
    mb = model.mask_branch
    n = sum(p.numel() for p in mb.parameters())
    parts = ", ".join(f"{name} {sum(p.numel() for p in m.parameters()):,}" for name, m in mb.named_children())
    print(f"{branch:8s} {type(mb).__name__:15s} {n:>8,} parameters  ({parts})")

# %% [markdown]
# The blender's top layer is the largest part of any branch: $K \cdot M \cdot M = 784$
# outputs at every location (notebook 05). YOLACT's bottom module makes 32 prototypes
# instead of 4 bases and its coefficient layer has only 32 outputs; FCIS' bottom module makes
# $k^2 = 49$ score maps and needs no per-instance layer at all; the RoI head has four
# 3×3 convs on 14×14 RoI features and a deconvolution.
#
# To look inside them we need trained models. For the pictures of this notebook the four
# branches share **one** detector: the backbone, FPN and FCOS of the shapes model of the
# other notebooks, copied and frozen, with a fresh mask branch trained on top
# (`cached_zoo`: 150 iterations of 8 images per branch in fast mode, trained once, then
# cached). So every model finds exactly the same boxes. What differs is the whole mask
# branch, not only the fusion step: each has its own bottom module (4 bases, 32 prototypes,
# 49 score maps, or none for the RoI head), its own per-instance prediction, its own
# parameter count, and the way they are combined. (`compare`, section 6, trains each branch
# with its own detector from scratch instead.)

# %%
zoo = cached_zoo()
val = val_dataset()
image, target = val[3]
with torch.inference_mode():
    runs = {branch: m.run([image]) for branch, m in zoo.items()}
boxes = {b: r["fcos"]["detections"][0]["boxes"] for b, r in runs.items()}
assert all(torch.equal(boxes["blender"], bx) for bx in boxes.values())  # one detector
print(f"{len(boxes['blender'])} detections, the same boxes in all four models\n")
for branch, r in runs.items():
    print(f"--- {branch}: forward_test returns, per image")
    for key, value in r["masks"][0].items():
        describe(f"  {key}", value)

# %% [markdown]
# Every branch returns `masks` `[N, R, R]`: probabilities over each box, which the
# segmenter pastes into the image the same way (`modeling/paste.py`). The rest are the
# intermediates that the following sections picture, for this detection:

# %%
det = runs["blender"]["fcos"]["detections"][0]
d = 0  # the best detection of the image
box = det["boxes"][d]
gt = gt_crop_for(box, target, 28)
print(f"detection {d}: {val.class_names[int(det['labels'][d]) - 1]}, score {float(det['scores'][d]):.2f}, "
      f"box {[round(v) for v in box.tolist()]}, FCOS location {int(det['loc_index'][d])}")
fig, ax = plt.subplots(figsize=(3, 3))
ax.imshow(image.permute(1, 2, 0), interpolation="nearest")
x0, y0, x1, y1 = box.tolist()
ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="w", lw=2))
ax.set_title(f"val image 3, detection {d}", fontsize=9)
ax.set_axis_off()

# %% [markdown]
# ## 2. YOLACT: prototypes and one coefficient each
#
# YOLACT (Bolya et al. 2019, §3, Eq. 1) predicts $k$ **prototypes** $P$ for the whole
# image (ReLU, so ≥ 0) and, next to each box, $k$ **coefficients** $c_d$ (tanh, in
# $[-1, 1]$). The mask is $\sigma(\sum_k c_{d,k} P_k)$ on the prototype grid (1/4 of the
# image), then zeroed outside the box. By hand on a tiny example, two 3×3 prototypes:

# %%
from blendmask_edu.modeling.fusion.yolact import assemble, box_mask

P = torch.tensor([[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]],    # P_1: top-left
                  [[0.0, 0.0, 0.0], [0.0, 2.0, 2.0], [0.0, 2.0, 2.0]]])   # P_2: bottom-right
c = torch.tensor([[1.0, -0.5]])  # one instance: "P_1, minus half of P_2"   [N=1, k=2]
by_hand = 1.0 * P[0] - 0.5 * P[1]
torch.testing.assert_close(assemble(P, c)[0], by_hand)
print("Σ c_k P_k =\n", assemble(P, c)[0])
inside = box_mask(torch.tensor([[0.0, 0.0, 8.0, 8.0]]), (3, 3), stride=4)  # a box over cells 0..1
print("box mask (cell centres inside the box) =\n", inside[0])
print("cropped σ(Σ c_k P_k) =\n", assemble(P, c).sigmoid()[0] * inside[0])

# %% [markdown]
# The weights are the same at every pixel of the box: to make the left half of an object
# differ from its right half, YOLACT needs prototypes that already differ there. The
# trained model, on our detection — the six prototypes it weighs most, all 32 coefficients,
# the assembled map and the mask read on a 28×28 grid over the box:

# %%
plot_yolact(image, box, runs["yolact"]["masks"][0], d, gt);

# %% [markdown]
# Our detection is a ring, and YOLACT gets it wrong. The prototypes it weighs most are not
# about this ring: P$_{21}$, P$_{3}$, P$_{31}$, P$_{24}$ and P$_{11}$ are bright on the
# background or on many shapes of the image, and they are *subtracted* (c ≈ −0.95 to −1);
# P$_{1}$, added (+0.99), is zero everywhere — a dead prototype, its ReLU never fires.
# Summed, cropped to the box and read at 28×28, they give a grey, undecided map, a little
# lighter towards the border than in the middle: a hint of the ring, but neither a clean
# band nor a hole. One weight per prototype cannot carve a hole in the middle of *this*
# ring unless some prototype already has one there. And everything is drawn on the 32×32
# prototype grid, where this 35-pixel ring is about 9×9 cells, and trained against the GT
# mask binarised on that grid — a ceiling on small images (exercise 1 measures it), though
# this model is far from reaching it.
#
# (Section 5 shows more: YOLACT's 32 coefficients are almost the same for every detection
# — after 150 iterations they are close to one shared mix.)
#
# ## 3. FCIS: position-sensitive score maps and assembled cells
#
# FCIS (Li et al. 2017, §3.1) cuts each box into $k \times k$ cells and reads cell $(i, j)$
# from its own score map number $i \cdot k + j$: map 0 learns "top-left part of an object",
# map 24 (of 49) "the centre", and so on. Which map each pixel of an R×R grid reads, for
# $k = 3$, $R = 6$:

# %%
from blendmask_edu.modeling.blender import crop_bases
from blendmask_edu.modeling.fusion.fcis import assemble as fcis_assemble
from blendmask_edu.modeling.fusion.fcis import assemble_cells, cell_index

print(cell_index(3, 6))
maps = torch.randn(1, 9, 16, 16)  # k² = 9 random score maps of one image
rois = torch.tensor([[8.0, 12.0, 40.0, 52.0], [0.0, 0.0, 64.0, 30.0]])
crops = crop_bases(maps, rois, torch.zeros(2, dtype=torch.long), 6, 4)  # every map in every box
describe("all maps cropped", crops)
reference = fcis_assemble(crops, 3)  # keep, per pixel, the map of its cell
fast = assemble_cells(maps, rois, torch.zeros(2, dtype=torch.long), k=3, R=6, stride=4)
torch.testing.assert_close(fast, reference)
print("assemble_cells (one RoIAlign per cell) == assemble (crop all, keep one): True")

# %% [markdown]
# The assembler is the blender with a **fixed** attention: one-hot over $k^2$ bases, cell by
# cell, and the same for every instance. On the trained model — the 49 score maps over the
# image, each one cropped to our box (outlined: the cell it contributes), and what the
# cells assemble into:

# %%
plot_fcis(image, box, runs["fcis"]["masks"][0], d, gt);

# %% [markdown]
# Each map is trained only through its own cell, so each learns what that part of a box
# looks like. In the middle panel the four corner maps are blue (a box's corners are mostly
# background for round shapes), the maps of the central cells are blue in the middle (here:
# the ring's hole), and the maps of the cells around them are red on the ring's band. The
# assembler keeps one 4×4 cell from each, so FCIS draws the hole that YOLACT missed. The
# price is visible in the logits: a patchwork of 49 cells with seams where neighbouring
# maps disagree. And the maps are shared by all instances: two overlapping objects light
# up the same maps, so the cells of one box can pick up the other object.
#
# ## 4. The RoI head: features of the box alone
#
# Mask R-CNN (He et al. 2017) does not fuse anything: each box pools its own 14×14 features
# (RoIAlign) from one FPN level, chosen by the box's size (FPN Eq. 1: $\lfloor k_0 +
# \log_2(\sqrt{wh}/s_0) \rfloor$; our 128-pixel images use $s_0 = 56$, $k_0 = 4$), and four
# convs and a deconvolution predict a 28×28 mask per class.

# %%
from blendmask_edu.modeling.fusion.roi import roi_levels

sizes = torch.tensor([8.0, 16, 28, 40, 56, 80, 112])
square = torch.stack([torch.zeros_like(sizes), torch.zeros_like(sizes), sizes, sizes], 1)
levels = roi_levels(square, zoo["roi"].mask_branch.cfg)
for s_, lv in zip(sizes.tolist(), levels.tolist()):
    print(f"a {s_:3.0f}×{s_:3.0f} box is pooled from P{lv}")

# %%
plot_roi(image, box, runs["roi"]["masks"][0], d, gt);

# %% [markdown]
# The RoI features are a 14×14 view of this box only: neighbours outside it do not exist for
# the head. From them it draws the ring with its hole, at 28×28 after the 2×2 stride-2
# deconvolution (whose fingerprint is the faint checkerboard in the logits). Every box pays
# for its own convolutions: four 3×3 convs at 14×14 and a deconvolution per detection,
# against a crop and a weighted sum for the others. That is why the RoI head is the slowest
# at inference in the measured table below.
#
# ## 5. One detection under every fusion
#
# The explorer (c) puts them side by side: pick an image and one of its detections; every
# row is one branch making a mask for the same box, with the same detector. The first
# column shows *how* each mixes: the blender's learned attention (which basis weighs most
# at each pixel), YOLACT's one weight per prototype, FCIS' fixed cells, the RoI head's
# features (it does not mix). (On GitHub you see the first detection of val image 3.)

# %%
from blendmask_edu.viz.explorers import ZooExplorer

explorer = ZooExplorer(zoo, val, val.class_names)
explorer.controls["image"].value = 3
explorer

# %% [markdown]
# How *per-instance* are the per-instance parts? Over the detections (score ≥ 0.3) of ten val
# images — the same detections in both models — compare every pair: the cosine similarity of
# YOLACT's coefficient vectors (1: the same mix), and the share of the 28×28 pixels where
# the blender's dominant basis is the same:

# %%
coefs, winners = [], []
for i in range(10):
    img_i, _ = val[i]
    with torch.inference_mode():
        ry, rb = zoo["yolact"].run([img_i]), zoo["blender"].run([img_i])
    keep = ry["fcos"]["detections"][0]["scores"] >= 0.3
    coefs.append(ry["masks"][0]["coefficients"][keep])
    winners.append(rb["masks"][0]["attention_weights"][keep].argmax(1).flatten(1))  # [n, R·R]
c_all = torch.nn.functional.normalize(torch.cat(coefs), dim=1)
w_all = torch.cat(winners)
n = len(c_all)
pairs = ~torch.eye(n, dtype=torch.bool)
cos = (c_all @ c_all.T)[pairs]
same = (w_all[:, None, :] == w_all[None, :, :]).float().mean(-1)[pairs]
print(f"{n} detections, {n * (n - 1) // 2} pairs")
print(f"YOLACT coefficients: cosine similarity {cos.mean():.3f} on average (lowest {cos.min():.3f})")
print(f"blender attention:   same dominant basis on {same.mean():.1%} of the pixels (lowest {same.min():.1%})")

# %% [markdown]
# Both are close to *one* mix shared by all detections: YOLACT's coefficient vectors are
# nearly parallel (cosine 0.96 on average, 0.84 for the least similar pair), and the
# blender's dominant basis agrees on about 86 % of the pixels between two detections (52 %
# for the least similar pair). What to look for in the explorer (pictures of this run): on
# the ring, YOLACT misses the hole and the other three draw it, FCIS with visible cell
# seams. The blender's attention is mostly the same prior for every detection — here basis
# 3 in the centre and along the upper left, basis 1 on a ring around the centre, basis 2
# at the border (notebook 09 finds a prior of the same kind in the jointly trained model)
# — and the mask follows the object because the *bases* do. FCIS' cells are fixed by
# construction. Try a large lone shape, a small shape and two overlapping shapes.
#
# ## 6. `compare`: every branch trained and measured alike
#
# `blendmask-edu compare` trains each branch (or each value of a blender knob, notebook 10)
# with the same preset, data, loop, optimiser, budget and seeds, each with **its own
# detector, from scratch**, then measures every run the same way (`engine/compare.py`,
# `engine/measure.py`): COCO mask AP and box AP on val, mask AP on the **GT boxes** (the
# detector's mistakes taken out), parameters, inference time. It writes
# `results.json`, `results.md`, `comparison.png` and `qualitative.png`, and resumes where it
# stopped (a finished run is skipped).
#
# Here it runs for real, but on a **tiny budget** in fast mode: two of the branches (the
# blender and FCIS-style, the two leaders below), 10 iterations each, scored on the first 24
# val images. **These numbers are not the result** — models that have seen 160 images detect
# nothing yet; the point is to see the machinery work (and its diagnosis of a model that
# finds nothing). With `BLENDMASK_EDU_FULL=1` the same cell runs the real comparison (all
# four branches, 3 seeds, 400 iterations each, all 200 val images: about 40 CPU minutes or a
# few GPU minutes).

# %%
from blendmask_edu.engine.compare import ZOO, run_compare
from blendmask_edu.tutorial import cache_dir, cached_data, device, pick, small_val

train_dir, val_dir = cached_data()
settings = dict(branches=pick(["blender", "fcis"], list(ZOO)), seeds=pick([0], [0, 1, 2]),
                max_iters=pick(10, 400))
scored_on = pick(small_val(), val_dir)
out = cache_dir() / pick("compare_tiny", "compare_full")
print("the same as:  blendmask-edu compare --preset shapes --train", shown(train_dir), "--val",
      shown(scored_on), "--output-dir", shown(out), "--mask-branches", ",".join(settings["branches"]),
      "--seeds", ",".join(map(str, settings["seeds"])), "--max-iters", settings["max_iters"])
tiny = run_compare("shapes", train_dir, scored_on, out, device=str(device()), progress=False, **settings)
plt.close("all")  # its two figures are in `out`; the measured ones follow below
print(sorted(p.name for p in out.iterdir()))

# %% [markdown]
# ## 7. The measured comparison
#
# The real comparison ran on this project's 2-core CPU machine (`docs/compare.md`, "The
# measured comparison"): 4 branches × 3 seeds × 400 iterations of 16 images, 37 minutes, with the
# `shapes` preset as it is now (mask loss weight 2 for every branch; the blender, YOLACT-
# and FCIS-style branches share the bottom module, its C2 input included, notebook 04). Its
# small result files are committed in `docs/results/compare_shapes/`:

# %%
measured = json.loads((RESULTS / "compare_shapes" / "results.json").read_text())
print(f"preset {measured['preset']}, seeds {measured['seeds']}, budget {measured['budget']}")
display(Markdown((RESULTS / "compare_shapes" / "results.md").read_text()))

# %% [markdown]
# `APl = -1.000` is not a score: COCO's "large" objects have an area above 96² pixels, and
# no object of this val set is that large (the images are 128×128), so COCOeval reports −1
# for the empty size range. APs (< 32² px) and APm (32²–96² px) cover every object here.

# %%
display(picture(docs_path("images/compare_comparison.png"), width=640))

# %% [markdown]
# And the same four val images under each branch (seed 0; predictions with score ≥ 0.5):

# %%
display(picture(docs_path("images/compare_qualitative.png"), width=860))

# %% [markdown]
# What the numbers say, and what they do not:
# - **Shapes does not reproduce the paper's ordering.** On COCO (Table 1) the blender is
#   first (31.6 mask AP), FCIS-style 30.3, YOLACT-style 29.7. Here FCIS-style is first
#   (0.441 ± 0.008), then the blender (0.398 ± 0.009), the RoI head (0.329 ± 0.008) and
#   YOLACT-style (0.281 ± 0.013). The blender's deficit to FCIS-style, 0.043, is about five
#   seed standard deviations. YOLACT-style is last, as in the paper, by a wide margin.
# - **The C2 input lifted the branches that read the bottom module.** With the preset
#   of two changes ago (mask loss weight 1, no C2) the same command gave FCIS-style 0.372,
#   the RoI head 0.334, the blender 0.318 and YOLACT-style 0.230: the blender gained 0.080,
#   FCIS-style 0.069, YOLACT-style 0.051, and the RoI head, which got the same mask loss
#   weight but reads P3..P5 through RoIAlign, nothing — so the gain is mostly the C2
#   input's. A longer run of the two leaders with that earlier preset (1400 iterations, one
#   seed, `docs/results/compare_long/`) kept FCIS-style ahead, 0.505 against 0.457; it was
#   not re-run with the current preset.
# - **Masks, not boxes.** Given the true boxes (`mask AP, GT boxes`), FCIS-style makes the
#   best masks (0.554), the blender 0.520 with the largest seed spread (± 0.018), the RoI
#   head 0.509 and YOLACT-style 0.307. In these short budgets the blender's attention is
#   mostly a spatial prior shared by all instances (notebook 09 finds the same); FCIS'
#   fixed one-hot attention over 49 maps works from the first iteration, while the blender
#   first has to learn its attention.
# - **YOLACT-style is not held back by its grid here.** Its prototypes sit on the 1/4
#   grid — so do the blender's bases, so the grid alone is not the difference. What caps
#   YOLACT-style is its loss: the target is the GT mask *binarised on the 1/4 grid*, so its
#   best possible mask is that blocky target (exercise 1 measures how much it loses per
#   class), while the blender's target is the GT cropped at 28×28 inside each box — finer
#   than the 1/4 grid for every box under 112 px, i.e. every object here (its bases are
#   sampled bilinearly between grid cells). But YOLACT-style's mask AP
#   is far below even that blocky ceiling: what holds it back in this budget is its one
#   coefficient per prototype (section 3), not the resolution. On COCO's larger objects the
#   grid matters less still.
# - **Not measured here**: 90k-iteration training as in the paper, and more bases for the
#   blender (K = 4 against FCIS' 49 maps); notebook 10 shows a K sweep, measured with the
#   earlier preset.
#
# ## Summary
# - Four fusions behind one interface (`MaskBranch.forward_train / forward_test`), one
#   config string apart; each returns `[N, R, R]` masks plus its own intermediates.
# - YOLACT: one coefficient per prototype, the same at every pixel; mask at 1/4 resolution.
#   FCIS: a fixed one-hot attention over k² position-sensitive maps. RoI head: per-box
#   features, no sharing. Blender: a learned soft attention over K crops.
# - `compare` trains and measures them alike and resumes; on shapes at 400 iterations
#   FCIS-style > blender > RoI head > YOLACT-style in mask AP — not the paper's COCO
#   ordering.
#
# ## Exercises
# 1. YOLACT's ceiling: pass the GT masks of 20 val images through the prototype grid
#    (`downsample_masks` from `modeling/fusion/yolact.py`) and back up (nearest), and
#    measure the IoU with the original masks. Which shapes lose most?
# 2. What does FCIS become with $k = 1$? Build `cell_index(1, 28)` and say what the
#    assembler computes then, and why two overlapping objects of one class become a problem.
# 3. From `docs/results/compare_shapes/results.json`: how many seed standard deviations
#    separate each branch's mask AP from the best one? Which differences are within noise?

# %% tags=["solution"]
# 1. Shapes with thin parts or sharp corners lose most (star, triangle, ring, cross: IoU
#    ≈ 0.75–0.79 on these images); circles and squares least (≈ 0.83–0.87). A 1/4 grid
#    cannot draw a star's arms, a triangle's tips or a ring's thin band.
import torch.nn.functional as F

from blendmask_edu.modeling.fusion.yolact import downsample_masks

per_class = {}
for i in range(20):
    _, t = val[i]
    H, W = t["masks"].shape[-2:]
    small = downsample_masks(t["masks"], ((H + 3) // 4, (W + 3) // 4), 4)  # [G, H/4, W/4]
    back = F.interpolate(small[:, None], scale_factor=4, mode="nearest")[:, 0, :H, :W] > 0.5
    gt_m = t["masks"].bool()
    iou = (back & gt_m).flatten(1).sum(1) / (back | gt_m).flatten(1).sum(1).clamp(min=1)
    for lab, v in zip(t["labels"].tolist(), iou.tolist()):
        per_class.setdefault(val.class_names[lab - 1], []).append(v)
for name, v in per_class.items():
    print(f"{name:9s} mean IoU after the 1/4 grid: {sum(v) / len(v):.3f}  ({len(v)} objects)")

# %% tags=["solution"]
# 2. With k = 1 every pixel reads map 0: the mask is one class-agnostic "objectness" map
#    cropped by the box. Two overlapping objects both light up in it, so the box of one
#    also contains (part of) the other's mask: nothing tells the instances apart.
print(cell_index(1, 28).unique())

# %% tags=["solution"]
# 3. Gap to the best mean, in units of the larger of the two standard deviations: the
#    blender 5.0 std below FCIS-style, YOLACT-style 12.5 std, the RoI head 13.6 std. The
#    blender and the RoI head are 0.069 apart, about 8 std. None of these differences is
#    within the noise of three seeds; only YOLACT-style and the RoI head (0.048 apart, about
#    4 std) come anywhere near it.
rows = {r["row"]: r["mask_AP"] for r in measured["rows"]}
best = max(rows, key=lambda b: rows[b]["mean"])
for b, r in rows.items():
    std = max(r["std"], rows[best]["std"])
    print(f"{b:8s} {r['mean']:.3f} ± {r['std']:.3f}   gap to {best}: "
          f"{(rows[best]['mean'] - r['mean']) / std:4.1f} std")
