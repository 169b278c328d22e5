"""The shared training loop: resume after a kill, NaN guard, atomic checkpoints, outputs."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import tiny_config

from blendmask_edu.engine import checkpoint as ckpt_mod
from blendmask_edu.engine.checkpoint import load_checkpoint, save_checkpoint
from blendmask_edu.engine.run_folder import RunFolderWriteError
from blendmask_edu.engine.sampler import InfiniteBatchSampler
from blendmask_edu.engine.schedule import lr_factor
from blendmask_edu.engine.trainer import CHECKPOINT, NonFiniteLossError, Trainer


class Killed(Exception):
    pass


def _params(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resume_after_kill_matches_uninterrupted_run(shapes_small, tmp_path, monkeypatch):
    cfg = tiny_config(max_iters=6, checkpoint_period=3)
    cfg.data.hflip_prob = 0.5  # random augmentation must replay identically after resume
    # A cap on the mask-loss positives draws `torch.randperm` from the global torch RNG: exact
    # only if the RNG state is restored after the DataLoader iterator draws its base seed.
    cfg.model.blender.max_instances_for_loss = 2
    full = Trainer(cfg, shapes_small, None, tmp_path / "full", progress=False)
    full.train()
    expected = _params(full.model)

    # Kill the second run inside iteration 5 (after the checkpoint written at iteration 3).
    original_step = Trainer.step

    def step_then_die(self, images, targets):
        if self.scheduler.last_epoch == 4:  # the number of steps taken so far = the iteration
            raise Killed
        return original_step(self, images, targets)

    monkeypatch.setattr(Trainer, "step", step_then_die)
    with pytest.raises(Killed):
        Trainer(cfg, shapes_small, None, tmp_path / "killed", progress=False).train()
    assert load_checkpoint(tmp_path / "killed" / CHECKPOINT)["iteration"] == 3
    monkeypatch.setattr(Trainer, "step", original_step)

    resumed = Trainer(cfg, shapes_small, None, tmp_path / "killed", progress=False)
    resumed.train(resume=True)
    got = _params(resumed.model)
    assert got.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0, msg=k)
    # the log has each iteration once, in order
    iters = [
        json.loads(x)["iter"]
        for x in (tmp_path / "killed" / "metrics.jsonl").open()
        if "eval" not in x
    ]
    assert iters == [1, 2, 3, 4, 5, 6]


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(
    shapes_small, tmp_path, monkeypatch
):
    cfg = tiny_config(max_iters=8, checkpoint_period=2)
    trainer = Trainer(cfg, shapes_small, None, tmp_path, progress=False)
    forward = trainer.model.forward
    calls = {"n": 0}

    def poisoned(images, targets=None, orig_sizes=None):
        losses = forward(images, targets, orig_sizes)
        calls["n"] += 1
        if calls["n"] == 4:  # iteration index 3
            losses["loss_box"] = losses["loss_box"] * float("nan")
        return losses

    monkeypatch.setattr(trainer.model, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"iteration 3: loss term 'loss_box'"):
        trainer.train()
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    assert ckpt["iteration"] == 2  # the good checkpoint from before the NaN
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint({"iteration": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(RunFolderWriteError, match="previous checkpoint c.pt is intact"):
        save_checkpoint({"iteration": 2, "w": torch.zeros(3)}, path)
    assert load_checkpoint(path)["iteration"] == 1
    assert not (tmp_path / "c.pt.tmp").exists()  # the half-written file is removed


def test_training_writes_contract_files(shapes_small, tmp_path):
    cfg = tiny_config(max_iters=2, checkpoint_period=100, log_period=1)
    results = Trainer(cfg, shapes_small, shapes_small, tmp_path, progress=False).train()
    assert set(results) == {"bbox", "segm", "per_category"} and "AP" in results["segm"]
    assert json.loads((tmp_path / "eval.json").read_text()) == results
    assert json.loads((tmp_path / "config.json").read_text())["train"]["max_iters"] == 2
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").open()]
    first = rows[0]
    for key in ("iter", "loss", "loss_cls", "loss_mask", "lr", "sec_per_iter", "images_per_s"):
        assert key in first
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)  # weights_only=True inside
    assert ckpt["iteration"] == 2 and [c["name"] for c in ckpt["categories"]][0] == "circle"


def test_sampler_splits_global_batch_across_ranks_and_resumes():
    whole = InfiniteBatchSampler(10, 4, seed=1)
    r0 = InfiniteBatchSampler(10, 4, seed=1, rank=0, world_size=2)
    r1 = InfiniteBatchSampler(10, 4, seed=1, rank=1, world_size=2)
    for it in range(7):  # crosses epoch boundaries (10 is not a multiple of 4)
        assert r0.batch(it) + r1.batch(it) == whole.batch(it)
    late = iter(InfiniteBatchSampler(10, 4, seed=1, start_iter=5))
    assert next(late) == whole.batch(5)
    epoch0 = [i for it in range(5) for i, _ in whole.batch(it)][:10]
    assert sorted(epoch0) == list(range(10))  # each image once per epoch


def test_lr_schedule_warmup_step_and_cosine():
    from blendmask_edu.config import OptimConfig

    step = OptimConfig(
        schedule="step", steps=(10, 20), gamma=0.1, warmup_iters=4, warmup_factor=0.2
    )
    assert lr_factor(0, step, 30) == pytest.approx(0.2)
    assert lr_factor(2, step, 30) == pytest.approx(0.6)
    assert lr_factor(9, step, 30) == 1.0
    assert lr_factor(10, step, 30) == pytest.approx(0.1)
    assert lr_factor(25, step, 30) == pytest.approx(0.01)
    cos = OptimConfig(schedule="cosine", warmup_iters=0)
    assert lr_factor(0, cos, 100) == 1.0
    assert lr_factor(50, cos, 100) == pytest.approx(0.5)
    assert lr_factor(100, cos, 100) == pytest.approx(0.0)


def test_optimizer_groups_give_the_body_and_the_top_layer_their_own_learning_rates():
    from blendmask_edu.engine.schedule import build_optimizer
    from blendmask_edu.modeling.segmenter import InstanceSegmenter

    cfg = tiny_config()
    model = InstanceSegmenter(cfg.model)
    body = {id(p) for p in model.backbone.body.parameters()}
    top = {id(p) for p in model.mask_branch.top.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]

    def lr_of(optimizer):
        """id(parameter) → (lr, weight decay); fails if a parameter is in two groups."""
        seen = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                assert id(p) not in seen
                seen[id(p)] = (group["lr"], group["weight_decay"])
        return seen

    cfg.optim.backbone_lr_mult, cfg.optim.top_lr_mult = 0.5, 0.1
    seen = lr_of(build_optimizer(model, cfg.optim))
    assert len(seen) == len(trainable)
    for p in trainable:
        mult = 0.5 if id(p) in body else 0.1 if id(p) in top else 1.0
        decay = cfg.optim.weight_decay if p.ndim > 1 else 0.0
        assert seen[id(p)] == (pytest.approx(cfg.optim.lr * mult), decay)
    # The default factor 1 keeps the layout without top-layer groups (older checkpoints load).
    cfg.optim.top_lr_mult = 1.0
    for group in build_optimizer(model, cfg.optim).param_groups:
        ids = {id(p) for p in group["params"]}
        assert not ids & top or ids - top - body  # the top layer shares the head's groups
