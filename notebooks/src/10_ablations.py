# %% [markdown]
# # 10 · Ablations: K, M, R and the interpolation
#
# The blender has four knobs, the ones the BlendMask paper ablates (Chen et al. 2020,
# §4.1): the number of bases **K**, the attention resolution **M**, the RoI resolution
# **R**, and how the attention is upsampled from M×M to R×R (**interpolation**). The library's
# defaults are the paper's (`BlenderConfig`: K = 4, M = 14, R = 56, bilinear); the `shapes`
# preset keeps K, M and the interpolation and uses R = 28 for its 128-pixel images.
#
# **Outside the paper's range.** With M = 14 and R = 28 the attention is upsampled only
# ×2 (R/M = 2); the paper's settings and ablations keep R/M ≥ 4 (its default is 56/14). So
# what this notebook finds about M, R and the interpolation is about a regime the paper did
# not study, on small synthetic images: read it as "on shapes, with this preset", not as a
# statement about BlendMask in general.
#
# **What you will learn**
# - what each knob changes in the computation and in the parameter count, measured on the
#   library's modules;
# - the ceiling that R puts on mask quality, measured on the ground truth itself;
# - how `blendmask-edu compare --sweep KNOB=v1,v2,...` runs an ablation, and what the
#   measured K sweep on shapes says — and does not;
# - how to run the sweeps that were not measured here.

# %%
import json

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

from blendmask_edu.config import BlenderConfig, shapes_preset
from blendmask_edu.modeling.blender import blend
from blendmask_edu.modeling.segmenter import InstanceSegmenter
from blendmask_edu.tutorial import (cached_model, describe, docs_path, full_mode, picture, shown,
                                   val_dataset)

torch.set_printoptions(precision=3, sci_mode=False)
RESULTS = docs_path("results")  # the measured sweeps, committed (in a clone)
print("full mode" if full_mode() else "fast mode")


def mask_branch_params(**knobs) -> dict[str, int]:
    """Parameters of the shapes preset's blender branch with some knobs changed, per part."""
    cfg = shapes_preset()
    for name, value in knobs.items():
        setattr(cfg.model.blender, name, value)
    mb = InstanceSegmenter(cfg.model).mask_branch
    return {name: sum(p.numel() for p in m.parameters()) for name, m in mb.named_children()}


# %% [markdown]
# ## 1. K: how many bases
#
# K is the number of output channels of the bottom module (its last 1×1 conv) and the
# first factor of the top layer's $K \cdot M \cdot M$ outputs per location. So K changes
# the bottom module only in that last conv, while the top layer grows in proportion to K;
# which of the two is the larger part depends on K (the last line says from which K on the
# top layer is):

# %%
top_larger = []
for K in (1, 2, 4, 8, 16):
    parts = mask_branch_params(K=K)
    print(f"K = {K:2d}: bottom {parts['bottom']:>9,}   top layer {parts['top']:>9,}   "
          f"total {sum(parts.values()):>9,}")
    if parts["top"] > parts["bottom"]:
        top_larger.append(K)
print(f"the top layer is the larger part for K in {top_larger}, the bottom module below that")

# %% [markdown]
# With one basis a softmax over K is the constant 1, so the blender would just copy the
# crop. For K = 1 the paper (Table 3's caption) applies a sigmoid to **both** the basis and
# the attention, and so does `blend`: the mask probability is σ(a') · σ(r) — the attention
# a soft on/off gate, the basis a probability of "object" — returned as its logit:

# %%
crop = torch.tensor([[[[2.0, -2.0], [2.0, -2.0]]]])  # one basis crop    [N=1, K=1, R=2, R=2]
att = torch.tensor([[[[4.0, 4.0], [-4.0, -4.0]]]])   # "on" at the top   [N=1, K=1, M=2, M=2]
out = blend(crop, att)
print("weights σ(a'):\n", out["attention_weights"][0, 0])
print("mask probability = σ(a') · σ(r):\n", out["mask_logits"][0].sigmoid())
print("the same by hand:\n", att[0, 0].sigmoid() * crop[0, 0].sigmoid())

# %% [markdown]
# ### The measured K sweep
#
# `compare --sweep K=4,8,16` on shapes, one seed, 400 iterations each, on this project's
# 2-core CPU (`docs/results/sweep_K/`). **It was measured with an earlier `shapes` preset**
# (mask loss weight 1, bottom module without the C2 input of notebook 04) and not re-run
# since, so its K = 4 row is not the blender row of the zoo table of notebook 08 (printed
# below for its seed spread): compare the sweep's rows with each other only. It starts at
# K = 4: the K = 1 row (with the sigmoid on both, above) was not measured. The `train
# s/iter` and `inference ms/img` columns are the wall time of each run on a shared machine,
# under whatever load it had at that moment: they do not measure what K costs (the
# parameter counts do).

# %%
sweep = json.loads((RESULTS / "sweep_K" / "results.json").read_text())
print(f"sweep {sweep['sweep']}, seeds {sweep['seeds']}, budget {sweep['budget']}")
display(Markdown((RESULTS / "sweep_K" / "results.md").read_text()))
zoo_rows = json.loads((RESULTS / "compare_shapes" / "results.json").read_text())["rows"]
blender = next(r for r in zoo_rows if r["row"] == "blender")
print(f"the blender (K = 4) over 3 seeds in the zoo comparison (current preset): mask AP "
      f"{[round(v, 3) for v in blender['mask_AP']['values']]}, std {blender['mask_AP']['std']:.3f}; "
      f"on GT boxes std {blender['mask_AP_gt_boxes']['std']:.3f}")

# %% [markdown]
# The bars, drawn from the sweep's `results.json` by the code `compare` uses for its
# `comparison.png` (`viz/compare_figures.plot_comparison`; its title is the one `compare`
# writes now for every comparison, here with the values of K as rows):

# %%
from blendmask_edu.viz.compare_figures import plot_comparison

plot_comparison(sweep["rows"]);

# %% [markdown]
# What it says, rendered from the committed `results.json` files (the sweep's, and for the
# seed-to-seed noise the zoo comparison's three seeds, which used the *current* preset — the
# only seed spread committed):

# %%
rows = {r["row"]: r for r in sweep["rows"]}
ap = {k: rows[k]["mask_AP"]["mean"] for k in rows}
gt = {k: rows[k]["mask_AP_gt_boxes"]["mean"] for k in rows}
box = [rows[k]["box_AP"]["mean"] for k in rows]
noise = blender["mask_AP"]["std"]
best = max(ap, key=ap.get)
params = {k: rows[k]["mask_branch_params"]["mean"] for k in rows}
lines = [f"- Mask AP by K: " + ", ".join(f"{k} {v:.3f}" for k, v in ap.items())
         + f"; on GT boxes: " + ", ".join(f"{k} {v:.3f}" for k, v in gt.items()) + ".",
         f"- The best row, {best}, is {ap[best] - ap['K=4']:+.3f} mask AP from K=4 — "
         f"{(ap[best] - ap['K=4']) / noise:.1f} times the seed std of the K = 4 blender in the zoo "
         f"comparison ({noise:.3f}, another preset). One seed per row: suggestive, not settled.",
         f"- Mask-branch parameters: " + ", ".join(f"{k} {int(v):,}" for k, v in params.items()) + ".",
         f"- Box AP ranges over {min(box):.3f}–{max(box):.3f} across the rows, one seed each; the K = 4 "
         f"blender's box AP varies by {blender['box_AP']['std']:.3f} (std) between seeds in the zoo comparison, "
         + ("so the range is within about two seed standard deviations: it cannot be told apart from seed noise."
            if max(box) - min(box) <= 2 * blender["box_AP"]["std"] else
            "more than two seed standard deviations, but one seed per row cannot show an effect of K on the detector.")]
display(Markdown("\n".join(lines)))

# %% [markdown]
# Whether more bases still help with the current preset (C2 input) was not measured.
#
# The qualitative grid of the same runs (seed 0, score ≥ 0.5):

# %%
display(picture(RESULTS / "sweep_K" / "qualitative.png", width=720))

# %% [markdown]
# ## 2. M: how fine the attention is
#
# Each instance's attention is K maps of M×M, upsampled to R×R. M sets the finest spatial
# pattern the attention can draw inside a box: at M = 14 and R = 28 one attention cell covers
# 2×2 mask pixels. The top layer has $K \cdot M^2$ outputs per location, so its parameters grow
# with $M^2$:

# %%
for M in (4, 7, 14, 28):
    parts = mask_branch_params(M=M)
    print(f"M = {M:2d}: top layer {parts['top']:>10,}   mask branch {sum(parts.values()):>10,}")

# %% [markdown]
# What a coarser M would allow, on the trained model: take one detection's 14×14 attention,
# average it down to 7×7 and 2×2 (one way a smaller M could express it, each block's mean —
# not the best M×M attention for this detection, which was not searched for), and blend the
# same basis crops with it. This only shows the expressiveness; a model *trained* with a small M
# would learn other bases to make up for it. No M sweep was measured on this machine
# (`compare --sweep M=7,14,28` runs it).

# %%
tm = cached_model()
model = tm.model
val = val_dataset(tm.cfg)
image, target = val[5]
with torch.inference_mode():
    run = model.run([image])
mb = run["masks"][0]
d = 0
a = mb["attention"][d : d + 1]  # [1, K, 14, 14]
crops = mb["basis_crops"][d : d + 1]  # [1, K, R, R]
K = a.shape[1]
describe("attention a (M = 14)", a)
describe("averaged to M = 7", F.adaptive_avg_pool2d(a, 7))
describe("basis crops r", crops)
fig, axes = plt.subplots(3, K + 1, figsize=(2.0 * (K + 1) + 1, 6.4), layout="constrained")
for row, m_ in enumerate((14, 7, 2)):
    coarse = a if m_ == 14 else F.adaptive_avg_pool2d(a, m_)
    out = blend(crops, coarse)
    for k in range(K):
        im = axes[row, k].imshow(out["attention_weights"][0, k], cmap="viridis", vmin=0, vmax=1)
        axes[row, k].set_title(f"M = {m_}: s$_{k + 1}$", fontsize=8)
    mask_im = axes[row, K].imshow(out["mask_logits"][0].sigmoid(), cmap="gray", vmin=0, vmax=1)
    axes[row, K].set_title(f"M = {m_}: mask", fontsize=8)
fig.colorbar(im, ax=axes[:, :K], shrink=0.6, label="weight s$_k$ (softmax over K)")
fig.colorbar(mask_im, ax=axes[:, K], shrink=0.6, label="mask probability")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
name = tm.class_names[int(run["fcos"]["detections"][0]["labels"][d]) - 1]
fig.suptitle(f"val image 5, detection {d} ({name}): the same attention at three resolutions",
             fontsize=10);

# %% [markdown]
# Compare the rows for this one detection of this run: averaging the attention down to M = 7 keeps
# its broad zones with softer edges, while a zone only a cell or two wide at M = 14 (a thin
# border ring, say) can all but vanish; at M = 2 only a coarse split of the box is left, and whatever of
# the mask survives comes from the bases. One detection shows the idea, not how much M
# matters; over the detections (score ≥ 0.3) of 30 val images, the share of mask pixels
# that flip at 0.5 when the attention is averaged down:

# %%
flips = {7: [0, 0], 2: [0, 0]}  # M: [flipped pixels, pixels]
for i in range(30):
    img_i, _ = val[i]
    with torch.inference_mode():
        r_i = model.run([img_i])
    keep = r_i["fcos"]["detections"][0]["scores"] >= 0.3
    m_i = r_i["masks"][0]
    a_i, c_i = m_i["attention"][keep], m_i["basis_crops"][keep]
    full_mask = blend(c_i, a_i)["mask_logits"] > 0
    for m_ in flips:
        coarse_mask = blend(c_i, F.adaptive_avg_pool2d(a_i, m_))["mask_logits"] > 0
        flips[m_][0] += int((coarse_mask != full_mask).sum())
        flips[m_][1] += full_mask.numel()
for m_, (f_, n_) in flips.items():
    print(f"M = 14 → {m_}: {f_ / max(n_, 1):.1%} of the mask pixels flip")

# %% [markdown]
# This measures only what a *trained* M = 14 attention loses when coarsened, on shapes, at
# R/M = 2; a model trained with another M would learn other bases and attentions. Objects
# with parts in fixed places (a person's head at the top of the box) may need a finer M
# than shapes do.
#
# ## 3. R: the resolution of the mask
#
# The blender computes each mask on an R×R grid over the box; the segmenter pastes it into
# the image. So even a perfect R×R mask loses detail. How much? Take the **ground-truth**
# masks, crop each to its own box at R×R (exactly as the mask targets are made), paste them
# back and compare with the originals — the IoU a model that reproduced its binarised
# training targets exactly would reach on GT boxes: a practical ceiling set by R (soft
# outputs and predicted boxes move it either way):

# %%
from blendmask_edu.modeling.mask_branch import mask_targets
from blendmask_edu.modeling.paste import paste_masks

n_images = 200 if full_mode() else 100
ceiling = {}
for R in (7, 14, 28, 56):
    per_class = {}
    for i in range(n_images):
        _, t = val[i]
        pasted = paste_masks(mask_targets([t], R), t["boxes"], t["masks"].shape[-2:]) > 0.5  # as COCO eval binarises a mask
        gt_m = t["masks"].bool()
        iou = (pasted & gt_m).flatten(1).sum(1) / (pasted | gt_m).flatten(1).sum(1).clamp(min=1)
        for lab, v in zip(t["labels"].tolist(), iou.tolist()):
            per_class.setdefault(tm.class_names[lab - 1], []).append(v)
    ceiling[R] = {c: sum(v) / len(v) for c, v in per_class.items()}
    every = [v for vs in per_class.values() for v in vs]
    print(f"R = {R:2d}: mean IoU of the GT through an R×R grid {sum(every) / len(every):.3f} "
          f"({len(every)} objects of {n_images} val images); lowest class "
          f"{min(ceiling[R], key=ceiling[R].get)} {min(ceiling[R].values()):.3f}")

# %%
classes = list(ceiling[28])
fig, ax = plt.subplots(figsize=(8, 3.2), layout="constrained")
for j, R in enumerate(ceiling):
    ax.bar([i + 0.2 * (j - 1.5) for i in range(len(classes))], [ceiling[R][c] for c in classes],
           0.2, label=f"R = {R}")
ax.set_xticks(range(len(classes)), classes)
ax.set_ylim(0.5, 1.0)
ax.set_ylabel("IoU with the original GT mask")
ax.set_title("the ceiling of an R×R mask: GT masks through the grid and back")
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
ax.grid(axis="y", alpha=0.3);

# %% [markdown]
# Shapes with thin parts lose most at small R (the printed lowest class, and the bars); the
# ceiling rises with R. But a larger R is not free ($R^2$ products per detection), and what
# it buys is limited by the other two grids of the blender:
# - the **bases** live at 1/4 of the image: a 32-pixel box covers 8×8 bases cells, so R = 28
#   already samples each cell about 3.5 times per side. A finer R adds no new detail *from
#   the bases*; it does place edges more finely, because RoIAlign interpolates the bases
#   bilinearly and the mask's edge is where the mixed logits cross zero, which can fall
#   between cell centres (this is why the blender can fit its 28×28 target, cropped from the
#   full-resolution mask and finer than the 1/4 grid for boxes under 112 px, notebook 08);
# - the **attention** is M×M = 14×14 over the box: the mix of bases changes at most that
#   finely (then bilinearly between cells), whatever R is.
# So beyond R ≈ box/4, a larger R mostly interpolates more finely what the bases and the
# attention already say. The preset's R = 28 matches our 128-pixel images (at R/M = 2,
# outside the paper's range, see the top).
#
# ## 4. Interpolation: bilinear or nearest
#
# Eq. 2 upsamples the M×M attention to R×R. Nearest neighbour repeats each attention cell as
# a 2×2 block (M = 14, R = 28); bilinear blends neighbouring cells. On the trained model
# (trained with bilinear), the same detection both ways, and over the detections of 30 val
# images how much the masks change:

# %%
bil = blend(crops, a, "bilinear")
near = blend(crops, a, "nearest")
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2), layout="constrained")
for ax, (title, x) in zip(axes[:2], (("s$_1$, bilinear", bil["attention_weights"][0, 0]),
                                     ("s$_1$, nearest", near["attention_weights"][0, 0]))):
    im = ax.imshow(x, cmap="viridis", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
fig.colorbar(im, ax=axes[:2], shrink=0.8, label="weight")
p_b, p_n = bil["mask_logits"][0].sigmoid(), near["mask_logits"][0].sigmoid()
lim = float((p_b - p_n).abs().max())
im = axes[2].imshow(p_b - p_n, cmap="RdBu_r", vmin=-lim, vmax=lim)
axes[2].set_title("mask probability:\nbilinear − nearest", fontsize=9)
fig.colorbar(im, ax=axes[2], shrink=0.8)
axes[3].imshow(p_b > 0.5, cmap="gray")
axes[3].contour((p_n > 0.5).float(), levels=[0.5], colors="r", linewidths=1)
axes[3].set_title("mask > 0.5: bilinear (white),\nnearest (red outline)", fontsize=9)
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])

changed, total, max_diff = 0, 0, 0.0
for i in range(30):
    img_i, _ = val[i]
    with torch.inference_mode():
        m_i = model.run([img_i])["masks"][0]
    b_ = blend(m_i["basis_crops"], m_i["attention"], "bilinear")["mask_logits"].sigmoid()
    n_ = blend(m_i["basis_crops"], m_i["attention"], "nearest")["mask_logits"].sigmoid()
    changed += int(((b_ > 0.5) != (n_ > 0.5)).sum())
    total += b_.numel()
    max_diff = max(max_diff, float((b_ - n_).abs().max()) if b_.numel() else 0.0)
print(f"{changed / max(total, 1):.2%} of mask pixels flip at 0.5; largest probability change {max_diff:.2f}")

# %% [markdown]
# The printed share of mask pixels flips at 0.5; in this run's example they lie where the weights
# change between neighbouring attention cells, mostly on the object's outline, where the mask
# is close to 0.5 and a small change of weight tips it. The largest probability change says how
# far a single pixel can move: the bases' values are large, so a pixel away from the outline
# can move a long way too. At R/M = 2 a nearest block is only 2×2 pixels; at the paper's
# R/M ≥ 4 blocks are larger and the difference should be larger too (not measured). Training
# with nearest might differ more, because the gradients then see blocky weights
# (`compare --sweep interpolation=bilinear,nearest`; not measured on this machine).
#
# ## 5. Running an ablation yourself: `compare --sweep`
#
# `--sweep KNOB=v1,v2,...` trains the blender once per value (everything else from the
# preset), per seed, and measures each run like the zoo comparison. The knobs and their value
# types are checked before anything trains:

# %%
from blendmask_edu.engine.compare import parse_sweep, plan_rows

print(parse_sweep("K=1,2,4,8"), parse_sweep("interpolation=bilinear,nearest"))
for bad in ("D=3", "M=seven", "interpolation=cubic"):
    try:
        parse_sweep(bad)
    except ValueError as err:
        print("refused:", err)
print([(r.label, r.run_name(0)) for r in plan_rows(["blender"], "M=7,14,28")])

# %% [markdown]
# And a real sweep, on a **tiny budget** in fast mode: K = 2 and K = 8, 10 iterations each,
# scored on the first 24 val images (the printed command names them). **The numbers are not
# the result** (models this young detect nothing yet), and its s/iter is the wall time of
# the run that trained it under whatever load the machine had (a finished run is reused,
# `finished, skipped`); the point is to see the machinery. With `BLENDMASK_EDU_FULL=1` this
# cell runs the same sweep (K = 4, 8, 16, 400 iterations, all val images) with the
# *current* preset, so its numbers need not match the committed table above (measured with
# an earlier preset).

# %%
from blendmask_edu.engine.compare import run_compare
from blendmask_edu.tutorial import cache_dir, cached_data, device, pick, small_val

train_dir, val_dir = cached_data()
knob = pick("K=2,8", "K=4,8,16")
iters = pick(10, 400)
scored_on = pick(small_val(), val_dir)
out = cache_dir() / pick("sweep_K_tiny", "sweep_K_full")
print("the same as:  blendmask-edu compare --preset shapes --train", shown(train_dir), "--val",
      shown(scored_on), "--output-dir", shown(out), "--mask-branches blender --sweep", knob,
      "--seeds 0 --max-iters", iters)
tiny = run_compare("shapes", train_dir, scored_on, out, branches=["blender"], seeds=[0],
                   max_iters=iters, sweep=knob, device=str(device()), progress=False)
plt.close("all")  # its figures are in `out`
print(sorted(p.name for p in out.iterdir()))

# %% [markdown]
# ## Summary
# - **K** (bases): the top layer grows in proportion to K and is the larger part of the
#   branch from the printed K on; K = 1 uses a sigmoid on both the basis and the attention
#   (the paper's Table 3). The committed K sweep (earlier preset, one seed) is rendered above
#   with its noise reference: one seed per row, so its differences are not settled.
# - **M** (attention): parameters grow with $M^2$; how much a coarser attention changes this
#   model's masks is measured above — not what a model trained with that M would do.
# - **R** (RoI): sets a ceiling — the GT itself through a small grid loses thin shapes;
#   beyond box/4 a larger R mostly interpolates what the 1/4 bases and the M×M attention say.
# - **Interpolation**: at inference, bilinear vs nearest flips the printed share of mask
#   pixels (on the outline in the example shown). Not measured by training here.
# - The preset's R/M = 2 is outside the paper's range (R/M ≥ 4).
# - `compare --sweep` runs any of them the same way as the zoo comparison.
#
# ## Exercises
# 1. Write the top layer's parameter count as a formula of K, M and the tower width D = 64
#    (a 3×3 conv with bias), and check it for K = 8, M = 7.
# 2. A box of 24×24 pixels: how many bases cells does it cover, and how many R×R samples fall
#    in each cell for R = 28 and R = 56?
# 3. Which per-class ceiling at R = 14 is lowest, and why that class?

# %% tags=["solution"]
# 1. (9·D + 1)·K·M² = 577·K·M².
from blendmask_edu.modeling.attention import TopLayer

K_, M_ = 8, 7
top = TopLayer(BlenderConfig(K=K_, M=M_), in_channels=64)
print(sum(p.numel() for p in top.parameters()), (9 * 64 + 1) * K_ * M_**2)

# %% tags=["solution"]
# 2. 24 / 4 = 6 cells per side: R = 28 takes (28/6)² ≈ 22 samples per cell, R = 56 ≈ 87.
#    Both are far more samples than cells, so neither adds detail from the bases (a finer
#    R only places the zero crossing more finely).
for R in (28, 56):
    print(f"R = {R}: {(R / 6) ** 2:.0f} samples per bases cell")

# %% tags=["solution"]
# 3. The shapes with the most border per area: the star's tips taper to points narrower
#    than an R = 14 cell (box/14), so the grid cuts them off; the ring's band is a quarter of
#    its box, but its two curved borders are where the grid's error lies.
print(sorted(ceiling[14].items(), key=lambda kv: kv[1])[:2])
