"""One training step with the batched targets vs the per-image references, in one run.

The per-image functions (`fcos_targets`, `semantic_targets`, `positive_instances`,
`mask_targets`) are swapped in where the training step calls the batched ones, so "before" is
the code as it was and "after" the code as it is, on the same model, weights and batch. The
two are measured in alternation (ABAB...) so that a shared machine's load hits both alike.

    blendmask-edu make-shapes /tmp/bt/shapes --num-images 64 --image-size 128 --seed 0
    python benchmarks/batched_targets.py /tmp/bt/shapes [--batch 16] [--steps 20]

Prints, per mask branch: the median forward+backward time of a step and of the target
functions alone, and for one step (and its targets alone) the number of Python function calls
(cProfile) and of ATen operators (on a GPU, about one kernel launch each).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import importlib
import pstats
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from blendmask_edu.config import shapes_preset
from blendmask_edu.data.coco import CocoInstances
from blendmask_edu.data.transforms import build_transforms
from blendmask_edu.modeling import bases, mask_branch
from blendmask_edu.modeling.fcos import detector, targets
from blendmask_edu.modeling.fcos.targets_batched import pad_targets
from blendmask_edu.modeling.segmenter import InstanceSegmenter


@contextlib.contextmanager
def per_image_targets(model, batch_targets: list[dict]):
    """Inside: the training step builds its targets with the per-image references."""

    def fcos_reference(locations, level, gt, *args):  # takes the list, not the padded GT
        return targets.fcos_targets(locations, level, batch_targets, *args)

    def positives_reference(fcos_out, cap):
        return mask_branch.positive_instances(fcos_out, batch_targets, cap)

    references = {  # name the training step calls → the per-image reference
        "fcos_targets_batched": fcos_reference,
        "semantic_targets_batched": bases.semantic_targets,
        "positive_instances_batched": positives_reference,
        "mask_targets_batched": mask_branch.mask_targets,
    }
    modules = [detector, bases]
    if model.mask_branch is not None:
        modules.append(importlib.import_module(type(model.mask_branch).__module__))
    saved = []
    for module in modules:
        for name, reference in references.items():
            if hasattr(module, name):
                saved.append((module, name, getattr(module, name)))
                setattr(module, name, reference)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def step(model, images, batch_targets) -> None:
    losses = model(images, batch_targets)
    sum(losses.values()).backward()
    model.zero_grad(set_to_none=True)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def python_calls(fn) -> int:
    profile = cProfile.Profile()
    profile.runcall(fn)
    return pstats.Stats(profile).total_calls


class CountOps(TorchDispatchMode):
    """Counts the ATen operators run inside it (on a GPU, roughly one kernel launch each)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def torch_ops(fn) -> int:
    with CountOps() as counter:
        fn()
    return counter.count


def targets_only(model, images, batch_targets):
    """The target functions of one step alone, as the step calls them."""
    with torch.no_grad():
        x, sizes = model.preprocess(images)
        features = model.backbone(x)
        fcos_out = model.fcos(list(features.values()), sizes, batch_targets)
    locations, level, cfg = fcos_out["locations"], fcos_out["level"], model.cfg
    fcos_args = (cfg.fcos.strides, cfg.fcos.sizes_of_interest, cfg.fcos.center_sample_radius)
    h, w = features["p3"].shape[-2:]  # the semantic head's map, stride 8

    def run():
        gt = pad_targets(batch_targets)
        detector.fcos_targets_batched(locations, level, gt, *fcos_args)
        if model.mask_branch is not None:
            bases.semantic_targets_batched(batch_targets, (h, w), 8)
            branch = importlib.import_module(type(model.mask_branch).__module__)
            branch.positive_instances_batched(fcos_out, cfg.blender.max_instances_for_loss)
            branch.mask_targets_batched(batch_targets, cfg.blender.R)

    return run


def measure(branch: str, cfg, images, batch_targets, warmup: int, steps: int) -> None:
    torch.manual_seed(0)
    model = InstanceSegmenter(cfg.model).train()
    one_step = functools.partial(step, model, images, batch_targets)
    run_targets = targets_only(model, images, batch_targets)
    times = {"before": [], "after": []}
    target_times = {"before": [], "after": []}
    for i in range(warmup + steps):
        for when in ("before", "after"):  # alternate, so that load changes hit both
            ctx = (
                per_image_targets(model, batch_targets)
                if when == "before"
                else contextlib.nullcontext()
            )
            with ctx:
                t, t_targets = timed(one_step), timed(run_targets)
            if i >= warmup:
                times[when].append(t)
                target_times[when].append(t_targets)

    def counts():  # Python calls (cProfile) and ATen ops, of a step and of its targets
        return [f(g) for f in (python_calls, torch_ops) for g in (one_step, run_targets)]

    with per_image_targets(model, batch_targets):
        calls = {"before": counts()}
    calls["after"] = counts()
    for when in ("before", "after"):
        py_step, py_targets, ops_step, ops_targets = calls[when]
        print(
            f"{branch:8s} {when:6s} step {1e3 * statistics.median(times[when]):6.1f} ms"
            f" (targets alone {1e3 * statistics.median(target_times[when]):5.2f} ms);"
            f" Python calls {py_step:6d} ({py_targets:5d});"
            f" ATen ops {ops_step:5d} ({ops_targets:4d})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", help="a shapes dataset (blendmask-edu make-shapes)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--branches", default="blender,none")
    args = ap.parse_args()
    cfg = shapes_preset()
    dataset = CocoInstances(args.data, build_transforms(cfg.data, train=False))
    samples = [dataset[i] for i in range(args.batch)]
    images, batch_targets = [s[0] for s in samples], [s[1] for s in samples]
    print(f"batch {args.batch}, {sum(len(t['boxes']) for t in batch_targets)} instances, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")  # fmt: skip
    for branch in args.branches.split(","):
        cfg.model.mask_branch = branch
        measure(branch, cfg, images, batch_targets, args.warmup, args.steps)


if __name__ == "__main__":
    main()
