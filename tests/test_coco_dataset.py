"""CocoInstances: paths, label mapping, decoding, targets, and clear errors on bad input."""

from __future__ import annotations

import copy
import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from PIL import Image

from blendmask_edu.data.coco import CocoInstances, DatasetError, resolve_dataset


def _item(dataset: CocoInstances, image_id: int):
    return dataset[dataset.image_ids.index(image_id)]


# --- where files are ----------------------------------------------------------------------


def test_resolve_dir_and_json(tiny_coco):
    root = tiny_coco.root
    assert resolve_dataset(root) == (root / "annotations.json", root / "images")
    # file_names are bare ("a.png"): not next to the JSON, so they resolve under images/
    assert resolve_dataset(tiny_coco.json_path) == (tiny_coco.json_path, root / "images")


def test_resolve_json_relative_to_its_folder(tiny_coco):
    data = copy.deepcopy(tiny_coco.data)
    for img in data["images"]:
        img["file_name"] = "images/" + img["file_name"]
    path = tiny_coco.write(data)
    assert resolve_dataset(path) == (path, tiny_coco.root)
    assert len(CocoInstances(path)[0][1]["labels"]) == 2


def test_resolve_errors_when_first_image_is_nowhere(tiny_coco):
    data = copy.deepcopy(tiny_coco.data)
    data["images"][0]["file_name"] = "nowhere.png"
    path = tiny_coco.write(data, "lost.json")
    with pytest.raises(DatasetError, match=r"lost\.json.*images\[0\]\.file_name.*nowhere\.png"):
        CocoInstances(path)


# --- categories and labels ----------------------------------------------------------------


def test_labels_are_contiguous_and_reversible(tiny_coco):
    dataset = CocoInstances(tiny_coco.root)
    assert dataset.categories == [{"id": 3, "name": "square"}, {"id": 7, "name": "disk"}]
    assert dataset.cat_id_to_label == {3: 1, 7: 2}
    assert dataset.label_to_cat_id == {1: 3, 2: 7}
    assert dataset.class_names == ["square", "disk"]
    _, target = _item(dataset, 1)
    cat_ids = [dataset.label_to_cat_id[label] for label in target["labels"].tolist()]
    assert cat_ids == [3, 7]  # annotations 1 and 2, in file order


# --- images and targets -------------------------------------------------------------------


def test_item_format(tiny_coco):
    dataset = CocoInstances(tiny_coco.root)
    assert dataset.image_ids == [1, 2, 5]  # the background image is kept
    image, target = _item(dataset, 1)
    assert image.dtype == torch.float32 and image.shape == (3, 40, 60)
    assert 0.0 <= image.min() and image.max() <= 1.0
    pixels = np.array(Image.open(tiny_coco.root / "images/a.png"))  # [H, W, 3]
    torch.testing.assert_close(image, torch.from_numpy(pixels).permute(2, 0, 1) / 255.0)
    assert target["image_id"] == 1
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (2, 4)
    assert target["labels"].dtype == torch.int64
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (2, 40, 60)
    assert target["orig_size"].tolist() == [40, 60] and target["size"].tolist() == [40, 60]
    assert target["orig_size"].dtype == torch.int64


def test_grayscale_and_rgba_become_rgb(tiny_coco):
    dataset = CocoInstances(tiny_coco.root)
    gray, _ = _item(dataset, 2)
    assert gray.shape == (3, 32, 48)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    rgba, _ = _item(dataset, 5)
    assert rgba.shape == (3, 24, 24)


def test_boxes_are_xyxy_of_annotation_bbox(tiny_coco):
    _, target = _item(CocoInstances(tiny_coco.root), 1)
    x, y, w, h = tiny_coco.data["annotations"][0]["bbox"]
    assert target["boxes"][0].tolist() == [x, y, x + w, y + h]


def test_compressed_rle_round_trip(tiny_coco):
    _, target = _item(CocoInstances(tiny_coco.root), 1)
    mask = target["masks"][1].numpy()  # annotation 2: compressed RLE
    rle = mask_utils.encode(np.asfortranarray(mask))
    assert rle["counts"].decode() == tiny_coco.data["annotations"][1]["segmentation"]["counts"]


def test_uncompressed_rle_decodes(tiny_coco):
    _, target = _item(CocoInstances(tiny_coco.root), 2)
    assert np.array_equal(target["masks"][0].numpy(), tiny_coco.masks[4])
    original = tiny_coco.data["annotations"][3]["segmentation"]
    rle = mask_utils.encode(np.asfortranarray(target["masks"][0].numpy()))
    assert rle["counts"] == mask_utils.frPyObjects(original, 32, 48)["counts"]


def test_polygon_decodes(tiny_coco):
    _, target = _item(CocoInstances(tiny_coco.root), 1)
    mask = target["masks"][0]  # the square polygon (10, 5)–(30, 25)
    assert mask.sum() > 0.9 * 20 * 20
    assert mask[15, 20] == 1 and mask[2, 2] == 0 and mask[15, 40] == 0
    ys, xs = torch.nonzero(mask, as_tuple=True)
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (10, 5, 29, 24)


def test_crowd_is_excluded(tiny_coco):
    dataset = CocoInstances(tiny_coco.root)
    _, target = _item(dataset, 1)
    assert len(target["labels"]) == 2  # annotations 1 and 2; crowd annotation 3 left out
    assert not (target["masks"][:, 30:38, 2:20] == 1).any()
    assert len(dataset.coco.getAnnIds(imgIds=[1], iscrowd=None)) == 3  # still in the COCO api


def test_background_image_has_empty_target(tiny_coco):
    _, target = _item(CocoInstances(tiny_coco.root), 5)
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    assert target["masks"].shape == (0, 24, 24) and target["masks"].dtype == torch.uint8


def test_transforms_are_applied_after_reading(tiny_coco):
    def half(image, target):
        target = dict(target, size=torch.tensor([20, 30]))
        return image[:, ::2, ::2], target

    image, target = _item(CocoInstances(tiny_coco.root, transforms=half), 1)
    assert image.shape == (3, 20, 30)
    assert target["orig_size"].tolist() == [40, 60] and target["size"].tolist() == [20, 30]


# --- bad input: each raises DatasetError naming the file and the field --------------------


def _edit(data, change):
    data = copy.deepcopy(data)
    change(data)
    return data


BAD_JSON = {
    "missing categories": (lambda d: d.pop("categories"), r"'categories'"),
    "unknown category": (
        lambda d: d["annotations"][1].update(category_id=99),
        r"annotations\[1\] \(id 2\)\.category_id.*99",
    ),
    "unknown image": (
        lambda d: d["annotations"][3].update(image_id=42),
        r"annotations\[3\] \(id 4\)\.image_id.*42",
    ),
    "zero-width box": (
        lambda d: d["annotations"][0].update(bbox=[10, 5, 0, 20]),
        r"annotations\[0\] \(id 1\)\.bbox.*positive",
    ),
    "negative-height box": (
        lambda d: d["annotations"][0].update(bbox=[10, 5, 20, -3]),
        r"annotations\[0\] \(id 1\)\.bbox.*positive",
    ),
    "box outside image": (
        lambda d: d["annotations"][4].update(bbox=[40, 10, 20, 10]),
        r"annotations\[4\] \(id 5\)\.bbox.*outside",
    ),
    "polygon of two points": (
        lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 5]]),
        r"annotations\[0\] \(id 1\)\.segmentation.*polygon",
    ),
    "RLE of the wrong size": (
        lambda d: d["annotations"][1]["segmentation"].update(size=[60, 40]),
        r"annotations\[1\] \(id 2\)\.segmentation.*size",
    ),
    "duplicate annotation id": (
        lambda d: d["annotations"][2].update(id=1),
        r"annotations\[2\]\.id.*duplicate",
    ),
    "image without width": (lambda d: d["images"][2].pop("width"), r"images\[2\]\.width"),
}


@pytest.mark.parametrize("case", list(BAD_JSON))
def test_bad_json_fails_at_construction(tiny_coco, case):
    change, pattern = BAD_JSON[case]
    path = tiny_coco.write(_edit(tiny_coco.data, change), "bad.json")
    with pytest.raises(DatasetError, match=r"bad\.json.*" + pattern):
        CocoInstances(path)


def test_bad_json_passes_without_validation(tiny_coco):
    change, _ = BAD_JSON["box outside image"]
    path = tiny_coco.write(_edit(tiny_coco.data, change), "bad.json")
    assert len(CocoInstances(path, validate=False)) == 3


@pytest.mark.parametrize(
    "text, problem",
    [("{not json", "not a readable JSON"), ("[1, 2]", "JSON object"), ('{"images": []}', "")],
)
def test_not_coco_json(tiny_coco, text, problem):
    path = tiny_coco.root / "notcoco.json"
    path.write_text(text)
    with pytest.raises(DatasetError, match=r"notcoco\.json.*" + problem):
        CocoInstances(path)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DatasetError, match="annotations.json"):
        CocoInstances(tmp_path)


def test_undecodable_rle_fails_when_read(tiny_coco):
    data = _edit(tiny_coco.data, lambda d: d["annotations"][1]["segmentation"].update(counts="0"))
    dataset = CocoInstances(tiny_coco.write(data, "bad.json"))  # structure is fine
    with pytest.raises(DatasetError, match=r"bad\.json.*annotations\[1\] \(id 2\)\.segmentation"):
        _item(dataset, 1)
    _item(dataset, 2)  # other images still load


def test_missing_image_fails_when_read(tiny_coco):
    dataset = CocoInstances(tiny_coco.root)
    (tiny_coco.root / "images/b.png").unlink()
    with pytest.raises(DatasetError, match=r"b\.png.*image id 2"):
        _item(dataset, 2)


def test_corrupt_image_fails_when_read(tiny_coco):
    dataset = CocoInstances(tiny_coco.root)
    (tiny_coco.root / "images/b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DatasetError, match=r"b\.png.*image id 2.*cannot read"):
        _item(dataset, 2)


def test_image_size_mismatch_fails_when_read(tiny_coco):
    dataset = CocoInstances(tiny_coco.root)
    Image.new("RGB", (24, 20)).save(tiny_coco.root / "images/c.png")  # JSON says 24x24
    with pytest.raises(
        DatasetError, match=r"c\.png: images\[2\]\.height/width \(image id 5\).*20x24"
    ):
        _item(dataset, 5)


def test_dataset_loads_in_a_dataloader(tiny_coco):
    from blendmask_edu.data.batching import collate

    loader = torch.utils.data.DataLoader(
        CocoInstances(tiny_coco.root), batch_size=3, collate_fn=collate
    )
    images, targets = next(iter(loader))
    assert [im.shape[-2:] for im in images] == [(40, 60), (32, 48), (24, 24)]
    assert [t["image_id"] for t in targets] == [1, 2, 5]
    assert json.loads(tiny_coco.json_path.read_text()) == tiny_coco.data  # file untouched


def test_cached_and_uncached_datasets_give_identical_samples(shapes_small):
    from blendmask_edu.config import shapes_preset
    from blendmask_edu.data.transforms import build_transforms
    from blendmask_edu.engine.sampler import SeededAugmentation

    transforms = build_transforms(shapes_preset().data, train=True)  # random flips
    plain = SeededAugmentation(CocoInstances(shapes_small, transforms))
    cached_set = CocoInstances(shapes_small, transforms)
    assert cached_set.decoded_bytes() == sum(
        64 * 64 * (3 + len(cached_set.load_target(i)["labels"])) for i in cached_set.image_ids
    )
    cached_set.decode_all(progress=False)
    cached = SeededAugmentation(cached_set)
    for epoch in range(2):  # the second epoch reads the cache, and must not see epoch 1's flips
        for index in range(len(cached_set)):
            item = (index, 1000 * epoch + index)
            (a, ta), (b, tb) = plain[item], cached[item]
            assert torch.equal(a, b)
            for key in ("boxes", "labels", "masks", "size", "orig_size"):
                assert torch.equal(ta[key], tb[key]), key


def test_cache_decodes_each_image_once(shapes_small, monkeypatch):
    dataset = CocoInstances(shapes_small, cache=True)
    calls = []
    real = CocoInstances.load_pixels
    monkeypatch.setattr(
        CocoInstances, "load_pixels", lambda self, i: calls.append(i) or real(self, i)
    )
    for _ in range(3):
        dataset[0]
    assert calls == [dataset.image_ids[0]]
