"""The one training loop that every model of the zoo shares.

    for it in range(start, total):
        images, targets = next(batches)          # InfiniteBatchSampler: resumable, DDP-split
        losses = model(images, targets)          # dict of loss terms (autocast on CUDA)
        backward (GradScaler on CUDA) → clip → optimizer.step → scheduler.step
        every log_period or checkpoint_period: check that the loss terms of every step
            since the last check are finite (else stop, the last checkpoint untouched)
        every log_period: a line of metrics.jsonl; every checkpoint_period:
            checkpoint_last.pt (atomic); every eval_period: evaluation
        SIGTERM / Ctrl-C during the step: checkpoint this iteration, stop
    final evaluation → eval.json

An evaluation logs the validation losses (the training loss terms on the val set, model in
eval mode, no gradients) next to the COCO AP; `blendmask-edu plot RUN` draws both.

Stops at `max_iters` or at the time budget: with `time_budget_min`, the loop measures its own
speed and fixes the total number of iterations (and so the cosine schedule) to fit the budget.

On the CPU a killed and resumed run ends with bit-identical weights, whatever the load of the
machine (one machine, one thread setting; docs/training.md says what is guaranteed where):
`deterministic_on_cpu` turns off the CPU kernels whose float sums depend on thread timing,
and the RNG state is restored after the DataLoader has drawn its seed. A SIGTERM or Ctrl-C
finishes the step and writes the checkpoint (engine/preemption.py); one process trains into
a run folder at a time (engine/run_folder.py); `--resume` states or refuses every setting
that differs from the checkpoint's (engine/resume_check.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import distributed as dist
from ..config import Config
from ..data.batching import collate, move_targets
from ..data.coco import CocoInstances
from ..data.transforms import build_transforms
from ..modeling.segmenter import InstanceSegmenter
from .box_sizes import check_box_sizes
from .checkpoint import (
    load_checkpoint,
    restore_scaler,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .evaluate import evaluate_model
from .image_scale import check_image_scale
from .preemption import agreed_stop, finish_stop, stop_requests
from .resume_check import check_resume, data_identity
from .run_folder import RunLock, append_jsonl, read_jsonl
from .sampler import InfiniteBatchSampler, SeededAugmentation
from .schedule import build_optimizer, build_scheduler
from .val_loss import validation_losses

CHECKPOINT = "checkpoint_last.pt"


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or ±inf; the run stops without writing a checkpoint."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but CUDA is not available here")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"train.device: {name!r} is not one of auto, cpu, cuda")
    return torch.device(name)


def loader_workers(configured: int, device: torch.device) -> int:
    """DataLoader workers: as configured, or (−1) 0 on CPU, where workers would take the
    cores the model needs, and up to 8 per GPU on CUDA."""
    if configured >= 0:
        return configured
    if device.type != "cuda":
        return 0
    per_gpu = (os.cpu_count() or 2) // max(1, torch.cuda.device_count())
    return max(1, min(8, per_gpu - 1))


@contextlib.contextmanager
def deterministic_on_cpu(device: torch.device):
    """On the CPU, use only kernels that give the same bits run after run.

    Why: the backward of advanced indexing with repeated indices (`crops[inverse]` in the
    blender branch: every positive of an instance takes its instance's crop) is
    `index_put_(accumulate=True)`, which on CPU with ≥ 2 threads and ≥ 32768 elements adds
    with atomic float additions from several threads. Float addition is not associative, so
    the result depends on which thread gets there first, i.e. on the load of the machine:
    on a busy 2-core machine 23 of 29 repeats of the same backward differed in the last bits,
    0 of 29 with this mode or with one thread (docs/training.md). Deterministic mode makes
    that kernel serial; its cost here is small. `warn_only`: an op without a deterministic
    CPU kernel warns instead of stopping the run. Not used on CUDA, where several kernels
    this model needs (RoIAlign and interpolation backward) have no deterministic version.
    """
    if device.type != "cpu":
        yield
        return
    was = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=was_warn)


class Trainer:
    def __init__(self, cfg: Config, train_path, val_path, output_dir, model=None, progress=True):
        self.cfg, self.progress = cfg, progress
        self.out = Path(output_dir)
        self.device = resolve_device(cfg.train.device)
        self.distributed = dist.init_from_env(self.device)
        if self.device.type == "cuda" and self.distributed:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.train_set = CocoInstances(train_path, build_transforms(cfg.data, train=True))
        needed = self.train_set.decoded_bytes()
        if needed <= cfg.data.cache_ram_mb * 2**20:  # decode once, keep uint8 in RAM
            self.train_set.decode_all(progress)
        elif cfg.data.cache_ram_mb > 0:
            print(
                f"note: decoding {train_path} needs {needed / 2**20:.0f} MiB > "
                f"data.cache_ram_mb = {cfg.data.cache_ram_mb}: images are decoded at every read"
            )
        self.val_set = (
            CocoInstances(val_path, build_transforms(cfg.data, train=False)) if val_path else None
        )
        self.categories = self.train_set.categories
        if cfg.model.fcos.num_classes != len(self.categories):
            print(
                f"note: {len(self.categories)} categories in {train_path}: "
                f"model.fcos.num_classes set from {cfg.model.fcos.num_classes}"
            )
            cfg.model.fcos.num_classes = len(self.categories)
        if dist.is_main_process():  # do the objects' sizes fit the FPN levels?
            warnings = check_image_scale(self.train_set, cfg.data)
            for warning in warnings + check_box_sizes(self.train_set, cfg.data, cfg.model.fcos):
                print(f"warning: {warning}")
        torch.manual_seed(cfg.train.seed)
        self.model = (model or InstanceSegmenter(cfg.model)).to(self.device)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.total_iters = [cfg.train.max_iters]
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.total_iters)
        self.amp = cfg.train.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.start_iter, self.elapsed = 0, 0.0
        self.ddp_model = self.model
        if self.distributed:
            trained_bn = not cfg.model.backbone.freeze_bn or cfg.model.blender.bottom_norm == "BN"
            if self.device.type == "cuda" and trained_bn:  # frozen BN stays in eval mode
                self.model = dist.convert_sync_batchnorm(self.model)  # timm's norm+act kept
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DistributedDataParallel(self.model, device_ids=ids)

    # -- state -------------------------------------------------------------------------
    def state_dict(self, iteration: int) -> dict:
        return {
            "format": 1,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "iteration": iteration,  # the next iteration to run
            "total_iters": self.total_iters[0],
            "elapsed": self.elapsed,
            "config": self.cfg.to_dict(),
            "categories": self.categories,
            "data": data_identity(self.train_set),
        }

    def resume(self) -> None:
        path = self.out / CHECKPOINT
        if not path.exists():
            print(f"--resume: no {path} yet, starting from scratch")
            return
        ckpt = load_checkpoint(path)
        applied = check_resume(
            ckpt["config"], self.cfg.to_dict(), ckpt.get("data"), data_identity(self.train_set)
        )  # raises ResumeMismatchError naming what cannot change
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        scaler_note = restore_scaler(self.scaler, ckpt["scaler"])  # CPU checkpoint → CUDA
        if scaler_note:
            print(f"note: --resume: {scaler_note}")
        # The RNG state is restored in `train`, *after* the DataLoader iterator has drawn its
        # base seed from the global torch RNG; restored here, that draw would shift every
        # later random number (e.g. `torch.randperm` with max_instances_for_loss > 0).
        self._rng_to_restore = ckpt["rng"]
        self.start_iter, self.elapsed = ckpt["iteration"], ckpt["elapsed"]
        self.total_iters[0] = ckpt["total_iters"]
        if ckpt["config"]["train"]["max_iters"] != self.cfg.train.max_iters:
            # A new max_iters: the schedule is recomputed for the new total (the LambdaLR
            # reads total_iters[0] at every step), from the resumed iteration on.
            self.total_iters[0] = self.cfg.train.max_iters
            lambdas = self.scheduler.lr_lambdas
            for group, base, lr_lambda in zip(
                self.optimizer.param_groups, self.scheduler.base_lrs, lambdas
            ):
                group["lr"] = base * lr_lambda(self.start_iter)  # this iteration's new rate
        if self.total_iters[0] <= self.start_iter:
            print(f"--resume: the checkpoint is at iteration {self.start_iter}, the run's "
                  f"total is {self.total_iters[0]}: nothing left to train")  # fmt: skip
        self._truncate_metrics(self.start_iter)
        print(f"resumed from {path} at iteration {self.start_iter}")
        for line in applied:
            print(f"--resume: {line}")

    def save(self, iteration: int) -> None:
        if dist.is_main_process():
            save_checkpoint(self.state_dict(iteration), self.out / CHECKPOINT)

    # -- logging -------------------------------------------------------------------------
    def _truncate_metrics(self, start_iter: int) -> None:
        """Keep the log lines up to the checkpoint (a torn last line is dropped too)."""
        path = self.out / "metrics.jsonl"
        if dist.is_main_process() and path.exists():
            kept = [r for r in read_jsonl(path) if r.get("iter", -1) <= start_iter]
            tmp = path.with_name(path.name + ".tmp")
            tmp.unlink(missing_ok=True)
            for record in kept:
                append_jsonl(tmp, record)
            os.replace(tmp, path)

    def log(self, record: dict) -> None:
        if dist.is_main_process():  # all of the line or none of it, even on a full disk
            append_jsonl(self.out / "metrics.jsonl", record)

    # -- the loop ------------------------------------------------------------------------
    def batches(self):
        sampler = InfiniteBatchSampler(
            len(self.train_set),
            self.cfg.train.batch_size,
            self.cfg.train.seed,
            dist.rank(),
            dist.world_size(),
            self.start_iter,
        )
        workers = loader_workers(self.cfg.data.num_workers, self.device)
        loader = DataLoader(
            SeededAugmentation(self.train_set),
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
        )
        return iter(loader)

    def step(self, images, targets) -> dict[str, torch.Tensor]:
        """One optimiser step → the loss terms and their sum, as tensors on the device.

        Nothing here waits for the device (no `.item()`): on a GPU the CPU runs ahead and
        queues the next step. `check_finite` looks at the losses every `log_period` steps and
        before every checkpoint."""
        images = [im.to(self.device, non_blocking=True) for im in images]
        targets = move_targets(targets, self.device)
        with torch.autocast(self.device.type, enabled=self.amp):
            losses = self.ddp_model(images, targets)
        total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.cfg.optim.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {**{k: v.detach() for k, v in losses.items()}, "loss": total.detach()}

    def check_finite(self, pending: list[tuple[int, dict]]) -> dict[str, float]:
        """One device sync for the steps since the last check → the last step's losses as
        floats; raises `NonFiniteLossError` naming the first NaN/inf term and its iteration."""
        values = torch.stack([v.float() for _, losses in pending for v in losses.values()])
        if not torch.isfinite(values).all():
            for it, losses in pending:
                for name, value in losses.items():
                    if not torch.isfinite(value):
                        raise NonFiniteLossError(
                            f"iteration {it}: loss term {name!r} is {value.item()} (not "
                            f"finite); training stopped. The last good checkpoint "
                            f"({self.out / CHECKPOINT}) was left untouched: lower the learning "
                            "rate or check the data."
                        )
        last = pending[-1][1]
        pending.clear()
        return {k: v.item() for k, v in last.items()}

    def fit_budget(self, it: int, sec_per_iter: float) -> None:
        """Fix the total number of iterations so training ends within the time budget."""
        budget = self.cfg.train.time_budget_min * 60
        if budget <= 0:
            return
        remaining = max(budget - self.elapsed, 0.0)
        fitted = it + int(remaining / max(sec_per_iter, 1e-9))
        fitted = torch.tensor(float(min(fitted, self.cfg.train.max_iters)))
        self.total_iters[0] = int(dist.reduce_mean(fitted).item())  # all ranks agree

    def train(self, resume: bool = False) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        lock = RunLock(self.out) if dist.is_main_process() else contextlib.nullcontext()
        with lock, deterministic_on_cpu(self.device):  # one writer per run folder
            return self._train(resume)

    def _train(self, resume: bool) -> dict:
        self._rng_to_restore = None
        if resume:
            self.resume()
        elif dist.is_main_process():
            (self.out / "metrics.jsonl").unlink(missing_ok=True)  # a fresh run, a fresh log
        if dist.is_main_process():
            self.cfg.save(self.out / "config.json")
        batches = self.batches()  # draws the DataLoader's base seed from the torch RNG...
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)  # ...so the saved state is restored after it
        self.model.train()
        bar = tqdm(
            total=self.total_iters[0],
            initial=self.start_iter,
            desc="train",
            disable=not (self.progress and dist.is_main_process()),
            dynamic_ncols=True,
        )
        it = self._last_iter = self.start_iter
        pending = []  # (iteration, loss tensors) not yet checked for NaN / inf
        with stop_requests() as stop:  # SIGINT / SIGTERM: finish the step, save, stop
            self._loop(it, batches, bar, pending, stop)
        bar.close()
        it = self._last_iter
        if pending:
            self.check_finite(pending)
        self.save(it)
        return self.evaluate(it, final=True)

    def _loop(self, it, batches, bar, pending, stop) -> None:
        tcfg = self.cfg.train
        window_t, window_n = 0.0, 0
        timed_from = self.start_iter + 2  # the first iterations are slow (allocations)
        while it < self.total_iters[0]:
            t0 = time.perf_counter()
            images, targets = next(batches)
            pending.append((it, self.step(images, targets)))
            dt = time.perf_counter() - t0
            self.elapsed += dt
            it += 1
            self._last_iter = it
            if it > timed_from:
                window_t, window_n = window_t + dt, window_n + 1
            if window_n and (it - timed_from) % 10 == 0:
                self.fit_budget(it, window_t / window_n)
                bar.total = self.total_iters[0]
            bar.update(1)
            last = it == self.total_iters[0]
            if it % tcfg.log_period == 0 or it % tcfg.checkpoint_period == 0 or last:
                losses = self.check_finite(pending)
                bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)
            if it % tcfg.log_period == 0 or last:
                self.log(
                    {
                        "iter": it,
                        **losses,
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "sec_per_iter": dt,
                        "images_per_s": tcfg.batch_size / dt,
                    }
                )
            if it % tcfg.checkpoint_period == 0:
                self.save(it)
            if tcfg.eval_period and it % tcfg.eval_period == 0 and it < self.total_iters[0]:
                self.evaluate(it)
            signum = agreed_stop(stop, self.device)  # after this iteration's log line
            if signum:  # keep what was learned; `--resume` goes on from here
                if pending:
                    self.check_finite(pending)
                self.save(it)
                finish_stop(
                    signum,
                    f"stopped by {signal.Signals(signum).name}: saved {self.out / CHECKPOINT} "
                    f"after iteration {it}. To continue, run the same command with --resume.",
                )

    def evaluate(self, it: int, final: bool = False) -> dict:
        """Validation losses and COCO AP → one metrics.jsonl record {"iter", "val", "eval"}."""
        if self.val_set is None:
            dist.barrier()
            return {}
        # Every process computes the validation losses on the whole val set: their loss
        # normalisers are averaged across processes (all_reduce), so all must take part.
        val_losses = validation_losses(self.model, self.val_set, self.device)
        if not dist.is_main_process():
            dist.barrier()
            return {}
        results = evaluate_model(
            self.model, self.val_set, self.device, progress=self.progress, diagnose=final
        )
        if final:
            (self.out / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
        self.log({"iter": it, "val": val_losses, "eval": results})
        dist.barrier()
        return results


def train(
    cfg: Config, train_path, val_path, output_dir, resume=False, model=None, progress=True
) -> dict:
    """Train `cfg` (see `Trainer`); returns the final COCO metrics (also in eval.json)."""
    return Trainer(cfg, train_path, val_path, output_dir, model, progress).train(resume)
