"""import-labelme: polygons, rectangles, group_id parts, embedded and referenced images, EXIF
rotation, unsupported shapes reported; the result passes check-data and trains."""

from __future__ import annotations

import base64
import hashlib
import io
import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image

from blendmask_edu.cli import main

# A hand-drawn-looking simple polygon with fractional vertices, in a 100×80 image.
POLYGON = [[12.3, 8.7], [55.2, 11.4], [88.6, 30.1], [70.4, 71.9], [30.8, 66.2], [8.1, 40.5]]


def shoelace(points) -> float:
    x, y = np.asarray(points, dtype=float).T
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _shape(label, points, shape_type="polygon", group_id=None) -> dict:
    return {"label": label, "points": points, "group_id": group_id, "shape_type": shape_type}


def _labelme(path, shapes, image_path, width, height, image_data=None) -> None:
    record = {
        "version": "5.4.1",
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": image_data,
        "imageHeight": height,
        "imageWidth": width,
    }
    path.write_text(json.dumps(record))


@pytest.fixture
def labelme_dir(tmp_path):
    """Three labelme files: a referenced JPEG, an embedded PNG, an EXIF-rotated JPEG referenced
    with a Windows path."""
    rng = np.random.default_rng(0)
    src = tmp_path / "labelme"
    (src / "more").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(src / "a.jpg")
    _labelme(
        src / "a.json",
        [
            _shape("cat", POLYGON),
            _shape("dog", [[90.0, 70.0], [60.0, 50.0]], "rectangle"),  # corners in any order
            _shape("ball", [[20.0, 20.0], [25.0, 20.0]], "circle"),
            _shape("leash", [[1.0, 1.0], [9.0, 9.0]], "line"),
        ],
        "a.jpg",
        100,
        80,
    )
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (96, 72, 3), dtype=np.uint8)).save(buffer, "PNG")
    parts = [
        _shape("person", [[10.0, 10.0], [30.0, 10.0], [30.0, 40.0], [10.0, 40.0]], group_id=1),
        _shape("person", [[10.0, 50.0], [30.0, 50.0], [30.0, 90.0], [10.0, 90.0]], group_id=1),
        _shape("dog", [[40.0, 60.0], [70.0, 60.0], [55.0, 90.0]]),
    ]
    data = base64.b64encode(buffer.getvalue()).decode()
    _labelme(src / "more" / "b.json", parts, "gone/b.png", 72, 96, image_data=data)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90°: the stored 64×48 appears 48 wide, 64 high
    (src / "pics").mkdir()
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(
        src / "pics" / "c.jpg", exif=exif
    )
    rectangle = [_shape("cat", [[5.0, 5.0], [40.0, 60.0]], "rectangle")]
    _labelme(
        src / "c.json", rectangle, "pics\\c.jpg", 48, 64
    )  # a path as labelme writes on Windows
    return src


def _hashes(root) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).digest() for p in root.rglob("*") if p.is_file()}


def test_labelme_round_trip(labelme_dir, tmp_path, capsys):
    before = _hashes(labelme_dir)
    out = tmp_path / "coco"
    assert main(["import-labelme", str(labelme_dir), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "a.json: shapes[2] ('ball', circle): unsupported" in printed
    assert "a.json: shapes[3] ('leash', line): unsupported" in printed
    assert _hashes(labelme_dir) == before  # the source is only read

    data = json.loads((out / "annotations.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"},
                                  {"id": 3, "name": "person"}]  # fmt: skip
    images = {im["file_name"]: im for im in data["images"]}
    assert set(images) == {"a.jpg", "c.png", "more__b.png"}
    anns = {(images_id, a["category_id"]): a for a in data["annotations"]
            for images_id in [a["image_id"]]}  # fmt: skip
    a, b, c = (images[n]["id"] for n in ("a.jpg", "more__b.png", "c.png"))

    # The polygon's mask has the polygon's area (shoelace) within 1 %.
    cat = anns[(a, 1)]
    mask = mask_utils.decode(cat["segmentation"])  # [80, 100]
    assert mask.shape == (80, 100)
    assert abs(mask.sum() - shoelace(POLYGON)) / shoelace(POLYGON) < 0.01
    assert cat["area"] == mask.sum()
    # The rectangle: 30 × 20 pixels, bbox [60, 50, 30, 20].
    assert anns[(a, 2)]["area"] == 600 and anns[(a, 2)]["bbox"] == [60.0, 50.0, 30.0, 20.0]
    # group_id 1: both parts are one person.
    person = [x for x in data["annotations"] if x["category_id"] == 3]
    assert len(person) == 1 and person[0]["area"] == 20 * 30 + 20 * 40
    assert person[0]["bbox"] == [10.0, 10.0, 20.0, 80.0]
    # Images: the referenced JPEG copied byte for byte, imageData decoded, EXIF turned upright.
    assert (out / "images/a.jpg").read_bytes() == (labelme_dir / "a.jpg").read_bytes()
    with Image.open(out / "images/more__b.png") as im:
        assert im.size == (72, 96) and (
            images["more__b.png"]["width"],
            images["more__b.png"]["height"],
        ) == (72, 96)
    with Image.open(out / "images/c.png") as im:
        assert im.size == (48, 64)
    assert anns[(c, 1)]["bbox"] == [5.0, 5.0, 35.0, 55.0]
    assert len(data["annotations"]) == 5 and b

    assert main(["check-data", str(out)]) == 0
    assert "OK: 0 errors, 0 warnings" in capsys.readouterr().out


def test_train_runs_on_the_imported_set(labelme_dir, tmp_path):
    out, run = tmp_path / "coco", tmp_path / "run"
    assert main(["import-labelme", str(labelme_dir), str(out)]) == 0
    assert main(["train", "--preset", "shapes", "--train", str(out), "--val", str(out),
                 "--output-dir", str(run), "--max-iters", "2", "--batch-size", "2",
                 "--device", "cpu"]) == 0  # fmt: skip
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if "loss" in r] == [2]  # the last iteration is logged
    assert np.isfinite([r["loss"] for r in records if "loss" in r]).all()
    assert json.loads((run / "eval.json").read_text())["bbox"]["AP"] >= 0.0


def test_labels_fix_the_category_order(labelme_dir, tmp_path):
    out = tmp_path / "coco"
    assert (
        main(["import-labelme", str(labelme_dir), str(out), "--labels", "person,dog,cat,bird"]) == 0
    )
    data = json.loads((out / "annotations.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["person", "dog", "cat", "bird"]


def test_broken_files_are_all_reported_and_nothing_written(labelme_dir, tmp_path, capsys):
    _labelme(labelme_dir / "d.json", [_shape("cat", POLYGON)], "nowhere.jpg", 100, 80)
    _labelme(labelme_dir / "e.json", [_shape("cat", POLYGON)], "a.jpg", 80, 100)  # swapped
    out = tmp_path / "coco"
    assert main(["import-labelme", str(labelme_dir), str(out), "--labels", "cat,dog"]) == 1
    err = capsys.readouterr().err
    assert "d.json: imagePath/imageData: no image" in err and "nowhere.jpg" in err
    assert "e.json: imageWidth/imageHeight say 80x100, the image is 100x80" in err
    assert "b.json: shapes[0] ('person', polygon): label 'person' is not one of" in err
    assert not out.exists()
