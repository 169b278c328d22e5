# %% [markdown]
# # 03 · FCOS: one box per location, no anchors
#
# BlendMask's detector is FCOS (Tian et al., *FCOS: Fully Convolutional One-Stage Object
# Detection*, ICCV 2019). Every cell of every FPN level — a **location** — predicts a class
# score, four distances to the sides of a box, and a *centerness*. This notebook builds the
# training targets for one image by hand with the library's functions, looks at what the
# trained head predicts, and follows the predictions to the final detections.
#
# **What you will learn**
# - locations $(x, y)$ of each level and the regression targets $(l^*, t^*, r^*, b^*)$ (Eq. 1);
# - which level is responsible for which object (size ranges, §3.2), center sampling, and
#   the smallest-box rule for ambiguous locations;
# - centerness (Eq. 3) as a target and as a prediction;
# - the head's outputs, the three losses, and inference: threshold, top-k, decode, NMS.

# %%
import dataclasses

import matplotlib.pyplot as plt
import torch

from blendmask_edu.modeling.backbone import pyramid_levels
from blendmask_edu.modeling.fcos.head import compute_locations, level_of_locations
from blendmask_edu.modeling.fcos.targets import fcos_targets, level_size_ranges
from blendmask_edu.tutorial import cached_model, describe, val_dataset
from blendmask_edu.viz.levels import plot_levels, split_levels

tm = cached_model()
model, cfg = tm.model, tm.model.fcos.cfg
val = val_dataset(tm.cfg)
image, target = val[2]
print("GT:", [val.class_names[int(c) - 1] for c in target["labels"]])
describe("GT boxes", target["boxes"])

# %% [markdown]
# ## 1. Locations
#
# A cell $(i, j)$ of a level with stride $s$ stands for the image point
# $(x, y) = (\lfloor s/2 \rfloor + j\,s,\ \lfloor s/2 \rfloor + i\,s)$, near the centre of
# the $s \times s$ pixels it covers (§3.1). `compute_locations` lists them for all levels,
# level after level, row after row: `[L, 2]`.

# %%
sizes = [(128 // s, 128 // s) for s in cfg.strides]  # a 128×128 image: (16,16), ..., (1,1)
locations = compute_locations(sizes, cfg.strides)
level = level_of_locations(sizes)
describe("locations (x, y)", locations)
print("locations per level:", [h * w for h, w in sizes], "→ L =", len(locations))

fig, ax = plt.subplots(figsize=(4, 4))
ax.imshow(image.permute(1, 2, 0))
for lv, marker in zip(range(3), ("o", "s", "D")):
    pts = locations[level == lv]
    ax.scatter(pts[:, 0], pts[:, 1], s=6 * 4**lv, marker=marker, facecolors="none",
               edgecolors="w", linewidths=0.8, label=f"P{lv + 3}, stride {cfg.strides[lv]}")
ax.legend(fontsize=7, loc="lower right", framealpha=0.8)
ax.set_title("locations of P3, P4, P5", fontsize=9)
ax.set_axis_off()

# %% [markdown]
# ## 2. Regression targets and the level of an object
#
# For a location $(x, y)$ and a GT box $(x_0, y_0, x_1, y_1)$ the targets are the distances
# to the four sides (Eq. 1):
#
# $$l^* = x - x_0,\quad t^* = y - y_0,\quad r^* = x_1 - x,\quad b^* = y_1 - y.$$
#
# A location is a **positive** for a box when
# 1. it lies in the box's **center region**: within $1.5$ strides of the box centre
#    ("center sampling", from the FCOS follow-up work; the paper used the whole box);
# 2. the box fits the level: $m_{i-1} \le \max(l^*, t^*, r^*, b^*) \le m_i$ (§3.2); the
#    `shapes` preset scales the paper's bounds (64, 128, 256, 512) down to the small images;
# 3. when several boxes qualify, the one with the **smallest area** wins.
#
# P3's lower bound is −1 (the official code's convention); since a positive location lies
# strictly inside its box, any lower bound ≤ 0 gives the same assignment; P7's upper bound is ∞.
# The preset's ranges:

# %%
ranges = level_size_ranges(cfg.sizes_of_interest, len(cfg.strides))
for lv, (lo, hi) in enumerate(ranges):
    print(f"P{lv + 3}: max(l*, t*, r*, b*) in [{lo:g}, {hi:g}]")

# %%
t = fcos_targets(locations, level, [target], cfg.strides, cfg.sizes_of_interest,
                 cfg.center_sample_radius)
describe("labels (0 = background)", t.labels)
describe("reg (l*, t*, r*, b*)", t.reg)
describe("gt_index (−1 = none)", t.gt_index)
print("positives per level:", [int(p.sum()) for p in split_levels(t.labels[0] > 0, sizes)])
# `reg` is filled for every location, also the negatives: there it holds the distances to the image's first GT box (index 0), negative where the
# location lies outside it, hence negative values (the minimum above). Only the
# positives' rows are used by the losses.
plot_levels(image, t.gt_index[0], sizes, cfg.strides, "matched GT instance of each location "
            "(one colour per instance; empty = background)", boxes=target["boxes"],
            categorical=True);

# %% [markdown]
# Each coloured cell is a positive, its colour the instance (and box) it must predict.
# Small shapes are positives on P3, larger ones on P4 or P5. One object can be a positive
# on two levels: the level is chosen per *location*, by the distance to its farthest side,
# and that distance differs from cell to cell.
#
# This image has no positive on P6 or P7. Over the whole val set (counted below), P6 gets
# positives in a few images, those with a box large enough that a P6 location (there are
# four, at x, y ∈ {32, 96}) is ≥ 64 px from its farthest side; **P7 can never** get one on
# 128×128 images: its single location sits at (64, 64), at most 64 px from any side of a box
# inside the image, and P7 asks for ≥ 128. Its head still runs (and learns "background").
#
# Center sampling matters little here: a level's objects are only a few of its strides
# wide, so the radius of 1.5 strides reaches (nearly) every cell of the box — compare the
# counts for radius 1.5 and the whole box, printed in the next section. On COCO images, where a box spans many
# strides, it removes the cells at box corners, often on background or on another object.

# %%
per_level = torch.zeros(len(cfg.strides), dtype=torch.long)  # images with ≥ 1 positive
for i in range(len(val)):
    ti = fcos_targets(locations, level, [val[i][1]], cfg.strides, cfg.sizes_of_interest,
                      cfg.center_sample_radius)
    per_level += torch.stack([p.any() for p in split_levels(ti.labels[0] > 0, sizes)]).long()
for lv, n in enumerate(per_level.tolist()):
    print(f"P{lv + 3}: positives in {n:3d} of {len(val)} val images")

# %% [markdown]
# Center sampling (the radius of 1.5 strides): with a smaller radius fewer cells of each
# box are positives:

# %%
wide = fcos_targets(locations, level, [target], cfg.strides, cfg.sizes_of_interest, 100.0)
narrow = fcos_targets(locations, level, [target], cfg.strides, cfg.sizes_of_interest, 0.5)
for name, tt in (("radius 0.5", narrow), ("radius 1.5", t), ("whole box", wide)):
    print(f"{name:10s}: {int((tt.labels > 0).sum())} positives")
plot_levels(image, narrow.gt_index[0], sizes, cfg.strides, "center sampling with radius 0.5",
            boxes=target["boxes"], categorical=True);

# %% [markdown]
# ## 3. Centerness
#
# A location far from the object centre predicts a poor box. FCOS learns how central a
# location is (Eq. 3), and multiplies its class score by it at test time:
#
# $$\mathrm{centerness}^* = \sqrt{\frac{\min(l^*, r^*)}{\max(l^*, r^*)}\cdot
#   \frac{\min(t^*, b^*)}{\max(t^*, b^*)}}\ \in [0, 1].$$
#
# It is 1 at the box centre and falls towards the sides. Here it is on the positives:

# %%
plot_levels(image, t.centerness[0], sizes, cfg.strides, "centerness* of the positive locations",
            vmin=0, vmax=1, boxes=target["boxes"]);

# %% [markdown]
# ## 4. The head
#
# `FCOSHead` is shared by all levels: a *classification tower* and a *box tower* (2 convs
# each in the `shapes` preset, 4 in the paper), each 3×3 conv + GroupNorm + ReLU; then
# $C$ class logits, 4 distances (multiplied by a learnable scale per level, then a ReLU; in
# units of the level's stride) and one centerness logit, computed from the box tower. The box tower's
# output is also what BlendMask's top layer reads (notebook 05).

# %%
with torch.inference_mode():
    out = model.run([image])
    features = pyramid_levels(out["features"])  # P3..P7 (without the "c2" of notebook 04)
    head = model.fcos.head(features)  # what FCOS computed inside model.run, per level
for key in ("cls_logits", "box_reg", "centerness", "box_tower"):
    describe(f"{key} per level", head[key][:2])  # P3 and P4 shown
fo = out["fcos"]
for key in ("cls_logits", "box_reg", "centerness"):
    describe(f"{key} flattened", fo[key])

# %% [markdown]
# Per level `[B, C, h, w]`; flattened over levels `[B, L, C]` with $L = 341$. What the
# trained head predicts: the highest class probability of each location, its centerness,
# and their product, the score detections are ranked by (section 6).

# %%
cls_prob = fo["cls_logits"][0].sigmoid().max(dim=1).values  # [L]
ctr_prob = fo["centerness"][0, :, 0].sigmoid()  # [L]
plot_levels(image, cls_prob, sizes, cfg.strides, "max over classes of sigmoid(cls_logits)",
            vmin=0, vmax=1, boxes=target["boxes"]);
plot_levels(image, ctr_prob, sizes, cfg.strides, "sigmoid(centerness)", vmin=0, vmax=1,
            boxes=target["boxes"]);
plot_levels(image, cls_prob * ctr_prob, sizes, cfg.strides,
            "ranking score: max class probability × centerness", vmin=0, vmax=1,
            boxes=target["boxes"]);

# %% [markdown]
# Compare the class map with the positives of section 2: it should light up near object
# centres, on the level that fits the object's size (this run's model, after a short
# training, does so only roughly). The centerness is trained **only at positive
# locations** (its loss, below, sums over positives), so its value on background cells is
# whatever the network happens to output there and carries no meaning; what matters is
# that it is higher at object centres than at their borders. The product, the ranking
# score, is high only where both are: background is suppressed by the class probability,
# off-centre locations by the centerness.
#
# ## 5. Losses
#
# With targets, FCOS returns its three losses (`fcos_losses`):
#
# $$L_{cls} = \frac{1}{N_{pos}}\sum_{\text{all}} \mathrm{FL}(p, c^*),\qquad
#   L_{box} = \frac{\sum_{pos} \mathrm{ctr}^*\,(1 - \mathrm{GIoU}(\hat b, b^*))}{\sum_{pos} \mathrm{ctr}^*},\qquad
#   L_{ctr} = \frac{1}{N_{pos}}\sum_{pos} \mathrm{BCE}(\widehat{\mathrm{ctr}}, \mathrm{ctr}^*)$$
#
# with the sigmoid focal loss FL ($\alpha = 0.25$, $\gamma = 2$) over every location and
# class. $L_{ctr}$ cannot reach 0: the best prediction, $\widehat{\mathrm{ctr}} = \mathrm{ctr}^*$,
# still costs the entropy of the soft target (notebook 00's curves draw that floor).

# %%
with torch.inference_mode():
    train_out = model.fcos(features, out["image_sizes"], [target])
for name, value in train_out["losses"].items():
    print(f"{name}: {value.item():.3f}")

# %% [markdown]
# ## 6. From 341 predictions to a few detections
#
# `detect_image` (FCOS §3.1 'Inference', with §3.3's centerness ranking): keep the (location, class) pairs with probability > 0.05, rank
# them by $\mathrm{cls}\cdot\mathrm{ctr}$, keep the best 200 per level (the `shapes` preset; 1000 in the official FCOS code, RetinaNet's setting), decode the boxes from the distances, and remove duplicates with
# class-wise non-maximum suppression (IoU > 0.6). The score is
# $\sqrt{\mathrm{cls}\cdot\mathrm{ctr}}$. Running it with NMS switched off shows what NMS
# does:

# %%
from blendmask_edu.modeling.fcos.inference import detect_image

args = (fo["cls_logits"][0], fo["box_reg"][0], fo["centerness"][0], fo["locations"],
        fo["loc_stride"], fo["level_sizes"], out["image_sizes"][0])
no_nms = detect_image(*args, dataclasses.replace(cfg, nms_thresh=1.0, max_detections=10_000))
nms = detect_image(*args, dataclasses.replace(cfg, max_detections=10_000))
final = detect_image(*args, cfg)
print("(location, class) pairs above 0.05:", int((fo["cls_logits"][0].sigmoid() > cfg.score_thresh).sum()))
print("boxes before NMS:", len(no_nms["boxes"]), "  after NMS:", len(nms["boxes"]),
      f"  kept (the best {cfg.max_detections}):", len(final["boxes"]))
describe("detections: boxes", final["boxes"])
describe("detections: loc_index", final["loc_index"])

fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), layout="constrained")
for ax, d, name in ((axes[0], no_nms, "before NMS"), (axes[1], final, "after NMS")):
    ax.imshow(image.permute(1, 2, 0))
    keep = d["scores"] > 0.3
    order = d["scores"][keep].argsort()  # lowest score first: the best box is drawn on top
    boxes_, labels_ = d["boxes"][keep][order], d["labels"][keep][order]
    for (x0, y0, x1, y1), c in zip(boxes_.tolist(), labels_.tolist()):
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.4,
                                   color=plt.cm.tab10(c - 1), label=tm.class_names[c - 1]))
    ax.set_title(f"{name}: {int(keep.sum())} boxes with score > 0.3", fontsize=9)
    ax.set_axis_off()
handles = {h.get_label(): h for h in axes[0].patches}  # one legend entry per class
fig.legend(handles.values(), handles.keys(), loc="outside right center", fontsize=8,
           title="predicted class", title_fontsize=8);
keep = final["scores"] > 0.3
for loc in final["loc_index"][keep].unique().tolist():  # one location, several classes
    same = keep & (final["loc_index"] == loc)
    if same.sum() > 1:
        print(f"location {loc}, box {[round(v) for v in final['boxes'][same][0].tolist()]}:",
              ", ".join(f"{tm.class_names[int(c) - 1]} {float(s_):.2f}"
                        for c, s_ in zip(final["labels"][same], final["scores"][same])))

# %%
from IPython.display import Markdown, display

n_before, n_after = int((no_nms["scores"] > 0.3).sum()), int(keep.sum())
per_location = final["loc_index"][keep].unique(return_counts=True)[1]  # boxes > 0.3 per location
stacked = int(per_location[per_location > 1].sum())
display(Markdown(
    f"In this image NMS removed {n_before - n_after} of the {n_before} boxes with score > 0.3. "
    f"Of the {n_after} left, {stacked} come from {int((per_location > 1).sum())} locations that "
    "each keep one box per class (listed above)"
    + (": most of what remains are such stacks, which class-wise NMS never compares."
       if 2 * stacked > n_after else ".")))

# %% [markdown]
# NMS removes a box only when a higher-scoring box *of the same class* overlaps it by
# IoU > 0.6. It is *class-wise*: boxes of different classes survive
# side by side, and one location that is unsure of the class keeps a box for each class
# above the threshold. Those boxes are the same box; the picture draws boxes from the
# lowest score to the highest, so the colour you see on such a stack is its best class, and
# the printed list names all of them (this run's model: the classes and scores differ from
# run to run).
#
# Such wrong-class boxes are not free. COCO AP is computed per class: a confident "star"
# box on a cross is a false positive in the star ranking, and if it scores higher than
# some true stars it lowers the star class's precision at every recall level above it.
# The right class's box on the same object still counts as a true positive for its own
# class, so the damage is to the *other* class's AP. Every detection remembers the location
# that predicted it (`loc_index`): the mask branch reads that location's attention
# (notebook 05).
#
# ## Summary
# - Every location of P3..P7 predicts class scores, $(l, t, r, b)$ and centerness.
# - Targets: a location is positive for a box when it is near the box centre (center
#   sampling) and $\max(l^*, t^*, r^*, b^*)$ fits its level; the smallest box wins ties.
# - Losses: focal (all locations), GIoU and centerness BCE (positives); L_cls and L_ctr
# divided by the number of positives, L_box a centerness-weighted mean (divided by Σ ctr*).
# - Inference: threshold, top-k per level, decode, class-wise NMS; score
#   $\sqrt{\mathrm{cls}\cdot\mathrm{ctr}}$.
#
# ## Exercises
# 1. A 50×50 box centred on the P4 location (72, 72): compute $(l^*, t^*, r^*, b^*)$ there
#    and say which level's range fits. Then ask `fcos_targets` which locations are
#    positives for this box. Why are there positives on two levels?
# 2. Count the positives of this image with `center_sample_radius` 0.5, 1.5 and 3.
# 3. How many detections of this image remain with `score_thresh=0.3`?

# %% tags=["solution"]
# 1. At the centre l* = t* = r* = b* = 25, in P4's range [16, 32]. But the P5 cells at
#    (48, 48), (80, 48), ... are also inside the center region, and from there the farthest
#    side is 33–49 pixels away: P5's range. The level is decided per location.
box = {"boxes": torch.tensor([[47.0, 47.0, 97.0, 97.0]]), "labels": torch.tensor([1])}
t1 = fcos_targets(locations, level, [box], cfg.strides, cfg.sizes_of_interest, 1.5)
for i in (t1.labels[0] > 0).nonzero()[:, 0].tolist():
    print(f"P{int(level[i]) + 3} location {locations[i].tolist()}: l*, t*, r*, b* = {t1.reg[0, i].tolist()}")

# %% tags=["solution"]
# 2. A larger radius gives more positives per object, until the whole box is used.
for r in (0.5, 1.5, 3.0):
    tr = fcos_targets(locations, level, [target], cfg.strides, cfg.sizes_of_interest, r)
    print(f"radius {r}: {int((tr.labels > 0).sum())} positives")

# %% tags=["solution"]
# 3. `score_thresh` applies to the class probability (this preset's `thresh_with_ctr` is
#    off), before the ranking by cls·ctr. The figure of section 6 thresholds the final score
#    √(cls·ctr) instead, which is larger than cls wherever ctr > cls (class probability 0.2
#    and centerness 0.6 give √0.12 ≈ 0.35): so the two counts differ.
strict = detect_image(*args, dataclasses.replace(cfg, score_thresh=0.3))
print(len(strict["boxes"]), "detections with class probability > 0.3;",
      int((final["scores"] > 0.3).sum()), "with score √(cls·ctr) > 0.3 (the figure)")
