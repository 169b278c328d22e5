# %% [markdown]
# # 05 · The top layer: an attention over the bases for every detection
#
# The bases (notebook 04) are the same for every object. What makes a mask belong to one
# object is its **attention**: for each basis, a coarse $M \times M$ map over the object's
# box that says how much of that basis to use where. BlendMask's *top layer* (Chen et al.
# 2020, §3.4) predicts one such attention at **every location** of FCOS, next to the box;
# a detection takes the attention of the location that detected it.
#
# **What you will learn**
# - the top layer: one 3×3 conv on FCOS' box tower with $K \cdot M \cdot M$ outputs;
# - why it is computed only at the detections (`at_locations`), and that this gives the
#   same numbers as the full convolution;
# - how to read the attention of a detection: `[K, M, M]`, and its softmax over K.

# %%
import matplotlib.pyplot as plt
import torch

from blendmask_edu.config import BlenderConfig
from blendmask_edu.modeling.attention import TopLayer
from blendmask_edu.tutorial import cached_model, describe, val_dataset

_ = torch.manual_seed(0)  # the random features below are the same on every run

# %% [markdown]
# ## 1. The layer, built alone
#
# $$\mathbf{a} = \mathrm{conv}_{3\times3}(\text{box tower}) \in
#   \mathbb{R}^{B \times K\cdot M\cdot M \times H_l \times W_l}\quad\text{on every level } l$$
#
# With $K = 4$, $M = 14$ that is 784 numbers per location: for the object detected there,
# four 14×14 maps. The conv's weights start at $\mathcal{N}(0, 0.01^2)$, as in the official
# code, so all attentions start small, and the softmax weights start close to 1/K.

# %%
top = TopLayer(BlenderConfig(K=4, M=14), in_channels=64)
print(top.conv, " parameters:", sum(p.numel() for p in top.parameters()))
box_tower = [torch.randn(1, 64, 128 // s, 128 // s) for s in (8, 16, 32, 64, 128)]  # P3..P7
describe("box tower", box_tower[:2])
with torch.no_grad():
    everywhere = top(box_tower)
describe("attention, all locations", everywhere)

# %% [markdown]
# `[B, L, K·M·M]` = `[1, 341, 784]`: the levels flattened as in FCOS (notebook 03). The
# layer is large — 64·784·9 weights, more than the rest of the mask branch together —
# because it outputs 784 channels at every location of every level.
#
# ## 2. Only where it is needed: `at_locations`
#
# Inference needs the attention of the $N$ detections only (here at most 100 of 341
# locations; of about 20 000 for an 800×1216 image). `at_locations(box_tower, batch_index,
# loc_index)` gathers the 3×3 neighbourhood of each needed location and applies the conv's
# weights to it, returning `[N, K, M, M]`. Same numbers as the full conv:

# %%
loc_index = torch.tensor([0, 17, 255, 300, 340])  # P3, P3, P3, P4, P7
batch_index = torch.zeros_like(loc_index)
with torch.no_grad():
    picked = top.at_locations(box_tower, batch_index, loc_index)
describe("at_locations", picked)
assert torch.allclose(picked, everywhere[0, loc_index].view(-1, 4, 14, 14), atol=1e-5)

# %% [markdown]
# ## 3. The attention of a detection, trained
#
# In the trained model each detection carries `loc_index`, the location that predicted its
# box. The mask branch reads the box tower there. `model.run` returns the result as
# `attention` (raw, `[N, K, M, M]`):

# %%
tm = cached_model()
model = tm.model
val = val_dataset(tm.cfg)
image, target = val[0]
with torch.inference_mode():
    out = model.run([image])
det = out["fcos"]["detections"][0]
with torch.inference_mode():
    attention = model.mask_branch.top.at_locations(
        out["fcos"]["box_tower"], torch.zeros_like(det["loc_index"]), det["loc_index"])
describe("attention", attention)
assert torch.allclose(attention, out["masks"][0]["attention"])
level = out["fcos"]["level"][det["loc_index"][:5]]
print("levels of the 5 best detections:", [f"P{int(lv) + 3}" for lv in level])

# %% [markdown]
# The raw numbers are logits. The blender first upsamples them from M×M to R×R (Eq. 2),
# then turns them into weights with a softmax **over the K bases** at each position (Eq. 3,
# notebook 06), so only differences between bases matter.
#
# The highest-scoring detections of an image are often several of one object (neighbouring
# locations, or one location with several classes: notebook 03). To look at *different*
# objects, `one_per_object` walks the detections from the highest score down and keeps one
# only when the ground-truth box it overlaps most (box IoU ≥ 0.5) has no detection yet. For
# (up to) three of them: the box (its tag gives the predicted class and score, the title the
# ground truth), the four raw 14×14 maps (one colour scale per detection), and the weights
# exactly as the blender computes them — softmax over K of the attention upsampled to
# R×R = 28×28 (`attention_weights` of `model.run`), from 0 to 1.

# %%
from torchvision.ops import box_iou

from blendmask_edu.viz.overlay import draw_instances


def one_per_object(det, target, min_iou=0.5):
    """[(detection index, GT index)]: walking the detections from the highest score down,
    keep one when the GT box it overlaps most (box IoU ≥ min_iou) has no detection yet."""
    if len(det["boxes"]) == 0 or len(target["boxes"]) == 0:
        return []
    best_iou, best_gt = box_iou(det["boxes"], target["boxes"]).max(dim=1)  # [N], [N]
    pairs, taken = [], set()
    for d in det["scores"].argsort(descending=True).tolist():
        g = int(best_gt[d])
        if best_iou[d] >= min_iou and g not in taken:
            pairs.append((d, g))
            taken.add(g)
    return pairs


chosen = one_per_object(det, target)[:3]
for d, g in chosen:
    print(f"detection #{d} ({tm.class_names[int(det['labels'][d]) - 1]} "
          f"{float(det['scores'][d]):.2f}) → GT {g}, a {tm.class_names[int(target['labels'][g]) - 1]}")
fig, axes = plt.subplots(len(chosen), 9, figsize=(17, 2.1 * len(chosen)), layout="constrained",
                         gridspec_kw={"width_ratios": [1.3] + [1] * 8}, squeeze=False)
for row, (d, g) in enumerate(chosen):
    one = {k: det[k][d : d + 1] for k in ("boxes", "labels", "scores")}
    draw_instances(axes[row, 0], image, one, tm.class_names, score_thresh=0.0, ids=[d])
    axes[row, 0].set_title(f"#{d}, on a {tm.class_names[int(target['labels'][g]) - 1]}", fontsize=8)
    a = attention[d]  # [K, M, M]
    weights = out["masks"][0]["attention_weights"][d]  # [K, R, R]: softmax_K(upsample(a))
    lim = float(a.abs().max())
    for k in range(4):
        im_raw = axes[row, 1 + k].imshow(a[k], cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[row, 1 + k].set_title(f"a{k + 1} (raw)", fontsize=8)
        im_soft = axes[row, 5 + k].imshow(weights[k], cmap="viridis", vmin=0, vmax=1)
        axes[row, 5 + k].set_title(f"weight s{k + 1} (R×R)", fontsize=8)
    fig.colorbar(im_raw, ax=axes[row, 1:5], shrink=0.8, pad=0.01)
fig.colorbar(im_soft, ax=axes[:, 5:], shrink=0.6, label="weight of the basis")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])

# %% [markdown]
# Each map covers the detection's box, whatever its size. The softmax splits the box into
# regions, and each region is given (mostly) to one basis. Which basis gets which region is
# learned, and differs from one training run to the next. To say it for *this* model
# without reading indices off a picture, the cell below prints each basis' measured role
# (from its values over val images, as in notebook 04) next to the mean weight it gets in
# the centre of the box, in its border ring, and in its left and right halves — averaged
# over one detection per object (`one_per_object`) in the first val images, so that an
# object found by many duplicates does not count many times:

# %%
from blendmask_edu.tutorial import pick
from blendmask_edu.viz.bases_probe import basis_roles, probe_bases, role_text

n_images = pick(40, 200)
roles = basis_roles(probe_bases(model, val, num_images=n_images))
w = []  # the weights [K, R, R] of one detection per object found
for i in range(n_images):
    image_i, target_i = val[i]
    with torch.inference_mode():
        run_i = model.run([image_i])
    found = [d for d, _ in one_per_object(run_i["fcos"]["detections"][0], target_i)]
    w.append(run_i["masks"][0]["attention_weights"][found])
w = torch.cat(w)  # [n, K, R, R]
print(f"{len(w)} detections: one per object found (box IoU ≥ 0.5) in {n_images} val images")
R = w.shape[-1]
border = torch.ones(R, R, dtype=torch.bool)
border[R // 4 : -(R // 4), R // 4 : -(R // 4)] = False
for r in roles:
    k = r["basis"]
    centre, ring = float(w[:, k][:, ~border].mean()), float(w[:, k][:, border].mean())
    left, right = float(w[:, k, :, : R // 2].mean()), float(w[:, k, :, R // 2 :].mean())
    top, bottom = float(w[:, k, : R // 2].mean()), float(w[:, k, R // 2 :].mean())
    # the pattern: higher inside → centre, lower inside → border, one side → that side
    expected = {"objects": centre - ring, "left-right": left - right, "top-bottom": top - bottom}
    fits = [f"{name}: {'fits' if (expected[name] > 0) == (r['contrasts'][name] > 0) else 'does not fit'}"
            for name in (r["role"], r["also"]) if name in expected]  # the role, and its "also"
    print(f"{role_text(r).split(' (')[0]:55s} weight: centre {centre:.2f}  border {ring:.2f}"
          f"  left {left:.2f}  right {right:.2f}  {', '.join(fits)}")

# %% [markdown]
# Compare each basis' role with where its weight goes (this run's numbers). The pattern one
# would expect: a basis that is higher inside objects gets the centre of the box, one that is
# lower inside objects (it says "background") the border, and a basis that is higher on one
# side of a box the weight on that side; the last column says whether each line fits it
# (for the basis' role, and for its second one when it has one).
# Where a line does not fit, the model found another use for that basis.
#
# The attention is predicted per detection, from the features at its location, so it *can*
# differ from one object to the next and follow the object's shape and pose. That is the
# paper's point where it discusses what the learned bases and attentions encode: the
# attention carries instance-level information — coarse shape and pose — at M×M, the bases
# carry the fine, position-sensitive detail at 1/4 of the image; the mask needs both
# (notebook 06). How far this run's attention does so is measured next.
#
# Which basis wins at each position (argmax over K of the upsampled attention, as the
# blender sees it), for the ten highest-scoring detections of the image; each title names
# the ground-truth object its box overlaps most (box IoU ≥ 0.5; "—" for none). The cell
# then compares the maps: at how many positions the same basis wins, for two detections of
# one object and for two detections of different objects.

# %%
from itertools import combinations

from IPython.display import Markdown, display

w10 = out["masks"][0]["attention_weights"][:10]  # [10, K, R, R]
wins = w10.argmax(1)  # [10, R, R] the winning basis at each position
best_iou, best_gt = box_iou(det["boxes"][:10], target["boxes"]).max(dim=1)  # [10], [10]
on = [int(g) if v >= 0.5 else None for v, g in zip(best_iou, best_gt)]  # GT object or None
fig, axes = plt.subplots(2, 10, figsize=(15, 3.4), layout="constrained")
for i in range(10):
    one = {k: det[k][i : i + 1] for k in ("boxes", "labels", "scores")}
    draw_instances(axes[0, i], image, one, tm.class_names, score_thresh=0.0, ids=[i])
    im = axes[1, i].imshow(wins[i], cmap="tab10", vmin=-0.5, vmax=9.5)
    axes[1, i].set_title(f"#{i} on GT {'—' if on[i] is None else on[i]}", fontsize=8)
for ax in axes.flat:
    ax.set_axis_off()
cbar = fig.colorbar(im, ax=axes[1, :], ticks=range(4), shrink=0.9)
cbar.ax.set_ylim(-0.5, 3.5)
cbar.ax.set_yticklabels([f"basis {k + 1}" for k in range(4)]);
plt.show()

objects = [g for g in on if g is not None]
n_wrong = sum(det["labels"][i] != target["labels"][g] for i, g in enumerate(on) if g is not None)
display(Markdown(
    f"These ten detections lie on {len(set(objects))} different objects ({len(objects)} of them "
    f"overlap one by box IoU ≥ 0.5); {int(n_wrong)} of those carry a label that is not their "
    "object's class."))
same, different = [], []  # agreement of the argmax maps, per pair of detections
for i, j in combinations([i for i in range(10) if on[i] is not None], 2):
    (same if on[i] == on[j] else different).append(float((wins[i] == wins[j]).float().mean()))
if same and different:
    mean_same, mean_diff = sum(same) / len(same), sum(different) / len(different)
    display(Markdown(
        f"Two detections of one object agree on the winning basis at {mean_same:.0%} of the "
        f"positions ({len(same)} pairs), two detections of different objects at "
        f"{mean_diff:.0%} ({len(different)} pairs): in this run the layout changes "
        + ("little between objects." if mean_diff > mean_same - 0.1
           else "more between objects than between duplicates of one object.")))
else:
    display(Markdown("These ten detections do not include both duplicates of one object and "
                     "detections of different objects, so there is nothing to compare here."))

# %% [markdown]
# Read the strip with notebook 03 in mind: the ten best detections of an image need not be
# ten objects. Duplicates of one object — a neighbouring location, or the same location with
# another class (class-wise NMS keeps both) — and wrong labels are counted above, for this
# run's model (the tags give class and score, the titles the object). Each duplicate still
# has its own attention, which is why they are shown. The maps are drawn in box coordinates
# (every box becomes R×R), so what can differ between objects is the layout of the regions,
# not their size; the last sentence above says how much it differs in this run. Notebook 09
# measures how much the attention varies over the whole val set.

# %% [markdown]
# ## Summary
# - The top layer is one 3×3 conv on FCOS' box tower with $K \cdot M \cdot M$ outputs per
#   location; a detection uses the attention at the location that found it.
# - `at_locations` computes it only at the needed locations — the same numbers as the full
#   conv (asserted above).
# - An attention is `[K, M, M]` over the box; after a softmax over K it says which basis
#   to take where.
#
# ## Exercises
# 1. How many parameters does the top layer have for M = 7 and M = 28 (the paper's
#    ablations)? Why does it grow so fast?
# 2. Check that the softmax over K sums to 1 at every position of a detection's attention.
# 3. From which levels did the 20 best detections of this image come? Compare with the
#    sizes of their boxes.

# %% tags=["solution"]
# 1. 64·K·M²·9 + K·M² grows with M²: M = 28 gives four times the M = 14 layer.
for M in (7, 14, 28):
    t = TopLayer(BlenderConfig(K=4, M=M), in_channels=64)
    print(M, sum(p.numel() for p in t.parameters()))

# %% tags=["solution"]
# 2.
s = attention[0].softmax(dim=0)  # [K, M, M]
print(torch.allclose(s.sum(0), torch.ones(14, 14)))

# %% tags=["solution"]
# 3. The level is chosen by the location's distance to the farthest side of its box,
#    max(l, t, r, b) — about half the box side for a location near the box centre — against
#    the size ranges of notebook 03; so larger boxes come from coarser levels.
lv = out["fcos"]["level"][det["loc_index"][:20]] + 3
side = (det["boxes"][:20, 2:] - det["boxes"][:20, :2]).max(1).values
for l, s_ in sorted(zip(lv.tolist(), side.tolist())):
    print(f"P{l}: box side {s_:.0f}")
print(f"levels among these 20: {sorted({f'P{l}' for l in lv.tolist()})}; bounds between the "
      f"levels' ranges of max(l, t, r, b) (sizes_of_interest): {model.fcos.cfg.sizes_of_interest}")
