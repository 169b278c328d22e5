"""Does the preset's input size fit the dataset's images? (`train` warns when it does not.)

A preset fixes the size images are resized to (`DataConfig.train_min_sizes`, short side) and
the flips. The `shapes` preset resizes to a 128-px short side and flips upside down half the
time: right for the 128×128 shapes, wrong for photos, which it shrinks 4–8× (small objects
vanish) and shows upside down. The sizes are read from the COCO file (no image is decoded).
"""

from __future__ import annotations

import statistics

from ..config import DataConfig

SCALE_TOLERANCE = 1.5  # warn when the median image is resized by more than this factor (either way)


def image_short_sides(dataset, max_images: int = 200) -> list[int]:
    """Short sides of up to `max_images` images of a CocoInstances set (evenly spread)."""
    ids = dataset.image_ids[:: max(1, len(dataset.image_ids) // max_images)]
    return [min(dataset.coco.imgs[i]["height"], dataset.coco.imgs[i]["width"]) for i in ids]


def scale_warnings(short_sides: list[int], data_cfg: DataConfig) -> list[str]:
    """A warning when training resizes the typical image by more than ×1.5 or below ÷1.5."""
    if not short_sides:
        return []
    median = statistics.median(short_sides)
    target = statistics.median(data_cfg.train_min_sizes)
    factor = target / median
    if 1 / SCALE_TOLERANCE <= factor <= SCALE_TOLERANCE:
        return []
    flips = (
        f"; data.vflip_prob = {data_cfg.vflip_prob} also shows them upside down"
        if data_cfg.vflip_prob > 0
        else ""
    )
    return [
        f"the images have a short side of about {median:.0f} px, but this preset trains at "
        f"{tuple(data_cfg.train_min_sizes)} px (×{factor:.2g}){flips}. Unless that is what "
        "you want: --preset photo for photos (short side 512–640, horizontal flips only), "
        "or choose the size with --image-size S (see docs/own-data.md)"
    ]


def check_image_scale(dataset, data_cfg: DataConfig) -> list[str]:
    """What `train` calls: the warnings for a CocoInstances training set."""
    return scale_warnings(image_short_sides(dataset), data_cfg)
