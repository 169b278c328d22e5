"""`predict` on images as users have them: grayscale, transparent (RGBA, palette), 16-bit,
CMYK and EXIF-rotated files, a 6000×4000 photo, empty files and non-images, a mixed folder.
Each is predicted as the picture a viewer shows, or refused by name while the rest are still
predicted (and the exit status is 1). A random-weight tiny model (score threshold 0: it
detects something everywhere) keeps each test to seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import write_model_checkpoint
from PIL import Image
from tiny import tiny_config

from blendmask_edu.cli import main
from blendmask_edu.engine import predict as predict_mod
from blendmask_edu.engine.predict import read_image
from blendmask_edu.modeling import segmenter

EXIF_ORIENTATION = 0x0112  # 274: 6 = "rotate 90° clockwise to display"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = tiny_config()
    cfg.model.fcos.max_detections = 5
    return write_model_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", cfg)


def picture(height: int = 48, width: int = 72) -> np.ndarray:
    """An asymmetric RGB picture [H, W, 3] uint8: coloured blocks on a gradient."""
    yy, xx = np.mgrid[:height, :width]
    rgb = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], -1).astype(np.uint8)
    rgb[8:24, 8:30] = (230, 40, 40)
    rgb[26:44, 40:66] = (40, 40, 230)
    return rgb


def predict(checkpoint, paths, out, capsys) -> tuple[int, list, str]:
    code = main(["predict", "--checkpoint", str(checkpoint), *map(str, paths), "--output-dir",
                 str(out), "--score-thresh", "0", "--device", "cpu"])  # fmt: skip
    preds = json.loads((out / "predictions.json").read_text())
    return code, preds, capsys.readouterr().err


def same_predictions(a: list, b: list) -> bool:
    strip = [[{k: v for k, v in e.items() if k != "file_name"} for e in p] for p in (a, b)]
    return len(a) > 0 and strip[0] == strip[1]


def test_grayscale_is_predicted_as_its_three_channel_copy(checkpoint, tmp_path, capsys):
    gray = picture()[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(np.repeat(gray[..., None], 3, -1)).save(tmp_path / "rgb.png")
    code, gray_preds, _ = predict(checkpoint, [tmp_path / "gray.png"], tmp_path / "a", capsys)
    assert code == 0
    _, rgb_preds, _ = predict(checkpoint, [tmp_path / "rgb.png"], tmp_path / "b", capsys)
    assert same_predictions(gray_preds, rgb_preds)


def test_sixteen_bit_png_reads_as_the_eight_bit_picture(checkpoint, tmp_path, capsys):
    gray = picture()[..., 1]
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # 16-bit PNG
    Image.fromarray(gray).save(tmp_path / "flat.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")  # Pillow really reads 16-bit samples
    assert torch.equal(read_image(tmp_path / "deep.png"), read_image(tmp_path / "flat.png"))
    assert read_image(tmp_path / "deep.png").max() > 0.9  # not clipped to 255/65535
    code, deep, _ = predict(checkpoint, [tmp_path / "deep.png"], tmp_path / "a", capsys)
    _, flat, _ = predict(checkpoint, [tmp_path / "flat.png"], tmp_path / "b", capsys)
    assert code == 0 and same_predictions(deep, flat)


def test_transparent_pixels_are_shown_over_white(checkpoint, tmp_path, capsys):
    rgb = picture()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :20] = 0  # a transparent band that stores black pixels
    rgba = np.concatenate([rgb, alpha[..., None]], -1)
    rgba[:, :20, :3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    over_white = rgb.copy()
    over_white[:, :20] = 255
    Image.fromarray(over_white).save(tmp_path / "white.png")
    palette = Image.fromarray(over_white).quantize(63)  # a palette PNG whose index of the
    band = np.asarray(palette).copy()  # band is transparent (its colour: black)
    band[:, :20] = 63
    pal = Image.fromarray(band, "P")
    pal.putpalette(palette.getpalette()[: 63 * 3] + [0, 0, 0])
    pal.save(tmp_path / "palette.png", transparency=63)

    white = read_image(tmp_path / "white.png")
    assert torch.equal(read_image(tmp_path / "rgba.png"), white)
    assert torch.equal(read_image(tmp_path / "palette.png")[:, :, :20], white[:, :, :20])
    code, a, _ = predict(checkpoint, [tmp_path / "rgba.png"], tmp_path / "a", capsys)
    _, b, _ = predict(checkpoint, [tmp_path / "white.png"], tmp_path / "b", capsys)
    assert code == 0 and same_predictions(a, b)
    code, _, err = predict(checkpoint, [tmp_path / "palette.png"], tmp_path / "c", capsys)
    assert code == 0, err


def test_cmyk_jpeg_reads_as_its_colours(checkpoint, tmp_path, capsys):
    rgb = picture()
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    with Image.open(tmp_path / "print.jpg") as im:
        assert im.mode == "CMYK"
    got = read_image(tmp_path / "print.jpg").permute(1, 2, 0).numpy()
    assert np.abs(got - rgb / 255.0).mean() < 0.05  # JPEG's loss, not inverted colours
    code, preds, err = predict(checkpoint, [tmp_path / "print.jpg"], tmp_path / "p", capsys)
    assert code == 0 and preds, err


def test_exif_rotated_jpeg_is_predicted_upright(checkpoint, tmp_path, capsys):
    upright = picture(48, 72)  # what the viewer shows: 72 wide, 48 high
    stored = np.rot90(upright, k=1).copy()  # the camera's pixels: 48 wide, 72 high
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # rotate 90° clockwise to display
    Image.fromarray(stored).save(tmp_path / "phone.jpg", quality=95, exif=exif)
    image = read_image(tmp_path / "phone.jpg")
    assert image.shape == (3, 48, 72)
    assert np.abs(image.permute(1, 2, 0).numpy() - upright / 255.0).mean() < 0.05
    code, preds, err = predict(checkpoint, [tmp_path / "phone.jpg"], tmp_path / "p", capsys)
    assert code == 0 and preds, err
    for p in preds:  # boxes and masks in the upright picture's coordinates
        x, y, w, h = p["bbox"]
        assert 0 <= x <= x + w <= 72 + 1e-3 and 0 <= y <= y + h <= 48 + 1e-3
        assert p["segmentation"]["size"] == [48, 72]
    with Image.open(tmp_path / "p" / "phone_pred.png") as overlay:
        assert overlay.width > overlay.height  # drawn upright too


def test_a_large_photo_pastes_one_full_size_mask_at_a_time(
    checkpoint, tmp_path, capsys, monkeypatch
):
    """A 6000×4000 photo: one float mask at full size is 96 MB, so pasting all detections at
    once (5 here, up to 100 in a real model) would be what blows the memory."""
    photo = Image.new("RGB", (6000, 4000), (120, 160, 200))
    photo.paste((200, 60, 40), (1000, 1000, 3000, 2500))
    photo.save(tmp_path / "photo.jpg", quality=80)
    pasted = []
    original = segmenter.paste_masks

    def recording(masks, boxes, size):
        pasted.append((len(masks), tuple(size)))
        return original(masks, boxes, size)

    monkeypatch.setattr(segmenter, "paste_masks", recording)
    code, preds, err = predict(checkpoint, [tmp_path / "photo.jpg"], tmp_path / "p", capsys)
    assert code == 0 and len(preds) == 5, err
    assert [n for n, size in pasted if size == (4000, 6000)] == [1] * 5  # one at a time
    assert all(p["segmentation"]["size"] == [4000, 6000] for p in preds)
    assert all(0 <= p["bbox"][0] <= 6000 and 0 <= p["bbox"][1] <= 4000 for p in preds)
    with Image.open(tmp_path / "p" / "photo_pred.png") as overlay:  # capped, not 12000 wide
        assert max(overlay.size) <= 2 * predict_mod.OVERLAY_MAX_SIDE


def test_a_mixed_folder_predicts_the_images_and_names_the_rest(checkpoint, tmp_path, capsys):
    folder = tmp_path / "inbox"
    folder.mkdir()
    Image.fromarray(picture()).save(folder / "a.png")
    Image.fromarray(picture()[..., 0]).save(folder / "b.jpg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not a picture\n")
    (folder / "truncated.png").write_bytes((folder / "a.png").read_bytes()[:100])
    (folder / ".DS_Store").write_bytes(b"\0\0")  # hidden: not an input
    (folder / "sub").mkdir()  # not entered
    code, preds, err = predict(checkpoint, [folder], tmp_path / "p", capsys)
    assert code == 1
    assert "empty.png: empty file (0 bytes)" in err
    assert "notes.txt: not an image file" in err
    assert "truncated.png" in err
    assert "3 of 5 files could not be read" in err
    # ids are positions in the folder's sorted file list: a.png 0, b.jpg 1
    assert {(p["file_name"], p["image_id"]) for p in preds} == {("a.png", 0), ("b.jpg", 1)}
    assert sorted(p.name for p in (tmp_path / "p").glob("*.png")) == ["a_pred.png", "b_pred.png"]


def test_a_lone_bad_file_fails_with_its_name(checkpoint, tmp_path, capsys):
    (tmp_path / "x.jpg").write_bytes(b"")
    code, preds, err = predict(checkpoint, [tmp_path / "x.jpg"], tmp_path / "p", capsys)
    assert code == 1 and preds == [] and "x.jpg: empty file" in err


def test_the_summary_line_counts_overlays_in_words(checkpoint, tmp_path, capsys):
    for name in ("a.png", "b.png"):
        Image.fromarray(picture()).save(tmp_path / name)
    main(["predict", "--checkpoint", str(checkpoint), str(tmp_path / "a.png"), "--output-dir",
          str(tmp_path / "one"), "--score-thresh", "0", "--device", "cpu"])  # fmt: skip
    assert capsys.readouterr().out.rstrip().endswith("and 1 overlay PNG")
    main(["predict", "--checkpoint", str(checkpoint), str(tmp_path / "a.png"),
          str(tmp_path / "b.png"), "--output-dir", str(tmp_path / "two"), "--score-thresh", "0",
          "--device", "cpu"])  # fmt: skip
    assert capsys.readouterr().out.rstrip().endswith("and 2 overlay PNGs")
