"""`train` warns when the objects do not fit the FPN levels, and names the setting to change."""

from __future__ import annotations

import torch
from tiny import tiny_config

from blendmask_edu.config import FCOSConfig, get_preset
from blendmask_edu.data.coco import CocoInstances
from blendmask_edu.engine.box_sizes import box_coverage, check_box_sizes
from blendmask_edu.engine.trainer import Trainer

SHAPES_FCOS = FCOSConfig(sizes_of_interest=(16, 32, 64, 128))  # strides 8 .. 128


def test_tiny_boxes_get_no_positive_location():
    # 4×4 boxes between the stride-8 locations (at 4, 12, 20, ...): no location inside them.
    boxes = torch.tensor([[5.0, 5.0, 9.0, 9.0], [21.0, 37.0, 25.0, 41.0], [40.0, 40.0, 72.0, 72.0]])
    cov = box_coverage([boxes], [(128, 128)], SHAPES_FCOS)
    assert (cov.num_boxes, cov.no_positive, cov.too_small, cov.thin) == (3, 2, 2, 0)
    assert cov.per_level == [3, 0, 0, 0, 0]  # half sizes 2, 2, 16: all ≤ 16 → P3


def test_a_thin_box_sent_to_a_coarse_level():
    # 200×12: its half long side (100) sends it to P6 (64, 128], whose locations are 64 px
    # apart (y = 32, 96, 160, ...): none lies in the box's rows 101..113.
    cov = box_coverage([torch.tensor([[20.0, 101.0, 220.0, 113.0]])], [(256, 256)], SHAPES_FCOS)
    assert cov.per_level == [0, 0, 0, 1, 0]
    assert (cov.no_positive, cov.too_small, cov.thin) == (1, 0, 1)


def test_warnings_name_the_setting(real_coco):
    dataset = CocoInstances(real_coco)
    cfg = get_preset("shapes")
    assert check_box_sizes(dataset, cfg.data, cfg.model.fcos) == []  # the sizes fit
    cfg.data.train_min_sizes = (24,)  # images shrunk to a 24-pixel short side
    (warning,) = check_box_sizes(dataset, cfg.data, cfg.model.fcos)
    assert "of 8 training boxes get no positive location" in warning
    assert "shorter than the finest stride (8 px)" in warning
    assert "DataConfig.train_min_sizes" in warning


def test_train_prints_the_warning(real_coco, tmp_path, capsys):
    cfg = tiny_config()
    cfg.data.train_min_sizes = (24,)
    Trainer(cfg, real_coco, None, tmp_path, progress=False)  # warns while setting up
    assert "warning: 50% of 8 training boxes get no positive location" in capsys.readouterr().out
