"""Train the `shapes` preset with a few fields changed, evaluate, and append one JSON line.

How the "what we tried" rows of the README were measured: same data, loop and evaluation as
`make demo`, a fixed number of iterations (or a time budget), one field at a time.

    python benchmarks/try_variant.py --name c2 --iters 1538 --set model.blender.bottom_c2=True
    python benchmarks/try_variant.py --name demo_gpu --budget-min 2 --device cuda

`--set a.b.c=VALUE` sets a field of `Config`, parsed by the field's type (`config.apply_override`,
the parser of `train --set`: 1.0, true, 16,32,64,128, bilinear).
Results: OUT/NAME/{eval.json, metrics.jsonl} and a row in OUT/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from blendmask_edu.config import apply_override, shapes_preset
from blendmask_edu.demo import ensure_shapes
from blendmask_edu.engine.trainer import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--out", default="runs/variants")
    ap.add_argument("--data", default="data", help="shapes_train/ and shapes_val/ (made if absent)")
    ap.add_argument("--iters", type=int, default=1538, help="the demo's iterations on 2 cores")
    ap.add_argument("--budget-min", type=float, default=0.0, help="a time budget instead")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = shapes_preset()
    cfg.train.device = args.device
    cfg.train.max_iters = args.iters if args.budget_min == 0 else 10**6
    cfg.train.time_budget_min = args.budget_min
    for assignment in args.set:
        apply_override(cfg, assignment)  # type-checked against the config dataclasses
    data = Path(args.data)
    train_dir = ensure_shapes(data / "shapes_train", 1000, seed=0)
    val_dir = ensure_shapes(data / "shapes_val", 200, seed=1)
    out = Path(args.out)
    t0 = time.time()
    results = train(cfg, train_dir, val_dir, out / args.name)
    log = [json.loads(ln) for ln in (out / args.name / "metrics.jsonl").read_text().splitlines()]
    row = {
        "name": args.name,
        "set": args.set,
        "iters": max(r.get("iter", 0) for r in log),
        "minutes": round((time.time() - t0) / 60, 2),
        **{f"mask_{k}": results["segm"][k] for k in ("AP", "AP50", "AP75")},
        **{f"box_{k}": results["bbox"][k] for k in ("AP", "AP50")},
    }
    print("RESULT " + json.dumps(row), flush=True)
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
