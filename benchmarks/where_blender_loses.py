"""Where does a mask branch lose? The oracle attention and the occlusion/crowding split (issue 17).

For each finished run (a compare run folder with checkpoint_last.pt), on the shapes val set:
  * occlusion split: mask AP on GT boxes per bucket of hidden fraction, mask AP of the model's
    detections and on GT boxes per number of instances in the image (engine/occlusion.py);
  * oracle attention (blenders only): mask AP on GT boxes with the top layer's attention and
    with each instance's attention optimised against its ground truth (engine/oracle.py), and
    the occlusion split of the oracle masks.

    python benchmarks/where_blender_loses.py --val data/shapes_val --out docs/results/where \
        RUN_DIR [RUN_DIR ...]

Writes OUT/where.json (one entry per run, by folder name) and OUT/where.md; a run already in
where.json is skipped, so the script can be re-run as more runs finish.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from blendmask_edu.data.coco import CocoInstances
from blendmask_edu.data.transforms import build_transforms
from blendmask_edu.engine.checkpoint import model_from_checkpoint
from blendmask_edu.engine.compare import cell, summarise
from blendmask_edu.engine.occlusion import occlusion_split
from blendmask_edu.engine.oracle import oracle_attention_ap, oracle_predictions


def analyse(run_dir: Path, val, steps: int) -> dict:
    model, cfg, _ = model_from_checkpoint(run_dir / "checkpoint_last.pt", "cpu")
    dataset = CocoInstances(val, build_transforms(cfg.data, train=False))
    t0 = time.perf_counter()
    out = {"branch": cfg.model.mask_branch, "split": occlusion_split(model, dataset)}
    blender = cfg.model.mask_branch == "blender" and cfg.model.blender.attention == "predicted"
    if blender:
        out["oracle"] = oracle_attention_ap(model, dataset, steps=steps)
        _, oracle, _ = oracle_predictions(model, dataset, steps=steps)
        out["oracle_split"] = occlusion_split(model, dataset, gt_predictions=oracle)["by_hidden"]
    out["seconds"] = time.perf_counter() - t0
    return out


def markdown(results: dict) -> str:
    lines = ["## Occlusion: mask AP on GT boxes by fraction of the shape hidden", ""]
    buckets = list(next(iter(results.values()))["split"]["by_hidden"])
    lines += ["| run | " + " | ".join(buckets) + " |", "|---|" + "---|" * len(buckets)]
    for name, r in results.items():
        h = r["split"]["by_hidden"]
        lines.append(f"| {name} | " + " | ".join(f"{h[b]['AP']:.3f}" for b in buckets) + " |")
        if "oracle_split" in r:
            o = r["oracle_split"]
            lines.append(
                f"| {name}, oracle attention | "
                + " | ".join(f"{o[b]['AP']:.3f}" for b in buckets)
                + " |"
            )
    counts = next(iter(results.values()))["split"]["by_hidden"]
    lines += [
        "",
        "Instances per bucket: " + ", ".join(f"{b}: {counts[b]['instances']}" for b in buckets),
    ]
    lines += ["", "## Crowding: mask AP by instances per image (detections / GT boxes)", ""]
    groups = list(next(iter(results.values()))["split"]["by_instances"])
    lines += ["| run | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    for name, r in results.items():
        g = r["split"]["by_instances"]
        cells = [f"{g[k]['detections']:.3f} / {g[k]['gt_boxes']:.3f}" for k in groups]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    images = next(iter(results.values()))["split"]["by_instances"]
    lines += ["", "Images per group: " + ", ".join(f"{k}: {images[k]['images']}" for k in groups)]
    oracles = {n: r["oracle"] for n, r in results.items() if "oracle" in r}
    if oracles:
        lines += ["", "## Oracle attention: mask AP on GT boxes", ""]
        lines += [
            "| run | predicted AP | oracle AP | predicted AP75 | oracle AP75 | "
            "mean BCE predicted | mean BCE oracle |",
            "|---|---|---|---|---|---|---|",
        ]
        for n, o in oracles.items():
            lines.append(
                f"| {n} | {o['predicted']['AP']:.3f} | {o['oracle']['AP']:.3f} | "
                f"{o['predicted']['AP75']:.3f} | {o['oracle']['AP75']:.3f} | "
                f"{o['mean_bce_predicted']:.3f} | {o['mean_bce_oracle']:.3f} |"
            )
        steps = next(iter(oracles.values()))
        lines += [
            "",
            f"Oracle: Adam, {steps['steps']} steps, lr {steps['lr']}, from the prediction.",
        ]
        lines += over_seeds(oracles)
    return "\n".join(lines) + "\n"


def over_seeds(oracles: dict) -> list[str]:
    """The oracle table's AP columns as mean ± std over the seeds of each row (runs named
    ROW_sSEED), for rows with more than one seed (`compare`'s summarise and cell)."""
    rows: dict[str, list[dict]] = {}
    for name, o in oracles.items():
        rows.setdefault(re.sub(r"_s\d+$", "", name), []).append(o)
    rows = {row: os for row, os in rows.items() if len(os) > 1}
    if not rows:
        return []
    lines = ["", "## Oracle attention over seeds (mean ± std)", ""]
    lines += [
        "| row | seeds | predicted AP | oracle AP | oracle − predicted |",
        "|---|---|---|---|---|",
    ]
    for row, os in rows.items():
        stats = summarise([
            {"predicted": o["predicted"]["AP"], "oracle": o["oracle"]["AP"],
             "gain": o["oracle"]["AP"] - o["predicted"]["AP"]}
            for o in os
        ])  # fmt: skip
        cells = [cell(stats[k], "{:.3f}", len(os)) for k in ("predicted", "oracle", "gain")]
        lines.append(f"| {row} | {len(os)} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--val", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=200, help="oracle optimisation steps")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "where.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for run in args.runs:
        name = run.name
        if name in results or not (run / "eval.json").exists():
            print(f"{name}: {'done' if name in results else 'not finished'}, skipped")
            continue
        results[name] = analyse(run, args.val, args.steps)
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(name, json.dumps(results[name].get("oracle", {})), flush=True)
    if results:
        (args.out / "where.md").write_text(markdown(results))
        print(markdown(results))


if __name__ == "__main__":
    main()
