"""Checkpoints across devices and versions: a CUDA run's checkpoint evaluates, predicts and
resumes on a CPU-only machine; a checkpoint whose config has a field added or removed loads
with a note naming it, or stops with a clear error naming it (never a traceback).

A CUDA checkpoint without a GPU: `torch.save` records each tensor's device by asking
`torch.serialization.location_tag`; answering "cuda:0" writes the file a CUDA run writes
(the same bytes but that tag). The test checks that the simulation is real: a plain
`torch.load` of that file fails on a machine without CUDA, as a real CUDA checkpoint does.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import write_model_checkpoint
from tiny import tiny_config

from blendmask_edu.cli import main
from blendmask_edu.config import Config
from blendmask_edu.engine.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    restore_scaler,
    save_checkpoint,
)
from blendmask_edu.engine.trainer import CHECKPOINT, Trainer


def resave_as_if_on_cuda(path, monkeypatch) -> None:
    """Rewrite the checkpoint at `path` with every tensor tagged "cuda:0"; a training
    checkpoint also gets what a CUDA run with mixed precision adds: the CUDA generator's state
    (16 bytes per GPU) and the loss scaler's state."""
    state = load_checkpoint(path)
    if "rng" in state:
        state["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)]
        state["scaler"] = {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                           "growth_interval": 2000, "_growth_tracker": 5}  # fmt: skip
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        save_checkpoint(state, path)
    if not torch.cuda.is_available():  # the file now claims CUDA, like a GPU run's
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def cpu_run(shapes_small, tmp_path_factory):
    """A 2-iteration CPU run (its checkpoint on the CPU)."""
    run = tmp_path_factory.mktemp("cpu_run")
    cfg = tiny_config(max_iters=2, checkpoint_period=2)
    Trainer(cfg, shapes_small, None, run, progress=False).train()
    return run


def test_cuda_checkpoint_evaluates_and_predicts_on_a_cpu(
    cpu_run, shapes_small, tmp_path, monkeypatch, capsys
):
    cpu_metrics = tmp_path / "cpu.json"
    args = ["--data", str(shapes_small), "--device", "cpu"]
    assert main(["evaluate", "--checkpoint", str(cpu_run / CHECKPOINT), *args,
                 "--output", str(cpu_metrics)]) == 0  # fmt: skip
    cuda_ckpt = tmp_path / "cuda.pt"
    cuda_ckpt.write_bytes((cpu_run / CHECKPOINT).read_bytes())
    resave_as_if_on_cuda(cuda_ckpt, monkeypatch)

    from_cuda = tmp_path / "from_cuda.json"
    code = main(["evaluate", "--checkpoint", str(cuda_ckpt), *args, "--output", str(from_cuda)])
    assert code == 0, capsys.readouterr().err
    assert json.loads(from_cuda.read_text()) == json.loads(cpu_metrics.read_text())

    image = sorted((shapes_small / "images").iterdir())[0]
    code = main(["predict", "--checkpoint", str(cuda_ckpt), str(image), "--output-dir",
                 str(tmp_path / "pred"), "--device", "cpu", "--score-thresh", "0"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "pred" / "predictions.json").read_text())


def test_cuda_checkpoint_resumes_on_a_cpu(shapes_small, tmp_path, monkeypatch):
    cfg = tiny_config(max_iters=4, checkpoint_period=2)
    first = Trainer(cfg, shapes_small, None, tmp_path, progress=False)
    original_step = Trainer.step

    def stop_after_two(self, images, targets):
        if self.scheduler.last_epoch == 2:
            raise KeyboardInterrupt  # killed in iteration 3, after the checkpoint at 2
        return original_step(self, images, targets)

    monkeypatch.setattr(Trainer, "step", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        first.train()
    monkeypatch.setattr(Trainer, "step", original_step)
    saved = load_checkpoint(tmp_path / CHECKPOINT)
    resave_as_if_on_cuda(tmp_path / CHECKPOINT, monkeypatch)

    trainer = Trainer(tiny_config(max_iters=4, checkpoint_period=2), shapes_small, None,
                      tmp_path, progress=False)  # fmt: skip
    trainer.resume()
    assert trainer.start_iter == 2
    for name, value in trainer.model.state_dict().items():
        assert value.device.type == "cpu" and torch.equal(value, saved["model"][name]), name
    moments = [v for s in trainer.optimizer.state.values() for v in s.values() if v.dim() > 0]
    assert moments and all(v.device.type == "cpu" for v in moments)  # AdamW's exp_avg, ...
    for got, want in zip(trainer.optimizer.state.values(), saved["optimizer"]["state"].values()):
        assert all(torch.equal(got[k].cpu(), want[k]) for k in want)
    trainer.train(resume=True)  # and it trains on to the end
    assert load_checkpoint(tmp_path / CHECKPOINT)["iteration"] == 4


def test_optimizer_state_follows_its_parameters_device():
    """What resuming on another device relies on: the checkpoint's optimizer state (loaded on
    the CPU) is cast to each parameter's device when loaded. Shown with parameters on the
    "meta" device, the one device besides the CPU that every machine has."""
    cpu = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(cpu.parameters())
    cpu(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    elsewhere = torch.nn.Linear(3, 2, device="meta")
    moved = torch.optim.AdamW(elsewhere.parameters())
    moved.load_state_dict(optimizer.state_dict())
    for state in moved.state.values():
        assert state["exp_avg"].device.type == "meta" and state["exp_avg_sq"].device.type == "meta"


def test_a_cpu_checkpoint_resumes_with_mixed_precision():
    """A CPU run saves an empty loss-scaler state; a CUDA run with AMP starts its scaler afresh
    (with a note) instead of failing. A CPU GradScaler stands in for the CUDA one."""
    enabled = torch.amp.GradScaler("cpu", enabled=True)
    assert "afresh" in restore_scaler(enabled, {})
    assert enabled.get_scale() == 2.0**16  # the initial scale
    state = {**enabled.state_dict(), "scale": 8.0}
    assert restore_scaler(enabled, state) is None and enabled.get_scale() == 8.0
    assert restore_scaler(torch.amp.GradScaler("cpu", enabled=False), state) is None


# -- another version's config ------------------------------------------------------------


def test_config_of_another_version_loads_with_a_note_naming_each_field(tmp_path, capsys):
    cfg = tiny_config()
    config = cfg.to_dict()
    config["model"]["blender"]["future_knob"] = 3  # a field a newer version added
    del config["train"]["amp"]  # a field an older version did not have
    path = write_model_checkpoint(tmp_path / "c.pt", cfg, config=config)
    model, loaded, _ = model_from_checkpoint(path)
    out = capsys.readouterr().out
    assert "model.blender.future_knob = 3 is unknown to this version: ignored" in out
    assert "train.amp is missing: its default True used" in out
    assert loaded.model.blender == cfg.model.blender
    expected = write_model_checkpoint(tmp_path / "same.pt", cfg)  # same seed, same weights
    for name, value in model_from_checkpoint(expected)[0].state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_a_note_names_the_checkpoint_relative_to_the_current_folder(tmp_path, capsys, monkeypatch):
    cfg = tiny_config()
    config = cfg.to_dict()
    config["model"]["blender"]["future_knob"] = 3
    (tmp_path / "run").mkdir()
    path = write_model_checkpoint(tmp_path / "run" / "c.pt", cfg, config=config)
    monkeypatch.chdir(tmp_path)
    model_from_checkpoint(path.resolve())  # given as an absolute path
    out = capsys.readouterr().out
    assert "note: run/c.pt: config field model.blender.future_knob" in out
    assert str(tmp_path) not in out


def test_config_field_that_changes_the_weights_is_a_clear_error(tmp_path, shapes_small, capsys):
    cfg = tiny_config()
    cfg.model.blender.bottom_c2 = True  # the bottom module also reads C2: more weights
    config = cfg.to_dict()
    del config["model"]["blender"]["bottom_c2"]  # read by a version that defaults it to False
    path = write_model_checkpoint(tmp_path / "c.pt", cfg, config=config)
    code = main(["evaluate", "--checkpoint", str(path), "--data", str(shapes_small),
                 "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "weights do not fit" in err and "unexpected" in err
    assert "model.blender.bottom_c2 is missing: its default False used" in err


def test_config_files_stay_strict_and_name_the_unknown_field():
    with pytest.raises(ValueError, match=r"model\.blender\.K_typo"):
        Config.from_dict({"model": {"blender": {"K_typo": 4}}})
    notes = []
    Config.from_dict({"model": {"blender": {"K_typo": 4}}}, notes)
    assert any("model.blender.K_typo" in n for n in notes)


def test_a_file_that_is_not_a_model_checkpoint_is_named(tmp_path, capsys):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, path)  # a bare state_dict, say
    code = main(["evaluate", "--checkpoint", str(path), "--data", str(tmp_path), "--device", "cpu"])
    assert (
        code == 1 and "weights.pt: not a blendmask_edu model checkpoint" in capsys.readouterr().err
    )
