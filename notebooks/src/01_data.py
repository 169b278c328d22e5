# %% [markdown]
# # 01 · Data: the shapes generator, the COCO format, RLE masks, your own data
#
# An instance-segmentation model learns from images where every object has a class and a
# binary mask. This notebook makes such data, writes it the way real datasets are written
# (COCO), takes a mask encoding apart by hand, and turns files into the tensors the model
# eats.
#
# **What you will learn**
# - how the synthetic `shapes` images are drawn, and why each annotation is the *visible*
#   part of a shape;
# - the COCO instances format: `images`, `annotations`, `categories`; boxes `[x, y, w, h]`;
# - run-length encoding (RLE) of masks, computed by hand and checked against pycocotools;
# - `CocoInstances`: files → `(image [3, H, W], target)`; transforms; padding a batch;
# - how to write a dataset of your own, and what happens when it is broken.

# %%
import json

import matplotlib.pyplot as plt
import numpy as np
import pycocotools.mask as mask_utils
import torch

from blendmask_edu.data.shapes import CATEGORIES, Shape, render_image, shape_mask
from blendmask_edu.tutorial import cached_data, describe

# %% [markdown]
# ## 1. One shape
#
# A shape is a category, a centre, a size (diameter of its circumscribed circle) and an
# angle $\theta$. To rasterise it, every pixel centre $(x, y)$ is moved into the shape's own
# frame, shifted to the centre $(c_x, c_y)$, rotated by $-\theta$ and divided by the radius
# $r = \text{size}/2$:
#
# $$u = \frac{\cos\theta\,(x - c_x) + \sin\theta\,(y - c_y)}{r},\qquad
#   v = \frac{-\sin\theta\,(x - c_x) + \cos\theta\,(y - c_y)}{r}$$
#
# and then each category is one test in $(u, v)$: a circle is $u^2 + v^2 \le 1$, a ring
# also needs $u^2 + v^2 > 0.5^2$, a polygon is a point-in-polygon test against fixed vertices in unit coordinates (the outer
# tips on the unit circle). `shape_mask` does this:

# %%
fig, axes = plt.subplots(1, 6, figsize=(12, 2.3), layout="constrained")
for ax, cat in zip(axes, CATEGORIES):
    mask = shape_mask(Shape(cat["id"], cx=24.0, cy=24.0, size=40.0, angle=0.3), 48)
    ax.imshow(mask, cmap="gray")
    ax.set_title(f"{cat['id']}: {cat['name']}", fontsize=9)
    ax.set_axis_off()
describe("one mask", torch.from_numpy(mask))

# %% [markdown]
# ## 2. One image
#
# `render_image` draws 1–8 random shapes on a smooth random background, each in a colour
# that stands out from what lies under it. Shapes overlap: a later shape covers earlier
# ones, and the annotation of a shape is its **visible** part. A shape showing less than
# 20 % of itself is left out of the picture entirely, so every painted pixel belongs to
# exactly one annotation or to the background.

# %%
rng = np.random.default_rng(7)
array, instances, full = render_image(rng, 128, return_full_masks=True)
describe("image (uint8)", torch.from_numpy(array))
names = {c["id"]: c["name"] for c in CATEGORIES}

n = len(instances)
fig, axes = plt.subplots(2, n + 1, figsize=(1.9 * (n + 1), 4.1), layout="constrained")
axes[0, 0].imshow(array)
axes[0, 0].set_title("image", fontsize=9)
axes[1, 0].set_axis_off()
for j, ((cat, visible), whole) in enumerate(zip(instances, full), start=1):
    axes[0, j].imshow(visible, cmap="gray")
    axes[0, j].set_title(f"{names[cat]}: visible", fontsize=8)
    axes[1, j].imshow(whole, cmap="gray")
    axes[1, j].set_title("whole shape", fontsize=8)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])

# %% [markdown]
# Top row: what is annotated. Bottom row: the whole shapes, which the model never sees.
# Instances come bottom to top, so the last one is never covered.
#
# ## 3. The COCO instances format
#
# `make_shapes(out_dir, num_images, image_size, seed)` (or `blendmask-edu make-shapes`)
# writes `out_dir/images/*.png` and one `out_dir/annotations.json`. `cached_data()` made
# the tutorial's sets once; here is what is in the val file:

# %%
train_dir, val_dir = cached_data()
coco = json.loads((val_dir / "annotations.json").read_text())
print("top-level keys:", sorted(coco))
print("images:", len(coco["images"]), " annotations:", len(coco["annotations"]),
      " categories:", [c["name"] for c in coco["categories"]])
print("one image:     ", coco["images"][0])
ann = dict(coco["annotations"][0])
ann["segmentation"] = {"size": ann["segmentation"]["size"],
                       "counts": ann["segmentation"]["counts"][:30] + "..."}
print("one annotation:", ann)

# %% [markdown]
# - `images`: one entry per file, with `id`, `file_name`, `width`, `height`.
# - `categories`: `id` and `name`. Ids may have gaps (COCO's own run 1..90 for 80 classes);
#   the dataset class renumbers them 1..C for the model, 0 being the background.
# - `annotations`: one per instance: `image_id`, `category_id`, `bbox` **[x, y, width,
#   height]** (the model uses `[x0, y0, x1, y1]`), `area` in pixels, `iscrowd`, and the mask
#   as `segmentation`: a list of polygons, or an RLE as here.
#
# ## 4. RLE by hand
#
# Run-length encoding stores a mask as the lengths of alternating runs of 0s and 1s,
# reading the pixels **column by column** (Fortran order), always starting with a run of
# 0s (possibly of length 0). A 4×5 mask:

# %%
tiny = np.array([[0, 0, 1, 1, 0],
                 [0, 1, 1, 1, 0],
                 [0, 1, 1, 0, 0],
                 [0, 0, 0, 0, 0]], dtype=np.uint8)
flat = tiny.flatten(order="F")            # column-major: down the first column, then the next
print("pixels, column by column:", flat.tolist())
changes = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))  # where a new run starts
runs = np.diff(np.r_[0, changes]).tolist()
print("runs (0s, 1s, 0s, ...):  ", runs)

# %% [markdown]
# Read it: 5 zeros (the first column and the top of the second), 2 ones, 1 zero, 3 ones,
# 1 zero, 2 ones, 6 zeros. The runs sum to 20 = 4·5 pixels. COCO stores this list as-is
# ("uncompressed RLE", used for crowd regions) or packed into a string ("compressed RLE":
# the first three numbers as they are, and from the fourth on each number as its difference
# to the number two places before; every number is then written in 5-bit groups, one
# character each). pycocotools agrees with our runs and decodes the same mask:

# %%
from blendmask_edu.data.coco import segmentation_to_mask

compressed = mask_utils.encode(np.asfortranarray(tiny))
print("compressed:", compressed)
from_runs = segmentation_to_mask({"size": [4, 5], "counts": runs}, 4, 5)
from_string = segmentation_to_mask({"size": [4, 5], "counts": compressed["counts"].decode()}, 4, 5)
assert (from_runs == tiny).all() and (from_string == tiny).all()
print("area:", mask_utils.area(compressed), " bbox [x, y, w, h]:", mask_utils.toBbox(compressed))

# %% [markdown]
# ## 5. From files to tensors: `CocoInstances`
#
# `CocoInstances(path, transforms)` reads a COCO set (a folder with `annotations.json` and
# `images/`, or a JSON file), checks it, and returns `(image, target)` pairs in torchvision's
# conventions.

# %%
from blendmask_edu.data.coco import CocoInstances

val = CocoInstances(val_dir)
print(len(val), "images; classes:", val.class_names)
print("COCO category id → label:", val.cat_id_to_label)
image, target = val[0]
describe("image", image)
for key in ("boxes", "labels", "masks", "orig_size", "size"):
    describe(f"target[{key!r}]", target[key])

# %% [markdown]
# `masks` are `uint8 [N, H, W]`, `boxes` `float [N, 4]` in `[x0, y0, x1, y1]` pixels,
# `labels` 1..6.
#
# **Transforms** act on the image and its target together. Training resizes the short side
# to a size drawn from `train_min_sizes` (the `shapes` preset: 128, i.e. no change) and
# flips left↔right and, for shapes only (a flipped triangle is still a triangle),
# top↔bottom. Four draws of the training transforms on one image (val image 3: the
# transforms do not care which set an image comes from):

# %%
import random

from blendmask_edu.config import shapes_preset
from blendmask_edu.data.transforms import build_transforms
from blendmask_edu.viz.overlay import draw_instances

cfg = shapes_preset()
train_tf = build_transforms(cfg.data, train=True)
print(train_tf)
fig, axes = plt.subplots(1, 4, figsize=(10, 2.8), layout="constrained")
# The transforms draw from Python's `random`; these four seeds happen to give each case.
for ax, seed, what in zip(axes, (1, 4, 0, 2), ("no flip", "left↔right", "top↔bottom", "both")):
    random.seed(seed)
    im, t = train_tf(*val[3])
    draw_instances(ax, im, t, val.class_names, score_thresh=0.0)
    ax.set_title(f"random.seed({seed}): {what}", fontsize=9)

# %% [markdown]
# **Batches.** Images of one batch may differ in size, so the data loader keeps them as a
# list (`collate`) and the model pads them with zeros, at the bottom and right, to the
# largest size rounded up to a multiple of 32, so that the backbone's strides 4, 8, 16 and
# 32 (C2..C5, P3..P5) divide it. P6 and P7 (strides 64, 128) come from stride-2 convolutions,
# which round up: a 128-px side gives P6 2 cells and P7 1, a 160-px side 3 and 2 — they need
# no exact division. Boxes do not move.
#
# The cell below pads images in [0, 1], so the padding is black. The model pads *after*
# normalising each image (minus the ImageNet mean, divided by its std: `preprocess` in
# `segmenter.py`), so there a padded pixel is 0 in normalised space — the mean colour, not
# black.

# %%
from blendmask_edu.data.batching import pad_images
from blendmask_edu.data.transforms import ResizeShortestSide

small, _ = ResizeShortestSide((80,), 200)(image, None)
batch, sizes = pad_images([image, small], size_divisibility=32)
describe("image 1", image)
describe("image 2", small)
describe("padded batch", batch)
print("sizes before padding:", sizes)

# %% [markdown]
# ## 6. Your own data
#
# Any tool that exports COCO instances (CVAT, Label Studio, makesense.ai, …) gives a file
# this library reads: put it at `DIR/annotations.json` with the images in `DIR/images/`.
# (The tiny set below only shows the format; its images are 96×64.)
# From masks you already have (numpy arrays), `mask_annotation` writes the annotation —
# RLE, area and box are all read off the mask. A two-image set of our own:

# %%
import tempfile
from pathlib import Path

from PIL import Image

from blendmask_edu.data.shapes import mask_annotation

own = Path(tempfile.mkdtemp()) / "my_set"
(own / "images").mkdir(parents=True)
yy, xx = np.mgrid[:64, :96]
masks_per_image = [
    [(1, (xx - 30) ** 2 + (yy - 30) ** 2 < 15**2)],                     # one "blob"
    [(1, (xx - 70) ** 2 + (yy - 20) ** 2 < 10**2), (2, (abs(xx - 30) < 12) & (abs(yy - 40) < 8))],
]
images, annotations = [], []
for image_id, instances in enumerate(masks_per_image, start=1):
    picture = np.full((64, 96, 3), 40, np.uint8)
    for cat, mask in instances:
        picture[mask] = (220, 120, 40) if cat == 1 else (60, 180, 230)
        annotations.append(mask_annotation(mask, len(annotations) + 1, image_id, cat))
    Image.fromarray(picture).save(own / "images" / f"{image_id}.png")
    images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 96, "height": 64})
categories = [{"id": 1, "name": "blob"}, {"id": 2, "name": "bar"}]
(own / "annotations.json").write_text(
    json.dumps({"images": images, "annotations": annotations, "categories": categories}))

mine = CocoInstances(own)
fig, axes = plt.subplots(1, 2, figsize=(6, 2.3), layout="constrained")
for i, ax in enumerate(axes):
    draw_instances(ax, *mine[i], mine.class_names, score_thresh=0.0)
    ax.set_title(f"my image {i + 1}", fontsize=9)

# %% [markdown]
# **Train on photos with the `photo` preset, not `shapes`.** The default `shapes` preset is
# made for the 128×128 synthetic images: it resizes every image to a 128-px short side (a
# 640×480 photo shrinks 3.75×, small objects vanish) and flips it upside down half the time
# (right for shapes, wrong for photos). For real photos:
#
# ```bash
# blendmask-edu train --preset photo --train my_set --val my_val --output-dir runs/mine
# blendmask-edu train --preset photo --image-size 480 ...   # another short side
# ```
#
# The `photo` preset resizes to a 512–640-px short side, flips left↔right only and sizes
# FCOS' levels for that scale; `--image-size S` sets the short side for training and testing.
# The number of classes is read from the file, and `train` warns when the preset's size is
# far from your images' (`docs/own-data.md` has the details and the cost per iteration).
#
# Broken files fail early, naming the file and the field: here a box that sticks out of its
# image.

# %%
from blendmask_edu.data.coco import DatasetError

broken = json.loads((own / "annotations.json").read_text())
broken["annotations"][0]["bbox"] = [80.0, 10.0, 40.0, 20.0]  # x + w = 120 > width 96
(own / "broken.json").write_text(json.dumps(broken))
try:
    CocoInstances(own / "broken.json")
except DatasetError as err:
    print("DatasetError:", str(err).replace(str(own), "my_set"))  # the temporary folder's path, shortened

# %% [markdown]
# ## Summary
# - The `shapes` data is drawn in unit coordinates per shape; each annotation is the
#   visible part, so overlapping instances never share a pixel.
# - COCO instances = `images` + `categories` + `annotations` (`bbox` as `[x, y, w, h]`,
#   mask as polygons or RLE).
# - RLE = run lengths of 0s and 1s in column-major order, starting with 0s; compressed RLE
#   packs them into a string.
# - `CocoInstances` gives `image [3, H, W]` in [0, 1] and `boxes [N, 4]` xyxy, `labels [N]`
#   1..C, `masks [N, H, W]`; the model pads a batch to a multiple of 32.
#
# ## Exercises
# 1. How many instances of each class are in the val set? Which is the rarest?
# 2. Encode by hand the runs of a 5×5 ring (a square with a hole in the middle) and check
#    them with `segmentation_to_mask`.
# 3. Why must an RLE start with a run of zeros even when the first pixel is 1?
#
# Solutions in the collapsed cells below.

# %% tags=["solution"]
# 1. Count category ids over the annotations. The generator draws the six classes with
#    equal probability; occlusion then leaves out shapes that show less than 20 % of
#    themselves, whatever their class. The chi-square statistic against equal shares says
#    whether the differences are larger than chance makes them: with 6 classes (5 degrees
#    of freedom) chance alone gives about 5 on average and exceeds 11.07 one time in 20.
from collections import Counter

counts = Counter(names[a["category_id"]] for a in coco["annotations"])
print(counts.most_common())
expected = sum(counts.values()) / len(counts)
chi2 = sum((n - expected) ** 2 / expected for n in counts.values())
print(f"chi-square against equal shares: {chi2:.1f} "
      f"({'within' if chi2 <= 11.07 else 'beyond'} what chance gives 19 times in 20)")

# %% tags=["solution"]
# 2. A 5×5 ring: ones on the border of the inner 3×3 square.
ring = np.zeros((5, 5), np.uint8)
ring[1:4, 1:4] = 1
ring[2, 2] = 0
flat = ring.flatten(order="F")
changes = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))
ring_runs = np.diff(np.r_[0, changes]).tolist()
print(ring_runs)  # [6, 3, 2, 1, 1, 1, 2, 3, 6]
assert (segmentation_to_mask({"size": [5, 5], "counts": ring_runs}, 5, 5) == ring).all()

# %% tags=["solution"]
# 3. The decoder alternates 0, 1, 0, ... starting with 0, so a mask whose first pixel is 1
#    starts with an empty run of zeros: [0, ...]. Otherwise every value would be flipped.
starts_with_one = np.array([[1, 0], [1, 0]], np.uint8)
decoded = segmentation_to_mask({"size": [2, 2], "counts": [0, 2, 2]}, 2, 2)
print(decoded)
assert (decoded == starts_with_one).all()
