# %% [markdown]
# # 06 · The blender: four equations that make a mask
#
# The blender (Chen et al. 2020, §3.5) is where the bottom-up bases (notebook 04) and the
# top-down attention (notebook 05) meet. For a detection $d$ with box $p_d$, bases
# $B \in \mathbb{R}^{K \times \frac{H}{4} \times \frac{W}{4}}$ and attention
# $a_d \in \mathbb{R}^{K \times M \times M}$:
#
# $$\begin{aligned}
# r_d &= \mathrm{RoIAlign}_{R \times R}(B, p_d) && \text{(Eq. 1) basis crops } [K, R, R]\\
# a'_d &= \mathrm{interpolate}_{M \times M \to R \times R}(a_d) && \text{(Eq. 2) attention upsampled } [K, R, R]\\
# s_d &= \mathrm{softmax}_K(a'_d) && \text{(Eq. 3) weights over the bases } [K, R, R]\\
# m_d &= \textstyle\sum_{k=1}^{K} s_d^k \circ r_d^k && \text{(Eq. 4) mask logits } [R, R]
# \end{aligned}$$
#
# (The paper writes Eq. 1 as $\mathrm{RoIPool}_{R \times R}$, "the RoIPooler of Mask R-CNN",
# and then specifies RoIAlign with a sampling ratio of 1: that is what is written and computed
# here.)
#
# **What you will learn**
# - each equation computed by hand on a tiny example with hand-picked numbers;
# - the library's `crop_bases` and `blend` give exactly the same numbers (asserted);
# - the blender on the trained model, bilinear vs nearest upsampling, and the mask loss;
# - an explorer to follow any detection through the four steps.

# %%
import matplotlib.pyplot as plt
import torch

from blendmask_edu.modeling.blender import blend, crop_bases
from blendmask_edu.tutorial import cached_model, describe, val_dataset

torch.set_printoptions(precision=4, sci_mode=False)

# %% [markdown]
# ## 1. By hand, on a tiny example
#
# Two bases on a 4×4 grid (a 16×16 image, bases at stride 4). Basis 1 is a ramp from left
# to right, basis 2 a bump in the middle. One detected box, $(x_0, y_0, x_1, y_1) =
# (4, 4, 12, 12)$ pixels: the middle of the image. $R = 4$, $M = 2$.

# %%
bases = torch.tensor([[[0.0, 1.0, 2.0, 3.0],
                       [0.0, 1.0, 2.0, 3.0],
                       [0.0, 1.0, 2.0, 3.0],
                       [0.0, 1.0, 2.0, 3.0]],     # basis 1: value = column
                      [[0.0, 0.0, 0.0, 0.0],
                       [0.0, 2.0, 2.0, 0.0],
                       [0.0, 2.0, 2.0, 0.0],
                       [0.0, 0.0, 0.0, 0.0]]])[None]  # basis 2: a bump.  [B=1, K=2, 4, 4]
box = torch.tensor([[4.0, 4.0, 12.0, 12.0]])  # [N=1, 4] in image pixels
attention = torch.tensor([[[0.0, 2.0],
                           [0.0, 2.0]],           # a_1: use basis 1 on the right
                          [[2.0, 0.0],
                           [2.0, 0.0]]])[None]    # a_2: use basis 2 on the left.  [N=1, K=2, M=2, M=2]
K, R, M, stride = 2, 4, 2, 4
describe("bases", bases)
describe("attention", attention)

# %% [markdown]
# ### Eq. 1 — RoIAlign, by hand
#
# With `aligned=True` a bases cell $j$ covers the image pixels $[4j, 4j + 4)$ and its
# value sits at its centre. In bases coordinates (cell centres at integers) the box is
# $x_0/4 - 0.5 = 0.5$ to $x_1/4 - 0.5 = 2.5$. It is cut into $R \times R$ bins of
# $(2.5 - 0.5)/4 = 0.5$ cells, and with `sampling_ratio=1` each bin takes **one** sample at
# its centre, interpolated bilinearly from the four surrounding cells:

# %%
x0, y0, x1, y1 = (box[0] / stride - 0.5).tolist()  # box in bases cells
xs = [x0 + (j + 0.5) * (x1 - x0) / R for j in range(R)]  # sample points
ys = [y0 + (i + 0.5) * (y1 - y0) / R for i in range(R)]
print("sample points x:", xs, " y:", ys)


def bilinear(f, y, x):
    """Value of the map f [h, w] at a point inside it, from its 4 neighbouring cells."""
    i, j = int(y), int(x)
    dy, dx = y - i, x - j
    return ((1 - dy) * (1 - dx) * f[i, j] + (1 - dy) * dx * f[i, j + 1]
            + dy * (1 - dx) * f[i + 1, j] + dy * dx * f[i + 1, j + 1])


r_hand = torch.tensor([[[bilinear(bases[0, k], y, x) for x in xs] for y in ys]
                       for k in range(K)])  # [K, R, R]
print("r (by hand):\n", r_hand)

# %% [markdown]
# Basis 1 cropped: the ramp between columns 0.75 and 2.25. Basis 2 cropped: the bump,
# 2 in the middle, falling off towards the corners (1.125 = 2 · 0.75 · 0.75).
#
# ### Eq. 2 — bilinear upsampling $M \to R$, by hand
#
# With `align_corners=False` the output position $i$ reads the input at
# $(i + 0.5)\frac{M}{R} - 0.5$, clamped to $[0, M - 1]$. In one dimension that is a
# matrix $U \in \mathbb{R}^{R \times M}$; in two, $a' = U\,a\,U^\top$ for each basis:

# %%
U = torch.zeros(R, M)
for i in range(R):
    src = min(max((i + 0.5) * M / R - 0.5, 0.0), M - 1)
    lo = int(src)
    hi = min(lo + 1, M - 1)
    U[i, lo] += 1 - (src - lo)
    U[i, hi] += src - lo
print("U =\n", U)
a_up_hand = U @ attention[0] @ U.T  # [K, R, R]
print("a' (by hand):\n", a_up_hand)

# %% [markdown]
# ### Eq. 3 — softmax over the K bases, by hand
#
# At each of the $R \times R$ positions, the $K$ upsampled logits become weights that sum
# to 1: $s^k = e^{a'^k} / \sum_j e^{a'^j}$.

# %%
s_hand = a_up_hand.exp() / a_up_hand.exp().sum(dim=0, keepdim=True)  # [K, R, R]
print("s (by hand):\n", s_hand)
print("sum over K:", s_hand.sum(0).unique())

# %% [markdown]
# In the leftmost column basis 2 gets 0.88 of the weight ($e^2/(e^2 + e^0)$), in the next 0.73; in the right columns:
# basis 1 does; in between the weights cross over.
#
# ### Eq. 4 — the weighted sum, by hand

# %%
m_hand = (s_hand * r_hand).sum(dim=0)  # [R, R]
print("m (by hand):\n", m_hand)

# %% [markdown]
# On the left the mask is mostly the bump of basis 2; on the right mostly the ramp of
# basis 1. The attention chose, position by position, which basis to show.
#
# ### The library: the same numbers
#
# `crop_bases` is Eq. 1 (torchvision's `roi_align` with `sampling_ratio=1, aligned=True`);
# `blend` is Eq. 2–4. They work on all detections at once: `[N, K, R, R]`.

# %%
crops = crop_bases(bases, box, batch_index=torch.tensor([0]), R=R, bases_stride=stride)
out = blend(crops, attention, interpolation="bilinear")
describe("crop_bases → r", crops)
describe("blend → s", out["attention_weights"])
describe("blend → m", out["mask_logits"])
assert torch.allclose(crops[0], r_hand, atol=1e-6)                  # Eq. 1
assert torch.allclose(out["attention_weights"][0], s_hand, atol=1e-6)  # Eq. 2–3
assert torch.allclose(out["mask_logits"][0], m_hand, atol=1e-6)        # Eq. 4
print("by hand == library: Eq. 1, Eq. 2–3, Eq. 4")

# %% [markdown]
# ## 2. The blender in the trained model
#
# `model.run` returns each detection's crops, weights and mask logits. Recomputing them
# from the bases and the raw attention with the two functions gives the same numbers; the
# masks are the sigmoid of the logits, and `paste_masks` puts them back into the image.

# %%
tm = cached_model()
model = tm.model
val = val_dataset(tm.cfg)
image, target = val[0]
with torch.inference_mode():
    run = model.run([image])
det, mb = run["fcos"]["detections"][0], run["masks"][0]
describe("bases", mb["bases"])
describe("attention", mb["attention"])
R_model = model.mask_branch.cfg.R
crops = crop_bases(mb["bases"][None], det["boxes"], torch.zeros_like(det["labels"]), R_model)
again = blend(crops, mb["attention"], model.mask_branch.cfg.interpolation)
describe("r", crops)
describe("m", again["mask_logits"])
assert torch.allclose(crops, mb["basis_crops"], atol=1e-5)
assert torch.allclose(again["mask_logits"], mb["mask_logits"], atol=1e-4)

from blendmask_edu.modeling.paste import paste_masks

pasted = paste_masks(mb["masks"], det["boxes"], image.shape[-2:])
describe("pasted masks", pasted)

# %% [markdown]
# One detection, every step. Row 1 is *not* a step of the blender: it is the softmax over K
# of the raw M×M attention, a view of what the top layer predicted. The blender's steps are
# rows 2–4: the weights $s$ = softmax over K of the attention upsampled to R×R (Eq. 2–3),
# the crops $r$ (Eq. 1) and the products $s^k \circ r^k$ (Eq. 4). Last column: the box, the
# sum $m$, its sigmoid and the ground truth.
#
# Which detection: the highest-scoring ones of an image are often duplicates of one object or
# carry a wrong class (notebook 05), so the cell takes the highest-scoring detection that is
# *right*: its box overlaps a ground-truth box by IoU ≥ 0.5 and its label is that box's class.

# %%
from torchvision.ops import box_iou

from blendmask_edu.viz.blending import detection_intermediates, plot_detection_blending
from blendmask_edu.viz.blendmask_figures import gt_crop_for

best_iou, best_gt = box_iou(det["boxes"], target["boxes"]).max(dim=1)  # [N], [N]
by_score = det["scores"].argsort(descending=True).tolist()
right = [d for d in by_score
         if best_iou[d] >= 0.5 and det["labels"][d] == target["labels"][best_gt[d]]]
i = right[0] if right else by_score[0]
name = tm.class_names[int(det["labels"][i]) - 1]
truth = tm.class_names[int(target["labels"][best_gt[i]]) - 1]
print(("the highest-scoring right detection" if right else "no right detection; the highest-scoring")
      + f": #{i}, labelled {name}, score {float(det['scores'][i]):.2f}; the GT box it overlaps "
      f"most: a {truth} (box IoU {float(best_iou[i]):.2f})")
inter = detection_intermediates(mb, i)
gt = gt_crop_for(det["boxes"][i], target, R_model)
plot_detection_blending(image, det["boxes"][i], inter, f"#{i}: {name} {float(det['scores'][i]):.2f}", gt);

# %% [markdown]
# Read it column by column: where $s_k$ is bright, the mask takes basis $k$'s crop. The
# products (row 4) are the crops with everything outside each basis' region switched
# off; their sum (right) is the mask logits. How this detection's mask is made — which
# basis carries it, how well it fits — is this run's; the cell below measures it: for each
# basis, its share of the weight in the box and what its product adds inside the GT mask
# and outside it.

# %%
from IPython.display import Markdown, display

prod = inter["attention_weights"] * inter["basis_crops"]  # [K, R, R] the products of Eq. 4
inside = gt.bool()
K_model = prod.shape[0]
p_in = [float(prod[k][inside].mean()) if inside.any() else float("nan") for k in range(K_model)]
p_out = [float(prod[k][~inside].mean()) if (~inside).any() else float("nan") for k in range(K_model)]
for k in range(K_model):
    print(f"basis {k + 1}: weight share {float(inter['attention_weights'][k].mean()):.2f}; "
          f"product mean inside the GT {p_in[k]:+.2f}, outside {p_out[k]:+.2f}")
pred = inter["masks"] > 0.5
print(f"mask IoU with the GT in the box: {float((pred & inside).sum() / (pred | inside).sum().clamp(min=1)):.2f}")
if inside.any() and (~inside).any():
    a = max(range(K_model), key=lambda k: p_in[k])  # adds most inside the GT
    b = min(range(K_model), key=lambda k: p_out[k])  # pulls hardest to "off" outside it
    display(Markdown(
        f"In this detection the product highest inside the GT is basis {a + 1}'s "
        f"({p_in[a]:+.2f} inside, {p_out[a]:+.2f} outside)"
        + (": it draws the object" if p_in[a] > max(p_out[a], 0) else "")
        + f"; the most negative outside the GT is basis {b + 1}'s ({p_out[b]:+.2f}), which "
        "pushes the surroundings to \"off\"."))

# %% [markdown]
# In general, a basis whose product is much higher inside the GT than outside draws the
# object, and one whose product is negative where the object is not pushes that region to
# "off"; several bases can share either job. The GT is only the *visible* part of the shape:
# where another shape covers it, the mask should be off too.
#
# ## 3. Bilinear or nearest?
#
# The paper upsamples the attention bilinearly; its ablations compare bilinear with
# nearest-neighbour upsampling, and bilinear wins. With nearest, each attention cell becomes
# a $\frac{R}{M} \times \frac{R}{M}$ block of equal weights. Here $R/M = 28/14 = 2$: the
# blocks are 2×2 pixels of the 28×28 mask, and since the crops $r$ are the same in both, the mask changes mostly where the weights switch from one basis to another (and faintly
# elsewhere). At this ratio the
# steps are hard to see in the masks themselves; the |difference| column shows where they
# are. (The paper's default is R/M = 56/14 = 4, where the blocks are 4×4.)
#
# One row per object, for (up to) three different objects: walking the detections from the
# highest score down, a detection is taken when the GT box it overlaps most (box IoU ≥ 0.5)
# has none yet (`one_per_object` of notebook 05).

# %%
rows, taken = [], set()  # one detection per GT object, by score
for d in by_score:
    if best_iou[d] >= 0.5 and int(best_gt[d]) not in taken:
        rows.append(d)
        taken.add(int(best_gt[d]))
rows = rows[:3]
nearest = blend(mb["basis_crops"], mb["attention"], "nearest")
fig, axes = plt.subplots(len(rows), 4, figsize=(8.6, 2.2 * len(rows)), layout="constrained",
                         squeeze=False)
for row, d in enumerate(rows):
    gt_row = gt_crop_for(det["boxes"][d], target, R_model)
    truth_d = tm.class_names[int(target["labels"][best_gt[d]]) - 1]
    panels = [(mb["masks"][d], f"bilinear (on a {truth_d})"),
              (nearest["mask_logits"][d].sigmoid(), "nearest"),
              ((mb["masks"][d] - nearest["mask_logits"][d].sigmoid()).abs(), "|difference|"),
              (gt_row, "GT in the box")]
    for ax, (img, title) in zip(axes[row], panels):
        im = ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"#{d}: {title}", fontsize=9)
        ax.set_axis_off()
fig.colorbar(im, ax=axes, shrink=0.6, label="mask probability");

# %% [markdown]
# (This model was trained with bilinear upsampling, so nearest is also a mismatch with
# training; the differences sit where the weights change between neighbouring attention
# cells.)
#
# ## 4. How the blender learns: the mask loss
#
# In training, every *positive location* of FCOS (notebook 03) contributes its attention,
# blended with the bases cropped by **its GT box** (not the predicted box). The target is
# the GT mask cropped by the same box and resized to $R \times R$ (`mask_targets`). The
# loss is a per-pixel binary cross-entropy, weighted by the centerness target of the
# location and normalised by the sum of those weights:
#
# $$L_{mask} = \frac{\sum_d \mathrm{ctr}^*_d\ \mathrm{mean}_{R \times R}\,
#   \mathrm{BCE}(m_d, \mathrm{target}_d)}{\sum_d \mathrm{ctr}^*_d}$$
#
# The printed `loss_mask` is $w_{mask} L_{mask}$ with the preset's `mask_loss_weight`
# $w_{mask} = 2$, and the printed `loss_sem` is the semantic loss of notebook 04 times its
# weight 0.3 (both printed below the losses): these are the numbers training adds up.

# %%
from blendmask_edu.modeling.backbone import pyramid_levels
from blendmask_edu.modeling.mask_branch import mask_targets

mt = mask_targets([target], R_model)
describe("mask targets", mt)
with torch.inference_mode():
    fcos_train = model.fcos(pyramid_levels(run["features"]), run["image_sizes"], [target])
    losses = model.mask_branch.forward_train(run["features"], fcos_train, [target])
print({k: round(v.item(), 4) for k, v in losses.items()})
bcfg = model.mask_branch.cfg
print(f"weights included above: loss_mask × {bcfg.mask_loss_weight:g} (the preset's mask_loss_weight), "
      f"loss_sem × {bcfg.aux_seg_weight:g} (aux_seg_weight)")
fig, axes = plt.subplots(1, len(mt) + 1, figsize=(2 * (len(mt) + 1), 2.2), layout="constrained")
axes[0].imshow(image.permute(1, 2, 0))
axes[0].set_title("image", fontsize=9)
for ax, t, lab in zip(axes[1:], mt, target["labels"]):
    ax.imshow(t, cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{tm.class_names[int(lab) - 1]}: {R_model}×{R_model}", fontsize=9)
for ax in axes:
    ax.set_axis_off()

# %% [markdown]
# ## 5. Explore
#
# Pick a val image and a detection; the figure of section 2 follows (in Jupyter; on
# GitHub you see the first detection of image 0).

# %%
from blendmask_edu.viz.explorers import BlendingExplorer

BlendingExplorer(model, val, tm.class_names)

# %% [markdown]
# ## Summary
# - Eq. 1: RoIAlign crops each basis to the box at $R \times R$ (one bilinear sample per
#   bin, aligned boxes). Eq. 2: the $M \times M$ attention is upsampled to $R \times R$.
#   Eq. 3: softmax over the K bases. Eq. 4: the weighted sum is the mask logits.
# - `crop_bases` + `blend` compute exactly that (asserted against the hand computation).
# - Training blends the attention of every positive location with the bases cropped by
#   its GT box, against the GT mask cropped the same way; BCE weighted by centerness.
#
# ## Exercises
# 1. With K = 1, what does the softmax do, and what is the mask? Check with `blend`.
# 2. Write the matrix $U$ for nearest upsampling from M = 2 to R = 4 and check it against
#    `blend(..., "nearest")` on the tiny example.
# 3. Move the tiny example's box 2 pixels (half a bases cell) to the right. Predict the new
#    crop of basis 1, then check with `crop_bases`. What happens if you move it 4 pixels?

# %% tags=["solution"]
# 1. A softmax over one element is 1 everywhere: the attention would have no effect and the
#    mask would be the crop of the single basis. So for K = 1 the paper (Table 3's caption)
#    applies a sigmoid to both the basis and the attention, and `blend` does the same:
#    mask probability = σ(a') ∘ σ(r), returned as its logit (so that `.sigmoid()` gives it
#    back). With an attention already at R × R the upsampling changes nothing, so this
#    checks it directly:
a1 = torch.randn(len(crops), 1, *crops.shape[-2:])  # [N, 1, R, R]
one = blend(crops[:, :1], a1, "bilinear")
print(torch.allclose(one["mask_logits"].sigmoid(), a1[:, 0].sigmoid() * crops[:, 0].sigmoid(),
                     atol=1e-5))

# %% tags=["solution"]
# 2. Nearest: output position i reads input floor(i · M / R): rows [1,0],[1,0],[0,1],[0,1].
U_nearest = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
a_n = U_nearest @ attention[0] @ U_nearest.T
m_n = (a_n.softmax(0) * r_hand).sum(0)
print(torch.allclose(blend(r_hand[None], attention, "nearest")["mask_logits"][0], m_n))

# %% tags=["solution"]
# 3. Half a cell to the right: every sample of the ramp reads half a column further, +0.5.
#    With 4 pixels the last sample lands at x = 3.25, beyond the last cell centre (3):
#    RoIAlign clamps it to the border value, 3, instead of extrapolating to 3.25.
for dx in (2.0, 4.0):
    shifted = crop_bases(bases, box + torch.tensor([dx, 0.0, dx, 0.0]), torch.tensor([0]), R, stride)
    print(f"shift {dx:g} px, first row of r_1:", shifted[0, 0, 0].tolist())
print("2 px: r_hand[0] + 0.5 everywhere:",
      torch.allclose(crop_bases(bases, box + torch.tensor([2.0, 0, 2.0, 0]), torch.tensor([0]), R, stride)[0, 0],
                     r_hand[0] + 0.5))
