"""`blendmask-edu predict`: a checkpoint on image files → predictions.json + overlay PNGs.

The checkpoint carries the category names and the dataset's own category ids, so no
training data is needed here. predictions.json is in the COCO results format (one entry per
detection: image_id, file_name, category_id, bbox [x, y, w, h], score, segmentation as RLE);
image ids are the images' positions in the list of files (a folder on the command line
stands for its files, sorted by name).

Images are read as users see them: rotated by their EXIF orientation, transparent pixels
over white, grayscale / palette / CMYK / 16-bit converted to RGB. Boxes and masks are in that
orientation, at the image's full size. A file that cannot be read is named and skipped; the
others are still predicted, and the report counts the failures (the CLI then exits with 1).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.ops import box_convert

from ..data.transforms import build_transforms, resized_shape
from ..viz.overlay import save_overlay
from .checkpoint import model_from_checkpoint
from .coco_eval import encode_masks
from .trainer import resolve_device

OVERLAY_MAX_SIDE = 1333  # larger photos get a smaller overlay PNG (the model sees ≤ 1333 too)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")  # 16-bit grayscale PNG / TIFF in Pillow


@dataclass
class PredictReport:
    entries: list = field(default_factory=list)  # COCO results, as in predictions.json
    failed: dict = field(default_factory=dict)  # file → why it was not predicted
    num_images: int = 0


def image_files(paths) -> list[Path]:
    """The command line's paths, with each folder replaced by its files (sorted, not hidden;
    subfolders are not entered)."""
    files = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and not p.name[0] == ".")
        else:
            files.append(path)
    return files


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """A Pillow image of any common mode → float32 [H, W, 3] in [0, 1].

    8-bit images are scaled by 1/255 exactly as the training data is (`CocoInstances`), so a
    16-bit image holding v·257 gives the very same numbers as the 8-bit image holding v."""
    if im.mode in SIXTEEN_BIT_MODES:
        gray = np.asarray(im, dtype=np.float32).clip(0, 65535) / 65535.0  # [H, W]
        return np.repeat(gray[..., None], 3, axis=2)
    if im.mode == "F":
        raise ValueError("a floating-point image (mode F): save it as 8- or 16-bit first")
    transparent = "A" in im.getbands() or "transparency" in im.info
    if transparent:  # composite over white, as an image viewer on a white page shows it
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), rgba)
    rgb = torch.from_numpy(np.asarray(im.convert("RGB")).copy())  # [H, W, 3] uint8
    return rgb.float().div_(255.0).numpy()  # in place: a 6000×4000 photo is 288 MB as floats


def read_image(path: Path) -> torch.Tensor:
    """An image file → float [3, H, W] in [0, 1], upright as viewers show it (EXIF
    orientation applied); a ValueError naming the file when it is not a readable image."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such image")
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)  # EXIF orientation 2–8 → the pixels users see
            rgb = pil_to_rgb(im)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file that Pillow can read") from None
    except Image.DecompressionBombError as err:  # > 178 million pixels by default
        raise ValueError(f"{path}: too large to read safely ({err})") from None
    except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt data
        raise ValueError(f"{path}: cannot read image ({err})") from err
    return torch.from_numpy(rgb).permute(2, 0, 1)  # [3, H, W]


def to_coco_entries(image_id: int, file_name: str, res: dict, label_to_cat_id: dict) -> list:
    entries = []
    boxes = box_convert(res["boxes"].float(), "xyxy", "xywh")  # [N, 4] COCO (x, y, w, h)
    for i in range(len(res["boxes"])):
        entry = {
            "image_id": image_id,
            "file_name": file_name,
            "category_id": label_to_cat_id[int(res["labels"][i])],
            "bbox": boxes[i].tolist(),
            "score": float(res["scores"][i]),
        }
        if "rles" in res:  # compressed RLE per detection, made by `predict_one`
            entry["segmentation"] = res["rles"][i]
        entries.append(entry)
    return entries


@torch.inference_mode()
def predict_one(model, image: torch.Tensor, resize, score_thresh: float, device) -> tuple:
    """One image → (result at full size with masks as RLE, result for the overlay, the image
    at the overlay's size). Both go through the model's own `postprocess`.

    Only detections ≥ `score_thresh` are pasted, one at a time at full size (a 6000×4000
    photo holds one 96 MB float mask at a time, not one per detection); the overlay gets
    its own masks, pasted at its (capped) size."""
    H, W = image.shape[-2:]
    resized, _ = resize(image, None)
    out = model.run([resized.to(device)])
    det = out["fcos"]["detections"][0]
    keep = (det["scores"] >= score_thresh).nonzero()[:, 0]
    kept = {"image_sizes": out["image_sizes"]}

    def only(indices) -> dict:  # `out` restricted to some detections
        sub = {**kept, "fcos": {"detections": [{k: v[indices] for k, v in det.items()}]}}
        if "masks" in out:
            sub["masks"] = [{"masks": out["masks"][0]["masks"][indices]}]  # [n, R, R]
        return sub

    parts, rles = [], []
    for i in keep.tolist():
        one = model.postprocess(only([i]), [(H, W)])[0]  # masks [≤ 1, H, W]
        parts.append({k: one[k].cpu() for k in ("boxes", "scores", "labels")})
        if "masks" in one:
            rles += encode_masks(one["masks"])  # [≤ 1, H, W] → RLE, cut at 0.5
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}
    res = {k: torch.cat([p[k] for p in parts]) if parts else v for k, v in empty.items()}
    if "masks" in out:
        res["rles"] = rles
    oh, ow = resized_shape(H, W, min(H, W), OVERLAY_MAX_SIDE)  # ≤ OVERLAY_MAX_SIDE
    view = {k: v.cpu() for k, v in model.postprocess(only(keep), [(oh, ow)])[0].items()}
    if (oh, ow) != (H, W):
        image = torch.nn.functional.interpolate(image[None], (oh, ow), mode="area")[0]
    return res, view, image


def predict_images(
    checkpoint, images, output_dir, device="auto", score_thresh=0.5
) -> PredictReport:
    device = resolve_device(device)
    model, cfg, categories = model_from_checkpoint(checkpoint, device)
    # The detector drops candidates below its own threshold (0.05) before NMS; a lower
    # --score-thresh asks to see those too, so lower the detector's threshold with it.
    model.fcos.cfg.score_thresh = min(model.fcos.cfg.score_thresh, score_thresh)
    label_to_cat_id = {i + 1: c["id"] for i, c in enumerate(categories)}
    class_names = [c["name"] for c in categories]
    resize = build_transforms(cfg.data, train=False)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = image_files(images)
    if not files:
        raise ValueError(f"no files to predict on in {', '.join(map(str, images))}")
    report = PredictReport(num_images=len(files))
    overlays = set()
    for image_id, path in enumerate(files):
        try:
            image = read_image(path)
        except (OSError, ValueError) as err:
            report.failed[str(path)] = str(err)
            print(f"skipped: {err}", file=sys.stderr)
            continue
        res, view, shown = predict_one(model, image, resize, score_thresh, device)
        report.entries += to_coco_entries(image_id, path.name, res, label_to_cat_id)
        name = f"{path.stem}_pred.png"
        if name in overlays:  # a.png and a.jpg in one folder
            name = f"{path.stem}_{path.suffix.lstrip('.')}_pred.png"
        overlays.add(name)
        save_overlay(shown, view, out / name, class_names, score_thresh)
    (out / "predictions.json").write_text(json.dumps(report.entries) + "\n")
    print(
        f"wrote {out / 'predictions.json'} ({len(report.entries)} detections ≥ {score_thresh}) "
        f"and {len(overlays)} overlay PNG{'' if len(overlays) == 1 else 's'}"
    )
    return report
