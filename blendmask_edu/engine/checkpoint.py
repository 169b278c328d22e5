"""Checkpoints written atomically and read back with `torch.load(weights_only=True)`.

A checkpoint holds only tensors, numbers, strings, lists and dicts (no pickled classes), so
loading it cannot run code. It is written to `NAME.tmp`, flushed to disk and renamed over
`NAME`: a run killed mid-write, or a write that fails (disk full, folder not writable), leaves
the previous checkpoint intact; the failure is a `RunFolderWriteError` naming the folder and
the bytes needed.

Any device reads any checkpoint: every tensor is loaded onto the CPU (`map_location`) and
then moved to where its model lives (the optimizer's state follows its parameters: PyTorch's
`Optimizer.load_state_dict` casts it to each parameter's device). A checkpoint written by
another version of blendmask_edu loads when its weights fit the model its config describes;
config fields this version does not know, or that the checkpoint lacks, are named in a note.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from .run_folder import write_error


def state_bytes(state) -> int:
    """About the size of `state` on disk: the bytes of its tensors (the rest is small)."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


def save_checkpoint(state: dict, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint
    except OSError as err:
        tmp.unlink(missing_ok=True)  # give the space back; `path` was never touched
        kept = (
            f"The previous checkpoint {path.name} is intact."
            if path.exists()
            else "There was no checkpoint before."
        )
        raise write_error(
            "a checkpoint", path.parent, state_bytes(state) + 2**16, err, kept
        ) from err
    os.replace(tmp, path)  # atomic on POSIX


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # CUDA tensors → CPU
    except Exception as err:
        raise RuntimeError(f"{path}: not a readable blendmask_edu checkpoint ({err})") from err
    return ckpt


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as weights_only-safe values."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[2] or 0],
        "python_version": random.getstate()[0],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((state["python_version"], tuple(py[:-1]), py[-1] or None))
    keys = state["numpy"]["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy"]["pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():  # a CPU run has no CUDA state to set
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


def restore_scaler(scaler, state: dict) -> str | None:
    """Load a GradScaler's state → None, or a note when the checkpoint has none to give (it
    was written without mixed precision, e.g. on a CPU): the scaler then starts afresh."""
    if not state:
        if scaler.is_enabled():
            return "the checkpoint has no mixed-precision loss scale (a CPU run?): starting afresh"
        return None
    scaler.load_state_dict(state)  # a no-op on a disabled scaler (resuming on a CPU)
    return None


def shown_path(path: str | Path) -> str:
    """`path` as a message prints it: relative to the current folder when inside it, else as
    the notebooks print paths (`tutorial.shown`: relative to the clone, `$TMPDIR/...`, `~/...`),
    so that no machine's absolute path ends up in a log or a committed notebook output."""
    from ..tutorial import shown  # imported here: the tutorial module imports the engine

    resolved = Path(path).expanduser().resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return shown(resolved)


def model_from_checkpoint(path: str | Path, device="cpu"):
    """Rebuild the trained model of a checkpoint → (model in eval mode, Config, categories).

    Loads on any device, whichever device wrote it; prints a note for each config field of
    another version (see `Config.from_dict`)."""
    from ..config import Config
    from ..modeling.segmenter import InstanceSegmenter

    ckpt = load_checkpoint(path)
    missing = [k for k in ("model", "config", "categories") if k not in ckpt]
    if missing:
        raise RuntimeError(f"{path}: not a blendmask_edu model checkpoint (no {missing})")
    notes: list[str] = []
    cfg = Config.from_dict(ckpt["config"], notes)
    for note in notes:
        print(f"note: {shown_path(path)}: {note}")
    cfg.model.backbone.pretrained = False  # the checkpoint holds every weight
    cfg.model.backbone.weights_path = None
    model = InstanceSegmenter(cfg.model)
    load_weights(model, ckpt["model"], path, notes)
    return model.to(device).eval(), cfg, ckpt["categories"]


def load_weights(model, state: dict, path, notes=()) -> None:
    """`model.load_state_dict(state)`, or a RuntimeError that says which weights do not fit
    and which config fields (of another version) may be why."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or wrong_shape:
        parts = [
            f"{what} {len(keys)} ({', '.join(sorted(keys)[:3])}{', ...' if len(keys) > 3 else ''})"
            for what, keys in (
                ("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)
            )
            if keys
        ]  # fmt: skip
        why = f"; config fields of another version: {'; '.join(notes)}" if notes else ""
        raise RuntimeError(
            f"{path}: its weights do not fit the model its config describes "
            f"({', '.join(parts)}){why}"
        )
    model.load_state_dict(state)
