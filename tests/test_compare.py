"""`blendmask-edu compare`: the four report files, one row per branch, resuming after a kill,
sweeps of a blender knob, and clear refusals of unknown branches and knobs."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from blendmask_edu.cli import main
from blendmask_edu.engine import compare as compare_mod
from blendmask_edu.engine.compare import parse_sweep, plan_rows, results_markdown
from blendmask_edu.engine.trainer import Trainer

FILES = ("results.json", "results.md", "comparison.png", "qualitative.png")


@pytest.fixture(scope="module")
def tiny_compare(shapes_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    code = main([
        "compare", "--preset", "shapes", "--train", str(shapes_small), "--val", str(shapes_small),
        "--output-dir", str(out), "--max-iters", "2", "--device", "cpu",
    ])  # fmt: skip
    assert code == 0
    return out


def test_compare_writes_four_files_with_one_row_per_branch(tiny_compare):
    for name in FILES:
        assert (tiny_compare / name).stat().st_size > 0, name
    results = json.loads((tiny_compare / "results.json").read_text())
    assert [r["row"] for r in results["rows"]] == ["blender", "yolact", "fcis", "roi"]
    for row in results["rows"]:
        assert row["iterations"]["values"] == [2]
        assert 0.0 <= row["mask_AP_gt_boxes"]["mean"] <= 1.0
        assert row["mask_branch_params"]["mean"] > 0
        assert row["total_params"]["mean"] > row["mask_branch_params"]["mean"]
        assert row["inference_ms_per_image"]["mean"] > 0
        assert (tiny_compare / "runs" / f"{row['branch']}_s0" / "eval.json").is_file()
    table = (tiny_compare / "results.md").read_text().splitlines()
    assert "mask AP, GT boxes" in table[0]
    assert [line.split("|")[1].strip() for line in table[2:6]] == [
        "blender", "yolact", "fcis", "roi"
    ]  # fmt: skip
    # Different branches have different mask heads, the same detector.
    params = {r["row"]: r["mask_branch_params"]["mean"] for r in results["rows"]}
    assert len(set(params.values())) == 4


def test_rerunning_a_finished_compare_trains_nothing(tiny_compare, shapes_small, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(Trainer, "step", fail)
    before = (tiny_compare / "runs" / "blender_s0" / "checkpoint_last.pt").stat().st_mtime_ns
    compare_mod.run_compare(
        "shapes",
        shapes_small,
        shapes_small,
        tiny_compare,
        max_iters=2,
        device="cpu",
        progress=False,
    )
    assert (
        tiny_compare / "runs" / "blender_s0" / "checkpoint_last.pt"
    ).stat().st_mtime_ns == before


def test_killed_compare_resumes_and_skips_finished_runs(shapes_small, tmp_path, monkeypatch):
    steps = []
    real_step = Trainer.step

    def counting_step(self, images, targets):
        it = self.scheduler.last_epoch  # the number of steps taken so far = the iteration
        steps.append((self.out.name, it))
        if self.out.name == "yolact_s0" and it == 1 and not os.environ.get("NO_KILL"):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the second run
        return real_step(self, images, targets)

    monkeypatch.setattr(Trainer, "step", counting_step)
    args = dict(branches=["blender", "yolact"], max_iters=3, device="cpu", progress=False)
    with pytest.raises(KeyboardInterrupt):
        compare_mod.run_compare("shapes", shapes_small, shapes_small, tmp_path, **args)
    assert steps == [("blender_s0", 0), ("blender_s0", 1), ("blender_s0", 2),
                     ("yolact_s0", 0), ("yolact_s0", 1)]  # fmt: skip
    yolact = tmp_path / "runs" / "yolact_s0"
    assert not (yolact / "eval.json").exists()
    ckpt = torch.load(yolact / "checkpoint_last.pt", weights_only=True)
    assert ckpt["iteration"] == 2  # the interrupted step finished and was saved

    steps.clear()
    monkeypatch.setenv("NO_KILL", "1")
    compare_mod.run_compare("shapes", shapes_small, shapes_small, tmp_path, **args)
    assert steps == [("yolact_s0", 2)]  # blender skipped, yolact resumed at its last step
    for name in FILES:
        assert (tmp_path / name).is_file(), name


def test_sweep_rows_and_run_names():
    rows = plan_rows(["blender"], "K=1,2,4,8")
    assert [r.label for r in rows] == ["K=1", "K=2", "K=4", "K=8"]
    assert rows[0].overrides == {"K": 1} and rows[0].run_name(2) == "blender_K-1_s2"
    assert parse_sweep("interpolation=bilinear,nearest") == (
        "interpolation",
        ["bilinear", "nearest"],
    )
    cfg = compare_mod.run_config("shapes", rows[3], seed=1, max_iters=5, time_budget_min=None,
                                 device="cpu")  # fmt: skip
    assert cfg.model.blender.K == 8 and cfg.model.mask_branch == "blender"
    assert cfg.train.max_iters == 5 and cfg.train.time_budget_min == 0 and cfg.train.seed == 1


def test_results_markdown_shows_mean_and_std_over_seeds():
    stat = {"mean": 0.5, "std": 0.02, "values": [0.48, 0.5, 0.52]}
    row = {key: stat for key, _, _ in compare_mod.COLUMNS}
    table = results_markdown({
        "preset": "shapes", "seeds": [0, 1, 2], "budget": {"max_iters": 10, "time_budget_min": None},
        "rows": [{"row": "blender", **row}],
    })  # fmt: skip
    assert "| blender | 0.500 ± 0.020 |" in table
    assert "10 iterations" in table
    assert "--set" not in table
    changed = results_markdown({
        "preset": "shapes", "seeds": [0], "budget": {"max_iters": 10, "time_budget_min": None},
        "rows": [{"row": "blender", **row}], "set": ["optim.top_lr_mult=0.1"],
    })  # fmt: skip
    assert "`shapes` preset, changed for every row by `--set`: `optim.top_lr_mult=0.1`;" in changed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--mask-branches", "blender,solo"], "choose from blender, yolact, fcis, roi"),
        (["--sweep", "Q=1,2"], "KNOB one of K, M, R, interpolation"),
        (["--sweep", "K=two"], "K takes int values"),
        (["--sweep", "interpolation=bicubic"], "'bilinear' or 'nearest'"),
        (["--mask-branches", "yolact", "--sweep", "K=1,2"], "--mask-branches blender"),
        (["--seeds", "0,x"], "integers separated by commas"),
    ],
)
def test_compare_refuses_bad_arguments_with_the_choices(argv, message, tmp_path, capsys):
    base = ["compare", "--train", str(tmp_path), "--val", str(tmp_path), "--output-dir",
            str(tmp_path / "out")]  # fmt: skip
    assert main(base + argv) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_train_refuses_an_unknown_mask_branch_with_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--train", str(tmp_path), "--output-dir", str(tmp_path), "--mask-branch",
              "solo"])  # fmt: skip
    assert "choose from 'blender', 'yolact', 'fcis', 'roi', 'none'" in capsys.readouterr().err
