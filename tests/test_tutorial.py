"""The notebooks' helpers: describe, fast/full mode, the cache folder, made-once outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blendmask_edu import tutorial


def test_describe_prints_shape_dtype_and_range(capsys):
    tutorial.describe("x", torch.tensor([[1.0, -2.0], [3.0, 0.0]]))
    line = capsys.readouterr().out
    assert line.startswith("x ") and "[2, 2]" in line and "float32" in line
    assert "min -2" in line and "max 3" in line and "mean 0.5" in line


def test_describe_lists_arrays_and_empty_tensors(capsys):
    tutorial.describe("levels", [torch.zeros(1, 2), np.ones((3,), dtype=np.uint8)])
    tutorial.describe("none", torch.zeros(0, 4))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("levels[0]") and "[1, 2]" in lines[0]
    assert lines[1].startswith("levels[1]") and "uint8" in lines[1] and "max 1" in lines[1]
    assert "[0, 4]" in lines[2] and "(empty)" in lines[2]
    with pytest.raises(TypeError):
        tutorial.describe("bad", 3)


@pytest.mark.parametrize(
    "value, full", [("", False), ("0", False), ("no", False), ("1", True), ("yes", True)]
)
def test_full_mode_and_pick_follow_the_environment(monkeypatch, value, full):
    monkeypatch.setenv(tutorial.FULL_ENV, value)
    assert tutorial.full_mode() is full
    assert tutorial.pick("fast", "full") == ("full" if full else "fast")


def test_fast_config_trains_a_fixed_number_of_iterations(monkeypatch):
    monkeypatch.delenv(tutorial.FULL_ENV, raising=False)
    cfg = tutorial.tutorial_config()
    assert cfg.train.max_iters == tutorial.FAST_ITERS and cfg.train.device == "cpu"
    monkeypatch.setenv(tutorial.FULL_ENV, "1")
    full = tutorial.tutorial_config()
    assert full.train.time_budget_min == tutorial.shapes_preset().train.time_budget_min


def test_cache_dir_from_the_environment_or_the_checkout(monkeypatch, tmp_path):
    monkeypatch.setenv(tutorial.CACHE_ENV, str(tmp_path / "c"))
    assert tutorial.cache_dir() == tmp_path / "c"
    monkeypatch.delenv(tutorial.CACHE_ENV)
    assert tutorial.cache_dir().parts[-2:] == ("runs", "tutorial_cache")  # tests run in a clone


def test_make_once_builds_once_and_leaves_nothing_on_failure(tmp_path):
    calls = []

    def build(path):
        calls.append(path)
        path.mkdir()
        (path / "f").write_text("x")

    target = tmp_path / "thing"
    assert tutorial._make_once(target, build) == target
    assert tutorial._make_once(target, build) == target
    assert len(calls) == 1 and (target / "f").read_text() == "x"

    def broken(path):
        path.mkdir()
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        tutorial._make_once(tmp_path / "other", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]  # no partial folder left


def test_shared_detector_model_copies_and_freezes_all_but_the_mask_branch():
    from tiny import tiny_config

    from blendmask_edu.modeling.segmenter import InstanceSegmenter

    torch.manual_seed(0)
    detector = InstanceSegmenter(tiny_config("blender").model)
    model = tutorial.shared_detector_model("fcis", detector, tiny_config("blender"))
    assert type(model.mask_branch).__name__ == "FCISBranch"
    assert model.cfg.backbone.freeze_bn  # BatchNorm statistics stay the detector's
    ref = detector.state_dict()
    for name, p in model.named_parameters():
        shared = not name.startswith("mask_branch.")
        assert p.requires_grad is not shared, name
        if shared:
            assert torch.equal(p, ref[name]), name


def test_picture_shrinks_a_png_for_the_notebook(tmp_path):
    import io

    from PIL import Image

    path = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 1200, 3), np.uint8)).save(path)
    shown = tutorial.picture(path, width=400)
    with Image.open(io.BytesIO(shown.data)) as im:
        assert im.size == (400, 100) and im.mode == "P"  # 256 colours
    assert len(shown.data) < path.stat().st_size
