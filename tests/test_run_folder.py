"""A run folder under stress: SIGTERM, a second signal, a full disk, a second writer, and
`--resume` with settings that differ from the checkpoint's."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny import tiny_config

from blendmask_edu.engine import checkpoint as ckpt_mod
from blendmask_edu.engine import run_folder
from blendmask_edu.engine.checkpoint import load_checkpoint
from blendmask_edu.engine.preemption import TrainingStopped, stop_requests
from blendmask_edu.engine.resume_check import ResumeMismatchError
from blendmask_edu.engine.run_folder import (
    RunFolderLockedError,
    RunFolderWriteError,
    RunLock,
    append_jsonl,
    read_jsonl,
)
from blendmask_edu.engine.schedule import lr_factor
from blendmask_edu.engine.trainer import CHECKPOINT, Trainer
from blendmask_edu.viz.curves import read_metrics

TESTS = Path(__file__).parent
ROOT = TESTS.parent

TRAIN_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from tiny import tiny_config
from blendmask_edu.engine.trainer import Trainer
cfg = tiny_config(max_iters={iters}, checkpoint_period=100, log_period=1)
Trainer(cfg, {data!r}, None, {run!r}, progress=False).train(resume={resume})
"""


def _train_process(data, run, iters, resume=False) -> subprocess.Popen:
    code = TRAIN_SCRIPT.format(tests=str(TESTS), data=str(data), run=str(run), iters=iters,
                               resume=resume)  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip


def _logged_iters(run: Path) -> int:
    path = run / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_sigterm_saves_checkpoint_and_resume_matches_uninterrupted_run(shapes_small, tmp_path):
    # Enough iterations that the child cannot finish between our seeing its 2nd log line and
    # the signal, even when a loaded machine starves this polling process (with 6 it once did).
    iters = 30
    proc = _train_process(shapes_small, tmp_path / "run", iters)
    deadline = time.monotonic() + 1800  # a guard against a hang, not a timing check
    while _logged_iters(tmp_path / "run") < 2 and proc.poll() is None:
        assert time.monotonic() < deadline, "the training process never logged 2 iterations"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err  # 143: "ended by SIGTERM", not 0
    assert "stopped by SIGTERM" in err and "--resume" in err
    stopped_at = load_checkpoint(tmp_path / "run" / CHECKPOINT)["iteration"]
    assert 2 <= stopped_at < iters

    cfg = tiny_config(max_iters=iters, checkpoint_period=100, log_period=1)
    resumed = Trainer(cfg, shapes_small, None, tmp_path / "run", progress=False)
    resumed.train(resume=True)
    straight = Trainer(cfg, shapes_small, None, tmp_path / "straight", progress=False)
    straight.train()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert [r["iter"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == list(
        range(1, iters + 1)
    )


def test_second_signal_stops_at_once():
    with pytest.raises(TrainingStopped) as stopped, stop_requests() as request:
        os.kill(os.getpid(), signal.SIGTERM)
        assert request.signum == signal.SIGTERM  # the first one is only noted
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # never reached: the handler raises
        pytest.fail("the second SIGTERM did not stop")
    assert stopped.value.code == 143


def test_full_disk_keeps_previous_checkpoint_and_names_folder(shapes_small, tmp_path, monkeypatch):
    cfg = tiny_config(max_iters=4, checkpoint_period=2, log_period=1)
    real_save, calls = ckpt_mod.torch.save, []

    def save_until_disk_full(obj, f):
        calls.append(f)
        if len(calls) == 2:  # the checkpoint of iteration 4: half written, then ENOSPC
            Path(f).write_bytes(b"half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f)

    monkeypatch.setattr(ckpt_mod.torch, "save", save_until_disk_full)
    with pytest.raises(RunFolderWriteError) as err:
        Trainer(cfg, shapes_small, None, tmp_path, progress=False).train()
    message = str(err.value)
    assert str(tmp_path) in message and "the disk is full" in message and "MiB" in message
    assert "previous checkpoint checkpoint_last.pt is intact" in message
    assert load_checkpoint(tmp_path / CHECKPOINT)["iteration"] == 2
    assert not (tmp_path / (CHECKPOINT + ".tmp")).exists()


def test_full_disk_never_leaves_half_a_metrics_line(shapes_small, tmp_path, monkeypatch):
    cfg = tiny_config(max_iters=3, checkpoint_period=2, log_period=1)
    real_write = os.write

    def write_half_then_fail(fd, data):
        if b'"iter": 3' in data:  # the disk fills up in the middle of iteration 3's line
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(run_folder.os, "write", write_half_then_fail)
    with pytest.raises(RunFolderWriteError, match="metrics line"):
        Trainer(cfg, shapes_small, None, tmp_path, progress=False).train()
    monkeypatch.setattr(run_folder.os, "write", real_write)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iter"] for x in lines] == [1, 2]  # complete lines only
    Trainer(cfg, shapes_small, None, tmp_path, progress=False).train(resume=True)
    train_records, _ = read_metrics(tmp_path)  # what `plot` reads
    assert [r["iter"] for r in train_records] == [1, 2, 3]


def test_torn_last_line_is_skipped_by_resume_and_plot(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"iter": 1, "loss": 1.0})
    with open(path, "a") as f:
        f.write('{"iter": 2, "lo')  # a kill mid-write on a file system that split the line
    assert read_jsonl(path) == [{"iter": 1, "loss": 1.0}]
    assert [r["iter"] for r in read_metrics(tmp_path)[0]] == [1]


def test_second_writer_is_refused_and_stale_lock_does_not_block(shapes_small, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from blendmask_edu.engine.run_folder import "
         f"RunLock; RunLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); "
         "time.sleep(600)"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = tiny_config(max_iters=1)
        with pytest.raises(RunFolderLockedError, match=f"pid {holder.pid}") as err:
            Trainer(cfg, shapes_small, None, tmp_path, progress=False).train()
        assert str(tmp_path) in str(err.value) and "another live process" in str(err.value)
        assert not (tmp_path / "metrics.jsonl").exists()  # nothing of the live run touched
    finally:
        holder.kill()  # kill -9: the lock file stays behind, the kernel drops the lock
        holder.wait()
    assert (tmp_path / run_folder.LOCK_NAME).exists()
    Trainer(tiny_config(max_iters=1), shapes_small, None, tmp_path, progress=False).train()
    with RunLock(tmp_path):  # released at the end of train()
        pass


@pytest.fixture
def two_iter_run(shapes_small, tmp_path):
    cfg = tiny_config(max_iters=2, checkpoint_period=2)
    Trainer(cfg, shapes_small, None, tmp_path, progress=False).train()
    return tmp_path


def test_resume_with_longer_max_iters_recomputes_cosine(shapes_small, two_iter_run, capsys):
    cfg = tiny_config(max_iters=4, checkpoint_period=2)
    trainer = Trainer(cfg, shapes_small, None, two_iter_run, progress=False)
    trainer.resume()
    out = capsys.readouterr().out
    assert "train.max_iters: 2 (checkpoint) → 4 (now): the cosine schedule is recomputed" in out
    assert trainer.total_iters[0] == 4
    expected = cfg.optim.lr * lr_factor(2, cfg.optim, 4)  # iteration 2 of a 4-iteration cosine
    assert trainer.optimizer.param_groups[-1]["lr"] == pytest.approx(expected)
    trainer.train(resume=True)
    assert load_checkpoint(two_iter_run / CHECKPOINT)["iteration"] == 4


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda c: setattr(c.model, "mask_branch", "yolact"), "model.mask_branch"),
        (lambda c: setattr(c.model.blender, "K", 3), "model.blender.K"),
        (lambda c: setattr(c.train, "batch_size", 4), "train.batch_size"),
        (lambda c: setattr(c.optim, "lr", 0.1), "optim.lr"),
    ],
)
def test_resume_refuses_changes_that_cannot_apply(shapes_small, two_iter_run, change, named):
    cfg = tiny_config(max_iters=2, checkpoint_period=2)
    change(cfg)
    trainer = Trainer(cfg, shapes_small, None, two_iter_run, progress=False)
    with pytest.raises(ResumeMismatchError, match=named.replace(".", r"\.")):
        trainer.train(resume=True)
    assert json.loads((two_iter_run / "config.json").read_text())["model"]["mask_branch"] == (
        "blender"
    )  # the run folder still describes the checkpoint


def test_resume_refuses_other_training_data(shapes_small, two_iter_run, tmp_path_factory):
    from blendmask_edu.data.shapes import make_shapes

    other = make_shapes(tmp_path_factory.mktemp("other") / "d", 10, 64, seed=4)
    cfg = tiny_config(max_iters=2, checkpoint_period=2)
    with pytest.raises(ResumeMismatchError, match="training data: .*12 images.*10 images"):
        Trainer(cfg, other, None, two_iter_run, progress=False).train(resume=True)
