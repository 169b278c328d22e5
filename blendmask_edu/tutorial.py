"""What the tutorial notebooks share: fast/full mode, cached data and model, `describe`.

Every notebook runs top to bottom on a 2-core CPU in a few minutes ("fast mode", the
default). `BLENDMASK_EDU_FULL=1` runs the longer versions: the shapes preset's whole training
budget, more images, on a GPU when there is one.

Several notebooks look at the same trained model. It is trained once, by the first notebook
that asks for it, and kept in a cache folder (`runs/tutorial_cache/` in a clone of the
repository; `BLENDMASK_EDU_CACHE=DIR` puts it elsewhere):

    >>> from blendmask_edu.tutorial import cached_model, describe
    >>> tm = cached_model()            # trains the first time (minutes), then loads (seconds)
    >>> describe("bases", tm.model.run([image])["masks"][0]["bases"])
    bases                  [4, 32, 32]  float32  min -3.21  max 4.07  mean 0.113
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .config import Config, shapes_preset

FULL_ENV = "BLENDMASK_EDU_FULL"  # "1": the long versions
CACHE_ENV = "BLENDMASK_EDU_CACHE"  # where the shared data and model live

# Fast mode trains a fixed number of iterations, so that the model, and the pictures the
# notebooks describe in words, come out the same on every run on a CPU. The time cap only
# stops a much slower machine early.
FAST_ITERS = 300
FAST_TIME_CAP_MIN = 2.75
NUM_TRAIN, NUM_VAL, IMAGE_SIZE = 1000, 200, 128  # the data of `make demo`
NUM_SMALL_VAL = 24  # `small_val`: scored by the tiny-budget demonstrations of `compare`
# The zoo of notebook 08 (`cached_zoo`): iterations of each mask branch on the shared detector.
ZOO_FAST_ITERS, ZOO_FULL_ITERS, ZOO_BATCH = 150, 1500, 8


def full_mode() -> bool:
    """True when BLENDMASK_EDU_FULL is set to anything but "", "0", "false", "no"."""
    return os.environ.get(FULL_ENV, "").strip().lower() not in ("", "0", "false", "no")


def pick(fast, full):
    """`fast` in fast mode, `full` under BLENDMASK_EDU_FULL=1 (e.g. `pick(8, 64)` images)."""
    return full if full_mode() else fast


def device() -> torch.device:
    """Where the shared model trains: the GPU in full mode when there is one, else the CPU."""
    return torch.device("cuda" if full_mode() and torch.cuda.is_available() else "cpu")


REPO = Path(__file__).resolve().parent.parent  # the clone, for an editable install / checkout


def in_a_clone() -> bool:
    """True when the package runs from a clone of the repository (docs/, runs/ beside it)."""
    return (REPO / "pyproject.toml").is_file() and (REPO / "docs").is_dir()


def docs_path(relative: str) -> Path:
    """A file of the repository's docs/ folder (committed results, images), found from any
    working directory. They ship with a clone only: a pip-installed package says so."""
    path = REPO / "docs" / relative
    if not path.exists():
        raise FileNotFoundError(
            f"docs/{relative} is part of a clone of the repository, not of the installed "
            "package: run this notebook from a clone (git clone, then pip install -e .)"
        )
    return path


def shown(path) -> str:
    """`path` as a notebook prints it: relative to the repository when inside it, with `~` for
    the home folder, `$TMPDIR` for the temporary folder; never a machine's absolute path."""
    import tempfile

    path = Path(path).expanduser().resolve()
    for root, name in ((REPO, None), (Path(tempfile.gettempdir()).resolve(), "$TMPDIR"),
                       (Path.home().resolve(), "~")):  # fmt: skip
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        return str(rel) if name is None else f"{name}/{rel}"
    return str(path)


def cache_dir() -> Path:
    """BLENDMASK_EDU_CACHE, else runs/tutorial_cache in a clone, else ~/.cache/blendmask_edu."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser().resolve()
    if (REPO / "pyproject.toml").is_file():  # an editable install / a checkout
        return REPO / "runs" / "tutorial_cache"
    return Path.home() / ".cache" / "blendmask_edu" / "tutorial"


# ---------------------------------------------------------------------------------------
# describe: Matterport's `log()`, for tensors
# ---------------------------------------------------------------------------------------


def describe(name: str, x) -> None:
    """Print one line: name, shape, dtype, min, max, mean of a tensor or array.

    A list/tuple of tensors (e.g. per-level outputs) gives one line per element.
    """
    if isinstance(x, (list, tuple)):
        for i, t in enumerate(x):
            describe(f"{name}[{i}]", t)
        return
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not torch.is_tensor(x):
        raise TypeError(f"describe({name!r}, ...): expected a tensor or array, got {type(x)}")
    shape = "[" + ", ".join(str(s) for s in x.shape) + "]"
    dtype = str(x.dtype).replace("torch.", "")
    line = f"{name:26s} {shape:18s} {dtype:8s}"
    if x.numel():
        v = x.detach().float()
        line += f" min {v.min().item():.4g}  max {v.max().item():.4g}  mean {v.mean().item():.4g}"
    else:
        line += " (empty)"
    print(line)


def picture(path, width: int = 800):
    """A PNG file to show in a notebook, resized to `width` pixels and reduced to 256 colours,
    so that a committed notebook does not carry the full-size file."""
    import io

    from PIL import Image

    from .extras import require

    IPImage = require("IPython.display").Image  # the notebooks extra

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.quantize(256).save(buf, format="PNG", optimize=True)
    return IPImage(data=buf.getvalue(), width=width)


# ---------------------------------------------------------------------------------------
# The shared data and model, made once
# ---------------------------------------------------------------------------------------


def _make_once(path: Path, build) -> Path:
    """Build `path` with `build(tmp_path)` in a hidden sibling and rename it into place, so a
    killed build leaves nothing half-made (and a concurrent one loses the race cleanly)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        build(tmp)
        try:
            tmp.rename(path)
        except OSError:  # someone else finished first: keep theirs
            if not path.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def cached_data() -> tuple[Path, Path]:
    """The shapes train (1000 images, seed 0) and val (200, seed 1) sets, 128×128, made once."""
    from .data.shapes import make_shapes

    root = cache_dir() / "data"
    train = _make_once(root / "shapes_train", lambda p: make_shapes(p, NUM_TRAIN, IMAGE_SIZE, 0))
    val = _make_once(root / "shapes_val", lambda p: make_shapes(p, NUM_VAL, IMAGE_SIZE, 1))
    return train, val


def small_val(num_images: int = NUM_SMALL_VAL) -> Path:
    """The first `num_images` images of the val set as a set of their own (the same seed),
    made once: for demonstrations that train on a tiny budget and must score quickly."""
    from .data.shapes import make_shapes

    path = cache_dir() / "data" / f"shapes_val_{num_images}"
    return _make_once(path, lambda p: make_shapes(p, num_images, IMAGE_SIZE, 1))


def tutorial_config() -> Config:
    """The `shapes` preset; in fast mode FAST_ITERS iterations (capped at FAST_TIME_CAP_MIN)."""
    cfg = shapes_preset()
    if not full_mode():
        cfg.train.max_iters = FAST_ITERS
        cfg.train.time_budget_min = FAST_TIME_CAP_MIN
        cfg.train.checkpoint_period = FAST_ITERS  # one checkpoint, at the end
    cfg.train.device = str(device())
    return cfg


class TutorialModel(NamedTuple):
    model: nn.Module  # InstanceSegmenter, eval mode
    cfg: Config
    class_names: list[str]  # index = label − 1
    run_dir: Path  # config.json, metrics.jsonl, checkpoint_last.pt, eval.json


def cached_model(map_location="cpu") -> TutorialModel:
    """The trained shapes BlendMask the notebooks share: trained on first use (on the GPU in
    full mode when there is one), then loaded — on the CPU by default, where the notebooks
    look at it (128×128 images need no GPU, and matplotlib wants CPU tensors)."""
    import json

    from .engine.checkpoint import model_from_checkpoint
    from .engine.trainer import CHECKPOINT, train

    run_dir = cache_dir() / ("shapes_full" if full_mode() else "shapes_fast")
    if not (run_dir / CHECKPOINT).exists():
        train_dir, val_dir = cached_data()
        cfg = tutorial_config()
        cap = cfg.train.time_budget_min
        print(
            f"training the shapes preset once ({cfg.train.max_iters} iterations"
            + (f" or {cap:g} min, whichever comes first" if cap else "")
            + f", on {cfg.train.device}) into {shown(run_dir)}"
        )
        _make_once(run_dir, lambda p: train(cfg, train_dir, val_dir, p, progress=False))
    else:
        print(f"using the model trained earlier: {shown(run_dir)}")
    model, cfg, categories = model_from_checkpoint(run_dir / CHECKPOINT, map_location)
    metrics = json.loads((run_dir / "eval.json").read_text())
    iters = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = max(r["iter"] for r in iters)
    print(
        f"{last} iterations; val box AP {metrics['bbox']['AP']:.3f}, "
        f"mask AP {metrics['segm']['AP']:.3f} (AP50 {metrics['segm']['AP50']:.3f})"
    )
    return TutorialModel(model, cfg, [c["name"] for c in categories], run_dir)


def shared_detector_model(branch: str, detector: nn.Module, cfg: Config) -> nn.Module:
    """A model of mask branch `branch` on `detector`'s backbone, FPN and FCOS: their weights
    copied and frozen (no gradient, BatchNorm statistics fixed), the mask branch fresh."""
    from .modeling.segmenter import InstanceSegmenter

    cfg.model.mask_branch = branch
    cfg.model.backbone.freeze_bn = True
    torch.manual_seed(cfg.train.seed)
    model = InstanceSegmenter(cfg.model)
    shared = {k: v for k, v in detector.state_dict().items() if not k.startswith("mask_branch.")}
    missing, unexpected = model.load_state_dict(shared, strict=False)
    assert not unexpected and all(k.startswith("mask_branch.") for k in missing)
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("mask_branch.")
    return model


def cached_zoo(map_location="cpu") -> dict[str, nn.Module]:
    """One model per mask branch of the zoo (blender, yolact, fcis, roi), all on the *same*
    detector: the backbone, FPN and FCOS of `cached_model()`, frozen, with a fresh mask branch
    trained on them for ZOO_FAST_ITERS iterations of ZOO_BATCH images (ZOO_FULL_ITERS in full
    mode). Trained once into the cache, then loaded (on the CPU by default)
    → {branch: model in eval mode}.

    With the detector shared and frozen, only the mask branch differs between the four models:
    what the notebooks' side-by-side pictures need. It is not `blendmask-edu compare`, which
    trains every branch with its own detector from the ImageNet-pretrained backbone (notebook 08)."""
    from .engine.checkpoint import model_from_checkpoint
    from .engine.compare import ZOO
    from .engine.trainer import CHECKPOINT, Trainer

    root = cache_dir() / ("zoo_full" if full_mode() else "zoo_fast")
    iters = pick(ZOO_FAST_ITERS, ZOO_FULL_ITERS)
    detector = None
    for branch in ZOO:
        if (root / branch / CHECKPOINT).exists():
            continue
        if detector is None:
            detector = cached_model().model
            print(f"training each mask branch once for {iters} iterations on the shared, frozen "
                  f"detector, on {device()}, into {shown(root)}")  # fmt: skip
        cfg = tutorial_config()
        cfg.train.max_iters, cfg.train.time_budget_min = iters, 0.0
        cfg.train.batch_size, cfg.train.checkpoint_period = ZOO_BATCH, iters
        model = shared_detector_model(branch, detector, cfg)

        def build(path: Path, cfg=cfg, model=model) -> None:
            Trainer(cfg, cached_data()[0], None, path, model=model, progress=False).train()

        _make_once(root / branch, build)
    if detector is None:
        print(f"using the zoo trained earlier: {shown(root)}")
    return {b: model_from_checkpoint(root / b / CHECKPOINT, map_location)[0] for b in ZOO}


def val_dataset(cfg: Config | None = None):
    """The cached val set with the test-time transforms of `cfg` (default: the shapes preset)."""
    from .data.coco import CocoInstances
    from .data.transforms import build_transforms

    _, val_dir = cached_data()
    return CocoInstances(val_dir, build_transforms((cfg or shapes_preset()).data, train=False))


def train_dataset(cfg: Config | None = None, augment: bool = False):
    """The cached train set (test-time resize only unless `augment`)."""
    from .data.coco import CocoInstances
    from .data.transforms import build_transforms

    train_dir, _ = cached_data()
    return CocoInstances(train_dir, build_transforms((cfg or shapes_preset()).data, train=augment))


# ---------------------------------------------------------------------------------------
# AdelaiDet's published weights (notebook 11), or the fidelity fixture in their place
# ---------------------------------------------------------------------------------------

WEIGHTS_ENV = "BLENDMASK_EDU_WEIGHTS"  # a checkpoint made by `blendmask-edu convert-adelaidet`
FIXTURE_SEED = 19  # the seed of tests/data/adelaidet/weights.json


def adelaidet_fixture(config: str = "R_50_1x", seed: int = FIXTURE_SEED) -> Path:
    """A converted checkpoint of AdelaiDet's `config` with RANDOM weights, made once in the
    cache: the weights of the fidelity test (engine/adelaidet_recipe.py, same seed), saved
    under AdelaiDet's key names as a detectron2-style `.pth` and converted by
    `convert_adelaidet`, exactly as a published file would be. They detect nothing real."""
    from .engine.adelaidet_recipe import random_weights
    from .engine.convert_adelaidet import convert_adelaidet, preset_for
    from .modeling.adelaidet_keys import key_table, rename_back
    from .modeling.segmenter import InstanceSegmenter

    def build(folder: Path) -> None:
        cfg = preset_for(config)
        ours = InstanceSegmenter(cfg.model).state_dict()
        table = key_table(cfg.model.blender.bottom_num_convs)
        shapes = {rename_back(k, table): tuple(v.shape) for k, v in ours.items()}  # their names
        weights = random_weights(shapes, seed)
        folder.mkdir(parents=True)
        src = folder / "model_final.pth"
        torch.save({"model": {k: torch.from_numpy(v) for k, v in weights.items()}}, src)
        del weights
        with contextlib.redirect_stdout(io.StringIO()):  # its message names temporary paths
            convert_adelaidet(src, folder / "converted.pt", config=config)
        src.unlink()
        print(f"made {config} with random weights (seed {seed}): {len(shapes)} tensors converted")

    folder = _make_once(cache_dir() / f"adelaidet_{config}_random_seed{seed}", build)
    return folder / "converted.pt"
