"""The `blendmask-edu` command (contract in the README; keep it stable).

```text
blendmask-edu make-shapes OUT_DIR --num-images N --image-size S --seed K
blendmask-edu train --preset NAME --train DATA --val DATA --output-dir RUN [...]
                    [--image-size S] [--set FIELD=VALUE ...]
blendmask-edu evaluate (--checkpoint CKPT | --predictions JSON) --data DATA [--output JSON]
                       [--per-category]
blendmask-edu predict --checkpoint CKPT IMAGE_OR_FOLDER... --output-dir D
blendmask-edu compare --preset NAME --train DATA --val DATA --output-dir D [...]
                      [--set FIELD=VALUE ...]
blendmask-edu check-data DATA [--overlays OUT_DIR] [--num N]
blendmask-edu import-labelme SRC_DIR OUT_DIR [--labels a,b,c]
blendmask-edu convert-adelaidet IN.pth OUT.pt [--config R_50_1x]
blendmask-edu plot RUN_DIR
blendmask-edu demo [--output-dir runs/demo]
```
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from .config import MASK_BRANCHES, apply_override, get_preset, set_image_size


def cmd_make_shapes(args) -> None:
    from .data.shapes import make_shapes

    out = make_shapes(args.out_dir, args.num_images, args.image_size, args.seed)
    print(f"wrote {args.num_images} images and {out / 'annotations.json'}")


def build_config(args):
    cfg = get_preset(args.preset)
    if args.mask_branch is not None:
        cfg.model.mask_branch = args.mask_branch
    if args.max_iters is not None:
        cfg.train.max_iters = args.max_iters
        if args.time_budget_min is None:
            cfg.train.time_budget_min = 0.0  # an explicit iteration count wins over the budget
    if args.time_budget_min is not None:
        cfg.train.time_budget_min = args.time_budget_min
    if args.batch_size is not None:
        cfg.train.batch_size = args.batch_size
    if args.backbone_weights is not None:
        cfg.model.backbone.weights_path = args.backbone_weights
        cfg.model.backbone.pretrained = False
    if args.pretrained:
        cfg.model.backbone.pretrained = True
        cfg.model.backbone.weights_path = None
    if args.no_pretrained:
        cfg.model.backbone.pretrained = False
        cfg.model.backbone.weights_path = None
    if args.image_size is not None:
        set_image_size(cfg, args.image_size)
    cfg.train.device = args.device
    cfg.train.seed = args.seed
    for assignment in args.set:  # last: --set wins over the flags above
        apply_override(cfg, assignment)
    return cfg


def cmd_train(args) -> None:
    from .engine.trainer import train

    try:
        results = train(build_config(args), args.train, args.val, args.output_dir, args.resume)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C / SIGTERM: the checkpoint is written
        command = ["blendmask-edu", *args.argv] + ([] if args.resume else ["--resume"])
        print(f"to continue: {shlex.join(command)}", file=sys.stderr)
        raise
    print_metrics(results)


def cmd_evaluate(args) -> None:
    from .data.coco import CocoInstances
    from .data.transforms import build_transforms
    from .engine.checkpoint import model_from_checkpoint
    from .engine.evaluate import evaluate_model, evaluate_predictions_file
    from .engine.trainer import resolve_device

    if args.predictions:
        results = evaluate_predictions_file(args.predictions, CocoInstances(args.data))
    else:
        device = resolve_device(args.device)
        model, cfg, _ = model_from_checkpoint(args.checkpoint, device)
        dataset = CocoInstances(args.data, build_transforms(cfg.data, train=False))
        results = evaluate_model(model, dataset, device)
    print_metrics(results)
    if args.per_category:
        print(per_category_table(results["per_category"]))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


def cmd_predict(args) -> int:
    from .engine.predict import predict_images

    report = predict_images(
        args.checkpoint, args.images, args.output_dir, args.device, args.score_thresh
    )
    if report.failed:  # each was named as it was skipped; the others were predicted
        print(
            f"error: {len(report.failed)} of {report.num_images} files could not be read as "
            f"images: {', '.join(Path(f).name for f in report.failed)}",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_compare(args) -> None:
    from .engine.compare import parse_branches, run_compare

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.table1:
        args.rows_set = "table1"
    if args.rows_set and (args.mask_branches or args.sweep):
        raise SystemExit("compare: --rows-set/--table1 name the rows; drop --mask-branches/--sweep")
    run_compare(
        args.preset,
        args.train,
        args.val,
        args.output_dir,
        branches=parse_branches(args.mask_branches or ("blender" if args.sweep else ZOO_CHOICES)),
        seeds=parse_seeds(args.seeds),
        max_iters=args.max_iters,
        time_budget_min=args.time_budget_min,
        sweep=args.sweep,
        device=args.device,
        overrides=args.set,
        named_set=args.rows_set,
        only_rows=[int(i) for i in args.rows.split(",")] if args.rows else None,
    )


ZOO_CHOICES = "blender,yolact,fcis,roi"


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(
            f"--seeds {text!r}: write integers separated by commas, e.g. 0,1,2"
        ) from None
    if not seeds:
        raise ValueError("--seeds: give at least one seed")
    return seeds


def cmd_check_data(args) -> int:
    from .data.check_data import check_dataset, format_report

    report = check_dataset(args.data)
    print(format_report(report))
    if args.overlays:
        from .data.coco import load_coco_json
        from .viz.gt_overlay import save_gt_overlays

        with_problems = [p.image_id for p in report.problems if p.image_id is not None]
        paths = save_gt_overlays(
            load_coco_json(report.json_path),
            report.json_path,
            report.image_root,
            args.overlays,
            args.num,
            with_problems,
        )
        print(f"wrote {len(paths)} ground-truth overlays to {args.overlays}")
    return 1 if report.errors else 0


def cmd_import_labelme(args) -> None:
    from .data.labelme import import_labelme

    labels = None
    if args.labels:
        path = Path(args.labels)
        text = path.read_text() if path.is_file() else args.labels.replace(",", "\n")
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    report = import_labelme(args.src_dir, args.out_dir, labels)
    for note in report.skipped:
        print(f"warning: {note}")
    names = ", ".join(f"{c['id']} {c['name']}" for c in report.categories)
    print(
        f"wrote {report.json_path}: {report.num_images} images, {report.num_instances} "
        f"instances, categories {names}; {len(report.skipped)} shapes/files skipped"
    )
    print(f"next: blendmask-edu check-data {args.out_dir} --overlays {args.out_dir}/overlays")


def cmd_convert_adelaidet(args) -> None:
    from .engine.convert_adelaidet import convert_adelaidet

    convert_adelaidet(args.src, args.dst, config=args.config)


def cmd_plot(args) -> None:
    from .viz.curves import save_curves

    print(f"wrote {save_curves(args.run_dir)}")


def cmd_demo(args) -> None:
    from .demo import run_demo

    run_demo(args.output_dir, time_budget_min=args.time_budget_min, device=args.device)


def print_metrics(results: dict) -> None:
    for kind in ("bbox", "segm"):
        if kind in results:
            numbers = "  ".join(f"{k} {v:.3f}" for k, v in results[kind].items())
            print(f"{kind:5s} {numbers}")


def per_category_table(per_category: dict) -> str:
    """One row per category: GT instances, then AP, AP50, APs, APm, APl per IoU type."""
    kinds = [k for k in ("bbox", "segm") if any(k in row for row in per_category.values())]
    metrics = ("AP", "AP50", "APs", "APm", "APl")
    width = max([len(name) for name in per_category] + [8])
    head = f"{'category':{width}s} {'GT':>5s}" + "".join(
        f"  {kind + ' ' + m:>9s}" for kind in kinds for m in metrics
    )
    rows = [head, "-" * len(head)]
    for name, row in per_category.items():
        numbers = "".join(f"  {row[kind][m]:9.3f}" for kind in kinds for m in metrics)
        rows.append(f"{name:{width}s} {row['instances']:5d}{numbers}")
    return "\n".join(rows) + "\n(-1: no ground truth of that category in that size range)"


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change a config field, e.g. --set model.blender.K=8 (repeatable; "
        "type-checked against blendmask_edu/config.py)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="blendmask-edu", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("make-shapes", help="write the synthetic shapes dataset (COCO format)")
    s.add_argument("out_dir")
    s.add_argument("--num-images", type=int, default=1000)
    s.add_argument("--image-size", type=int, default=128)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_make_shapes)

    s = sub.add_parser("train", help="train a model (FCOS + a mask branch)")
    s.add_argument("--preset", default="shapes", help="shapes | photo (real photos) | coco_r50_1x")
    s.add_argument("--train", required=True, help="DIR (DIR/annotations.json) or a COCO JSON")
    s.add_argument("--val", default=None)
    s.add_argument("--output-dir", required=True)
    s.add_argument("--mask-branch", choices=MASK_BRANCHES, default=None)
    s.add_argument("--max-iters", type=int, default=None)
    s.add_argument("--time-budget-min", type=float, default=None)
    s.add_argument("--batch-size", type=int, default=None)
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR's checkpoint")
    s.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="short side for training and testing (the long side keeps the preset's ratio)",
    )
    add_set_argument(s)
    w = s.add_mutually_exclusive_group()
    w.add_argument("--backbone-weights", default=None, help="local backbone state_dict file")
    w.add_argument("--pretrained", action="store_true", help="timm's weights (needs internet)")
    w.add_argument("--no-pretrained", action="store_true", help="train the backbone from scratch")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="COCO AP of a checkpoint (or a results file) on data")
    w = s.add_mutually_exclusive_group(required=True)
    w.add_argument("--checkpoint")
    w.add_argument("--predictions", help="a COCO results JSON (e.g. predict's) to score")
    s.add_argument("--data", required=True)
    s.add_argument("--output", default=None)
    s.add_argument("--per-category", action="store_true", help="print AP per category")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("predict", help="predict on images: predictions.json + overlays")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("images", nargs="+", help="image files and/or folders of images")
    s.add_argument("--output-dir", required=True)
    s.add_argument("--score-thresh", type=float, default=0.5)
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("compare", help="train and score several mask branches alike")
    s.add_argument("--preset", default="shapes")
    s.add_argument("--train", required=True, help="DIR (DIR/annotations.json) or a COCO JSON")
    s.add_argument("--val", required=True)
    s.add_argument("--output-dir", required=True)
    s.add_argument(
        "--mask-branches", default=None, help=f"default {ZOO_CHOICES} (blender with --sweep)"
    )
    budget = s.add_mutually_exclusive_group()
    budget.add_argument("--max-iters", type=int, default=None, help="iterations per run")
    budget.add_argument("--time-budget-min", type=float, default=None, help="minutes per run")
    s.add_argument("--seeds", default="0", help="e.g. 0,1,2 (mean ± std over seeds)")
    s.add_argument(
        "--sweep",
        default=None,
        help="one blender knob: K=1,2,4,8 | M=7,14,28 | R=.. | interpolation=bilinear,nearest",
    )
    s.add_argument(
        "--rows-set",
        default=None,
        choices=["table1", "capacity"],
        help="a named set of rows: table1 = the paper's Table 1 (weighted sum, assembler, "
        "blender 28_4_4 on one bottom module); capacity = FCIS-style k=2/k=4 vs blenders "
        "with as many maps",
    )
    s.add_argument("--table1", action="store_true", help="same as --rows-set table1")
    s.add_argument("--rows", default=None, help="only these rows (1-based, e.g. 3,2), in order")
    s.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    add_set_argument(s)
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("check-data", help="every problem of a COCO set at once, and statistics")
    s.add_argument("data", help="DIR (DIR/annotations.json) or a COCO JSON")
    s.add_argument("--overlays", default=None, help="folder for ground-truth overlay PNGs")
    s.add_argument(
        "--num", type=int, default=8, help="number of overlays (images with problems first)"
    )
    s.set_defaults(func=cmd_check_data)

    s = sub.add_parser("import-labelme", help="labelme JSON files → a COCO instances set")
    s.add_argument("src_dir")
    s.add_argument("out_dir", help="new folder: OUT_DIR/annotations.json + OUT_DIR/images/")
    s.add_argument(
        "--labels", default=None, help="category order: 'a,b,c' or a file, one name a line"
    )
    s.set_defaults(func=cmd_import_labelme)

    s = sub.add_parser(
        "convert-adelaidet", help="AdelaiDet BlendMask weights (.pth/.pkl) → our checkpoint"
    )
    s.add_argument("src", help="AdelaiDet/detectron2 checkpoint, e.g. R_50_1x.pth")
    s.add_argument("dst", help="our checkpoint, for predict / evaluate / the notebooks")
    s.add_argument(
        "--config",
        default="R_50_1x",
        help="AdelaiDet config: R_50_1x | R_50_3x | R_101_3x | 550_R_50_3x | RT_R_50_4x_syncbn_shtw",
    )
    s.set_defaults(func=cmd_convert_adelaidet)

    s = sub.add_parser("plot", help="RUN_DIR/curves.png: train/val losses, lr, AP")
    s.add_argument("run_dir")
    s.set_defaults(func=cmd_plot)

    s = sub.add_parser("demo", help="shapes data → train BlendMask → COCO AP → pictures")
    s.add_argument("--output-dir", default="runs/demo")
    s.add_argument("--time-budget-min", type=float, default=None)
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # for "to continue: ..." hints
    try:
        code = args.func(args)  # None or an exit code (check-data: 1 when it found errors)
    except (ValueError, OSError, RuntimeError) as err:  # bad data, files, NaN loss, offline...
        if os.environ.get("BLENDMASK_EDU_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        print("(set BLENDMASK_EDU_DEBUG=1 for the full traceback)", file=sys.stderr)
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
