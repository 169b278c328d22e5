"""Parameters and FLOPs of each mask branch of `compare`'s rows, without training (issue 17).

Builds the `shapes` preset with each row's configuration (table1, capacity and the zoo) and
counts the mask branch's parameters and GFLOPs on the fixed input of `measure.py`
(FLOPS_NOTE). The same numbers are the "mask-branch params / GFLOPs" columns of compare.

    python benchmarks/mask_branch_cost.py --out docs/results/mask_branch_cost
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from blendmask_edu.engine.compare import NAMED_SETS, Row, run_config
from blendmask_edu.engine.measure import FLOPS_NOTE, mask_branch_gflops
from blendmask_edu.modeling.segmenter import InstanceSegmenter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sets = {**NAMED_SETS, "zoo": [Row(b, b) for b in ("blender", "yolact", "fcis", "roi")]}
    rows = []
    for set_name, set_rows in sets.items():
        for row in set_rows:
            cfg = run_config("shapes", row, 0, 1, None, "cpu")
            torch.manual_seed(0)
            model = InstanceSegmenter(cfg.model).eval()
            rows.append({
                "set": set_name,
                "row": row.label,
                "mask_branch_params": sum(p.numel() for p in model.mask_branch.parameters()),
                "mask_branch_gflops": mask_branch_gflops(model),
            })  # fmt: skip
            print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cost.json").write_text(json.dumps({"note": FLOPS_NOTE, "rows": rows}, indent=2))
    lines = ["| set | row | mask-branch params | mask-branch GFLOPs |", "|---|---|---|---|"]
    lines += [
        f"| {r['set']} | {r['row']} | {r['mask_branch_params']:,} | {r['mask_branch_gflops']:.3f} |"
        for r in rows
    ]
    (args.out / "cost.md").write_text("\n".join(lines) + f"\n\nGFLOPs: {FLOPS_NOTE}.\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
