"""`blendmask-edu import-labelme SRC_DIR OUT_DIR`: labelme annotations → a COCO instances set.

labelme (a polygon annotation tool) writes one JSON file per image:

    {"shapes": [{"label": "dog", "points": [[x, y], ...], "group_id": null,
                 "shape_type": "polygon"}, ...],       # or "rectangle", "circle", "line", ...
     "imagePath": "dog1.jpg",                          # relative to the JSON file
     "imageData": "<base64 of the image file>",        # or null
     "imageHeight": 480, "imageWidth": 640}

The conversion, in two passes so that nothing is written when a file is broken:
  1. read every JSON under SRC_DIR: polygons and rectangles become masks (pycocotools
     rasterises the polygon); shapes of one file sharing a `group_id` and a label are one
     instance, the union of its parts. Other shape types are *reported* and left out.
  2. write OUT_DIR/images/ (imagePath's file copied, or imageData decoded) and
     OUT_DIR/annotations.json with compressed-RLE masks, ready for `train`.

Categories are the labels sorted by name, ids 1..C: the same labels always give the same ids.
Pass `labels=[...]` to fix the order, so that separate train and val imports agree.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image, ImageOps

from .checks import DatasetError

SUPPORTED_SHAPES = ("polygon", "rectangle")
EXIF_ORIENTATION = 0x0112  # labelme shows (and annotates) images turned upright by this tag


@dataclass
class LabelmeImage:
    """One labelme file, read and converted (pass 1)."""

    json_path: Path
    source: Path | bytes  # the image file to copy, or the decoded imageData
    file_name: str  # its name under OUT_DIR/images/
    height: int
    width: int
    instances: list[tuple[str, dict]]  # (label, COCO RLE with bytes counts)


@dataclass
class ImportReport:
    json_path: Path  # OUT_DIR/annotations.json
    categories: list[dict]
    num_images: int
    num_instances: int
    skipped: list[str] = field(default_factory=list)  # shapes and files left out, and why


def polygon_of(shape: dict) -> list[float] | None:
    """A polygon or rectangle shape → flat [x1, y1, x2, y2, ...]; None for other types."""
    points = np.asarray(shape.get("points") or [], dtype=float).reshape(-1, 2)  # [P, 2]
    kind = shape.get("shape_type") or "polygon"  # old labelme files leave it out
    if kind == "rectangle" and len(points) >= 2:  # two opposite corners (or all four)
        (x0, y0), (x1, y1) = points.min(0), points.max(0)
        return [x0, y0, x1, y0, x1, y1, x0, y1]
    if kind == "polygon" and len(points) >= 3:
        return points.flatten().tolist()
    return None


def read_labelme(json_path: Path, src_dir: Path, labels: list[str] | None) -> tuple:
    """Pass 1 for one file → (LabelmeImage or None, [errors], [skipped shapes])."""
    try:
        record = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, [f"{json_path}: not a readable JSON file ({e})"], []
    if not isinstance(record, dict) or not isinstance(record.get("shapes"), list):
        return None, [], [f"{json_path}: not a labelme file (no 'shapes' list): skipped"]
    try:
        source, pil_size = _image_source(json_path, record)
    except (OSError, ValueError, binascii.Error) as e:
        return None, [f"{json_path}: imagePath/imageData: {e}"], []
    width, height = pil_size
    said = (record.get("imageWidth"), record.get("imageHeight"))
    if said != (None, None) and said != (width, height):
        msg = f"imageWidth/imageHeight say {said[0]}x{said[1]}, the image is {width}x{height}"
        return None, [f"{json_path}: {msg}"], []
    groups: dict[tuple, list[list[float]]] = {}
    errors, skipped = [], []
    for i, shape in enumerate(record["shapes"]):
        where = f"{json_path}: shapes[{i}] ({shape.get('label')!r}, {shape.get('shape_type')})"
        label, polygon = shape.get("label"), polygon_of(shape)
        if polygon is None:
            kinds = "/".join(SUPPORTED_SHAPES)
            skipped.append(f"{where}: unsupported (only {kinds} with enough points): skipped")
        elif not isinstance(label, str) or not label:
            errors.append(f"{where}: missing label")
        elif labels is not None and label not in labels:
            errors.append(f"{where}: label {label!r} is not one of {labels}")
        else:
            group = shape.get("group_id")
            key = (label, group) if group is not None else (label, f"shape {i}")
            groups.setdefault(key, []).append(polygon)
    instances = []
    for (label, group), polygons in groups.items():
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))  # union of parts
        if mask_utils.area(rle) == 0:
            skipped.append(f"{json_path}: {label!r} ({group}) covers no pixel: skipped")
            continue
        instances.append((label, rle))
    stem = "__".join(json_path.relative_to(src_dir).with_suffix("").parts)
    suffix = source.suffix.lower() if isinstance(source, Path) else _suffix_of(source)
    image = LabelmeImage(json_path, source, stem + suffix, height, width, instances)
    return image, errors, skipped


def _image_source(json_path: Path, record: dict) -> tuple[Path | bytes, tuple[int, int]]:
    """The image as labelme showed it → (file to copy or bytes to write, (width, height)).

    imagePath's file is preferred (its original bytes); imageData (base64) when the file is
    not there. An image with an EXIF rotation is stored turned upright, as labelme shows it.
    """
    relative = str(record.get("imagePath") or "").replace("\\", "/")  # labelme on Windows
    path = json_path.parent / relative
    if relative and path.is_file():
        data = path.read_bytes()
    elif record.get("imageData"):
        data = base64.b64decode(record["imageData"], validate=True)
        path = None
    else:
        raise ValueError(f"no image: {path} does not exist and imageData is empty")
    with Image.open(io.BytesIO(data)) as pil:
        pil.load()
        if pil.getexif().get(EXIF_ORIENTATION, 1) != 1:
            upright = ImageOps.exif_transpose(pil)
            buffer = io.BytesIO()
            upright.save(buffer, format="PNG")
            return buffer.getvalue(), upright.size
        return (path if path is not None else data), pil.size


def _suffix_of(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as pil:
        return {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp"}.get(pil.format, ".png")


def import_labelme(src_dir, out_dir, labels: list[str] | None = None) -> ImportReport:
    """Convert every labelme JSON under `src_dir` (see the module docstring)."""
    src, out = Path(src_dir), Path(out_dir)
    if not src.is_dir():
        raise DatasetError(f"{src}: not a folder of labelme JSON files")
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: exists and is not empty; choose a new output folder")
    files = sorted(src.rglob("*.json"))
    images, errors, skipped = [], [], []
    for json_path in files:
        image, file_errors, file_skipped = read_labelme(json_path, src, labels)
        errors += file_errors
        skipped += file_skipped
        if image is not None:
            images.append(image)
    names = [im.file_name for im in images]
    errors += [
        f"{n}: two labelme files give this image name" for n in set(names) if names.count(n) > 1
    ]
    if not images and not errors:
        errors.append(f"{src}: no labelme JSON files found")
    if errors:
        raise DatasetError("cannot import, nothing was written:\n  " + "\n  ".join(errors))
    return _write_coco(images, out, labels, skipped)


def _write_coco(images: list[LabelmeImage], out: Path, labels, skipped) -> ImportReport:
    """Pass 2: the image files and annotations.json."""
    names = labels or sorted({label for im in images for label, _ in im.instances})
    cat_ids = {name: i + 1 for i, name in enumerate(names)}
    (out / "images").mkdir(parents=True, exist_ok=True)
    coco_images, annotations = [], []
    for image_id, im in enumerate(images, start=1):
        target = out / "images" / im.file_name
        if isinstance(im.source, Path):
            shutil.copyfile(im.source, target)
        else:
            target.write_bytes(im.source)
        coco_images.append(
            {"id": image_id, "file_name": im.file_name, "width": im.width, "height": im.height}
        )
        for label, rle in im.instances:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat_ids[label],
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],  # [x, y, w, h]
                    "area": float(mask_utils.area(rle)),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i, "name": name} for name, i in cat_ids.items()]
    data = {"images": coco_images, "annotations": annotations, "categories": categories}
    json_path = out / "annotations.json"
    json_path.write_text(json.dumps(data) + "\n")
    return ImportReport(json_path, categories, len(coco_images), len(annotations), skipped)
