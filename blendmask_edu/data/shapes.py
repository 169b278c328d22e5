"""The synthetic "shapes" dataset: small COCO-format instance segmentation, made in seconds.

Each image has a random textured background and 1–8 shapes from six categories that differ in
*shape*, not colour: a ring has a hole, a star and a cross are concave, and colours are drawn
independently of the category. Shapes overlap; a later shape lies in front, and every
annotation is the *visible* part of its shape. A shape that would show less than 20 % of itself
is left out of the picture altogether, so every painted pixel belongs to exactly one annotation
or to the background.

    >>> rng = np.random.default_rng(0)
    >>> image, instances = render_image(rng, 128)  # [128, 128, 3] uint8, [(category_id, mask)]
    >>> make_shapes("data/shapes_train", num_images=1000)  # annotations.json + images/*.png

How one shape is drawn: every pixel centre (x, y) is moved into the shape's own frame (shifted
to the shape's centre, rotated by -angle, divided by its radius), so that each category is one
test in unit coordinates (u, v): a circle is u² + v² ≤ 1, a polygon is a point-in-polygon test
against fixed vertices on the unit circle.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image

CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
    {"id": 4, "name": "ring", "supercategory": "shape"},  # has a hole
    {"id": 5, "name": "star", "supercategory": "shape"},  # concave
    {"id": 6, "name": "cross", "supercategory": "shape"},  # concave
]
MAX_INSTANCES = 8  # shapes drawn per image: 1..MAX_INSTANCES, before occlusion drops any
SIZE_RANGE = (0.08, 0.60)  # shape diameter as a fraction of the image side...
MIN_SIZE_PX = 8.0  # ...but never below 8 pixels, so that small images get real shapes too
MIN_VISIBLE = 0.2  # a shape showing less than this fraction of its full area is left out
RING_HOLE = 0.5  # inner radius of a ring / its outer radius
MIN_CONTRAST = 100.0  # wanted RGB distance between a shape's colour and what lies under it
MIN_IMAGE_SIZE = 32

_NAMES = {category["id"]: category["name"] for category in CATEGORIES}


# ----------------------------------------------------------------------------- one shape
class Shape(NamedTuple):
    """One shape to draw, in pixel units; `size` is the diameter of its circumscribed circle."""

    category_id: int
    cx: float
    cy: float
    size: float
    angle: float  # radians


def _regular_polygon(sides: int, phase: float) -> np.ndarray:
    """Vertices on the unit circle, the first at angle `phase`.  [sides, 2]"""
    angles = phase + 2 * np.pi * np.arange(sides) / sides
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    """A star: tips on the unit circle, notches at radius `inner`.  [2 * points, 2]"""
    radii = np.tile([1.0, inner], points)  # tip, notch, tip, notch, ...
    angles = np.pi / 2 + np.pi * np.arange(2 * points) / points
    return radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _plus(half_width: float = 0.3) -> np.ndarray:
    """A plus sign whose four arm ends touch the unit circle.  [12, 2]"""
    w, l = half_width, float(np.sqrt(1 - half_width**2))
    return np.array(
        [(w, l), (w, w), (l, w), (l, -w), (w, -w), (w, -l),
         (-w, -l), (-w, -w), (-l, -w), (-l, w), (-w, w), (-w, l)]
    )  # fmt: skip


UNIT_POLYGONS = {
    "square": _regular_polygon(4, phase=np.pi / 4),
    "triangle": _regular_polygon(3, phase=np.pi / 2),
    "star": _star(),
    "cross": _plus(),
}


def random_shape(rng: np.random.Generator, image_size: int) -> Shape:
    """Pick a category, size, rotation and a position that keeps the whole shape in the image."""
    low, high = (fraction * image_size for fraction in SIZE_RANGE)
    size = rng.uniform(max(low, MIN_SIZE_PX), high)
    cx, cy = rng.uniform(size / 2, image_size - size / 2, size=2)
    category_id = CATEGORIES[rng.integers(len(CATEGORIES))]["id"]
    return Shape(category_id, float(cx), float(cy), float(size), float(rng.uniform(0, 2 * np.pi)))


def _unit_frame(shape: Shape, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in the shape's frame: centred, rotated by -angle, radius 1.  2 × [S, S]"""
    centres = np.arange(image_size) + 0.5
    dx = centres[None, :] - shape.cx  # [1, S]
    dy = centres[:, None] - shape.cy  # [S, 1]
    cos, sin = np.cos(shape.angle), np.sin(shape.angle)
    radius = shape.size / 2
    u = (cos * dx + sin * dy) / radius  # [S, S]
    v = (-sin * dx + cos * dy) / radius  # [S, S]
    return u, v


def _inside_polygon(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even–odd rule: inside when a ray towards +u crosses the boundary an odd number of times."""
    inside = np.zeros(u.shape, dtype=bool)
    for (ua, va), (ub, vb) in zip(vertices, np.roll(vertices, -1, axis=0)):
        if va == vb:  # a horizontal edge is never crossed by a horizontal ray
            continue
        spans_row = (va > v) != (vb > v)  # the edge reaches the point's height
        u_cross = ua + (v - va) * (ub - ua) / (vb - va)  # where the edge meets that row
        inside ^= spans_row & (u < u_cross)
    return inside


def shape_mask(shape: Shape, image_size: int) -> np.ndarray:
    """Rasterise a shape: a pixel belongs to it when the pixel's centre is inside.  [S, S] bool"""
    u, v = _unit_frame(shape, image_size)
    name = _NAMES[shape.category_id]
    if name == "circle":
        return u**2 + v**2 <= 1
    if name == "ring":  # a disc minus a concentric disc: the hole is not part of the mask
        return (u**2 + v**2 <= 1) & (u**2 + v**2 > RING_HOLE**2)
    return _inside_polygon(u, v, UNIT_POLYGONS[name])


# ----------------------------------------------------------------------------- one image
def _linear_weights(n_out: int, n_in: int) -> np.ndarray:
    """Linear interpolation from n_in evenly spaced knots to n_out points.  [n_out, n_in]"""
    positions = np.linspace(0, n_in - 1, n_out)
    knots = np.arange(n_in)
    # The weight of knot k is a "hat" function: 1 at knot k, falling to 0 at its neighbours.
    return np.stack([np.interp(positions, knots, np.eye(n_in)[k]) for k in range(n_in)], axis=1)


def random_background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """A smooth random colour field plus coloured pixel noise.  [S, S, 3] float in [0, 255]"""
    knots = int(rng.integers(2, 5))  # g knots per side: 2 gives a smooth gradient, 4 blotches
    colours = rng.uniform(0, 255, size=(knots, knots, 3))  # [g, g, 3]
    weights = _linear_weights(image_size, knots)  # [S, g]
    # Bilinear upsampling = linear interpolation along y, then along x.
    field = np.einsum("yi,ijc,xj->yxc", weights, colours, weights, optimize=True)  # [S, S, 3]
    noise = rng.normal(0, rng.uniform(3, 20), size=field.shape)
    return np.clip(field + noise, 0, 255)


def _paint(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Paint a shape in place with a random colour that stands out from what lies under it."""
    under = image[mask].mean(axis=0)  # [3]
    for _ in range(20):  # keep the last draw if none reaches the contrast
        colour = rng.uniform(0, 255, size=3)
        if np.linalg.norm(colour - under) >= MIN_CONTRAST:
            break
    texture = rng.normal(0, rng.uniform(0, 12), size=(int(mask.sum()), 3))  # [P, 3]
    image[mask] = np.clip(colour + texture, 0, 255)


def visible_parts(
    full_masks: list[np.ndarray], min_visible: float = MIN_VISIBLE
) -> list[tuple[int, np.ndarray]]:
    """Which shapes to keep and what of each is seen; masks come in painting order (last on top).

    Walk down from the top: a shape shows what the kept shapes above it leave uncovered, and is
    kept when that is non-empty and at least `min_visible` of its full area. A shape left out
    covers nothing. Returns [(index, visible mask [S, S] bool)], bottom to top.
    """
    kept = []
    covered = np.zeros_like(full_masks[0]) if full_masks else None
    for index in reversed(range(len(full_masks))):
        visible = full_masks[index] & ~covered
        area = int(visible.sum())
        if area > 0 and area >= min_visible * full_masks[index].sum():
            kept.append((index, visible))
            covered |= full_masks[index]
    return kept[::-1]


def render_image(rng: np.random.Generator, image_size: int, return_full_masks: bool = False):
    """Draw one random image and its instances; a pure function of the generator's state.

    Returns (image [S, S, 3] uint8, [(category_id, visible mask [S, S] bool)]) with instances
    bottom to top; with `return_full_masks=True` a third item, the unoccluded mask of each.
    """
    kept = []
    while not kept:  # only an all-empty draw keeps nothing; then draw again
        count = int(rng.integers(1, MAX_INSTANCES + 1))
        shapes = [random_shape(rng, image_size) for _ in range(count)]
        full = [shape_mask(shape, image_size) for shape in shapes]
        kept = visible_parts(full)

    image = random_background(rng, image_size)  # [S, S, 3] float
    for index, _ in kept:  # bottom to top: later shapes cover earlier ones
        _paint(image, full[index], rng)
    image = np.round(image).astype(np.uint8)

    instances = [(shapes[index].category_id, visible) for index, visible in kept]
    if return_full_masks:
        return image, instances, [full[index] for index, _ in kept]
    return image, instances


# ----------------------------------------------------------------------------- the dataset
def mask_annotation(mask: np.ndarray, ann_id: int, image_id: int, category_id: int) -> dict:
    """A COCO annotation for one binary mask; RLE, area and box are all read off the mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))  # COCO RLE: column-major
    area = float(mask_utils.area(rle))
    bbox = [float(x) for x in mask_utils.toBbox(rle)]  # [x, y, w, h]
    rle["counts"] = rle["counts"].decode("ascii")  # bytes → str, so that it is JSON
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": rle,
        "area": area,
        "bbox": bbox,
        "iscrowd": 0,
    }


def _write_dataset(root: Path, num_images: int, image_size: int, seed: int) -> None:
    """Write images/*.png and annotations.json into the (empty) directory `root`."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir()
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        image, instances = render_image(rng, image_size)
        file_name = f"{image_id:06d}.png"  # relative to images/
        Image.fromarray(image).save(root / "images" / file_name)
        images.append(
            {"id": image_id, "file_name": file_name, "width": image_size, "height": image_size}
        )
        for category_id, mask in instances:
            annotations.append(mask_annotation(mask, len(annotations) + 1, image_id, category_id))
    coco = {
        "info": {
            "description": "blendmask_edu synthetic shapes",
            "image_size": image_size,
            "num_images": num_images,
            "seed": seed,
            "version": "1.0",
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": CATEGORIES,
    }
    with open(root / "annotations.json", "w", encoding="utf-8") as file:
        json.dump(coco, file, sort_keys=True, separators=(",", ":"))


def _check_arguments(out_dir: Path, num_images: int, image_size: int) -> None:
    """Refuse bad sizes and an output directory that already holds something."""
    if not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise ValueError(f"num_images must be an integer >= 1, got {num_images!r}")
    if not isinstance(image_size, (int, np.integer)) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {image_size!r}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"output directory already exists and is not empty: {out_dir}")


def make_shapes(out_dir: str | Path, num_images: int, image_size: int = 128, seed: int = 0) -> Path:
    """Write a shapes dataset: out_dir/annotations.json (COCO, RLE masks) + out_dir/images/*.png.

    The same arguments give byte-identical files. Everything is written into a hidden directory
    next to `out_dir` and renamed into place at the end, so a failure leaves nothing behind.
    Returns `out_dir`.
    """
    out_dir = Path(out_dir)
    _check_arguments(out_dir, num_images, image_size)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        _write_dataset(partial, int(num_images), int(image_size), int(seed))
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); rename cannot replace a directory everywhere
        partial.rename(out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out_dir
