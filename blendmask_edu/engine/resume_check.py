"""`--resume` with settings that differ from the checkpoint's: each difference is stated, then
applied in a way we can explain, or refused by name. Nothing is silently ignored.

What may change, and what it does (`APPLIED`):
- `train.max_iters`: the run continues to the new total. The cosine schedule is recomputed for
  it: lr(it) = base · ½(1 + cos(π · it / T_new)) from the resumed iteration on, so the rate
  jumps once (up for a longer run) and still reaches 0 at the new last iteration; the step
  schedule's milestones are absolute iterations and do not move. The result is *not* the
  result of a run started with T_new (its first iterations had another schedule).
- `train.time_budget_min`: the remaining budget is the new one minus the time already spent;
  the total is refitted from the measured speed.
- logging / checkpoint / evaluation periods, device, AMP, data-loading workers and RAM cache,
  and the inference thresholds: used from now on (the validation set is not part of the
  checkpoint: `--val` may always change).
- `data.*` augmentation and sizes: the next batches use them.
- the backbone's initial weights (`pretrained`, `weights_path`): not used, the checkpoint
  holds every weight.

What may not change (refused): the model's architecture (`model.*`: preset, mask branch,
K, M, R, ...), the optimiser (`optim.*`: its state and learning rates come from the
checkpoint), `train.batch_size` and `train.seed` (the data order of the rest of the run), and
the training set itself. Changing them mid-run would give a model that no single setting
produced; start a new run instead (another `--output-dir`).
"""

from __future__ import annotations

import hashlib

APPLIED = {
    "train.max_iters": "the cosine schedule is recomputed for the new total (see "
    "engine/resume_check.py); the run ends at the new max_iters",
    "train.time_budget_min": "the remaining budget = the new budget − the time already trained; "
    "the total iterations are refitted",
    "train.log_period": "used from now on",
    "train.checkpoint_period": "used from now on",
    "train.eval_period": "used from now on",
    "train.device": "the state is moved to the new device (exactness holds on one device only)",
    "train.amp": "used from now on",
    "data.num_workers": "used from now on (no effect on the numbers)",
    "data.cache_ram_mb": "used from now on (no effect on the numbers)",
    "data.": "the next batches are made with the new data settings",
    "model.fcos.score_thresh": "inference only: used by the evaluations",
    "model.fcos.pre_nms_topk": "inference only: used by the evaluations",
    "model.fcos.nms_thresh": "inference only: used by the evaluations",
    "model.fcos.max_detections": "inference only: used by the evaluations",
    "model.backbone.pretrained": "not used: the checkpoint holds every weight",
    "model.backbone.weights_path": "not used: the checkpoint holds every weight",
}


class ResumeMismatchError(RuntimeError):
    """`--resume` with settings that cannot change in the middle of a run."""


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "timm_kwargs":
            out.update(flatten(value, name + "."))
        else:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def differences(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """(setting, checkpoint's value, value now) for every setting that differs."""
    a, b = flatten(old), flatten(new)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def how_applied(name: str) -> str | None:
    """How a changed setting is applied, or None when it is refused."""
    if name in APPLIED:
        return APPLIED[name]
    for prefix, how in APPLIED.items():
        if prefix.endswith(".") and name.startswith(prefix):
            return how
    return None


def data_identity(dataset) -> dict:
    """What names a training set: its path, its number of images and annotations, and a
    fingerprint of its image file names (a moved copy has the same fingerprint)."""
    names = "\n".join(dataset.coco.imgs[i]["file_name"] for i in dataset.image_ids)
    return {
        "path": str(dataset.json_path),
        "num_images": len(dataset.image_ids),
        "num_annotations": len(dataset.coco.anns),
        "fingerprint": hashlib.sha1(names.encode()).hexdigest(),
    }


def check_resume(old_cfg: dict, new_cfg: dict, old_data: dict | None, new_data: dict) -> list[str]:
    """→ one line per applied difference; raises `ResumeMismatchError` naming every refused one."""
    applied, refused = [], []
    for name, was, now in differences(old_cfg, new_cfg):
        how = how_applied(name)
        line = f"{name}: {was!r} (checkpoint) → {now!r} (now)"
        (applied if how else refused).append(f"{line}: {how}" if how else line)
    if old_data is not None:
        same = {
            k: old_data[k] == new_data[k] for k in ("num_images", "num_annotations", "fingerprint")
        }
        if not all(same.values()):
            refused.append(
                f"training data: {old_data['path']} ({old_data['num_images']} images, "
                f"{old_data['num_annotations']} annotations) (checkpoint) → {new_data['path']} "
                f"({new_data['num_images']} images, {new_data['num_annotations']} annotations) (now)"
            )
        elif old_data["path"] != new_data["path"]:
            applied.append(
                f"training data moved: {old_data['path']} → {new_data['path']}: the same images"
            )
    if refused:
        raise ResumeMismatchError(
            "--resume: these settings differ from the checkpoint's and cannot change in the "
            "middle of a run:\n  " + "\n  ".join(refused) + "\nUse the checkpoint's values "
            "(its config.json), or start a new run in another --output-dir."
            + ("\n(These would be applied: " + "; ".join(applied) + ")" if applied else "")
        )
    return applied
