"""COCO instance segmentation as a PyTorch dataset (pycocotools underneath).

    dataset = CocoInstances("data/shapes_train")   # DIR/annotations.json + DIR/images/
    image, target = dataset[0]
    # image: float32 [3, H, W] in [0, 1]
    # target: boxes [N, 4] xyxy, labels [N] in 1..C, masks uint8 [N, H, W], image_id,
    #         orig_size (H, W) as read from disk, size (H, W) after the transforms

COCO category ids may have gaps (COCO itself uses 1..90 for 80 classes); the model wants
contiguous labels, so category ids are sorted and numbered 1..C (0 is left for background).
`cat_id_to_label` / `label_to_cat_id` translate both ways; evaluation uses the second one.

Bad input fails early with a `DatasetError` that names the file and the field: the JSON
structure is checked when the dataset is built, images and masks when an item is read. The
checks themselves live in `checks.py`, where `blendmask-edu check-data` runs all of them at once.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from torchvision.ops import box_convert

from .checks import (  # noqa: F401  (DatasetError, segmentation_to_mask: importable from here)
    DatasetError,
    decode_annotation,
    json_problems,
    raise_first_error,
    read_image_file,
    segmentation_to_mask,
)

# ---------------------------------------------------------------------------------------
# Where the annotations and the images are
# ---------------------------------------------------------------------------------------


def resolve_dataset(path: str | Path) -> tuple[Path, Path]:
    """Return `(json_path, image_root)` for a dataset argument.

    A directory means `DIR/annotations.json` with images under `DIR/images/`. A JSON file
    means a COCO file whose `file_name`s resolve relative to the JSON's folder or its
    `images/` subfolder, whichever holds the first image.
    """
    json_path = annotation_path(path)
    return json_path, _image_root(json_path, load_coco_json(json_path), Path(path).is_dir())


def annotation_path(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "annotations.json"
    if not path.is_file():
        raise DatasetError(f"{path}: no such annotation file")
    return path


def image_root_candidates(json_path: Path, is_dir: bool) -> list[Path]:
    """The folders `file_name`s may be relative to, in the order they are tried."""
    folder = json_path.parent
    return [folder / "images"] if is_dir else [folder, folder / "images"]


def _image_root(json_path: Path, data: dict, is_dir: bool) -> Path:
    """Pick the folder the `file_name`s are relative to, by looking for the first image."""
    candidates = image_root_candidates(json_path, is_dir)
    if not data["images"]:
        return candidates[-1]
    file_name = data["images"][0]["file_name"]
    for root in candidates:
        if (root / file_name).is_file():
            return root
    tried = " or ".join(str(root / file_name) for root in candidates)
    raise DatasetError(f"{json_path}: images[0].file_name {file_name!r}: not found at {tried}")


# ---------------------------------------------------------------------------------------
# Reading and checking the JSON (structure only: no image is opened here)
# ---------------------------------------------------------------------------------------


def load_coco_json(json_path: Path) -> dict:
    """Parse a COCO instances file and check it has the three lists COCO needs."""
    try:
        data = json.loads(Path(json_path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{json_path}: not a readable JSON file ({e})") from e
    if not isinstance(data, dict):
        raise DatasetError(f"{json_path}: a COCO file is a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{json_path}: not a COCO instances file: missing list {key!r}")
    return data


def validate_coco(data: dict, json_path: Path) -> None:
    """Raise `DatasetError` on the first inconsistency between images, categories, annotations
    (the checks are in `checks.py`; `check-data` runs the same ones and reports them all)."""
    raise_first_error(json_problems(data, json_path))


# ---------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------


class CocoInstances(torch.utils.data.Dataset):
    """COCO instances as `(image, target)` pairs with torchvision detection conventions.

    `transforms` is a callable `(image, target) -> (image, target)` (see `transforms.py`).
    Images without annotations are kept (empty targets); `iscrowd=1` annotations are left
    out of the targets (COCOeval still uses them, through `self.coco`, as ignore regions).
    """

    def __init__(
        self, path: str | Path, transforms=None, validate: bool = True, cache: bool = False
    ):
        """`cache=True` keeps every image and target decoded in RAM (uint8) after its first
        read, so PNG and RLE decoding happen once per run, not once per epoch; see
        `decoded_bytes` and `decode_all`."""
        self.json_path = annotation_path(path)
        data = load_coco_json(self.json_path)
        if validate:
            validate_coco(data, self.json_path)
        self.image_root = _image_root(self.json_path, data, Path(path).is_dir())
        for ann in data["annotations"]:  # COCOeval needs both; fill the usual defaults
            ann.setdefault("iscrowd", 0)
            ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()
        self._ann_index = {ann["id"]: i for i, ann in enumerate(data["annotations"])}
        self._image_index = {img["id"]: i for i, img in enumerate(data["images"])}

        self.categories = sorted(
            ({"id": c["id"], "name": c["name"]} for c in data["categories"]),
            key=lambda c: c["id"],
        )
        self.cat_id_to_label = {c["id"]: i + 1 for i, c in enumerate(self.categories)}
        self.label_to_cat_id = {label: cid for cid, label in self.cat_id_to_label.items()}
        self.class_names = [c["name"] for c in self.categories]  # index = label − 1
        self.image_ids = [img["id"] for img in data["images"]]
        self.transforms = transforms
        self.cache = cache
        self._decoded: dict[int, tuple[torch.Tensor, dict]] = {}  # image id → (uint8, target)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image_id = self.image_ids[index]
        if self.cache:
            pixels, target = self.decoded(image_id)
            image, target = pixels.float() / 255.0, dict(target)  # transforms make new tensors
        else:
            image = self.load_image(image_id)  # [3, H, W]
            target = self.load_target(image_id)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def decoded(self, image_id: int) -> tuple[torch.Tensor, dict]:
        """The image as uint8 [3, H, W] and its target, decoded on the first call only."""
        if image_id not in self._decoded:
            self._decoded[image_id] = (self.load_pixels(image_id), self.load_target(image_id))
        return self._decoded[image_id]

    def decoded_bytes(self) -> int:
        """RAM that `cache=True` needs: H·W·(3 + non-crowd instances) bytes per image."""
        total = 0
        for image_id in self.image_ids:
            info = self.coco.imgs[image_id]
            n = sum(not a.get("iscrowd", 0) for a in self.coco.imgToAnns[image_id])
            total += info["height"] * info["width"] * (3 + n)
        return total

    def decode_all(self, progress: bool = True) -> None:
        """Decode every image now (before DataLoader workers fork, so they share it)."""
        from tqdm.auto import tqdm

        self.cache = True
        for image_id in tqdm(self.image_ids, desc="decode", disable=not progress, leave=False):
            self.decoded(image_id)

    def image_path(self, image_id: int) -> Path:
        return self.image_root / self.coco.imgs[image_id]["file_name"]

    def load_pixels(self, image_id: int) -> torch.Tensor:
        """Read an image file as uint8 RGB `[3, H, W]` and check its size."""
        path, info = self.image_path(image_id), self.coco.imgs[image_id]
        array, problem = read_image_file(path, info, self._image_index[image_id], self.json_path)
        if problem:  # missing, unreadable, or not the size the JSON says
            raise DatasetError(str(problem))
        return torch.from_numpy(array.copy()).permute(2, 0, 1)  # [3, H, W] uint8

    def load_image(self, image_id: int) -> torch.Tensor:
        """Read an image file as float32 RGB `[3, H, W]` in [0, 1] and check its size."""
        return self.load_pixels(image_id).float() / 255.0

    def load_target(self, image_id: int) -> dict:
        """Boxes, contiguous labels and masks of the non-crowd instances of one image."""
        info = self.coco.imgs[image_id]
        height, width = info["height"], info["width"]
        anns = [a for a in self.coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        masks = [self._decode(ann, height, width) for ann in anns]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        labels = [self.cat_id_to_label[a["category_id"]] for a in anns]
        if masks:
            masks = torch.from_numpy(np.stack(masks))  # [N, H, W] uint8
        else:
            masks = torch.zeros((0, height, width), dtype=torch.uint8)
        size = torch.tensor([height, width], dtype=torch.int64)
        return {
            "boxes": box_convert(xywh, "xywh", "xyxy"),  # [N, 4] (x1, y1, x2, y2)
            "labels": torch.tensor(labels, dtype=torch.int64),  # [N]
            "masks": masks,  # [N, H, W]
            "image_id": image_id,
            "orig_size": size,
            "size": size.clone(),
        }

    def _decode(self, ann: dict, height: int, width: int) -> np.ndarray:
        """The mask `[H, W]`; a DatasetError if it does not decode or lies off its box."""
        where = f"annotations[{self._ann_index[ann['id']]}] (id {ann['id']})"
        mask, problems = decode_annotation(ann, height, width, where, self.json_path)
        raise_first_error(problems)
        return mask
