# %% [markdown]
# # 07 · The training loop: logs, checkpoints, resume, AMP, DDP, time budget
#
# Every model of the library — the detector alone, BlendMask, and the other mask branches —
# is trained by the same loop, `blendmask_edu.engine.trainer.Trainer`, which the
# `blendmask-edu train` command runs. This notebook runs it for a few iterations at a time
# and opens everything it writes.
#
# **What you will learn**
# - the loop in ten lines, and what a run folder holds (`metrics.jsonl`, checkpoints,
#   `config.json`, `eval.json`);
# - how to read the curves;
# - why a killed run resumes *exactly* (`--resume`), shown by killing one;
# - mixed precision (AMP) on a GPU, data-parallel training on several processes with
#   `torchrun`, and how a time budget fixes the number of iterations.

# %%
import inspect
import json
import os
import tempfile
from pathlib import Path

import torch

from blendmask_edu.config import shapes_preset
from blendmask_edu.engine.checkpoint import load_checkpoint
from blendmask_edu.engine.trainer import Trainer
from blendmask_edu.tutorial import cached_data, cached_model, describe, shown, val_dataset
from blendmask_edu.viz.curves import centerness_floor, plot_curves, read_metrics

train_dir, val_dir = cached_data()
scratch = Path(tempfile.mkdtemp(prefix="blendmask_07_"))
os.chdir(scratch)  # the runs of this notebook go here, and print short relative paths
work = Path(".")
print("runs of this notebook go to", shown(scratch))

# %% [markdown]
# ## 1. The loop
#
# ```
# for it in range(start, total):
#     images, targets = next(batches)          # InfiniteBatchSampler: resumable, DDP-split
#     losses = model(images, targets)          # dict of loss terms (autocast on CUDA)
#     backward (GradScaler on CUDA) → clip → optimizer.step → scheduler.step
#     with a time budget, every 10 iterations: refit the total number of iterations
#     every log_period or checkpoint_period, after the step: check that the loss terms of
#         all steps since the last check are finite (else stop), then
#     every log_period: log a line to metrics.jsonl
#     every checkpoint_period: checkpoint_last.pt (atomic); every eval_period: evaluate
#     if SIGTERM or Ctrl-C arrived during the step: checkpoint this iteration (its log line
#     only if it falls on a log period), stop
# final evaluation (val losses + COCO AP) → eval.json
# ```
#
# One iteration is `Trainer.step`; it is short enough to read whole. It returns the loss
# terms as *tensors*: reading a number out of a GPU tensor (`.item()`) makes the CPU wait
# for the GPU, so the loop looks at the values only every `log_period` (or
# `checkpoint_period`) steps, *after* those steps have run — then it checks that the terms
# of every step since the last check are finite. A NaN stops the run before the next
# checkpoint is written, so the last checkpoint is one from before the NaN; the steps
# between it and the check did run (on bad numbers) and are lost.

# %%
print(inspect.getsource(Trainer.step))

# %% [markdown]
# ## 2. A short run
#
# The `shapes` preset, made small enough to watch: 4 images a batch, 8 iterations, a
# log line every 2 and a checkpoint every 4. No val set, so no evaluation (the cached
# model of the other notebooks has one).

# %%
def small_config(max_iters=8):
    cfg = shapes_preset()
    cfg.train.batch_size = 4
    cfg.train.max_iters = max_iters
    cfg.train.time_budget_min = 0.0
    cfg.train.log_period = 2
    cfg.train.checkpoint_period = 4
    cfg.train.device = "cpu"
    cfg.optim.warmup_iters = 4
    return cfg


torch.manual_seed(0)
straight = Trainer(small_config(), train_dir, None, work / "straight", progress=False)
straight.train()
print(sorted(p.name for p in (work / "straight").iterdir()))
lines = (work / "straight" / "metrics.jsonl").read_text().splitlines()
print(f"{len(lines)} lines in metrics.jsonl; the first:\n{lines[0]}")

# %% [markdown]
# One JSON object per logged step: every loss term, the total, the learning rate, the time
# of that step and the images per second. An evaluation adds a line with the *validation
# losses* (the same terms on the val set, model in eval mode, no gradients) and the COCO AP.
# Plain JSON lines are easy to read from anything: `read_metrics` splits training lines from
# evaluation lines, `plot_curves` draws them (`blendmask-edu plot RUN_DIR` writes the same
# figure to `RUN_DIR/curves.png`). Here the curves of the cached model's run (more
# iterations, one evaluation at the end):

# %%
tm = cached_model()
train_records, eval_records = read_metrics(tm.run_dir)
print(len(train_records), "training records; evaluations:")
for r in eval_records:
    print(f"  iter {r['iter']}: val loss {r['val']['loss']:.3f}, mask AP {r['eval']['segm']['AP']:.3f}")
last_iter = train_records[-1]["iter"]
recent = [r["loss"] for r in train_records if r["iter"] > last_iter - 60]
print(f"training loss over the last 60 iterations: {min(recent):.3f} to {max(recent):.3f}")
lr, warmup = tm.cfg.optim.lr, tm.cfg.optim.warmup_iters
peak = max(train_records, key=lambda r: r["lr"])  # the logged rate (every log_period steps)
print(f"learning rate: lr {lr:g}, warm-up {warmup} iterations, run of {last_iter}; highest "
      f"logged rate {peak['lr']:.4f} ({peak['lr'] / lr:.0%} of lr) at iteration {peak['iter']}")
ctr_floor = centerness_floor(val_dataset(tm.cfg), tm.cfg.model.fcos)
plot_curves(tm.run_dir, ctr_floor=ctr_floor);

# %% [markdown]
# How to read them: the total loss should fall fast at first, then slowly; a term that
# rises for long is a warning. A validation loss well above the training loss at the same
# iteration means the model fits the training images better than new ones (overfitting);
# compare the printed val loss with the range of the last training losses — and one
# evaluation cannot show a trend. `loss_ctr` flattens early, a little above the dotted line: the BCE of
# a soft target (the centerness is between 0 and 1) cannot go below the target's entropy,
# averaged here over the val set's positives (notebook 00).
#
# The learning rate is lr · warmup(it) · cosine(it) (`engine/schedule.py`): the linear warm-up
# and the cosine multiply, they do not take turns. In a run much longer than the warm-up the
# rate rises to nearly lr, then follows the cosine to zero at the last iteration. In a short
# run they overlap: the cosine has already fallen when the warm-up ends, so the rate peaks
# below lr, and possibly before the warm-up's end — compare the printed peak with lr and the warm-up
# length. (With a time budget the cosine's length is also refitted as the run goes:
# section 6.)
#
# ## 3. Checkpoints, and resuming exactly
#
# `checkpoint_last.pt` holds everything needed to continue: the model, the optimizer (its
# moment estimates), the scheduler, the GradScaler, the random-number generators, the
# iteration, the elapsed time, and the config. It contains only tensors, numbers, strings
# and dicts, so it is read with `torch.load(weights_only=True)`, which cannot run code. It
# is written to `checkpoint_last.pt.tmp` and renamed: a run killed while writing keeps its
# previous checkpoint.

# %%
ckpt = load_checkpoint(work / "straight" / "checkpoint_last.pt")
print(sorted(ckpt))
print("iteration:", ckpt["iteration"], " total_iters:", ckpt["total_iters"])
describe("a weight", ckpt["model"]["fcos.head.cls_logits.weight"])

# %% [markdown]
# Now the same run again, but killed in iteration 7 — after the checkpoint of iteration 4
# and after the log line of iteration 6 — here by an exception, as if the machine went down.
# (A `kill` or a cluster's preemption sends SIGTERM instead, which the loop catches: it finishes the step, writes a checkpoint (and a log line if the iteration falls on a log
# period) and exits. An exception with no warning, shown here, is the harder case.)

# %%
class Killed(Exception):
    pass


class KilledAt7(Trainer):
    steps = 0

    def step(self, images, targets):
        self.steps += 1
        if self.steps == 7:
            raise Killed
        return super().step(images, targets)


def logged_iterations(run):
    return [json.loads(ln)["iter"] for ln in (run / "metrics.jsonl").read_text().splitlines()]


torch.manual_seed(0)
try:
    KilledAt7(small_config(), train_dir, None, work / "killed", progress=False).train()
except Killed:
    print("killed; checkpoint at iteration",
          load_checkpoint(work / "killed" / "checkpoint_last.pt")["iteration"])
    print("iterations in metrics.jsonl:", logged_iterations(work / "killed"))

# %% [markdown]
# The log already holds iteration 6, which the checkpoint (iteration 4) does not know.
# Resuming (`Trainer.train(resume=True)`, or `blendmask-edu train ... --resume`) loads the
# checkpoint, drops the log lines written after it (here: 6), and continues from iteration
# 4. The sampler knows which images and which random flips iteration 4 used (it derives
# them from the seed and the iteration number); the random-number generators are restored
# *after* the data loader has drawn its own seed from them, so any later random draw in the
# model (e.g. `torch.randperm` when `max_instances_for_loss` caps the positives) is the
# one the straight run made; and on the CPU the loop runs in PyTorch's deterministic mode
# (`deterministic_on_cpu` in `engine/trainer.py`), because one backward kernel of the
# blender (the gather of the basis crops per positive) summed with atomic additions whose
# order followed the machine's load. So the resumed run finishes with **exactly** the
# weights of the run that was never killed — on this machine, with the same number of
# threads (on a GPU, or with another thread count, the result is not bit-identical, and the small difference grows with training:
# `docs/training.md`):

# %%
resumed = Trainer(small_config(), train_dir, None, work / "killed", progress=False)
resumed.train(resume=True)
a, b = straight.model.state_dict(), resumed.model.state_dict()
assert all(torch.equal(a[k], b[k]) for k in a)
print(f"all {len(a)} tensors equal after resuming")
print("iterations in metrics.jsonl:", logged_iterations(work / "killed"))

# %% [markdown]
# The log has each iteration once: line 6 of the killed run was dropped on resume and
# written again by the resumed run.
#
# ## 4. Mixed precision (AMP)
#
# On a GPU, `TrainConfig.amp=True` (the default) runs the forward pass under
# `torch.autocast` — convolutions in float16, reductions such as the losses in float32 —
# and scales the loss (`GradScaler`) so small float16 gradients do not round to zero; the
# scaler unscales them before clipping and skips a step whose gradients overflowed. On the
# CPU both are switched off (`self.amp` is False), which is why autocast and the scaler's scaling leave the numbers unchanged here
# (`scaler.step` just calls `optimizer.step`). The loss functions cast logits to float32 (`.float()`) before BCE and
# focal loss, so AMP never computes a loss in half precision. The `shapes` preset turns AMP
# off even on a GPU: its 128-pixel steps are bound by the host, where AMP's casts only add
# work. The measurement behind that choice is noted next to the setting in `config.py`:

# %%
import blendmask_edu.config as config_module

source = inspect.getsource(config_module.shapes_preset).splitlines()
print("\n".join(ln.strip() for ln in source if "ms/step" in ln or "amp=" in ln))

# %% [markdown]
# ## 5. Several processes: DDP with `torchrun`
#
# ```bash
# torchrun --nproc_per_node 4 -m blendmask_edu.cli train --preset shapes --train ... --output-dir RUN
# ```
#
# `torchrun` starts `--nproc_per_node` processes (one per GPU on a GPU machine) and sets `RANK`, `WORLD_SIZE`, `LOCAL_RANK`; the
# trainer joins the process group (NCCL on GPUs, gloo on CPUs) and wraps the model in
# `DistributedDataParallel`, which averages the gradients after every backward. What makes
# N processes train (nearly) like one:
# - the **batch size is global**: the sampler gives each rank its own slice of every batch;
# - the loss **normalisers** (number of positives, sum of centerness) are averaged over
#   processes (`reduce_mean`), so every process divides by the same number;
# - **BatchNorm**: on CUDA the trainer converts the model's BatchNorm layers (the
#   backbone's, and the bottom module's with `bottom_norm="BN"`) to `SyncBatchNorm` when
#   any of them trains, so batch statistics are taken over the global batch. On CPUs (gloo) there is no SyncBatchNorm: each process
#   normalises with the statistics of its own slice, and the running statistics may
#   differ between processes — this is where a CPU DDP run differs from one process on the
#   whole batch. (The heads use GroupNorm, which does not depend on the batch.)
# - only rank 0 writes logs and checkpoints.
#
# Which images each of 2 processes gets for the first two batches of 8 (index, augmentation
# seed):

# %%
from blendmask_edu.engine.sampler import InfiniteBatchSampler

for rank in (0, 1):
    s = InfiniteBatchSampler(1000, global_batch=8, seed=0, rank=rank, world_size=2)
    print(f"rank {rank}: batch 0 {[i for i, _ in s.batch(0)]}  batch 1 {[i for i, _ in s.batch(1)]}")

# %% [markdown]
# And a real two-process run on this CPU (gloo), 3 iterations with a global batch of 4:

# %%
import subprocess
import sys

command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "blendmask_edu.cli", "train", "--preset", "shapes", "--train", str(train_dir),
           "--output-dir", str(work / "ddp"), "--max-iters", "3", "--batch-size", "4",
           "--device", "cpu"]
done = subprocess.run(command, capture_output=True, text=True)
print("exit code", done.returncode)
for line in (work / "ddp" / "metrics.jsonl").read_text().splitlines():
    r = json.loads(line)
    print(f"iter {r['iter']}: loss {r['loss']:.3f}")

# %% [markdown]
# ## 6. The time budget
#
# `--time-budget-min M` (`TrainConfig.time_budget_min`) trains for M minutes or `max_iters`
# iterations, whichever comes first — minutes are the natural unit on a laptop. The trainer measures its own
# speed (from iteration 3 on), sets the total number of iterations to what fits in the
# remaining time, and re-checks every 10 iterations. Because the total is known, the cosine
# schedule still ends at zero when the budget ends. A 15-second run:

# %%
cfg = small_config(max_iters=10_000)
cfg.train.time_budget_min = 0.25
cfg.train.log_period = 2
budget = Trainer(cfg, train_dir, None, work / "budget", progress=False)
budget.train()
records, _ = read_metrics(work / "budget")
print(f"max_iters 10000 → fitted to {budget.total_iters[0]} iterations, "
      f"{budget.elapsed:.1f} s of training")
plot_curves(work / "budget");

# %% [markdown]
# The learning rate shows the fitting: until the first fit the schedule is planned for
# 10 000 iterations, so after the warm-up the rate stays at its peak. The first fit (after
# iteration 12) replaces 10 000 by the number N of iterations that fit in the budget: the
# cosine position jumps from 12/10 000 to 12/N of the way, so the rate drops off a cliff
# at that iteration, then follows the cosine to zero at the fitted end. Later refits (every
# 10 iterations) move the end again only if the measured speed changed. The printed line
# says what happened in this run: if 12 iterations already took longer than the budget (a
# slow or busy machine), the first fit sets N = 12 and the run ends right there, over its
# budget, with the rate still near its peak.
# The fitted total is saved in the checkpoint, so a resumed run keeps the same schedule.
# The first fit happens after 12 iterations (2 to warm up, 10 to measure), so a budget
# shorter than 12 iterations' time is overrun; and the speed is measured on this machine at
# this moment — on a shared machine the same budget buys fewer iterations.
#
# ## Summary
# - One loop for every model: forward → backward → clip → step; then, every log or
#   checkpoint period, a finite check of the steps since the last one → log / checkpoint /
#   evaluate → stop if SIGTERM/Ctrl-C arrived (after a checkpoint).
# - A run folder: `config.json`, `metrics.jsonl` (JSON lines), `checkpoint_last.pt` (atomic,
# `weights_only`), `train.lock` (one writer at a time, `engine/run_folder.py`), and
# `eval.json` when a val set is given.
# - Resume is exact on one machine and thread setting: model, optimizer, scheduler, RNGs
#   (restored after the data loader draws its seed) and the sampler's position are saved,
#   and the CPU runs deterministic kernels.
# - AMP on CUDA (autocast + GradScaler); DDP with `torchrun`, global batch split over ranks,
#   normalisers averaged, SyncBatchNorm on CUDA only; a time budget fixes the iteration
#   count from measured speed.
#
# ## Exercises
# 1. From the straight run's `metrics.jsonl`, compute the mean images per second.
# 2. The run of section 3 finished at iteration 8. Resume it with `max_iters=16`: how
#    many more iterations run, and what happens to the learning rate? Read `Trainer.resume`
#    and `engine/resume_check.py`.
# 3. With 4 processes and `--batch-size 16`, how many images does each process see per
#    iteration? Check with `InfiniteBatchSampler`.

# %% tags=["solution"]
# 1.
records, _ = read_metrics(work / "straight")
print(sum(r["images_per_s"] for r in records) / len(records))

# %% tags=["solution"]
# 2. Eight: `resume` states the difference ("train.max_iters: 8 (checkpoint) → 16 (now)")
#    and applies it: the cosine schedule is recomputed for the new total from iteration 8 on,
#    so the learning rate, which had decayed to 0 at iteration 8, jumps once to the value
#    the 16-iteration schedule has at iteration 8, then decays again. Settings that cannot
#    change in the middle of a run (model, optimizer, batch size, seed, data) are refused.
longer = Trainer(small_config(max_iters=16), train_dir, None, work / "killed", progress=False)
longer.train(resume=True)
print("total_iters after resume:", longer.total_iters[0])
print("iterations in metrics.jsonl:", logged_iterations(work / "killed"))

# %% tags=["solution"]
# 3. 16 / 4 = 4 images per process per iteration.
print(len(InfiniteBatchSampler(1000, global_batch=16, world_size=4, rank=3).batch(0)))
