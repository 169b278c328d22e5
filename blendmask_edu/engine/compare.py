"""`blendmask-edu compare`: the fusions of the zoo (or one blender knob) trained and scored alike.

    for each row (a mask branch, or a value of a swept blender knob) and each seed:
        train the preset with that branch/knob, same data, loop, budget → D/runs/<row>_s<seed>/
        measure it → D/runs/<row>_s<seed>/measurements.json
    mean ± std over seeds per row → D/results.json, D/results.md, D/comparison.png,
                                    D/qualitative.png

Runs are resumable: a finished run (eval.json written) is skipped, an unfinished one resumes
from its checkpoint (the trainer also checkpoints on Ctrl-C), so re-running the same command
after a crash loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..config import MASK_BRANCHES, Config, apply_override, get_preset
from .measure import FLOPS_NOTE

# The blender's ablation knobs (paper §4.1: K bases, M attention size, R RoI size, and the
# attention interpolation), with the type of their values.
SWEEP_KNOBS = {"K": int, "M": int, "R": int, "interpolation": str}
ZOO = ("blender", "yolact", "fcis", "roi")


@dataclass
class Row:
    """One row of the table: a mask branch, with blender overrides for a sweep value."""

    label: str  # "blender", "yolact", ..., or "K=2" in a sweep
    branch: str
    overrides: dict = field(default_factory=dict)  # BlenderConfig field → value
    fcis: dict = field(default_factory=dict)  # FCISConfig field → value

    def run_name(self, seed: int) -> str:
        """From the configuration alone, so rows of different sets that train the same model
        share a run (and skip it when it is finished)."""
        knobs = "".join(f"_{k}-{v}" for k, v in self.overrides.items())
        knobs += "".join(f"_fcis.{k}-{v}" for k, v in self.fcis.items())
        return f"{self.branch}{knobs}_s{seed}"


# Named sets of rows (`compare --rows-set NAME`; `--table1` is `--rows-set table1`).
# table1: the paper's Table 1 (§4.1, COCO R-50) on one bottom module, R = 28, nearest
#   interpolation, the blender's crops, targets and loss; only the number of bases (the bottom
#   module's 1×1 output width) and the mixing differ.
_TABLE1_COMMON = {"R": 28, "interpolation": "nearest"}
NAMED_SETS = {
    "table1": [
        Row("weighted sum (K=4, M=1)", "blender", {"K": 4, "M": 1, **_TABLE1_COMMON}),
        Row(
            "assembler (16 bases, 4×4 cells)",
            "blender",
            {"K": 16, "M": 4, **_TABLE1_COMMON, "attention": "cells"},
        ),
        Row("blender 28_4_4", "blender", {"K": 4, "M": 4, **_TABLE1_COMMON}),
    ],
    # capacity: the zoo's FCIS-style branch against a blender with as many maps.
    "capacity": [
        Row("FCIS-style k=2 (4 maps)", "fcis", fcis={"k": 2}),
        Row("blender K=4 (preset)", "blender"),
        Row("FCIS-style k=4 (16 maps)", "fcis", fcis={"k": 4}),
        Row("blender K=16, M=4", "blender", {"K": 16, "M": 4}),
    ],
}


def parse_branches(text: str) -> list[str]:
    branches = [b.strip() for b in text.split(",") if b.strip()]
    for b in branches:
        if b not in MASK_BRANCHES or b == "none":
            raise ValueError(
                f"--mask-branches: unknown mask branch {b!r}; choose from {', '.join(ZOO)}"
            )
    return branches


def parse_sweep(text: str) -> tuple[str, list]:
    """ "K=1,2,4,8" → ("K", [1, 2, 4, 8]); an unknown knob or a bad value is refused."""
    knob, sep, values = text.partition("=")
    knob = knob.strip()
    if not sep or knob not in SWEEP_KNOBS:
        raise ValueError(
            f"--sweep {text!r}: write KNOB=v1,v2,... with KNOB one of {', '.join(SWEEP_KNOBS)}"
        )
    try:
        parsed = [SWEEP_KNOBS[knob](v.strip()) for v in values.split(",") if v.strip()]
    except ValueError as err:
        raise ValueError(
            f"--sweep {text!r}: {knob} takes {SWEEP_KNOBS[knob].__name__} values"
        ) from err
    if knob == "interpolation" and not set(parsed) <= {"bilinear", "nearest"}:
        raise ValueError(f"--sweep {text!r}: interpolation is 'bilinear' or 'nearest'")
    if not parsed:
        raise ValueError(f"--sweep {text!r}: no values")
    return knob, parsed


def plan_rows(branches: list[str], sweep: str | None) -> list[Row]:
    if sweep is None:
        return [Row(b, b) for b in branches]
    if branches != ["blender"]:
        raise ValueError(
            "--sweep varies a knob of the blender: use it with --mask-branches blender"
        )
    knob, values = parse_sweep(sweep)
    return [Row(f"{knob}={v}", "blender", {knob: v}) for v in values]


def run_config(
    preset: str, row: Row, seed: int, max_iters, time_budget_min, device, overrides=()
) -> Config:
    cfg = get_preset(preset)
    for assignment in overrides:  # --set FIELD=VALUE, before the row's own knob
        apply_override(cfg, assignment)
    cfg.model.mask_branch = row.branch
    cfg.model.blender = dataclasses.replace(cfg.model.blender, **row.overrides)
    cfg.model.fcis = dataclasses.replace(cfg.model.fcis, **row.fcis)
    if max_iters is not None:
        cfg.train.max_iters, cfg.train.time_budget_min = max_iters, 0.0
    if time_budget_min is not None:
        cfg.train.time_budget_min = time_budget_min
    cfg.train.seed, cfg.train.device = seed, device
    # Short runs: checkpoint often, so a killed compare loses little.
    cfg.train.checkpoint_period = min(cfg.train.checkpoint_period, 50)
    return cfg


def ensure_trained(cfg: Config, train_path, val_path, run_dir: Path, progress: bool) -> None:
    """Train the run unless it finished; resume it when a checkpoint is there."""
    from .trainer import CHECKPOINT, train

    if (run_dir / "eval.json").exists():
        print(f"[compare] {run_dir.name}: finished, skipped")
        return
    resume = (run_dir / CHECKPOINT).exists()
    print(f"[compare] {run_dir.name}: {'resuming' if resume else 'training'}")
    train(cfg, train_path, val_path, run_dir, resume=resume, progress=progress)


def run_compare(
    preset: str,
    train_path,
    val_path,
    output_dir,
    branches: list[str] = ZOO,
    seeds: list[int] = (0,),
    max_iters: int | None = None,
    time_budget_min: float | None = None,
    sweep: str | None = None,
    device: str = "auto",
    progress: bool = True,
    overrides: list[str] = (),
    named_set: str | None = None,
    only_rows: list[int] | None = None,
) -> dict:
    """Train and measure every (row, seed); write the four report files; return results.
    `named_set` (a key of NAMED_SETS) replaces `branches`/`sweep` by that set's rows;
    `only_rows` (1-based) keeps some of the rows, in that order (to split a set over lanes)."""
    from ..viz.compare_figures import plot_comparison, plot_qualitative
    from .measure import measure_run

    if val_path is None:
        raise ValueError("compare needs --val: every run is scored on it")
    if named_set is not None:
        if named_set not in NAMED_SETS:
            raise ValueError(f"--rows-set {named_set!r}: choose one of {', '.join(NAMED_SETS)}")
        rows = NAMED_SETS[named_set]
    else:
        rows = plan_rows(list(branches), sweep)
    if only_rows:
        if not all(1 <= i <= len(rows) for i in only_rows):
            raise ValueError(f"--rows {only_rows}: the rows are numbered 1..{len(rows)}")
        rows = [rows[i - 1] for i in only_rows]
    out = Path(output_dir)
    runs_dir = out / "runs"
    for row in rows:
        for seed in seeds:
            cfg = run_config(preset, row, seed, max_iters, time_budget_min, device, overrides)
            ensure_trained(cfg, train_path, val_path, runs_dir / row.run_name(seed), progress)
    table = []
    for row in rows:
        runs = [measure_run(runs_dir / row.run_name(s), val_path, progress) for s in seeds]
        table.append({
            "row": row.label,
            "branch": row.branch,
            "run": row.run_name(seeds[0])[: -len(f"_s{seeds[0]}")],
            **row.overrides,
            **{f"fcis.{k}": v for k, v in row.fcis.items()},
            **summarise(runs),
        })  # fmt: skip
    results = {
        "preset": preset,
        "seeds": list(seeds),
        "budget": {"max_iters": max_iters, "time_budget_min": time_budget_min},
        "sweep": sweep,
        "set": list(overrides),
        "rows_set": named_set,
        "rows": table,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(results_markdown(results))
    plot_comparison(table).savefig(out / "comparison.png", dpi=120)
    first = {row.label: runs_dir / row.run_name(seeds[0]) for row in rows}
    plot_qualitative(first, val_path).savefig(out / "qualitative.png", dpi=120)
    print(results_markdown(results))
    return results


def summarise(runs: list[dict]) -> dict:
    """Per measured number: {"mean", "std", "values"} over the seeds (std 0 for one seed)."""
    out = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        out[key] = {"mean": statistics.fmean(values), "std": std, "values": values}
    return out


COLUMNS = (  # (measured key, header, format)
    ("mask_AP", "mask AP", "{:.3f}"),
    ("mask_AP50", "AP50", "{:.3f}"),
    ("mask_AP75", "AP75", "{:.3f}"),
    ("mask_APs", "APs", "{:.3f}"),
    ("mask_APm", "APm", "{:.3f}"),
    ("mask_APl", "APl", "{:.3f}"),
    ("box_AP", "box AP", "{:.3f}"),
    ("mask_AP_gt_boxes", "mask AP, GT boxes", "{:.3f}"),
    ("mask_branch_params", "mask-branch params", "{:,.0f}"),
    ("mask_branch_gflops", "mask-branch GFLOPs", "{:.3f}"),
    ("total_params", "total params", "{:,.0f}"),
    ("inference_ms_per_image", "inference ms/img", "{:.1f}"),
    ("train_s_per_iter", "train s/iter", "{:.3f}"),
    ("iterations", "iters", "{:.0f}"),
)


def cell(stat: dict, fmt: str, seeds: int) -> str:
    if seeds == 1 or stat["std"] == 0 or math.isnan(stat["std"]):
        return fmt.format(stat["mean"])
    return f"{fmt.format(stat['mean'])} ± {fmt.format(stat['std'])}"


def results_markdown(results: dict) -> str:
    n = len(results["seeds"])
    head = "| " + " | ".join(["row", *(h for _, h, _ in COLUMNS)]) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for r in results["rows"]:
        lines.append(
            "| "
            + " | ".join([r["row"], *(cell(r[k], f, n) if k in r else "–" for k, _, f in COLUMNS)])
            + " |"
        )
    budget = results["budget"]
    if budget["max_iters"]:
        per_run = f"{budget['max_iters']} iterations"
    elif budget["time_budget_min"]:
        per_run = f"{budget['time_budget_min']} min of training"
    else:
        per_run = "the preset's"
    preset = f"`{results['preset']}` preset"
    if results.get("set"):
        preset += ", changed for every row by `--set`: " + ", ".join(
            f"`{a}`" for a in results["set"]
        )
    note = (
        f"\n{preset}; seeds {results['seeds']} (mean ± std over seeds); "
        f"budget per run: {per_run}. Inference and train speed: this machine, this run. "
        "Shared by every row: data, detector architecture (FCOS), loop and budget; each run "
        "trains its own detector from the same ImageNet-pretrained backbone. "
        f"Mask-branch GFLOPs: {FLOPS_NOTE}.\n"
    )
    return "\n".join(lines) + "\n" + note
