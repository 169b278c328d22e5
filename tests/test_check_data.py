"""check-data: statistics of a real-world-like set, every planted defect in one run, the
loader's own errors, overlays, and nothing on disk modified."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from PIL import Image
from realistic import EXPECTED

from blendmask_edu.cli import main
from blendmask_edu.data.check_data import check_dataset
from blendmask_edu.data.coco import CocoInstances, DatasetError


def _hashes(root) -> dict:
    return {
        p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _load(root) -> dict:
    return json.loads((root / "annotations.json").read_text())


def _save(root, data) -> None:
    (root / "annotations.json").write_text(json.dumps(data))


def _ann(data, ann_id) -> dict:
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def _img(data, image_id) -> dict:
    return next(i for i in data["images"] if i["id"] == image_id)


def test_clean_set_passes_with_correct_statistics(real_coco, capsys):
    before = _hashes(real_coco)
    assert main(["check-data", str(real_coco)]) == 0
    out = capsys.readouterr().out
    assert "OK: 0 errors, 0 warnings" in out
    assert "per category: car 2, dog 3, person 3" in out
    assert "sizes (COCO area): small 4, medium 3, large 1" in out
    stats = check_dataset(real_coco).stats
    for key, value in EXPECTED.items():
        if key == "instances_per_image":
            assert {k: stats[key][k] for k in value} == pytest.approx(value)
        else:
            assert stats[key] == value, key
    assert stats["instances_per_image"]["histogram"] == {"0": 1, "1": 1, "2-4": 3}
    assert _hashes(real_coco) == before


# Each planted defect: (change to the JSON / the files, file it names, field, message).
def _missing_image(root, data):
    data["images"].append({"id": 60, "file_name": "gone.png", "width": 50, "height": 40})


def _corrupt_image(root, data):
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    data["images"].append({"id": 70, "file_name": "broken.png", "width": 50, "height": 40})


def _swapped_size(root, data):
    _img(data, 40).update(width=60, height=100)  # the file is 100 wide, 60 high


DEFECTS = {
    "missing image": (_missing_image, "gone.png", r"images\[\d\]\.file_name \(image id 60\)", "cannot read image"),
    "unreadable image": (_corrupt_image, "broken.png", r"images\[\d\]\.file_name \(image id 70\)", "cannot read image"),
    "size disagrees with file": (_swapped_size, "empty_04.jpg", r"images\[3\]\.height/width \(image id 40\)", "swapped"),
    "box outside image": (lambda r, d: _ann(d, 102)["bbox"].__setitem__(0, 150.0), "annotations.json", r"annotations\[1\] \(id 102\)\.bbox", "outside"),
    "degenerate box": (lambda r, d: _ann(d, 107)["bbox"].__setitem__(2, 0.0), "annotations.json", r"annotations\[6\] \(id 107\)\.bbox", "degenerate"),
    "polygon that does not decode": (lambda r, d: _ann(d, 106).update(segmentation=[[10, 60, 30]]), "annotations.json", r"annotations\[5\] \(id 106\)\.segmentation", "polygon"),
    "RLE that does not decode": (lambda r, d: _ann(d, 104)["segmentation"].update(counts="0"), "annotations.json", r"annotations\[3\] \(id 104\)\.segmentation", "does not decode"),
    "mask off its box": (lambda r, d: _ann(d, 109).update(bbox=[5.0, 75.0, 50.0, 20.0]), "annotations.json", r"annotations\[8\] \(id 109\)\.segmentation/bbox", "IoU 0.00"),
    "unknown category id": (lambda r, d: _ann(d, 103).update(category_id=4), "annotations.json", r"annotations\[2\] \(id 103\)\.category_id", "4 is not in categories"),
    "unknown image id": (lambda r, d: _ann(d, 108).update(image_id=99), "annotations.json", r"annotations\[7\] \(id 108\)\.image_id", "99 is not an image id"),
    "duplicate annotation id": (lambda r, d: _ann(d, 105).update(id=101), "annotations.json", r"annotations\[4\]\.id", "duplicate annotation id 101"),
    "duplicate image id": (lambda r, d: d["images"].append({"id": 20, "file_name": "street_01.jpg", "width": 160, "height": 120}), "annotations.json", r"images\[\d\]\.id", "duplicate image id 20"),
    "duplicate category id": (lambda r, d: d["categories"].append({"id": 2, "name": "truck"}), "annotations.json", r"categories\[3\]\.id", "duplicate category id 2"),
}  # fmt: skip


def _plant(root, names) -> None:
    data = _load(root)
    for name in names:
        DEFECTS[name][0](root, data)
    _save(root, data)


def _found(problems, name) -> bool:
    _, file, field, message = DEFECTS[name]
    pattern = rf"{re.escape(file)}: {field}: .*{re.escape(message)}"
    return any(re.search(pattern, str(p)) for p in problems)


def test_every_planted_defect_is_reported_in_one_run(real_coco, capsys):
    _plant(real_coco, list(DEFECTS))
    before = _hashes(real_coco)
    assert main(["check-data", str(real_coco)]) == 1
    out = capsys.readouterr().out
    report = check_dataset(real_coco)
    missing = [name for name in DEFECTS if not _found(report.errors, name)]
    assert not missing, f"not reported: {missing}\n{out}"
    assert len(report.errors) == len(DEFECTS), out  # each once, nothing else
    assert all(str(p) in out for p in report.errors)
    assert f"FAILED: {len(DEFECTS)} errors, 0 warnings" in out
    assert _hashes(real_coco) == before  # check-data wrote nothing


@pytest.mark.parametrize("name", list(DEFECTS))
def test_the_loader_stops_on_the_same_problem(real_coco, name):
    """One defect at a time: reading the set as training does raises exactly the error
    check-data reports (the checks are shared, not duplicated)."""
    _plant(real_coco, [name])
    reported = [str(p) for p in check_dataset(real_coco).errors]
    assert len(reported) == 1 and _found(check_dataset(real_coco).errors, name)
    with pytest.raises(DatasetError) as err:
        dataset = CocoInstances(real_coco)
        for i in range(len(dataset)):
            dataset[i]
    assert str(err.value) == reported[0]


def test_warnings_do_not_fail(real_coco, capsys):
    data = _load(real_coco)
    data["categories"].append({"id": 11, "name": "bicycle"})  # no instances
    _save(real_coco, data)
    assert main(["check-data", str(real_coco / "annotations.json")]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"annotations\.json: categories\[3\]: 'bicycle' \(id 11\) has no instances", out
    )
    assert "OK: 0 errors, 1 warnings" in out


def test_overlays_draw_problem_images_first(real_coco, tmp_path, capsys):
    _plant(real_coco, ["mask off its box"])  # image 50, park_05.png
    out = tmp_path / "overlays"
    assert main(["check-data", str(real_coco), "--overlays", str(out), "--num", "2"]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["park_05_gt.png", "street_01_gt.png"]
    assert "wrote 2 ground-truth overlays" in capsys.readouterr().out
    with Image.open(out / "park_05_gt.png") as im:
        assert im.size == (128, 200)  # drawn at twice the 64x100 image
        pixels = np.asarray(im.convert("RGB"), dtype=float) / 255  # [200, 128, 3]
    # The car's mask (x 5..55, y 20..70 in the image) is tinted with the first colour (blue);
    # noise elsewhere stays grey on average.
    inside, outside = pixels[60:120, 30:90].mean((0, 1)), pixels[0:30, 115:125].mean((0, 1))
    assert inside[2] - inside[0] > 0.15 and abs(outside[2] - outside[0]) < 0.1


def test_malformed_entries_are_reported_not_crashed_on(real_coco):
    data = _load(real_coco)
    data["annotations"][0]["id"] = [101]  # unhashable ids and references
    data["annotations"][1]["image_id"] = [10]
    data["annotations"][2]["category_id"] = {"id": 9}
    data["annotations"].append("not an annotation")
    _save(real_coco, data)
    fields = [p.field for p in check_dataset(real_coco).errors]
    assert fields == [
        "annotations[0].id",
        "annotations[1] (id 102).image_id",
        "annotations[2] (id 103).category_id",
        "annotations[9].id",
    ]
