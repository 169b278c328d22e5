"""The shapes generator: determinism, statistics, occlusion, holes, COCO output, safety."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image
from pycocotools.coco import COCO

from blendmask_edu.data import shapes
from blendmask_edu.data.shapes import (
    CATEGORIES,
    Shape,
    make_shapes,
    render_image,
    shape_mask,
    visible_parts,
)

SIZE = 128
SEED = 1
RING = next(c["id"] for c in CATEGORIES if c["name"] == "ring")


def enclosed_background(mask: np.ndarray) -> np.ndarray:
    """Pixels outside `mask` that cannot reach the image border without crossing the mask."""
    outside = ~mask
    reached = np.zeros_like(mask)
    reached[[0, -1], :] = outside[[0, -1], :]
    reached[:, [0, -1]] |= outside[:, [0, -1]]
    while True:  # flood fill, 4-connected, one pixel per step
        grown = reached.copy()
        grown[1:] |= reached[:-1]
        grown[:-1] |= reached[1:]
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown &= outside
        if (grown == reached).all():
            return outside & ~reached
        reached = grown


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def rendered(num_images: int, seed: int = SEED, size: int = SIZE):
    """(image, instances, full masks) of `num_images` images drawn from one generator."""
    rng = np.random.default_rng(seed)
    return [render_image(rng, size, return_full_masks=True) for _ in range(num_images)]


def bbox_of(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [
        float(xs.min()),
        float(ys.min()),
        float(xs.max() - xs.min() + 1),
        float(ys.max() - ys.min() + 1),
    ]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """60 images written once; returns (root, the JSON content)."""
    root = make_shapes(tmp_path_factory.mktemp("shapes") / "train", 60, SIZE, seed=SEED)
    return root, json.loads((root / "annotations.json").read_text())


def test_categories_are_at_least_six_with_ids_one_to_c():
    assert len(CATEGORIES) >= 6
    assert [c["id"] for c in CATEGORIES] == list(range(1, len(CATEGORIES) + 1))
    assert len({c["name"] for c in CATEGORIES}) == len(CATEGORIES)
    assert all(c["supercategory"] == "shape" for c in CATEGORIES)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = tree_bytes(make_shapes(tmp_path / "a", 8, 64, seed=3))
    b = tree_bytes(make_shapes(tmp_path / "b", 8, 64, seed=3))
    c = tree_bytes(make_shapes(tmp_path / "c", 8, 64, seed=4))
    assert len(a) == 9 and a == b
    assert a.keys() == c.keys()
    assert a["annotations.json"] != c["annotations.json"]
    assert all(a[name] != c[name] for name in a if name.endswith(".png"))


def test_statistics_over_sixty_images(dataset):
    root, coco = dataset
    assert {c["id"] for c in coco["categories"]} == {c["id"] for c in CATEGORIES}
    assert {a["category_id"] for a in coco["annotations"]} == {c["id"] for c in CATEGORIES}
    counts = {image["id"]: 0 for image in coco["images"]}
    for ann in coco["annotations"]:
        counts[ann["image_id"]] += 1
    assert len(counts) == 60 and all(1 <= n <= 8 for n in counts.values())
    assert max(counts.values()) >= 5  # several instances are common, not just possible
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert ann["area"] >= 1 and ann["iscrowd"] == 0
        assert 1 <= max(w, h) <= 0.6 * SIZE + 1  # occlusion may shrink a box, never grow it
        assert x >= 0 and y >= 0 and x + w <= SIZE and y + h <= SIZE
    ids = [a["id"] for a in coco["annotations"]]
    assert ids == list(range(1, len(ids) + 1))


def test_unoccluded_sizes_span_eight_to_sixty_percent():
    sides = [max(bbox_of(m)[2:]) for _, _, full in rendered(60) for m in full]
    # The smallest box of a shape in a circle of diameter d is about 0.7 d (a square).
    assert min(sides) >= 0.7 * 0.08 * SIZE - 1
    assert max(sides) <= 0.6 * SIZE + 1
    assert min(sides) <= 0.2 * SIZE and max(sides) >= 0.45 * SIZE  # the whole range is used


def test_render_image_types_and_shapes():
    image, instances = render_image(np.random.default_rng(0), 96)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    for category_id, mask in instances:
        assert category_id in {c["id"] for c in CATEGORIES}
        assert mask.shape == (96, 96) and mask.dtype == bool and mask.any()


def test_visible_parts_on_a_hand_made_stack():
    left, middle, right = (np.zeros((1, 10), bool) for _ in range(3))
    left[0, 0:4] = True  # 4 pixels, 1 of them under `middle`
    middle[0, 3:8] = True  # 5 pixels, 4 of them under `right`: 1/5 = 20 % visible
    right[0, 4:10] = True  # on top: always kept
    kept = visible_parts([left, middle, right], min_visible=0.25)
    assert [index for index, _ in kept] == [0, 2]  # middle shows 1/5 < 25 % → left out
    assert kept[0][1].sum() == 4  # a dropped shape covers nothing
    assert visible_parts([left, middle, right], min_visible=0.2)[1][1].sum() == 1  # 1/5 is enough
    assert visible_parts([np.zeros((2, 2), bool)]) == []  # an empty shape is never kept


def test_visibility_rule_on_rendered_images():
    for _, instances, full in rendered(80):
        assert 1 <= len(instances) <= 8 and len(full) == len(instances)
        for i, (_, visible) in enumerate(instances):
            above = np.zeros_like(visible)
            for later in full[i + 1 :]:
                above |= later
            assert np.array_equal(visible, full[i] & ~above)  # what is seen = what is not covered
            assert visible.sum() >= 0.2 * full[i].sum() and visible.sum() > 0
        union = np.sum([v for _, v in instances], axis=0)
        assert union.max() == 1  # visible masks never overlap


def test_rings_have_holes_and_other_shapes_do_not():
    ring = shape_mask(Shape(RING, cx=64.5, cy=64.5, size=80, angle=0.3), SIZE)
    assert not ring[64, 64]  # the centre is not in the mask...
    assert ring[64, 34] and ring[64, 94] and ring[34, 64] and ring[94, 64]  # ...its sides are
    assert enclosed_background(ring)[64, 64]
    seen = set()
    for _, instances, full in rendered(40):
        for (category_id, _), mask in zip(instances, full):
            assert enclosed_background(mask).any() == (category_id == RING)
            seen.add(category_id)
    assert RING in seen and len(seen) == len(CATEGORIES)


def test_ring_hole_shows_the_background(monkeypatch):
    big_ring = Shape(RING, cx=64.5, cy=64.5, size=100, angle=0.0)
    monkeypatch.setattr(shapes, "random_shape", lambda rng, size: big_ring)
    monkeypatch.setattr(
        shapes, "random_background", lambda rng, size: np.full((size, size, 3), 7.0)
    )
    image, instances = render_image(np.random.default_rng(0), SIZE)
    assert len(instances) == 1  # identical copies below the top one are fully hidden
    hole = enclosed_background(instances[0][1])
    assert hole.sum() > 100 and (image[hole] == 7).all()
    painted = image[instances[0][1]].astype(float)
    assert np.linalg.norm(painted.mean(axis=0) - 7) > 50  # the ring stands out


def test_json_masks_decode_to_the_rendered_masks(dataset):
    root, coco = dataset
    by_image = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    rng = np.random.default_rng(SEED)
    for record in coco["images"]:
        image, instances = render_image(rng, SIZE)
        assert record["file_name"] == f"{record['id']:06d}.png"
        assert (record["width"], record["height"]) == (SIZE, SIZE)
        png = np.asarray(Image.open(root / "images" / record["file_name"]))
        assert np.array_equal(png, image)
        anns = by_image[record["id"]]
        assert [a["category_id"] for a in anns] == [c for c, _ in instances]
        for ann, (_, mask) in zip(anns, instances):
            assert isinstance(ann["segmentation"]["counts"], str)
            assert np.array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), mask)


def test_bbox_and_area_agree_with_the_masks(dataset):
    root, coco = dataset
    api = COCO(str(root / "annotations.json"))  # pycocotools reads the file as is
    for ann in coco["annotations"]:
        mask = api.annToMask(ann).astype(bool)
        assert ann["area"] == float(mask.sum())
        assert ann["bbox"] == bbox_of(mask)


def test_a_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []

    def failing_render(rng, size, return_full_masks=False):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return render_image(rng, size, return_full_masks)

    monkeypatch.setattr(shapes, "render_image", failing_render)
    with pytest.raises(RuntimeError, match="boom"):
        make_shapes(tmp_path / "out", 5, 64)
    assert len(calls) == 3  # it failed mid-way, after writing two images
    assert list(tmp_path.iterdir()) == []  # neither out_dir nor the hidden partial directory


def test_a_non_empty_out_dir_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=str(out)):
        make_shapes(out, 2, 64)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_empty_out_dir_is_filled(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert make_shapes(str(out), 2, 64) == out
    assert sorted(p.name for p in out.iterdir()) == ["annotations.json", "images"]
    assert len(list((out / "images").iterdir())) == 2


@pytest.mark.parametrize(
    "num_images, image_size", [(0, 128), (-1, 128), (2.5, 128), (1, 31), (1, 0)]
)
def test_bad_arguments_raise_value_error(tmp_path, num_images, image_size):
    with pytest.raises(ValueError, match="num_images|image_size"):
        make_shapes(tmp_path / "out", num_images, image_size)
    assert list(tmp_path.iterdir()) == []
