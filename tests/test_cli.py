"""The `blendmask-edu` command: the contract files of make-shapes, train, evaluate, predict."""

from __future__ import annotations

import json

import pytest

from blendmask_edu.cli import main


@pytest.fixture(scope="module")
def trained_run(shapes_small, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    code = main([
        "train", "--preset", "shapes", "--train", str(shapes_small), "--val", str(shapes_small),
        "--output-dir", str(run), "--max-iters", "2", "--batch-size", "2", "--device", "cpu",
    ])  # fmt: skip
    assert code == 0
    return run


def test_make_shapes_writes_coco_dataset(tmp_path, capsys):
    assert main(["make-shapes", str(tmp_path / "d"), "--num-images", "3", "--image-size", "64",
                 "--seed", "5"]) == 0  # fmt: skip
    data = json.loads((tmp_path / "d" / "annotations.json").read_text())
    assert len(data["images"]) == 3 and len(list((tmp_path / "d" / "images").iterdir())) == 3
    assert main(["make-shapes", str(tmp_path / "d"), "--num-images", "3"]) == 1  # exists
    assert "d" in capsys.readouterr().err


def test_train_writes_the_contract_files(trained_run):
    for name in ("config.json", "metrics.jsonl", "checkpoint_last.pt", "eval.json"):
        assert (trained_run / name).is_file(), name
    results = json.loads((trained_run / "eval.json").read_text())
    assert set(results) == {"bbox", "segm", "per_category"}
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(results["segm"])
    assert set(results["per_category"]) == {"circle", "square", "triangle", "ring", "star", "cross"}
    assert {"AP", "AP50", "APs", "APm", "APl"} <= set(results["per_category"]["ring"]["bbox"])


def test_evaluate_prints_and_writes_metrics(trained_run, shapes_small, tmp_path, capsys):
    out = tmp_path / "e.json"
    assert main(["evaluate", "--checkpoint", str(trained_run / "checkpoint_last.pt"),
                 "--data", str(shapes_small), "--output", str(out), "--device", "cpu"]) == 0  # fmt: skip
    written = json.loads(out.read_text())
    assert written == json.loads((trained_run / "eval.json").read_text())  # same model, data
    assert "segm" in capsys.readouterr().out


def test_predict_uses_the_checkpoint_categories(trained_run, shapes_small, tmp_path):
    images = sorted((shapes_small / "images").iterdir())[:2]
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(trained_run / "checkpoint_last.pt"),
                 *map(str, images), "--output-dir", str(out), "--score-thresh", "0.0",
                 "--device", "cpu"]) == 0  # fmt: skip
    preds = json.loads((out / "predictions.json").read_text())
    assert preds, "score threshold 0 keeps every detection"
    dataset_ids = {c["id"] for c in json.loads((shapes_small / "annotations.json").read_text())
                   ["categories"]}  # fmt: skip
    assert {p["category_id"] for p in preds} <= dataset_ids
    assert {"image_id", "bbox", "score", "segmentation"} <= set(preds[0])
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{i.stem}_pred.png" for i in images)


def test_train_reports_bad_data_clearly(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "annotations.json").write_text('{"images": []}')
    code = main(["train", "--train", str(bad), "--output-dir", str(tmp_path / "r"),
                 "--max-iters", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "annotations.json" in err


def test_predict_on_a_corrupt_image_names_the_file(trained_run, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    code = main(["predict", "--checkpoint", str(trained_run / "checkpoint_last.pt"), str(broken),
                 "--output-dir", str(tmp_path / "p"), "--device", "cpu"])  # fmt: skip
    assert code == 1 and "broken.png" in capsys.readouterr().err
