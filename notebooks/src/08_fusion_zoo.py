# %% [markdown]
# # 08 · The fusion zoo: four ways to turn a box into a mask
#
# BlendMask's claim (Chen et al. 2020, §3.5 and Table 1) is that its *blender* — a learned
# M×M attention per instance over K shared bases — fuses top-down and bottom-up information
# better than the older ways. The paper compares it with YOLACT's *weighted sum* and FCIS'
# *assembler*, all three merging the output of one and the same bottom module. The library
# has the methods themselves, and Mask R-CNN's *RoI head*, as mask branches of the same
# `InstanceSegmenter`, one config string apart (`ModelConfig.mask_branch`,
# `--mask-branch blender|yolact|fcis|roi`):
#
# | branch | file | an instance's mask is … |
# |---|---|---|
# | blender | `modeling/blendmask.py` | Σ over K basis crops, each weighted by a learned, soft M×M attention of the instance |
# | yolact | `modeling/fusion/yolact.py` | Σ over k prototypes (whole image), each weighted by *one* coefficient of the instance, cropped to the box |
# | fcis | `modeling/fusion/fcis.py` | k×k cells; cell (i, j) copied from score map (i, j): a *fixed*, one-hot attention |
# | roi | `modeling/fusion/roi.py` | predicted from the box's own RoI features (FPN P3..P5, and P2 built from the backbone's C2 when the bottom module reads C2, as in the `shapes` preset) by a small conv net; nothing shared |
#
# **This zoo is not the paper's Table 1.** Each branch here is the original method's whole
# mask branch: its own maps (4 bases, 32 prototypes, 49 score maps, or FPN features), its
# own per-instance prediction and its own loss. So the zoo compares methods, not merge
# operations on one bottom module. That like-for-like experiment, Table 1's three merges of
# one bottom module at R = 28, is `blendmask-edu compare --table1`
# (`docs/is-the-blender-better.md`).
#
# **What you will learn**
# - each branch built from the library's modules, and the shapes of what it returns;
# - YOLACT's prototypes and coefficients, FCIS' position-sensitive maps and assembled
#   cells, the RoI head's features — pictured for one detection of trained models;
# - how `blendmask-edu compare` trains and measures the branches alike, what it measured on
#   shapes (the fair zoo; the paper's Table 1 like for like, `compare --table1`), where the
#   blender loses (the oracle attention, occlusion), and what that does and does not say;
# - an explorer: one detection under every fusion, side by side.

# %%
import json

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

from blendmask_edu.config import shapes_preset
from blendmask_edu.modeling.segmenter import InstanceSegmenter
from blendmask_edu.tutorial import (ZOO_BATCH, ZOO_FAST_ITERS, ZOO_FULL_ITERS, cached_zoo, describe,
                                   docs_path, full_mode, pick, picture, shown, val_dataset)
from blendmask_edu.viz.blendmask_figures import gt_crop_for
from blendmask_edu.viz.fusion_figures import masks_for_detection, plot_fcis, plot_roi, plot_yolact

torch.set_printoptions(precision=3, sci_mode=False)
RESULTS = docs_path("results")  # the measured comparisons, committed (in a clone)
print("full mode" if full_mode() else "fast mode")

# %% [markdown]
# ## 1. One detector, four mask branches
#
# The same `shapes` config, four values of `mask_branch`. Everything but the mask branch
# (EfficientNet-Lite0 + FPN + FCOS, counted on the last line) is identical:

# %%
cfg = shapes_preset()
branch_params, detector_params = {}, set()
for branch in ("blender", "yolact", "fcis", "roi"):
    cfg.model.mask_branch = branch
    model = InstanceSegmenter(cfg.model)
    mb = model.mask_branch
    n = sum(p.numel() for p in mb.parameters())
    branch_params[branch] = n
    detector_params.add(sum(p.numel() for p in model.parameters()) - n)
    parts = ", ".join(f"{name} {sum(p.numel() for p in m.parameters()):,}" for name, m in mb.named_children())
    print(f"{branch:8s} {type(mb).__name__:15s} {n:>8,} parameters  ({parts})")
assert len(detector_params) == 1  # the same detector in all four
print(f"everything else (backbone + FPN + FCOS): {detector_params.pop():,} parameters in each")

# %% [markdown]
# The blender's top layer is the largest part of any branch (printed above):
# $K \cdot M \cdot M = 784$ outputs at every location (notebook 05). YOLACT's bottom module makes 32 prototypes
# instead of 4 bases and its coefficient layer has only 32 outputs; FCIS' bottom module makes
# $k^2 = 49$ score maps and needs no per-instance layer at all; the RoI head has four
# 3×3 convs on 14×14 RoI features, a deconvolution and a 1×1 predictor (`convs`, `deconv`,
# `predictor`) and, because the preset's bottom module reads the backbone's stride-4 map C2
# (`bottom_c2`, notebook 04), two convs that build a stride-4 FPN level from it
# (`p2_lateral`, `p2_output`: P2 = conv3×3(conv1×1(C2) + up×2(P3)), FPN's top-down step), so
# that small boxes are pooled from P2 as in Mask R-CNN.
#
# To look inside them we need trained models. For the pictures of this notebook the four
# branches share **one** detector: the backbone, FPN and FCOS of the shapes model of the
# other notebooks, copied and frozen, with a fresh mask branch trained on top
# (`cached_zoo`: a short training per branch, printed below, done once, then cached). So
# every model finds exactly the same boxes. What differs is the whole mask branch, not only
# the fusion step: each has its own maps (a bottom module making 4 bases, 32 prototypes or
# 49 score maps; for the RoI head no bottom module, but P2 from C2), its own per-instance
# prediction, its own parameter count, and the way they are combined. (`compare`, section 6,
# trains each branch with its own detector, from the ImageNet-pretrained backbone, instead.)

# %%
zoo = cached_zoo()
print(f"each mask branch: {pick(ZOO_FAST_ITERS, ZOO_FULL_ITERS)} iterations of {ZOO_BATCH} "
      "images on the frozen detector")
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
# intermediates that the following sections picture, for the best detection of the image.
# Which object it covers, and how well each branch's mask fits that object's GT mask in the
# box (IoU of the masks thresholded at 0.5 on the 28×28 grid), are measured on this run's
# models:

# %%
from torchvision.ops import box_iou

det = runs["blender"]["fcos"]["detections"][0]
d = 0  # the best detection of the image
box = det["boxes"][d]
gt = gt_crop_for(box, target, 28)
print(f"detection {d}: labelled {val.class_names[int(det['labels'][d]) - 1]}, score {float(det['scores'][d]):.2f}, "
      f"box {[round(v) for v in box.tolist()]}, FCOS location {int(det['loc_index'][d])}")
overlap = box_iou(box[None], target["boxes"])[0]
g = int(overlap.argmax())
print(f"the object under it: a {val.class_names[int(target['labels'][g]) - 1]} (box IoU {float(overlap[g]):.2f})")
fit = {b: float(((r["masks"][0]["masks"][d] > 0.5) & (gt > 0.5)).sum()
                 / ((r["masks"][0]["masks"][d] > 0.5) | (gt > 0.5)).sum().clamp(min=1)) for b, r in runs.items()}
print("mask IoU with the GT in the box:", ", ".join(f"{b} {v:.2f}" for b, v in fit.items()))
fig, ax = plt.subplots(figsize=(3, 3))
ax.imshow(image.permute(1, 2, 0), interpolation="nearest")
x0, y0, x1, y1 = box.tolist()
ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="w", lw=2))
ax.set_title(f"val image 3, detection {d}", fontsize=9)
ax.set_axis_off()

# %% [markdown]
# ## 2. YOLACT: prototypes and one coefficient each
#
# YOLACT (Bolya et al. 2019, §3.1–3.3, Eq. 1) predicts $k$ **prototypes** $P$ for the whole
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
# trained model, on our detection — the six prototypes it weighs most (numbered from 0), all
# 32 coefficients, the assembled map and the mask read on a 28×28 grid over the box:

# %%
plot_yolact(image, box, runs["yolact"]["masks"][0], d, gt);

# %% [markdown]
# Which prototypes this run's model weighs most for our detection, and where they are
# bright: the mean of each over the prototype cells inside the box and outside it, the sign
# of its coefficient (negative: *subtracted*, it pushes the mask towards background where
# it is bright), and the prototypes that are zero everywhere on this image (dead here: their
# ReLU never fires):

# %%
yo = runs["yolact"]["masks"][0]
h4, w4 = (image.shape[-2] + 3) // 4, (image.shape[-1] + 3) // 4  # the prototype grid
protos, c_d = yo["prototypes"][:, :h4, :w4], yo["coefficients"][d]
in_box = box_mask(box[None], (h4, w4), stride=4)[0].bool()
for k in c_d.abs().argsort(descending=True)[:6].tolist():
    print(f"P_{k:<2d} c = {float(c_d[k]):+.2f}   mean inside the box {float(protos[k][in_box].mean()):.2f}, "
          f"outside {float(protos[k][~in_box].mean()):.2f}")
dead = [k for k in range(len(protos)) if float(protos[k].max()) == 0.0]
print(f"{len(dead)} of {len(protos)} prototypes are zero everywhere on this image: {dead}")

# %% [markdown]
# The mask is the sum over all 32 prototypes, so no single one "is" the object. One weight
# per prototype cannot carve a hole in the middle of a ring unless some prototype already
# has one there: compare the assembled map with the GT in the figure, and YOLACT's IoU
# printed in section 1 with the other branches'. And everything is drawn on the prototype
# grid (1/4 of the image) and trained against the GT mask binarised on that grid — a
# ceiling on small objects (exercise 1 measures it per class).
#
# (Section 5 measures how much YOLACT's coefficients differ from one detection to another.)
#
# ## 3. FCIS: position-sensitive score maps and assembled cells
#
# FCIS (Li et al. 2017, §2.1) cuts each box into $k \times k$ cells and reads cell $(i, j)$
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
# Each map is trained only through its own cell, so each can learn what that part of a box
# looks like: a corner map, mostly background for round shapes; a central map, the middle
# of an object (for a ring, its hole). Check in the middle panel what this run's maps show.
# The assembler keeps one 4×4 cell from each (R/k = 28/7), so the mask can have structure
# that no single map has; the price shows in the logits as a patchwork of 49 cells, with
# seams where neighbouring maps disagree. And the maps are shared by all instances: two
# overlapping objects light up the same maps, so the cells of one box can pick up the other
# object.
#
# ## 4. The RoI head: features of the box alone
#
# Mask R-CNN (He et al. 2017) does not fuse anything: each box pools its own 14×14 features
# (RoIAlign) from one FPN level, chosen by the box's size (FPN Eq. 1: $\lfloor k_0 +
# \log_2(\sqrt{wh}/s_0) \rfloor$; our 128-pixel images use $s_0 = 56$, $k_0 = 4$), and four
# convs and a deconvolution predict a 28×28 mask per class. The head's levels are the FPN's
# P3..P5 and, in the `shapes` preset, P2, which the head builds itself from the backbone's
# C2 (section 1); `roi_levels` clamps Eq. 1 to the levels it is given, so we pass the
# head's own (`head.levels`), as the head does:

# %%
from blendmask_edu.modeling.fusion.roi import roi_levels

sizes = torch.tensor([8.0, 16, 28, 40, 56, 80, 112])
square = torch.stack([torch.zeros_like(sizes), torch.zeros_like(sizes), sizes, sizes], 1)
head = zoo["roi"].mask_branch
print("the head pools from", head.levels)
levels = roi_levels(square, head.cfg, head.levels)
for s_, lv in zip(sizes.tolist(), levels.tolist()):
    print(f"a {s_:3.0f}×{s_:3.0f} box is pooled from P{lv}")

# %%
plot_roi(image, box, runs["roi"]["masks"][0], d, gt);

# %% [markdown]
# The RoI features are a 14×14 view of this box only: neighbours outside it do not exist for
# the head. From them it predicts the mask at 28×28 after the 2×2 stride-2 deconvolution
# (whose fingerprint can show as a checkerboard in the logits); how well it fits this object
# is the RoI head's IoU printed in section 1. Every box pays for its own convolutions: four
# 3×3 convs at 14×14 and a deconvolution per detection, against a crop and a weighted sum
# for the others. That is the cost the `inference ms/img` column of the measured table
# (section 7) puts on the RoI head.
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
# the blender's dominant basis is the same. And, to name the blender's bases by a measured
# role rather than by their index, where its mean attention over these detections weights
# each basis most, of the five disjoint zones of a box of notebook 09 (the centre, and the
# top, bottom, left and right sides of the ring around it):

# %%
from blendmask_edu.viz.bases_probe import box_zones

coefs, winners, weights = [], [], []
for i in range(10):
    img_i, _ = val[i]
    with torch.inference_mode():
        ry, rb = zoo["yolact"].run([img_i]), zoo["blender"].run([img_i])
    keep = ry["fcos"]["detections"][0]["scores"] >= 0.3
    coefs.append(ry["masks"][0]["coefficients"][keep])
    winners.append(rb["masks"][0]["attention_weights"][keep].argmax(1).flatten(1))  # [n, R·R]
    weights.append(rb["masks"][0]["attention_weights"][keep])  # [n, K, R, R]
c_all = torch.nn.functional.normalize(torch.cat(coefs), dim=1)
w_all = torch.cat(winners)
n = len(c_all)
pairs = ~torch.eye(n, dtype=torch.bool)
cos = (c_all @ c_all.T)[pairs]
same = (w_all[:, None, :] == w_all[None, :, :]).float().mean(-1)[pairs]
print(f"{n} detections, {n * (n - 1) // 2} pairs")
print(f"YOLACT coefficients: cosine similarity {cos.mean():.3f} on average (lowest {cos.min():.3f})")
print(f"blender attention:   same dominant basis on {same.mean():.1%} of the pixels (lowest {same.min():.1%})")
mean_w = torch.cat(weights).mean(0)  # [K, R, R]
zones = box_zones(mean_w.shape[-1])
where = [max(zones, key=lambda z: float(mean_w[k][zones[z]].mean())) for k in range(len(mean_w))]
print("blender: the zone where the mean attention weights each basis most:",
      ", ".join(f"basis {k + 1} the {z}" + ("" if z == "centre" else " side") for k, z in enumerate(where)))
shared = cos.mean() > 0.9 and same.mean() > 0.75  # "close to one mix": both agree this much
display(Markdown(
    f"In this run the per-instance parts are **{'close to' if shared else 'not'} one mix shared by all "
    f"detections**: YOLACT's coefficient vectors have cosine {cos.mean():.2f} on average "
    f"({cos.min():.2f} for the least similar pair), and the blender's dominant basis agrees on "
    f"{same.mean():.0%} of the pixels between two detections ({same.min():.0%} for the least similar pair). "
    "(\"Close\" here: a mean cosine above 0.9 and an agreement above 75 %.)"))

# %% [markdown]
# Where the blender's attention is much the same layout for every detection (the printed
# zones name its bases in this run; another run orders them differently), what makes a
# mask follow its object is the *bases*; where it differs between detections, the attention
# carries some of the object's shape too. FCIS' cells are fixed by construction. What to
# look for in the explorer: whether each branch draws an object's hole and thin parts, and
# FCIS' cell seams. Try a large lone shape, a small shape and two overlapping shapes.
#
# ## 6. `compare`: every branch trained and measured alike
#
# `blendmask-edu compare` trains each branch (or each value of a blender knob, notebook 10)
# with the same preset, data, loop, optimiser, budget and seeds, each with **its own
# detector** (from the same ImageNet-pretrained backbone), then measures every run the same
# way (`engine/compare.py`, `engine/measure.py`): COCO mask AP and box AP on val, mask AP on the **GT boxes** (the
# detector's mistakes taken out), parameters, inference time. It writes
# `results.json`, `results.md`, `comparison.png` and `qualitative.png`, and resumes where it
# stopped (a finished run is skipped).
#
# Here it runs for real, but on a **tiny budget** in fast mode: two of the branches (the
# blender and FCIS-style), for
# the iterations and on the val images that the printed command names. **These numbers
# are not the result** — models this young detect nothing yet; the point is to see the
# machinery work (and its diagnosis of a model that finds nothing). With
# `BLENDMASK_EDU_FULL=1` the same cell runs the real comparison (all four branches, 3 seeds,
# 400 iterations each, all val images; its wall time on this project's CPU machine is in
# `docs/compare.md`).

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
# ## 7. The measured comparison: the fair zoo
#
# The real comparison ran on this project's 2-core CPU machine, each run on one thread, with
# the zoo made fair (`docs/is-the-blender-better.md`, "A fair zoo"): the RoI head pools with
# `aligned=True` like every other branch and reads a stride-4 level P2, and `inference
# ms/img` times only what `predict` runs. So the measured models are the branches of
# section 1 (their parameter counts are checked below). Each run trains its own detector
# from the ImageNet-pretrained backbone. The result files are committed in
# `docs/results/zoo_400/`; the command is on that docs page:

# %%
measured = json.loads((RESULTS / "zoo_400" / "results.json").read_text())
print(f"preset {measured['preset']}, seeds {measured['seeds']}, {measured['budget']['max_iters']} iterations per run")
display(Markdown((RESULTS / "zoo_400" / "results.md").read_text()))
for r in measured["rows"]:
    then, now = int(r["mask_branch_params"]["mean"]), branch_params[r["branch"]]
    print(f"{r['row']:8s} mask-branch parameters: measured model {then:,}, section 1's {now:,}"
          + ("" if then == now else "  ← a different head"))

# %% [markdown]
# `APl = -1.000` is not a score: COCO's "large" objects have an area above 96² pixels, and
# no object of this val set is that large (the images are 128×128), so COCOeval reports −1
# for the empty size range. APs (< 32² px) and APm (32²–96² px) cover every object here.
# `inference ms/img` and `train s/iter` are wall times on a machine that ran two
# experiments at once: read them as rough.

# %% [markdown]
# The bars, drawn from that `results.json` by the code `compare` uses for its
# `comparison.png` (`viz/compare_figures.plot_comparison`, so its title is the one
# `compare` writes now):

# %%
from blendmask_edu.viz.compare_figures import plot_comparison

plot_comparison(measured["rows"]);

# %% [markdown]
# And the same four val images under each branch (seed 0; predictions with score ≥ 0.5),
# the `qualitative.png` that run wrote:

# %%
display(picture(RESULTS / "zoo_400" / "qualitative.png", width=860))

# %% [markdown]
# What the numbers say, and what they do not (rendered from the committed `results.json`):

# %%
def mean_std(m):
    """'0.408 ± 0.021' (no spread with one seed)."""
    return f"{m['mean']:.3f}" + (f" ± {m['std']:.3f}" if len(m["values"]) > 1 else "")


def within_one_std(a, b):
    """Are two measurements' means closer than the larger of their seed std's (several seeds)?"""
    return min(len(a["values"]), len(b["values"])) > 1 and abs(a["mean"] - b["mean"]) < max(a["std"], b["std"])


def ordering(rows, key):
    """'a 0.4 ± 0.01 > b ...' by the mean of `key`, best first."""
    order = sorted(rows, key=lambda b: -rows[b][key]["mean"])
    return order, " > ".join(f"{b} {mean_std(rows[b][key])}" for b in order)


def noise_note(rows, order):
    """The gap between the first two rows against their seed spread (none with one seed)."""
    a, b = rows[order[0]]["mask_AP"], rows[order[1]]["mask_AP"]
    gap = a["mean"] - b["mean"]
    if min(len(a["values"]), len(b["values"])) < 2:
        return f"The gap between the first two, {gap:.3f}, comes from one seed each: no spread is measured."
    spread = max(a["std"], b["std"])
    return (f"The gap between the first two, {gap:.3f}, is {gap / spread:.1f} times the larger of "
            "their seed standard deviations.")


rows = {r["row"]: r for r in measured["rows"]}
order, text = ordering(rows, "mask_AP")
_, text_gt = ordering(rows, "mask_AP_gt_boxes")
display(Markdown("\n".join([
    f"- **Mask AP order** (seeds {measured['seeds']}; mean ± std where there are several): {text}. " + noise_note(rows, order)
    + " The paper's Table 1 (COCO) puts the blender first, then FCIS-style, then YOLACT-style; "
    "this zoo is not that experiment (section 8 is).",
    f"- **Masks, not boxes.** Given the true boxes (`mask AP, GT boxes`): {text_gt}.",
])))

# %% [markdown]
# ## 8. The paper's Table 1, like for like
#
# Table 1 of the paper merges **one** bottom module three ways, at R = 28 with nearest
# interpolation of the attention: the *weighted sum* (K = 4 bases, M = 1: one scalar per
# basis and instance, YOLACT's merge), the *assembler* (16 bases, no attention: cell (i, j)
# of the 4×4 grid over the box takes basis 4i + j, FCIS' merge) and the *blender* 28_4_4
# (K = 4, M = 4). `blendmask-edu compare --table1` trains exactly these three rows on the
# blender's code path; only the bottom module's output width and the mixing differ (with
# the top layer that predicts the attention: K·M² = 64 outputs per location for the
# blender, K = 4 for the weighted sum, none for the assembler), and their mask branches
# cost about the same (the params and GFLOPs columns). The committed
# results, at two budgets (the commands are in `docs/is-the-blender-better.md`):

# %%
def ahead(rows, order, key):
    """On how many seeds the first row's value beats the second's (runs paired by seed)."""
    a, b = rows[order[0]][key]["values"], rows[order[1]][key]["values"]
    return sum(x > y for x, y in zip(a, b))


PAPER_TABLE1 = {"blender 28_4_4": 31.6, "assembler (16 bases, 4×4 cells)": 30.3,
                "weighted sum (K=4, M=1)": 29.7}  # mask AP, COCO val, R-50 1x (the paper's Table 1)
paper_order = sorted(PAPER_TABLE1, key=lambda b: -PAPER_TABLE1[b])
print("the paper's order:", " > ".join(f"{b} {PAPER_TABLE1[b]}" for b in paper_order))
table1 = {}
for name in ("table1_400", "table1_1500"):
    if not (RESULTS / name / "results.json").exists():
        print(f"{name}: no committed results")
        continue
    t1 = json.loads((RESULTS / name / "results.json").read_text())
    table1[name] = rows1 = {r["row"]: r for r in t1["rows"]}
    order1, text1 = ordering(rows1, "mask_AP")
    _, text1_gt = ordering(rows1, "mask_AP_gt_boxes")
    display(Markdown(f"**{t1['budget']['max_iters']} iterations, seeds {t1['seeds']}** (`docs/results/{name}/`)\n\n"
                     + (RESULTS / name / "results.md").read_text().split("\n\n`")[0]
                     + f"\n\n- Mask AP: {text1}. " + noise_note(rows1, order1)
                     + f" **{'The paper' if order1 == paper_order else 'Not the paper'}'s ordering of the means**"
                     + (", but the first two are within one seed standard deviation of each other."
                        if within_one_std(rows1[order1[0]]["mask_AP"], rows1[order1[1]]["mask_AP"]) else ".")
                     + f" Seed by seed, the {order1[0]} is ahead of the {order1[1]} on "
                     + f"{ahead(rows1, order1, 'mask_AP')} of {len(t1['seeds'])} seeds."
                     + f"\n- On GT boxes: {text1_gt}."))

# %% [markdown]
# ### Where the blender loses: the oracle attention
#
# Is it the 4 bases or the top layer's prediction of the attention that limits the
# blender? `benchmarks/where_blender_loses.py` takes a trained blender, freezes everything,
# and optimises each validation instance's K×M×M attention directly against its ground
# truth on its GT box (Adam, from the predicted attention). Mask AP on GT boxes with these
# oracle attentions is what the bases allow; with the predicted ones, what the top layer
# delivers. The same script splits mask AP on GT boxes by how much of each shape is hidden
# (the generator is replayed from the set's seed to get each shape's full mask). Its
# committed output for the Table 1 runs (every seed of section 8's tables) at 400 and 1500
# iterations. Runs are named by their folders: `blender_K-4_M-4_…` is the blender 28_4_4,
# `blender_K-16_M-4_…_attention-cells` the assembler, `blender_K-4_M-1_…` the weighted sum
# (the `run` field of `results.json`), `_s0`… the seed. The oracle rows are the blender's
# and the weighted sum's, the two rows with an attention to fit:

# %%
from statistics import mean

for name in ("where_table1_400", "where_table1_1500"):
    if not (RESULTS / name / "where.json").exists():
        print(f"{name}: no committed results")
        continue
    where = json.loads((RESULTS / name / "where.json").read_text())
    report = (RESULTS / name / "where.md").read_text().replace("## ", "#### ")  # under this section
    display(Markdown(f"**`docs/results/{name}/where.md`**\n\n" + report))
    blender = [r["oracle"] for run, r in sorted(where.items()) if run.startswith("blender_K-4_M-4_R-28_")]
    predicted = [o["predicted"]["AP"] for o in blender]
    oracle = [o["oracle"]["AP"] for o in blender]
    gt_rows = table1[name.replace("where_", "")]  # the same runs' GT-box column, seed by seed
    assembler_gt = gt_rows["assembler (16 bases, 4×4 cells)"]["mask_AP_gt_boxes"]["values"]
    limit = ("on every seed, with oracle attentions the same four bases exceed what the assembler makes: the "
             "predicted attention, not the bases, is what separates them" if min(oracle) > max(assembler_gt) else
             "better attentions alone would not lift the blender above the assembler on every seed")
    seeds = lambda values: ", ".join(f"{v:.3f}" for v in values)
    display(Markdown(
        f"- Blender 28_4_4 ({len(blender)} seeds): mask AP on GT boxes **{mean(predicted):.3f}** with the "
        f"predicted attention ({seeds(predicted)}), **{mean(oracle):.3f}** with the oracle attention "
        f"({seeds(oracle)}); the assembler makes {mean(assembler_gt):.3f} ({seeds(assembler_gt)}; its bases "
        f"get no oracle: it has no attention to fit). The predicted attention leaves "
        f"{mean(oracle) - mean(predicted):.3f} unused on average: {limit}."))

# %% [markdown]
# ### Pairs matched by number of maps
#
# The zoo's FCIS-style reads k² = 49 maps, the preset blender K = 4 bases. `compare
# --rows-set capacity` pairs them by number of maps: FCIS-style with k = 2 (4 maps) against
# the preset blender (K = 4, M = 14), and FCIS-style with k = 4 (16 maps) against a blender
# with K = 16, M = 4 (both blenders with the preset's bilinear interpolation). Only the
# number of maps is matched: the blenders' mask branches have more parameters (their top
# layer; the params column). The committed results:

# %%
cap = json.loads((RESULTS / "capacity_400" / "results.json").read_text())
crow = {r["row"]: r for r in cap["rows"]}
display(Markdown(f"**{cap['budget']['max_iters']} iterations, seeds {cap['seeds']}** (`docs/results/capacity_400/`)\n\n"
                 + (RESULTS / "capacity_400" / "results.md").read_text().split("\n\n`")[0]))
pairs = [("FCIS-style k=2 (4 maps)", "blender K=4 (preset)"), ("FCIS-style k=4 (16 maps)", "blender K=16, M=4")]


def verdict(b, f):
    """Blender row b against FCIS-style row f on one metric: who leads, or within the seed spread."""
    if within_one_std(b, f):
        return "within one seed standard deviation"
    return ("blender" if b["mean"] > f["mean"] else "FCIS-style") + " leads" + ("" if len(b["values"]) > 1 else " (one seed)")


lines = []
for f, b in pairs:
    fm, bm = crow[f]["mask_AP"], crow[b]["mask_AP"]
    fg, bg = crow[f]["mask_AP_gt_boxes"], crow[b]["mask_AP_gt_boxes"]
    lines.append(f"- {b} vs {f}: mask AP {mean_std(bm)} vs {mean_std(fm)} (**{verdict(bm, fm)}**); "
                 f"on GT boxes {mean_std(bg)} vs {mean_std(fg)} (**{verdict(bg, fg)}**).")
lines.append(f"- The zoo's FCIS-style (49 maps, section 7): mask AP {mean_std(rows['fcis']['mask_AP'])}.")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ### The regime: the top layer's learning rate, larger images, longer training
#
# The oracle points at the top layer, so the first change of regime is its learning rate:
# `OptimConfig.top_lr_mult` (`--set optim.top_lr_mult=0.1`) trains the attention conv at
# 0.1× or 3× the rate of the rest of the model, blender 28_4_4, 400 iterations, against
# section 8's row. Then the shapes at 256 px (the generator draws the same relative sizes;
# FCOS' sizes of interest are doubled so each shape goes to the same FPN level as at 128 px)
# for the Table 1 rows and the zoo's two leaders, and those two leaders at 1500 iterations.
# Each set is a `compare` output committed under `docs/results/` (commands in
# `docs/is-the-blender-better.md`):

# %%
def rows_of(name):
    """A committed compare set's rows by name ({} when it is not there)."""
    path = RESULTS / name / "results.json"
    return {r["row"]: r for r in json.loads(path.read_text())["rows"]} if path.exists() else {}


def regime_table(title, entries):
    """entries: (label, set name, row name) → a table of seeds, mask AP, GT boxes, box AP."""
    lines = [f"| {title} | seeds | mask AP | mask AP, GT boxes | box AP |", "|---|---|---|---|---|"]
    for label, name, row in entries:
        r = rows_of(name).get(row)
        if r is None:
            lines.append(f"| {label} (`{name}`) | not committed | | | |")
            continue
        lines.append(f"| {label} (`{name}`) | {len(r['mask_AP']['values'])} | {mean_std(r['mask_AP'])} | "
                     f"{mean_std(r['mask_AP_gt_boxes'])} | {mean_std(r['box_AP'])} |")
    display(Markdown("\n".join(lines)))


B, A, W = "blender 28_4_4", "assembler (16 bases, 4×4 cells)", "weighted sum (K=4, M=1)"
regime_table("blender 28_4_4, 400 iterations", [
    ("top layer at the rate of the rest", "table1_400", B),
    ("top layer at 0.1×", "lr_top01_400", B),
    ("top layer at 3×", "lr_top3_400", B)])
lr_rows = {m: rows_of(name).get(B) for m, name in ((1, "table1_400"), (0.1, "lr_top01_400"), (3, "lr_top3_400"))}
if all(lr_rows.values()):
    best = max(lr_rows, key=lambda m: lr_rows[m]["mask_AP"]["mean"])
    gap = lr_rows[best]["mask_AP"]["mean"] - lr_rows[1]["mask_AP"]["mean"]
    spread = max(lr_rows[best]["mask_AP"]["std"], lr_rows[1]["mask_AP"]["std"])
    display(Markdown(
        f"- Best top-layer rate here: **{best}×**, {gap:+.3f} mask AP against 1×, "
        + ("within" if abs(gap) < spread else "beyond") + " one seed standard deviation; the assembler "
        f"(section 8) makes {table1['table1_400'][A]['mask_AP']['mean']:.3f}."))

# %%
seed0 = lambda name, row, key: rows_of(name)[row][key]["values"][0]  # the 128-px run of the same seed
regime_table("256 px, 400 iterations, seed 0", [
    (W, "table1_256", W), (A, "table1_256", A), (B, "table1_256", B),
    ("zoo FCIS-style (49 maps)", "zoo_256", "fcis"), ("zoo blender (preset)", "zoo_256", "blender")])
t256, z256 = rows_of("table1_256"), rows_of("zoo_256")
lines = []
if len(t256) == 3:
    order256, text256 = ordering(t256, "mask_AP")
    lines.append(f"- Table 1 at 256 px (mask AP): {text256}; at 128 px, seed 0: "
                 + ", ".join(f"{r} {seed0('table1_400', r, 'mask_AP'):.3f}" for r in order256) + ".")
    _, text256_gt = ordering(t256, "mask_AP_gt_boxes")
    lines.append(f"- On GT boxes at 256 px: {text256_gt}.")
if len(z256) == 2:
    _, textz = ordering(z256, "mask_AP")
    lines.append(f"- The zoo's leaders at 256 px (mask AP): {textz}; at 128 px, seed 0: fcis "
                 f"{seed0('zoo_400', 'fcis', 'mask_AP'):.3f}, blender {seed0('zoo_400', 'blender', 'mask_AP'):.3f}.")
display(Markdown("\n".join(lines) or "No 256-px results committed."))

# %%
regime_table("the zoo's leaders, 1500 iterations", [
    ("zoo FCIS-style (49 maps)", "zoo_1500", "fcis"), ("zoo blender (preset)", "zoo_1500", "blender")])
z1500 = rows_of("zoo_1500")
if len(z1500) == 2:
    _, text1500 = ordering(z1500, "mask_AP")
    _, text1500_gt = ordering(z1500, "mask_AP_gt_boxes")
    display(Markdown(f"- Mask AP at 1500 iterations: {text1500}; on GT boxes: {text1500_gt}."))

# %% [markdown]
# ### What the measurements say
#
# - **Like for like, the weighted sum is last**, as in the paper: one scalar per basis cannot
#   put a basis in one part of the box and not in another. **The assembler and the blender
#   are close** in mask AP: section 8 prints which leads at each budget, and by how many seed
#   standard deviations where there are several seeds (the paper's blender lead, 31.6 against
#   30.3 on COCO, is small too). On GT boxes the assembler's masks are better on every seed
#   at both budgets (the per-seed values are printed under the oracle tables).
# - **Number of maps**: the zoo compares 49 FCIS-style maps with 4 blender bases. Matched by number
#   of maps, the printed pairs above say, metric by metric, which leads or that the gap is
#   within one seed standard deviation.
# - **The oracle says where the blender loses**: with per-instance oracle attentions the same
#   bases exceed what the assembler makes; the predicted attention, not the bases, is what
#   separates them. The oracle's gain is an upper bound: an attention fitted to each
#   instance's own ground truth, which no top layer can see. The assembler needs no such
#   prediction (its cells are fixed). Is that a head start that fades with training? From 400
#   to 1500 iterations the assembler's lead in mask AP shrinks (section 8's tables), but on
#   GT boxes it stays on every seed and the gain the predicted attention leaves unused does
#   not shrink (the "oracle − predicted" column above); a longer training was not tried.
#   Training the top layer at another learning rate is no remedy within what was tried: the
#   printed best rate (0.1×) is within one seed standard deviation of the shared rate, and
#   3× is worse than it by more than one.
# - **Occlusion**: every row loses most on shapes more than a quarter hidden; the blender's
#   oracle attention gains the most AP there in absolute terms, where AP is lowest. The
#   assembler's fixed cells lead the blender's predicted attention in every bucket, on every
#   seed (the occlusion tables above).
# - **YOLACT-style's grid.** Its prototypes sit on the 1/4 grid — so do the blender's bases,
#   so the grid alone is not the difference. What differs is its loss: the target
#   is the GT mask *binarised on the 1/4 grid*, so its best possible mask is that blocky
#   target (exercise 1 measures how much it loses per class), while the blender's target is
#   the GT cropped at 28×28 inside each box — finer than the 1/4 grid for every box under
#   112 px. Below, each branch's masks on GT boxes as a share of its own targets' ceiling:
#   if the shares are alike, the lower ceiling is consistent with YOLACT-style's last place
#   (whether it is the cause was not measured).
# - **Not measured here**: 90k-iteration training as in the paper; more than seed 0 for the
#   256-px rows (Table 1 and zoo) and the zoo's 1500-iteration rows (the docs page adds a
#   second seed at 256 px for the blender and the assembler); a top layer of another form
#   (more convs, or features pooled over the box).

# %%
ceil = json.loads((RESULTS / "target_ceilings" / "ceilings.json").read_text())["ceilings"]
for kind, m in ceil.items():
    print(f"targets {kind:24s} mask AP on GT boxes {m['AP']:.3f}")
for b, r in rows.items():  # section 7's measured zoo
    kind = "1/4 grid (YOLACT-style)" if b == "yolact" else "R = 28 over the box"
    y = r["mask_AP_gt_boxes"]["mean"]
    print(f"{b:8s} masks on GT boxes {y:.3f} = {y / ceil[kind]['AP']:.0%} of its targets' ceiling ({kind})")

# %% [markdown]
# ## Summary
# - Four fusions behind one interface (`MaskBranch.forward_train / forward_test`), one
#   config string apart; each returns `[N, R, R]` masks plus its own intermediates.
# - YOLACT: one coefficient per prototype, the same at every pixel; mask at 1/4 resolution.
#   FCIS: a fixed one-hot attention over k² position-sensitive maps. RoI head: per-box
#   features, no sharing. Blender: a learned soft attention over K crops.
# - `compare` trains and measures them alike and resumes; the committed fair-zoo measurement
#   ranks them as printed in section 7. The zoo is not the paper's Table 1:
#   `compare --table1` is (section 8), and the oracle attention says where the blender loses.
#
# ## Exercises
# 1. YOLACT's ceiling: pass the GT masks of 20 val images through the prototype grid
#    (`downsample_masks` from `modeling/fusion/yolact.py`) and back up (nearest), and
#    measure the IoU with the original masks. Which shapes lose most?
# 2. What does FCIS become with $k = 1$? Build `cell_index(1, 28)` and say what the
#    assembler computes then, and why two overlapping objects of one class become a problem.
# 3. From `docs/results/table1_400/results.json` (three seeds): how many seed standard
#    deviations separate each row's mask AP from the best one? Which differences are within
#    noise?

# %% tags=["solution"]
# 1. Compare the printed IoUs by class: a 1/4 grid cannot draw a star's arms, a triangle's
#    tips or a ring's thin band, so shapes with thin parts or sharp corners should lose most,
#    compact shapes (circles, squares) least.
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
# 3. Gap to the best mean, in units of the larger of the two standard deviations (printed
#    below). With three seeds a standard deviation is itself rough: read gaps of one or two
#    std as within noise, gaps of many std as real (for this preset and budget) — or, as
#    firmer evidence, check whether every seed of one row is above every seed of the other.
rows = {b: r["mask_AP"] for b, r in table1["table1_400"].items()}
best = max(rows, key=lambda b: rows[b]["mean"])
for b, r in rows.items():
    std = max(r["std"], rows[best]["std"])
    print(f"{b:32s} {r['mean']:.3f} ± {r['std']:.3f}   gap to {best}: "
          f"{(rows[best]['mean'] - r['mean']) / std:4.1f} std")
