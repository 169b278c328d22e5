"""`blendmask-edu check-data`: every problem of a COCO set at once, and its statistics.

    report = check_dataset("data/mine")     # DIR or a COCO JSON, resolved as training does
    print(format_report(report))            # errors, warnings, statistics
    report.errors, report.warnings, report.stats

The checks are the loader's own (`checks.py`): what `check-data` calls an error is what makes
`CocoInstances` stop training. The loader stops at the first; here they are all collected, the
images are all opened and every mask decoded. Nothing is written.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .checks import (
    Problem,
    decode_annotation,
    json_problems,
    read_image_file,
    segmentation_problem,
)
from .coco import annotation_path, image_root_candidates, load_coco_json

# COCO's object sizes (pycocotools' COCOeval areaRng): by the annotation's `area`, in pixels².
SIZE_RANGES = {"small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, float("inf"))}


@dataclass
class DataReport:
    json_path: Path
    image_root: Path
    problems: list[Problem]
    stats: dict

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


def check_dataset(path: str | Path) -> DataReport:
    """Run every check on a dataset (DIR or JSON); only an unreadable JSON raises."""
    json_path = annotation_path(path)
    data = load_coco_json(json_path)  # DatasetError if it is not a COCO file at all
    problems = list(json_problems(data, json_path))
    image_root = _find_image_root(json_path, data, Path(path).is_dir())
    problems += file_problems(data, json_path, image_root)
    return DataReport(json_path, image_root, problems, dataset_statistics(data))


def _find_image_root(json_path: Path, data: dict, is_dir: bool) -> Path:
    """The candidate folder holding most of the first 20 images (the loader looks at the
    first image only; here a missing first image must not hide the others)."""
    names = [img.get("file_name") for img in data["images"][:20] if isinstance(img, dict)]
    names = [n for n in names if isinstance(n, str)]
    candidates = image_root_candidates(json_path, is_dir)
    hits = [sum((root / n).is_file() for n in names) for root in candidates]
    return candidates[hits.index(max(hits))] if max(hits) > 0 else candidates[-1]


def _valid_images(data: dict) -> dict[int, tuple[int, dict]]:
    """id → (index, entry) of the images whose id, file_name and size are usable."""
    images = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not isinstance(img.get("id"), int):
            continue
        sized = all(isinstance(img.get(k), int) and img[k] > 0 for k in ("width", "height"))
        if sized and isinstance(img.get("file_name"), str) and img["id"] not in images:
            images[img["id"]] = (i, img)
    return images


def _on_valid_image(ann, images: dict) -> bool:
    image_id = ann.get("image_id") if isinstance(ann, dict) else None
    return isinstance(image_id, int) and image_id in images


def file_problems(data: dict, json_path: Path, image_root: Path) -> list[Problem]:
    """Open every image and decode every mask that the JSON checks let through."""
    problems = []
    images = _valid_images(data)
    for index, info in images.values():
        _, problem = read_image_file(image_root / info["file_name"], info, index, json_path)
        if problem:
            problems.append(problem)
    for i, ann in enumerate(data["annotations"]):
        if not _on_valid_image(ann, images):
            continue
        info = images[ann["image_id"]][1]
        if segmentation_problem(ann.get("segmentation"), info["height"], info["width"]):
            continue  # already reported by json_problems
        where = f"annotations[{i}] (id {ann.get('id')})"
        _, found = decode_annotation(ann, info["height"], info["width"], where, json_path)
        problems += found
    return problems


# ---------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------


def dataset_statistics(data: dict) -> dict:
    """What a learner wants to know before training; robust to the broken entries.

    Instances are the non-crowd annotations (what the model trains on); crowd annotations are
    counted apart (COCOeval uses them as regions to ignore).
    """
    images = _valid_images(data)
    names = {}
    for c in data["categories"]:
        if isinstance(c, dict):
            names.setdefault(c.get("id"), c.get("name"))  # a duplicate id keeps its first name
    per_category = Counter()
    per_image = Counter()
    sizes = Counter()
    crowd, crowd_images = 0, set()
    for ann in data["annotations"]:
        if not _on_valid_image(ann, images):
            continue
        if ann.get("iscrowd", 0):
            crowd += 1
            crowd_images.add(ann["image_id"])
            continue
        cat_id = ann.get("category_id")
        per_category[cat_id if isinstance(cat_id, int) else repr(cat_id)] += 1
        per_image[ann["image_id"]] += 1
        sizes[_size_name(ann)] += 1
    counts = [per_image[i] for i in images]
    return {
        "images": len(images),
        "empty_images": sum(c == 0 for c in counts),
        "instances": sum(counts),
        "crowd_annotations": crowd,
        "images_with_crowd": len(crowd_images),
        "per_category": {  # by name, in category id order (the model's label order)
            str(names.get(cid, f"unknown id {cid!r}")): per_category[cid]
            for cid in sorted(set(names) | set(per_category), key=lambda c: (str(type(c)), c))
        },
        "instances_per_image": {
            "min": min(counts, default=0),
            "mean": sum(counts) / len(counts) if counts else 0.0,
            "max": max(counts, default=0),
            "histogram": _histogram(counts),
        },
        "sizes": {name: sizes[name] for name in SIZE_RANGES},
        "image_sizes": sorted({(img["width"], img["height"]) for _, img in images.values()}),
    }


def _size_name(ann: dict) -> str:
    """small / medium / large as COCO counts: by `area` (the box area where it is missing,
    as the loader fills it)."""
    area = ann.get("area")
    if not isinstance(area, (int, float)):
        bbox = ann.get("bbox")
        ok = isinstance(bbox, list) and len(bbox) == 4
        area = bbox[2] * bbox[3] if ok and all(isinstance(v, (int, float)) for v in bbox) else 0
    return next(name for name, (lo, hi) in SIZE_RANGES.items() if lo <= area < hi)


def _histogram(counts: list[int]) -> dict[str, int]:
    """Images per number of instances, in buckets 0, 1, 2-4, 5-9, 10-19, 20-49, 50+."""
    buckets = [(0, 0), (1, 1), (2, 4), (5, 9), (10, 19), (20, 49), (50, None)]
    out = {}
    for lo, hi in buckets:
        label = str(lo) if lo == hi else (f"{lo}+" if hi is None else f"{lo}-{hi}")
        n = sum(lo <= c and (hi is None or c <= hi) for c in counts)
        if n:
            out[label] = n
    return out


# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------


def format_report(report: DataReport) -> str:
    s = report.stats
    lines = [f"checked {report.json_path} (images under {report.image_root})"]
    for title, problems in (("errors", report.errors), ("warnings", report.warnings)):
        if problems:
            lines.append(f"{title} ({len(problems)}):")
            lines += [f"  {p}" for p in problems]
    ipi = s["instances_per_image"]
    histogram = ", ".join(f"{k}: {v}" for k, v in ipi["histogram"].items())
    sides = ", ".join(f"{w}x{h}" for w, h in s["image_sizes"][:6])
    sides += ", ..." if len(s["image_sizes"]) > 6 else ""
    lines += [
        "statistics:",
        f"  images: {s['images']} ({s['empty_images']} without instances); "
        f"{len(s['image_sizes'])} sizes (WxH): {sides}",
        f"  instances: {s['instances']}, plus {s['crowd_annotations']} crowd regions "
        f"on {s['images_with_crowd']} images",
        "  per category: " + ", ".join(f"{k} {v}" for k, v in s["per_category"].items()),
        f"  per image: min {ipi['min']}, mean {ipi['mean']:.1f}, max {ipi['max']}  "
        f"(images per count: {histogram})",
        "  sizes (COCO area): "
        + ", ".join(f"{k} {v}" for k, v in s["sizes"].items())
        + "  (small < 32², medium < 96², large ≥ 96² px²)",
    ]
    n_err, n_warn = len(report.errors), len(report.warnings)
    verdict = "FAILED" if n_err else "OK"
    lines.append(f"{verdict}: {n_err} errors, {n_warn} warnings")
    return "\n".join(lines)
